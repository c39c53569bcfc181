/*
 * libFuzzer target: every backend message the proxy decodes, as a server
 * (or something pretending to be one) could send it.  Input is "type byte,
 * Int32 length, body"; the body is the rest of the input whatever the
 * length says, so AddressSanitizer catches any read past its end.  An
 * unknown type byte runs every decoder on the body.  Accepted messages are
 * checked for pointers inside the input, and those pktbuf can write are
 * rebuilt and decoded again to the same values.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "proxy/pktbuf.h"
#include "proxy/protocol.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static const uint8_t *body_start;
static size_t body_len;

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

/* pb must hold one message whose body equals body[0..len). */
static void
check_rebuilt(PktBuf *pb, const uint8_t *body, size_t len)
{
	if (pb->failed || pb->len != len + 5 || memcmp(pb->buf + 5, body, len) != 0)
		abort();
	pktbuf_free(pb);
}

static void
fuzz_error(const uint8_t *body, size_t len)
{
	ProtoErrorResponse e, again;
	PktBuf pb;
	char err[128];

	if (!proto_parse_error_response(body, len, &e, err, sizeof(err)))
		return;
	check_string(e.severity);
	check_string(e.sqlstate);
	check_string(e.message);
	if (e.detail)
		check_string(e.detail);
	if (e.hint)
		check_string(e.hint);
	if (strlen(e.sqlstate) != 5)
		abort();
	pktbuf_init(&pb);
	pktbuf_write_error(&pb, e.severity, e.sqlstate, e.message, e.detail, e.hint);
	if (pb.failed || !proto_parse_error_response(pb.buf + 5, pb.len - 5, &again, err, sizeof(err)))
		abort();
	if (strcmp(again.severity, e.severity) != 0 || strcmp(again.sqlstate, e.sqlstate) != 0 ||
	    strcmp(again.message, e.message) != 0 || !again.detail != !e.detail || !again.hint != !e.hint)
		abort();
	pktbuf_free(&pb);
}

static void
fuzz_key_data(const uint8_t *body, size_t len)
{
	ProtoBackendKeyData k;
	PktBuf pb;
	char err[128];

	if (!proto_parse_backend_key_data(body, len, &k, err, sizeof(err)))
		return;
	if (k.keylen < PROTO_MIN_CANCEL_KEY || k.keylen > PROTO_MAX_CANCEL_KEY)
		abort();
	check_range(k.key, k.keylen);
	pktbuf_init(&pb);
	pktbuf_write_backend_key_data(&pb, k.pid, k.key, k.keylen);
	check_rebuilt(&pb, body, len);
}

static void
fuzz_simple(uint8_t type, const uint8_t *body, size_t len)
{
	char err[128];
	PktBuf pb;

	pktbuf_init(&pb);
	if (type == PQMSG_READY_FOR_QUERY) {
		ProtoReadyForQuery m;

		if (proto_parse_ready_for_query(body, len, &m, err, sizeof(err))) {
			pktbuf_write_ready_for_query(&pb, m.status);
			check_rebuilt(&pb, body, len);
		}
	} else if (type == PQMSG_PARAMETER_STATUS) {
		ProtoParameterStatus m;

		if (proto_parse_parameter_status(body, len, &m, err, sizeof(err))) {
			check_string(m.name);
			check_string(m.value);
			pktbuf_write_parameter_status(&pb, m.name, m.value);
			check_rebuilt(&pb, body, len);
		}
	} else if (type == PQMSG_COMMAND_COMPLETE) {
		ProtoCommandComplete m;

		if (proto_parse_command_complete(body, len, &m, err, sizeof(err))) {
			check_string(m.tag);
			pktbuf_write_command_complete(&pb, m.tag);
			check_rebuilt(&pb, body, len);
		}
	} else if (type == PQMSG_NEGOTIATE_PROTOCOL_VERSION) {
		ProtoNegotiateProtocolVersion m;

		if (proto_parse_negotiate_protocol_version(body, len, &m, err, sizeof(err))) {
			for (int i = 0; i < m.nunrecognized; i++)
				check_string(m.unrecognized[i]);
			pktbuf_write_negotiate_protocol_version(&pb, m.version, m.nunrecognized, m.unrecognized);
			check_rebuilt(&pb, body, len);
		}
	}
	pktbuf_free(&pb);
}

