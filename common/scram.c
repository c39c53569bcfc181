/*
 * SCRAM-SHA-256 for both ends of the proxy: the server half authenticates
 * applications, the client half logs in to PostgreSQL with a password or,
 * in pass-through mode, with the ClientKey an application just proved.
 *
 * Everything that arrives from the network is parsed with explicit lengths
 * by the readers below; values are pointers into the message, never copied
 * until they have been checked.  Keys are compared with CRYPTO_memcmp and
 * wiped when no longer needed.  Each public step checks the state it is
 * called in and moves the exchange to the FAILED state on any error, so a
 * caller that ignores one failure cannot complete the exchange.
 *
 * Formulas (RFC 5802 section 3):
 *   SaltedPassword  = PBKDF2-HMAC-SHA-256(password, salt, i)
 *   ClientKey       = HMAC(SaltedPassword, "Client Key")
 *   StoredKey       = H(ClientKey)
 *   ServerKey       = HMAC(SaltedPassword, "Server Key")
 *   AuthMessage     = client-first-bare "," server-first ","
 *                     client-final-without-proof
 *   ClientSignature = HMAC(StoredKey, AuthMessage)
 *   ClientProof     = ClientKey XOR ClientSignature
 *   ServerSignature = HMAC(ServerKey, AuthMessage)
 */
#include "common/errbuf.h"
#include "common/scram.h"

#include <limits.h>
#include <stdatomic.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/objects.h>
#include <openssl/rand.h>
#include <openssl/x509.h>

#include "common/base64.h"

#define VERIFIER_PREFIX "SCRAM-SHA-256$"
#define CLIENT_KEY_LABEL "Client Key"
#define SERVER_KEY_LABEL "Server Key"

/* "p=tls-server-end-point,," is the longest gs2 header we produce or accept. */
#define GS2_HEADER_MAX (sizeof("p=" SCRAM_CBIND_TYPE ",,") - 1)
#define CBIND_INPUT_MAX (GS2_HEADER_MAX + SCRAM_MAX_CBIND_LEN)

/* Longest e= text we copy into an error message. */
#define SERVER_ERROR_MAX 64

/* --- crypto primitives ------------------------------------------------- */

static bool
sha256(const uint8_t *data, size_t len, uint8_t out[SCRAM_KEY_LEN])
{
	unsigned int outlen = 0;

	if (EVP_Digest(data, len, out, &outlen, EVP_sha256(), NULL) != 1)
		return false;
	return outlen == SCRAM_KEY_LEN;
}

static bool
hmac_sha256(const uint8_t *key, size_t keylen, const void *data, size_t len, uint8_t out[SCRAM_KEY_LEN])
{
	unsigned int outlen = 0;

	if (keylen > INT_MAX)
		return false;
	if (HMAC(EVP_sha256(), key, (int) keylen, data, len, out, &outlen) == NULL)
		return false;
	return outlen == SCRAM_KEY_LEN;
}

/* PBKDF2 runs so far, for scram_key_derivations(); threads may derive too. */
static atomic_uint_fast64_t key_derivations;

uint64_t
scram_key_derivations(void)
{
	return (uint64_t) atomic_load_explicit(&key_derivations, memory_order_relaxed);
}

/* Derive the three keys from a password; see the formulas at the top. */
static bool
derive_keys(const char *password, size_t password_len, const uint8_t *salt, size_t salt_len, int iterations,
	    uint8_t client_key[SCRAM_KEY_LEN], uint8_t stored_key[SCRAM_KEY_LEN], uint8_t server_key[SCRAM_KEY_LEN])
{
	uint8_t salted[SCRAM_KEY_LEN];
	bool ok;

	atomic_fetch_add_explicit(&key_derivations, 1, memory_order_relaxed);
	/* Callers bound both lengths far below INT_MAX. */
	ok = PKCS5_PBKDF2_HMAC(password, (int) password_len, salt, (int) salt_len, iterations, EVP_sha256(),
			       SCRAM_KEY_LEN, salted) == 1 &&
		hmac_sha256(salted, sizeof(salted), CLIENT_KEY_LABEL, strlen(CLIENT_KEY_LABEL), client_key) &&
		sha256(client_key, SCRAM_KEY_LEN, stored_key) &&
		hmac_sha256(salted, sizeof(salted), SERVER_KEY_LABEL, strlen(SERVER_KEY_LABEL), server_key);
	OPENSSL_cleanse(salted, sizeof(salted));
	return ok;
}

static void
xor_keys(const uint8_t *a, const uint8_t *b, uint8_t *out)
{
	for (size_t i = 0; i < SCRAM_KEY_LEN; i++)
		out[i] = a[i] ^ b[i];
}

/* Random bytes, base64-encoded into out (>= 25 bytes for 18 raw bytes). */
static bool
random_nonce(char *out, size_t outsize, char *err, size_t errlen)
{
	uint8_t raw[SCRAM_RAW_NONCE_LEN];

	if (RAND_bytes(raw, sizeof(raw)) != 1) {
		(void) errbuf_fail(err, errlen, "could not generate random SCRAM nonce");
		return false;
	}
	if (!base64_encode(raw, sizeof(raw), out, outsize, NULL)) {
		(void) errbuf_fail(err, errlen, "SCRAM nonce buffer too small");
		return false;
	}
	return true;
}

/* --- message building: start, append, finish with a sticky flag --------- */

typedef struct MsgBuf {
	char *data;
	size_t size;
	size_t len;
	bool failed; /* an append did not fit; checked at finish */
} MsgBuf;

static void
msgbuf_start(MsgBuf *b, char *data, size_t size)
{
	b->data = data;
	b->size = size;
	b->len = 0;
	b->failed = (data == NULL || size == 0);
	if (!b->failed)
		data[0] = '\0';
}

static void
msgbuf_append(MsgBuf *b, const char *s, size_t n)
{
	if (b->failed)
		return;
	/* keep one byte for the NUL */
	if (n >= b->size - b->len) {
		b->failed = true;
		return;
	}
	memcpy(b->data + b->len, s, n);
	b->len += n;
	b->data[b->len] = '\0';
}

static void
msgbuf_append_str(MsgBuf *b, const char *s)
{
	msgbuf_append(b, s, strlen(s));
}

static void
msgbuf_append_base64(MsgBuf *b, const uint8_t *src, size_t n)
{
	size_t written;

	if (b->failed)
		return;
	if (!base64_encode(src, n, b->data + b->len, b->size - b->len, &written)) {
		b->failed = true;
		return;
	}
	b->len += written;
}

