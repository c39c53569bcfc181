/*
 * auth_query lookups (authquery.h): one libpq connection per lookup, as
 * auth_user to the client's database on the cluster clients are served by,
 * driven by ev_io on its socket through PQconnectPoll, PQsendQueryParams,
 * PQflush and PQconsumeInput, so a slow or hung cluster holds only the
 * clients waiting for it, each until its deadline.
 *
 * A lookup ends in one place (lookup_finish): its watchers stop, the
 * connection closes, it is unhooked from its client and freed, and only then
 * is the client told, so whatever the client does next (even tearing itself
 * down) never meets a half-finished lookup.
 *
 * The cache is the proxy's one (a process serves one proxy): entries by
 * cluster, database and user, kept auth_query_cache, at most
 * AUTH_CACHE_MAX of them.  A role that does not exist is cached too, so an
 * unknown user costs what a known one does; a lookup that failed (cluster
 * down, query broken) is not, so a cluster back up serves the next login.
 */
#include "proxy/authquery.h"
#include "common/log.h"

#include <arpa/inet.h>
#include <libpq-fe.h>
#include <openssl/crypto.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define AUTH_CACHE_MAX 4096
#define LOOKUP_APPLICATION_NAME "pghandoff auth_query"

struct AuthLookup {
	Client *client;
	PGconn *conn;
	ev_io io;
	ev_timer deadline;
	bool connected; /* past PQconnectPoll: the query is sent or being sent */
	bool flushing;  /* the query is not all sent yet */
	const char *role;
	char dbname[64];
	AuthSecret result; /* filled as the answer comes */
	bool answered;     /* result holds the cluster's answer: cacheable */
};

typedef struct CacheEntry {
	const char *role; /* "source" or "target": Cluster.role, a string literal */
	char dbname[64];
	ev_tstamp expires;
	AuthSecret secret;
} CacheEntry;

static CacheEntry *cache;
static int ncache;

