/*
 * Unit tests for common/scram.c and common/base64.c.
 *
 * The RFC 7677 section 3 exchange pins both halves to the standard; the
 * expected verifier for it was computed separately with Python's hashlib
 * (pbkdf2_hmac, hmac).  The rest runs our two halves against each other,
 * including pass-through with a recovered ClientKey, and feeds each parser
 * malformed messages.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include <openssl/evp.h>
#include <openssl/x509.h>

#include "common/base64.h"
#include "common/scram.h"

#define ERRLEN 256

/* RFC 7677 section 3 */
#define RFC_CLIENT_NONCE "rOprNGfwEbeRWgbNEkqO"
#define RFC_SERVER_NONCE "%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0"
#define RFC_CLIENT_FIRST "n,,n=user,r=" RFC_CLIENT_NONCE
#define RFC_SERVER_FIRST "r=" RFC_CLIENT_NONCE RFC_SERVER_NONCE ",s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096"
#define RFC_CLIENT_FINAL "c=biws,r=" RFC_CLIENT_NONCE RFC_SERVER_NONCE ",p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ="
#define RFC_SERVER_FINAL "v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4="

/* password "pencil", the RFC's salt and count; from Python's hashlib */
#define RFC_VERIFIER \
	"SCRAM-SHA-256$4096:W22ZaJ0SNY7soEsUEjb6gQ==" \
	"$WG5d8oPm3OtcPnkdi4Uo7BkeZkBFzpcXkuLmtbsT4qY=" \
	":wfPLwcE6nTWhTAmQ7tl2KeoiWGPlZqQxSrmfPwDl2dU="

/* Feed a NUL-terminated test string to a length-taking reader. */
#define MSG(s) (s), strlen(s)

/* --- helpers ---------------------------------------------------------------- */

static void
make_verifier(ScramVerifier *v, const char *password)
{
	char err[ERRLEN] = "";

	assert_true(scram_verifier_build(v, password, NULL, 0, 0, err, sizeof(err)));
}

/*
 * Run the whole exchange between our client and server halves.  Returns
 * true if the server accepted the proof and the client accepted the final
 * message; err gets the first failure.
 */
static bool
run_exchange(ScramClient *c, ScramServer *s, char *err, size_t errlen)
{
	char msg[SCRAM_MESSAGE_BUF_SIZE];
	size_t len;

	if (!scram_client_build_client_first(c, NULL, msg, sizeof(msg), &len, err, errlen) ||
	    !scram_server_read_client_first(s, msg, len, err, errlen) ||
	    !scram_server_build_server_first(s, msg, sizeof(msg), &len, err, errlen) ||
	    !scram_client_read_server_first(c, msg, len, err, errlen) ||
	    !scram_client_build_client_final(c, msg, sizeof(msg), &len, err, errlen) ||
	    !scram_server_read_client_final(s, msg, len, err, errlen) || !scram_server_verify_proof(s, err, errlen) ||
	    !scram_server_build_server_final(s, msg, sizeof(msg), &len, err, errlen) ||
	    !scram_client_read_server_final(c, msg, len, err, errlen))
		return false;
	return true;
}

/* A server that has sent server-first with nonce "CNONCESNONCE". */
static void
server_at_client_final(ScramServer *s, const ScramVerifier *v)
{
	char err[ERRLEN] = "";
	char msg[SCRAM_MESSAGE_BUF_SIZE];
	size_t len;

	assert_true(scram_server_init(s, v, err, sizeof(err)));
	assert_true(scram_server_set_nonce(s, "SNONCE", err, sizeof(err)));
	assert_true(scram_server_read_client_first(s, MSG("n,,n=,r=CNONCE"), err, sizeof(err)));
	assert_true(scram_server_build_server_first(s, msg, sizeof(msg), &len, err, sizeof(err)));
}

/* A password client that has sent client-first with nonce "CNONCE". */
static void
client_at_server_first(ScramClient *c)
{
	char err[ERRLEN] = "";
	char msg[SCRAM_MESSAGE_BUF_SIZE];
	size_t len;

	assert_true(scram_client_init_password(c, "pencil", err, sizeof(err)));
	assert_true(scram_client_set_nonce(c, "CNONCE", err, sizeof(err)));
	assert_true(scram_client_build_client_first(c, NULL, msg, sizeof(msg), &len, err, sizeof(err)));
	assert_string_equal(msg, "n,,n=,r=CNONCE");
}

/* --- base64 ------------------------------------------------------------- */

static void
test_base64(void **state)
{
	/* RFC 4648 section 10 */
	static const char *const plain[] = {"", "f", "fo", "foo", "foob", "fooba", "foobar"};
	static const char *const enc[] = {"", "Zg==", "Zm8=", "Zm9v", "Zm9vYg==", "Zm9vYmE=", "Zm9vYmFy"};
	static const char *const bad[] = {
		"Zg=", "Z===", "Zg=a", "Zm 9v", "Zm9v\n", "=Zm9", "Zm=v", "Zm9*", "====",
	};
	char out[16];
	uint8_t raw[16];
	size_t n;

	(void) state;
	for (size_t i = 0; i < sizeof(plain) / sizeof(plain[0]); i++) {
		assert_true(base64_encode((const uint8_t *) plain[i], strlen(plain[i]), out, sizeof(out), &n));
		assert_string_equal(out, enc[i]);
		assert_int_equal(n, strlen(enc[i]));
		assert_true(base64_decode(enc[i], strlen(enc[i]), raw, sizeof(raw), &n));
		assert_int_equal(n, strlen(plain[i]));
		assert_memory_equal(raw, plain[i], n);
	}
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
		assert_false(base64_decode(bad[i], strlen(bad[i]), raw, sizeof(raw), &n));

	/* output buffers that are one byte short */
	assert_false(base64_encode((const uint8_t *) "foo", 3, out, 4, &n));
	assert_true(base64_encode((const uint8_t *) "foo", 3, out, 5, &n));
	assert_false(base64_decode("Zm9vYmFy", 8, raw, 5, &n));
	assert_true(base64_decode("Zm9vYmE=", 8, raw, 5, &n));
}

/* --- RFC 7677 ----------------------------------------------------------- */

