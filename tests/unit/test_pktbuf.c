/*
 * The message builder: every whole-message writer against hand-written
 * bytes, the length filled in by finish, and the sticky failure flag
 * (fixed buffer overflow, misuse of start/finish, bad counts).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "proxy/pktbuf.h"
#include "proxy/proto.h"

#define assert_pb_bytes(pb, expected) assert_pb_bytes_impl((pb), (expected), sizeof(expected))

static void
assert_pb_bytes_impl(const PktBuf *pb, const uint8_t *expected, size_t len)
{
	assert_false(pb->failed);
	assert_false(pb->in_message);
	assert_int_equal(pb->len, len);
	assert_memory_equal(pb->buf, expected, len);
}

static void
test_simple_messages(void **state)
{
	static const uint8_t rfq[] = {'Z', 0, 0, 0, 5, 'T'};
	static const uint8_t terminate[] = {'X', 0, 0, 0, 4};
	static const uint8_t query[] = {'Q', 0, 0, 0, 13, 'S', 'E', 'L', 'E', 'C', 'T', ' ', '1', 0};
	static const uint8_t complete[] = {'C', 0, 0, 0, 13, 'S', 'E', 'L', 'E', 'C', 'T', ' ', '1', 0};
	static const uint8_t param[] = {'S', 0, 0, 0, 8, 'a', 0, 'b', 0};
	PktBuf pb;

	(void) state;
	pktbuf_init(&pb);
	pktbuf_write_ready_for_query(&pb, TXN_IN_BLOCK);
	assert_pb_bytes(&pb, rfq);
	pktbuf_reset(&pb);
	pktbuf_write_terminate(&pb);
	assert_pb_bytes(&pb, terminate);
	pktbuf_reset(&pb);
	pktbuf_write_query(&pb, "SELECT 1");
	assert_pb_bytes(&pb, query);
	pktbuf_reset(&pb);
	pktbuf_write_command_complete(&pb, "SELECT 1");
	assert_pb_bytes(&pb, complete);
	pktbuf_reset(&pb);
	pktbuf_write_parameter_status(&pb, "a", "b");
	assert_pb_bytes(&pb, param);
	pktbuf_free(&pb);
}

static void
test_error_and_notice(void **state)
{
	static const uint8_t error[] = {
		'E', 0,   0, 0,   31,  'S', 'E', 'R', 'R', 'O', 'R', 0,   'V', 'E', 'R', 'R',
		'O', 'R', 0, 'C', '0', '8', 'P', '0', '1', 0,   'M', 'b', 'a', 'd', 0,   0,
	};
	static const uint8_t notice[] = {
		'N', 0,   0,   0,   33,  'S', 'N', 'O', 'T', 'E', 0,   'V', 'N', 'O', 'T', 'E', 0,
		'C', '0', '0', '0', '0', '0', 0,   'M', 'm', 0,   'D', 'd', 0,   'H', 'h', 0,   0,
	};
	PktBuf pb;

	(void) state;
	pktbuf_init(&pb);
	pktbuf_write_error(&pb, "ERROR", "08P01", "bad", NULL, NULL);
	assert_pb_bytes(&pb, error);
	pktbuf_reset(&pb);
	pktbuf_write_notice(&pb, "NOTE", "00000", "m", "d", "h");
	assert_pb_bytes(&pb, notice);
	pktbuf_free(&pb);
}

static void
test_auth_and_keys(void **state)
{
	static const uint8_t salt[] = {0xa1, 0xb2, 0xc3, 0xd4};
	static const uint8_t md5[] = {'R', 0, 0, 0, 12, 0, 0, 0, 5, 0xa1, 0xb2, 0xc3, 0xd4};
	static const uint8_t ok[] = {'R', 0, 0, 0, 8, 0, 0, 0, 0};
	static const uint8_t key[] = {9, 8, 7, 6};
	static const uint8_t keydata[] = {'K', 0, 0, 0, 12, 0, 0, 0x30, 0x39, 9, 8, 7, 6};
	static const uint8_t cancel[] = {
		0, 0, 0, 16, 0x04, 0xd2, 0x16, 0x2e, 0, 0, 0x30, 0x39, 9, 8, 7, 6,
	};
	static const uint8_t ssl[] = {0, 0, 0, 8, 0x04, 0xd2, 0x16, 0x2f};
	PktBuf pb;

	(void) state;
	pktbuf_init(&pb);
	pktbuf_write_auth(&pb, AUTH_REQ_MD5, salt, sizeof(salt));
	assert_pb_bytes(&pb, md5);
	pktbuf_reset(&pb);
	pktbuf_write_auth(&pb, AUTH_REQ_OK, NULL, 0);
	assert_pb_bytes(&pb, ok);
	pktbuf_reset(&pb);
	pktbuf_write_backend_key_data(&pb, 12345, key, sizeof(key));
	assert_pb_bytes(&pb, keydata);
	pktbuf_reset(&pb);
	pktbuf_write_cancel_request(&pb, 12345, key, sizeof(key));
	assert_pb_bytes(&pb, cancel);
	pktbuf_reset(&pb);
	pktbuf_write_ssl_request(&pb);
	assert_pb_bytes(&pb, ssl);
	pktbuf_free(&pb);
}

static void
test_rows(void **state)
{
	static const uint8_t desc[] = {
		'T', 0, 0, 0, 26, 0, 1, 'x', 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 25, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0, 0,
	};
	static const uint8_t row[] = {
		'D', 0, 0, 0, 16, 0, 2, 0, 0, 0, 2, 'a', 'b', 0xff, 0xff, 0xff, 0xff,
	};
	static const char *const names[] = {"x"};
	static const char *const values[] = {"ab", NULL};
	PktBuf pb;

	(void) state;
	pktbuf_init(&pb);
	pktbuf_write_row_description(&pb, 1, names);
	assert_pb_bytes(&pb, desc);
	pktbuf_reset(&pb);
	pktbuf_write_data_row(&pb, 2, values);
	assert_pb_bytes(&pb, row);

	pktbuf_reset(&pb);
	pktbuf_write_row_description(&pb, -1, names);
	assert_true(pb.failed);
	pktbuf_reset(&pb);
	pktbuf_write_data_row(&pb, 40000, values);
	assert_true(pb.failed);
	pktbuf_free(&pb);
}

static void
test_frontend_messages(void **state)
{
	static const uint8_t startup[] = {
		0,   0, 0,   30,  0,   3,   0,   2,   'u', 's', 'e', 'r', 0,   'b', 'o',
		'b', 0, 'd', 'a', 't', 'a', 'b', 'a', 's', 'e', 0,   'd', 'b', 0,   0,
	};
	static const uint8_t password[] = {'p', 0, 0, 0, 11, 's', 'e', 'c', 'r', 'e', 't', 0};
	static const uint8_t sasl[] = {
		'p', 0,   0,   0,   25,  'S', 'C', 'R', 'A', 'M', '-', 'S', 'H',
		'A', '-', '2', '5', '6', 0,   0,   0,   0,   3,   'n', ',', ',',
	};
	static const uint8_t sasl_none[] = {
		'p', 0,   0,   0,   22,  'S', 'C', 'R',  'A',  'M',  '-',  'S',
		'H', 'A', '-', '2', '5', '6', 0,   0xff, 0xff, 0xff, 0xff,
	};
	static const char *const keys[] = {"user", "database"};
	static const char *const values[] = {"bob", "db"};
	PktBuf pb;

	(void) state;
	pktbuf_init(&pb);
	pktbuf_write_startup(&pb, PG_PROTOCOL_3_2, keys, values, 2);
	assert_pb_bytes(&pb, startup);
	pktbuf_reset(&pb);
	pktbuf_write_password_message(&pb, "secret", 7);
	assert_pb_bytes(&pb, password);
	pktbuf_reset(&pb);
	pktbuf_write_sasl_initial_response(&pb, "SCRAM-SHA-256", "n,,", 3);
	assert_pb_bytes(&pb, sasl);
	pktbuf_reset(&pb);
	pktbuf_write_sasl_initial_response(&pb, "SCRAM-SHA-256", NULL, 0);
	assert_pb_bytes(&pb, sasl_none);
	pktbuf_free(&pb);
}

static void
test_negotiate(void **state)
{
	static const uint8_t expected[] = {
		'v', 0, 0, 0, 19, 0, 3, 0, 0, 0, 0, 0, 1, '_', 'p', 'q', '_', '.', 'x', 0,
	};
	static const char *const names[] = {"_pq_.x"};
	PktBuf pb;

	(void) state;
	pktbuf_init(&pb);
	pktbuf_write_negotiate_protocol_version(&pb, PG_PROTOCOL_3_0, 1, names);
	assert_pb_bytes(&pb, expected);
	pktbuf_reset(&pb);
	pktbuf_write_negotiate_protocol_version(&pb, PG_PROTOCOL_3_0, -1, names);
	assert_true(pb.failed);
	pktbuf_free(&pb);
}

static void
test_puts_and_queueing(void **state)
{
	static const uint8_t expected[] = {
		'd',  0,    0,    0,    18,   0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
		0xfe, 0xff, 0xfe, 0x80, 0x00, 0x00, 0x00, 'c',  0,    0,    0,    4,
	};
	PktBuf pb;

	(void) state;
	pktbuf_init(&pb);
	pktbuf_start(&pb, PQMSG_COPY_DATA);
	pktbuf_put_int64(&pb, -2);
	pktbuf_put_int16(&pb, -2);
	pktbuf_put_int32(&pb, INT32_MIN);
	pktbuf_finish(&pb);
	pktbuf_start(&pb, PQMSG_COPY_DONE);
	pktbuf_finish(&pb);
	assert_pb_bytes(&pb, expected);
	pktbuf_free(&pb);
}

static void
test_growth(void **state)
{
	size_t n = 100000;
	uint8_t *big = malloc(n);
	PktBuf pb;

	(void) state;
	assert_non_null(big);
	memset(big, 'z', n);
	pktbuf_init(&pb);
	pktbuf_write_password_message(&pb, big, n);
	assert_false(pb.failed);
	assert_int_equal(pb.len, n + 5);
	assert_int_equal(pb.buf[0], PQMSG_PASSWORD_MESSAGE);
	assert_int_equal(((size_t) pb.buf[1] << 24) | ((size_t) pb.buf[2] << 16) | ((size_t) pb.buf[3] << 8) |
				 pb.buf[4],
			 n + 4);
	assert_memory_equal(pb.buf + 5, big, n);
	pktbuf_free(&pb);
	free(big);
}

static void
test_fixed_buffer(void **state)
{
	uint8_t mem[6];
	PktBuf pb;

	(void) state;
	/* Exactly enough room. */
	pktbuf_init_fixed(&pb, mem, sizeof(mem));
	pktbuf_write_ready_for_query(&pb, TXN_IDLE);
	assert_false(pb.failed);
	assert_int_equal(pb.len, 6);

	/* One byte short, then the failure sticks until reset. */
	pktbuf_init_fixed(&pb, mem, 5);
	pktbuf_write_ready_for_query(&pb, TXN_IDLE);
	assert_true(pb.failed);
	pktbuf_write_terminate(&pb);
	assert_true(pb.failed);
	pktbuf_reset(&pb);
	assert_false(pb.failed);
	pktbuf_write_terminate(&pb);
	assert_false(pb.failed);
	assert_int_equal(pb.len, 5);
	pktbuf_write_terminate(&pb);
	assert_true(pb.failed);
	pktbuf_free(&pb); /* must not free the caller's memory */

	pktbuf_init_fixed(&pb, NULL, 0);
	pktbuf_write_terminate(&pb);
	assert_true(pb.failed);
}

