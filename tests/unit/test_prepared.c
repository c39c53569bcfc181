/*
 * Prepared statements across server connections: client messages in,
 * what reaches the server and the client out, on byte arrays.  A stream is
 * shown as one word per message ("P:PGH_1 B:/PGH_1 E S" to the server,
 * "1 2 C Z" to the client) so each case reads like the exchange it checks.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "proxy/pktbuf.h"
#include "proxy/prepared.h"
#include "proxy/proto.h"

#define TEXT_OID 25
#define INT4_OID 23

typedef struct Harness {
	PreparedRegistry *reg;
	PreparedClient *cl[2];
	PreparedServer *srv[2];
	PktBuf wire;   /* what the servers got, whole messages */
	PktBuf client; /* what the clients got */
} Harness;

static Harness h;

static int
setup_max(int max)
{
	memset(&h, 0, sizeof(h));
	h.reg = prepared_registry_new();
	for (int i = 0; i < 2; i++) {
		h.cl[i] = prepared_client_new(h.reg);
		h.srv[i] = prepared_server_new(h.reg, max);
	}
	pktbuf_init(&h.wire);
	pktbuf_init(&h.client);
	return 0;
}

static int
setup(void **state)
{
	(void) state;
	return setup_max(100);
}

static int
setup_two(void **state)
{
	(void) state;
	return setup_max(2);
}

static int
setup_one(void **state)
{
	(void) state;
	return setup_max(1);
}

static void
check_all(void)
{
	char err[256];
	size_t nclients = 0;
	PreparedClient *clients[2];

	for (int i = 0; i < 2; i++)
		if (h.cl[i])
			clients[nclients++] = h.cl[i];
	if (!prepared_check(h.reg, h.srv, 2, clients, nclients, err, sizeof(err)))
		fail_msg("%s", err);
}

static int
teardown(void **state)
{
	(void) state;
	check_all();
	for (int i = 0; i < 2; i++) {
		prepared_client_free(h.cl[i]);
		prepared_server_free(h.srv[i]);
	}
	/* Every definition goes with the last client and server using it. */
	assert_int_equal(prepared_registry_count(h.reg), 0);
	prepared_registry_free(h.reg);
	pktbuf_free(&h.wire);
	pktbuf_free(&h.client);
	return 0;
}

/* Client messages */

static void
msg_parse(PktBuf *pb, const char *name, const char *query, int nparams, const int32_t *oids)
{
	pktbuf_start(pb, PQMSG_PARSE);
	pktbuf_put_string(pb, name);
	pktbuf_put_string(pb, query);
	pktbuf_put_int16(pb, (int16_t) nparams);
	for (int i = 0; i < nparams; i++)
		pktbuf_put_int32(pb, oids[i]);
	pktbuf_finish(pb);
}

/* One text parameter "42", binary results. */
static void
msg_bind(PktBuf *pb, const char *portal, const char *stmt)
{
	pktbuf_start(pb, PQMSG_BIND);
	pktbuf_put_string(pb, portal);
	pktbuf_put_string(pb, stmt);
	pktbuf_put_int16(pb, 0);
	pktbuf_put_int16(pb, 1);
	pktbuf_put_int32(pb, 2);
	pktbuf_put_bytes(pb, "42", 2);
	pktbuf_put_int16(pb, 1);
	pktbuf_put_int16(pb, PQFORMAT_BINARY);
	pktbuf_finish(pb);
}

static void
msg_target(PktBuf *pb, uint8_t type, char kind, const char *name)
{
	pktbuf_start(pb, type);
	pktbuf_put_byte(pb, (uint8_t) kind);
	pktbuf_put_string(pb, name);
	pktbuf_finish(pb);
}

static void
msg_execute(PktBuf *pb)
{
	pktbuf_start(pb, PQMSG_EXECUTE);
	pktbuf_put_string(pb, "");
	pktbuf_put_int32(pb, 0);
	pktbuf_finish(pb);
}

static void
msg_empty(PktBuf *pb, uint8_t type)
{
	pktbuf_start(pb, type);
	pktbuf_finish(pb);
}

/* Hands the client message in pb to the module; the server gets what it says, the client what is due. */
static void
send_on(int s, int c, PktBuf *pb)
{
	PktBuf to_server, to_client;
	size_t keep_from;
	char err[256];

	assert_false(pb->failed);
	pktbuf_init(&to_server);
	pktbuf_init(&to_client);
	if (!prepared_client_message(h.srv[s], h.cl[c], pb->buf, pb->len, pb->len, &to_server, &keep_from, &to_client,
				     err, sizeof(err)))
		fail_msg("client message refused: %s", err);
	assert_false(to_server.failed);
	assert_false(to_client.failed);
	assert_true(keep_from <= pb->len);
	pktbuf_put_messages(&h.wire, to_server.buf, to_server.len);
	pktbuf_put_messages(&h.wire, pb->buf + keep_from, pb->len - keep_from);
	pktbuf_put_messages(&h.client, to_client.buf, to_client.len);
	pktbuf_free(&to_server);
	pktbuf_free(&to_client);
	pktbuf_reset(pb);
	check_all();
}

/* Builds one client message with the expression and sends it. */
#define SEND(s, c, expr) \
	do { \
		PktBuf m_; \
		pktbuf_init(&m_); \
		{ \
			PktBuf *pb = &m_; \
			expr; \
		} \
		send_on((s), (c), &m_); \
		pktbuf_free(&m_); \
	} while (0)

/* Server replies */

