/*
 * Server connection pools: where a client's server connection comes from,
 * and where it goes when the client leaves.
 *
 * A released connection is checked for being clean (the client left
 * between transactions, nothing in flight), reset with server_reset_query as
 * a script of the proxy's own, and parked on proxy.idle_servers.  The next
 * client of its pool with the same startup parameters takes it; one idle
 * longer than server_check_delay runs server_check_query first.  A client
 * finding its pool at its size waits on the pool's queue, in order, until a
 * connection comes back or query_wait_timeout passes; after
 * reserve_pool_timeout it may open one of reserve_pool_size more.
 */
#include "proxy/pool.h"
#include "common/log.h"
#include "proxy/pktbuf.h"
#include "proxy/protocol.h"
#include "proxy/session.h"

#include <openssl/crypto.h>
#include <stdlib.h>
#include <string.h>

#define JANITOR_INTERVAL 1.0

static int
cluster_index(const Proxy *proxy, const Cluster *cluster)
{
	return cluster == &proxy->target ? 1 : 0;
}

static int
setting(int db_value, int proxy_value)
{
	return db_value >= 0 ? db_value : proxy_value;
}

PoolMode
pool_mode_of(const Proxy *proxy, const Database *db)
{
	return database_pool_mode(proxy, db);
}

int
pool_size_of(const Proxy *proxy, const Database *db)
{
	return setting(db ? db->pool_size : -1, proxy->config.proxy.default_pool_size);
}

static int
min_pool_size_of(const Proxy *proxy, const Database *db)
{
	return setting(db ? db->min_pool_size : -1, proxy->config.proxy.min_pool_size);
}

static int
reserve_pool_of(const Proxy *proxy, const Database *db)
{
	return setting(db ? db->reserve_pool : -1, proxy->config.proxy.reserve_pool_size);
}

static int
max_db_connections_of(const Proxy *proxy, const Database *db)
{
	return setting(db ? db->max_db_connections : -1, proxy->config.proxy.max_db_connections);
}

static Pool *
pool_get(Proxy *proxy, Database *db, const char *user)
{
	List *item;
	Pool *pool;

	list_for_each(item, &proxy->pools)
	{
		pool = container_of(item, Pool, head);
		if (pool->db == db && strcmp(pool->user, user) == 0)
			return pool;
	}
	pool = calloc(1, sizeof(Pool));
	if (!pool)
		return NULL;
	pool->proxy = proxy;
	pool->db = db;
	snprintf(pool->dbname, sizeof(pool->dbname), "%s", db->name);
	snprintf(pool->user, sizeof(pool->user), "%s", user);
	list_init(&pool->waiting);
	list_append(&proxy->pools, &pool->head);
	return pool;
}

/* Server connections of db's pools to the cluster served now (max_db_connections counts them all). */
static int
db_servers(const Proxy *proxy, const Database *db)
{
	const List *item;
	int n = 0, c = cluster_index(proxy, proxy->serving);

	list_for_each(item, &proxy->pools)
	{
		const Pool *pool = container_of(item, const Pool, head);

		if (pool->db == db)
			n += pool->nservers[c];
	}
	return n;
}

/* Whether one more connection may open for client (waiting since wait_since, 0: not yet). */
static bool
may_open(Pool *pool, ev_tstamp wait_since)
{
	Proxy *proxy = pool->proxy;
	int limit = pool_size_of(proxy, pool->db);
	int max_db = max_db_connections_of(proxy, pool->db);

	if (wait_since > 0 && ev_now(proxy->loop) - wait_since >= proxy->config.proxy.reserve_pool_timeout / 1e6)
		limit += reserve_pool_of(proxy, pool->db);
	if (pool->nservers[cluster_index(proxy, proxy->serving)] >= limit)
		return false;
	return max_db <= 0 || db_servers(proxy, pool->db) < max_db;
}

static bool
same_params(const Server *server, const Client *client)
{
	return server->params_len == client->params_len &&
		(client->params_len == 0 || memcmp(server->params, client->params, client->params_len) == 0);
}