static void
test_rfc7677_client(void **state)
{
	ScramClient c;
	char err[ERRLEN] = "";
	char msg[SCRAM_MESSAGE_BUF_SIZE];
	size_t len;

	(void) state;
	assert_true(scram_client_init_password(&c, "pencil", err, sizeof(err)));
	assert_string_equal(scram_client_mechanism(&c), "SCRAM-SHA-256");
	assert_true(scram_client_set_nonce(&c, RFC_CLIENT_NONCE, err, sizeof(err)));
	assert_true(scram_client_build_client_first(&c, "user", msg, sizeof(msg), &len, err, sizeof(err)));
	assert_string_equal(msg, RFC_CLIENT_FIRST);
	assert_int_equal(len, strlen(RFC_CLIENT_FIRST));

	assert_true(scram_client_read_server_first(&c, MSG(RFC_SERVER_FIRST), err, sizeof(err)));
	assert_true(scram_client_build_client_final(&c, msg, sizeof(msg), &len, err, sizeof(err)));
	assert_string_equal(msg, RFC_CLIENT_FINAL);
	assert_false(scram_client_server_verified(&c));

	assert_true(scram_client_read_server_final(&c, MSG(RFC_SERVER_FINAL), err, sizeof(err)));
	assert_true(scram_client_server_verified(&c));
	scram_client_clear(&c);
}

static void
test_rfc7677_server(void **state)
{
	ScramVerifier v;
	ScramVerifier parsed;
	ScramServer s;
	char err[ERRLEN] = "";
	char msg[SCRAM_MESSAGE_BUF_SIZE];
	char text[SCRAM_VERIFIER_BUF_SIZE];
	uint8_t salt[SCRAM_MAX_SALT_LEN];
	size_t salt_len;
	uint8_t client_key[SCRAM_KEY_LEN];
	size_t len;

	(void) state;
	/* our verifier for the RFC's inputs matches the one hashlib computed */
	assert_true(base64_decode(MSG("W22ZaJ0SNY7soEsUEjb6gQ=="), salt, sizeof(salt), &salt_len));
	assert_true(scram_verifier_build(&v, "pencil", salt, salt_len, 4096, err, sizeof(err)));
	assert_true(scram_verifier_format(&v, text, sizeof(text), err, sizeof(err)));
	assert_string_equal(text, RFC_VERIFIER);
	assert_true(scram_verifier_parse(&parsed, RFC_VERIFIER, err, sizeof(err)));
	assert_memory_equal(&parsed, &v, sizeof(v));

	assert_true(scram_server_init(&s, &parsed, err, sizeof(err)));
	assert_true(scram_server_set_nonce(&s, RFC_SERVER_NONCE, err, sizeof(err)));
	assert_true(scram_server_read_client_first(&s, MSG(RFC_CLIENT_FIRST), err, sizeof(err)));
	assert_false(scram_server_get_client_key(&s, client_key));
	assert_true(scram_server_build_server_first(&s, msg, sizeof(msg), &len, err, sizeof(err)));
	assert_string_equal(msg, RFC_SERVER_FIRST);
	assert_true(scram_server_read_client_final(&s, MSG(RFC_CLIENT_FINAL), err, sizeof(err)));
	assert_true(scram_server_verify_proof(&s, err, sizeof(err)));
	assert_true(scram_server_build_server_final(&s, msg, sizeof(msg), &len, err, sizeof(err)));
	assert_string_equal(msg, RFC_SERVER_FINAL);

	/* the recovered ClientKey is the one hashlib derived */
	{
		static const uint8_t expected[SCRAM_KEY_LEN] = {
			0xa6, 0x0f, 0xc9, 0x23, 0xd6, 0x7e, 0x86, 0x44, 0xa9, 0x2d, 0x16, 0xb9, 0x6e, 0xda, 0x5e, 0xf4,
			0x65, 0x6b, 0x0c, 0x72, 0x5c, 0x48, 0x43, 0x74, 0xbe, 0x25, 0x53, 0x55, 0x76, 0x99, 0x6e, 0x8b,
		};

		assert_true(scram_server_get_client_key(&s, client_key));
		assert_memory_equal(client_key, expected, SCRAM_KEY_LEN);
	}
	scram_server_clear(&s);
	assert_false(scram_server_get_client_key(&s, client_key));
}

/* --- verifiers ---------------------------------------------------------- */

static void
test_verifier_roundtrip(void **state)
{
	ScramVerifier v;
	ScramVerifier parsed;
	char err[ERRLEN] = "";
	char text[SCRAM_VERIFIER_BUF_SIZE];

	(void) state;
	make_verifier(&v, "s3cr3t");
	assert_int_equal(v.iterations, SCRAM_DEFAULT_ITERATIONS);
	assert_int_equal(v.salt_len, SCRAM_DEFAULT_SALT_LEN);
	assert_true(scram_verifier_format(&v, text, sizeof(text), err, sizeof(err)));
	assert_true(scram_verifier_looks_like(text));
	assert_true(scram_verifier_parse(&parsed, text, err, sizeof(err)));
	assert_memory_equal(&parsed, &v, sizeof(v));

	assert_true(scram_verifier_check_password(&parsed, "s3cr3t", err, sizeof(err)));
	assert_false(scram_verifier_check_password(&parsed, "s3cr3T", err, sizeof(err)));
	assert_string_equal(err, "password does not match");

	/* a too-small output buffer is an error, not truncation */
	assert_false(scram_verifier_format(&v, text, 40, err, sizeof(err)));

	/* bad build arguments */
	assert_false(scram_verifier_build(&v, "", NULL, 0, 0, err, sizeof(err)));
	assert_false(scram_verifier_build(&v, NULL, NULL, 0, 0, err, sizeof(err)));
	assert_false(scram_verifier_build(&v, "x", NULL, 0, -1, err, sizeof(err)));
	assert_false(scram_verifier_build(&v, "x", (const uint8_t *) "s", 0, 1, err, sizeof(err)));
}

