/*
 * Wire message building for both directions: what the proxy says to clients
 * itself (errors, its own BackendKeyData, admin console results) and what it
 * says to servers (startup, cancel, authentication).  Values go out in
 * network byte order; the length word is written by pktbuf_finish.
 */
#include "proxy/pktbuf.h"

#include <stdlib.h>
#include <string.h>

#include "proxy/proto.h"

/* PostgreSQL's MaxAllocSize: no protocol message may be larger. */
#define PKTBUF_MAX_SIZE ((size_t) 0x3fffffff)
#define PKTBUF_MIN_ALLOC 256

void
pktbuf_init(PktBuf *pb)
{
	memset(pb, 0, sizeof(*pb));
}

void
pktbuf_init_fixed(PktBuf *pb, void *mem, size_t cap)
{
	memset(pb, 0, sizeof(*pb));
	pb->buf = mem;
	pb->cap = mem ? cap : 0;
	pb->fixed = true;
}

void
pktbuf_free(PktBuf *pb)
{
	if (!pb->fixed)
		free(pb->buf);
	memset(pb, 0, sizeof(*pb));
}

void
pktbuf_reset(PktBuf *pb)
{
	pb->len = 0;
	pb->msg_start = 0;
	pb->in_message = false;
	pb->failed = false;
}

/* Makes room for extra more bytes; false (and failed) when it cannot. */
static bool
pktbuf_reserve(PktBuf *pb, size_t extra)
{
	size_t need, cap;
	uint8_t *grown;

	if (pb->failed)
		return false;
	if (extra > PKTBUF_MAX_SIZE - pb->len) {
		pb->failed = true;
		return false;
	}
	need = pb->len + extra;
	if (need <= pb->cap)
		return true;
	if (pb->fixed) {
		pb->failed = true;
		return false;
	}
	cap = pb->cap ? pb->cap : PKTBUF_MIN_ALLOC;
	while (cap < need)
		cap = cap > PKTBUF_MAX_SIZE / 2 ? PKTBUF_MAX_SIZE : cap * 2;
	grown = realloc(pb->buf, cap);
	if (!grown) {
		pb->failed = true;
		return false;
	}
	pb->buf = grown;
	pb->cap = cap;
	return true;
}

static void
pktbuf_copy(PktBuf *pb, const void *data, size_t len)
{
	if (!pktbuf_reserve(pb, len))
		return;
	if (len > 0)
		memcpy(pb->buf + pb->len, data, len);
	pb->len += len;
}

/* Appends to the open message; every put goes through here. */
static void
pktbuf_append(PktBuf *pb, const void *data, size_t len)
{
	/* A put outside start/finish is a bug in the caller: refuse to send. */
	if (!pb->in_message)
		pb->failed = true;
	pktbuf_copy(pb, data, len);
}

void
pktbuf_put_messages(PktBuf *pb, const void *data, size_t len)
{
	/* Whole messages go between messages, never inside one. */
	if (pb->in_message)
		pb->failed = true;
	pktbuf_copy(pb, data, len);
}

static void
pktbuf_store_uint32(uint8_t *p, uint32_t v)
{
	p[0] = (uint8_t) (v >> 24);
	p[1] = (uint8_t) (v >> 16);
	p[2] = (uint8_t) (v >> 8);
	p[3] = (uint8_t) v;
}

void
pktbuf_start(PktBuf *pb, uint8_t type)
{
	static const uint8_t placeholder[4];

	/* Nesting messages is a bug in the caller. */
	if (pb->in_message) {
		pb->failed = true;
		return;
	}
	pb->in_message = true;
	if (type != 0)
		pktbuf_append(pb, &type, 1);
	pb->msg_start = pb->len;
	pktbuf_append(pb, placeholder, sizeof(placeholder));
}

void
pktbuf_finish(PktBuf *pb)
{
	if (!pb->in_message) {
		pb->failed = true;
		return;
	}
	pb->in_message = false;
	if (pb->failed)
		return;
	/* The length counts itself but not the type byte; the 1 GB cap keeps it in Int32. */
	pktbuf_store_uint32(pb->buf + pb->msg_start, (uint32_t) (pb->len - pb->msg_start));
}

void
pktbuf_finish_with_tail(PktBuf *pb, size_t tail_len)
{
	if (!pb->in_message) {
		pb->failed = true;
		return;
	}
	pb->in_message = false;
	if (pb->failed)
		return;
	if (tail_len > PKTBUF_MAX_SIZE - (pb->len - pb->msg_start)) {
		pb->failed = true;
		return;
	}
	pktbuf_store_uint32(pb->buf + pb->msg_start, (uint32_t) (pb->len - pb->msg_start + tail_len));
}