static bool
msgbuf_finish(MsgBuf *b, size_t *outlen, char *err, size_t errlen)
{
	if (b->failed) {
		(void) errbuf_fail(err, errlen, "SCRAM message does not fit in the output buffer");
		return false;
	}
	if (outlen)
		*outlen = b->len;
	return true;
}

/* --- message reading ------------------------------------------------------ */

/* Cursor over an untrusted message: p never passes end. */
typedef struct Reader {
	const char *p;
	const char *end;
} Reader;

/* Common checks on any incoming SCRAM message. */
static bool
check_message(const char *msg, size_t len, const char *what, char *err, size_t errlen)
{
	if (msg == NULL || len == 0) {
		(void) errbuf_fail(err, errlen, "malformed SCRAM message (empty %s)", what);
		return false;
	}
	if (len > SCRAM_MAX_MESSAGE_LEN) {
		(void) errbuf_fail(err, errlen, "malformed SCRAM message (%s longer than %d bytes)", what,
				   SCRAM_MAX_MESSAGE_LEN);
		return false;
	}
	if (memchr(msg, '\0', len) != NULL) {
		(void) errbuf_fail(err, errlen, "malformed SCRAM message (NUL byte in %s)", what);
		return false;
	}
	return true;
}

static bool
reader_at_end(const Reader *r)
{
	return r->p >= r->end;
}

static bool
read_comma(Reader *r, char *err, size_t errlen)
{
	if (reader_at_end(r) || *r->p != ',') {
		(void) errbuf_fail(err, errlen, "malformed SCRAM message (comma expected)");
		return false;
	}
	r->p++;
	return true;
}

/* The value runs to the next ',' or the end of the message. */
static void
read_value(Reader *r, const char **val, size_t *vlen)
{
	const char *start = r->p;

	while (r->p < r->end && *r->p != ',')
		r->p++;
	*val = start;
	*vlen = (size_t) (r->p - start);
}

/* Read "<attr>=<value>"; the value points into the message. */
static bool
read_attr(Reader *r, char attr, const char **val, size_t *vlen, char *err, size_t errlen)
{
	if (r->end - r->p < 2 || r->p[0] != attr || r->p[1] != '=') {
		(void) errbuf_fail(err, errlen, "malformed SCRAM message (attribute \"%c\" expected)", attr);
		return false;
	}
	r->p += 2;
	read_value(r, val, vlen);
	return true;
}

/* Read an attribute with any single-letter name (extensions). */
static bool
read_any_attr(Reader *r, char *attr, const char **val, size_t *vlen, char *err, size_t errlen)
{
	char c;

	if (r->end - r->p < 2) {
		(void) errbuf_fail(err, errlen, "malformed SCRAM message (attribute expected)");
		return false;
	}
	c = r->p[0];
	if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z')) || r->p[1] != '=') {
		(void) errbuf_fail(err, errlen, "malformed SCRAM message (attribute expected)");
		return false;
	}
	*attr = c;
	r->p += 2;
	read_value(r, val, vlen);
	return true;
}

/* Skip ",x=value" extensions to the end of the message; RFC 5802 allows them. */
static bool
skip_extensions(Reader *r, char *err, size_t errlen)
{
	while (!reader_at_end(r)) {
		char attr;
		const char *val;
		size_t vlen;

		if (!read_comma(r, err, errlen) || !read_any_attr(r, &attr, &val, &vlen, err, errlen))
			return false;
	}
	return true;
}

/* RFC 5802 "printable": 0x21-0x7E except ','. */
static bool
is_valid_nonce(const char *s, size_t len)
{
	if (len == 0)
		return false;
	for (size_t i = 0; i < len; i++) {
		unsigned char c = (unsigned char) s[i];

		if (c < 0x21 || c > 0x7E || c == ',')
			return false;
	}
	return true;
}

/* Decimal 1..INT_MAX, digits only. */
static bool
parse_iterations(const char *s, size_t len, int *out)
{
	long long v = 0;

	if (len == 0 || len > 10)
		return false;
	for (size_t i = 0; i < len; i++) {
		if (s[i] < '0' || s[i] > '9')
			return false;
		v = v * 10 + (s[i] - '0');
	}
	if (v < 1 || v > INT_MAX)
		return false;
	*out = (int) v;
	return true;
}

/* Decode a base64 value that must be exactly SCRAM_KEY_LEN bytes. */
static bool
decode_key(const char *val, size_t vlen, uint8_t out[SCRAM_KEY_LEN])
{
	size_t n;

	return base64_decode(val, vlen, out, SCRAM_KEY_LEN, &n) && n == SCRAM_KEY_LEN;
}

static const char *
gs2_header(char flag)
{
	switch (flag) {
	case 'y':
		return "y,,";
	case 'p':
		return "p=" SCRAM_CBIND_TYPE ",,";
	default:
		return "n,,";
	}
}

/* cbind-input for "c=": the gs2 header, plus the binding data with "p". */
static size_t
cbind_input(char flag, const uint8_t *cbind, size_t cbind_len, uint8_t out[CBIND_INPUT_MAX])
{
	const char *hdr = gs2_header(flag);
	size_t n = strlen(hdr);

	memcpy(out, hdr, n);
	if (flag == 'p') {
		memcpy(out + n, cbind, cbind_len);
		n += cbind_len;
	}
	return n;
}

/* Append "," + s to an AuthMessage buffer (the first part has no comma). */
static bool
auth_message_append(char *buf, size_t *len, const char *s, size_t n, char *err, size_t errlen)
{
	size_t extra = (*len > 0) ? 1 : 0;

	if (n + extra > SCRAM_MAX_AUTH_MESSAGE_LEN - *len) {
		(void) errbuf_fail(err, errlen, "SCRAM AuthMessage too long");
		return false;
	}
	if (extra)
		buf[(*len)++] = ',';
	memcpy(buf + *len, s, n);
	*len += n;
	buf[*len] = '\0';
	return true;
}

/* --- verifiers ------------------------------------------------------------ */

bool
scram_verifier_looks_like(const char *text)
{
	return text != NULL && strncmp(text, VERIFIER_PREFIX, strlen(VERIFIER_PREFIX)) == 0;
}