static void
build_reply(PktBuf *pb, uint8_t type, const char *tag)
{
	pktbuf_start(pb, type);
	switch (type) {
	case PQMSG_COMMAND_COMPLETE:
		pktbuf_put_string(pb, tag ? tag : "SELECT 1");
		break;
	case PQMSG_READY_FOR_QUERY:
		pktbuf_put_byte(pb, TXN_IDLE);
		break;
	case PQMSG_ERROR_RESPONSE:
	case PQMSG_NOTICE_RESPONSE:
		pktbuf_put_byte(pb, PQDIAG_SEVERITY);
		pktbuf_put_string(pb, "ERROR");
		pktbuf_put_byte(pb, PQDIAG_SQLSTATE);
		pktbuf_put_string(pb, "42601");
		pktbuf_put_byte(pb, PQDIAG_MESSAGE);
		pktbuf_put_string(pb, "syntax error");
		pktbuf_put_byte(pb, 0);
		break;
	case PQMSG_DATA_ROW:
		pktbuf_put_int16(pb, 1);
		pktbuf_put_int32(pb, 1);
		pktbuf_put_byte(pb, '1');
		break;
	case PQMSG_ROW_DESCRIPTION:
	case PQMSG_PARAMETER_DESCRIPTION:
		pktbuf_put_int16(pb, 0);
		break;
	case PQMSG_COPY_IN_RESPONSE:
		pktbuf_put_byte(pb, PQFORMAT_TEXT);
		pktbuf_put_int16(pb, 0);
		break;
	default:
		break;
	}
	pktbuf_finish(pb);
}

/* The server on s sends type; returns the verdict, the client getting what it should. */
static PreparedVerdict
reply_tag(int s, uint8_t type, const char *tag)
{
	PktBuf msg, to_client;
	PreparedVerdict verdict;
	char err[256];

	pktbuf_init(&msg);
	pktbuf_init(&to_client);
	build_reply(&msg, type, tag);
	if (!prepared_server_reply(h.srv[s], msg.buf, msg.len, msg.len, &verdict, &to_client, err, sizeof(err)))
		fail_msg("server reply '%c' refused: %s", type, err);
	if (verdict == PREPARED_FORWARD)
		pktbuf_put_messages(&h.client, msg.buf, msg.len);
	pktbuf_put_messages(&h.client, to_client.buf, to_client.len);
	assert_false(to_client.failed);
	pktbuf_free(&msg);
	pktbuf_free(&to_client);
	check_all();
	return verdict;
}

static PreparedVerdict
reply(int s, uint8_t type)
{
	return reply_tag(s, type, NULL);
}

/* Several replies in a row from server s. */
static void
replies(int s, const char *types)
{
	for (const char *t = types; *t; t++)
		(void) reply(s, (uint8_t) *t);
}

/* Rendering streams */

static uint32_t
get32(const uint8_t *p)
{
	return (uint32_t) p[0] << 24 | (uint32_t) p[1] << 16 | (uint32_t) p[2] << 8 | p[3];
}

/*
 * What the server got: P:name, B:portal/stmt, D/S:name, C/P:name, and the
 * bare type byte of the others.  Consumes the stream.
 */
static char *
render_wire(char *out, size_t outlen)
{
	size_t pos = 0, n = 0;

	out[0] = '\0';
	while (pos + 5 <= h.wire.len) {
		const uint8_t *m = h.wire.buf + pos;
		uint32_t len = get32(m + 1);
		const char *body = (const char *) m + 5;

		assert_true(len >= 4 && pos + 1 + len <= h.wire.len);
		switch (m[0]) {
		case PQMSG_PARSE:
			n += (size_t) snprintf(out + n, outlen - n, "%sP:%s", n ? " " : "", body);
			break;
		case PQMSG_BIND:
			n += (size_t) snprintf(out + n, outlen - n, "%sB:%s/%s", n ? " " : "", body,
					       body + strlen(body) + 1);
			break;
		case PQMSG_DESCRIBE:
		case PQMSG_CLOSE:
			n += (size_t) snprintf(out + n, outlen - n, "%s%c/%c:%s", n ? " " : "", m[0], body[0],
					       body + 1);
			break;
		default:
			n += (size_t) snprintf(out + n, outlen - n, "%s%c", n ? " " : "", m[0]);
			break;
		}
		assert_true(n < outlen);
		pos += 1 + len;
	}
	assert_int_equal(pos, h.wire.len);
	pktbuf_reset(&h.wire);
	return out;
}

/* What the client got: the type bytes.  Consumes the stream. */
static char *
render_client(char *out, size_t outlen)
{
	size_t pos = 0, n = 0;

	out[0] = '\0';
	while (pos + 5 <= h.client.len) {
		uint32_t len = get32(h.client.buf + pos + 1);

		assert_true(len >= 4);
		n += (size_t) snprintf(out + n, outlen - n, "%s%c", n ? " " : "", h.client.buf[pos]);
		assert_true(n < outlen);
		pos += 1 + len;
	}
	assert_int_equal(pos, h.client.len);
	pktbuf_reset(&h.client);
	return out;
}

#define assert_wire(expected) \
	do { \
		char buf_[512]; \
		assert_string_equal(render_wire(buf_, sizeof(buf_)), (expected)); \
	} while (0)

#define assert_client(expected) \
	do { \
		char buf_[512]; \
		assert_string_equal(render_client(buf_, sizeof(buf_)), (expected)); \
	} while (0)

static void
assert_maps_to(int c, const char *name, const char *server_name)
{
	char out[PREPARED_NAME_SIZE];

	if (!server_name) {
		assert_false(prepared_client_lookup(h.cl[c], name, out));
		return;
	}
	assert_true(prepared_client_lookup(h.cl[c], name, out));
	assert_string_equal(out, server_name);
}

/* Client c prepares name as query on server s, with a Sync, and the server says yes. */
static void
prepare(int s, int c, const char *name, const char *query)
{
	SEND(s, c, msg_parse(pb, name, query, 0, NULL));
	SEND(s, c, msg_empty(pb, PQMSG_SYNC));
	replies(s, "1Z");
	pktbuf_reset(&h.wire);
	pktbuf_reset(&h.client);
	assert_int_equal(prepared_server_pending(h.srv[s]), 0);
}

/* Tests */