static void lookup_finish(AuthLookup *lookup, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

void
authsecret_free(AuthSecret *secret)
{
	if (!secret)
		return;
	userlist_entry_clear(&secret->entry);
	free(secret);
}

/* A deep copy: the client's own, which neither the cache nor a reload frees under its server logins. */
static AuthSecret *
secret_copy(const AuthSecret *from)
{
	AuthSecret *to = calloc(1, sizeof(AuthSecret));

	if (!to)
		return NULL;
	to->found = from->found;
	memcpy(to->why, from->why, sizeof(to->why));
	if (from->found) {
		to->entry.kind = from->entry.kind;
		to->entry.verifier = from->entry.verifier;
		to->entry.name = strdup(from->entry.name);
		to->entry.secret = strdup(from->entry.secret);
		if (!to->entry.name || !to->entry.secret) {
			authsecret_free(to);
			return NULL;
		}
	}
	return to;
}

static void
cache_entry_clear(CacheEntry *e)
{
	userlist_entry_clear(&e->secret.entry);
	OPENSSL_cleanse(e, sizeof(*e));
}

void
authquery_cache_clear(void)
{
	int i;

	for (i = 0; i < ncache; i++)
		cache_entry_clear(&cache[i]);
	free(cache);
	cache = NULL;
	ncache = 0;
}

static int
cache_find(const char *role, const char *dbname, const char *user)
{
	int i;

	for (i = 0; i < ncache; i++)
		if (cache[i].role == role && strcmp(cache[i].dbname, dbname) == 0 &&
		    strcmp(cache[i].secret.entry.name, user) == 0)
			return i;
	return -1;
}

static void
cache_remove(int i)
{
	cache_entry_clear(&cache[i]);
	if (i != ncache - 1)
		cache[i] = cache[ncache - 1];
	ncache--;
}

/* Keeps what a lookup found; a full cache first drops what expired, then the entry closest to expiring. */
static void
cache_put(const char *role, const char *dbname, const AuthSecret *secret, ev_tstamp now, ev_tstamp ttl)
{
	CacheEntry *e;
	int i, old;

	if (ttl <= 0)
		return;
	old = cache_find(role, dbname, secret->entry.name);
	if (old >= 0)
		cache_remove(old);
	for (i = ncache - 1; i >= 0; i--)
		if (cache[i].expires <= now)
			cache_remove(i);
	if (ncache == AUTH_CACHE_MAX) {
		old = 0;
		for (i = 1; i < ncache; i++)
			if (cache[i].expires < cache[old].expires)
				old = i;
		cache_remove(old);
	}
	if (!cache) {
		cache = calloc(AUTH_CACHE_MAX, sizeof(CacheEntry));
		if (!cache)
			return; /* no cache: every login asks */
	}
	e = &cache[ncache];
	memset(e, 0, sizeof(*e));
	e->role = role;
	snprintf(e->dbname, sizeof(e->dbname), "%s", dbname);
	e->expires = now + ttl;
	e->secret = *secret;
	e->secret.cached = true;
	e->secret.entry.name = strdup(secret->entry.name);
	e->secret.entry.secret = secret->entry.secret ? strdup(secret->entry.secret) : NULL;
	if (!e->secret.entry.name || (secret->entry.secret && !e->secret.entry.secret)) {
		cache_entry_clear(e);
		return;
	}
	ncache++;
}

static const char *
lookup_dbname(const Client *client)
{
	const Proxy *proxy = client->proxy;

	return proxy->serving == &proxy->target ? client->db->target_name : client->db->name;
}

const UserEntry *
authquery_entry(const Client *client)
{
	if (client->auth_secret)
		return client->auth_secret->found ? &client->auth_secret->entry : NULL;
	return userlist_find(client->proxy->users, client->user);
}

bool
authquery_wanted(const Client *client)
{
	const Proxy *proxy = client->proxy;

	return proxy->config.proxy.auth_user[0] != '\0' && !client->is_admin && client->db &&
		(proxy->config.proxy.auth_type == AUTH_MD5 || proxy->config.proxy.auth_type == AUTH_SCRAM_SHA_256) &&
		userlist_find(proxy->users, client->user) == NULL;
}

void
authquery_forget(const Client *client)
{
	const Proxy *proxy = client->proxy;
	int i;

	if (!client->db)
		return;
	i = cache_find(proxy->serving->role, lookup_dbname(client), client->user);
	if (i >= 0)
		cache_remove(i);
}

/* Watches the lookup's socket for what libpq waits for; it may be another socket after each poll. */
static void
lookup_watch(AuthLookup *lookup, int events)
{
	struct ev_loop *loop = lookup->client->proxy->loop;

	ev_io_stop(loop, &lookup->io);
	ev_io_set(&lookup->io, PQsocket(lookup->conn), events);
	ev_io_start(loop, &lookup->io);
}

/* libpq's message, on one line, for the log. */
static const char *
conn_error(const PGconn *conn, char *buf, size_t len)
{
	const char *msg = conn ? PQerrorMessage(conn) : "out of memory";

	snprintf(buf, len, "%.*s", (int) strcspn(msg, "\n"), msg);
	return buf;
}

/* The lookup's answer: the first row's second column (PgBouncer's: name, secret). */
static void
lookup_take_result(AuthLookup *lookup, PGresult *res)
{
	AuthSecret *r = &lookup->result;
	Client *client = lookup->client;
	char err[256];

	if (lookup->answered || r->why[0])
		return; /* only the first result counts */
	if (PQresultStatus(res) != PGRES_TUPLES_OK) {
		snprintf(r->why, sizeof(r->why), "auth_query failed on the %s: %.*s", lookup->role,
			 (int) strcspn(PQresultErrorMessage(res), "\n"), PQresultErrorMessage(res));
		return;
	}
	if (PQnfields(res) < 2) {
		snprintf(r->why, sizeof(r->why), "auth_query must answer two columns (user, secret), it answered %d",
			 PQnfields(res));
		return;
	}
	lookup->answered = true;
	if (PQntuples(res) == 0 || PQgetisnull(res, 0, 1) || PQgetvalue(res, 0, 1)[0] == '\0') {
		/* The same as an unknown user: cached, and the login fails like a wrong password. */
		snprintf(r->why, sizeof(r->why), "auth_query on the %s found no password for this user", lookup->role);
		r->entry.name = strdup(client->user);
		if (!r->entry.name)
			lookup->answered = false;
		return;
	}
	if (!userlist_entry_init(&r->entry, client->user, PQgetvalue(res, 0, 1), err, sizeof(err))) {
		lookup->answered = false;
		snprintf(r->why, sizeof(r->why), "auth_query on the %s: %.200s", lookup->role, err);
		return;
	}
	/* A plaintext secret (a table of the DBA's own): a SCRAM login needs its verifier, made once here. */
	if (client->proxy->config.proxy.auth_type == AUTH_SCRAM_SHA_256)
		userlist_entry_prepare_scram(&r->entry);
	r->found = true;
}

/*
 * The one way a lookup ends: with fmt, a failure (the secret not found, and
 * why); without, the answer in lookup->result.  The client hears last.
 */
static void
lookup_finish(AuthLookup *lookup, const char *fmt, ...)
{
	Client *client = lookup->client;
	Proxy *proxy = client->proxy;
	AuthSecret *r = &lookup->result;

	ev_io_stop(proxy->loop, &lookup->io);
	ev_timer_stop(proxy->loop, &lookup->deadline);
	PQfinish(lookup->conn);
	lookup->conn = NULL;
	if (fmt) {
		va_list ap;

		va_start(ap, fmt);
		vsnprintf(r->why, sizeof(r->why), fmt, ap);
		va_end(ap);
		lookup->answered = false;
		userlist_entry_clear(&r->entry);
		r->found = false;
	}
	if (!r->found && !r->why[0])
		snprintf(r->why, sizeof(r->why), "auth_query on the %s answered nothing", lookup->role);
	if (lookup->answered) {
		if (!r->entry.name)
			r->entry.name = strdup(client->user);
		if (r->entry.name)
			cache_put(lookup->role, lookup->dbname, r, ev_now(proxy->loop),
				  (ev_tstamp) proxy->config.proxy.auth_query_cache / 1e6);
	}
	authsecret_free(client->auth_secret);
	client->auth_secret = secret_copy(r);
	userlist_entry_clear(&r->entry);
	client->lookup = NULL;
	free(lookup);
	/* Why a lookup failed is logged once, with the login's failure (client.c). */
	if (client->auth_secret)
		log_debug(client->subject, "auth_query: %s", client->auth_secret->found ? "found" : "not found");
	client->looked_up(client);
}

static void
lookup_send(AuthLookup *lookup)
{
	const Proxy *proxy = lookup->client->proxy;
	const char *params[1] = {lookup->client->user};
	char err[256];
	int r;

	lookup->connected = true;
	if (PQsetnonblocking(lookup->conn, 1) != 0 ||
	    PQsendQueryParams(lookup->conn, proxy->config.proxy.auth_query, 1, NULL, params, NULL, NULL, 0) != 1) {
		lookup_finish(lookup, "auth_query could not be sent to the %s: %s", lookup->role,
			      conn_error(lookup->conn, err, sizeof(err)));
		return;
	}
	r = PQflush(lookup->conn);
	if (r < 0) {
		lookup_finish(lookup, "auth_query could not be sent to the %s: %s", lookup->role,
			      conn_error(lookup->conn, err, sizeof(err)));
		return;
	}
	lookup->flushing = r == 1;
	lookup_watch(lookup, EV_READ | (lookup->flushing ? EV_WRITE : 0));
}

static void
lookup_on_io(struct ev_loop *loop, ev_io *w, int revents)
{
	AuthLookup *lookup = container_of(w, AuthLookup, io);
	char err[256];
	PGresult *res;

	(void) loop;
	if (!lookup->connected) {
		switch (PQconnectPoll(lookup->conn)) {
		case PGRES_POLLING_READING:
			lookup_watch(lookup, EV_READ);
			return;
		case PGRES_POLLING_WRITING:
			lookup_watch(lookup, EV_WRITE);
			return;
		case PGRES_POLLING_OK:
			lookup_send(lookup);
			return;
		default:
			lookup_finish(lookup, "auth_user could not log in to the %s: %s", lookup->role,
				      conn_error(lookup->conn, err, sizeof(err)));
			return;
		}
	}
	if (lookup->flushing && (revents & EV_WRITE)) {
		int r = PQflush(lookup->conn);

		if (r < 0) {
			lookup_finish(lookup, "auth_query could not be sent to the %s: %s", lookup->role,
				      conn_error(lookup->conn, err, sizeof(err)));
			return;
		}
		if (r == 0) {
			lookup->flushing = false;
			lookup_watch(lookup, EV_READ);
		}
	}
	if (!(revents & EV_READ))
		return;
	if (PQconsumeInput(lookup->conn) != 1) {
		lookup_finish(lookup, "the %s closed the auth_query connection: %s", lookup->role,
			      conn_error(lookup->conn, err, sizeof(err)));
		return;
	}
	while (!PQisBusy(lookup->conn)) {
		res = PQgetResult(lookup->conn);
		if (!res) {
			lookup_finish(lookup, NULL);
			return;
		}
		lookup_take_result(lookup, res);
		PQclear(res);
	}
}

static void
lookup_on_deadline(struct ev_loop *loop, ev_timer *w, int revents)
{
	AuthLookup *lookup = container_of(w, AuthLookup, deadline);

	char err[256];

	(void) loop;
	(void) revents;
	if (!lookup->conn || PQstatus(lookup->conn) == CONNECTION_BAD)
		lookup_finish(lookup, "auth_user could not log in to the %s: %s", lookup->role,
			      conn_error(lookup->conn, err, sizeof(err)));
	else
		lookup_finish(lookup, "the %s did not answer auth_query within %.1f s", lookup->role,
			      (double) lookup->client->proxy->config.proxy.client_login_timeout / 2e6);
}

/* The connection's keywords: the cluster's, with auth_user, its password from the auth file, and the address resolved. */
static PGconn *
lookup_connect(AuthLookup *lookup)
{
	Proxy *proxy = lookup->client->proxy;
	const ServerConfig *server = proxy->serving == &proxy->target ? &proxy->config.target : &proxy->config.source;
	const char *auth_user = proxy->config.proxy.auth_user;
	const UserEntry *auth_entry = userlist_find(proxy->users, auth_user);
	const char *keywords[CONFIG_MAX_CONN_PARAMS + 4];
	const char *values[CONFIG_MAX_CONN_PARAMS + 4];
	char hostaddr[INET6_ADDRSTRLEN] = "";
	const struct sockaddr_storage *addr = &proxy->serving->addr;
	const char *password;
	int n;

	/*
	 * libpq resolves a host name inside PQconnectPoll, blocking: the
	 * cluster's address, resolved at start and reload, is given as hostaddr.
	 */
	if (addr->ss_family == AF_INET)
		inet_ntop(AF_INET, &((const struct sockaddr_in *) addr)->sin_addr, hostaddr, sizeof(hostaddr));
	else if (addr->ss_family == AF_INET6)
		inet_ntop(AF_INET6, &((const struct sockaddr_in6 *) addr)->sin6_addr, hostaddr, sizeof(hostaddr));
	if (auth_entry && auth_entry->kind == SECRET_PLAIN)
		password = auth_entry->secret;
	else if (strcmp(auth_user, server->user) == 0)
		password = server->password;
	else
		password = NULL; /* none known: .pgpass, or a pg_hba method that asks for none */
	config_conn_params(server, lookup->dbname, LOOKUP_APPLICATION_NAME, keywords, values);
	for (n = 0; keywords[n]; n++) {
		if (strcmp(keywords[n], "user") == 0)
			values[n] = auth_user;
		else if (strcmp(keywords[n], "password") == 0)
			values[n] = password ? password : "";
	}
	if (hostaddr[0]) {
		keywords[n] = "hostaddr";
		values[n++] = hostaddr;
	}
	keywords[n] = NULL;
	values[n] = NULL;
	/* Expanded as the other connections to the cluster are: the first dbname is the cluster's conninfo. */
	return PQconnectStartParams(keywords, values, 1);
}

bool
authquery_start(Client *client, bool fresh, bool *pending)
{
	Proxy *proxy = client->proxy;
	const char *role = proxy->serving->role;
	const char *dbname = lookup_dbname(client);
	AuthLookup *lookup;
	int i;

	*pending = false;
	i = fresh ? -1 : cache_find(role, dbname, client->user);
	if (i >= 0 && cache[i].expires <= ev_now(proxy->loop)) {
		cache_remove(i);
		i = -1;
	}
	if (i >= 0) {
		authsecret_free(client->auth_secret);
		client->auth_secret = secret_copy(&cache[i].secret);
		if (!client->auth_secret)
			return false;
		client->auth_secret->cached = true;
		return true;
	}
	lookup = calloc(1, sizeof(AuthLookup));
	if (!lookup)
		return false;
	lookup->client = client;
	lookup->role = role;
	snprintf(lookup->dbname, sizeof(lookup->dbname), "%s", dbname);
	client->lookup = lookup;
	*pending = true;
	ev_io_init(&lookup->io, lookup_on_io, -1, 0);
	/* Half the login's time: the refusal reaches the client before client_login_timeout does. */
	ev_timer_init(&lookup->deadline, lookup_on_deadline, (ev_tstamp) proxy->config.proxy.client_login_timeout / 2e6,
		      0.);
	ev_timer_start(proxy->loop, &lookup->deadline);
	lookup->conn = lookup_connect(lookup);
	if (!lookup->conn || PQstatus(lookup->conn) == CONNECTION_BAD) {
		/* Finished from the loop like any other failure, not inside the client's packet callback. */
		ev_timer_stop(proxy->loop, &lookup->deadline);
		ev_timer_set(&lookup->deadline, 0., 0.);
		ev_timer_start(proxy->loop, &lookup->deadline);
		return true;
	}
	log_debug(client->subject, "auth_query on the %s database %s", role, dbname);
	/* PQconnectStart's contract: poll as if PQconnectPoll had last answered PGRES_POLLING_WRITING. */
	lookup_watch(lookup, EV_WRITE);
	return true;
}

void
authquery_cancel(Client *client)
{
	AuthLookup *lookup = client->lookup;

	if (!lookup)
		return;
	ev_io_stop(client->proxy->loop, &lookup->io);
	ev_timer_stop(client->proxy->loop, &lookup->deadline);
	PQfinish(lookup->conn);
	userlist_entry_clear(&lookup->result.entry);
	client->lookup = NULL;
	free(lookup);
}
