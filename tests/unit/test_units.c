/*
 * Size, duration, integer and boolean parsing: strict, with useful messages.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <cmocka.h>

#include "common/units.h"

static void
test_sizes(void **state)
{
	char err[256];
	int64_t v;

	(void) state;
	assert_true(parse_size("16MB", &v, err, sizeof(err)));
	assert_int_equal(v, 16 * 1024 * 1024);
	assert_true(parse_size(" 1 GB ", &v, err, sizeof(err)));
	assert_int_equal(v, INT64_C(1) << 30);
	assert_true(parse_size("512", &v, err, sizeof(err)));
	assert_int_equal(v, 512);
	assert_true(parse_size("8kB", &v, err, sizeof(err)));
	assert_int_equal(v, 8192);
	assert_true(parse_size("2TB", &v, err, sizeof(err)));
	assert_int_equal(v, INT64_C(2) << 40);

	assert_false(parse_size("16mb", &v, err, sizeof(err)));
	assert_non_null(strstr(err, "valid units are"));
	assert_false(parse_size("1.5GB", &v, err, sizeof(err)));
	assert_non_null(strstr(err, "fractions"));
	assert_false(parse_size("-1MB", &v, err, sizeof(err)));
	assert_false(parse_size("", &v, err, sizeof(err)));
	assert_false(parse_size("MB", &v, err, sizeof(err)));
	assert_false(parse_size("16 MB x", &v, err, sizeof(err)));
	assert_false(parse_size("99999999999999999999", &v, err, sizeof(err)));
	assert_non_null(strstr(err, "out of range"));
	assert_false(parse_size("9000000TB", &v, err, sizeof(err)));
	assert_non_null(strstr(err, "out of range"));
}

static void
test_durations(void **state)
{
	char err[256];
	int64_t v;

	(void) state;
	assert_true(parse_duration("500ms", &v, err, sizeof(err)));
	assert_int_equal(v, 500 * 1000);
	assert_true(parse_duration("5s", &v, err, sizeof(err)));
	assert_int_equal(v, 5 * 1000 * 1000);
	assert_true(parse_duration("2min", &v, err, sizeof(err)));
	assert_int_equal(v, INT64_C(120) * 1000 * 1000);
	assert_true(parse_duration("1h", &v, err, sizeof(err)));
	assert_int_equal(v, INT64_C(3600) * 1000 * 1000);
	assert_true(parse_duration("0s", &v, err, sizeof(err)));
	assert_int_equal(v, 0);

	assert_false(parse_duration("5", &v, err, sizeof(err)));
	assert_non_null(strstr(err, "a unit is required"));
	assert_false(parse_duration("5 sec", &v, err, sizeof(err)));
	assert_false(parse_duration("5m", &v, err, sizeof(err)));
	assert_false(parse_duration("0.5s", &v, err, sizeof(err)));
	assert_false(parse_duration("s", &v, err, sizeof(err)));
}

static void
test_ints_and_bools(void **state)
{
	char err[256];
	int64_t v;
	bool b;

	(void) state;
	assert_true(parse_int("42", 1, 100, &v, err, sizeof(err)));
	assert_int_equal(v, 42);
	assert_false(parse_int("0", 1, 100, &v, err, sizeof(err)));
	assert_false(parse_int("101", 1, 100, &v, err, sizeof(err)));
	assert_false(parse_int("-5", 1, 100, &v, err, sizeof(err)));
	assert_false(parse_int("4x", 1, 100, &v, err, sizeof(err)));
	assert_true(parse_bool("On", &b, err, sizeof(err)));
	assert_true(b);
	assert_true(parse_bool("no", &b, err, sizeof(err)));
	assert_false(b);
	assert_false(parse_bool("maybe", &b, err, sizeof(err)));
}

static void
test_format(void **state)
{
	char buf[32];

	(void) state;
	format_size(16 * 1024 * 1024, buf, sizeof(buf));
	assert_string_equal(buf, "16MB");
	format_size(1000, buf, sizeof(buf));
	assert_string_equal(buf, "1000B");
	format_duration(5 * 1000 * 1000, buf, sizeof(buf));
	assert_string_equal(buf, "5s");
	format_duration(1500 * 1000, buf, sizeof(buf));
	assert_string_equal(buf, "1500ms");
	format_duration(INT64_C(120) * 1000 * 1000, buf, sizeof(buf));
	assert_string_equal(buf, "2min");
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_sizes),
		cmocka_unit_test(test_durations),
		cmocka_unit_test(test_ints_and_bools),
		cmocka_unit_test(test_format),
	};

	return cmocka_run_group_tests_name("units", tests, NULL, NULL);
}
