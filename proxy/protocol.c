/*
 * Wire message decoders for the proxy: startup packets and the frontend
 * messages it routes by (Parse, Bind, Close, Describe, Execute, Query), and
 * the backend messages it must read to track a server (authentication,
 * BackendKeyData, ParameterStatus, ReadyForQuery, errors, COPY).  Every
 * length and count from the wire is checked against the bytes actually
 * there before it is used.
 */
#include "common/errbuf.h"
#include "proxy/protocol.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "common/msgread.h"

/* The common ending: every read succeeded and nothing is left over. */
static bool
proto_check_end(const MsgReader *r, const char *what, char *err, size_t errlen)
{
	if (r->failed)
		return errbuf_fail(err, errlen, "%s message is truncated", what);
	if (!msgread_end(r))
		return errbuf_fail(err, errlen, "%s message has %zu bytes after its end", what, msgread_remaining(r));
	return true;
}

ProtoHeaderResult
proto_parse_header(const uint8_t *p, size_t avail, bool has_type, uint8_t *type, uint32_t *msglen, size_t max_len)
{
	MsgReader r;
	uint8_t t = 0;
	uint32_t len;

	if (avail < (has_type ? 5u : 4u))
		return PROTO_HEADER_NEED_MORE;
	msgread_init(&r, p, avail);
	if (has_type && !msgread_byte(&r, &t))
		return PROTO_HEADER_NEED_MORE;
	if (!msgread_uint32(&r, &len))
		return PROTO_HEADER_NEED_MORE;
	/* A length with the sign bit set is negative on the wire, never huge. */
	if (len < 4 || len > INT32_MAX || len > max_len)
		return PROTO_HEADER_BAD;
	if (has_type && type)
		*type = t;
	*msglen = len;
	return PROTO_HEADER_OK;
}

/* Startup packets */

/* Files one key/value pair of a v3 startup packet where it belongs. */
static bool
startup_add_param(StartupPacket *out, const char *key, const char *value, char *err, size_t errlen)
{
	if (strncmp(key, "_pq_.", 5) == 0) {
		if (out->nextensions >= PROTO_MAX_STARTUP_PARAMS)
			return errbuf_fail(err, errlen, "startup packet has too many protocol options");
		out->extension_names[out->nextensions] = key;
		out->extension_values[out->nextensions] = value;
		out->nextensions++;
	} else if (strcmp(key, "user") == 0) {
		out->user = value;
	} else if (strcmp(key, "database") == 0) {
		out->database = value;
	} else if (strcmp(key, "options") == 0) {
		out->options = value;
	} else if (strcmp(key, "application_name") == 0) {
		out->application_name = value;
	} else if (strcmp(key, "replication") == 0) {
		out->replication = value;
	} else {
		if (out->nparams >= PROTO_MAX_STARTUP_PARAMS)
			return errbuf_fail(err, errlen, "startup packet has more than %d parameters",
					   PROTO_MAX_STARTUP_PARAMS);
		out->param_names[out->nparams] = key;
		out->param_values[out->nparams] = value;
		out->nparams++;
	}
	return true;
}

/* key\0value\0 ... \0, the final NUL being the packet's last byte. */
static bool
startup_read_params(MsgReader *r, StartupPacket *out, char *err, size_t errlen)
{
	/* Each key is filed at most once, and the files are capped: this is enough. */
	const char *seen[5 + 2 * PROTO_MAX_STARTUP_PARAMS];
	int nseen = 0;

	for (;;) {
		const char *key, *value;
		size_t keylen;

		if (!msgread_string(r, &key, &keylen))
			return errbuf_fail(err, errlen, "startup packet has no terminator");
		if (keylen == 0)
			break;
		if (!msgread_string(r, &value, NULL))
			return errbuf_fail(err, errlen, "startup packet parameter has no value");
		for (int i = 0; i < nseen; i++) {
			if (strcmp(seen[i], key) == 0)
				return errbuf_fail(err, errlen, "startup packet has a duplicate parameter");
		}
		if (!startup_add_param(out, key, value, err, errlen))
			return false;
		seen[nseen++] = key;
	}
	if (!msgread_end(r))
		return errbuf_fail(err, errlen, "startup packet has bytes after its terminator");
	if (!out->user || out->user[0] == '\0')
		return errbuf_fail(err, errlen, "no user name in startup packet");
	if (!out->database || out->database[0] == '\0')
		out->database = out->user;
	return true;
}

