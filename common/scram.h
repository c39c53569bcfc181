/*
 * SCRAM-SHA-256 (RFC 5802, RFC 7677) as PostgreSQL speaks it, for both
 * roles the proxy plays: the server side authenticates an application
 * connecting to the proxy, the client side logs the proxy in to a
 * PostgreSQL server.  No sockets and no logging: callers feed the bytes of
 * SASLInitialResponse/SASLResponse/AuthenticationSASLContinue/Final in and
 * get the next message out; errors come back as a short message in a
 * caller-provided buffer (PostgreSQL message style, never echoing untrusted
 * bytes).
 *
 * PostgreSQL specifics followed here:
 *  - the user name in client-first-message is ignored (the startup packet's
 *    user is the one that counts); we send "n=" like libpq does;
 *  - authorization identities ("a=") and mandatory extensions ("m=") are
 *    rejected;
 *  - channel binding: gs2 header "n,,", "y,," or "p=tls-server-end-point,,".
 *    The caller supplies the tls-server-end-point hash of the server
 *    certificate (see scram_tls_server_end_point()), or nothing when the
 *    connection has no TLS;
 *  - SASLprep is NOT applied: passwords are hashed as their raw bytes.
 *    For ASCII passwords that is exactly what SASLprep produces.  For
 *    non-ASCII ones PostgreSQL normalizes (NFKC, maps non-ASCII spaces,
 *    drops zero-width characters) when the password is valid UTF-8; the
 *    result only agrees with ours when the password is already in that
 *    normalized form.  PostgreSQL itself falls back to raw bytes when
 *    SASLprep fails, so raw bytes are never wrong for non-UTF-8 passwords.
 *
 * Pass-through: once the server side has verified a client, it can hand
 * out the ClientKey the client proved it knows (scram_server_get_client_key).
 * The client side can then log in to a PostgreSQL server that stores the
 * same verifier with only ClientKey and StoredKey (scram_client_init_keys),
 * never seeing the password.  Without the ServerKey it cannot check the
 * server's signature; pass ServerKey (it is in the verifier) whenever
 * available.
 *
 * Typical server-side sequence:
 *   scram_server_init(&s, &verifier) or scram_server_init_mock(...)
 *   [scram_server_set_channel_binding(...)]
 *   scram_server_read_client_first -> scram_server_build_server_first
 *   scram_server_read_client_final -> scram_server_verify_proof
 *   -> scram_server_build_server_final [-> scram_server_get_client_key]
 *   scram_server_clear
 * Client side:
 *   scram_client_init_password or scram_client_init_keys
 *   [scram_client_set_channel_binding(...), scram_client_mechanism()]
 *   scram_client_build_client_first -> scram_client_read_server_first
 *   -> scram_client_build_client_final -> scram_client_read_server_final
 *   scram_client_clear
 * Any failure leaves the state failed; later steps refuse to run.
 */
#ifndef PGHANDOFF_COMMON_SCRAM_H
#define PGHANDOFF_COMMON_SCRAM_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <openssl/types.h> /* X509, for scram_tls_server_end_point */

#define SCRAM_MECHANISM "SCRAM-SHA-256"
#define SCRAM_MECHANISM_PLUS "SCRAM-SHA-256-PLUS"
#define SCRAM_CBIND_TYPE "tls-server-end-point"

#define SCRAM_KEY_LEN 32              /* SHA-256 output */
#define SCRAM_DEFAULT_ITERATIONS 4096 /* PostgreSQL's default */
#define SCRAM_DEFAULT_SALT_LEN 16     /* PostgreSQL's salt length */
#define SCRAM_MAX_SALT_LEN 64
#define SCRAM_RAW_NONCE_LEN 18 /* random bytes per nonce half */

/*
 * Bounds on untrusted input.  A SCRAM message from PostgreSQL or libpq is
 * around 100 bytes; 1024 leaves room for long nonces and extensions.  The
 * combined nonce must fit in SCRAM_MAX_NONCE_LEN characters.
 */
#define SCRAM_MAX_MESSAGE_LEN 1024
#define SCRAM_MAX_NONCE_LEN 256
#define SCRAM_MAX_PASSWORD_LEN 1024

/*
 * Highest iteration count we run PBKDF2 for on a server's say-so.  A
 * hostile server could otherwise make the proxy burn CPU.  PostgreSQL's
 * default is 4096; ten million takes a few seconds.
 */
