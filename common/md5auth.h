/*
 * PostgreSQL "md5" password authentication, for both roles of the proxy.
 *
 * The stored form (pg_authid.rolpassword) is "md5" + md5hex(password + user);
 * the wire response to AuthenticationMD5Password with a 4-byte salt is
 * "md5" + md5hex(md5hex(password + user) + salt).  Because the response only
 * needs the stored form, the proxy can answer a server's challenge knowing
 * just the stored hash, and check a client's response against it.
 *
 * "user" is always the role name from the startup packet.  No sockets and
 * no logging; errors come back as a short message in a caller's buffer.
 * MD5 comes from OpenSSL's default provider; under FIPS it is unavailable
 * and every function fails with a message saying so.
 */
#ifndef PGHANDOFF_COMMON_MD5AUTH_H
#define PGHANDOFF_COMMON_MD5AUTH_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define MD5AUTH_SALT_LEN 4
#define MD5AUTH_HASH_LEN 35 /* "md5" + 32 lowercase hex digits */
#define MD5AUTH_BUF_SIZE (MD5AUTH_HASH_LEN + 1)

/* Longest user name or password accepted, in bytes. */
#define MD5AUTH_MAX_INPUT_LEN 1024

/* True if s is exactly "md5" followed by 32 lowercase hex digits. */
bool md5auth_is_stored(const char *s);

/* out = "md5" + md5hex(password + user), NUL-terminated. */
bool md5auth_stored_from_password(const char *user, const char *password, char out[MD5AUTH_BUF_SIZE], char *err,
				  size_t errlen) __attribute__((warn_unused_result));

/* Wire response computed from the plaintext password. */
bool md5auth_response_from_password(const char *user, const char *password, const uint8_t salt[MD5AUTH_SALT_LEN],
				    char out[MD5AUTH_BUF_SIZE], char *err, size_t errlen)
	__attribute__((warn_unused_result));

/* Wire response computed from the stored "md5..." hash alone. */
bool md5auth_response_from_stored(const char *stored, const uint8_t salt[MD5AUTH_SALT_LEN], char out[MD5AUTH_BUF_SIZE],
				  char *err, size_t errlen) __attribute__((warn_unused_result));

/*
 * Check a client's PasswordMessage contents (response, response_len bytes,
 * no NUL needed) against a stored hash or a plaintext password.  False with
 * err set when it does not match or cannot be checked.
 */
bool md5auth_verify_stored(const char *stored, const uint8_t salt[MD5AUTH_SALT_LEN], const char *response,
			   size_t response_len, char *err, size_t errlen) __attribute__((warn_unused_result));

bool md5auth_verify_password(const char *user, const char *password, const uint8_t salt[MD5AUTH_SALT_LEN],
			     const char *response, size_t response_len, char *err, size_t errlen)
	__attribute__((warn_unused_result));

/* A fresh random salt for AuthenticationMD5Password. */
bool md5auth_random_salt(uint8_t salt[MD5AUTH_SALT_LEN], char *err, size_t errlen) __attribute__((warn_unused_result));

#endif /* PGHANDOFF_COMMON_MD5AUTH_H */