bool
scram_verifier_parse(ScramVerifier *v, const char *text, char *err, size_t errlen)
{
	const char *p;
	const char *end;
	const char *sep;
	size_t len;
	size_t n;

	memset(v, 0, sizeof(*v));
	if (text == NULL) {
		(void) errbuf_fail(err, errlen, "SCRAM verifier missing");
		return false;
	}
	len = strnlen(text, SCRAM_VERIFIER_BUF_SIZE);
	if (len >= SCRAM_VERIFIER_BUF_SIZE) {
		(void) errbuf_fail(err, errlen, "SCRAM verifier too long");
		return false;
	}
	if (!scram_verifier_looks_like(text)) {
		(void) errbuf_fail(err, errlen, "not a SCRAM-SHA-256 verifier");
		return false;
	}
	p = text + strlen(VERIFIER_PREFIX);
	end = text + len;

	sep = memchr(p, ':', (size_t) (end - p));
	if (sep == NULL || !parse_iterations(p, (size_t) (sep - p), &v->iterations)) {
		(void) errbuf_fail(err, errlen, "invalid iteration count in SCRAM verifier");
		return false;
	}
	p = sep + 1;

	sep = memchr(p, '$', (size_t) (end - p));
	if (sep == NULL || !base64_decode(p, (size_t) (sep - p), v->salt, sizeof(v->salt), &n) || n == 0) {
		(void) errbuf_fail(err, errlen, "invalid salt in SCRAM verifier");
		return false;
	}
	v->salt_len = n;
	p = sep + 1;

	sep = memchr(p, ':', (size_t) (end - p));
	if (sep == NULL || !decode_key(p, (size_t) (sep - p), v->stored_key)) {
		(void) errbuf_fail(err, errlen, "invalid StoredKey in SCRAM verifier");
		return false;
	}
	p = sep + 1;

	if (!decode_key(p, (size_t) (end - p), v->server_key)) {
		(void) errbuf_fail(err, errlen, "invalid ServerKey in SCRAM verifier");
		return false;
	}
	return true;
}

static bool
check_password(const char *password, size_t *len, char *err, size_t errlen)
{
	if (password == NULL || password[0] == '\0') {
		(void) errbuf_fail(err, errlen, "empty password");
		return false;
	}
	*len = strnlen(password, SCRAM_MAX_PASSWORD_LEN + 1);
	if (*len > SCRAM_MAX_PASSWORD_LEN) {
		(void) errbuf_fail(err, errlen, "password longer than %d bytes", SCRAM_MAX_PASSWORD_LEN);
		return false;
	}
	return true;
}

bool
scram_verifier_build(ScramVerifier *v, const char *password, const uint8_t *salt, size_t salt_len, int iterations,
		     char *err, size_t errlen)
{
	size_t pwlen;
	uint8_t client_key[SCRAM_KEY_LEN];
	bool ok;

	memset(v, 0, sizeof(*v));
	if (!check_password(password, &pwlen, err, errlen))
		return false;
	if (iterations == 0)
		iterations = SCRAM_DEFAULT_ITERATIONS;
	if (iterations < 0 || iterations > SCRAM_MAX_ITERATIONS) {
		(void) errbuf_fail(err, errlen, "SCRAM iteration count must be between 1 and %d", SCRAM_MAX_ITERATIONS);
		return false;
	}
	v->iterations = iterations;

	if (salt == NULL) {
		v->salt_len = SCRAM_DEFAULT_SALT_LEN;
		if (RAND_bytes(v->salt, (int) v->salt_len) != 1) {
			(void) errbuf_fail(err, errlen, "could not generate random SCRAM salt");
			return false;
		}
	} else {
		if (salt_len == 0 || salt_len > SCRAM_MAX_SALT_LEN) {
			(void) errbuf_fail(err, errlen, "SCRAM salt must be 1 to %d bytes", SCRAM_MAX_SALT_LEN);
			return false;
		}
		memcpy(v->salt, salt, salt_len);
		v->salt_len = salt_len;
	}

	ok = derive_keys(password, pwlen, v->salt, v->salt_len, v->iterations, client_key, v->stored_key,
			 v->server_key);
	OPENSSL_cleanse(client_key, sizeof(client_key));
	if (!ok)
		(void) errbuf_fail(err, errlen, "could not compute SCRAM keys");
	return ok;
}

bool
scram_verifier_format(const ScramVerifier *v, char *out, size_t outsize, char *err, size_t errlen)
{
	char salt64[BASE64_ENCODED_LEN(SCRAM_MAX_SALT_LEN) + 1];
	char stored64[BASE64_ENCODED_LEN(SCRAM_KEY_LEN) + 1];
	char server64[BASE64_ENCODED_LEN(SCRAM_KEY_LEN) + 1];
	int n;

	if (v->iterations < 1 || v->salt_len == 0 || v->salt_len > SCRAM_MAX_SALT_LEN) {
		(void) errbuf_fail(err, errlen, "invalid SCRAM verifier");
		return false;
	}
	if (!base64_encode(v->salt, v->salt_len, salt64, sizeof(salt64), NULL) ||
	    !base64_encode(v->stored_key, SCRAM_KEY_LEN, stored64, sizeof(stored64), NULL) ||
	    !base64_encode(v->server_key, SCRAM_KEY_LEN, server64, sizeof(server64), NULL)) {
		(void) errbuf_fail(err, errlen, "could not encode SCRAM verifier");
		return false;
	}
	n = snprintf(out, outsize, VERIFIER_PREFIX "%d:%s$%s:%s", v->iterations, salt64, stored64, server64);
	if (n < 0 || (size_t) n >= outsize) {
		(void) errbuf_fail(err, errlen, "SCRAM verifier does not fit in the output buffer");
		return false;
	}
	return true;
}

bool
scram_verifier_check_password(const ScramVerifier *v, const char *password, char *err, size_t errlen)
{
	size_t pwlen;
	uint8_t client_key[SCRAM_KEY_LEN];
	uint8_t stored_key[SCRAM_KEY_LEN];
	uint8_t server_key[SCRAM_KEY_LEN];
	int diff;
	bool ok;

	if (!check_password(password, &pwlen, err, errlen))
		return false;
	if (v->iterations < 1 || v->salt_len == 0 || v->salt_len > SCRAM_MAX_SALT_LEN) {
		(void) errbuf_fail(err, errlen, "invalid SCRAM verifier");
		return false;
	}
	if (!derive_keys(password, pwlen, v->salt, v->salt_len, v->iterations, client_key, stored_key, server_key)) {
		(void) errbuf_fail(err, errlen, "could not compute SCRAM keys");
		return false;
	}
	/* Both comparisons always run: no early exit to time. */
	diff = CRYPTO_memcmp(stored_key, v->stored_key, SCRAM_KEY_LEN);
	diff |= CRYPTO_memcmp(server_key, v->server_key, SCRAM_KEY_LEN);
	ok = (diff == 0);
	OPENSSL_cleanse(client_key, sizeof(client_key));
	OPENSSL_cleanse(stored_key, sizeof(stored_key));
	OPENSSL_cleanse(server_key, sizeof(server_key));
	if (!ok)
		(void) errbuf_fail(err, errlen, "password does not match");
	return ok;
}

