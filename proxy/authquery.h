/*
 * auth_query: the secret of a client the auth file does not list, looked up
 * on the cluster clients are served by (the source, the target after a
 * cutover), as PgBouncer's auth_query and auth_user do.
 *
 * The lookup is a libpq connection as auth_user driven by the proxy's loop
 * (never blocking it), bounded by a deadline; what it finds is cached for
 * auth_query_cache, per cluster, database and user.  The client keeps its
 * own copy (Client.auth_secret), which its server logins use exactly as an
 * entry of the auth file: SCRAM pass-through works the same.
 */
#ifndef PGHANDOFF_PROXY_AUTHQUERY_H
#define PGHANDOFF_PROXY_AUTHQUERY_H

#include <stdbool.h>

#include "proxy/objects.h"
#include "proxy/userlist.h"

/* What a lookup found for one client. */
struct AuthSecret {
	bool found;      /* false: entry is empty, and the login can only fail */
	bool cached;     /* taken from the cache: a login that fails with it looks again (client.c) */
	UserEntry entry; /* name, secret, kind, verifier: as a line of the auth file */
	char why[256];   /* !found: why not (no such role, the cluster's error), for the one log line */
};

/* Whether client's secret comes from auth_query: auth_user is set and the auth file does not list it. */
bool authquery_wanted(const Client *client);

/*
 * Starts finding client's secret.  From the cache (unless fresh), at once:
 * client->auth_secret is set and *pending is false.  Otherwise a lookup
 * starts, *pending is true, and client->looked_up(client) is called from the
 * loop once it has answered: client->auth_secret is then set (found or not;
 * a lookup that fails is a secret not found), or NULL when memory ran out.
 * False (nothing started) only when memory ran out.
 */
bool authquery_start(Client *client, bool fresh, bool *pending) __attribute__((warn_unused_result));
/* The secret client logs in with: auth_query's when it looked, else the auth file's entry (or NULL). */
const UserEntry *authquery_entry(const Client *client);
/* Stops client's lookup, if one runs (client_disconnect). */
void authquery_cancel(Client *client);
/* A login failed with the cached secret of client: the next one asks the cluster again. */
void authquery_forget(const Client *client);
/* Empties the cache (a reload may change auth_user, auth_query or the clusters). */
void authquery_cache_clear(void);
void authsecret_free(AuthSecret *secret);

#endif