/* The idle connection of pool on the cluster served now that client may take: the last one parked. */
static Server *
find_idle(Pool *pool, const Client *client, bool any_params)
{
	Proxy *proxy = pool->proxy;
	List *item;
	Server *found = NULL;

	list_for_each(item, &proxy->idle_servers)
	{
		Server *server = container_of(item, Server, head);

		if (server->pool == pool && server->state == SV_IDLE && server->cluster == proxy->serving &&
		    (any_params || same_params(server, client)))
			found = server;
	}
	return found;
}

static void
wait_stop(Client *client)
{
	if (!client->pool_waiting)
		return;
	list_del(&client->wait_head);
	client->pool_waiting = false;
}

/*
 * client takes server, which is logged in and reset: the login completes.
 * A client logged in already (transaction mode) gets it for its next
 * transaction, its named statements first; its message waiting goes on,
 * unless it is the one asking (Client.acquiring), which goes on by itself.
 */
static void
hand_over(Server *server, Client *client)
{
	wait_stop(client);
	server_change_state(server, SV_ACTIVE);
	server->client = client;
	server->txn_done = false; /* a mark left by its last client is not this one's */
	client->server = server;
	log_debug(server->subject, "reused for %s", client->subject);
	if (client->state != CL_ACTIVE) {
		client_server_ready(client);
		return;
	}
	client_link_server(client, server);
	if (!server_take_statements(server, client))
		return; /* closed, and the client with it */
	if (!client->acquiring && !server->script)
		sbuf_continue(&client->sbuf);
}

static void assign(Pool *pool, Client *client);
static void release(Server *server, const char *why, bool reset_it);

static void
check_done(Server *server, Script *script)
{
	Client *client = server->client;

	if (script->failed || server->cluster != server->proxy->serving) {
		/* Its client, if still there, looks again: server_disconnect would close it. */
		if (client) {
			server->client = NULL;
			client->server = NULL;
		}
		if (script->failed)
			server_disconnect(server, NULL, "server_check_query failed: %s", script->error);
		else
			server_disconnect(server, NULL, "its cluster is no longer served");
		if (client && client->state == CL_WAIT_SERVER)
			assign(client->pool, client);
		return;
	}
	server->idle_since = ev_now(server->proxy->loop);
	if (client)
		hand_over(server, client);
	else
		pool_server_idle(server);
}

/* A connection idle past server_check_delay runs server_check_query before client gets it. */
static bool
take_idle(Server *server, Client *client)
{
	Proxy *proxy = server->proxy;
	const char *check = proxy->config.proxy.server_check_query;
	PktBuf pb;

	if (!check[0] || ev_now(proxy->loop) - server->idle_since < proxy->config.proxy.server_check_delay / 1e6) {
		hand_over(server, client);
		return true;
	}
	wait_stop(client);
	server_change_state(server, SV_TESTING);
	server->client = client;
	client->server = server;
	pktbuf_init(&pb);
	pktbuf_write_query(&pb, check);
	if (!script_run(server, &pb, 1, check_done)) {
		server->client = NULL;
		client->server = NULL;
		server_disconnect(server, NULL, "could not run server_check_query");
		return false;
	}
	return true;
}

static bool
open_for(Pool *pool, Client *client)
{
	Proxy *proxy = pool->proxy;
	Server *server;

	wait_stop(client);
	server = server_new(proxy, client, proxy->serving, client->db);
	if (!server) {
		client_disconnect(client, "53200", "out of memory");
		return false;
	}
	client->server = server;
	return server_start(server); /* false: server_start tore both down */
}

/*
 * Gives client a server connection: an idle one, a new one, or a place in
 * the queue.  A full pool whose idle connections all have other startup
 * parameters closes one to make room.
 */