static void
test_parse_is_renamed(void **state)
{
	static const int32_t oids[] = {INT4_OID, TEXT_OID};
	static const uint8_t expected[] = {
		'P', 0,   0,   0,   34,  'P', 'G', 'H', '_', '1', 0, 'S', 'E', 'L', 'E', 'C', 'T', ' ',
		'$', '1', ',', ' ', '$', '2', 0,   0,   2,   0,   0, 0,   23,  0,   0,   0,   25,
	};

	(void) state;
	SEND(0, 0, msg_parse(pb, "s1", "SELECT $1, $2", 2, oids));
	/* Same text and types, the proxy's name: byte for byte. */
	assert_int_equal(h.wire.len, sizeof(expected));
	assert_memory_equal(h.wire.buf, expected, sizeof(expected));
	pktbuf_reset(&h.wire);
	SEND(0, 0, msg_bind(pb, "", "s1"));
	SEND(0, 0, msg_execute(pb));
	SEND(0, 0, msg_empty(pb, PQMSG_SYNC));
	assert_wire("B:/PGH_1 E S");
	assert_int_equal(prepared_server_pending(h.srv[0]), 4);
	replies(0, "12DCZ");
	assert_client("1 2 D C Z");
	assert_int_equal(prepared_server_pending(h.srv[0]), 0);
	assert_maps_to(0, "s1", "PGH_1");
	assert_true(prepared_server_has(h.srv[0], h.cl[0], "s1"));
	assert_int_equal(prepared_client_count(h.cl[0]), 1);
}

/* The unnamed statement, portals and unknown names pass through untouched. */
static void
test_pass_through(void **state)
{
	(void) state;
	SEND(0, 0, msg_parse(pb, "", "SELECT 1", 0, NULL));
	SEND(0, 0, msg_bind(pb, "p", ""));
	SEND(0, 0, msg_target(pb, PQMSG_DESCRIBE, PQTARGET_PORTAL, "p"));
	SEND(0, 0, msg_target(pb, PQMSG_DESCRIBE, PQTARGET_STATEMENT, ""));
	SEND(0, 0, msg_bind(pb, "", "never_parsed"));
	SEND(0, 0, msg_execute(pb));
	SEND(0, 0, msg_target(pb, PQMSG_CLOSE, PQTARGET_PORTAL, "p"));
	SEND(0, 0, msg_target(pb, PQMSG_CLOSE, PQTARGET_STATEMENT, ""));
	SEND(0, 0, msg_empty(pb, PQMSG_FLUSH));
	SEND(0, 0, msg_empty(pb, PQMSG_SYNC));
	assert_wire("P: B:p/ D/P:p D/S: B:/never_parsed E C/P:p C/S: H S");
	replies(0, "12Tt");
	reply(0, PQMSG_NO_DATA);
	replies(0, "2C33Z");
	assert_client("1 2 T t n 2 C 3 3 Z");
	assert_int_equal(prepared_registry_count(h.reg), 0);
	assert_int_equal(prepared_server_count(h.srv[0]), 0);
}

/* Bind keeps its portal name; Describe of a statement is renamed; its replies go through. */
static void
test_bind_and_describe_renamed(void **state)
{
	(void) state;
	prepare(0, 0, "s1", "SELECT 1");
	SEND(0, 0, msg_target(pb, PQMSG_DESCRIBE, PQTARGET_STATEMENT, "s1"));
	SEND(0, 0, msg_bind(pb, "portal_a", "s1"));
	SEND(0, 0, msg_target(pb, PQMSG_DESCRIBE, PQTARGET_PORTAL, "portal_a"));
	SEND(0, 0, msg_empty(pb, PQMSG_SYNC));
	assert_wire("D/S:PGH_1 B:portal_a/PGH_1 D/P:portal_a S");
	replies(0, "tT2TZ");
	assert_client("t T 2 T Z");
}

/* A server without the statement gets it first; its ParseComplete is not the client's. */
static void
test_injected_parse(void **state)
{
	(void) state;
	prepare(0, 0, "s1", "SELECT 1");
	SEND(1, 0, msg_bind(pb, "", "s1"));
	SEND(1, 0, msg_execute(pb));
	SEND(1, 0, msg_target(pb, PQMSG_DESCRIBE, PQTARGET_STATEMENT, "s1"));
	SEND(1, 0, msg_empty(pb, PQMSG_SYNC));
	/* Prepared once on server 1, then used as is. */
	assert_wire("P:PGH_1 B:/PGH_1 E D/S:PGH_1 S");
	assert_int_equal(reply(1, PQMSG_PARSE_COMPLETE), PREPARED_SWALLOW);
	assert_int_equal(reply(1, PQMSG_BIND_COMPLETE), PREPARED_FORWARD);
	replies(1, "DCtTZ");
	assert_client("2 D C t T Z");
	assert_true(prepared_server_has(h.srv[1], h.cl[0], "s1"));
	assert_int_equal(prepared_registry_count(h.reg), 1);
}

/* A Parse of what the server has is not sent; its ParseComplete comes in its turn. */
static void
test_parse_answered_by_proxy(void **state)
{
	(void) state;
	prepare(0, 0, "a", "SELECT 1");
	/* Nothing before it: answered at once, so a Parse + Flush gets its reply. */
	SEND(0, 1, msg_parse(pb, "b", "SELECT 1", 0, NULL));
	SEND(0, 1, msg_empty(pb, PQMSG_FLUSH));
	assert_wire("H");
	assert_client("1");
	assert_int_equal(prepared_server_pending(h.srv[0]), 0);
	/* Behind other replies: after them, before the next. */
	SEND(0, 1, msg_parse(pb, "", "SELECT 2", 0, NULL));
	SEND(0, 1, msg_bind(pb, "", ""));
	SEND(0, 1, msg_execute(pb));
	SEND(0, 1, msg_parse(pb, "c", "SELECT 1", 0, NULL));
	SEND(0, 1, msg_bind(pb, "", "c"));
	SEND(0, 1, msg_execute(pb));
	SEND(0, 1, msg_empty(pb, PQMSG_SYNC));
	assert_wire("P: B:/ E B:/PGH_1 E S");
	assert_client("");
	replies(0, "12DC");
	assert_client("1 2 D C 1");
	replies(0, "2DCZ");
	assert_client("2 D C Z");
	assert_maps_to(1, "b", "PGH_1");
	assert_maps_to(1, "c", "PGH_1");
}

