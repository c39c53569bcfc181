/*
 * Server connection pools, one per (database, user), as PgBouncer keeps
 * them: a client that leaves gives its server connection back, the reset
 * query (DISCARD ALL) runs on it, and the next login of the same user and
 * database with the same startup parameters takes it instead of starting a
 * backend.  A pool never holds more than its size of connections to the
 * cluster clients are served by; a client that finds it full waits.
 *
 * A pooled connection is reused only by a client whose startup parameters
 * (application_name, options, client_encoding, ...) are the ones it logged
 * in with: after its reset it is exactly what a fresh login of that client
 * would be, which is also what a cutover counts on when it carries a
 * session it has not read.
 */
#ifndef PGHANDOFF_PROXY_POOL_H
#define PGHANDOFF_PROXY_POOL_H

#include <stdbool.h>
#include <stdint.h>

#include "proxy/objects.h"

struct Pool {
	List head; /* on proxy.pools */
	Proxy *proxy;
	Database *db; /* NULL once a reload dropped the database */
	char dbname[64];
	char user[64];
	List waiting;    /* clients waiting for a server connection, oldest first (Client.wait_head) */
	int nservers[2]; /* open server connections (any state) per cluster: [0] source, [1] target */
	/* What a connection opened without a client logs in with: the last client's. */
	bool have_params; /* a client logged in: params says with what */
	char *params;
	uint32_t params_len;
	bool have_client_key;
	uint8_t client_key[32];
	/*
	 * The ParameterStatus messages of a login to each cluster ([0] source, [1]
	 * target): what a client is told at a login answered before its server
	 * connection is there (pool_answer_login).
	 */
	uint8_t *welcome[2];
	uint32_t welcome_len[2];
};

/* The pool of client's database and user (made on first use); false: out of memory, client closed. */
bool pool_connect_client(Client *client) __attribute__((warn_unused_result));
/*
 * A client leaves its server connection: it is reset and kept when it is
 * clean (between transactions, nothing in flight, within server_lifetime,
 * on the cluster clients are served by), closed otherwise.
 */
void pool_release(Server *server, const char *why);
/* A server connection of a pool is ready for a client (logged in without one, or reset). */
void pool_server_idle(Server *server);
/* Clients waiting for a server connection get one where a pool can give it (after a cutover, say). */
void pool_kick_all(Proxy *proxy);
/* The pooled idle connections to cluster (NULL: any) are closed; returns how many. */
int pool_close_idle(Proxy *proxy, const Cluster *cluster, const char *why);
/* The same, a few at a time after a cutover's pause (SV_RETIRING): a cutover left cluster. */
int pool_retire_idle(Proxy *proxy, const Cluster *cluster);
/*
 * Opens idle connections on cluster for every pool, as many as it holds idle
 * on the cluster served now: a cutover warms the pool it switches to.
 * login_read_only(db, user) says what default_transaction_read_only they log in with.
 */
int pool_warm(Proxy *proxy, const Cluster *cluster,
	      const char *(*login_read_only)(void *arg, Database *db, const char *user), void *arg);
/*
 * Transaction mode, a client without a server connection starting a
 * transaction (from its own callback): true when it has one now, linked and
 * ready; false when it waits (a new login, a full pool, its named statements
 * being prepared), its message held until then.
 */
bool pool_txn_acquire(Client *client) __attribute__((warn_unused_result));
/* The loop's prepare hook: server connections whose transaction ended (Server.txn_done) go back to their pools. */
void pool_txn_release(Proxy *proxy);
/* The connection checked for client failed: it gets another, or waits. */
void pool_retry_client(Client *client);
/*
 * Tells client its login is complete (AuthenticationOk, the pool's welcome,
 * BackendKeyData, ReadyForQuery) before it has a server connection, which
 * comes later; false when the pool has no welcome yet (nothing sent).  A
 * login during a cutover's pause is answered so: the client's first query
 * waits like any other, and a client that cannot go on until its login
 * returns (a driver thread that also serves a transaction in flight) does
 * not hold up the drain.
 */
bool pool_answer_login(Client *client);
/* Databases moved (RELOAD): pools and idle connections follow them. */
void pool_repoint(Proxy *proxy);
/* Sets Proxy's pool hooks and starts the janitor: timeouts, lifetimes, min_pool_size, once a second. */
void pool_start(Proxy *proxy);
void pool_stop(Proxy *proxy);
void pool_free_all(Proxy *proxy);

PoolMode pool_mode_of(const Proxy *proxy, const Database *db);
int pool_size_of(const Proxy *proxy, const Database *db);

#endif
