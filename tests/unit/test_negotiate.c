/*
 * The startup negotiation (proxy/negotiate.c) on byte arrays: which request
 * is answered how in which state, that a request never comes with bytes
 * after it, and what a server's answer to our SSLRequest says.  Inputs are
 * copied to buffers of exactly their size so AddressSanitizer sees any read
 * past the end.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "proxy/negotiate.h"
#include "proxy/pktbuf.h"
#include "proxy/proto.h"

static const uint8_t ssl_request[] = {0, 0, 0, 8, 0x04, 0xd2, 0x16, 0x2f};
static const uint8_t gss_request[] = {0, 0, 0, 8, 0x04, 0xd2, 0x16, 0x30};

#define AFTER_SSL "received unencrypted data after SSL request"

/* A buffer of bytes and its length, built up by the tests. */
typedef struct Bytes {
	uint8_t data[512];
	size_t len;
} Bytes;

static void
put(Bytes *b, const void *data, size_t len)
{
	assert_true(b->len + len <= sizeof(b->data));
	memcpy(b->data + b->len, data, len);
	b->len += len;
}

static void
put_startup(Bytes *b, const char *user)
{
	const char *keys[] = {"user", "database"};
	const char *values[] = {user, "app"};
	PktBuf pb;

	pktbuf_init(&pb);
	pktbuf_write_startup(&pb, PG_PROTOCOL_3_0, keys, values, 2);
	assert_false(pb.failed);
	put(b, pb.buf, pb.len);
	pktbuf_free(&pb);
}

/* One decision on an exact-size copy of data[0..n).  The copy stays alive: res points into it. */
static uint8_t *copies[256];
static int ncopies;

static NegotiateAction
step(NegotiateState *state, bool tls_offered, const void *data, size_t n, NegotiateResult *res)
{
	uint8_t *copy = malloc(n ? n : 1);

	assert_non_null(copy);
	assert_true(ncopies < (int) (sizeof(copies) / sizeof(copies[0])));
	copies[ncopies++] = copy;
	if (n > 0)
		memcpy(copy, data, n);
	return negotiate_client(state, tls_offered, n ? copy : NULL, n, res);
}

static int
free_copies(void **state)
{
	(void) state;
	while (ncopies > 0)
		free(copies[--ncopies]);
	return 0;
}

static void
assert_failure(NegotiateAction action, const NegotiateResult *res, const char *sqlstate, const char *message)
{
	assert_int_equal(action, NEG_FAIL);
	assert_string_equal(res->sqlstate, sqlstate);
	assert_string_equal(res->message, message);
}

static void
test_tls_then_startup(void **unused)
{
	NegotiateState state = NEG_START;
	NegotiateResult res;
	Bytes startup = {.len = 0};

	(void) unused;
	for (size_t n = 0; n < sizeof(ssl_request); n++) {
		assert_int_equal(step(&state, true, ssl_request, n, &res), NEG_NEED_MORE);
		assert_int_equal(state, NEG_START);
	}
	assert_int_equal(step(&state, true, ssl_request, sizeof(ssl_request), &res), NEG_ANSWER);
	assert_int_equal(res.answer, NEGOTIATE_ANSWER_SSL);
	assert_int_equal(res.len, sizeof(ssl_request));
	assert_int_equal(state, NEG_SETTLED);
	/* After the handshake nothing is buffered: nothing to say. */
	assert_int_equal(step(&state, true, NULL, 0, &res), NEG_NEED_MORE);

	put_startup(&startup, "alice");
	for (size_t n = 0; n < startup.len; n++)
		assert_int_equal(step(&state, true, startup.data, n, &res), NEG_NEED_MORE);
	assert_int_equal(step(&state, true, startup.data, startup.len, &res), NEG_STARTUP);
	assert_int_equal(res.len, startup.len);
	assert_string_equal(res.packet.user, "alice");
	assert_string_equal(res.packet.database, "app");
}