static void
assign(Pool *pool, Client *client)
{
	Proxy *proxy = pool->proxy;
	Server *server;

	if (client->server || (client->state != CL_WAIT_SERVER && client->state != CL_ACTIVE))
		return;
	server = proxy->logins_held ? NULL : find_idle(pool, client, false);
	if (server) {
		(void) take_idle(server, client);
		return;
	}
	if (!proxy->logins_held && !may_open(pool, client->wait_since) &&
	    (server = find_idle(pool, client, true)) != NULL)
		server_disconnect(server, NULL, "closed to make room for other startup parameters");
	if (!proxy->logins_held && may_open(pool, client->pool_waiting ? client->wait_since : 0)) {
		(void) open_for(pool, client);
		return;
	}
	if (!client->pool_waiting) {
		client->pool_waiting = true;
		client->wait_since = ev_now(proxy->loop);
		list_append(&pool->waiting, &client->wait_head);
		log_debug(client->subject, "waits for a server connection: pool %s@%s is full (%d)", pool->user,
			  pool->dbname, pool->nservers[cluster_index(proxy, proxy->serving)]);
	}
}

static void
kick(Pool *pool)
{
	List *item, *tmp;

	list_for_each_safe(item, tmp, &pool->waiting)
	{
		Client *client = container_of(item, Client, wait_head);

		assign(pool, client);
		if (client->pool_waiting)
			break; /* first come, first served */
	}
}

void
pool_retry_client(Client *client)
{
	if (client->pool && (client->state == CL_WAIT_SERVER || client->state == CL_ACTIVE))
		assign(client->pool, client);
}

bool
pool_txn_acquire(Client *client)
{
	client->acquiring = true;
	assign(client->pool, client);
	client->acquiring = false;
	return client->state == CL_ACTIVE && client->server && client->server->state == SV_ACTIVE &&
		!client->server->script;
}

void
pool_txn_release(Proxy *proxy)
{
	List *item, *tmp;

	proxy->txn_release_pending = false;
	list_for_each_safe(item, tmp, &proxy->active_servers)
	{
		Server *server = container_of(item, Server, head);
		Client *client = server->client;

		if (!server->txn_done)
			continue;
		if (!client || server->script || !client_between_transactions(client)) {
			server->txn_done = false; /* a new transaction started on it, or it is not the client's now */
			continue;
		}
		if (!sbuf_is_drained(&server->sbuf) || !sbuf_is_drained(&client->sbuf)) {
			proxy->txn_release_pending = true; /* its last answer is still on its way: next time */
			continue;
		}
		server->txn_done = false;
		if (client->txn_touched && !client->txn_warned) {
			PktBuf pb;

			client->txn_warned = true;
			log_warning(client->subject,
				    "set session state outside a transaction in pool_mode = transaction");
			pktbuf_init(&pb);
			pktbuf_write_notice(
				&pb, "WARNING", "01000",
				"pool_mode = transaction: session state set outside a transaction does not stay "
				"with this connection",
				"SET, LISTEN, PREPARE, advisory locks, WITH HOLD cursors and temporary tables last "
				"only to the end of the transaction; the server connection is reset after it.",
				"Use SET LOCAL inside a transaction, or pool_mode = session for this database.");
			(void) client_send(client, &pb);
		}
		release(server, "transaction done", client->txn_touched);
		client->txn_touched = false;
		kick(client->pool);
	}
}

void
pool_kick_all(Proxy *proxy)
{
	List *item;

	list_for_each(item, &proxy->pools) kick(container_of(item, Pool, head));
}

static void
keep_login(Pool *pool, const Client *client)
{
	char *params;

	if (client->have_client_key) {
		memcpy(pool->client_key, client->client_key, sizeof(pool->client_key));
		pool->have_client_key = true;
	}
	if (pool->have_params && pool->params_len == client->params_len &&
	    (client->params_len == 0 || memcmp(pool->params, client->params, client->params_len) == 0))
		return;
	params = malloc(client->params_len + 1);
	if (!params)
		return;
	memcpy(params, client->params, client->params_len);
	free(pool->params);
	pool->params = params;
	pool->params_len = client->params_len;
	pool->have_params = true;
}