static void
test_verifier_parse_errors(void **state)
{
	static const char *const bad[] = {
		"",
		"md553f48b7c4b76a86ce72276c5755f217d",
		"SCRAM-SHA-1$4096:W22ZaJ0SNY7soEsUEjb6gQ==$AAAA:AAAA",
		"SCRAM-SHA-256$",
		"SCRAM-SHA-256$4096",
		/* iteration counts */
		"SCRAM-SHA-256$0:W22ZaJ0SNY7soEsUEjb6gQ==$WG5d8oPm3OtcPnkdi4Uo7BkeZkBFzpcXkuLmtbsT4qY=:wfPLwcE6nTWhTAmQ7tl2KeoiWGPlZqQxSrmfPwDl2dU=",
		"SCRAM-SHA-256$-1:W22ZaJ0SNY7soEsUEjb6gQ==$WG5d8oPm3OtcPnkdi4Uo7BkeZkBFzpcXkuLmtbsT4qY=:wfPLwcE6nTWhTAmQ7tl2KeoiWGPlZqQxSrmfPwDl2dU=",
		"SCRAM-SHA-256$4096x:W22ZaJ0SNY7soEsUEjb6gQ==$WG5d8oPm3OtcPnkdi4Uo7BkeZkBFzpcXkuLmtbsT4qY=:wfPLwcE6nTWhTAmQ7tl2KeoiWGPlZqQxSrmfPwDl2dU=",
		"SCRAM-SHA-256$2147483648:W22ZaJ0SNY7soEsUEjb6gQ==$WG5d8oPm3OtcPnkdi4Uo7BkeZkBFzpcXkuLmtbsT4qY=:wfPLwcE6nTWhTAmQ7tl2KeoiWGPlZqQxSrmfPwDl2dU=",
		"SCRAM-SHA-256$:W22ZaJ0SNY7soEsUEjb6gQ==$WG5d8oPm3OtcPnkdi4Uo7BkeZkBFzpcXkuLmtbsT4qY=:wfPLwcE6nTWhTAmQ7tl2KeoiWGPlZqQxSrmfPwDl2dU=",
		/* salt */
		"SCRAM-SHA-256$4096:$WG5d8oPm3OtcPnkdi4Uo7BkeZkBFzpcXkuLmtbsT4qY=:wfPLwcE6nTWhTAmQ7tl2KeoiWGPlZqQxSrmfPwDl2dU=",
		"SCRAM-SHA-256$4096:W22ZaJ0SNY7soEsUEjb6gQ=$WG5d8oPm3OtcPnkdi4Uo7BkeZkBFzpcXkuLmtbsT4qY=:wfPLwcE6nTWhTAmQ7tl2KeoiWGPlZqQxSrmfPwDl2dU=",
		"SCRAM-SHA-256$4096:W22ZaJ0SNY7soEsUEjb6gQ==WG5d8oPm3OtcPnkdi4Uo7BkeZkBFzpcXkuLmtbsT4qY=:wfPLwcE6nTWhTAmQ7tl2KeoiWGPlZqQxSrmfPwDl2dU=",
		/* StoredKey: missing, 31 bytes, bad character */
		"SCRAM-SHA-256$4096:W22ZaJ0SNY7soEsUEjb6gQ==$:wfPLwcE6nTWhTAmQ7tl2KeoiWGPlZqQxSrmfPwDl2dU=",
		"SCRAM-SHA-256$4096:W22ZaJ0SNY7soEsUEjb6gQ==$WG5d8oPm3OtcPnkdi4Uo7BkeZkBFzpcXkuLmtbsT4g==:wfPLwcE6nTWhTAmQ7tl2KeoiWGPlZqQxSrmfPwDl2dU=",
		"SCRAM-SHA-256$4096:W22ZaJ0SNY7soEsUEjb6gQ==$WG5d8oPm3OtcPnkdi4Uo7Bke!kBFzpcXkuLmtbsT4qY=:wfPLwcE6nTWhTAmQ7tl2KeoiWGPlZqQxSrmfPwDl2dU=",
		/* ServerKey: missing, trailing garbage, no separator */
		"SCRAM-SHA-256$4096:W22ZaJ0SNY7soEsUEjb6gQ==$WG5d8oPm3OtcPnkdi4Uo7BkeZkBFzpcXkuLmtbsT4qY=",
		"SCRAM-SHA-256$4096:W22ZaJ0SNY7soEsUEjb6gQ==$WG5d8oPm3OtcPnkdi4Uo7BkeZkBFzpcXkuLmtbsT4qY=:",
		"SCRAM-SHA-256$4096:W22ZaJ0SNY7soEsUEjb6gQ==$WG5d8oPm3OtcPnkdi4Uo7BkeZkBFzpcXkuLmtbsT4qY=:wfPLwcE6nTWhTAmQ7tl2KeoiWGPlZqQxSrmfPwDl2dU=x",
		"SCRAM-SHA-256$4096:W22ZaJ0SNY7soEsUEjb6gQ==$WG5d8oPm3OtcPnkdi4Uo7BkeZkBFzpcXkuLmtbsT4qY=:wfPLwcE6nTWhTAmQ7tl2KeoiWGPlZqQxSrmfPwDl2dU=:AAAA",
	};
	ScramVerifier v;
	char err[ERRLEN];
	char huge[SCRAM_VERIFIER_BUF_SIZE + 10];

	(void) state;
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		err[0] = '\0';
		if (scram_verifier_parse(&v, bad[i], err, sizeof(err)))
			fail_msg("verifier %zu accepted: %s", i, bad[i]);
		assert_true(strlen(err) > 0);
	}
	assert_false(scram_verifier_parse(&v, NULL, err, sizeof(err)));

	memset(huge, 'A', sizeof(huge) - 1);
	huge[sizeof(huge) - 1] = '\0';
	memcpy(huge, "SCRAM-SHA-256$", 14);
	assert_false(scram_verifier_parse(&v, huge, err, sizeof(err)));
	assert_string_equal(err, "SCRAM verifier too long");

	/* errors are optional */
	assert_false(scram_verifier_parse(&v, "junk", NULL, 0));
}

/* --- exchanges between our own halves ------------------------------------- */

static void
test_exchange_right_password(void **state)
{
	ScramVerifier v;
	ScramServer s;
	ScramClient c;
	char err[ERRLEN] = "";
	uint8_t client_key[SCRAM_KEY_LEN];
	uint8_t stored[SCRAM_KEY_LEN];
	unsigned int n;

	(void) state;
	make_verifier(&v, "correct horse battery staple");
	assert_true(scram_server_init(&s, &v, err, sizeof(err)));
	assert_true(scram_client_init_password(&c, "correct horse battery staple", err, sizeof(err)));
	if (!run_exchange(&c, &s, err, sizeof(err)))
		fail_msg("exchange failed: %s", err);
	assert_true(scram_client_server_verified(&c));

	/* the recovered ClientKey hashes to the StoredKey */
	assert_true(scram_server_get_client_key(&s, client_key));
	assert_true(EVP_Digest(client_key, SCRAM_KEY_LEN, stored, &n, EVP_sha256(), NULL));
	assert_memory_equal(stored, v.stored_key, SCRAM_KEY_LEN);
	scram_server_clear(&s);
	scram_client_clear(&c);
}

static void
test_exchange_wrong_password(void **state)
{
	ScramVerifier v;
	ScramServer s;
	ScramClient c;
	char err[ERRLEN] = "";
	char msg[SCRAM_MESSAGE_BUF_SIZE];
	uint8_t client_key[SCRAM_KEY_LEN];
	size_t len;

	(void) state;
	make_verifier(&v, "correct horse battery staple");
	assert_true(scram_server_init(&s, &v, err, sizeof(err)));
	assert_true(scram_client_init_password(&c, "Tr0ub4dor&3", err, sizeof(err)));
	assert_false(run_exchange(&c, &s, err, sizeof(err)));
	assert_string_equal(err, "invalid SCRAM proof (password does not match)");

	/* a failed exchange stays failed */
	assert_false(scram_server_get_client_key(&s, client_key));
	assert_false(scram_server_build_server_final(&s, msg, sizeof(msg), &len, err, sizeof(err)));
	assert_string_equal(err, "SCRAM exchange step called out of order");
	assert_false(scram_server_verify_proof(&s, err, sizeof(err)));
}

