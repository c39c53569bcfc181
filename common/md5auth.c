/*
 * PostgreSQL md5 password authentication: stored hashes, challenge
 * responses, and checking a client's response.  MD5 is fetched from the
 * OpenSSL 3 default provider for each hash; it is cheap next to a network
 * round trip and keeps this file free of global state.
 */
#include "common/errbuf.h"
#include "common/md5auth.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/rand.h>

#define MD5_RAW_LEN 16
#define MD5_HEX_LEN 32
#define MD5_PREFIX "md5"
#define MD5_PREFIX_LEN 3

/*
 * hex = md5hex(a || b); hex must hold MD5_HEX_LEN + 1 bytes.
 * Two parts because both uses hash a concatenation (password+user,
 * hash+salt) and we would rather not build it in a temporary buffer.
 */
static bool
md5_hex2(const void *a, size_t alen, const void *b, size_t blen, char hex[MD5_HEX_LEN + 1], char *err, size_t errlen)
{
	static const char digits[] = "0123456789abcdef";
	EVP_MD *md;
	EVP_MD_CTX *ctx;
	unsigned char raw[MD5_RAW_LEN];
	unsigned int n = 0;
	bool ok;

	md = EVP_MD_fetch(NULL, "MD5", NULL);
	if (md == NULL) {
		(void) errbuf_fail(err, errlen, "MD5 is not available from OpenSSL (FIPS mode?)");
		return false;
	}
	ctx = EVP_MD_CTX_new();
	ok = ctx != NULL && EVP_DigestInit_ex(ctx, md, NULL) == 1 && EVP_DigestUpdate(ctx, a, alen) == 1 &&
		EVP_DigestUpdate(ctx, b, blen) == 1 && EVP_DigestFinal_ex(ctx, raw, &n) == 1 && n == MD5_RAW_LEN;
	EVP_MD_CTX_free(ctx);
	EVP_MD_free(md);
	if (!ok) {
		(void) errbuf_fail(err, errlen, "could not compute MD5 hash");
		return false;
	}
	for (size_t i = 0; i < MD5_RAW_LEN; i++) {
		hex[2 * i] = digits[raw[i] >> 4];
		hex[2 * i + 1] = digits[raw[i] & 0x0F];
	}
	hex[MD5_HEX_LEN] = '\0';
	OPENSSL_cleanse(raw, sizeof(raw));
	return true;
}

/* Bound and validate a user name or password; *len gets its length. */
static bool
check_input(const char *s, const char *what, size_t *len, char *err, size_t errlen)
{
	if (s == NULL || s[0] == '\0') {
		(void) errbuf_fail(err, errlen, "empty %s", what);
		return false;
	}
	*len = strnlen(s, MD5AUTH_MAX_INPUT_LEN + 1);
	if (*len > MD5AUTH_MAX_INPUT_LEN) {
		(void) errbuf_fail(err, errlen, "%s longer than %d bytes", what, MD5AUTH_MAX_INPUT_LEN);
		return false;
	}
	return true;
}

bool
md5auth_is_stored(const char *s)
{
	if (s == NULL || strncmp(s, MD5_PREFIX, MD5_PREFIX_LEN) != 0)
		return false;
	for (size_t i = MD5_PREFIX_LEN; i < MD5AUTH_HASH_LEN; i++) {
		if (!((s[i] >= '0' && s[i] <= '9') || (s[i] >= 'a' && s[i] <= 'f')))
			return false; /* also stops at a NUL that comes too early */
	}
	return s[MD5AUTH_HASH_LEN] == '\0';
}

bool
md5auth_stored_from_password(const char *user, const char *password, char out[MD5AUTH_BUF_SIZE], char *err,
			     size_t errlen)
{
	size_t ulen;
	size_t plen;

	if (!check_input(user, "user name", &ulen, err, errlen) ||
	    !check_input(password, "password", &plen, err, errlen))
		return false;
	memcpy(out, MD5_PREFIX, MD5_PREFIX_LEN);
	return md5_hex2(password, plen, user, ulen, out + MD5_PREFIX_LEN, err, errlen);
}

bool
md5auth_response_from_stored(const char *stored, const uint8_t salt[MD5AUTH_SALT_LEN], char out[MD5AUTH_BUF_SIZE],
			     char *err, size_t errlen)
{
	if (!md5auth_is_stored(stored)) {
		(void) errbuf_fail(err, errlen, "stored password is not a valid md5 hash");
		return false;
	}
	memcpy(out, MD5_PREFIX, MD5_PREFIX_LEN);
	/* the hex digits after "md5" are what gets salted */
	return md5_hex2(stored + MD5_PREFIX_LEN, MD5_HEX_LEN, salt, MD5AUTH_SALT_LEN, out + MD5_PREFIX_LEN, err,
			errlen);
}

bool
md5auth_response_from_password(const char *user, const char *password, const uint8_t salt[MD5AUTH_SALT_LEN],
			       char out[MD5AUTH_BUF_SIZE], char *err, size_t errlen)
{
	char stored[MD5AUTH_BUF_SIZE];
	bool ok;

	ok = md5auth_stored_from_password(user, password, stored, err, errlen) &&
		md5auth_response_from_stored(stored, salt, out, err, errlen);
	OPENSSL_cleanse(stored, sizeof(stored));
	return ok;
}

bool
md5auth_verify_stored(const char *stored, const uint8_t salt[MD5AUTH_SALT_LEN], const char *response,
		      size_t response_len, char *err, size_t errlen)
{
	char expected[MD5AUTH_BUF_SIZE];
	bool ok;

	if (!md5auth_response_from_stored(stored, salt, expected, err, errlen))
		return false;
	/* The length is not secret; the contents are compared in constant time. */
	ok = response != NULL && response_len == MD5AUTH_HASH_LEN &&
		CRYPTO_memcmp(response, expected, MD5AUTH_HASH_LEN) == 0;
	OPENSSL_cleanse(expected, sizeof(expected));
	if (!ok)
		(void) errbuf_fail(err, errlen, "md5 password response does not match");
	return ok;
}

bool
md5auth_verify_password(const char *user, const char *password, const uint8_t salt[MD5AUTH_SALT_LEN],
			const char *response, size_t response_len, char *err, size_t errlen)
{
	char stored[MD5AUTH_BUF_SIZE];
	bool ok;

	ok = md5auth_stored_from_password(user, password, stored, err, errlen) &&
		md5auth_verify_stored(stored, salt, response, response_len, err, errlen);
	OPENSSL_cleanse(stored, sizeof(stored));
	return ok;
}

bool
md5auth_random_salt(uint8_t salt[MD5AUTH_SALT_LEN], char *err, size_t errlen)
{
	if (RAND_bytes(salt, MD5AUTH_SALT_LEN) != 1) {
		(void) errbuf_fail(err, errlen, "could not generate random md5 salt");
		return false;
	}
	return true;
}