bool
pool_connect_client(Client *client)
{
	Pool *pool = client->pool;

	if (!pool)
		pool = client->pool = pool_get(client->proxy, client->db, client->user);
	if (!pool) {
		client_disconnect(client, "53200", "out of memory");
		return false;
	}
	keep_login(pool, client);
	if (pool_mode_of(client->proxy, client->db) == POOL_TRANSACTION &&
	    (client->login_answered || pool_answer_login(client))) {
		/* Its server connection comes with its first transaction. */
		bool held = client->sbuf.held;

		client->login_answered = false;
		if (client->state != CL_JUSTFREE)
			client_change_state(client, CL_ACTIVE);
		if (held && client->state == CL_ACTIVE)
			sbuf_continue(&client->sbuf); /* it waited (a login held by a cutover): not in its callback */
		return client->state != CL_JUSTFREE;
	}
	if (client->state != CL_WAIT_SERVER)
		client_change_state(client, CL_WAIT_SERVER);
	assign(pool, client);
	return client->state != CL_JUSTFREE;
}

void
pool_server_idle(Server *server)
{
	Proxy *proxy = server->proxy;

	/* A cutover warms the pool of the cluster it goes to before it switches. */
	if (!server->pool || !server->db || (server->cluster != proxy->serving && !proxy->cutover) ||
	    proxy->shutting_down) {
		server_disconnect(server, NULL, "not needed by the pool any more");
		return;
	}
	server_change_state(server, SV_IDLE);
	server->idle_since = ev_now(proxy->loop);
	kick(server->pool);
}

static void
reset_done(Server *server, Script *script)
{
	server->stmts_owner = 0; /* DISCARD ALL dropped every statement */
	server->named_stmts = false;
	if (script->failed) {
		server_disconnect(server, NULL, "server_reset_query failed: %s", script->error);
		return;
	}
	pool_server_idle(server);
}

/* reset: run server_reset_query whatever the pool mode (transaction mode: the client set session state). */
static void
release(Server *server, const char *why, bool reset_it)
{
	Proxy *proxy = server->proxy;
	Client *client = server->client;
	const char *reset = proxy->config.proxy.server_reset_query;
	bool reusable;
	PktBuf pb;

	reusable = server->pool && server->db && client && server->state == SV_ACTIVE && !server->script &&
		server->cluster == proxy->serving && !proxy->shutting_down && client_between_transactions(client) &&
		sbuf_is_drained(&server->sbuf) && sbuf_is_drained(&client->sbuf) && !client->cutover.txn_killed &&
		(proxy->config.proxy.server_lifetime == 0 ||
		 ev_now(proxy->loop) - server->connect_time < proxy->config.proxy.server_lifetime / 1e6);
	if (client) {
		client->server = NULL;
		client->sbuf.peer = NULL;
	}
	server->client = NULL;
	server->sbuf.peer = NULL;
	server->txn_done = false;
	if (!reusable) {
		server_disconnect(server, NULL, "%s", why);
		return;
	}
	if (!reset[0] ||
	    (pool_mode_of(proxy, server->db) == POOL_TRANSACTION && !proxy->config.proxy.server_reset_query_always &&
	     !reset_it)) {
		pool_server_idle(server);
		return;
	}
	server_change_state(server, SV_TESTING);
	pktbuf_init(&pb);
	pktbuf_write_query(&pb, reset);
	if (!script_run(server, &pb, 1, reset_done))
		server_disconnect(server, NULL, "could not run server_reset_query");
}

void
pool_release(Server *server, const char *why)
{
	release(server, why, false);
}

int
pool_retire_idle(Proxy *proxy, const Cluster *cluster)
{
	List *item, *tmp;
	int n = 0;

	list_for_each_safe(item, tmp, &proxy->idle_servers)
	{
		Server *server = container_of(item, Server, head);

		if (server->cluster == cluster && server->state == SV_IDLE) {
			server_change_state(server, SV_RETIRING);
			n++;
		}
	}
	return n;
}