/* --- channel binding -------------------------------------------------------- */

bool
scram_tls_server_end_point(X509 *cert, uint8_t *out, size_t *outlen, char *err, size_t errlen)
{
	int md_nid = NID_undef;
	const EVP_MD *md;
	unsigned char hash[EVP_MAX_MD_SIZE];
	unsigned int n = 0;

	if (cert == NULL) {
		(void) errbuf_fail(err, errlen, "no certificate for channel binding");
		return false;
	}
	if (!OBJ_find_sigid_algs(X509_get_signature_nid(cert), &md_nid, NULL) || md_nid == NID_undef) {
		/* e.g. Ed25519: RFC 5929 defines no hash for it */
		(void) errbuf_fail(err, errlen,
				   "could not determine the certificate's signature hash for channel binding");
		return false;
	}
	/* RFC 5929 section 4.1: MD5 and SHA-1 are upgraded to SHA-256. */
	if (md_nid == NID_md5 || md_nid == NID_sha1)
		md_nid = NID_sha256;
	md = EVP_get_digestbynid(md_nid);
	if (md == NULL) {
		(void) errbuf_fail(err, errlen, "certificate signature hash is not available");
		return false;
	}
	if (X509_digest(cert, md, hash, &n) != 1 || n == 0 || n > SCRAM_MAX_CBIND_LEN) {
		(void) errbuf_fail(err, errlen, "could not hash the certificate for channel binding");
		return false;
	}
	memcpy(out, hash, n);
	*outlen = n;
	return true;
}

/* --- server side ------------------------------------------------------------ */

static bool
server_step(ScramServer *s, ScramServerState expected, char *err, size_t errlen)
{
	if (s->state == expected)
		return true;
	s->state = SCRAM_SERVER_FAILED;
	(void) errbuf_fail(err, errlen, "SCRAM exchange step called out of order");
	return false;
}

static bool
server_fail(ScramServer *s)
{
	s->state = SCRAM_SERVER_FAILED;
	OPENSSL_cleanse(s->client_key, sizeof(s->client_key));
	return false;
}

bool
scram_server_init(ScramServer *s, const ScramVerifier *v, char *err, size_t errlen)
{
	memset(s, 0, sizeof(*s));
	s->state = SCRAM_SERVER_FAILED;
	if (v == NULL || v->iterations < 1 || v->salt_len == 0 || v->salt_len > SCRAM_MAX_SALT_LEN) {
		(void) errbuf_fail(err, errlen, "invalid SCRAM verifier");
		return false;
	}
	s->verifier = *v;
	s->state = SCRAM_SERVER_EXPECT_CLIENT_FIRST;
	return true;
}

bool
scram_mock_salt(const char *username, const uint8_t *secret, size_t secret_len, uint8_t out[SCRAM_DEFAULT_SALT_LEN])
{
	uint8_t digest[SCRAM_KEY_LEN];
	bool ok;

	if (secret == NULL || secret_len == 0)
		return false;
	if (username == NULL)
		username = "";
	/* A keyed hash: same salt for the same name, unguessable without the secret. */
	ok = hmac_sha256(secret, secret_len, username, strlen(username), digest);
	if (ok)
		memcpy(out, digest, SCRAM_DEFAULT_SALT_LEN);
	OPENSSL_cleanse(digest, sizeof(digest));
	return ok;
}

bool
scram_server_init_mock(ScramServer *s, const char *username, const uint8_t *secret, size_t secret_len, char *err,
		       size_t errlen)
{
	memset(s, 0, sizeof(*s));
	s->state = SCRAM_SERVER_FAILED;
	if (secret == NULL || secret_len == 0) {
		(void) errbuf_fail(err, errlen, "mock SCRAM authentication needs a secret");
		return false;
	}
	/*
	 * Random keys: the proof check runs as for a real verifier and fails.
	 * The iteration count is the one verifiers get by default.
	 */
	if (!scram_mock_salt(username, secret, secret_len, s->verifier.salt) ||
	    RAND_bytes(s->verifier.stored_key, SCRAM_KEY_LEN) != 1 ||
	    RAND_bytes(s->verifier.server_key, SCRAM_KEY_LEN) != 1) {
		(void) errbuf_fail(err, errlen, "could not set up mock SCRAM authentication");
		return false;
	}
	s->verifier.salt_len = SCRAM_DEFAULT_SALT_LEN;
	s->verifier.iterations = SCRAM_DEFAULT_ITERATIONS;
	s->doomed = true;
	s->state = SCRAM_SERVER_EXPECT_CLIENT_FIRST;
	return true;
}

bool
scram_server_set_channel_binding(ScramServer *s, bool plus_selected, const uint8_t *cbind, size_t cbind_len, char *err,
				 size_t errlen)
{
	if (!server_step(s, SCRAM_SERVER_EXPECT_CLIENT_FIRST, err, errlen))
		return false;
	if (cbind != NULL && (cbind_len == 0 || cbind_len > SCRAM_MAX_CBIND_LEN)) {
		(void) errbuf_fail(err, errlen, "invalid channel binding data length");
		return server_fail(s);
	}
	if (plus_selected && cbind == NULL) {
		(void) errbuf_fail(err, errlen, "client selected SCRAM-SHA-256-PLUS on a connection without TLS");
		return server_fail(s);
	}
	s->plus_selected = plus_selected;
	s->have_cbind = (cbind != NULL);
	s->cbind_len = s->have_cbind ? cbind_len : 0;
	if (s->have_cbind)
		memcpy(s->cbind, cbind, cbind_len);
	return true;
}

bool
scram_server_set_nonce(ScramServer *s, const char *nonce, char *err, size_t errlen)
{
	size_t len;

	if (!server_step(s, SCRAM_SERVER_EXPECT_CLIENT_FIRST, err, errlen))
		return false;
	len = nonce ? strnlen(nonce, SCRAM_MAX_NONCE_LEN / 2 + 1) : 0;
	if (len > SCRAM_MAX_NONCE_LEN / 2 || !is_valid_nonce(nonce, len)) {
		(void) errbuf_fail(err, errlen, "invalid SCRAM server nonce");
		return server_fail(s);
	}
	memcpy(s->server_nonce, nonce, len);
	s->server_nonce[len] = '\0';
	s->fixed_nonce = true;
	return true;
}