void
pktbuf_put_byte(PktBuf *pb, uint8_t v)
{
	pktbuf_append(pb, &v, 1);
}

void
pktbuf_put_int16(PktBuf *pb, int16_t v)
{
	uint16_t u = (uint16_t) v;
	uint8_t b[2] = {(uint8_t) (u >> 8), (uint8_t) u};

	pktbuf_append(pb, b, sizeof(b));
}

void
pktbuf_put_int32(PktBuf *pb, int32_t v)
{
	uint8_t b[4];

	pktbuf_store_uint32(b, (uint32_t) v);
	pktbuf_append(pb, b, sizeof(b));
}

void
pktbuf_put_int64(PktBuf *pb, int64_t v)
{
	uint64_t u = (uint64_t) v;
	uint8_t b[8];

	pktbuf_store_uint32(b, (uint32_t) (u >> 32));
	pktbuf_store_uint32(b + 4, (uint32_t) u);
	pktbuf_append(pb, b, sizeof(b));
}

void
pktbuf_put_string(PktBuf *pb, const char *s)
{
	pktbuf_append(pb, s, strlen(s) + 1);
}

void
pktbuf_put_bytes(PktBuf *pb, const void *data, size_t len)
{
	pktbuf_append(pb, data, len);
}

/* Counts that go out as Int16 must fit one; a bad count fails the buffer. */
static bool
pktbuf_check_count(PktBuf *pb, int n)
{
	if (n < 0 || n > INT16_MAX) {
		pb->failed = true;
		return false;
	}
	return true;
}

static void
pktbuf_write_report(PktBuf *pb, uint8_t type, const char *severity, const char *sqlstate, const char *message,
		    const char *detail, const char *hint)
{
	pktbuf_start(pb, type);
	pktbuf_put_byte(pb, PQDIAG_SEVERITY);
	pktbuf_put_string(pb, severity);
	pktbuf_put_byte(pb, PQDIAG_SEVERITY_NONLOCALIZED);
	pktbuf_put_string(pb, severity);
	pktbuf_put_byte(pb, PQDIAG_SQLSTATE);
	pktbuf_put_string(pb, sqlstate);
	pktbuf_put_byte(pb, PQDIAG_MESSAGE);
	pktbuf_put_string(pb, message);
	if (detail) {
		pktbuf_put_byte(pb, PQDIAG_DETAIL);
		pktbuf_put_string(pb, detail);
	}
	if (hint) {
		pktbuf_put_byte(pb, PQDIAG_HINT);
		pktbuf_put_string(pb, hint);
	}
	pktbuf_put_byte(pb, 0);
	pktbuf_finish(pb);
}

void
pktbuf_write_error(PktBuf *pb, const char *severity, const char *sqlstate, const char *message, const char *detail,
		   const char *hint)
{
	pktbuf_write_report(pb, PQMSG_ERROR_RESPONSE, severity, sqlstate, message, detail, hint);
}

void
pktbuf_write_notice(PktBuf *pb, const char *severity, const char *sqlstate, const char *message, const char *detail,
		    const char *hint)
{
	pktbuf_write_report(pb, PQMSG_NOTICE_RESPONSE, severity, sqlstate, message, detail, hint);
}

void
pktbuf_write_ready_for_query(PktBuf *pb, char status)
{
	pktbuf_start(pb, PQMSG_READY_FOR_QUERY);
	pktbuf_put_byte(pb, (uint8_t) status);
	pktbuf_finish(pb);
}

void
pktbuf_write_auth(PktBuf *pb, int32_t code, const void *data, size_t len)
{
	pktbuf_start(pb, PQMSG_AUTHENTICATION_REQUEST);
	pktbuf_put_int32(pb, code);
	pktbuf_put_bytes(pb, data, len);
	pktbuf_finish(pb);
}

void
pktbuf_write_parameter_status(PktBuf *pb, const char *name, const char *value)
{
	pktbuf_start(pb, PQMSG_PARAMETER_STATUS);
	pktbuf_put_string(pb, name);
	pktbuf_put_string(pb, value);
	pktbuf_finish(pb);
}

void
pktbuf_write_backend_key_data(PktBuf *pb, int32_t pid, const uint8_t *key, size_t keylen)
{
	pktbuf_start(pb, PQMSG_BACKEND_KEY_DATA);
	pktbuf_put_int32(pb, pid);
	pktbuf_put_bytes(pb, key, keylen);
	pktbuf_finish(pb);
}