bool
proto_parse_startup(const uint8_t *pkt, size_t len, StartupPacket *out, char *err, size_t errlen)
{
	MsgReader r;
	int32_t code;

	memset(out, 0, sizeof(*out));
	if (len > PROTO_MAX_STARTUP_PACKET)
		return errbuf_fail(err, errlen, "startup packet is longer than %d bytes", PROTO_MAX_STARTUP_PACKET);
	msgread_init(&r, pkt, len);
	if (!msgread_int32(&r, &code))
		return errbuf_fail(err, errlen, "startup packet is too short");
	out->code = code;

	switch (code) {
	case CANCEL_REQUEST_CODE:
		out->kind = PROTO_STARTUP_CANCEL;
		if (!msgread_int32(&r, &out->cancel_pid))
			return errbuf_fail(err, errlen, "cancel request is truncated");
		out->cancel_keylen = msgread_remaining(&r);
		if (out->cancel_keylen < PROTO_MIN_CANCEL_KEY || out->cancel_keylen > PROTO_MAX_CANCEL_KEY)
			return errbuf_fail(err, errlen, "cancel request key length %zu is not between %d and %d",
					   out->cancel_keylen, PROTO_MIN_CANCEL_KEY, PROTO_MAX_CANCEL_KEY);
		if (!msgread_bytes(&r, out->cancel_keylen, &out->cancel_key))
			return errbuf_fail(err, errlen, "cancel request is truncated");
		return true;
	case NEGOTIATE_SSL_CODE:
		out->kind = PROTO_STARTUP_SSL;
		return proto_check_end(&r, "SSL request", err, errlen);
	case NEGOTIATE_GSS_CODE:
		out->kind = PROTO_STARTUP_GSSENC;
		return proto_check_end(&r, "GSSAPI encryption request", err, errlen);
	default:
		break;
	}
	if (PG_PROTOCOL_MAJOR(code) != 3) {
		out->kind = PROTO_STARTUP_UNSUPPORTED;
		return true;
	}
	out->kind = PROTO_STARTUP_V3;
	out->minor = PG_PROTOCOL_MINOR(code);
	return startup_read_params(&r, out, err, errlen);
}

/* Frontend messages */

bool
proto_parse_parse(const uint8_t *body, size_t len, ProtoParse *out, char *err, size_t errlen)
{
	MsgReader r;
	int16_t nparams;

	memset(out, 0, sizeof(*out));
	msgread_init(&r, body, len);
	if (!msgread_string(&r, &out->stmt, NULL) || !msgread_string(&r, &out->query, NULL) ||
	    !msgread_int16(&r, &nparams))
		return errbuf_fail(err, errlen, "Parse message is truncated");
	if (nparams < 0)
		return errbuf_fail(err, errlen, "Parse message has a negative parameter count");
	out->nparams = nparams;
	if (!msgread_bytes(&r, (size_t) nparams * 4, &out->param_types))
		return errbuf_fail(err, errlen, "Parse message is truncated");
	return proto_check_end(&r, "Parse", err, errlen);
}

/* Skips a list of Int16 format codes preceded by its Int16 count. */
static bool
bind_skip_formats(MsgReader *r, int16_t *count)
{
	const uint8_t *codes;

	return msgread_int16(r, count) && *count >= 0 && msgread_bytes(r, (size_t) *count * 2, &codes);
}

