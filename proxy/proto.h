/*
 * Names for the bytes and codes of the PostgreSQL v3 wire protocol
 * (protocol 3.0 and 3.2), after PostgreSQL's src/include/libpq/protocol.h
 * and pqcomm.h.  Logic compares against these names, never bare 'Z'.
 */
#ifndef PGHANDOFF_PROXY_PROTO_H
#define PGHANDOFF_PROXY_PROTO_H

/* Message type bytes sent by the frontend. */
#define PQMSG_BIND 'B'
#define PQMSG_CLOSE 'C'
#define PQMSG_DESCRIBE 'D'
#define PQMSG_EXECUTE 'E'
#define PQMSG_FUNCTION_CALL 'F'
#define PQMSG_FLUSH 'H'
#define PQMSG_PARSE 'P'
#define PQMSG_QUERY 'Q'
#define PQMSG_SYNC 'S'
#define PQMSG_TERMINATE 'X'
#define PQMSG_COPY_FAIL 'f'
/* One byte, four messages: which one is meant depends on the auth exchange. */
#define PQMSG_PASSWORD_MESSAGE 'p'
#define PQMSG_GSS_RESPONSE 'p'
#define PQMSG_SASL_INITIAL_RESPONSE 'p'
#define PQMSG_SASL_RESPONSE 'p'

/* Sent by both sides during COPY. */
#define PQMSG_COPY_DATA 'd'
#define PQMSG_COPY_DONE 'c'

/* Message type bytes sent by the backend. */
#define PQMSG_PARSE_COMPLETE '1'
#define PQMSG_BIND_COMPLETE '2'
#define PQMSG_CLOSE_COMPLETE '3'
#define PQMSG_NOTIFICATION_RESPONSE 'A'
#define PQMSG_COMMAND_COMPLETE 'C'
#define PQMSG_DATA_ROW 'D'
#define PQMSG_ERROR_RESPONSE 'E'
#define PQMSG_COPY_IN_RESPONSE 'G'
#define PQMSG_COPY_OUT_RESPONSE 'H'
#define PQMSG_EMPTY_QUERY_RESPONSE 'I'
#define PQMSG_BACKEND_KEY_DATA 'K'
#define PQMSG_NOTICE_RESPONSE 'N'
#define PQMSG_AUTHENTICATION_REQUEST 'R'
#define PQMSG_PARAMETER_STATUS 'S'
#define PQMSG_ROW_DESCRIPTION 'T'
#define PQMSG_FUNCTION_CALL_RESPONSE 'V'
#define PQMSG_COPY_BOTH_RESPONSE 'W'
#define PQMSG_READY_FOR_QUERY 'Z'
#define PQMSG_NO_DATA 'n'
#define PQMSG_PORTAL_SUSPENDED 's'
#define PQMSG_PARAMETER_DESCRIPTION 't'
#define PQMSG_NEGOTIATE_PROTOCOL_VERSION 'v'

/* The Int32 after 'R': which authentication step this is. */
#define AUTH_REQ_OK 0
#define AUTH_REQ_PASSWORD 3
#define AUTH_REQ_MD5 5
#define AUTH_REQ_GSS 7
#define AUTH_REQ_GSS_CONT 8
#define AUTH_REQ_SSPI 9
#define AUTH_REQ_SASL 10
#define AUTH_REQ_SASL_CONT 11
#define AUTH_REQ_SASL_FIN 12

/* Protocol versions: major in the high 16 bits, minor in the low ones. */
#define PG_PROTOCOL(major, minor) (((major) << 16) | (minor))
#define PG_PROTOCOL_MAJOR(v) ((v) >> 16)
#define PG_PROTOCOL_MINOR(v) ((v) &0xffff)
#define PG_PROTOCOL_3_0 PG_PROTOCOL(3, 0)
/* 3.2 (PostgreSQL 18) brought variable-length cancel keys; 3.1 was never used. */
#define PG_PROTOCOL_3_2 PG_PROTOCOL(3, 2)

/* Startup packets whose "version" is one of these are special requests. */
#define CANCEL_REQUEST_CODE PG_PROTOCOL(1234, 5678) /* 80877102 */
#define NEGOTIATE_SSL_CODE PG_PROTOCOL(1234, 5679)  /* 80877103 */
#define NEGOTIATE_GSS_CODE PG_PROTOCOL(1234, 5680)  /* 80877104 */
/* The one-byte answers to an SSLRequest or a GSSENCRequest; the proxy never answers 'G'. */
#define NEGOTIATE_ANSWER_SSL 'S'
#define NEGOTIATE_ANSWER_GSS 'G'
#define NEGOTIATE_ANSWER_NO 'N'

/*
 * PostgreSQL's cap on a startup packet, counted after its length word
 * (MAX_STARTUP_PACKET_LENGTH).  A header length counts itself, so the
 * limit to give proto_parse_header is PROTO_MAX_STARTUP_LENGTH.
 */
#define PROTO_MAX_STARTUP_PACKET 10000
#define PROTO_MAX_STARTUP_LENGTH (PROTO_MAX_STARTUP_PACKET + 4)

/* Cancel keys: exactly 4 bytes in 3.0; 4 to 256 bytes from 3.2. */
#define PROTO_MIN_CANCEL_KEY 4
#define PROTO_MAX_CANCEL_KEY 256

/* ReadyForQuery transaction status. */
#define TXN_IDLE 'I'
#define TXN_IN_BLOCK 'T'
#define TXN_FAILED 'E'

/* Close and Describe say what they name. */
#define PQTARGET_STATEMENT 'S'
#define PQTARGET_PORTAL 'P'

/* Format codes of COPY, Bind and RowDescription columns. */
#define PQFORMAT_TEXT 0
#define PQFORMAT_BINARY 1

/* pg_type OID of text, the type of every column the proxy itself returns. */
#define PQ_TEXT_OID 25

/* ErrorResponse / NoticeResponse field codes (PostgreSQL's PG_DIAG_*). */
#define PQDIAG_SEVERITY 'S'
#define PQDIAG_SEVERITY_NONLOCALIZED 'V'
#define PQDIAG_SQLSTATE 'C'
#define PQDIAG_MESSAGE 'M'
#define PQDIAG_DETAIL 'D'
#define PQDIAG_HINT 'H'
#define PQDIAG_STATEMENT_POSITION 'P'
#define PQDIAG_INTERNAL_POSITION 'p'
#define PQDIAG_INTERNAL_QUERY 'q'
#define PQDIAG_CONTEXT 'W'
#define PQDIAG_SCHEMA_NAME 's'
#define PQDIAG_TABLE_NAME 't'
#define PQDIAG_COLUMN_NAME 'c'
#define PQDIAG_DATATYPE_NAME 'd'
#define PQDIAG_CONSTRAINT_NAME 'n'
#define PQDIAG_SOURCE_FILE 'F'
#define PQDIAG_SOURCE_LINE 'L'
#define PQDIAG_SOURCE_FUNCTION 'R'

#endif /* PGHANDOFF_PROXY_PROTO_H */