static void
test_misuse(void **state)
{
	PktBuf pb;

	(void) state;
	pktbuf_init(&pb);
	pktbuf_put_byte(&pb, 1);
	assert_true(pb.failed);

	pktbuf_reset(&pb);
	pktbuf_finish(&pb);
	assert_true(pb.failed);

	pktbuf_reset(&pb);
	pktbuf_start(&pb, PQMSG_QUERY);
	pktbuf_start(&pb, PQMSG_QUERY);
	assert_true(pb.failed);

	pktbuf_reset(&pb);
	pktbuf_start(&pb, PQMSG_QUERY);
	pktbuf_put_messages(&pb, "Z\0\0\0\5I", 6);
	assert_true(pb.failed);

	pktbuf_reset(&pb);
	pktbuf_write_terminate(&pb);
	assert_false(pb.failed);
	pktbuf_free(&pb);
}

static void
test_put_messages(void **state)
{
	static const uint8_t kept[] = {'S', 0, 0, 0, 8, 'a', 0, 'b', 0};
	static const uint8_t expected[] = {
		'R', 0, 0, 0, 8, 0, 0, 0, 0, 'S', 0, 0, 0, 8, 'a', 0, 'b', 0, 'Z', 0, 0, 0, 5, 'I',
	};
	PktBuf pb;

	(void) state;
	pktbuf_init(&pb);
	pktbuf_write_auth(&pb, AUTH_REQ_OK, NULL, 0);
	pktbuf_put_messages(&pb, kept, sizeof(kept));
	pktbuf_put_messages(&pb, NULL, 0);
	pktbuf_write_ready_for_query(&pb, TXN_IDLE);
	assert_pb_bytes(&pb, expected);
	pktbuf_free(&pb);
}