/* A client's Close of a statement is answered by the proxy, in turn, and forgets the name. */
static void
test_close_answered_by_proxy(void **state)
{
	(void) state;
	prepare(0, 0, "s1", "SELECT 1");
	SEND(0, 0, msg_bind(pb, "", "s1"));
	SEND(0, 0, msg_execute(pb));
	SEND(0, 0, msg_target(pb, PQMSG_CLOSE, PQTARGET_STATEMENT, "s1"));
	SEND(0, 0, msg_target(pb, PQMSG_CLOSE, PQTARGET_STATEMENT, "never_parsed"));
	SEND(0, 0, msg_empty(pb, PQMSG_SYNC));
	assert_wire("B:/PGH_1 E S");
	assert_maps_to(0, "s1", NULL);
	replies(0, "2C");
	assert_client("2 C 3 3");
	reply(0, PQMSG_READY_FOR_QUERY);
	assert_client("Z");
	assert_int_equal(prepared_client_count(h.cl[0]), 0);
	/* The server keeps it for whoever prepares the same text next. */
	assert_int_equal(prepared_server_count(h.srv[0]), 1);
	SEND(0, 1, msg_parse(pb, "x", "SELECT 1", 0, NULL));
	assert_wire("");
	assert_client("1");
}

/* A re-Parse of a closed name with another text points the name at another definition. */
static void
test_reparse_other_text(void **state)
{
	(void) state;
	prepare(0, 0, "s1", "SELECT 1");
	SEND(0, 0, msg_target(pb, PQMSG_CLOSE, PQTARGET_STATEMENT, "s1"));
	SEND(0, 0, msg_parse(pb, "s1", "SELECT 2", 0, NULL));
	SEND(0, 0, msg_bind(pb, "", "s1"));
	SEND(0, 0, msg_empty(pb, PQMSG_SYNC));
	assert_wire("P:PGH_2 B:/PGH_2 S");
	replies(0, "12Z");
	assert_client("3 1 2 Z");
	assert_maps_to(0, "s1", "PGH_2");
	assert_int_equal(prepared_client_count(h.cl[0]), 1);
	/* The old text lives on the server only now. */
	assert_int_equal(prepared_registry_count(h.reg), 2);
	prepared_server_free(h.srv[0]);
	h.srv[0] = prepared_server_new(h.reg, 100);
	assert_int_equal(prepared_registry_count(h.reg), 1);
	/* The same text with other parameter types is another definition. */
	{
		static const int32_t oids[] = {INT4_OID};

		SEND(0, 0, msg_parse(pb, "s2", "SELECT 2", 1, oids));
	}
	assert_wire("P:PGH_3");
	replies(0, "1");
	assert_client("1");
}

/* A Parse of a name the client has: PostgreSQL's error, and nothing runs up to the Sync. */
static void
test_reparse_existing(void **state)
{
	static const uint8_t error[] = {
		'E', 0,   0,   0,   66,  'S', 'E', 'R', 'R', 'O', 'R', 0,   'V', 'E', 'R', 'R', 'O',
		'R', 0,   'C', '4', '2', 'P', '0', '5', 0,   'M', 'p', 'r', 'e', 'p', 'a', 'r', 'e',
		'd', ' ', 's', 't', 'a', 't', 'e', 'm', 'e', 'n', 't', ' ', '"', 's', '1', '"', ' ',
		'a', 'l', 'r', 'e', 'a', 'd', 'y', ' ', 'e', 'x', 'i', 's', 't', 's', 0,   0,
	};

	(void) state;
	prepare(0, 0, "s1", "SELECT 1");
	/* Alone: answered at once. */
	SEND(0, 0, msg_parse(pb, "s1", "SELECT 1", 0, NULL));
	assert_int_equal(h.client.len, sizeof(error));
	assert_memory_equal(h.client.buf, error, sizeof(error));
	pktbuf_reset(&h.client);
	SEND(0, 0, msg_bind(pb, "", "s1"));
	SEND(0, 0, msg_execute(pb));
	assert_false(prepared_server_idle(h.srv[0]));
	SEND(0, 0, msg_empty(pb, PQMSG_SYNC));
	assert_wire("S");
	replies(0, "Z");
	assert_client("Z");
	/* Behind other replies, in turn; the name keeps its first text. */
	SEND(0, 0, msg_bind(pb, "", "s1"));
	SEND(0, 0, msg_parse(pb, "s1", "SELECT 2", 0, NULL));
	SEND(0, 0, msg_target(pb, PQMSG_CLOSE, PQTARGET_STATEMENT, "s1"));
	SEND(0, 0, msg_empty(pb, PQMSG_SYNC));
	assert_wire("B:/PGH_1 S");
	replies(0, "2Z");
	assert_client("2 E Z");
	assert_maps_to(0, "s1", "PGH_1");
	assert_int_equal(prepared_registry_count(h.reg), 1);
	/* Behind an error: the server's error is the one the client sees. */
	SEND(0, 0, msg_bind(pb, "", "never_parsed"));
	SEND(0, 0, msg_parse(pb, "s1", "SELECT 2", 0, NULL));
	SEND(0, 0, msg_empty(pb, PQMSG_SYNC));
	replies(0, "EZ");
	assert_client("E Z");
	assert_wire("B:/never_parsed S");
}

/* Two clients preparing the same text share one definition and one server statement. */
static void
test_two_clients_share(void **state)
{
	(void) state;
	prepare(0, 0, "mine", "SELECT now()");
	SEND(0, 1, msg_parse(pb, "theirs", "SELECT now()", 0, NULL));
	assert_wire("");
	assert_client("1");
	assert_maps_to(0, "mine", "PGH_1");
	assert_maps_to(1, "theirs", "PGH_1");
	assert_int_equal(prepared_registry_count(h.reg), 1);
	assert_int_equal(prepared_server_count(h.srv[0]), 1);
	/* The first client leaves: the second still runs it, elsewhere too. */
	prepared_client_free(h.cl[0]);
	h.cl[0] = NULL;
	check_all();
	SEND(1, 1, msg_bind(pb, "", "theirs"));
	assert_wire("P:PGH_1 B:/PGH_1");
	replies(1, "12");
	assert_client("2");
}