bool
proto_parse_bind(const uint8_t *body, size_t len, ProtoBind *out, char *err, size_t errlen)
{
	MsgReader r;
	int16_t nformats, nparams, nresults;

	memset(out, 0, sizeof(*out));
	msgread_init(&r, body, len);
	if (!msgread_string(&r, &out->portal, NULL) || !msgread_string(&r, &out->stmt, NULL))
		return errbuf_fail(err, errlen, "Bind message is truncated");
	if (!bind_skip_formats(&r, &nformats) || !msgread_int16(&r, &nparams) || nparams < 0)
		return errbuf_fail(err, errlen, "Bind message has invalid parameter formats");
	/* As PostgreSQL: no formats, one for all, or one per parameter. */
	if (nformats > 1 && nformats != nparams)
		return errbuf_fail(err, errlen, "Bind message has %d parameter formats but %d parameters", nformats,
				   nparams);
	out->nparams = nparams;
	for (int i = 0; i < nparams; i++) {
		int32_t vlen;
		const uint8_t *value;

		if (!msgread_int32(&r, &vlen))
			return errbuf_fail(err, errlen, "Bind message is truncated");
		if (vlen == -1)
			continue; /* NULL */
		if (vlen < 0 || !msgread_bytes(&r, (size_t) vlen, &value))
			return errbuf_fail(err, errlen, "Bind message has an invalid parameter length");
	}
	if (!bind_skip_formats(&r, &nresults))
		return errbuf_fail(err, errlen, "Bind message has invalid result formats");
	return proto_check_end(&r, "Bind", err, errlen);
}

static bool
parse_target(const uint8_t *body, size_t len, ProtoTarget *out, const char *what, char *err, size_t errlen)
{
	MsgReader r;
	uint8_t kind;

	memset(out, 0, sizeof(*out));
	msgread_init(&r, body, len);
	if (!msgread_byte(&r, &kind) || !msgread_string(&r, &out->name, NULL))
		return errbuf_fail(err, errlen, "%s message is truncated", what);
	if (kind != PQTARGET_STATEMENT && kind != PQTARGET_PORTAL)
		return errbuf_fail(err, errlen, "%s message names neither a statement nor a portal", what);
	out->kind = (char) kind;
	return proto_check_end(&r, what, err, errlen);
}

bool
proto_parse_close(const uint8_t *body, size_t len, ProtoTarget *out, char *err, size_t errlen)
{
	return parse_target(body, len, out, "Close", err, errlen);
}

bool
proto_parse_describe(const uint8_t *body, size_t len, ProtoTarget *out, char *err, size_t errlen)
{
	return parse_target(body, len, out, "Describe", err, errlen);
}

bool
proto_parse_execute(const uint8_t *body, size_t len, ProtoExecute *out, char *err, size_t errlen)
{
	MsgReader r;

	memset(out, 0, sizeof(*out));
	msgread_init(&r, body, len);
	if (!msgread_string(&r, &out->portal, NULL) || !msgread_int32(&r, &out->max_rows))
		return errbuf_fail(err, errlen, "Execute message is truncated");
	return proto_check_end(&r, "Execute", err, errlen);
}

bool
proto_parse_query(const uint8_t *body, size_t len, ProtoQuery *out, char *err, size_t errlen)
{
	MsgReader r;

	memset(out, 0, sizeof(*out));
	msgread_init(&r, body, len);
	if (!msgread_string(&r, &out->sql, NULL))
		return errbuf_fail(err, errlen, "Query message is truncated");
	return proto_check_end(&r, "Query", err, errlen);
}

bool
proto_parse_sasl_initial_response(const uint8_t *body, size_t len, ProtoSaslInitialResponse *out, char *err,
				  size_t errlen)
{
	MsgReader r;

	memset(out, 0, sizeof(*out));
	msgread_init(&r, body, len);
	if (!msgread_string(&r, &out->mechanism, NULL) || !msgread_int32(&r, &out->datalen))
		return errbuf_fail(err, errlen, "SASLInitialResponse message is truncated");
	if (out->datalen != -1 && (out->datalen < 0 || !msgread_bytes(&r, (size_t) out->datalen, &out->data)))
		return errbuf_fail(err, errlen, "SASLInitialResponse message has an invalid data length");
	return proto_check_end(&r, "SASLInitialResponse", err, errlen);
}

