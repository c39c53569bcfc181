/*
 * Herding clients and servers between lists happens here, and so does
 * their teardown: every close goes through client_disconnect or
 * server_disconnect, which log the reason once and tell the peer.
 */
#include "proxy/objects.h"
#include "proxy/authquery.h"
#include "cutover/loop/cutover.h"
#include "proxy/pool.h" /* the Pool a server counts in */
#include "proxy/session.h"
#include "common/log.h"
#include "common/scram.h"
#include "proxy/pktbuf.h"
#include "proxy/proto.h"

#include <arpa/inet.h>
#include <openssl/rand.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/un.h>
#include <unistd.h>

static const char *
client_state_list_name(ClientState state)
{
	switch (state) {
	case CL_LOGIN:
		return "login";
	case CL_WAIT_SERVER:
		return "wait";
	case CL_ACTIVE:
		return "active";
	case CL_ADMIN:
		return "admin";
	case CL_JUSTFREE:
		return "justfree";
	}
	return "?";
}

static List *
client_list(Proxy *proxy, ClientState state)
{
	switch (state) {
	case CL_LOGIN:
		return &proxy->login_clients;
	case CL_WAIT_SERVER:
	case CL_ACTIVE:
		return &proxy->active_clients;
	case CL_ADMIN:
		return &proxy->admin_clients;
	case CL_JUSTFREE:
		return &proxy->justfree_clients;
	}
	return NULL;
}

static List *
server_list(Proxy *proxy, ServerState state)
{
	switch (state) {
	case SV_CONNECTING:
	case SV_LOGIN:
		return &proxy->login_servers;
	case SV_ACTIVE:
		return &proxy->active_servers;
	case SV_STANDBY:
		return &proxy->standby_servers;
	case SV_RETIRING:
		return &proxy->retiring_servers;
	case SV_IDLE:
	case SV_TESTING:
		return &proxy->idle_servers;
	case SV_JUSTFREE:
		return &proxy->justfree_servers;
	}
	return NULL;
}

static void
format_addr(const struct sockaddr_storage *addr, char *buf, size_t len)
{
	char host[INET6_ADDRSTRLEN] = "?";

	if (addr->ss_family == AF_INET) {
		const struct sockaddr_in *in = (const struct sockaddr_in *) addr;

		inet_ntop(AF_INET, &in->sin_addr, host, sizeof(host));
		snprintf(buf, len, "%s:%d", host, ntohs(in->sin_port));
	} else if (addr->ss_family == AF_INET6) {
		const struct sockaddr_in6 *in6 = (const struct sockaddr_in6 *) addr;

		inet_ntop(AF_INET6, &in6->sin6_addr, host, sizeof(host));
		snprintf(buf, len, "[%s]:%d", host, ntohs(in6->sin6_port));
	} else {
		snprintf(buf, len, "unix");
	}
}

void
client_set_subject(Client *client)
{
	char addr[64];

	format_addr(&client->addr, addr, sizeof(addr));
	if (client->user[0])
		snprintf(client->subject, sizeof(client->subject), "C-%u %s@%s %s", client->id, client->user,
			 client->dbname, addr);
	else
		snprintf(client->subject, sizeof(client->subject), "C-%u %s", client->id, addr);
}

Client *
client_new(Proxy *proxy, int fd, const struct sockaddr *addr, socklen_t addrlen)
{
	Client *client = calloc(1, sizeof(Client));

	if (!client)
		return NULL;
	client->proxy = proxy;
	client->id = ++proxy->next_client_id;
	client->state = CL_LOGIN;
	client->txn_status = TXN_IDLE;
	client->connect_time = ev_now(proxy->loop);
	if (addrlen <= sizeof(client->addr))
		memcpy(&client->addr, addr, addrlen);
	list_init(&client->head);
	list_append(&proxy->login_clients, &client->head);
	proxy->nclients++;
	client_set_subject(client);
	/* Counted from accept on: a client still logging in holds a place too. */
	if (!client_take_place(client, PLACE_CLIENT))
		log_debug(client->subject, "accepted beyond max_client_conn: only a cancel or admin login will do");
	sbuf_init(&client->sbuf, proxy->loop, client_on_event);
	client->sbuf.startup = true;
	client->sbuf.max_pkt = PROTO_MAX_STARTUP_LENGTH;
	if (!sbuf_accept(&client->sbuf, fd)) {
		close(fd);
		client_disconnect(client, NULL, "could not set up the socket: %s", strerror(client->sbuf.error));
		return NULL;
	}
	/* A random cancel key: a guessed one must not cancel another client's query. */
	client->cancel_key_len = 4;
	if (RAND_bytes((unsigned char *) &client->cancel_pid, sizeof(client->cancel_pid)) != 1 ||
	    RAND_bytes(client->cancel_key, sizeof(client->cancel_key)) != 1) {
		client_disconnect(client, "XX000", "could not generate a cancel key");
		return NULL;
	}
	client->cancel_pid &= 0x7fffffff;
	return client;
}