/* At max_prepared_statements the least recently used statement is closed first, quietly. */
static void
test_eviction(void **state)
{
	(void) state;
	SEND(0, 0, msg_parse(pb, "s1", "SELECT 1", 0, NULL));
	SEND(0, 0, msg_parse(pb, "s2", "SELECT 2", 0, NULL));
	SEND(0, 0, msg_bind(pb, "", "s1")); /* s2 is now the least recently used */
	SEND(0, 0, msg_parse(pb, "s3", "SELECT 3", 0, NULL));
	SEND(0, 0, msg_empty(pb, PQMSG_SYNC));
	assert_wire("P:PGH_1 P:PGH_2 B:/PGH_1 C/S:PGH_2 P:PGH_3 S");
	replies(0, "112");
	assert_int_equal(reply(0, PQMSG_CLOSE_COMPLETE), PREPARED_SWALLOW);
	replies(0, "1Z");
	assert_client("1 1 2 1 Z");
	assert_int_equal(prepared_server_count(h.srv[0]), 2);
	assert_true(prepared_server_has(h.srv[0], h.cl[0], "s1"));
	assert_false(prepared_server_has(h.srv[0], h.cl[0], "s2"));
	assert_true(prepared_server_has(h.srv[0], h.cl[0], "s3"));
	/* The client still has s2: using it prepares it again, in place of s1. */
	SEND(0, 0, msg_bind(pb, "", "s2"));
	SEND(0, 0, msg_empty(pb, PQMSG_SYNC));
	assert_wire("C/S:PGH_1 P:PGH_2 B:/PGH_2 S");
	replies(0, "312Z");
	assert_client("2 Z");
	assert_int_equal(prepared_server_count(h.srv[0]), 2);
}

/* An error at a Bind: the Parse before it stands, what follows up to Sync never ran. */
static void
test_error_after_parse(void **state)
{
	(void) state;
	SEND(0, 0, msg_parse(pb, "s1", "SELECT $1", 0, NULL));
	SEND(0, 0, msg_bind(pb, "", "s1"));
	SEND(0, 0, msg_execute(pb));
	SEND(0, 0, msg_empty(pb, PQMSG_SYNC));
	replies(0, "1E");
	assert_int_equal(prepared_server_pending(h.srv[0]), 1);
	reply(0, PQMSG_READY_FOR_QUERY);
	assert_client("1 E Z");
	assert_maps_to(0, "s1", "PGH_1");
	assert_true(prepared_server_has(h.srv[0], h.cl[0], "s1"));
}

/* A client's Parse that fails: neither the client nor the server has the statement. */
static void
test_error_at_parse(void **state)
{
	(void) state;
	SEND(0, 0, msg_parse(pb, "s1", "SELEC 1", 0, NULL));
	SEND(0, 0, msg_bind(pb, "", "s1"));
	SEND(0, 0, msg_execute(pb));
	SEND(0, 0, msg_empty(pb, PQMSG_SYNC));
	assert_wire("P:PGH_1 B:/PGH_1 E S");
	replies(0, "EZ");
	assert_client("E Z");
	assert_maps_to(0, "s1", NULL);
	assert_int_equal(prepared_client_count(h.cl[0]), 0);
	assert_int_equal(prepared_server_count(h.srv[0]), 0);
	assert_int_equal(prepared_registry_count(h.reg), 0);
}

/* After an error the proxy's own answers up to the Sync are not given, and their changes undone. */
static void
test_error_skips_proxy_answers(void **state)
{
	(void) state;
	prepare(0, 0, "s1", "SELECT 1");
	SEND(0, 0, msg_bind(pb, "", "never_parsed"));
	SEND(0, 0, msg_target(pb, PQMSG_CLOSE, PQTARGET_STATEMENT, "s1"));
	SEND(0, 0, msg_parse(pb, "s2", "SELECT 1", 0, NULL));
	SEND(0, 0, msg_parse(pb, "s1", "SELECT 1", 0, NULL));
	SEND(0, 0, msg_empty(pb, PQMSG_SYNC));
	assert_wire("B:/never_parsed S");
	assert_maps_to(0, "s2", "PGH_1");
	replies(0, "EZ");
	/* As from a server: no CloseComplete, no ParseComplete. */
	assert_client("E Z");
	assert_maps_to(0, "s1", "PGH_1");
	assert_maps_to(0, "s2", NULL);
	assert_int_equal(prepared_client_count(h.cl[0]), 1);
}

/* A Parse the proxy added fails: the error is the client's, the server lacks the statement. */
static void
test_injected_parse_fails(void **state)
{
	(void) state;
	prepare(0, 0, "s1", "SELECT * FROM t");
	SEND(1, 0, msg_bind(pb, "", "s1"));
	SEND(1, 0, msg_execute(pb));
	SEND(1, 0, msg_empty(pb, PQMSG_SYNC));
	assert_wire("P:PGH_1 B:/PGH_1 E S");
	assert_int_equal(reply(1, PQMSG_ERROR_RESPONSE), PREPARED_FORWARD);
	reply(1, PQMSG_READY_FOR_QUERY);
	assert_client("E Z");
	assert_false(prepared_server_has(h.srv[1], h.cl[0], "s1"));
	assert_maps_to(0, "s1", "PGH_1");
	/* Tried again next time. */
	SEND(1, 0, msg_bind(pb, "", "s1"));
	assert_wire("P:PGH_1 B:/PGH_1");
}

/* An error with no Sync sent yet: until one, the server drops what comes unread. */
static void
test_error_before_sync(void **state)
{
	(void) state;
	SEND(0, 0, msg_parse(pb, "s1", "SELECT 1", 0, NULL));
	SEND(0, 0, msg_bind(pb, "", "s1"));
	SEND(0, 0, msg_empty(pb, PQMSG_FLUSH));
	replies(0, "1E");
	assert_int_equal(prepared_server_pending(h.srv[0]), 0);
	SEND(0, 0, msg_execute(pb));
	SEND(0, 0, msg_target(pb, PQMSG_CLOSE, PQTARGET_STATEMENT, "s1"));
	assert_client("1 E");
	assert_int_equal(prepared_server_pending(h.srv[0]), 0);
	/* The server is this client's until then. */
	assert_false(prepared_server_idle(h.srv[0]));
	{
		PktBuf m, to_server, to_client;
		size_t keep_from;
		char err[256];

		pktbuf_init(&m);
		pktbuf_init(&to_server);
		pktbuf_init(&to_client);
		msg_empty(&m, PQMSG_SYNC);
		assert_false(prepared_client_message(h.srv[0], h.cl[1], m.buf, m.len, m.len, &to_server, &keep_from,
						     &to_client, err, sizeof(err)));
		pktbuf_free(&m);
		pktbuf_free(&to_server);
		pktbuf_free(&to_client);
	}
	SEND(0, 0, msg_empty(pb, PQMSG_SYNC));
	assert_wire("P:PGH_1 B:/PGH_1 H S");
	assert_int_equal(prepared_server_pending(h.srv[0]), 1);
	reply(0, PQMSG_READY_FOR_QUERY);
	assert_client("Z");
	assert_true(prepared_server_idle(h.srv[0]));
	/* The skipped Close did not close it. */
	assert_maps_to(0, "s1", "PGH_1");
}