static void
test_passthrough(void **state)
{
	ScramVerifier v;
	ScramVerifier other;
	ScramServer front;
	ScramServer back;
	ScramClient app;
	ScramClient proxy;
	char err[ERRLEN] = "";
	uint8_t client_key[SCRAM_KEY_LEN];
	uint8_t wrong[SCRAM_KEY_LEN];

	(void) state;
	make_verifier(&v, "hunter2");

	/* the application logs in to the proxy with its password */
	assert_true(scram_server_init(&front, &v, err, sizeof(err)));
	assert_true(scram_client_init_password(&app, "hunter2", err, sizeof(err)));
	if (!run_exchange(&app, &front, err, sizeof(err)))
		fail_msg("front exchange failed: %s", err);
	assert_true(scram_server_get_client_key(&front, client_key));

	/* the proxy logs in to a server holding the same verifier, keys only */
	assert_true(scram_server_init(&back, &v, err, sizeof(err)));
	assert_true(scram_client_init_keys(&proxy, client_key, v.stored_key, v.server_key, err, sizeof(err)));
	if (!run_exchange(&proxy, &back, err, sizeof(err)))
		fail_msg("pass-through exchange failed: %s", err);
	assert_true(scram_client_server_verified(&proxy));

	/* without ServerKey the login works but the server is not verified */
	assert_true(scram_server_init(&back, &v, err, sizeof(err)));
	assert_true(scram_client_init_keys(&proxy, client_key, v.stored_key, NULL, err, sizeof(err)));
	if (!run_exchange(&proxy, &back, err, sizeof(err)))
		fail_msg("pass-through exchange without ServerKey failed: %s", err);
	assert_false(scram_client_server_verified(&proxy));

	/* a ServerKey that is not the server's is caught */
	memset(wrong, 0x5a, sizeof(wrong));
	assert_true(scram_server_init(&back, &v, err, sizeof(err)));
	assert_true(scram_client_init_keys(&proxy, client_key, v.stored_key, wrong, err, sizeof(err)));
	assert_false(run_exchange(&proxy, &back, err, sizeof(err)));
	assert_string_equal(err, "incorrect server signature");

	/* a server with another verifier for the same password rejects it */
	make_verifier(&other, "hunter2");
	assert_true(scram_server_init(&back, &other, err, sizeof(err)));
	assert_true(scram_client_init_keys(&proxy, client_key, v.stored_key, v.server_key, err, sizeof(err)));
	assert_false(run_exchange(&proxy, &back, err, sizeof(err)));
	assert_string_equal(err, "invalid SCRAM proof (password does not match)");

	/* StoredKey must be H(ClientKey) */
	assert_false(scram_client_init_keys(&proxy, client_key, other.stored_key, NULL, err, sizeof(err)));
	assert_string_equal(err, "SCRAM ClientKey does not match StoredKey");
	assert_false(scram_client_init_keys(&proxy, NULL, v.stored_key, NULL, err, sizeof(err)));
}

static void
test_mock_server(void **state)
{
	static const uint8_t secret[] = "installation secret";
	ScramServer s;
	ScramClient c;
	char err[ERRLEN] = "";
	char first1[SCRAM_MESSAGE_BUF_SIZE];
	char first2[SCRAM_MESSAGE_BUF_SIZE];
	size_t len;

	(void) state;
	/* the same user sees the same salt each time */
	for (int i = 0; i < 2; i++) {
		assert_true(scram_server_init_mock(&s, "ghost", secret, sizeof(secret), err, sizeof(err)));
		assert_true(scram_server_set_nonce(&s, "S", err, sizeof(err)));
		assert_true(scram_server_read_client_first(&s, MSG("n,,n=,r=C"), err, sizeof(err)));
		assert_true(scram_server_build_server_first(&s, i ? first2 : first1, SCRAM_MESSAGE_BUF_SIZE, &len, err,
							    sizeof(err)));
	}
	assert_string_equal(first1, first2);
	assert_non_null(strstr(first1, ",i=4096"));

	/* and fails at the proof, whatever the password */
	assert_true(scram_server_init_mock(&s, "ghost", secret, sizeof(secret), err, sizeof(err)));
	assert_true(scram_client_init_password(&c, "anything", err, sizeof(err)));
	assert_false(run_exchange(&c, &s, err, sizeof(err)));
	assert_string_equal(err, "invalid SCRAM proof (password does not match)");

	assert_false(scram_server_init_mock(&s, "ghost", NULL, 0, err, sizeof(err)));
}

/* server-first for user, real (v) or mock (v NULL), with fixed nonces. */
static void
server_first_for(const ScramVerifier *v, const char *user, const uint8_t *secret, size_t secret_len, char *out)
{
	ScramServer s;
	char err[ERRLEN] = "";
	size_t len;

	if (v)
		assert_true(scram_server_init(&s, v, err, sizeof(err)));
	else
		assert_true(scram_server_init_mock(&s, user, secret, secret_len, err, sizeof(err)));
	assert_true(scram_server_set_nonce(&s, "S", err, sizeof(err)));
	assert_true(scram_server_read_client_first(&s, MSG("n,,n=,r=C"), err, sizeof(err)));
	assert_true(scram_server_build_server_first(&s, out, SCRAM_MESSAGE_BUF_SIZE, &len, err, sizeof(err)));
	scram_server_clear(&s);
}

/*
 * What a client sees of a user with a verifier built from a plaintext
 * password (salted with scram_mock_salt, as the auth file's are) and of an
 * unknown user: the same message shape, the same salt for the same name,
 * and no key derivation on the server side of either exchange.
 */