/* A head whose tail follows from elsewhere: the length word counts the tail. */
static void
test_finish_with_tail(void **state)
{
	static const uint8_t head[] = {'B', 0, 0, 1, 6, 'p', 0};
	PktBuf pb;

	(void) state;
	pktbuf_init(&pb);
	pktbuf_start(&pb, PQMSG_BIND);
	pktbuf_put_string(&pb, "p");
	pktbuf_finish_with_tail(&pb, 256);
	assert_pb_bytes(&pb, head);
	/* Outside a message, or a tail past the 1 GB cap: refused. */
	pktbuf_finish_with_tail(&pb, 0);
	assert_true(pb.failed);
	pktbuf_reset(&pb);
	pktbuf_start(&pb, PQMSG_BIND);
	pktbuf_finish_with_tail(&pb, (size_t) 0x3fffffff);
	assert_true(pb.failed);
	assert_false(pb.in_message);
	pktbuf_free(&pb);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_simple_messages),   cmocka_unit_test(test_error_and_notice),
		cmocka_unit_test(test_auth_and_keys),     cmocka_unit_test(test_rows),
		cmocka_unit_test(test_frontend_messages), cmocka_unit_test(test_negotiate),
		cmocka_unit_test(test_puts_and_queueing), cmocka_unit_test(test_growth),
		cmocka_unit_test(test_fixed_buffer),      cmocka_unit_test(test_misuse),
		cmocka_unit_test(test_put_messages),      cmocka_unit_test(test_finish_with_tail),
	};

	return cmocka_run_group_tests_name("pktbuf", tests, NULL, NULL);
}