static void
test_declined_requests(void **unused)
{
	NegotiateState state = NEG_START;
	NegotiateResult res;
	Bytes startup = {.len = 0};

	(void) unused;
	/* No TLS configured: 'N', then a GSSENCRequest may still come, and is declined too. */
	assert_int_equal(step(&state, false, ssl_request, sizeof(ssl_request), &res), NEG_ANSWER);
	assert_int_equal(res.answer, NEGOTIATE_ANSWER_NO);
	assert_int_equal(state, NEG_SSL_DECLINED);
	assert_int_equal(step(&state, false, NULL, 0, &res), NEG_NEED_MORE);
	assert_int_equal(step(&state, false, gss_request, sizeof(gss_request), &res), NEG_ANSWER);
	assert_int_equal(res.answer, NEGOTIATE_ANSWER_NO);
	assert_int_equal(state, NEG_SETTLED);
	/* A startup packet with more after it: pipelined messages are not the negotiation's business. */
	put_startup(&startup, "bob");
	put(&startup, "p\0\0\0\5x", 6);
	assert_int_equal(step(&state, false, startup.data, startup.len, &res), NEG_STARTUP);
	assert_int_equal(res.len, startup.len - 6);
	assert_string_equal(res.packet.user, "bob");

	/* libpq's gssencmode=prefer order: GSSENC declined, then TLS. */
	state = NEG_START;
	assert_int_equal(step(&state, true, gss_request, sizeof(gss_request), &res), NEG_ANSWER);
	assert_int_equal(res.answer, NEGOTIATE_ANSWER_NO);
	assert_int_equal(state, NEG_GSS_DECLINED);
	assert_int_equal(step(&state, true, ssl_request, sizeof(ssl_request), &res), NEG_ANSWER);
	assert_int_equal(res.answer, NEGOTIATE_ANSWER_SSL);
	assert_int_equal(state, NEG_SETTLED);
}

static void
test_requests_come_once(void **unused)
{
	NegotiateState state;
	NegotiateResult res;

	(void) unused;
	/* Inside TLS neither request may come. */
	state = NEG_START;
	assert_int_equal(step(&state, true, ssl_request, sizeof(ssl_request), &res), NEG_ANSWER);
	assert_failure(step(&state, true, ssl_request, sizeof(ssl_request), &res), &res, "08P01",
		       "unexpected SSL request");
	assert_non_null(res.detail);
	assert_failure(step(&state, true, gss_request, sizeof(gss_request), &res), &res, "08P01",
		       "unexpected GSSAPI encryption request");

	/* Declined ones are not asked again either. */
	state = NEG_START;
	assert_int_equal(step(&state, false, ssl_request, sizeof(ssl_request), &res), NEG_ANSWER);
	assert_failure(step(&state, false, ssl_request, sizeof(ssl_request), &res), &res, "08P01",
		       "unexpected SSL request");
	state = NEG_START;
	assert_int_equal(step(&state, false, gss_request, sizeof(gss_request), &res), NEG_ANSWER);
	assert_failure(step(&state, false, gss_request, sizeof(gss_request), &res), &res, "08P01",
		       "unexpected GSSAPI encryption request");
}

/* The CVE-2021-23214 case: whatever came with a request is taken unread, then the connection fails. */
static void
test_bytes_with_a_request(void **unused)
{
	static const struct {
		const uint8_t *request;
		bool tls_offered;
		uint8_t answer;
		NegotiateState tainted;
		const char *message;
	} cases[] = {
		{ssl_request, true, NEGOTIATE_ANSWER_SSL, NEG_TAINTED_SSL, AFTER_SSL},
		{ssl_request, false, NEGOTIATE_ANSWER_NO, NEG_TAINTED_SSL, AFTER_SSL},
		{gss_request, true, NEGOTIATE_ANSWER_NO, NEG_TAINTED_GSS,
		 "received unencrypted data after GSSAPI encryption request"},
	};

	(void) unused;
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		Bytes with_startup = {.len = 0}, with_byte = {.len = 0};
		const Bytes *inputs[2] = {&with_startup, &with_byte};

		put(&with_startup, cases[i].request, 8);
		put_startup(&with_startup, "mallory");
		put(&with_byte, cases[i].request, 8);
		put(&with_byte, "\0", 1);
		for (int k = 0; k < 2; k++) {
			NegotiateState state = NEG_START;
			NegotiateResult res;

			assert_int_equal(step(&state, cases[i].tls_offered, inputs[k]->data, inputs[k]->len, &res),
					 NEG_ANSWER);
			assert_int_equal(res.answer, cases[i].answer);
			assert_int_equal(res.len, inputs[k]->len); /* all of it: nothing is left to read */
			assert_int_equal(state, cases[i].tainted);
			/* Asked again after the answer (and the handshake), with or without new bytes. */
			assert_failure(step(&state, cases[i].tls_offered, NULL, 0, &res), &res, "08P01",
				       cases[i].message);
			assert_non_null(strstr(res.detail, "man-in-the-middle"));
			assert_failure(step(&state, cases[i].tls_offered, inputs[k]->data, inputs[k]->len, &res), &res,
				       "08P01", cases[i].message);
		}
	}
}