int
pool_close_idle(Proxy *proxy, const Cluster *cluster, const char *why)
{
	List *item, *tmp;
	int n = 0;

	list_for_each_safe(item, tmp, &proxy->idle_servers)
	{
		Server *server = container_of(item, Server, head);

		if (cluster && server->cluster != cluster)
			continue;
		if (server->client) {
			/* Checked for a client: it looks for another. */
			Client *client = server->client;

			server->client = NULL;
			client->server = NULL;
			server_disconnect(server, NULL, "%s", why);
			if (client->state == CL_WAIT_SERVER && client->pool)
				assign(client->pool, client);
		} else {
			server_disconnect(server, NULL, "%s", why);
		}
		n++;
	}
	return n;
}

/* Opens a connection of pool to cluster without a client, logging in with params. */
static bool
open_idle(Pool *pool, const Cluster *cluster, const char *params, uint32_t params_len, const char *login_read_only)
{
	Proxy *proxy = pool->proxy;
	Server *server = server_new(proxy, NULL, cluster, pool->db);

	if (!server)
		return false;
	server->pool = pool;
	snprintf(server->user, sizeof(server->user), "%s", pool->user);
	snprintf(server->subject, sizeof(server->subject), "S-%u %s@%s %s", server->id, pool->user,
		 cluster == &proxy->target ? pool->db->target_name : pool->db->name, cluster->role);
	server->params = malloc(params_len + 1);
	if (!server->params) {
		server_disconnect(server, NULL, "out of memory");
		return false;
	}
	if (params_len)
		memcpy(server->params, params, params_len);
	server->params_len = params_len;
	server->login_read_only = login_read_only;
	pool->nservers[cluster_index(proxy, cluster)]++; /* server_new counts only a client's */
	return server_start(server);
}

int
pool_warm(Proxy *proxy, const Cluster *cluster,
	  const char *(*login_read_only)(void *arg, Database *db, const char *user), void *arg)
{
	List *item;
	int opened = 0;

	/* Each idle connection gets its twin there: the same login, startup parameters included. */
	list_for_each(item, &proxy->idle_servers)
	{
		const Server *server = container_of(item, const Server, head);
		Pool *pool = server->pool;

		if (!pool || !pool->db || server->cluster != proxy->serving || server->state != SV_IDLE)
			continue;
		if (open_idle(pool, cluster, server->params, server->params_len,
			      login_read_only ? login_read_only(arg, pool->db, pool->user) : NULL))
			opened++;
	}
	return opened;
}

void
pool_repoint(Proxy *proxy)
{
	List *item, *tmp;

	list_for_each(item, &proxy->pools)
	{
		Pool *pool = container_of(item, Pool, head);

		pool->db = proxy_find_database(proxy, pool->dbname);
	}
	list_for_each_safe(item, tmp, &proxy->idle_servers)
	{
		Server *server = container_of(item, Server, head);

		server->db = server->pool ? server->pool->db : NULL;
		if (!server->db && !server->client)
			server_disconnect(server, NULL, "its database was removed by RELOAD");
	}
}

/* Clients waiting past query_wait_timeout are told so; the reserve opens to those past reserve_pool_timeout. */
static void
janitor_waiting(Pool *pool, ev_tstamp now)
{
	Proxy *proxy = pool->proxy;
	double timeout = proxy->config.proxy.query_wait_timeout / 1e6;
	List *item, *tmp;

	list_for_each_safe(item, tmp, &pool->waiting)
	{
		Client *client = container_of(item, Client, wait_head);

		if (timeout > 0 && now - client->wait_since >= timeout)
			client_disconnect(client, "08P01",
					  "query_wait_timeout: no server connection of pool %s@%s was free for %.0f s",
					  pool->user, pool->dbname, timeout);
	}
	kick(pool);
}