/* Hundreds of names and texts: the tables grow, eviction keeps the server at its bound. */
static void
test_many_statements(void **state)
{
	char name[32], query[64], expected[PREPARED_NAME_SIZE];

	(void) state;
	for (int i = 0; i < 300; i++) {
		snprintf(name, sizeof(name), "s%d", i);
		snprintf(query, sizeof(query), "SELECT %d", i);
		SEND(0, 0, msg_parse(pb, name, query, 0, NULL));
	}
	SEND(0, 0, msg_empty(pb, PQMSG_SYNC));
	assert_int_equal(prepared_server_pending(h.srv[0]), 300 + 200 + 1);
	for (int i = 0; i < 300; i++) {
		if (i >= 100)
			assert_int_equal(reply(0, PQMSG_CLOSE_COMPLETE), PREPARED_SWALLOW);
		assert_int_equal(reply(0, PQMSG_PARSE_COMPLETE), PREPARED_FORWARD);
	}
	reply(0, PQMSG_READY_FOR_QUERY);
	assert_int_equal(prepared_server_count(h.srv[0]), 100);
	assert_int_equal(prepared_client_count(h.cl[0]), 300);
	for (int i = 0; i < 300; i++) {
		snprintf(name, sizeof(name), "s%d", i);
		snprintf(expected, sizeof(expected), "PGH_%d", i + 1);
		assert_maps_to(0, name, expected);
		assert_int_equal(prepared_server_has(h.srv[0], h.cl[0], name), i >= 200);
	}
	for (int i = 0; i < 300; i++) {
		snprintf(name, sizeof(name), "s%d", i);
		SEND(0, 0, msg_target(pb, PQMSG_CLOSE, PQTARGET_STATEMENT, name));
	}
	assert_int_equal(prepared_client_count(h.cl[0]), 0);
	assert_int_equal(prepared_registry_count(h.reg), 100);
	pktbuf_reset(&h.wire);
	pktbuf_reset(&h.client);
}

/* Changes of one name across Syncs: a failure undoes only its own. */
static void
test_failures_across_syncs(void **state)
{
	(void) state;
	SEND(0, 0, msg_parse(pb, "n", "SELEC 1", 0, NULL));
	SEND(0, 0, msg_empty(pb, PQMSG_SYNC));
	SEND(0, 0, msg_parse(pb, "n", "SELECT 2", 0, NULL));
	SEND(0, 0, msg_empty(pb, PQMSG_SYNC));
	assert_wire("P:PGH_1 S P:PGH_2 S");
	replies(0, "EZ");
	assert_maps_to(0, "n", "PGH_2");
	replies(0, "1Z");
	assert_client("E Z 1 Z");
	assert_maps_to(0, "n", "PGH_2");
	assert_int_equal(prepared_server_count(h.srv[0]), 1);

	/* The other way round: the first stands, the second's failure brings it back. */
	SEND(0, 0, msg_parse(pb, "m", "SELECT 3", 0, NULL));
	SEND(0, 0, msg_empty(pb, PQMSG_SYNC));
	SEND(0, 0, msg_parse(pb, "m", "SELEC 4", 0, NULL));
	SEND(0, 0, msg_bind(pb, "", "m"));
	SEND(0, 0, msg_empty(pb, PQMSG_SYNC));
	assert_wire("P:PGH_3 S P:PGH_4 B:/PGH_4 S");
	replies(0, "1ZEZ");
	assert_client("1 Z E Z");
	assert_maps_to(0, "m", "PGH_3");
	assert_int_equal(prepared_server_count(h.srv[0]), 2);
}

/* An eviction skipped after an error did not happen: the server still has that statement. */
static void
test_skipped_eviction(void **state)
{
	(void) state;
	prepare(0, 0, "s1", "SELECT 1");
	SEND(0, 0, msg_bind(pb, "", "never_parsed"));
	SEND(0, 0, msg_parse(pb, "s2", "SELECT 2", 0, NULL));
	SEND(0, 0, msg_empty(pb, PQMSG_SYNC));
	assert_wire("B:/never_parsed C/S:PGH_1 P:PGH_2 S");
	replies(0, "EZ");
	assert_client("E Z");
	assert_true(prepared_server_has(h.srv[0], h.cl[0], "s1"));
	assert_maps_to(0, "s2", NULL);
	assert_int_equal(prepared_server_count(h.srv[0]), 1);
}

