/*
 * The startup negotiation as a state machine on bytes (see negotiate.h).
 * Which request may come in which state follows PostgreSQL's
 * ProcessStartupPacket: an SSLRequest and a GSSENCRequest at most once each,
 * a GSSENCRequest only while no TLS is in use, then a CancelRequest or the
 * StartupMessage.
 */
#include "proxy/negotiate.h"
#include "proxy/proto.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>

/* PostgreSQL's words, so that a client's log reads the same whichever it reached. */
#define UNENCRYPTED_DETAIL \
	"This could be either a client-software bug or evidence of an attempted man-in-the-middle attack."
#define RENEGOTIATE_DETAIL "Encryption was already negotiated on this connection."

static NegotiateAction fail(NegotiateResult *out, const char *sqlstate, const char *detail, const char *fmt, ...)
	__attribute__((format(printf, 4, 5)));

static NegotiateAction
fail(NegotiateResult *out, const char *sqlstate, const char *detail, const char *fmt, ...)
{
	va_list ap;

	out->sqlstate = sqlstate;
	out->detail = detail;
	va_start(ap, fmt);
	vsnprintf(out->message, sizeof(out->message), fmt, ap);
	va_end(ap);
	return NEG_FAIL;
}

static bool
ssl_allowed(NegotiateState state)
{
	return state == NEG_START || state == NEG_GSS_DECLINED;
}

static bool
gss_allowed(NegotiateState state)
{
	return state == NEG_START || state == NEG_SSL_DECLINED;
}

/* An SSLRequest or a GSSENCRequest of pktlen bytes, with avail bytes received. */
static NegotiateAction
answer_request(NegotiateState *state, bool ssl, uint8_t answer, size_t pktlen, size_t avail, NegotiateResult *out)
{
	out->answer = answer;
	if (avail > pktlen) {
		/* Taken too, so that nothing ever reads them; the failure comes after the answer. */
		out->len = avail;
		*state = ssl ? NEG_TAINTED_SSL : NEG_TAINTED_GSS;
		return NEG_ANSWER;
	}
	out->len = pktlen;
	if (answer == NEGOTIATE_ANSWER_SSL)
		*state = NEG_SETTLED; /* what follows comes through TLS, where neither request may */
	else if (*state == NEG_START)
		*state = ssl ? NEG_SSL_DECLINED : NEG_GSS_DECLINED;
	else
		*state = NEG_SETTLED; /* the other one was declined before */
	return NEG_ANSWER;
}

NegotiateAction
negotiate_client(NegotiateState *state, bool tls_offered, const uint8_t *data, size_t avail, NegotiateResult *out)
{
	uint32_t msglen;
	char err[160];

	memset(out, 0, sizeof(*out));
	switch (*state) {
	case NEG_TAINTED_SSL:
		return fail(out, "08P01", UNENCRYPTED_DETAIL, "received unencrypted data after SSL request");
	case NEG_TAINTED_GSS:
		return fail(out, "08P01", UNENCRYPTED_DETAIL,
			    "received unencrypted data after GSSAPI encryption request");
	case NEG_START:
	case NEG_SSL_DECLINED:
	case NEG_GSS_DECLINED:
	case NEG_SETTLED:
		break;
	}

	switch (proto_parse_header(data, avail, false, NULL, &msglen, PROTO_MAX_STARTUP_LENGTH)) {
	case PROTO_HEADER_NEED_MORE:
		return NEG_NEED_MORE;
	case PROTO_HEADER_BAD:
		return fail(out, "08P01", NULL, "invalid length of startup packet");
	case PROTO_HEADER_OK:
		break;
	}
	if (avail < msglen)
		return NEG_NEED_MORE;
	if (!proto_parse_startup(data + 4, msglen - 4, &out->packet, err, sizeof(err)))
		return fail(out, "08P01", NULL, "invalid startup packet: %s", err);

	switch (out->packet.kind) {
	case PROTO_STARTUP_SSL:
		if (!ssl_allowed(*state))
			return fail(out, "08P01", RENEGOTIATE_DETAIL, "unexpected SSL request");
		return answer_request(state, true, tls_offered ? NEGOTIATE_ANSWER_SSL : NEGOTIATE_ANSWER_NO, msglen,
				      avail, out);
	case PROTO_STARTUP_GSSENC:
		if (!gss_allowed(*state))
			return fail(out, "08P01", RENEGOTIATE_DETAIL, "unexpected GSSAPI encryption request");
		return answer_request(state, false, NEGOTIATE_ANSWER_NO, msglen, avail, out);
	case PROTO_STARTUP_CANCEL:
		out->len = msglen;
		return NEG_CANCEL;
	case PROTO_STARTUP_UNSUPPORTED:
		if (PG_PROTOCOL_MAJOR(out->packet.code) != 3)
			return fail(out, "0A000", NULL,
				    "unsupported frontend protocol %d.%d: server supports 3.0 to 3.2",
				    PG_PROTOCOL_MAJOR(out->packet.code), PG_PROTOCOL_MINOR(out->packet.code));
		return fail(out, "0A000", NULL, "unsupported startup request code %d", out->packet.code);
	case PROTO_STARTUP_V3:
		out->len = msglen;
		return NEG_STARTUP;
	}
	return fail(out, "08P01", NULL, "invalid startup packet");
}

NegotiateServerAnswer
negotiate_server_answer(const uint8_t *data, size_t len)
{
	if (len == 0)
		return NEG_SERVER_INVALID;
	switch (data[0]) {
	case NEGOTIATE_ANSWER_SSL:
		return len == 1 ? NEG_SERVER_TLS : NEG_SERVER_UNENCRYPTED;
	case NEGOTIATE_ANSWER_NO:
		/* Nothing may follow: the server speaks next only after our startup packet. */
		return len == 1 ? NEG_SERVER_PLAIN : NEG_SERVER_UNENCRYPTED;
	case PQMSG_ERROR_RESPONSE:
		return NEG_SERVER_ERROR;
	default:
		return NEG_SERVER_INVALID;
	}
}