#define SCRAM_MAX_ITERATIONS 10000000

/* tls-server-end-point data is a certificate hash: EVP_MAX_MD_SIZE. */
#define SCRAM_MAX_CBIND_LEN 64

/* Buffer size enough for any verifier scram_verifier_format() writes. */
#define SCRAM_VERIFIER_BUF_SIZE 256

/* Output buffers of size SCRAM_MAX_MESSAGE_LEN + 1 always suffice. */
#define SCRAM_MESSAGE_BUF_SIZE (SCRAM_MAX_MESSAGE_LEN + 1)

/* AuthMessage = client-first-bare "," server-first "," client-final-w/o-proof */
#define SCRAM_MAX_AUTH_MESSAGE_LEN (3 * SCRAM_MAX_MESSAGE_LEN + 2)

/* A parsed PostgreSQL SCRAM-SHA-256 verifier (pg_authid.rolpassword). */
typedef struct ScramVerifier {
	int iterations;
	size_t salt_len;
	uint8_t salt[SCRAM_MAX_SALT_LEN];
	uint8_t stored_key[SCRAM_KEY_LEN];
	uint8_t server_key[SCRAM_KEY_LEN];
} ScramVerifier;

/*
 * Server-side exchange state.  The struct is public only so callers can
 * embed it; touch it through the functions below.
 */
typedef enum ScramServerState {
	SCRAM_SERVER_EXPECT_CLIENT_FIRST, /* after init */
	SCRAM_SERVER_SEND_SERVER_FIRST,   /* client-first parsed */
	SCRAM_SERVER_EXPECT_CLIENT_FINAL, /* server-first built */
	SCRAM_SERVER_VERIFY_PROOF,        /* client-final parsed */
	SCRAM_SERVER_SEND_SERVER_FINAL,   /* proof verified */
	SCRAM_SERVER_DONE,                /* server-final built; ClientKey available */
	SCRAM_SERVER_FAILED               /* any error; sticky */
} ScramServerState;

typedef struct ScramServer {
	ScramServerState state;
	bool doomed;        /* mock exchange: the proof check fails */
	bool plus_selected; /* client chose SCRAM-SHA-256-PLUS */
	bool have_cbind;    /* connection has channel binding data */
	bool fixed_nonce;   /* scram_server_set_nonce() was called */
	char gs2_flag;      /* 'n', 'y' or 'p' from client-first */
	size_t cbind_len;
	uint8_t cbind[SCRAM_MAX_CBIND_LEN];
	ScramVerifier verifier;
	size_t client_nonce_len; /* prefix of nonce[] sent by the client */
	size_t nonce_len;
	char nonce[SCRAM_MAX_NONCE_LEN + 1];
	char server_nonce[SCRAM_MAX_NONCE_LEN + 1]; /* set_nonce only */
	size_t auth_message_len;
	char auth_message[SCRAM_MAX_AUTH_MESSAGE_LEN + 1];
	uint8_t client_proof[SCRAM_KEY_LEN];
	uint8_t client_key[SCRAM_KEY_LEN];
} ScramServer;

typedef enum ScramClientState {
	SCRAM_CLIENT_SEND_CLIENT_FIRST,   /* after init */
	SCRAM_CLIENT_EXPECT_SERVER_FIRST, /* client-first built */
	SCRAM_CLIENT_SEND_CLIENT_FINAL,   /* server-first parsed, keys derived */
	SCRAM_CLIENT_EXPECT_SERVER_FINAL, /* client-final built */
	SCRAM_CLIENT_DONE,                /* server-final accepted */
	SCRAM_CLIENT_FAILED               /* any error; sticky */
} ScramClientState;

typedef struct ScramClient {
	ScramClientState state;
	bool use_password; /* else pass-through keys */
	bool have_server_key;
	bool server_verified; /* server-final "v=" was checked */
	bool have_cbind;
	bool fixed_nonce;
	char gs2_flag; /* 'n', 'y' or 'p' */
	size_t cbind_len;
	uint8_t cbind[SCRAM_MAX_CBIND_LEN];
	size_t password_len;
	char password[SCRAM_MAX_PASSWORD_LEN + 1];
	uint8_t client_key[SCRAM_KEY_LEN];
	uint8_t stored_key[SCRAM_KEY_LEN];
	uint8_t server_key[SCRAM_KEY_LEN];
	size_t client_nonce_len;
	size_t nonce_len;
	char nonce[SCRAM_MAX_NONCE_LEN + 1];
	size_t auth_message_len;
	char auth_message[SCRAM_MAX_AUTH_MESSAGE_LEN + 1];
} ScramClient;