/* DISCARD ALL or DEALLOCATE ALL from the client empties the server's set and the client's names. */
static void
test_discard_all(void **state)
{
	(void) state;
	prepare(0, 0, "s1", "SELECT 1");
	prepare(0, 0, "s2", "SELECT 2");
	SEND(0, 0, pktbuf_write_query(pb, "DISCARD ALL"));
	SEND(0, 0, msg_parse(pb, "s3", "SELECT 3", 0, NULL));
	SEND(0, 0, msg_target(pb, PQMSG_CLOSE, PQTARGET_STATEMENT, "s2"));
	SEND(0, 0, msg_parse(pb, "s2", "SELECT 22", 0, NULL));
	SEND(0, 0, msg_empty(pb, PQMSG_SYNC));
	reply_tag(0, PQMSG_COMMAND_COMPLETE, "DISCARD ALL");
	/* What was prepared before it is gone, what came after it stays. */
	assert_false(prepared_server_has(h.srv[0], h.cl[0], "s1"));
	assert_maps_to(0, "s1", NULL);
	assert_maps_to(0, "s2", "PGH_4");
	assert_true(prepared_server_has(h.srv[0], h.cl[0], "s3"));
	replies(0, "Z1");
	/* The Close of s2 that came after it closed nothing: a CloseComplete all the same. */
	assert_client("C Z 1 3");
	replies(0, "1Z");
	assert_client("1 Z");
	assert_maps_to(0, "s2", "PGH_4");
	assert_int_equal(prepared_client_count(h.cl[0]), 2);
	/* A name it dropped is the server's to refuse. */
	SEND(0, 0, msg_bind(pb, "", "s1"));
	assert_wire("Q P:PGH_3 P:PGH_4 S B:/s1");
	replies(0, "E");
	assert_int_equal(prepared_server_pending(h.srv[0]), 0);
	SEND(0, 0, msg_empty(pb, PQMSG_SYNC));
	replies(0, "Z");
	/* DEALLOCATE ALL does the same; the proxy's own reset tells it with prepared_server_forget_all. */
	SEND(0, 0, pktbuf_write_query(pb, "DEALLOCATE ALL"));
	reply_tag(0, PQMSG_COMMAND_COMPLETE, "DEALLOCATE ALL");
	replies(0, "Z");
	assert_int_equal(prepared_client_count(h.cl[0]), 0);
	assert_int_equal(prepared_server_count(h.srv[0]), 0);
	prepare(0, 0, "s1", "SELECT 1");
	prepared_server_forget_all(h.srv[0]);
	assert_int_equal(prepared_server_count(h.srv[0]), 0);
	assert_maps_to(0, "s1", "PGH_5");
}

/* COPY FROM STDIN drops the Sync sent with it; libpq sends another after CopyDone. */
static void
test_copy_in(void **state)
{
	(void) state;
	SEND(0, 0, msg_parse(pb, "", "COPY t FROM STDIN", 0, NULL));
	SEND(0, 0, msg_bind(pb, "", ""));
	SEND(0, 0, msg_execute(pb));
	SEND(0, 0, msg_empty(pb, PQMSG_SYNC));
	replies(0, "12G");
	assert_int_equal(prepared_server_pending(h.srv[0]), 1);
	SEND(0, 0, {
		pktbuf_start(pb, PQMSG_COPY_DATA);
		pktbuf_put_bytes(pb, "1\n", 2);
		pktbuf_finish(pb);
	});
	SEND(0, 0, msg_empty(pb, PQMSG_SYNC));
	SEND(0, 0, msg_empty(pb, PQMSG_COPY_DONE));
	SEND(0, 0, msg_empty(pb, PQMSG_SYNC));
	assert_int_equal(prepared_server_pending(h.srv[0]), 2);
	replies(0, "CZ");
	assert_client("1 2 G C Z");
	assert_int_equal(prepared_server_pending(h.srv[0]), 0);
	/* In a simple query: the Query's ReadyForQuery ends it. */
	SEND(0, 0, pktbuf_write_query(pb, "COPY t FROM STDIN"));
	replies(0, "G");
	SEND(0, 0, msg_empty(pb, PQMSG_COPY_DONE));
	replies(0, "CZ");
	assert_client("G C Z");
	assert_int_equal(prepared_server_pending(h.srv[0]), 0);
}

/* Replies that fit nowhere are refused; notices and a lone FATAL pass. */
static void
test_out_of_turn(void **state)
{
	PktBuf msg, to_client;
	PreparedVerdict verdict;
	char err[256];

	(void) state;
	assert_int_equal(reply(0, PQMSG_NOTICE_RESPONSE), PREPARED_FORWARD);
	assert_int_equal(reply(0, PQMSG_ERROR_RESPONSE), PREPARED_FORWARD);
	assert_client("N E");
	pktbuf_init(&msg);
	pktbuf_init(&to_client);
	build_reply(&msg, PQMSG_PARSE_COMPLETE, NULL);
	assert_false(
		prepared_server_reply(h.srv[0], msg.buf, msg.len, msg.len, &verdict, &to_client, err, sizeof(err)));
	SEND(0, 0, msg_bind(pb, "", ""));
	assert_false(
		prepared_server_reply(h.srv[0], msg.buf, msg.len, msg.len, &verdict, &to_client, err, sizeof(err)));
	assert_int_equal(prepared_server_pending(h.srv[0]), 1);
	pktbuf_free(&msg);
	pktbuf_free(&to_client);
	replies(0, "2");
}

/* A Bind streams: only its head is rewritten, the rest follows from the client's buffer. */
static void
test_bind_streams(void **state)
{
	PktBuf bind, to_server, to_client;
	size_t keep_from, head;
	char err[256];

	(void) state;
	prepare(0, 0, "s1", "SELECT $1");
	pktbuf_init(&bind);
	pktbuf_init(&to_server);
	pktbuf_init(&to_client);
	pktbuf_start(&bind, PQMSG_BIND);
	pktbuf_put_string(&bind, "");
	pktbuf_put_string(&bind, "s1");
	pktbuf_put_int16(&bind, 0);
	pktbuf_put_int16(&bind, 1);
	pktbuf_put_int32(&bind, 100000);
	for (int i = 0; i < 100000; i++)
		pktbuf_put_byte(&bind, 'x');
	pktbuf_put_int16(&bind, 0);
	pktbuf_finish(&bind);
	head = 5 + 1 + 3;
	/* Only the names at hand. */
	assert_true(prepared_client_message(h.srv[0], h.cl[0], bind.buf, head, bind.len, &to_server, &keep_from,
					    &to_client, err, sizeof(err)));
	assert_int_equal(keep_from, head);
	assert_int_equal(to_server.len, 5 + 1 + 6);
	assert_int_equal(to_server.buf[0], PQMSG_BIND);
	assert_int_equal(get32(to_server.buf + 1), bind.len - 1 + 3);
	assert_memory_equal(to_server.buf + 5, "\0PGH_1\0", 7);
	/* The names cut off: refused. */
	pktbuf_reset(&to_server);
	assert_false(prepared_client_message(h.srv[0], h.cl[0], bind.buf, head - 1, bind.len, &to_server, &keep_from,
					     &to_client, err, sizeof(err)));
	pktbuf_free(&bind);
	/* A named Parse must be whole; the unnamed one streams as it is. */
	pktbuf_init(&bind);
	msg_parse(&bind, "big", "SELECT 1", 0, NULL);
	assert_false(prepared_client_message(h.srv[0], h.cl[0], bind.buf, 10, bind.len, &to_server, &keep_from,
					     &to_client, err, sizeof(err)));
	pktbuf_reset(&bind);
	msg_parse(&bind, "", "SELECT 1", 0, NULL);
	assert_true(prepared_client_message(h.srv[0], h.cl[0], bind.buf, 10, bind.len, &to_server, &keep_from,
					    &to_client, err, sizeof(err)));
	assert_int_equal(keep_from, 0);
	assert_int_equal(to_server.len, 0);
	assert_int_equal(prepared_server_pending(h.srv[0]), 2);
	pktbuf_free(&bind);
	pktbuf_free(&to_server);
	pktbuf_free(&to_client);
	replies(0, "21");
	pktbuf_reset(&h.client);
}