static void
janitor_idle(Proxy *proxy, ev_tstamp now)
{
	double idle_timeout = proxy->config.proxy.server_idle_timeout / 1e6;
	double lifetime = proxy->config.proxy.server_lifetime / 1e6;
	List *item, *tmp;

	list_for_each_safe(item, tmp, &proxy->idle_servers)
	{
		Server *server = container_of(item, Server, head);
		Pool *pool = server->pool;

		if (server->state != SV_IDLE)
			continue;
		if (server->cluster != proxy->serving && !proxy->cutover)
			server_disconnect(server, NULL, "its cluster is no longer served");
		else if (lifetime > 0 && now - server->connect_time >= lifetime)
			server_disconnect(server, NULL, "server_lifetime reached");
		else if (idle_timeout > 0 && now - server->idle_since >= idle_timeout &&
			 pool->nservers[cluster_index(proxy, server->cluster)] > min_pool_size_of(proxy, pool->db))
			server_disconnect(server, NULL, "server_idle_timeout reached");
	}
}

static void
janitor_min_pool(Proxy *proxy)
{
	List *item;

	if (proxy->logins_held || proxy->shutting_down)
		return;
	list_for_each(item, &proxy->pools)
	{
		Pool *pool = container_of(item, Pool, head);
		int min = min_pool_size_of(proxy, pool->db);

		if (!pool->db || !pool->have_params)
			continue;
		while (pool->nservers[cluster_index(proxy, proxy->serving)] < min && may_open(pool, 0))
			if (!open_idle(pool, proxy->serving, pool->params, pool->params_len, NULL))
				break;
	}
}

static void
on_janitor(struct ev_loop *loop, ev_timer *w, int revents)
{
	Proxy *proxy = container_of(w, Proxy, pool_timer);
	ev_tstamp now = ev_now(loop);
	List *item, *tmp;

	(void) revents;
	list_for_each_safe(item, tmp, &proxy->pools) janitor_waiting(container_of(item, Pool, head), now);
	janitor_idle(proxy, now);
	janitor_min_pool(proxy);
}

void
pool_start(Proxy *proxy)
{
	proxy->pool_release = pool_release;
	proxy->pool_server_idle = pool_server_idle;
	proxy->pool_retry_client = pool_retry_client;
	ev_timer_init(&proxy->pool_timer, on_janitor, JANITOR_INTERVAL, JANITOR_INTERVAL);
	ev_timer_start(proxy->loop, &proxy->pool_timer);
}

void
pool_stop(Proxy *proxy)
{
	ev_timer_stop(proxy->loop, &proxy->pool_timer);
}

bool
pool_answer_login(Client *client)
{
	Proxy *proxy = client->proxy;
	Pool *pool = client->pool;
	int c = cluster_index(proxy, proxy->serving);
	PktBuf pb;

	if (!pool)
		pool = client->pool = pool_get(proxy, client->db, client->user);
	if (!pool || !pool->welcome[c])
		return false;
	pktbuf_init(&pb);
	pktbuf_write_auth(&pb, AUTH_REQ_OK, NULL, 0);
	pktbuf_put_messages(&pb, pool->welcome[c], pool->welcome_len[c]);
	pktbuf_write_backend_key_data(&pb, client->cancel_pid, client->cancel_key, client->cancel_key_len);
	pktbuf_write_ready_for_query(&pb, TXN_IDLE);
	ev_timer_stop(proxy->loop, &client->login_timer);
	client->login_answered = true;
	client->txn_status = TXN_IDLE;
	client->sbuf.max_pkt = MAX_MESSAGE_LEN;
	if (!client_send(client, &pb)) {
		client_disconnect(client, NULL, "could not send to the client");
		return true;
	}
	log_debug(client->subject, "login answered; its server connection comes later");
	return true;
}

void
pool_free_all(Proxy *proxy)
{
	List *item, *tmp;

	list_for_each_safe(item, tmp, &proxy->pools)
	{
		Pool *pool = container_of(item, Pool, head);

		list_del(&pool->head);
		free(pool->params);
		free(pool->welcome[0]);
		free(pool->welcome[1]);
		OPENSSL_cleanse(pool->client_key, sizeof(pool->client_key));
		free(pool);
	}
}