/* --- verifiers ------------------------------------------------------- */

/* True if text starts like a SCRAM-SHA-256 verifier (parse it to be sure). */
bool scram_verifier_looks_like(const char *text);

/* Parse "SCRAM-SHA-256$<iter>:<salt>$<StoredKey>:<ServerKey>". */
bool scram_verifier_parse(ScramVerifier *v, const char *text, char *err, size_t errlen)
	__attribute__((warn_unused_result));

/*
 * Derive a verifier from a plaintext password.  salt NULL means a fresh
 * random salt of SCRAM_DEFAULT_SALT_LEN bytes; iterations 0 means
 * SCRAM_DEFAULT_ITERATIONS.  See the SASLprep note at the top.
 */
bool scram_verifier_build(ScramVerifier *v, const char *password, const uint8_t *salt, size_t salt_len, int iterations,
			  char *err, size_t errlen) __attribute__((warn_unused_result));

/* Write v as PostgreSQL's text form; outsize >= SCRAM_VERIFIER_BUF_SIZE. */
bool scram_verifier_format(const ScramVerifier *v, char *out, size_t outsize, char *err, size_t errlen)
	__attribute__((warn_unused_result));

/*
 * Check a plaintext password against a verifier (for clients that send
 * a cleartext PasswordMessage).  False with err set if it does not match.
 */
bool scram_verifier_check_password(const ScramVerifier *v, const char *password, char *err, size_t errlen)
	__attribute__((warn_unused_result));

/* --- channel binding --------------------------------------------------- */

/*
 * tls-server-end-point data (RFC 5929) of a server certificate: its hash
 * with the certificate's signature digest, SHA-256 if that is MD5 or SHA-1.
 * out must hold SCRAM_MAX_CBIND_LEN bytes.
 */
bool scram_tls_server_end_point(X509 *cert, uint8_t *out, size_t *outlen, char *err, size_t errlen)
	__attribute__((warn_unused_result));

/* --- server side (proxy authenticates an application) ------------------ */

bool scram_server_init(ScramServer *s, const ScramVerifier *v, char *err, size_t errlen)
	__attribute__((warn_unused_result));

/*
 * The salt shown for a user without a SCRAM verifier: a keyed hash of the
 * name with secret (random, made at the proxy's start), so that repeated
 * attempts see the same salt, as they would for a real user, and no one
 * without the secret can compute it and so tell the name is unknown (like
 * PostgreSQL's scram_mock_salt).  Verifiers built from plaintext passwords
 * take their salt from here too.  False only if secret is missing or the
 * hash fails.
 */
bool scram_mock_salt(const char *username, const uint8_t *secret, size_t secret_len,
		     uint8_t out[SCRAM_DEFAULT_SALT_LEN]) __attribute__((warn_unused_result));

/*
 * Start an exchange that will fail at the proof check, for a user that does
 * not exist or has no SCRAM verifier, so the client cannot tell: the salt
 * from scram_mock_salt(), SCRAM_DEFAULT_ITERATIONS, and the same work as a
 * real exchange (no key derivation on either: the server side only hashes).
 */
bool scram_server_init_mock(ScramServer *s, const char *username, const uint8_t *secret, size_t secret_len, char *err,
			    size_t errlen) __attribute__((warn_unused_result));

/*
 * How many PBKDF2 derivations this process has run (both roles, all
 * threads).  Only scram_verifier_build, scram_verifier_check_password and
 * the password client derive; the server-side exchange never does, which is
 * what keeps a login of a listed user and of an unknown one equally cheap.
 * The unit tests count with it.
 */
uint64_t scram_key_derivations(void);

/*
 * Call before reading client-first when the connection uses TLS or the
 * client chose SCRAM-SHA-256-PLUS.  cbind is the tls-server-end-point hash
 * of the certificate we present, or NULL without TLS.
 */
