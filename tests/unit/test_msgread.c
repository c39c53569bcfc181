/*
 * The bounds-checked message reader: each reader on exact, short and empty
 * input, byte order, sign handling, and the sticky failure flag.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <cmocka.h>

#include "common/msgread.h"

static void
test_integers(void **state)
{
	static const uint8_t data[] = {
		0x7f, 0xff, 0xfe, 0x12, 0x34, 0x80, 0x00, 0x00, 0x00, 0xde, 0xad,
		0xbe, 0xef, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xfd,
	};
	MsgReader r;
	uint8_t b;
	int16_t i16;
	uint16_t u16;
	int32_t i32;
	uint32_t u32;
	int64_t i64;

	(void) state;
	msgread_init(&r, data, sizeof(data));
	assert_true(msgread_byte(&r, &b));
	assert_int_equal(b, 0x7f);
	assert_true(msgread_int16(&r, &i16));
	assert_int_equal(i16, -2);
	assert_true(msgread_uint16(&r, &u16));
	assert_int_equal(u16, 0x1234);
	assert_true(msgread_int32(&r, &i32));
	assert_true(i32 == INT32_MIN);
	assert_true(msgread_uint32(&r, &u32));
	assert_true(u32 == 0xdeadbeefu);
	assert_int_equal(msgread_remaining(&r), 8);
	assert_false(msgread_end(&r));
	assert_true(msgread_int64(&r, &i64));
	assert_true(i64 == -3);
	assert_int_equal(msgread_remaining(&r), 0);
	assert_true(msgread_end(&r));
}

static void
test_int64_positive(void **state)
{
	static const uint8_t data[] = {0x00, 0x00, 0x00, 0x01, 0x00, 0x00, 0x00, 0x02};
	MsgReader r;
	int64_t v;

	(void) state;
	msgread_init(&r, data, sizeof(data));
	assert_true(msgread_int64(&r, &v));
	assert_true(v == (INT64_C(1) << 32) + 2);
	assert_true(msgread_end(&r));
}

static void
test_short_reads_fail(void **state)
{
	static const uint8_t data[] = {1, 2, 3, 4, 5, 6, 7};
	MsgReader r;
	int16_t i16;
	int32_t i32;
	int64_t i64;
	uint8_t b;

	(void) state;
	/* Each reader on every length shorter than it needs. */
	for (size_t n = 0; n < 2; n++) {
		msgread_init(&r, data, n);
		assert_false(msgread_int16(&r, &i16));
		assert_true(r.failed);
	}
	for (size_t n = 0; n < 4; n++) {
		msgread_init(&r, data, n);
		assert_false(msgread_int32(&r, &i32));
		assert_true(r.failed);
	}
	for (size_t n = 0; n < 8; n++) {
		msgread_init(&r, data, n);
		assert_false(msgread_int64(&r, &i64));
		assert_true(r.failed);
	}
	msgread_init(&r, NULL, 0);
	assert_false(msgread_byte(&r, &b));
	assert_false(msgread_end(&r));
}

static void
test_failure_is_sticky(void **state)
{
	static const uint8_t data[] = {0, 0, 0, 9, 'x', 0};
	MsgReader r;
	int64_t i64;
	int32_t i32;
	uint8_t b;
	const char *s;

	(void) state;
	msgread_init(&r, data, sizeof(data));
	assert_false(msgread_int64(&r, &i64));
	/* Enough bytes are there, but the reader stays failed. */
	assert_false(msgread_int32(&r, &i32));
	assert_false(msgread_byte(&r, &b));
	assert_false(msgread_string(&r, &s, NULL));
	assert_int_equal(msgread_remaining(&r), 0);
	assert_false(msgread_end(&r));
}

static void
test_strings(void **state)
{
	static const uint8_t data[] = {'a', 'b', 'c', 0, 0, 'x', 'y'};
	MsgReader r;
	const char *s;
	size_t len;

	(void) state;
	msgread_init(&r, data, sizeof(data));
	assert_true(msgread_string(&r, &s, &len));
	assert_string_equal(s, "abc");
	assert_int_equal(len, 3);
	assert_ptr_equal(s, (const char *) data);
	assert_true(msgread_string(&r, &s, NULL));
	assert_string_equal(s, "");
	/* "xy" has no NUL before the end. */
	assert_false(msgread_string(&r, &s, &len));
	assert_true(r.failed);

	msgread_init(&r, data, 3);
	assert_false(msgread_string(&r, &s, NULL));
	msgread_init(&r, data, 0);
	assert_false(msgread_string(&r, &s, NULL));
}

static void
test_bytes(void **state)
{
	static const uint8_t data[] = {1, 2, 3, 4, 5};
	uint8_t copy[4] = {0};
	const uint8_t *p;
	MsgReader r;

	(void) state;
	msgread_init(&r, data, sizeof(data));
	assert_true(msgread_bytes(&r, 0, &p));
	assert_true(msgread_bytes(&r, 2, &p));
	assert_ptr_equal(p, data);
	assert_true(msgread_copy_bytes(&r, copy, 3));
	assert_memory_equal(copy, data + 2, 3);
	assert_true(msgread_end(&r));
	assert_false(msgread_bytes(&r, 1, &p));

	/* A huge count must not wrap around the bounds check. */
	msgread_init(&r, data, sizeof(data));
	assert_true(msgread_bytes(&r, 1, &p));
	assert_false(msgread_bytes(&r, SIZE_MAX, &p));
	msgread_init(&r, data, sizeof(data));
	assert_false(msgread_copy_bytes(&r, copy, sizeof(data) + 1));
	assert_true(r.failed);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_integers),         cmocka_unit_test(test_int64_positive),
		cmocka_unit_test(test_short_reads_fail), cmocka_unit_test(test_failure_is_sticky),
		cmocka_unit_test(test_strings),          cmocka_unit_test(test_bytes),
	};

	return cmocka_run_group_tests_name("msgread", tests, NULL, NULL);
}
