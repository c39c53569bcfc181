/*
 * Decoding the wire messages the proxy has to understand, from either side.
 * No sockets: each decoder takes the bytes of one message, without its type
 * byte and length word (a startup packet: everything after its length word),
 * and fills a struct whose pointers point into those bytes, so the struct
 * lives no longer than the buffer.  Strings are NUL-terminated inside the
 * buffer.  A decoder accepts a message only if it is well formed and
 * consumed to its last byte; otherwise it returns false with a short reason
 * in err (which never echoes the untrusted bytes).
 */
#ifndef PGHANDOFF_PROXY_PROTOCOL_H
#define PGHANDOFF_PROXY_PROTOCOL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "proxy/proto.h"

/* Parameters other than the well-known ones, and _pq_. options, each. */
#define PROTO_MAX_STARTUP_PARAMS 64
#define PROTO_MAX_SASL_MECHANISMS 8
#define PROTO_MAX_UNRECOGNIZED_OPTIONS 64

typedef enum ProtoHeaderResult {
	PROTO_HEADER_NEED_MORE, /* fewer bytes than a header yet */
	PROTO_HEADER_OK,
	PROTO_HEADER_BAD, /* length < 4 or > max_len: drop the connection */
} ProtoHeaderResult;

/*
 * Reads the header at p: [type byte if has_type] Int32 length.  On OK,
 * *msglen is the length word (it counts itself, not the type byte), so the
 * whole message is (has_type ? 1 : 0) + *msglen bytes, which need not all
 * be in avail yet.  type may be NULL when !has_type.  For startup packets
 * pass PROTO_MAX_STARTUP_LENGTH as max_len.
 */
ProtoHeaderResult proto_parse_header(const uint8_t *p, size_t avail, bool has_type, uint8_t *type, uint32_t *msglen,
				     size_t max_len) __attribute__((warn_unused_result));

typedef enum ProtoStartupKind {
	PROTO_STARTUP_V3,
	PROTO_STARTUP_SSL,
	PROTO_STARTUP_GSSENC,
	PROTO_STARTUP_CANCEL,
	PROTO_STARTUP_UNSUPPORTED, /* protocol 2, 4, an unknown 1234.x request... */
} ProtoStartupKind;

typedef struct StartupPacket {
	ProtoStartupKind kind;
	int32_t code; /* the packet's first Int32, whatever the kind */
	/* PROTO_STARTUP_V3 */
	int minor;
	const char *user;     /* never NULL or empty */
	const char *database; /* the user when missing or empty, as in PostgreSQL */
	const char *options;  /* NULL when absent */
	const char *application_name;
	const char *replication;
	int nparams; /* every other parameter, in packet order */
	const char *param_names[PROTO_MAX_STARTUP_PARAMS];
	const char *param_values[PROTO_MAX_STARTUP_PARAMS];
	int nextensions; /* _pq_.* protocol options, in packet order */
	const char *extension_names[PROTO_MAX_STARTUP_PARAMS];
	const char *extension_values[PROTO_MAX_STARTUP_PARAMS];
	/* PROTO_STARTUP_CANCEL */
	int32_t cancel_pid;
	const uint8_t *cancel_key;
	size_t cancel_keylen; /* PROTO_MIN_CANCEL_KEY..PROTO_MAX_CANCEL_KEY */
} StartupPacket;

/*
 * A whole startup packet after its length word.  A protocol 2 or unknown
 * code is not an error: it comes back as PROTO_STARTUP_UNSUPPORTED with the
 * code, so the caller can answer in kind.
 */
bool proto_parse_startup(const uint8_t *pkt, size_t len, StartupPacket *out, char *err, size_t errlen)
	__attribute__((warn_unused_result));

/* Frontend messages. */

typedef struct ProtoParse {
	const char *stmt; /* "" = the unnamed statement */
	const char *query;
	int nparams;
	const uint8_t *param_types; /* nparams Int32 OIDs, network order */
} ProtoParse;

typedef struct ProtoBind {
	const char *portal;
	const char *stmt;
	int nparams;
} ProtoBind;

/* Close and Describe. */
typedef struct ProtoTarget {
	char kind; /* PQTARGET_STATEMENT or PQTARGET_PORTAL */
	const char *name;
} ProtoTarget;

typedef struct ProtoExecute {
	const char *portal;
	int32_t max_rows; /* 0 = no limit */
} ProtoExecute;

typedef struct ProtoQuery {
	const char *sql;
} ProtoQuery;

typedef struct ProtoSaslInitialResponse {
	const char *mechanism;
	const uint8_t *data; /* NULL when datalen is -1 */
	int32_t datalen;     /* -1 = no initial response */
} ProtoSaslInitialResponse;

bool proto_parse_parse(const uint8_t *body, size_t len, ProtoParse *out, char *err, size_t errlen)
	__attribute__((warn_unused_result));
bool proto_parse_bind(const uint8_t *body, size_t len, ProtoBind *out, char *err, size_t errlen)
	__attribute__((warn_unused_result));
bool proto_parse_close(const uint8_t *body, size_t len, ProtoTarget *out, char *err, size_t errlen)
	__attribute__((warn_unused_result));
