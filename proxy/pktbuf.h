/*
 * Building wire messages: pktbuf_start -> pktbuf_put_* -> pktbuf_finish,
 * the Int32 length filled in last.  Several messages can be queued in one
 * buffer back to back.  Nothing here reports failure per call: running out
 * of room (a fixed buffer) or memory, growing past 1 GB, or a put outside
 * start/finish sets the sticky `failed` flag, which the owner checks once
 * before sending (and pktbuf_reset clears).  After a failure the contents
 * are undefined and must not be sent.
 */
#ifndef PGHANDOFF_PROXY_PKTBUF_H
#define PGHANDOFF_PROXY_PKTBUF_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef struct PktBuf {
	uint8_t *buf;
	size_t len; /* bytes written, all messages */
	size_t cap;
	size_t msg_start; /* offset of the open message's length word */
	bool in_message;  /* between pktbuf_start and pktbuf_finish */
	bool failed;
	bool fixed; /* buf is the caller's memory: never grown or freed */
} PktBuf;

/* A growable buffer (malloc); pktbuf_free releases it. */
void pktbuf_init(PktBuf *pb);
/* A buffer over the caller's cap bytes at mem; overflowing sets failed. */
void pktbuf_init_fixed(PktBuf *pb, void *mem, size_t cap);
void pktbuf_free(PktBuf *pb);
/* Empties the buffer and clears `failed`, keeping the memory. */
void pktbuf_reset(PktBuf *pb);

/* type 0 starts a startup-style message, which has no type byte. */
void pktbuf_start(PktBuf *pb, uint8_t type);
void pktbuf_put_byte(PktBuf *pb, uint8_t v);
void pktbuf_put_int16(PktBuf *pb, int16_t v);
void pktbuf_put_int32(PktBuf *pb, int32_t v);
void pktbuf_put_int64(PktBuf *pb, int64_t v);
/* The string and its terminating NUL. */
void pktbuf_put_string(PktBuf *pb, const char *s);
void pktbuf_put_bytes(PktBuf *pb, const void *data, size_t len);
void pktbuf_finish(PktBuf *pb);
/*
 * Finishes a message whose last tail_len bytes are not in the buffer: the
 * owner sends them right after it, from where they are (a rewritten head
 * followed by the rest of a message forwarded as it came).  The length word
 * counts them.
 */
void pktbuf_finish_with_tail(PktBuf *pb, size_t tail_len);

/*
 * Appends complete, already framed messages verbatim (say, a server's
 * ParameterStatus messages kept from its login); only between messages.
 */
void pktbuf_put_messages(PktBuf *pb, const void *data, size_t len);

/*
 * Whole messages.  Error and notice carry severity in both S and V, so pass
 * the non-localized word ("ERROR", "FATAL", "WARNING"); detail and hint may
 * be NULL.
 */
void pktbuf_write_error(PktBuf *pb, const char *severity, const char *sqlstate, const char *message, const char *detail,
			const char *hint);
void pktbuf_write_notice(PktBuf *pb, const char *severity, const char *sqlstate, const char *message,
			 const char *detail, const char *hint);
void pktbuf_write_ready_for_query(PktBuf *pb, char status);
/* AuthenticationRequest with code and its payload (len 0 for none). */
void pktbuf_write_auth(PktBuf *pb, int32_t code, const void *data, size_t len);
void pktbuf_write_parameter_status(PktBuf *pb, const char *name, const char *value);
void pktbuf_write_backend_key_data(PktBuf *pb, int32_t pid, const uint8_t *key, size_t keylen);
/* Every column text: type oid 25, typlen -1, typmod -1, format 0. */
void pktbuf_write_row_description(PktBuf *pb, int ncols, const char *const *names);
/* values[i] NULL is SQL NULL. */
void pktbuf_write_data_row(PktBuf *pb, int ncols, const char *const *values);
void pktbuf_write_command_complete(PktBuf *pb, const char *tag);
void pktbuf_write_startup(PktBuf *pb, int32_t protocol, const char *const *keys, const char *const *values, int n);
void pktbuf_write_cancel_request(PktBuf *pb, int32_t pid, const uint8_t *key, size_t keylen);
void pktbuf_write_ssl_request(PktBuf *pb);
/*
 * PasswordMessage / SASLResponse / GSSResponse: the body verbatim.  A
 * cleartext or MD5 password is a String, so include its NUL in len.
 */
void pktbuf_write_password_message(PktBuf *pb, const void *data, size_t len);
/* data NULL sends length -1 (no initial response). */
void pktbuf_write_sasl_initial_response(PktBuf *pb, const char *mechanism, const void *data, size_t len);
/*
 * The version field is documented as the "newest minor version", but
 * PostgreSQL sends (and libpq reads) the whole version number:
 * pass PG_PROTOCOL(3, minor).
 */
void pktbuf_write_negotiate_protocol_version(PktBuf *pb, int32_t version, int n_unrecognized, const char *const *names);
void pktbuf_write_query(PktBuf *pb, const char *sql);
void pktbuf_write_terminate(PktBuf *pb);

#endif /* PGHANDOFF_PROXY_PKTBUF_H */
