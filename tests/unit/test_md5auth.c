/*
 * Unit tests for common/md5auth.c.
 *
 * The expected values for user "postgres", password "secret", salt
 * {1,2,3,4} were computed separately with Python's hashlib:
 *   inner = md5(b"secret" + b"postgres").hexdigest()
 *   "md5" + inner
 *   "md5" + md5(inner.encode() + bytes([1, 2, 3, 4])).hexdigest()
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "common/md5auth.h"

#define ERRLEN 256

#define PG_STORED "md553f48b7c4b76a86ce72276c5755f217d"
#define PG_RESPONSE "md5bb41a296aab6baccb36ff243a562abff"

static const uint8_t salt1234[MD5AUTH_SALT_LEN] = {1, 2, 3, 4};

static void
test_stored_form(void **state)
{
	char out[MD5AUTH_BUF_SIZE];
	char err[ERRLEN] = "";

	(void) state;
	assert_true(md5auth_stored_from_password("postgres", "secret", out, err, sizeof(err)));
	assert_string_equal(out, PG_STORED);
	assert_true(md5auth_is_stored(out));

	assert_false(md5auth_stored_from_password("postgres", "", out, err, sizeof(err)));
	assert_string_equal(err, "empty password");
	assert_false(md5auth_stored_from_password(NULL, "secret", out, err, sizeof(err)));
	assert_false(md5auth_stored_from_password("", "secret", out, err, sizeof(err)));
}

static void
test_response(void **state)
{
	char out[MD5AUTH_BUF_SIZE];
	char err[ERRLEN] = "";

	(void) state;
	assert_true(md5auth_response_from_password("postgres", "secret", salt1234, out, err, sizeof(err)));
	assert_string_equal(out, PG_RESPONSE);

	/* the stored hash alone is enough to answer the challenge */
	memset(out, 0, sizeof(out));
	assert_true(md5auth_response_from_stored(PG_STORED, salt1234, out, err, sizeof(err)));
	assert_string_equal(out, PG_RESPONSE);

	/* another salt gives another answer */
	{
		static const uint8_t salt4321[MD5AUTH_SALT_LEN] = {4, 3, 2, 1};

		assert_true(md5auth_response_from_stored(PG_STORED, salt4321, out, err, sizeof(err)));
		assert_string_not_equal(out, PG_RESPONSE);
	}
}

static void
test_verify(void **state)
{
	char err[ERRLEN] = "";

	(void) state;
	assert_true(md5auth_verify_stored(PG_STORED, salt1234, PG_RESPONSE, strlen(PG_RESPONSE), err, sizeof(err)));
	assert_true(md5auth_verify_password("postgres", "secret", salt1234, PG_RESPONSE, strlen(PG_RESPONSE), err,
					    sizeof(err)));

	/* wrong password, wrong user, wrong salt */
	assert_false(md5auth_verify_password("postgres", "Secret", salt1234, PG_RESPONSE, strlen(PG_RESPONSE), err,
					     sizeof(err)));
	assert_string_equal(err, "md5 password response does not match");
	assert_false(md5auth_verify_password("postgre", "secret", salt1234, PG_RESPONSE, strlen(PG_RESPONSE), err,
					     sizeof(err)));
	{
		static const uint8_t salt1235[MD5AUTH_SALT_LEN] = {1, 2, 3, 5};

		assert_false(
			md5auth_verify_stored(PG_STORED, salt1235, PG_RESPONSE, strlen(PG_RESPONSE), err, sizeof(err)));
	}

	/* truncated, extended, upper case, plaintext sent as the response */
	assert_false(
		md5auth_verify_stored(PG_STORED, salt1234, PG_RESPONSE, strlen(PG_RESPONSE) - 1, err, sizeof(err)));
	assert_false(
		md5auth_verify_stored(PG_STORED, salt1234, PG_RESPONSE "0", strlen(PG_RESPONSE) + 1, err, sizeof(err)));
	assert_false(md5auth_verify_stored(PG_STORED, salt1234, "MD5BB41A296AAB6BACCB36FF243A562ABFF", 35, err,
					   sizeof(err)));
	assert_false(md5auth_verify_stored(PG_STORED, salt1234, "secret", 6, err, sizeof(err)));
	assert_false(md5auth_verify_stored(PG_STORED, salt1234, NULL, 0, err, sizeof(err)));
	/* the stored hash itself is not a valid response */
	assert_false(md5auth_verify_stored(PG_STORED, salt1234, PG_STORED, strlen(PG_STORED), err, sizeof(err)));
}

static void
test_stored_format(void **state)
{
	static const char *const bad[] = {
		"",
		"md5",
		"53f48b7c4b76a86ce72276c5755f217d",     /* no prefix */
		"md553f48b7c4b76a86ce72276c5755f217",   /* 31 digits */
		"md553f48b7c4b76a86ce72276c5755f217d0", /* 33 digits */
		"md553F48B7C4B76A86CE72276C5755F217D",  /* upper case */
		"md553f48b7c4b76a86ce72276c5755f217g",
		"MD553f48b7c4b76a86ce72276c5755f217d",
		"SCRAM-SHA-256$4096:c2FsdA==$AAAA:AAAA",
	};
	char out[MD5AUTH_BUF_SIZE];
	char err[ERRLEN];

	(void) state;
	assert_false(md5auth_is_stored(NULL));
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		err[0] = '\0';
		if (md5auth_is_stored(bad[i]))
			fail_msg("accepted as md5 hash: %s", bad[i]);
		assert_false(md5auth_response_from_stored(bad[i], salt1234, out, err, sizeof(err)));
		assert_string_equal(err, "stored password is not a valid md5 hash");
		assert_false(
			md5auth_verify_stored(bad[i], salt1234, PG_RESPONSE, strlen(PG_RESPONSE), err, sizeof(err)));
	}
}

static void
test_limits_and_salt(void **state)
{
	char big[MD5AUTH_MAX_INPUT_LEN + 2];
	char out[MD5AUTH_BUF_SIZE];
	char err[ERRLEN] = "";
	uint8_t a[MD5AUTH_SALT_LEN];
	uint8_t b[MD5AUTH_SALT_LEN];

	(void) state;
	memset(big, 'x', sizeof(big) - 1);
	big[sizeof(big) - 1] = '\0';
	assert_false(md5auth_stored_from_password("postgres", big, out, err, sizeof(err)));
	assert_false(md5auth_stored_from_password(big, "secret", out, err, sizeof(err)));
	big[MD5AUTH_MAX_INPUT_LEN] = '\0';
	assert_true(md5auth_stored_from_password("postgres", big, out, err, sizeof(err)));

	/* errors are optional */
	assert_false(md5auth_stored_from_password("postgres", "", out, NULL, 0));

	/* two random salts differ (fails with probability 2^-32) */
	assert_true(md5auth_random_salt(a, err, sizeof(err)));
	assert_true(md5auth_random_salt(b, err, sizeof(err)));
	assert_memory_not_equal(a, b, MD5AUTH_SALT_LEN);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_stored_form),     cmocka_unit_test(test_response),
		cmocka_unit_test(test_verify),          cmocka_unit_test(test_stored_format),
		cmocka_unit_test(test_limits_and_salt),
	};

	return cmocka_run_group_tests_name("md5auth", tests, NULL, NULL);
}
