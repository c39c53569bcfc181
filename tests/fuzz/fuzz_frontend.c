/*
 * libFuzzer target: everything a client can send before the proxy trusts
 * it.  The first byte picks the decoder as on the wire: a frontend message
 * type byte means "type, Int32 length, body"; anything else is taken as a
 * startup packet "Int32 length, body".  The body handed to the decoder is
 * the rest of the input whatever the length word says, so the input's end
 * is the body's end and AddressSanitizer catches any read past it.
 * Accepted messages are checked for pointers that stay inside the input.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "proxy/pktbuf.h"
#include "proxy/protocol.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static const uint8_t *body_start;
static size_t body_len;

/* A decoded string must be NUL-terminated inside the body. */
static void
check_string(const char *s)
{
	const uint8_t *p = (const uint8_t *) s;

	if (!s || p < body_start || p >= body_start + body_len ||
	    !memchr(p, '\0', (size_t) (body_start + body_len - p)))
		abort();
}

static void
check_range(const uint8_t *p, size_t n)
{
	if (n == 0)
		return;
	if (!p || p < body_start || n > (size_t) (body_start + body_len - p))
		abort();
}

static void
fuzz_startup(const uint8_t *body, size_t len)
{
	StartupPacket sp;
	char err[128];

	if (!proto_parse_startup(body, len, &sp, err, sizeof(err)))
		return;
	switch (sp.kind) {
	case PROTO_STARTUP_V3:
		check_string(sp.user);
		check_string(sp.database);
		if (sp.user[0] == '\0' || sp.database[0] == '\0')
			abort();
		if (sp.nparams > PROTO_MAX_STARTUP_PARAMS || sp.nextensions > PROTO_MAX_STARTUP_PARAMS)
			abort();
		for (int i = 0; i < sp.nparams; i++) {
			check_string(sp.param_names[i]);
			check_string(sp.param_values[i]);
		}
		for (int i = 0; i < sp.nextensions; i++) {
			check_string(sp.extension_names[i]);
			if (strncmp(sp.extension_names[i], "_pq_.", 5) != 0)
				abort();
		}
		break;
	case PROTO_STARTUP_CANCEL:
		if (sp.cancel_keylen < PROTO_MIN_CANCEL_KEY || sp.cancel_keylen > PROTO_MAX_CANCEL_KEY)
			abort();
		check_range(sp.cancel_key, sp.cancel_keylen);
		break;
	default:
		break;
	}
}

/* Query is one string: rebuilding it must give back the very same bytes. */
static void
fuzz_query(const uint8_t *body, size_t len)
{
	ProtoQuery q;
	PktBuf pb;
	char err[128];

	if (!proto_parse_query(body, len, &q, err, sizeof(err)))
		return;
	check_string(q.sql);
	pktbuf_init(&pb);
	pktbuf_write_query(&pb, q.sql);
	if (pb.failed || pb.len != len + 5 || memcmp(pb.buf + 5, body, len) != 0)
		abort();
	pktbuf_free(&pb);
}

static void
fuzz_message(uint8_t type, const uint8_t *body, size_t len)
{
	char err[128];

	switch (type) {
	case PQMSG_PARSE: {
		ProtoParse m;

		if (proto_parse_parse(body, len, &m, err, sizeof(err))) {
			check_string(m.stmt);
			check_string(m.query);
			check_range(m.param_types, (size_t) m.nparams * 4);
		}
		break;
	}
	case PQMSG_BIND: {
		ProtoBind m;

		if (proto_parse_bind(body, len, &m, err, sizeof(err))) {
			check_string(m.portal);
			check_string(m.stmt);
		}
		break;
	}
	case PQMSG_CLOSE:
	case PQMSG_DESCRIBE: {
		ProtoTarget m;
		bool ok = type == PQMSG_CLOSE ? proto_parse_close(body, len, &m, err, sizeof(err))
					      : proto_parse_describe(body, len, &m, err, sizeof(err));

		if (ok) {
			check_string(m.name);
			if (m.kind != PQTARGET_STATEMENT && m.kind != PQTARGET_PORTAL)
				abort();
		}
		break;
	}
	case PQMSG_EXECUTE: {
		ProtoExecute m;

		if (proto_parse_execute(body, len, &m, err, sizeof(err)))
			check_string(m.portal);
		break;
	}
	case PQMSG_QUERY:
		fuzz_query(body, len);
		break;
	case PQMSG_SASL_INITIAL_RESPONSE: {
		ProtoSaslInitialResponse m;

		if (proto_parse_sasl_initial_response(body, len, &m, err, sizeof(err))) {
			check_string(m.mechanism);
			if (m.datalen < -1)
				abort();
			if (m.datalen > 0)
				check_range(m.data, (size_t) m.datalen);
		}
		break;
	}
	default:
		break;
	}
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	uint8_t type;
	uint32_t msglen;

	if (size == 0)
		return 0;
	/* The header reader on both framings; its verdict does not gate the decoders. */
	if (proto_parse_header(data, size, true, &type, &msglen, 1 << 30) == PROTO_HEADER_OK &&
	    (type != data[0] || msglen < 4 || msglen > 1 << 30))
		abort();
	if (proto_parse_header(data, size, false, NULL, &msglen, PROTO_MAX_STARTUP_LENGTH) == PROTO_HEADER_OK &&
	    (msglen < 4 || msglen > PROTO_MAX_STARTUP_LENGTH))
		abort();

	switch (data[0]) {
	case PQMSG_PARSE:
	case PQMSG_BIND:
	case PQMSG_CLOSE:
	case PQMSG_DESCRIBE:
	case PQMSG_EXECUTE:
	case PQMSG_QUERY:
	case PQMSG_SASL_INITIAL_RESPONSE:
		if (size < 5)
			return 0;
		body_start = data + 5;
		body_len = size - 5;
		fuzz_message(data[0], body_start, body_len);
		break;
	default:
		if (size < 4)
			return 0;
		body_start = data + 4;
		body_len = size - 4;
		fuzz_startup(body_start, body_len);
		break;
	}
	return 0;
}