bool proto_parse_describe(const uint8_t *body, size_t len, ProtoTarget *out, char *err, size_t errlen)
	__attribute__((warn_unused_result));
bool proto_parse_execute(const uint8_t *body, size_t len, ProtoExecute *out, char *err, size_t errlen)
	__attribute__((warn_unused_result));
bool proto_parse_query(const uint8_t *body, size_t len, ProtoQuery *out, char *err, size_t errlen)
	__attribute__((warn_unused_result));
bool proto_parse_sasl_initial_response(const uint8_t *body, size_t len, ProtoSaslInitialResponse *out, char *err,
				       size_t errlen) __attribute__((warn_unused_result));

/* Backend messages. */

typedef struct ProtoReadyForQuery {
	char status; /* TXN_IDLE, TXN_IN_BLOCK or TXN_FAILED */
} ProtoReadyForQuery;

typedef struct ProtoBackendKeyData {
	int32_t pid;
	const uint8_t *key;
	size_t keylen; /* 4..256; a 3.0 server always sends 4 */
} ProtoBackendKeyData;

typedef struct ProtoParameterStatus {
	const char *name;
	const char *value;
} ProtoParameterStatus;

typedef struct ProtoAuthRequest {
	int32_t code;        /* AUTH_REQ_* */
	const uint8_t *data; /* what follows the code: salt, SASL data... */
	size_t datalen;
	/* AUTH_REQ_SASL: the offered mechanisms */
	int nmechanisms;
	const char *mechanisms[PROTO_MAX_SASL_MECHANISMS];
} ProtoAuthRequest;

/* ErrorResponse and NoticeResponse. */
typedef struct ProtoErrorResponse {
	const char *severity; /* V (never localized) if sent, else S */
	const char *sqlstate; /* five characters */
	const char *message;
	const char *detail; /* NULL when absent */
	const char *hint;   /* NULL when absent */
} ProtoErrorResponse;

typedef struct ProtoNotification {
	int32_t pid;
	const char *channel;
	const char *payload;
} ProtoNotification;

typedef struct ProtoNegotiateProtocolVersion {
	int32_t version; /* PG_PROTOCOL(3, newest minor) */
	int newest_minor;
	int nunrecognized;
	const char *unrecognized[PROTO_MAX_UNRECOGNIZED_OPTIONS];
} ProtoNegotiateProtocolVersion;

/* CopyInResponse, CopyOutResponse, CopyBothResponse. */
typedef struct ProtoCopyResponse {
	int format; /* PQFORMAT_TEXT or PQFORMAT_BINARY */
	int ncols;
	const uint8_t *col_formats; /* ncols Int16, network order */
} ProtoCopyResponse;

typedef struct ProtoCommandComplete {
	const char *tag;
} ProtoCommandComplete;

/*
 * DataRow: each value points into the body and is not NUL-terminated;
 * lengths[i] is -1 for NULL.  Rows with more than PROTO_MAX_ROW_COLUMNS
 * columns are refused: the proxy reads only the results of its own queries.
 */
#define PROTO_MAX_ROW_COLUMNS 16
typedef struct ProtoDataRow {
	int ncols;
	const uint8_t *values[PROTO_MAX_ROW_COLUMNS];
	int32_t lengths[PROTO_MAX_ROW_COLUMNS];
} ProtoDataRow;

bool proto_parse_ready_for_query(const uint8_t *body, size_t len, ProtoReadyForQuery *out, char *err, size_t errlen)
	__attribute__((warn_unused_result));
bool proto_parse_backend_key_data(const uint8_t *body, size_t len, ProtoBackendKeyData *out, char *err, size_t errlen)
	__attribute__((warn_unused_result));
bool proto_parse_parameter_status(const uint8_t *body, size_t len, ProtoParameterStatus *out, char *err, size_t errlen)
	__attribute__((warn_unused_result));
/*
 * Checks the payload of the codes the proxy speaks (OK, password, MD5, GSS,
 * SSPI, SASL); other codes come back with their payload unchecked.
 */
bool proto_parse_auth_request(const uint8_t *body, size_t len, ProtoAuthRequest *out, char *err, size_t errlen)
	__attribute__((warn_unused_result));
bool proto_parse_error_response(const uint8_t *body, size_t len, ProtoErrorResponse *out, char *err, size_t errlen)
	__attribute__((warn_unused_result));
bool proto_parse_notification(const uint8_t *body, size_t len, ProtoNotification *out, char *err, size_t errlen)
	__attribute__((warn_unused_result));
bool proto_parse_negotiate_protocol_version(const uint8_t *body, size_t len, ProtoNegotiateProtocolVersion *out,
					    char *err, size_t errlen) __attribute__((warn_unused_result));
bool proto_parse_copy_response(const uint8_t *body, size_t len, ProtoCopyResponse *out, char *err, size_t errlen)
	__attribute__((warn_unused_result));
bool proto_parse_command_complete(const uint8_t *body, size_t len, ProtoCommandComplete *out, char *err, size_t errlen)
	__attribute__((warn_unused_result));
bool proto_parse_data_row(const uint8_t *body, size_t len, ProtoDataRow *out, char *err, size_t errlen)
	__attribute__((warn_unused_result));

#endif /* PGHANDOFF_PROXY_PROTOCOL_H */