/* Backend messages */

bool
proto_parse_ready_for_query(const uint8_t *body, size_t len, ProtoReadyForQuery *out, char *err, size_t errlen)
{
	MsgReader r;
	uint8_t status;

	memset(out, 0, sizeof(*out));
	msgread_init(&r, body, len);
	if (!msgread_byte(&r, &status))
		return errbuf_fail(err, errlen, "ReadyForQuery message is truncated");
	if (status != TXN_IDLE && status != TXN_IN_BLOCK && status != TXN_FAILED)
		return errbuf_fail(err, errlen, "ReadyForQuery message has an unknown transaction status");
	out->status = (char) status;
	return proto_check_end(&r, "ReadyForQuery", err, errlen);
}

bool
proto_parse_backend_key_data(const uint8_t *body, size_t len, ProtoBackendKeyData *out, char *err, size_t errlen)
{
	MsgReader r;

	memset(out, 0, sizeof(*out));
	msgread_init(&r, body, len);
	if (!msgread_int32(&r, &out->pid))
		return errbuf_fail(err, errlen, "BackendKeyData message is truncated");
	/* The key is the rest of the message: 4 bytes in 3.0, variable from 3.2. */
	out->keylen = msgread_remaining(&r);
	if (out->keylen < PROTO_MIN_CANCEL_KEY || out->keylen > PROTO_MAX_CANCEL_KEY)
		return errbuf_fail(err, errlen, "BackendKeyData key length %zu is not between %d and %d", out->keylen,
				   PROTO_MIN_CANCEL_KEY, PROTO_MAX_CANCEL_KEY);
	if (!msgread_bytes(&r, out->keylen, &out->key))
		return errbuf_fail(err, errlen, "BackendKeyData message is truncated");
	return proto_check_end(&r, "BackendKeyData", err, errlen);
}

bool
proto_parse_parameter_status(const uint8_t *body, size_t len, ProtoParameterStatus *out, char *err, size_t errlen)
{
	MsgReader r;

	memset(out, 0, sizeof(*out));
	msgread_init(&r, body, len);
	if (!msgread_string(&r, &out->name, NULL) || !msgread_string(&r, &out->value, NULL))
		return errbuf_fail(err, errlen, "ParameterStatus message is truncated");
	return proto_check_end(&r, "ParameterStatus", err, errlen);
}

/* AuthenticationSASL: mechanism names, then an empty one. */
static bool
auth_read_mechanisms(ProtoAuthRequest *out, char *err, size_t errlen)
{
	MsgReader r;

	msgread_init(&r, out->data, out->datalen);
	for (;;) {
		const char *name;
		size_t namelen;

		if (!msgread_string(&r, &name, &namelen))
			return errbuf_fail(err, errlen, "AuthenticationSASL message is truncated");
		if (namelen == 0)
			break;
		if (out->nmechanisms >= PROTO_MAX_SASL_MECHANISMS)
			return errbuf_fail(err, errlen, "AuthenticationSASL message offers more than %d mechanisms",
					   PROTO_MAX_SASL_MECHANISMS);
		out->mechanisms[out->nmechanisms++] = name;
	}
	if (out->nmechanisms == 0)
		return errbuf_fail(err, errlen, "AuthenticationSASL message offers no mechanism");
	return proto_check_end(&r, "AuthenticationSASL", err, errlen);
}