static bool
server_read_client_first(ScramServer *s, const char *msg, size_t len, char *err, size_t errlen)
{
	Reader r = {msg, msg + len};
	const char *val;
	size_t vlen;
	const char *bare;
	size_t max_client_nonce;

	if (!check_message(msg, len, "client-first-message", err, errlen))
		return false;

	/* gs2-cbind-flag, checked the way PostgreSQL checks it */
	s->gs2_flag = *r.p;
	switch (*r.p) {
	case 'n':
	case 'y':
		if (s->plus_selected) {
			(void) errbuf_fail(err, errlen,
					   "malformed SCRAM message (client selected SCRAM-SHA-256-PLUS "
					   "but sent no channel binding data)");
			return false;
		}
		/* "y" from a client while we could bind means a downgrade. */
		if (*r.p == 'y' && s->have_cbind) {
			(void) errbuf_fail(err, errlen,
					   "SCRAM channel binding negotiation error (client supports "
					   "channel binding but thinks the server does not)");
			return false;
		}
		r.p++;
		break;
	case 'p':
		if (!s->plus_selected) {
			(void) errbuf_fail(err, errlen,
					   "malformed SCRAM message (client selected SCRAM-SHA-256 "
					   "without channel binding but sent channel binding data)");
			return false;
		}
		if (!read_attr(&r, 'p', &val, &vlen, err, errlen))
			return false;
		if (vlen != strlen(SCRAM_CBIND_TYPE) || memcmp(val, SCRAM_CBIND_TYPE, vlen) != 0) {
			(void) errbuf_fail(err, errlen, "unsupported SCRAM channel-binding type");
			return false;
		}
		break;
	default:
		(void) errbuf_fail(err, errlen, "malformed SCRAM message (unexpected channel-binding flag)");
		return false;
	}
	if (!read_comma(&r, err, errlen))
		return false;

	/* authzid: PostgreSQL does not support one */
	if (!reader_at_end(&r) && *r.p == 'a') {
		(void) errbuf_fail(err, errlen, "client uses authorization identity, but it is not supported");
		return false;
	}
	if (!read_comma(&r, err, errlen))
		return false;

	bare = r.p;
	if (!reader_at_end(&r) && *r.p == 'm') {
		(void) errbuf_fail(err, errlen, "client requires an unsupported SCRAM extension");
		return false;
	}
	/* The user name is ignored: the startup packet's user is authoritative. */
	if (!read_attr(&r, 'n', &val, &vlen, err, errlen) || !read_comma(&r, err, errlen) ||
	    !read_attr(&r, 'r', &val, &vlen, err, errlen))
		return false;

	max_client_nonce = SCRAM_MAX_NONCE_LEN - BASE64_ENCODED_LEN(SCRAM_RAW_NONCE_LEN);
	if (!is_valid_nonce(val, vlen) || vlen > max_client_nonce) {
		(void) errbuf_fail(err, errlen, "malformed SCRAM message (invalid client nonce)");
		return false;
	}
	memcpy(s->nonce, val, vlen);
	s->nonce[vlen] = '\0';
	s->client_nonce_len = vlen;
	s->nonce_len = vlen;

	if (!skip_extensions(&r, err, errlen))
		return false;

	s->auth_message_len = 0;
	return auth_message_append(s->auth_message, &s->auth_message_len, bare, (size_t) (r.end - bare), err, errlen);
}

bool
scram_server_read_client_first(ScramServer *s, const char *msg, size_t len, char *err, size_t errlen)
{
	if (!server_step(s, SCRAM_SERVER_EXPECT_CLIENT_FIRST, err, errlen))
		return false;
	if (!server_read_client_first(s, msg, len, err, errlen))
		return server_fail(s);
	s->state = SCRAM_SERVER_SEND_SERVER_FIRST;
	return true;
}

static bool
server_build_server_first(ScramServer *s, char *out, size_t outsize, size_t *outlen, char *err, size_t errlen)
{
	char random_part[BASE64_ENCODED_LEN(SCRAM_RAW_NONCE_LEN) + 1];
	const char *server_nonce = s->server_nonce;
	size_t snlen;
	char iter[16];
	MsgBuf b;

	if (!s->fixed_nonce) {
		if (!random_nonce(random_part, sizeof(random_part), err, errlen))
			return false;
		server_nonce = random_part;
	}
	snlen = strlen(server_nonce);
	if (snlen > SCRAM_MAX_NONCE_LEN - s->client_nonce_len) {
		(void) errbuf_fail(err, errlen, "SCRAM nonce too long");
		return false;
	}
	memcpy(s->nonce + s->client_nonce_len, server_nonce, snlen);
	s->nonce_len = s->client_nonce_len + snlen;
	s->nonce[s->nonce_len] = '\0';

	(void) snprintf(iter, sizeof(iter), "%d", s->verifier.iterations);
	msgbuf_start(&b, out, outsize);
	msgbuf_append_str(&b, "r=");
	msgbuf_append(&b, s->nonce, s->nonce_len);
	msgbuf_append_str(&b, ",s=");
	msgbuf_append_base64(&b, s->verifier.salt, s->verifier.salt_len);
	msgbuf_append_str(&b, ",i=");
	msgbuf_append_str(&b, iter);
	if (!msgbuf_finish(&b, outlen, err, errlen))
		return false;
	return auth_message_append(s->auth_message, &s->auth_message_len, b.data, b.len, err, errlen);
}

bool
scram_server_build_server_first(ScramServer *s, char *out, size_t outsize, size_t *outlen, char *err, size_t errlen)
{
	if (!server_step(s, SCRAM_SERVER_SEND_SERVER_FIRST, err, errlen))
		return false;
	if (!server_build_server_first(s, out, outsize, outlen, err, errlen))
		return server_fail(s);
	s->state = SCRAM_SERVER_EXPECT_CLIENT_FINAL;
	return true;
}