static void
test_mock_indistinguishable(void **state)
{
	static const uint8_t secret[] = "drawn at start";
	static const uint8_t other_secret[] = "drawn at another start";
	uint8_t salt[SCRAM_DEFAULT_SALT_LEN];
	uint8_t salt2[SCRAM_DEFAULT_SALT_LEN];
	ScramVerifier v;
	ScramServer s;
	ScramClient c;
	char err[ERRLEN] = "";
	char real[SCRAM_MESSAGE_BUF_SIZE];
	char mock[SCRAM_MESSAGE_BUF_SIZE];
	uint64_t before;

	(void) state;
	/* the salt: stable per name, another for another name or secret */
	assert_true(scram_mock_salt("casper", secret, sizeof(secret), salt));
	assert_true(scram_mock_salt("casper", secret, sizeof(secret), salt2));
	assert_memory_equal(salt, salt2, sizeof(salt));
	assert_true(scram_mock_salt("caspar", secret, sizeof(secret), salt2));
	assert_memory_not_equal(salt, salt2, sizeof(salt));
	assert_true(scram_mock_salt("casper", other_secret, sizeof(other_secret), salt2));
	assert_memory_not_equal(salt, salt2, sizeof(salt));
	assert_false(scram_mock_salt("casper", NULL, 0, salt2));

	/* casper exists (plaintext password), ghost does not */
	assert_true(scram_verifier_build(&v, "boo", salt, sizeof(salt), 0, err, sizeof(err)));
	assert_int_equal(v.iterations, SCRAM_DEFAULT_ITERATIONS);
	server_first_for(&v, "casper", NULL, 0, real);
	server_first_for(NULL, "ghost", secret, sizeof(secret), mock);
	assert_int_equal(strlen(real), strlen(mock));
	assert_non_null(strstr(real, ",i=4096"));
	assert_non_null(strstr(mock, ",i=4096"));
	assert_string_not_equal(real, mock);
	/* had casper not been listed, the client would have seen just the same */
	server_first_for(NULL, "casper", secret, sizeof(secret), mock);
	assert_string_equal(real, mock);

	/* one PBKDF2 per exchange, the client's: the server derives on neither path */
	before = scram_key_derivations();
	assert_true(scram_server_init(&s, &v, err, sizeof(err)));
	assert_true(scram_client_init_password(&c, "boo", err, sizeof(err)));
	if (!run_exchange(&c, &s, err, sizeof(err)))
		fail_msg("exchange failed: %s", err);
	assert_int_equal(scram_key_derivations() - before, 1);

	before = scram_key_derivations();
	assert_true(scram_server_init_mock(&s, "ghost", secret, sizeof(secret), err, sizeof(err)));
	assert_true(scram_client_init_password(&c, "boo", err, sizeof(err)));
	assert_false(run_exchange(&c, &s, err, sizeof(err)));
	assert_string_equal(err, "invalid SCRAM proof (password does not match)");
	assert_int_equal(scram_key_derivations() - before, 1);
	scram_server_clear(&s);
	scram_client_clear(&c);
}

static void
test_out_of_order(void **state)
{
	ScramVerifier v;
	ScramServer s;
	ScramClient c;
	char err[ERRLEN] = "";
	char msg[SCRAM_MESSAGE_BUF_SIZE];
	size_t len;

	(void) state;
	make_verifier(&v, "pw");
	assert_true(scram_server_init(&s, &v, err, sizeof(err)));
	assert_false(scram_server_build_server_first(&s, msg, sizeof(msg), &len, err, sizeof(err)));
	assert_string_equal(err, "SCRAM exchange step called out of order");
	/* and it stays failed */
	assert_false(scram_server_read_client_first(&s, MSG("n,,n=,r=abc"), err, sizeof(err)));

	assert_true(scram_client_init_password(&c, "pw", err, sizeof(err)));
	assert_false(scram_client_read_server_final(&c, MSG(RFC_SERVER_FINAL), err, sizeof(err)));
	assert_false(scram_client_build_client_first(&c, NULL, msg, sizeof(msg), &len, err, sizeof(err)));

	/* empty and over-long passwords */
	assert_false(scram_client_init_password(&c, "", err, sizeof(err)));
	{
		char big[SCRAM_MAX_PASSWORD_LEN + 2];

		memset(big, 'x', sizeof(big) - 1);
		big[sizeof(big) - 1] = '\0';
		assert_false(scram_client_init_password(&c, big, err, sizeof(err)));
	}

	/* an output buffer that is too small fails the step */
	assert_true(scram_client_init_password(&c, "pw", err, sizeof(err)));
	assert_false(scram_client_build_client_first(&c, NULL, msg, 10, &len, err, sizeof(err)));
}

static void
test_username_escaping(void **state)
{
	ScramClient c;
	char err[ERRLEN] = "";
	char msg[SCRAM_MESSAGE_BUF_SIZE];
	size_t len;

	(void) state;
	assert_true(scram_client_init_password(&c, "pw", err, sizeof(err)));
	assert_true(scram_client_set_nonce(&c, "N", err, sizeof(err)));
	assert_true(scram_client_build_client_first(&c, "a,b=c", msg, sizeof(msg), &len, err, sizeof(err)));
	assert_string_equal(msg, "n,,n=a=2Cb=3Dc,r=N");

	/* a random nonce is 18 bytes in base64 */
	assert_true(scram_client_init_password(&c, "pw", err, sizeof(err)));
	assert_true(scram_client_build_client_first(&c, "", msg, sizeof(msg), &len, err, sizeof(err)));
	assert_int_equal(len, strlen("n,,n=,r=") + 24);
	assert_memory_equal(msg, "n,,n=,r=", 8);

	/* nonces must be printable without commas */
	assert_true(scram_client_init_password(&c, "pw", err, sizeof(err)));
	assert_false(scram_client_set_nonce(&c, "a,b", err, sizeof(err)));
	assert_true(scram_client_init_password(&c, "pw", err, sizeof(err)));
	assert_false(scram_client_set_nonce(&c, "", err, sizeof(err)));
}

/* --- malformed input -------------------------------------------------------- */