void
pktbuf_write_row_description(PktBuf *pb, int ncols, const char *const *names)
{
	if (!pktbuf_check_count(pb, ncols))
		return;
	pktbuf_start(pb, PQMSG_ROW_DESCRIPTION);
	pktbuf_put_int16(pb, (int16_t) ncols);
	for (int i = 0; i < ncols; i++) {
		pktbuf_put_string(pb, names[i]);
		pktbuf_put_int32(pb, 0); /* not a table column */
		pktbuf_put_int16(pb, 0); /* attribute number */
		pktbuf_put_int32(pb, PQ_TEXT_OID);
		pktbuf_put_int16(pb, -1); /* typlen: varlena */
		pktbuf_put_int32(pb, -1); /* typmod: none */
		pktbuf_put_int16(pb, PQFORMAT_TEXT);
	}
	pktbuf_finish(pb);
}

void
pktbuf_write_data_row(PktBuf *pb, int ncols, const char *const *values)
{
	if (!pktbuf_check_count(pb, ncols))
		return;
	pktbuf_start(pb, PQMSG_DATA_ROW);
	pktbuf_put_int16(pb, (int16_t) ncols);
	for (int i = 0; i < ncols; i++) {
		size_t len;

		if (!values[i]) {
			pktbuf_put_int32(pb, -1);
			continue;
		}
		len = strlen(values[i]);
		if (len > PKTBUF_MAX_SIZE) {
			pb->failed = true;
			break;
		}
		pktbuf_put_int32(pb, (int32_t) len);
		pktbuf_put_bytes(pb, values[i], len);
	}
	pktbuf_finish(pb);
}

void
pktbuf_write_command_complete(PktBuf *pb, const char *tag)
{
	pktbuf_start(pb, PQMSG_COMMAND_COMPLETE);
	pktbuf_put_string(pb, tag);
	pktbuf_finish(pb);
}

void
pktbuf_write_startup(PktBuf *pb, int32_t protocol, const char *const *keys, const char *const *values, int n)
{
	pktbuf_start(pb, 0);
	pktbuf_put_int32(pb, protocol);
	for (int i = 0; i < n; i++) {
		pktbuf_put_string(pb, keys[i]);
		pktbuf_put_string(pb, values[i]);
	}
	pktbuf_put_byte(pb, 0);
	pktbuf_finish(pb);
}

void
pktbuf_write_cancel_request(PktBuf *pb, int32_t pid, const uint8_t *key, size_t keylen)
{
	pktbuf_start(pb, 0);
	pktbuf_put_int32(pb, CANCEL_REQUEST_CODE);
	pktbuf_put_int32(pb, pid);
	pktbuf_put_bytes(pb, key, keylen);
	pktbuf_finish(pb);
}

void
pktbuf_write_ssl_request(PktBuf *pb)
{
	pktbuf_start(pb, 0);
	pktbuf_put_int32(pb, NEGOTIATE_SSL_CODE);
	pktbuf_finish(pb);
}

void
pktbuf_write_password_message(PktBuf *pb, const void *data, size_t len)
{
	pktbuf_start(pb, PQMSG_PASSWORD_MESSAGE);
	pktbuf_put_bytes(pb, data, len);
	pktbuf_finish(pb);
}

void
pktbuf_write_sasl_initial_response(PktBuf *pb, const char *mechanism, const void *data, size_t len)
{
	pktbuf_start(pb, PQMSG_SASL_INITIAL_RESPONSE);
	pktbuf_put_string(pb, mechanism);
	if (!data) {
		pktbuf_put_int32(pb, -1);
	} else if (len > PKTBUF_MAX_SIZE) {
		pb->failed = true;
	} else {
		pktbuf_put_int32(pb, (int32_t) len);
		pktbuf_put_bytes(pb, data, len);
	}
	pktbuf_finish(pb);
}

void
pktbuf_write_negotiate_protocol_version(PktBuf *pb, int32_t version, int n_unrecognized, const char *const *names)
{
	pktbuf_start(pb, PQMSG_NEGOTIATE_PROTOCOL_VERSION);
	pktbuf_put_int32(pb, version);
	if (n_unrecognized < 0)
		pb->failed = true;
	pktbuf_put_int32(pb, n_unrecognized);
	for (int i = 0; i < n_unrecognized; i++)
		pktbuf_put_string(pb, names[i]);
	pktbuf_finish(pb);
}

void
pktbuf_write_query(PktBuf *pb, const char *sql)
{
	pktbuf_start(pb, PQMSG_QUERY);
	pktbuf_put_string(pb, sql);
	pktbuf_finish(pb);
}

void
pktbuf_write_terminate(PktBuf *pb)
{
	pktbuf_start(pb, PQMSG_TERMINATE);
	pktbuf_finish(pb);
}