static bool
server_read_client_final(ScramServer *s, const char *msg, size_t len, char *err, size_t errlen)
{
	Reader r = {msg, msg + len};
	const char *val;
	size_t vlen;
	uint8_t got[CBIND_INPUT_MAX];
	uint8_t want[CBIND_INPUT_MAX];
	size_t gotlen;
	size_t wantlen;
	const char *proof_comma = NULL;
	char attr;

	if (!check_message(msg, len, "client-final-message", err, errlen))
		return false;

	/* c=: must repeat our gs2 header (and binding data) exactly */
	if (!read_attr(&r, 'c', &val, &vlen, err, errlen))
		return false;
	if (!base64_decode(val, vlen, got, sizeof(got), &gotlen)) {
		(void) errbuf_fail(err, errlen, "malformed SCRAM message (invalid channel-binding data)");
		return false;
	}
	wantlen = cbind_input(s->gs2_flag, s->cbind, s->cbind_len, want);
	if (gotlen != wantlen || CRYPTO_memcmp(got, want, wantlen) != 0) {
		(void) errbuf_fail(err, errlen, "SCRAM channel binding check failed");
		return false;
	}

	if (!read_comma(&r, err, errlen) || !read_attr(&r, 'r', &val, &vlen, err, errlen))
		return false;
	if (vlen != s->nonce_len || memcmp(val, s->nonce, vlen) != 0) {
		(void) errbuf_fail(err, errlen, "invalid SCRAM response (nonce mismatch)");
		return false;
	}

	/* Extensions may come before the proof, which must be last. */
	for (;;) {
		if (reader_at_end(&r)) {
			(void) errbuf_fail(err, errlen, "malformed SCRAM message (proof missing)");
			return false;
		}
		proof_comma = r.p;
		if (!read_comma(&r, err, errlen) || !read_any_attr(&r, &attr, &val, &vlen, err, errlen))
			return false;
		if (attr == 'p')
			break;
	}
	if (!decode_key(val, vlen, s->client_proof)) {
		(void) errbuf_fail(err, errlen, "malformed SCRAM message (malformed proof)");
		return false;
	}
	if (!reader_at_end(&r)) {
		(void) errbuf_fail(err, errlen, "malformed SCRAM message (garbage at end of client-final-message)");
		return false;
	}

	return auth_message_append(s->auth_message, &s->auth_message_len, msg, (size_t) (proof_comma - msg), err,
				   errlen);
}

bool
scram_server_read_client_final(ScramServer *s, const char *msg, size_t len, char *err, size_t errlen)
{
	if (!server_step(s, SCRAM_SERVER_EXPECT_CLIENT_FINAL, err, errlen))
		return false;
	if (!server_read_client_final(s, msg, len, err, errlen))
		return server_fail(s);
	s->state = SCRAM_SERVER_VERIFY_PROOF;
	return true;
}

bool
scram_server_verify_proof(ScramServer *s, char *err, size_t errlen)
{
	uint8_t signature[SCRAM_KEY_LEN];
	uint8_t computed_stored[SCRAM_KEY_LEN];
	bool ok;

	if (!server_step(s, SCRAM_SERVER_VERIFY_PROOF, err, errlen))
		return false;

	/*
	 * The proof is computed and compared even for a mock exchange, so the
	 * time taken does not tell whether the user exists.
	 */
	if (!hmac_sha256(s->verifier.stored_key, SCRAM_KEY_LEN, s->auth_message, s->auth_message_len, signature)) {
		(void) errbuf_fail(err, errlen, "could not compute SCRAM client signature");
		return server_fail(s);
	}
	xor_keys(s->client_proof, signature, s->client_key);
	ok = sha256(s->client_key, SCRAM_KEY_LEN, computed_stored) &&
		CRYPTO_memcmp(computed_stored, s->verifier.stored_key, SCRAM_KEY_LEN) == 0;
	OPENSSL_cleanse(signature, sizeof(signature));
	if (!ok || s->doomed) {
		(void) errbuf_fail(err, errlen, "invalid SCRAM proof (password does not match)");
		return server_fail(s);
	}
	s->state = SCRAM_SERVER_SEND_SERVER_FINAL;
	return true;
}

bool
scram_server_build_server_final(ScramServer *s, char *out, size_t outsize, size_t *outlen, char *err, size_t errlen)
{
	uint8_t signature[SCRAM_KEY_LEN];
	MsgBuf b;

	if (!server_step(s, SCRAM_SERVER_SEND_SERVER_FINAL, err, errlen))
		return false;
	if (!hmac_sha256(s->verifier.server_key, SCRAM_KEY_LEN, s->auth_message, s->auth_message_len, signature)) {
		(void) errbuf_fail(err, errlen, "could not compute SCRAM server signature");
		return server_fail(s);
	}
	msgbuf_start(&b, out, outsize);
	msgbuf_append_str(&b, "v=");
	msgbuf_append_base64(&b, signature, SCRAM_KEY_LEN);
	if (!msgbuf_finish(&b, outlen, err, errlen))
		return server_fail(s);
	s->state = SCRAM_SERVER_DONE;
	return true;
}

bool
scram_server_get_client_key(const ScramServer *s, uint8_t out[SCRAM_KEY_LEN])
{
	if (s->state != SCRAM_SERVER_SEND_SERVER_FINAL && s->state != SCRAM_SERVER_DONE)
		return false;
	memcpy(out, s->client_key, SCRAM_KEY_LEN);
	return true;
}

void
scram_server_clear(ScramServer *s)
{
	OPENSSL_cleanse(s, sizeof(*s));
	s->state = SCRAM_SERVER_FAILED;
}

/* --- client side ------------------------------------------------------------ */

static bool
client_step(ScramClient *c, ScramClientState expected, char *err, size_t errlen)
{
	if (c->state == expected)
		return true;
	c->state = SCRAM_CLIENT_FAILED;
	(void) errbuf_fail(err, errlen, "SCRAM exchange step called out of order");
	return false;
}

static bool
client_fail(ScramClient *c)
{
	c->state = SCRAM_CLIENT_FAILED;
	OPENSSL_cleanse(c->password, sizeof(c->password));
	OPENSSL_cleanse(c->client_key, sizeof(c->client_key));
	return false;
}

bool
scram_client_init_password(ScramClient *c, const char *password, char *err, size_t errlen)
{
	size_t len;

	memset(c, 0, sizeof(*c));
	c->state = SCRAM_CLIENT_FAILED;
	if (!check_password(password, &len, err, errlen))
		return false;
	memcpy(c->password, password, len);
	c->password[len] = '\0';
	c->password_len = len;
	c->use_password = true;
	c->gs2_flag = 'n';
	c->state = SCRAM_CLIENT_SEND_CLIENT_FIRST;
	return true;
}