static void
test_server_rejects_bad_client_first(void **state)
{
	static const char *const bad[] = {
		"x,,n=,r=abc", /* unknown gs2 flag */
		"n",           /* truncated */
		"n,",
		"n,,",
		"n,,n=",
		"n,,n=,r=",          /* empty nonce */
		"n,,n=user",         /* nonce missing */
		"n,,r=abc",          /* user name missing */
		"n,a=bob,n=,r=abc",  /* authzid */
		"n,,m=ext,n=,r=abc", /* mandatory extension */
		"n,,n=,r=abc,",      /* trailing comma */
		"n,,n=,r=abc,x",     /* extension without value */
		"n,,n=,r=abc,1=x",   /* extension name not a letter */
		"n,,n=,r=a\001bc",   /* non-printable nonce */
		"n,,n=,r=a\x7f",
		"p=tls-server-end-point,,n=,r=abc", /* binding without PLUS */
		"nn,,n=,r=abc",
		" n,,n=,r=abc",
	};
	ScramVerifier v;
	ScramServer s;
	char err[ERRLEN];
	char big[SCRAM_MAX_MESSAGE_LEN + 2];
	char longnonce[SCRAM_MAX_NONCE_LEN + 16];

	(void) state;
	make_verifier(&v, "pw");
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		err[0] = '\0';
		assert_true(scram_server_init(&s, &v, err, sizeof(err)));
		if (scram_server_read_client_first(&s, MSG(bad[i]), err, sizeof(err)))
			fail_msg("client-first %zu accepted: %s", i, bad[i]);
		assert_true(strlen(err) > 0);
	}

	/* empty, NUL inside, over-long */
	assert_true(scram_server_init(&s, &v, err, sizeof(err)));
	assert_false(scram_server_read_client_first(&s, "", 0, err, sizeof(err)));
	assert_true(scram_server_init(&s, &v, err, sizeof(err)));
	assert_false(scram_server_read_client_first(&s, "n,,n=,r=ab\0c", 12, err, sizeof(err)));
	assert_string_equal(err, "malformed SCRAM message (NUL byte in client-first-message)");

	memset(big, 'a', sizeof(big));
	memcpy(big, "n,,n=,r=", 8);
	assert_true(scram_server_init(&s, &v, err, sizeof(err)));
	assert_false(scram_server_read_client_first(&s, big, sizeof(big) - 1, err, sizeof(err)));

	/* a nonce that leaves no room for ours */
	memset(longnonce, 'a', sizeof(longnonce) - 1);
	longnonce[sizeof(longnonce) - 1] = '\0';
	memcpy(longnonce, "n,,n=,r=", 8);
	assert_true(scram_server_init(&s, &v, err, sizeof(err)));
	assert_false(scram_server_read_client_first(&s, MSG(longnonce), err, sizeof(err)));
	assert_string_equal(err, "malformed SCRAM message (invalid client nonce)");

	/* extensions after the nonce and a user name are ignored */
	assert_true(scram_server_init(&s, &v, err, sizeof(err)));
	assert_true(scram_server_read_client_first(&s, MSG("n,,n=someone,r=abc,x=1,y=2"), err, sizeof(err)));
}

static void
test_server_rejects_bad_client_final(void **state)
{
	static const struct {
		const char *msg;
		const char *err;
	} bad[] = {
		{"r=CNONCESNONCE,p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=",
		 "malformed SCRAM message (attribute \"c\" expected)"},
		{"c=bi*s,r=CNONCESNONCE,p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=",
		 "malformed SCRAM message (invalid channel-binding data)"},
		{"c=eSws,r=CNONCESNONCE,p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=",
		 "SCRAM channel binding check failed"},
		{"c=,r=CNONCESNONCE,p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=",
		 "SCRAM channel binding check failed"},
		{"c=biws,r=CNONCEXXNONCE,p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=",
		 "invalid SCRAM response (nonce mismatch)"},
		{"c=biws,r=CNONCE,p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=",
		 "invalid SCRAM response (nonce mismatch)"},
		{"c=biws,r=CNONCESNONCEX,p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=",
		 "invalid SCRAM response (nonce mismatch)"},
		{"c=biws,r=CNONCESNONCE", "malformed SCRAM message (proof missing)"},
		{"c=biws,r=CNONCESNONCE,x=ext", "malformed SCRAM message (proof missing)"},
		{"c=biws,r=CNONCESNONCE,p=", "malformed SCRAM message (malformed proof)"},
		{"c=biws,r=CNONCESNONCE,p=!!!!", "malformed SCRAM message (malformed proof)"},
		/* 31 bytes */
		{"c=biws,r=CNONCESNONCE,p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndQ==",
		 "malformed SCRAM message (malformed proof)"},
		/* 33 bytes */
		{"c=biws,r=CNONCESNONCE,p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQA",
		 "malformed SCRAM message (malformed proof)"},
		{"c=biws,r=CNONCESNONCE,p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=,x=1",
		 "malformed SCRAM message (garbage at end of client-final-message)"},
		{"c=biws,r=CNON", "invalid SCRAM response (nonce mismatch)"},
		{"c=biws", "malformed SCRAM message (comma expected)"},
		{"c=biws,", "malformed SCRAM message (attribute \"r\" expected)"},
	};
	ScramVerifier v;
	ScramServer s;
	char err[ERRLEN];

	(void) state;
	make_verifier(&v, "pw");
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		err[0] = '\0';
		server_at_client_final(&s, &v);
		if (scram_server_read_client_final(&s, MSG(bad[i].msg), err, sizeof(err)))
			fail_msg("client-final %zu accepted: %s", i, bad[i].msg);
		if (strcmp(err, bad[i].err) != 0)
			fail_msg("client-final %zu: got \"%s\", want \"%s\"", i, err, bad[i].err);
		assert_false(scram_server_verify_proof(&s, err, sizeof(err)));
	}

	/* well-formed, with an extension before the proof, but a wrong proof */
	server_at_client_final(&s, &v);
	assert_true(scram_server_read_client_final(
		&s, MSG("c=biws,r=CNONCESNONCE,x=1,p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ="), err, sizeof(err)));
	assert_false(scram_server_verify_proof(&s, err, sizeof(err)));
}

static void
test_client_rejects_bad_server_first(void **state)
{
	static const char *const bad[] = {
		"",
		"r=XNONCEabc,s=QSXCR+Q6sek8bf92,i=4096", /* not our nonce */
		"r=CNONCE,s=QSXCR+Q6sek8bf92,i=4096",    /* no server part */
		"r=CNONC,s=QSXCR+Q6sek8bf92,i=4096",
		"r=CNONCEa\x01,s=QSXCR+Q6sek8bf92,i=4096",
		"s=QSXCR+Q6sek8bf92,i=4096", /* nonce missing */
		"m=x,r=CNONCEabc,s=QSXCR+Q6sek8bf92,i=4096",
		"r=CNONCEabc,s=QSXC*+Q6sek8bf92,i=4096", /* bad base64 */
		"r=CNONCEabc,s=QSXCR+Q6sek8bf9,i=4096",
		"r=CNONCEabc,s=,i=4096",          /* empty salt */
		"r=CNONCEabc,i=4096",             /* salt missing */
		"r=CNONCEabc,s=QSXCR+Q6sek8bf92", /* count missing */
		"r=CNONCEabc,s=QSXCR+Q6sek8bf92,i=",
		"r=CNONCEabc,s=QSXCR+Q6sek8bf92,i=0",
		"r=CNONCEabc,s=QSXCR+Q6sek8bf92,i=-1",
		"r=CNONCEabc,s=QSXCR+Q6sek8bf92,i=+4096",
		"r=CNONCEabc,s=QSXCR+Q6sek8bf92,i=4096x",
		"r=CNONCEabc,s=QSXCR+Q6sek8bf92,i=0x1000",
		"r=CNONCEabc,s=QSXCR+Q6sek8bf92,i=99999999999",
		"r=CNONCEabc,s=QSXCR+Q6sek8bf92,i=2147483648",
		"r=CNONCEabc,s=QSXCR+Q6sek8bf92,i=2147483647", /* above our PBKDF2 cap */
		"r=CNONCEabc,s=QSXCR+Q6sek8bf92,i=100000000",
		"r=CNONCEabc,s=QSXCR+Q6sek8bf92,i=4096,",
		"r=CNONCEabc,s=QSXC", /* truncated */
		"r=CNONCEabc",
		"r=",
	};
	ScramClient c;
	char err[ERRLEN];
	char msg[SCRAM_MESSAGE_BUF_SIZE];
	size_t len;
	uint8_t client_key[SCRAM_KEY_LEN] = {0};
	uint8_t stored_key[SCRAM_KEY_LEN];
	unsigned int n;

	(void) state;
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		err[0] = '\0';
		client_at_server_first(&c);
		if (scram_client_read_server_first(&c, MSG(bad[i]), err, sizeof(err)))
			fail_msg("server-first %zu accepted: %s", i, bad[i]);
		assert_true(strlen(err) > 0);
		/* the exchange cannot go on */
		assert_false(scram_client_build_client_final(&c, msg, sizeof(msg), &len, err, sizeof(err)));
	}

	/* extensions are allowed */
	client_at_server_first(&c);
	assert_true(
		scram_client_read_server_first(&c, MSG("r=CNONCEabc,s=QSXCR+Q6sek8bf92,i=1,x=y"), err, sizeof(err)));

	/* pass-through runs no PBKDF2, so a large count is not refused */
	assert_true(EVP_Digest(client_key, SCRAM_KEY_LEN, stored_key, &n, EVP_sha256(), NULL));
	assert_true(scram_client_init_keys(&c, client_key, stored_key, NULL, err, sizeof(err)));
	assert_true(scram_client_set_nonce(&c, "CNONCE", err, sizeof(err)));
	assert_true(scram_client_build_client_first(&c, NULL, msg, sizeof(msg), &len, err, sizeof(err)));
	assert_true(scram_client_read_server_first(&c, MSG("r=CNONCEabc,s=QSXCR+Q6sek8bf92,i=2147483647"), err,
						   sizeof(err)));
}

