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
	ScramVerifier verifier;	/* SECRET_SCRAM */
} UserEntry;

typedef struct UserList {
	int n;
	UserEntry *users;	/* sorted by name */
} UserList;

/* Errors are logged as FILE:LINE; NULL on any error, so a bad reload keeps the old list. */
UserList *userlist_load(const char *path) __attribute__((warn_unused_result));
const UserEntry *userlist_find(const UserList *list, const char *name);
void userlist_free(UserList *list);

#endif
