/*
 * The auth file: one `"user" "secret"` per line, where the secret is a
 * plaintext password, an md5 hash ("md5" + 32 hex digits) or a SCRAM-SHA-256
 * verifier, as in PgBouncer's auth_file.  A `""` inside quotes is a quote.
 */
#ifndef PGHANDOFF_PROXY_USERLIST_H
#define PGHANDOFF_PROXY_USERLIST_H

#include <stdbool.h>

#include "common/scram.h"

typedef enum SecretKind {
	SECRET_PLAIN,
	SECRET_MD5,
	SECRET_SCRAM,
} SecretKind;

typedef struct UserEntry {
	char *name;
	char *secret;
	SecretKind kind;
	/*
	 * SECRET_SCRAM: the one in the file.  SECRET_PLAIN: built by
	 * userlist_prepare_scram(); iterations is 0 before that, and for an
	 * empty password, which never logs in.
	 */
	ScramVerifier verifier;
} UserEntry;

typedef struct UserList {
	int n;
	UserEntry *users; /* sorted by name */
} UserList;

/* Errors are logged as FILE:LINE; NULL on any error, so a bad reload keeps the old list. */
UserList *userlist_load(const char *path) __attribute__((warn_unused_result));
/*
 * The key of the mock secrets, kept in path (mode 0600, written at the first
 * start): once per process, before the first login.  A file that cannot be
 * read or written leaves a key of this process only, with a warning.
 */
void userlist_keep_secret(const char *path);
const UserEntry *userlist_find(const UserList *list, const char *name);
/* An entry for secret (its kind found as for a line of the file); err says what is wrong with a bad one. */
bool userlist_entry_init(UserEntry *e, const char *name, const char *secret, char *err, size_t errlen)
	__attribute__((warn_unused_result));
/* Frees and wipes what e holds; e is left empty. */
void userlist_entry_clear(UserEntry *e);
/* userlist_prepare_scram for one entry: a plaintext secret gets its verifier (logged when it cannot). */
void userlist_entry_prepare_scram(UserEntry *e);
void userlist_free(UserList *list);

/*
 * For auth_type = scram-sha-256, at load: a verifier for every plaintext
 * password, salted with scram_mock_salt() of the name, so that a login
 * derives no key on any path and a plaintext user's salt behaves exactly
 * like an unknown user's (the same on every attempt, unguessable).  Costs
 * one PBKDF2 per plaintext password.  A password that makes no verifier
 * (empty, too long) is logged and leaves its user unable to log in; false
 * only when no random secret can be drawn (logged).
 */
bool userlist_prepare_scram(UserList *list) __attribute__((warn_unused_result));

/*
 * Starts the server side of a SCRAM exchange for user: with its verifier,
 * or, for a user not listed or without one (md5 hash, empty password), a
 * mock exchange that fails at the proof check, indistinguishable from
 * the outside.  *mock tells which, for the log.
 */
bool userlist_scram_start(const UserList *list, const char *user, ScramServer *s, bool *mock, char *err, size_t errlen)
	__attribute__((warn_unused_result));
/* The same with the entry already found (NULL: none), from the file or from auth_query. */
bool userlist_scram_start_entry(const UserEntry *e, const char *user, ScramServer *s, bool *mock, char *err,
				size_t errlen) __attribute__((warn_unused_result));

/*
 * Checks an md5 response to salt.  A user not listed, or listed with a SCRAM
 * verifier only, is checked against a secret no client knows, so that every
 * failure does the same hashing and fails the same way; err says why, for
 * the log only.
 */
bool userlist_md5_verify(const UserList *list, const char *user, const uint8_t salt[4], const char *response,
			 size_t response_len, char *err, size_t errlen) __attribute__((warn_unused_result));
bool userlist_md5_verify_entry(const UserEntry *e, const char *user, const uint8_t salt[4], const char *response,
			       size_t response_len, char *err, size_t errlen) __attribute__((warn_unused_result));

#endif