static void
release_place(Client *client)
{
	if (client->place == PLACE_CLIENT)
		client->proxy->nclient_places--;
	else if (client->place == PLACE_ADMIN)
		client->proxy->nadmin_places--;
	client->place = PLACE_NONE;
}

bool
client_take_place(Client *client, ClientPlace place)
{
	Proxy *proxy = client->proxy;

	if (client->place == place)
		return true;
	if (place == PLACE_CLIENT && proxy->nclient_places >= proxy->config.proxy.max_client_conn)
		return false;
	if (place == PLACE_ADMIN && proxy->nadmin_places >= proxy->config.proxy.admin_reserved_conn)
		return false;
	release_place(client);
	client->place = place;
	if (place == PLACE_CLIENT)
		proxy->nclient_places++;
	else if (place == PLACE_ADMIN)
		proxy->nadmin_places++;
	return true;
}

void
client_change_state(Client *client, ClientState state)
{
	Proxy *proxy = client->proxy;

	log_debug(client->subject, "state %s -> %s", client_state_list_name(client->state),
		  client_state_list_name(state));
	list_del(&client->head);
	client->state = state;
	list_append(client_list(proxy, state), &client->head);
}

static void
free_stmts(Client *client)
{
	while (client->stmts) {
		PreparedStmt *next = client->stmts->next;

		free(client->stmts);
		client->stmts = next;
	}
	client->nstmts = 0;
}

bool
client_send(Client *client, PktBuf *pb)
{
	bool ok;

	if (pb->failed) {
		log_error(client->subject, "could not build a message: out of memory");
		pktbuf_free(pb);
		return false;
	}
	ok = sbuf_answer(&client->sbuf, pb->buf, pb->len);
	pktbuf_free(pb);
	return ok;
}

bool
admin_send(PktBuf *pb, Client *admin)
{
	if (client_send(admin, pb))
		return true;
	client_disconnect(admin, NULL, "could not send to the admin client");
	return false;
}

bool
client_send_error(Client *client, const char *severity, const char *sqlstate, const char *message, const char *detail,
		  const char *hint)
{
	PktBuf pb;

	pktbuf_init(&pb);
	pktbuf_write_error(&pb, severity, sqlstate, message, detail, hint);
	return client_send(client, &pb);
}

void
client_server_ready(Client *client)
{
	Server *server = client->server;
	PktBuf pb;

	pktbuf_init(&pb);
	if (!client->login_answered)
		pktbuf_write_auth(&pb, AUTH_REQ_OK, NULL, 0);
	/*
	 * The server's ParameterStatus messages, as they were; a client told
	 * earlier gets them again, as a server reports a change (the cluster
	 * may have changed since: server_version).
	 */
	pktbuf_put_messages(&pb, server->login_params, server->login_params_len);
	if (!client->login_answered) {
		pktbuf_write_backend_key_data(&pb, client->cancel_pid, client->cancel_key, client->cancel_key_len);
		pktbuf_write_ready_for_query(&pb, TXN_IDLE);
	}
	client->login_answered = false;

	ev_timer_stop(client->proxy->loop, &client->login_timer);
	client_link_server(client, server);
	client->sbuf.max_pkt = MAX_MESSAGE_LEN;
	client->txn_status = TXN_IDLE;
	client_change_state(client, CL_ACTIVE);
	if (database_pool_mode(client->proxy, client->db) == POOL_TRANSACTION) {
		/* It logged in for the client's login only: back to the pool once that is out. */
		server->txn_done = true;
		client->proxy->txn_release_pending = true;
	}
	log_info(client->subject, "login complete, served by %s", server->subject);
	if (!client_send(client, &pb)) {
		client_disconnect(client, NULL, "could not send to the client");
		return;
	}
	sbuf_continue(&client->sbuf);
}