bool
scram_client_init_keys(ScramClient *c, const uint8_t client_key[SCRAM_KEY_LEN], const uint8_t stored_key[SCRAM_KEY_LEN],
		       const uint8_t *server_key, char *err, size_t errlen)
{
	uint8_t computed[SCRAM_KEY_LEN];

	memset(c, 0, sizeof(*c));
	c->state = SCRAM_CLIENT_FAILED;
	if (client_key == NULL || stored_key == NULL) {
		(void) errbuf_fail(err, errlen, "SCRAM pass-through needs ClientKey and StoredKey");
		return false;
	}
	if (!sha256(client_key, SCRAM_KEY_LEN, computed) || CRYPTO_memcmp(computed, stored_key, SCRAM_KEY_LEN) != 0) {
		(void) errbuf_fail(err, errlen, "SCRAM ClientKey does not match StoredKey");
		return false;
	}
	memcpy(c->client_key, client_key, SCRAM_KEY_LEN);
	memcpy(c->stored_key, stored_key, SCRAM_KEY_LEN);
	if (server_key != NULL) {
		memcpy(c->server_key, server_key, SCRAM_KEY_LEN);
		c->have_server_key = true;
	}
	c->gs2_flag = 'n';
	c->state = SCRAM_CLIENT_SEND_CLIENT_FIRST;
	return true;
}

bool
scram_client_set_channel_binding(ScramClient *c, bool server_offers_plus, const uint8_t *cbind, size_t cbind_len,
				 char *err, size_t errlen)
{
	if (!client_step(c, SCRAM_CLIENT_SEND_CLIENT_FIRST, err, errlen))
		return false;
	if (cbind == NULL) {
		/* Without TLS there is nothing to bind to, whatever was offered. */
		c->have_cbind = false;
		c->cbind_len = 0;
		c->gs2_flag = 'n';
		return true;
	}
	if (cbind_len == 0 || cbind_len > SCRAM_MAX_CBIND_LEN) {
		(void) errbuf_fail(err, errlen, "invalid channel binding data length");
		return client_fail(c);
	}
	memcpy(c->cbind, cbind, cbind_len);
	c->cbind_len = cbind_len;
	c->have_cbind = true;
	c->gs2_flag = server_offers_plus ? 'p' : 'y';
	return true;
}

const char *
scram_client_mechanism(const ScramClient *c)
{
	return c->gs2_flag == 'p' ? SCRAM_MECHANISM_PLUS : SCRAM_MECHANISM;
}

bool
scram_client_set_nonce(ScramClient *c, const char *nonce, char *err, size_t errlen)
{
	size_t len;

	if (!client_step(c, SCRAM_CLIENT_SEND_CLIENT_FIRST, err, errlen))
		return false;
	len = nonce ? strnlen(nonce, SCRAM_MAX_NONCE_LEN / 2 + 1) : 0;
	if (len > SCRAM_MAX_NONCE_LEN / 2 || !is_valid_nonce(nonce, len)) {
		(void) errbuf_fail(err, errlen, "invalid SCRAM client nonce");
		return client_fail(c);
	}
	memcpy(c->nonce, nonce, len);
	c->nonce[len] = '\0';
	c->client_nonce_len = len;
	c->nonce_len = len;
	c->fixed_nonce = true;
	return true;
}

static bool
client_build_client_first(ScramClient *c, const char *username, char *out, size_t outsize, size_t *outlen, char *err,
			  size_t errlen)
{
	MsgBuf b;
	size_t hdrlen;

	if (!c->fixed_nonce) {
		if (!random_nonce(c->nonce, sizeof(c->nonce), err, errlen))
			return false;
		c->client_nonce_len = strlen(c->nonce);
		c->nonce_len = c->client_nonce_len;
	}

	msgbuf_start(&b, out, outsize);
	msgbuf_append_str(&b, gs2_header(c->gs2_flag));
	hdrlen = b.len;
	msgbuf_append_str(&b, "n=");
	/* saslname escaping (RFC 5802 section 5.1) */
	for (const char *p = username ? username : ""; *p != '\0'; p++) {
		if (*p == ',')
			msgbuf_append_str(&b, "=2C");
		else if (*p == '=')
			msgbuf_append_str(&b, "=3D");
		else
			msgbuf_append(&b, p, 1);
	}
	msgbuf_append_str(&b, ",r=");
	msgbuf_append(&b, c->nonce, c->nonce_len);
	if (!msgbuf_finish(&b, outlen, err, errlen))
		return false;
	if (b.len > SCRAM_MAX_MESSAGE_LEN) {
		(void) errbuf_fail(err, errlen, "SCRAM client-first-message too long");
		return false;
	}
	c->auth_message_len = 0;
	return auth_message_append(c->auth_message, &c->auth_message_len, b.data + hdrlen, b.len - hdrlen, err, errlen);
}

bool
scram_client_build_client_first(ScramClient *c, const char *username, char *out, size_t outsize, size_t *outlen,
				char *err, size_t errlen)
{
	if (!client_step(c, SCRAM_CLIENT_SEND_CLIENT_FIRST, err, errlen))
		return false;
	if (!client_build_client_first(c, username, out, outsize, outlen, err, errlen))
		return client_fail(c);
	c->state = SCRAM_CLIENT_EXPECT_SERVER_FIRST;
	return true;
}

static bool
client_read_server_first(ScramClient *c, const char *msg, size_t len, char *err, size_t errlen)
{
	Reader r = {msg, msg + len};
	const char *val;
	size_t vlen;
	uint8_t salt[SCRAM_MAX_SALT_LEN];
	size_t salt_len;
	int iterations;

	if (!check_message(msg, len, "server-first-message", err, errlen))
		return false;
	if (*r.p == 'm') {
		(void) errbuf_fail(err, errlen, "server requires an unsupported SCRAM extension");
		return false;
	}

	if (!read_attr(&r, 'r', &val, &vlen, err, errlen))
		return false;
	/* ours must be a proper prefix: the server has to add its own part */
	if (vlen <= c->client_nonce_len || memcmp(val, c->nonce, c->client_nonce_len) != 0) {
		(void) errbuf_fail(err, errlen, "invalid SCRAM response (nonce mismatch)");
		return false;
	}
	if (vlen > SCRAM_MAX_NONCE_LEN || !is_valid_nonce(val, vlen)) {
		(void) errbuf_fail(err, errlen, "malformed SCRAM message (invalid server nonce)");
		return false;
	}
	memcpy(c->nonce, val, vlen);
	c->nonce[vlen] = '\0';
	c->nonce_len = vlen;

	if (!read_comma(&r, err, errlen) || !read_attr(&r, 's', &val, &vlen, err, errlen))
		return false;
	if (!base64_decode(val, vlen, salt, sizeof(salt), &salt_len) || salt_len == 0) {
		(void) errbuf_fail(err, errlen, "malformed SCRAM message (invalid salt)");
		return false;
	}

	if (!read_comma(&r, err, errlen) || !read_attr(&r, 'i', &val, &vlen, err, errlen))
		return false;
	if (!parse_iterations(val, vlen, &iterations)) {
		(void) errbuf_fail(err, errlen, "malformed SCRAM message (invalid iteration count)");
		return false;
	}

	if (!skip_extensions(&r, err, errlen))
		return false;

	/* Pass-through needs no PBKDF2, so only the password path is capped. */
	if (c->use_password) {
		if (iterations > SCRAM_MAX_ITERATIONS) {
			(void) errbuf_fail(err, errlen, "SCRAM iteration count %d from server exceeds the limit of %d",
					   iterations, SCRAM_MAX_ITERATIONS);
			return false;
		}
		if (!derive_keys(c->password, c->password_len, salt, salt_len, iterations, c->client_key, c->stored_key,
				 c->server_key)) {
			(void) errbuf_fail(err, errlen, "could not compute SCRAM keys");
			return false;
		}
		c->have_server_key = true;
		OPENSSL_cleanse(c->password, sizeof(c->password));
	}

	return auth_message_append(c->auth_message, &c->auth_message_len, msg, len, err, errlen);
}