static void
test_other_packets(void **unused)
{
	static const uint8_t cancel[] = {0, 0, 0, 16, 0x04, 0xd2, 0x16, 0x2e, 0, 0, 0, 42, 1, 2, 3, 4};
	static const uint8_t v2[] = {0, 0, 0, 8, 0, 2, 0, 0};
	static const uint8_t short_len[] = {0, 0, 0, 3};
	static const uint8_t long_len[] = {0, 0, 0x27, 0x15}; /* 10005: one over the cap */
	static const uint8_t no_user[] = {0, 0, 0, 9, 0, 3, 0, 0, 0};
	static const uint8_t trailing_ssl[] = {0, 0, 0, 9, 0x04, 0xd2, 0x16, 0x2f, 0};
	NegotiateState state = NEG_START;
	NegotiateResult res;

	(void) unused;
	assert_int_equal(step(&state, true, cancel, sizeof(cancel), &res), NEG_CANCEL);
	assert_int_equal(res.len, sizeof(cancel));
	assert_int_equal(res.packet.cancel_pid, 42);
	assert_int_equal(res.packet.cancel_keylen, 4);
	assert_failure(step(&state, true, v2, sizeof(v2), &res), &res, "0A000",
		       "unsupported frontend protocol 2.0: server supports 3.0 to 3.2");
	assert_failure(step(&state, true, short_len, sizeof(short_len), &res), &res, "08P01",
		       "invalid length of startup packet");
	assert_failure(step(&state, true, long_len, sizeof(long_len), &res), &res, "08P01",
		       "invalid length of startup packet");
	assert_int_equal(step(&state, true, no_user, sizeof(no_user), &res), NEG_FAIL);
	assert_string_equal(res.sqlstate, "08P01");
	assert_non_null(strstr(res.message, "invalid startup packet"));
	assert_int_equal(step(&state, true, trailing_ssl, sizeof(trailing_ssl), &res), NEG_FAIL);
	assert_int_equal(state, NEG_START); /* failures leave the state alone */
}

/* The decisions do not depend on how the bytes were split, as long as each request came alone. */
static void
test_byte_at_a_time(void **unused)
{
	Bytes stream = {.len = 0};
	NegotiateState state = NEG_START;
	NegotiateResult res;
	NegotiateAction actions[4];
	int nactions = 0;
	size_t start = 0;

	(void) unused;
	put(&stream, gss_request, 8);
	put(&stream, ssl_request, 8);
	put_startup(&stream, "carol");
	for (size_t end = 1; end <= stream.len && nactions < 3; end++) {
		NegotiateAction a = step(&state, true, stream.data + start, end - start, &res);

		if (a == NEG_NEED_MORE)
			continue;
		actions[nactions++] = a;
		assert_int_equal(res.len, end - start);
		start = end;
	}
	assert_int_equal(nactions, 3);
	assert_int_equal(actions[0], NEG_ANSWER);
	assert_int_equal(actions[1], NEG_ANSWER);
	assert_int_equal(actions[2], NEG_STARTUP);
	assert_string_equal(res.packet.user, "carol");
	assert_int_equal(start, stream.len);
}

static NegotiateServerAnswer
server_answer(const char *bytes, size_t n)
{
	uint8_t *copy = malloc(n ? n : 1);
	NegotiateServerAnswer a;

	assert_non_null(copy);
	memcpy(copy, bytes, n);
	a = negotiate_server_answer(copy, n);
	free(copy);
	return a;
}

static void
test_server_answers(void **unused)
{
	(void) unused;
	assert_int_equal(server_answer("S", 1), NEG_SERVER_TLS);
	assert_int_equal(server_answer("N", 1), NEG_SERVER_PLAIN);
	assert_int_equal(server_answer("S\x16\x03\x03", 4), NEG_SERVER_UNENCRYPTED);
	assert_int_equal(server_answer("NR\0\0\0\x08\0\0\0\0", 10), NEG_SERVER_UNENCRYPTED);
	assert_int_equal(server_answer("E\0\0\0\x20SFATAL", 11), NEG_SERVER_ERROR);
	assert_int_equal(server_answer("E", 1), NEG_SERVER_ERROR);
	assert_int_equal(server_answer("G", 1), NEG_SERVER_INVALID);
	assert_int_equal(server_answer("", 0), NEG_SERVER_INVALID);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_teardown(test_tls_then_startup, free_copies),
		cmocka_unit_test_teardown(test_declined_requests, free_copies),
		cmocka_unit_test_teardown(test_requests_come_once, free_copies),
		cmocka_unit_test_teardown(test_bytes_with_a_request, free_copies),
		cmocka_unit_test_teardown(test_other_packets, free_copies),
		cmocka_unit_test_teardown(test_byte_at_a_time, free_copies),
		cmocka_unit_test(test_server_answers),
	};

	return cmocka_run_group_tests_name("negotiate", tests, NULL, NULL);
}