bool
client_between_transactions(const Client *client)
{
	return client->pending_rfq == 0 && !client->unsynced && !client->in_copy && client->txn_status == TXN_IDLE;
}

/* A server connection counts in its pool, per cluster, from server_new to server_disconnect. */
static void
count_in_pool(Server *server, int delta)
{
	if (server->pool)
		server->pool->nservers[server->cluster == &server->proxy->target ? 1 : 0] += delta;
}

PoolMode
database_pool_mode(const Proxy *proxy, const Database *db)
{
	return db && db->pool_mode >= 0 ? (PoolMode) db->pool_mode : proxy->config.proxy.pool_mode;
}

bool
proxy_is_paused(Proxy *proxy, Database *db)
{
	(void) proxy;
	return db && db->paused;
}

void
script_free(Script *script)
{
	int i;

	if (!script)
		return;
	for (i = 0; i < script->nrows * SCRIPT_COLUMNS; i++)
		free(script->cells[i]);
	free(script->cells);
	free(script);
}

void
session_carry_free(SessionCarry *carry)
{
	if (!carry)
		return;
	pktbuf_free(&carry->replay);
	free(carry);
}

void
client_disconnect(Client *client, const char *sqlstate, const char *fmt, ...)
{
	Proxy *proxy = client->proxy;
	char reason[512];
	va_list ap;

	if (client->state == CL_JUSTFREE)
		return;
	va_start(ap, fmt);
	vsnprintf(reason, sizeof(reason), fmt, ap);
	va_end(ap);

	if (sqlstate) {
		log_info(client->subject, "closing: %s (%s)", reason, sqlstate);
		(void) client_send_error(client, "FATAL", sqlstate, reason, NULL, NULL);
	} else {
		log_info(client->subject, "closing: %s", reason);
	}
	if (client->pool_waiting) {
		list_del(&client->wait_head);
		client->pool_waiting = false;
	}
	if (client->server)
		proxy->pool_release(client->server, "client closed"); /* kept for the next client, or closed */
	if (client->cutover.standby) {
		Server *standby = client->cutover.standby;

		client->cutover.standby = NULL;
		standby->client = NULL;
		server_disconnect(standby, NULL, "client closed");
	}
	/* A cutover it waits for lets go of it before it is freed (cutover_reap). */
	client->admin_waiting_cutover = false;
	if (client->admin_waiting_pause) {
		client->admin_waiting_pause = false;
		proxy->pause_waiters--;
	}
	ev_timer_stop(proxy->loop, &client->login_timer);
	authquery_cancel(client);
	sbuf_close(&client->sbuf);
	if (client->db)
		client->db->nclients--;
	client->db = NULL;
	release_place(client);
	client_change_state(client, CL_JUSTFREE);
	/* A PAUSE or a cutover may have been waiting for this client only. */
	proxy_recheck(proxy);
}

static void
client_free(Client *client)
{
	list_del(&client->head);
	client->proxy->nclients--;
	free(client->params);
	if (client->scram) {
		scram_server_clear(client->scram);
		free(client->scram);
	}
	free_stmts(client);
	session_carry_free(client->cutover.carry);
	OPENSSL_cleanse(client->client_key, sizeof(client->client_key));
	OPENSSL_cleanse(client->md5_response, sizeof(client->md5_response));
	authsecret_free(client->auth_secret);
	free(client);
}

void
client_link_server(Client *client, Server *server)
{
	client->server = server;
	server->client = client;
	client->sbuf.peer = &server->sbuf;
	server->sbuf.peer = &client->sbuf;
}