bool
proto_parse_auth_request(const uint8_t *body, size_t len, ProtoAuthRequest *out, char *err, size_t errlen)
{
	MsgReader r;

	memset(out, 0, sizeof(*out));
	msgread_init(&r, body, len);
	if (!msgread_int32(&r, &out->code))
		return errbuf_fail(err, errlen, "authentication request is truncated");
	out->datalen = msgread_remaining(&r);
	if (!msgread_bytes(&r, out->datalen, &out->data))
		return errbuf_fail(err, errlen, "authentication request is truncated");

	switch (out->code) {
	case AUTH_REQ_OK:
	case AUTH_REQ_PASSWORD:
	case AUTH_REQ_GSS:
	case AUTH_REQ_SSPI:
		if (out->datalen != 0)
			return errbuf_fail(err, errlen, "authentication request %d has unexpected data",
					   (int) out->code);
		return true;
	case AUTH_REQ_MD5:
		if (out->datalen != 4)
			return errbuf_fail(err, errlen, "AuthenticationMD5Password salt is not 4 bytes");
		return true;
	case AUTH_REQ_SASL:
		return auth_read_mechanisms(out, err, errlen);
	default:
		/* GSS_CONT, SASL_CONT, SASL_FIN carry opaque data; others are the caller's call. */
		return true;
	}
}

bool
proto_parse_error_response(const uint8_t *body, size_t len, ProtoErrorResponse *out, char *err, size_t errlen)
{
	MsgReader r;
	const char *localized = NULL;

	memset(out, 0, sizeof(*out));
	msgread_init(&r, body, len);
	for (;;) {
		uint8_t code;
		const char *value;

		if (!msgread_byte(&r, &code))
			return errbuf_fail(err, errlen, "error message is truncated");
		if (code == 0)
			break;
		if (!msgread_string(&r, &value, NULL))
			return errbuf_fail(err, errlen, "error message is truncated");
		/* Fields we do not use, or do not know yet, are skipped as the protocol asks. */
		switch (code) {
		case PQDIAG_SEVERITY:
			localized = value;
			break;
		case PQDIAG_SEVERITY_NONLOCALIZED:
			out->severity = value;
			break;
		case PQDIAG_SQLSTATE:
			out->sqlstate = value;
			break;
		case PQDIAG_MESSAGE:
			out->message = value;
			break;
		case PQDIAG_DETAIL:
			out->detail = value;
			break;
		case PQDIAG_HINT:
			out->hint = value;
			break;
		default:
			break;
		}
	}
	if (!proto_check_end(&r, "error", err, errlen))
		return false;
	if (!out->severity)
		out->severity = localized;
	/* PostgreSQL always sends these three. */
	if (!out->severity || !out->message)
		return errbuf_fail(err, errlen, "error message lacks a severity or message text");
	if (!out->sqlstate || strlen(out->sqlstate) != 5)
		return errbuf_fail(err, errlen, "error message lacks a valid SQLSTATE");
	return true;
}

bool
proto_parse_notification(const uint8_t *body, size_t len, ProtoNotification *out, char *err, size_t errlen)
{
	MsgReader r;

	memset(out, 0, sizeof(*out));
	msgread_init(&r, body, len);
	if (!msgread_int32(&r, &out->pid) || !msgread_string(&r, &out->channel, NULL) ||
	    !msgread_string(&r, &out->payload, NULL))
		return errbuf_fail(err, errlen, "NotificationResponse message is truncated");
	return proto_check_end(&r, "NotificationResponse", err, errlen);
}