static void
fuzz_other(uint8_t type, const uint8_t *body, size_t len)
{
	char err[128];

	if (type == PQMSG_AUTHENTICATION_REQUEST) {
		ProtoAuthRequest m;

		if (proto_parse_auth_request(body, len, &m, err, sizeof(err))) {
			check_range(m.data, m.datalen);
			if (m.nmechanisms > PROTO_MAX_SASL_MECHANISMS)
				abort();
			for (int i = 0; i < m.nmechanisms; i++)
				check_string(m.mechanisms[i]);
		}
	} else if (type == PQMSG_NOTIFICATION_RESPONSE) {
		ProtoNotification m;

		if (proto_parse_notification(body, len, &m, err, sizeof(err))) {
			check_string(m.channel);
			check_string(m.payload);
		}
	} else if (type == PQMSG_COPY_IN_RESPONSE) {
		ProtoCopyResponse m;

		if (proto_parse_copy_response(body, len, &m, err, sizeof(err)))
			check_range(m.col_formats, (size_t) m.ncols * 2);
	} else if (type == PQMSG_DATA_ROW) {
		ProtoDataRow m;

		if (proto_parse_data_row(body, len, &m, err, sizeof(err))) {
			if (m.ncols > PROTO_MAX_ROW_COLUMNS)
				abort();
			for (int i = 0; i < m.ncols; i++)
				if (m.lengths[i] > 0)
					check_range(m.values[i], (size_t) m.lengths[i]);
		}
	}
}

static void
fuzz_message(uint8_t type, const uint8_t *body, size_t len)
{
	switch (type) {
	case PQMSG_ERROR_RESPONSE:
	case PQMSG_NOTICE_RESPONSE:
		fuzz_error(body, len);
		break;
	case PQMSG_BACKEND_KEY_DATA:
		fuzz_key_data(body, len);
		break;
	case PQMSG_READY_FOR_QUERY:
	case PQMSG_PARAMETER_STATUS:
	case PQMSG_COMMAND_COMPLETE:
	case PQMSG_NEGOTIATE_PROTOCOL_VERSION:
		fuzz_simple(type, body, len);
		break;
	case PQMSG_COPY_IN_RESPONSE:
	case PQMSG_COPY_OUT_RESPONSE:
	case PQMSG_COPY_BOTH_RESPONSE:
		fuzz_other(PQMSG_COPY_IN_RESPONSE, body, len);
		break;
	case PQMSG_AUTHENTICATION_REQUEST:
	case PQMSG_NOTIFICATION_RESPONSE:
	case PQMSG_DATA_ROW:
		fuzz_other(type, body, len);
		break;
	default: {
		static const uint8_t all[] = {
			PQMSG_ERROR_RESPONSE,
			PQMSG_BACKEND_KEY_DATA,
			PQMSG_READY_FOR_QUERY,
			PQMSG_PARAMETER_STATUS,
			PQMSG_COMMAND_COMPLETE,
			PQMSG_NEGOTIATE_PROTOCOL_VERSION,
			PQMSG_DATA_ROW,
			PQMSG_COPY_IN_RESPONSE,
			PQMSG_AUTHENTICATION_REQUEST,
			PQMSG_NOTIFICATION_RESPONSE,
		};

		for (size_t i = 0; i < sizeof(all); i++)
			fuzz_message(all[i], body, len);
		break;
	}
	}
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	uint8_t type;
	uint32_t msglen;

	if (proto_parse_header(data, size, true, &type, &msglen, 1 << 30) == PROTO_HEADER_OK &&
	    (type != data[0] || msglen < 4 || msglen > 1 << 30))
		abort();
	if (size < 5)
		return 0;
	body_start = data + 5;
	body_len = size - 5;
	fuzz_message(data[0], body_start, body_len);
	return 0;
}