Server *
server_new(Proxy *proxy, Client *client, const Cluster *cluster, Database *db)
{
	Server *server = calloc(1, sizeof(Server));

	if (!server)
		return NULL;
	server->proxy = proxy;
	server->id = ++proxy->next_server_id;
	server->client = client;
	server->db = db;
	server->cluster = cluster;
	server->state = SV_CONNECTING;
	server->connect_time = ev_now(proxy->loop);
	server->idle_since = server->connect_time;
	list_init(&server->head);
	list_append(&proxy->login_servers, &server->head);
	sbuf_init(&server->sbuf, proxy->loop, server_on_event);
	if (client) {
		/* What it logs in with is its first client's, and stays its own when that client leaves. */
		snprintf(server->user, sizeof(server->user), "%s", client->user);
		server->params = malloc(client->params_len + 1);
		if (!server->params) {
			list_del(&server->head);
			free(server);
			return NULL;
		}
		memcpy(server->params, client->params, client->params_len);
		server->params_len = client->params_len;
		server->pool = client->pool;
		count_in_pool(server, 1);
	}
	snprintf(server->subject, sizeof(server->subject), "S-%u %s@%s %s", server->id, server->user,
		 cluster == &proxy->target ? db->target_name : db->name, cluster->role);
	return server;
}

void
server_change_state(Server *server, ServerState state)
{
	list_del(&server->head);
	server->state = state;
	list_append(server_list(server->proxy, state), &server->head);
}

void
server_disconnect(Server *server, const char *sqlstate, const char *fmt, ...)
{
	Client *client = server->client;
	ServerState was;
	char reason[512];
	va_list ap;

	if (server->state == SV_JUSTFREE)
		return;
	va_start(ap, fmt);
	vsnprintf(reason, sizeof(reason), fmt, ap);
	va_end(ap);
	log_info(server->subject, "closing: %s", reason);
	was = server->state;

	if ((server->state == SV_ACTIVE || server->state == SV_STANDBY || server->state == SV_RETIRING ||
	     server->state == SV_IDLE || server->state == SV_TESTING) &&
	    !sbuf_closed(&server->sbuf) && !server->sbuf.ssl) {
		/* Say goodbye, so the backend does not log an unexpected EOF; a full socket gets none. */
		PktBuf pb;

		pktbuf_init(&pb);
		pktbuf_write_terminate(&pb);
		if (!pb.failed)
			(void) write(server->sbuf.fd, pb.buf, pb.len);
		pktbuf_free(&pb);
	}
	sbuf_close(&server->sbuf);
	server->client = NULL;
	count_in_pool(server, -1);
	server_change_state(server, SV_JUSTFREE);
	script_free(server->script);
	server->script = NULL;
	if (client && was == SV_TESTING) {
		/* Its check query failed with it: the client it was checked for looks for another. */
		client->server = NULL;
		server->proxy->pool_retry_client(client);
	} else if (client && server->is_standby && client->cutover.standby == server) {
		/* A standby lost is the cutover's problem, not its client's. */
		client->cutover.standby = NULL;
		server->proxy->standbys_lost++;
		snprintf(server->proxy->standby_lost_error, sizeof(server->proxy->standby_lost_error), "%.250s: %.250s",
			 client->subject, reason);
		proxy_recheck(server->proxy);
	} else if (client) {
		client->server = NULL;
		client_disconnect(client, sqlstate ? sqlstate : "08006", "server connection lost: %s", reason);
	}
}

static void
server_free(Server *server)
{
	list_del(&server->head);
	free(server->login_params);
	free(server->params);
	if (server->scram) {
		scram_client_clear(server->scram);
		free(server->scram);
	}
	free(server);
}

int
proxy_free_justfree(Proxy *proxy)
{
	List *item, *tmp;
	int freed = 0;

	list_for_each_safe(item, tmp, &proxy->justfree_clients)
	{
		client_free(container_of(item, Client, head));
		freed++;
	}
	list_for_each_safe(item, tmp, &proxy->justfree_servers)
	{
		server_free(container_of(item, Server, head));
		freed++;
	}
	return freed;
}

Database *
proxy_find_database(Proxy *proxy, const char *name)
{
	int i;

	for (i = 0; i < proxy->ndatabases; i++)
		if (strcmp(proxy->databases[i].name, name) == 0)
			return &proxy->databases[i];
	return NULL;
}

Client *
proxy_find_client_by_cancel_key(Proxy *proxy, int32_t pid, const uint8_t *key, size_t keylen)
{
	List *item;

	list_for_each(item, &proxy->active_clients)
	{
		Client *client = container_of(item, Client, head);

		if (client->cancel_pid == pid && client->cancel_key_len == keylen &&
		    CRYPTO_memcmp(client->cancel_key, key, keylen) == 0)
			return client;
	}
	return NULL;
}