bool
proto_parse_negotiate_protocol_version(const uint8_t *body, size_t len, ProtoNegotiateProtocolVersion *out, char *err,
				       size_t errlen)
{
	MsgReader r;
	int32_t n;

	memset(out, 0, sizeof(*out));
	msgread_init(&r, body, len);
	if (!msgread_int32(&r, &out->version) || !msgread_int32(&r, &n))
		return errbuf_fail(err, errlen, "NegotiateProtocolVersion message is truncated");
	/* Documented as a minor version, sent as a whole one; libpq reads it so. */
	if (PG_PROTOCOL_MAJOR(out->version) != 3)
		return errbuf_fail(err, errlen, "NegotiateProtocolVersion message offers a version other than 3.x");
	out->newest_minor = PG_PROTOCOL_MINOR(out->version);
	if (n < 0 || n > PROTO_MAX_UNRECOGNIZED_OPTIONS)
		return errbuf_fail(err, errlen, "NegotiateProtocolVersion message has an invalid option count");
	for (int i = 0; i < n; i++) {
		if (!msgread_string(&r, &out->unrecognized[i], NULL))
			return errbuf_fail(err, errlen, "NegotiateProtocolVersion message is truncated");
	}
	out->nunrecognized = n;
	return proto_check_end(&r, "NegotiateProtocolVersion", err, errlen);
}

bool
proto_parse_copy_response(const uint8_t *body, size_t len, ProtoCopyResponse *out, char *err, size_t errlen)
{
	MsgReader r;
	uint8_t format;
	int16_t ncols;

	memset(out, 0, sizeof(*out));
	msgread_init(&r, body, len);
	if (!msgread_byte(&r, &format) || !msgread_int16(&r, &ncols))
		return errbuf_fail(err, errlen, "COPY response message is truncated");
	if (format != PQFORMAT_TEXT && format != PQFORMAT_BINARY)
		return errbuf_fail(err, errlen, "COPY response message has an unknown format");
	if (ncols < 0 || !msgread_bytes(&r, (size_t) ncols * 2, &out->col_formats))
		return errbuf_fail(err, errlen, "COPY response message has an invalid column count");
	for (int i = 0; i < ncols; i++) {
		int colfmt = (out->col_formats[2 * i] << 8) | out->col_formats[2 * i + 1];

		/* A textual COPY has only textual columns. */
		if (colfmt != PQFORMAT_TEXT && (colfmt != PQFORMAT_BINARY || format == PQFORMAT_TEXT))
			return errbuf_fail(err, errlen, "COPY response message has an invalid column format");
	}
	out->format = format;
	out->ncols = ncols;
	return proto_check_end(&r, "COPY response", err, errlen);
}

bool
proto_parse_command_complete(const uint8_t *body, size_t len, ProtoCommandComplete *out, char *err, size_t errlen)
{
	MsgReader r;

	memset(out, 0, sizeof(*out));
	msgread_init(&r, body, len);
	if (!msgread_string(&r, &out->tag, NULL))
		return errbuf_fail(err, errlen, "CommandComplete message is truncated");
	return proto_check_end(&r, "CommandComplete", err, errlen);
}

bool
proto_parse_data_row(const uint8_t *body, size_t len, ProtoDataRow *out, char *err, size_t errlen)
{
	MsgReader r;
	int16_t n;
	int i;

	memset(out, 0, sizeof(*out));
	msgread_init(&r, body, len);
	if (!msgread_int16(&r, &n))
		return errbuf_fail(err, errlen, "DataRow message is truncated");
	if (n < 0 || n > PROTO_MAX_ROW_COLUMNS)
		return errbuf_fail(err, errlen, "DataRow message has %d columns, at most %d are accepted", n,
				   PROTO_MAX_ROW_COLUMNS);
	out->ncols = n;
	for (i = 0; i < n; i++) {
		int32_t vlen;

		if (!msgread_int32(&r, &vlen))
			return errbuf_fail(err, errlen, "DataRow message is truncated");
		if (vlen < -1)
			return errbuf_fail(err, errlen, "DataRow column %d has invalid length %d", i + 1, vlen);
		out->lengths[i] = vlen;
		if (vlen > 0 && !msgread_bytes(&r, (size_t) vlen, &out->values[i]))
			return errbuf_fail(err, errlen, "DataRow column %d is truncated", i + 1);
		if (vlen == 0)
			out->values[i] = body + r.pos;
	}
	return proto_check_end(&r, "DataRow", err, errlen);
}