static void
test_client_rejects_bad_server_final(void **state)
{
	static const char *const bad[] = {
		"",
		"v=",
		"v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4", /* truncated */
		"v=6rriTRBi23",
		"v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4=,",
		"v=6rriTRBi23WpRR*wtup+mMhUZUn/dB5nLTJRsjl95G4=",
		"x=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4=",
		"6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4=",
	};
	ScramClient c;
	char err[ERRLEN];
	char msg[SCRAM_MESSAGE_BUF_SIZE];
	size_t len;

	(void) state;
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		err[0] = '\0';
		assert_true(scram_client_init_password(&c, "pencil", err, sizeof(err)));
		assert_true(scram_client_set_nonce(&c, RFC_CLIENT_NONCE, err, sizeof(err)));
		assert_true(scram_client_build_client_first(&c, "user", msg, sizeof(msg), &len, err, sizeof(err)));
		assert_true(scram_client_read_server_first(&c, MSG(RFC_SERVER_FIRST), err, sizeof(err)));
		assert_true(scram_client_build_client_final(&c, msg, sizeof(msg), &len, err, sizeof(err)));
		if (scram_client_read_server_final(&c, MSG(bad[i]), err, sizeof(err)))
			fail_msg("server-final %zu accepted: %s", i, bad[i]);
		assert_true(strlen(err) > 0);
		assert_false(scram_client_server_verified(&c));
	}

	/* wrong signature, then a server error with its text */
	client_at_server_first(&c);
	assert_true(scram_client_read_server_first(&c, MSG("r=CNONCEabc,s=QSXCR+Q6sek8bf92,i=1"), err, sizeof(err)));
	assert_true(scram_client_build_client_final(&c, msg, sizeof(msg), &len, err, sizeof(err)));
	assert_false(scram_client_read_server_final(&c, MSG(RFC_SERVER_FINAL), err, sizeof(err)));
	assert_string_equal(err, "incorrect server signature");

	client_at_server_first(&c);
	assert_true(scram_client_read_server_first(&c, MSG("r=CNONCEabc,s=QSXCR+Q6sek8bf92,i=1"), err, sizeof(err)));
	assert_true(scram_client_build_client_final(&c, msg, sizeof(msg), &len, err, sizeof(err)));
	assert_false(scram_client_read_server_final(&c, MSG("e=invalid-proof\x01"), err, sizeof(err)));
	assert_string_equal(err, "error received from server in SCRAM exchange: invalid-proof?");
}

/* --- channel binding ----------------------------------------------------- */

static const uint8_t cbind_a[32] = {1, 2, 3, 4, 5, 6, 7, 8};
static const uint8_t cbind_b[32] = {8, 7, 6, 5, 4, 3, 2, 1};