bool scram_server_set_channel_binding(ScramServer *s, bool plus_selected, const uint8_t *cbind, size_t cbind_len,
				      char *err, size_t errlen) __attribute__((warn_unused_result));

/* Fix the server nonce half instead of a random one; for test vectors. */
bool scram_server_set_nonce(ScramServer *s, const char *nonce, char *err, size_t errlen)
	__attribute__((warn_unused_result));

bool scram_server_read_client_first(ScramServer *s, const char *msg, size_t len, char *err, size_t errlen)
	__attribute__((warn_unused_result));

/* out gets a NUL-terminated message; *outlen excludes the NUL. */
bool scram_server_build_server_first(ScramServer *s, char *out, size_t outsize, size_t *outlen, char *err,
				     size_t errlen) __attribute__((warn_unused_result));

/* Parse client-final and check channel binding and nonce (protocol errors). */
bool scram_server_read_client_final(ScramServer *s, const char *msg, size_t len, char *err, size_t errlen)
	__attribute__((warn_unused_result));

/* Check ClientProof; false means wrong password (or a mock exchange). */
bool scram_server_verify_proof(ScramServer *s, char *err, size_t errlen) __attribute__((warn_unused_result));

bool scram_server_build_server_final(ScramServer *s, char *out, size_t outsize, size_t *outlen, char *err,
				     size_t errlen) __attribute__((warn_unused_result));

/* The ClientKey the client proved; only after a successful verification. */
bool scram_server_get_client_key(const ScramServer *s, uint8_t out[SCRAM_KEY_LEN]) __attribute__((warn_unused_result));

/* Wipe keys and proofs. */
void scram_server_clear(ScramServer *s);

/* --- client side (proxy logs in to PostgreSQL) ------------------------- */

bool scram_client_init_password(ScramClient *c, const char *password, char *err, size_t errlen)
	__attribute__((warn_unused_result));

/*
 * Pass-through: prove knowledge of client_key.  stored_key must equal
 * SHA-256(client_key) (checked).  server_key may be NULL; then the server's
 * signature cannot be verified and scram_client_server_verified() stays
 * false after a successful exchange.
 */
bool scram_client_init_keys(ScramClient *c, const uint8_t client_key[SCRAM_KEY_LEN],
			    const uint8_t stored_key[SCRAM_KEY_LEN], const uint8_t *server_key, char *err,
			    size_t errlen) __attribute__((warn_unused_result));

/*
 * Call before building client-first when the connection uses TLS.
 * server_offers_plus: AuthenticationSASL listed SCRAM-SHA-256-PLUS.  cbind:
 * tls-server-end-point hash of the server's certificate, NULL without TLS.
 * With both we bind ("p="); with cbind only we send "y" so a server that
 * does support binding detects the downgrade.
 */
bool scram_client_set_channel_binding(ScramClient *c, bool server_offers_plus, const uint8_t *cbind, size_t cbind_len,
				      char *err, size_t errlen) __attribute__((warn_unused_result));

/* Mechanism name to put in SASLInitialResponse. */
const char *scram_client_mechanism(const ScramClient *c);

/* Fix the client nonce instead of a random one; for test vectors. */
bool scram_client_set_nonce(ScramClient *c, const char *nonce, char *err, size_t errlen)
	__attribute__((warn_unused_result));

/* username NULL or "" sends "n=" like libpq (PostgreSQL ignores it). */
bool scram_client_build_client_first(ScramClient *c, const char *username, char *out, size_t outsize, size_t *outlen,
				     char *err, size_t errlen) __attribute__((warn_unused_result));

bool scram_client_read_server_first(ScramClient *c, const char *msg, size_t len, char *err, size_t errlen)
	__attribute__((warn_unused_result));

bool scram_client_build_client_final(ScramClient *c, char *out, size_t outsize, size_t *outlen, char *err,
				     size_t errlen) __attribute__((warn_unused_result));

/* Rejects "e=" with the server's (sanitized) error text in err. */
bool scram_client_read_server_final(ScramClient *c, const char *msg, size_t len, char *err, size_t errlen)
	__attribute__((warn_unused_result));

/* True once server-final's signature was checked against ServerKey. */
bool scram_client_server_verified(const ScramClient *c);

void scram_client_clear(ScramClient *c);

#endif /* PGHANDOFF_COMMON_SCRAM_H */