/* A client that leaves mid-pipeline: the server's replies still drain, owed to no one. */
static void
test_client_leaves(void **state)
{
	PktBuf m, to_server, to_client;
	size_t keep_from;
	char err[256];

	(void) state;
	prepare(0, 0, "s1", "SELECT 1");
	SEND(0, 0, msg_parse(pb, "s2", "SELECT 2", 0, NULL));
	SEND(0, 0, msg_bind(pb, "", "s1"));
	SEND(0, 0, msg_target(pb, PQMSG_CLOSE, PQTARGET_STATEMENT, "s1"));
	SEND(0, 0, msg_empty(pb, PQMSG_SYNC));
	/* Another client cannot use the server yet. */
	pktbuf_init(&m);
	pktbuf_init(&to_server);
	pktbuf_init(&to_client);
	msg_empty(&m, PQMSG_SYNC);
	assert_false(prepared_client_message(h.srv[0], h.cl[1], m.buf, m.len, m.len, &to_server, &keep_from, &to_client,
					     err, sizeof(err)));
	/* Nor this client another server. */
	assert_false(prepared_client_message(h.srv[1], h.cl[0], m.buf, m.len, m.len, &to_server, &keep_from, &to_client,
					     err, sizeof(err)));
	prepared_client_free(h.cl[0]);
	h.cl[0] = NULL;
	check_all();
	assert_int_equal(prepared_server_pending(h.srv[0]), 3);
	assert_false(prepared_client_message(h.srv[0], h.cl[1], m.buf, m.len, m.len, &to_server, &keep_from, &to_client,
					     err, sizeof(err)));
	replies(0, "12Z");
	assert_client("1 2 Z");
	assert_int_equal(prepared_server_pending(h.srv[0]), 0);
	assert_true(prepared_client_message(h.srv[0], h.cl[1], m.buf, m.len, m.len, &to_server, &keep_from, &to_client,
					    err, sizeof(err)));
	replies(0, "Z");
	pktbuf_free(&m);
	pktbuf_free(&to_server);
	pktbuf_free(&to_client);
	/* The server keeps both statements for others. */
	assert_int_equal(prepared_server_count(h.srv[0]), 2);
}

/* A server closed mid-pipeline takes its expectations with it. */
static void
test_server_closes(void **state)
{
	(void) state;
	SEND(0, 0, msg_parse(pb, "s1", "SELECT 1", 0, NULL));
	SEND(0, 0, msg_target(pb, PQMSG_CLOSE, PQTARGET_STATEMENT, "s1"));
	SEND(0, 0, msg_parse(pb, "s1", "SELECT 2", 0, NULL));
	prepared_server_free(h.srv[0]);
	h.srv[0] = prepared_server_new(h.reg, 100);
	check_all();
	assert_maps_to(0, "s1", "PGH_2");
	SEND(0, 0, msg_bind(pb, "", "s1"));
	assert_wire("P:PGH_1 P:PGH_2 P:PGH_2 B:/PGH_2");
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_parse_is_renamed, setup, teardown),
		cmocka_unit_test_setup_teardown(test_pass_through, setup, teardown),
		cmocka_unit_test_setup_teardown(test_bind_and_describe_renamed, setup, teardown),
		cmocka_unit_test_setup_teardown(test_injected_parse, setup, teardown),
		cmocka_unit_test_setup_teardown(test_parse_answered_by_proxy, setup, teardown),
		cmocka_unit_test_setup_teardown(test_close_answered_by_proxy, setup, teardown),
		cmocka_unit_test_setup_teardown(test_reparse_other_text, setup, teardown),
		cmocka_unit_test_setup_teardown(test_reparse_existing, setup, teardown),
		cmocka_unit_test_setup_teardown(test_two_clients_share, setup, teardown),
		cmocka_unit_test_setup_teardown(test_eviction, setup_two, teardown),
		cmocka_unit_test_setup_teardown(test_error_after_parse, setup, teardown),
		cmocka_unit_test_setup_teardown(test_error_at_parse, setup, teardown),
		cmocka_unit_test_setup_teardown(test_error_skips_proxy_answers, setup, teardown),
		cmocka_unit_test_setup_teardown(test_injected_parse_fails, setup, teardown),
		cmocka_unit_test_setup_teardown(test_error_before_sync, setup, teardown),
		cmocka_unit_test_setup_teardown(test_failures_across_syncs, setup, teardown),
		cmocka_unit_test_setup_teardown(test_many_statements, setup, teardown),
		cmocka_unit_test_setup_teardown(test_skipped_eviction, setup_one, teardown),
		cmocka_unit_test_setup_teardown(test_discard_all, setup, teardown),
		cmocka_unit_test_setup_teardown(test_copy_in, setup, teardown),
		cmocka_unit_test_setup_teardown(test_out_of_turn, setup, teardown),
		cmocka_unit_test_setup_teardown(test_bind_streams, setup, teardown),
		cmocka_unit_test_setup_teardown(test_client_leaves, setup, teardown),
		cmocka_unit_test_setup_teardown(test_server_closes, setup, teardown),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