static void
test_channel_binding(void **state)
{
	ScramVerifier v;
	ScramServer s;
	ScramClient c;
	char err[ERRLEN] = "";
	char msg[SCRAM_MESSAGE_BUF_SIZE];
	size_t len;

	(void) state;
	make_verifier(&v, "pw");

	/* both sides bind to the same certificate hash */
	assert_true(scram_server_init(&s, &v, err, sizeof(err)));
	assert_true(scram_server_set_channel_binding(&s, true, cbind_a, sizeof(cbind_a), err, sizeof(err)));
	assert_true(scram_client_init_password(&c, "pw", err, sizeof(err)));
	assert_true(scram_client_set_channel_binding(&c, true, cbind_a, sizeof(cbind_a), err, sizeof(err)));
	assert_string_equal(scram_client_mechanism(&c), "SCRAM-SHA-256-PLUS");
	if (!run_exchange(&c, &s, err, sizeof(err)))
		fail_msg("bound exchange failed: %s", err);
	assert_true(scram_client_server_verified(&c));

	/* different certificates: a man in the middle */
	assert_true(scram_server_init(&s, &v, err, sizeof(err)));
	assert_true(scram_server_set_channel_binding(&s, true, cbind_a, sizeof(cbind_a), err, sizeof(err)));
	assert_true(scram_client_init_password(&c, "pw", err, sizeof(err)));
	assert_true(scram_client_set_channel_binding(&c, true, cbind_b, sizeof(cbind_b), err, sizeof(err)));
	assert_false(run_exchange(&c, &s, err, sizeof(err)));
	assert_string_equal(err, "SCRAM channel binding check failed");

	/* "y" to a server that could bind: the PLUS offer was stripped */
	assert_true(scram_server_init(&s, &v, err, sizeof(err)));
	assert_true(scram_server_set_channel_binding(&s, false, cbind_a, sizeof(cbind_a), err, sizeof(err)));
	assert_true(scram_client_init_password(&c, "pw", err, sizeof(err)));
	assert_true(scram_client_set_channel_binding(&c, false, cbind_a, sizeof(cbind_a), err, sizeof(err)));
	assert_string_equal(scram_client_mechanism(&c), "SCRAM-SHA-256");
	assert_false(run_exchange(&c, &s, err, sizeof(err)));
	assert_non_null(strstr(err, "SCRAM channel binding negotiation error"));

	/* "y" to a server without TLS is fine, and c= is "eSws" */
	assert_true(scram_server_init(&s, &v, err, sizeof(err)));
	assert_true(scram_client_init_password(&c, "pw", err, sizeof(err)));
	assert_true(scram_client_set_channel_binding(&c, false, cbind_a, sizeof(cbind_a), err, sizeof(err)));
	if (!run_exchange(&c, &s, err, sizeof(err)))
		fail_msg("y exchange failed: %s", err);

	/* PLUS chosen but "n" sent */
	assert_true(scram_server_init(&s, &v, err, sizeof(err)));
	assert_true(scram_server_set_channel_binding(&s, true, cbind_a, sizeof(cbind_a), err, sizeof(err)));
	assert_false(scram_server_read_client_first(&s, MSG("n,,n=,r=abc"), err, sizeof(err)));

	/* PLUS with an unknown binding type */
	assert_true(scram_server_init(&s, &v, err, sizeof(err)));
	assert_true(scram_server_set_channel_binding(&s, true, cbind_a, sizeof(cbind_a), err, sizeof(err)));
	assert_false(scram_server_read_client_first(&s, MSG("p=tls-unique,,n=,r=abc"), err, sizeof(err)));
	assert_string_equal(err, "unsupported SCRAM channel-binding type");

	/* PLUS needs binding data; binding data is bounded */
	assert_true(scram_server_init(&s, &v, err, sizeof(err)));
	assert_false(scram_server_set_channel_binding(&s, true, NULL, 0, err, sizeof(err)));
	assert_true(scram_server_init(&s, &v, err, sizeof(err)));
	assert_false(scram_server_set_channel_binding(&s, false, cbind_a, SCRAM_MAX_CBIND_LEN + 1, err, sizeof(err)));

	/* the gs2 header a binding client sends */
	assert_true(scram_client_init_password(&c, "pw", err, sizeof(err)));
	assert_true(scram_client_set_channel_binding(&c, true, cbind_a, sizeof(cbind_a), err, sizeof(err)));
	assert_true(scram_client_set_nonce(&c, "N", err, sizeof(err)));
	assert_true(scram_client_build_client_first(&c, NULL, msg, sizeof(msg), &len, err, sizeof(err)));
	assert_string_equal(msg, "p=tls-server-end-point,,n=,r=N");
}

/* A self-signed certificate signed with the given digest. */
static X509 *
make_cert(EVP_PKEY *key, const EVP_MD *md)
{
	X509 *cert = X509_new();

	assert_non_null(cert);
	assert_true(X509_set_version(cert, 2));
	assert_true(ASN1_INTEGER_set(X509_get_serialNumber(cert), 1));
	assert_non_null(X509_gmtime_adj(X509_getm_notBefore(cert), 0));
	assert_non_null(X509_gmtime_adj(X509_getm_notAfter(cert), 3600));
	assert_true(X509_NAME_add_entry_by_txt(X509_get_subject_name(cert), "CN", MBSTRING_ASC,
					       (const unsigned char *) "test", -1, -1, 0));
	assert_true(X509_set_issuer_name(cert, X509_get_subject_name(cert)));
	assert_true(X509_set_pubkey(cert, key));
	assert_true(X509_sign(cert, key, md) > 0);
	return cert;
}

/* Hash of the DER encoding, computed without X509_digest. */
static void
der_hash(X509 *cert, const EVP_MD *md, uint8_t *out, unsigned int *outlen)
{
	unsigned char *der = NULL;
	int derlen = i2d_X509(cert, &der);

	assert_true(derlen > 0);
	assert_true(EVP_Digest(der, (size_t) derlen, out, outlen, md, NULL));
	OPENSSL_free(der);
}

static void
test_tls_server_end_point(void **state)
{
	EVP_PKEY *ec = EVP_EC_gen("P-256");
	EVP_PKEY *ed = EVP_PKEY_Q_keygen(NULL, NULL, "ED25519");
	X509 *cert;
	uint8_t got[SCRAM_MAX_CBIND_LEN];
	uint8_t want[EVP_MAX_MD_SIZE];
	size_t gotlen;
	unsigned int wantlen;
	char err[ERRLEN] = "";

	(void) state;
	assert_non_null(ec);
	assert_non_null(ed);

	/* SHA-384 signature: hashed with SHA-384 */
	cert = make_cert(ec, EVP_sha384());
	assert_true(scram_tls_server_end_point(cert, got, &gotlen, err, sizeof(err)));
	der_hash(cert, EVP_sha384(), want, &wantlen);
	assert_int_equal(gotlen, 48);
	assert_memory_equal(got, want, wantlen);
	X509_free(cert);

	/* SHA-1 signature: upgraded to SHA-256 */
	cert = make_cert(ec, EVP_sha1());
	assert_true(scram_tls_server_end_point(cert, got, &gotlen, err, sizeof(err)));
	der_hash(cert, EVP_sha256(), want, &wantlen);
	assert_int_equal(gotlen, 32);
	assert_memory_equal(got, want, wantlen);
	X509_free(cert);

	/* Ed25519 has no separate digest: RFC 5929 leaves it undefined */
	cert = make_cert(ed, NULL);
	assert_false(scram_tls_server_end_point(cert, got, &gotlen, err, sizeof(err)));
	X509_free(cert);

	assert_false(scram_tls_server_end_point(NULL, got, &gotlen, err, sizeof(err)));
	EVP_PKEY_free(ec);
	EVP_PKEY_free(ed);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_base64),
		cmocka_unit_test(test_rfc7677_client),
		cmocka_unit_test(test_rfc7677_server),
		cmocka_unit_test(test_verifier_roundtrip),
		cmocka_unit_test(test_verifier_parse_errors),
		cmocka_unit_test(test_exchange_right_password),
		cmocka_unit_test(test_exchange_wrong_password),
		cmocka_unit_test(test_passthrough),
		cmocka_unit_test(test_mock_server),
		cmocka_unit_test(test_mock_indistinguishable),
		cmocka_unit_test(test_out_of_order),
		cmocka_unit_test(test_username_escaping),
		cmocka_unit_test(test_server_rejects_bad_client_first),
		cmocka_unit_test(test_server_rejects_bad_client_final),
		cmocka_unit_test(test_client_rejects_bad_server_first),
		cmocka_unit_test(test_client_rejects_bad_server_final),
		cmocka_unit_test(test_channel_binding),
		cmocka_unit_test(test_tls_server_end_point),
	};

	return cmocka_run_group_tests_name("scram", tests, NULL, NULL);
}