bool
scram_client_read_server_first(ScramClient *c, const char *msg, size_t len, char *err, size_t errlen)
{
	if (!client_step(c, SCRAM_CLIENT_EXPECT_SERVER_FIRST, err, errlen))
		return false;
	if (!client_read_server_first(c, msg, len, err, errlen))
		return client_fail(c);
	c->state = SCRAM_CLIENT_SEND_CLIENT_FINAL;
	return true;
}

static bool
client_build_client_final(ScramClient *c, char *out, size_t outsize, size_t *outlen, char *err, size_t errlen)
{
	uint8_t cbind[CBIND_INPUT_MAX];
	size_t cbind_len;
	uint8_t signature[SCRAM_KEY_LEN];
	uint8_t proof[SCRAM_KEY_LEN];
	MsgBuf b;

	cbind_len = cbind_input(c->gs2_flag, c->cbind, c->cbind_len, cbind);
	msgbuf_start(&b, out, outsize);
	msgbuf_append_str(&b, "c=");
	msgbuf_append_base64(&b, cbind, cbind_len);
	msgbuf_append_str(&b, ",r=");
	msgbuf_append(&b, c->nonce, c->nonce_len);
	if (!msgbuf_finish(&b, NULL, err, errlen) ||
	    !auth_message_append(c->auth_message, &c->auth_message_len, b.data, b.len, err, errlen))
		return false;

	if (!hmac_sha256(c->stored_key, SCRAM_KEY_LEN, c->auth_message, c->auth_message_len, signature)) {
		(void) errbuf_fail(err, errlen, "could not compute SCRAM client signature");
		return false;
	}
	xor_keys(c->client_key, signature, proof);
	msgbuf_append_str(&b, ",p=");
	msgbuf_append_base64(&b, proof, SCRAM_KEY_LEN);
	OPENSSL_cleanse(proof, sizeof(proof));
	OPENSSL_cleanse(signature, sizeof(signature));
	if (!msgbuf_finish(&b, outlen, err, errlen))
		return false;
	/* The ClientKey has done its job; nothing later needs it. */
	OPENSSL_cleanse(c->client_key, sizeof(c->client_key));
	return true;
}

bool
scram_client_build_client_final(ScramClient *c, char *out, size_t outsize, size_t *outlen, char *err, size_t errlen)
{
	if (!client_step(c, SCRAM_CLIENT_SEND_CLIENT_FINAL, err, errlen))
		return false;
	if (!client_build_client_final(c, out, outsize, outlen, err, errlen))
		return client_fail(c);
	c->state = SCRAM_CLIENT_EXPECT_SERVER_FINAL;
	return true;
}

/* Copy printable ASCII of an untrusted string, replacing the rest. */
static void
sanitize(const char *s, size_t len, char *out, size_t outsize)
{
	size_t o = 0;

	for (size_t i = 0; i < len && o + 1 < outsize; i++) {
		unsigned char ch = (unsigned char) s[i];

		out[o++] = (ch >= 0x20 && ch <= 0x7E) ? (char) ch : '?';
	}
	out[o] = '\0';
}

static bool
client_read_server_final(ScramClient *c, const char *msg, size_t len, char *err, size_t errlen)
{
	Reader r = {msg, msg + len};
	const char *val;
	size_t vlen;
	uint8_t got[SCRAM_KEY_LEN];
	uint8_t want[SCRAM_KEY_LEN];

	if (!check_message(msg, len, "server-final-message", err, errlen))
		return false;

	if (len >= 2 && msg[0] == 'e' && msg[1] == '=') {
		char text[SERVER_ERROR_MAX + 1];

		r.p += 2;
		read_value(&r, &val, &vlen);
		sanitize(val, vlen, text, sizeof(text));
		(void) errbuf_fail(err, errlen, "error received from server in SCRAM exchange: %s", text);
		return false;
	}

	if (!read_attr(&r, 'v', &val, &vlen, err, errlen))
		return false;
	if (!decode_key(val, vlen, got)) {
		(void) errbuf_fail(err, errlen, "malformed SCRAM message (invalid server signature)");
		return false;
	}
	if (!skip_extensions(&r, err, errlen))
		return false;

	c->server_verified = false;
	if (!c->have_server_key)
		return true; /* pass-through without ServerKey: see header */

	if (!hmac_sha256(c->server_key, SCRAM_KEY_LEN, c->auth_message, c->auth_message_len, want)) {
		(void) errbuf_fail(err, errlen, "could not compute SCRAM server signature");
		return false;
	}
	if (CRYPTO_memcmp(got, want, SCRAM_KEY_LEN) != 0) {
		(void) errbuf_fail(err, errlen, "incorrect server signature");
		return false;
	}
	c->server_verified = true;
	return true;
}

bool
scram_client_read_server_final(ScramClient *c, const char *msg, size_t len, char *err, size_t errlen)
{
	if (!client_step(c, SCRAM_CLIENT_EXPECT_SERVER_FINAL, err, errlen))
		return false;
	if (!client_read_server_final(c, msg, len, err, errlen))
		return client_fail(c);
	c->state = SCRAM_CLIENT_DONE;
	return true;
}

bool
scram_client_server_verified(const ScramClient *c)
{
	return c->state == SCRAM_CLIENT_DONE && c->server_verified;
}

void
scram_client_clear(ScramClient *c)
{
	OPENSSL_cleanse(c, sizeof(*c));
	c->state = SCRAM_CLIENT_FAILED;
}
