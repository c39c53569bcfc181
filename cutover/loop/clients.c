/*
 * The cutover and the clients: standbys opened on the other cluster, the
 * drain to transaction boundaries (with on_drain_timeout = cancel), and the
 * switch.
 */
#include "cutover/loop/internal.h"
#include "proxy/pool.h"
#include "common/log.h"
#include "proxy/pktbuf.h"
#include "proxy/proto.h"
#include "proxy/protocol.h"
#include "proxy/session.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- clients ---- */

/* Clients the cutover moves: logged in and served by the cluster left. */
bool
cutover_is_moving(const Cutover *c, const Client *client)
{
	/*
	 * In transaction mode a client between transactions gives its server
	 * connection back: it has nothing to carry, its next transaction runs
	 * wherever the pool is then.
	 */
	return client->state == CL_ACTIVE && client->server && client->server->cluster == c->from &&
		!(database_pool_mode(c->proxy, client->db) == POOL_TRANSACTION && client_between_transactions(client));
}

bool
cutover_client_quiet(const Client *client)
{
	/* A server running a script of the proxy's own (a replay) is busy too. */
	return client_between_transactions(client) && !(client->server && client->server->script);
}

/*
 * A few logins at a time: each starts a backend, and hundreds started at
 * once starve the clients still running on the cluster left, whose open
 * transactions the pause must then wait for.  With 500 clients on 2 cores,
 * 4 at a time log in as fast as 16 (1.7-2.1 s, bound by the CPU either
 * way), and the clients' transactions meanwhile stay short.
 */
#define STANDBY_LOGINS_AT_ONCE 4

static void
warm_done(Server *server, Script *script)
{
	if (script->failed)
		log_debug(server->subject, "warm-up stopped early: %s", script->error);
	server->warmed = true;
	proxy_recheck(server->proxy);
}

/*
 * A standby logged in runs its database's warm-up (cutover/warm.c) once the
 * worker has listed the tables, counted in *busy with the logins (hundreds
 * at once would starve the clients still running); true when it is done.
 * Only before the pause: a standby opened later goes without, not to
 * lengthen the pause.
 */
static bool
standby_warm(Cutover *c, Client *client, int *busy)
{
	Server *standby = client->cutover.standby;
	long i = client->db - c->proxy->databases;
	const char *sql;
	PktBuf pb;

	if (standby->warmed || standby->script)
		return standby->warmed;
	if (c->phase != CP_PRECHECK || (c->warm_known && (i < 0 || i >= c->nhidden || !c->warm_sql[i]))) {
		standby->warmed = true;
		return true;
	}
	if (!c->warm_known || *busy >= STANDBY_LOGINS_AT_ONCE)
		return false;
	sql = c->warm_sql[i];
	pktbuf_init(&pb);
	pktbuf_write_query(&pb, sql);
	if (script_run(standby, &pb, 1, warm_done))
		(*busy)++;
	else
		standby->warmed = true; /* logged; a standby lost is counted in Proxy.standbys_lost */
	return standby->warmed;
}

/* What a login to db as user gets once the switch is done, whatever fence it carries now. */
static const char *
login_read_only(void *arg, Database *db, const char *user)
{
	Cutover *c = arg;
	long i = db - c->proxy->databases;

	return i >= 0 && i < c->nhidden && steps_read_only_default(&c->read_only[i], user) ? "on" : "off";
}

/* Opens the missing standbys; true when every moving client has one logged in and warmed up. */
bool
cutover_standbys_ready(Cutover *c)
{
	Proxy *proxy = c->proxy;
	List *item, *tmp;
	bool ready = true;
	int logging_in = 0;

	if (!c->logins_known)
		return false; /* the worker has yet to say what standbys log in with */
	if (!c->pool_warmed) {
		int n;

		/* The idle part of each pool: the moving clients' standbys are the rest. */
		c->pool_warmed = true;
		n = pool_warm(proxy, c->to, login_read_only, c);
		if (n > 0)
			log_info("cutover", "warming the %s's pools with %d idle connection(s)", c->to->role, n);
	}
	list_for_each(item, &proxy->active_clients)
	{
		const Client *client = container_of(item, const Client, head);

		if (cutover_is_moving(c, client) && client->cutover.standby &&
		    (client->cutover.standby->state != SV_STANDBY || client->cutover.standby->script))
			logging_in++;
	}
	list_for_each_safe(item, tmp, &proxy->active_clients)
	{
		Client *client = container_of(item, Client, head);
		Server *standby;
		if (!cutover_is_moving(c, client))
			continue;
		if (client->cutover.standby) {
			ready &= client->cutover.standby->state == SV_STANDBY && standby_warm(c, client, &logging_in);
			continue;
		}
		ready = false;
		if (logging_in >= STANDBY_LOGINS_AT_ONCE)
			continue;
		standby = server_new(proxy, client, c->to, client->db);
		if (!standby) {
			c->proxy->standbys_lost++;
			snprintf(c->proxy->standby_lost_error, sizeof(c->proxy->standby_lost_error), "out of memory");
			return false;
		}
		standby->is_standby = true;
		standby->login_read_only = login_read_only(c, client->db, client->user);
		client->cutover.standby = standby;
		if (!server_start(standby))
			return false; /* counted in Proxy.standbys_lost */
		logging_in++;
		c->standbys_started++;
	}
	if (ready && !c->standbys_in) {
		c->standbys_in = true;
		log_info("cutover", "%d %s connection(s) logged in and warmed up after %.1f ms", c->standbys_started,
			 c->to->role, (ev_time() - c->t_start) * 1e3);
	}
	return ready;
}

void
cutover_set_paused(Cutover *c, bool paused)
{
	Proxy *proxy = c->proxy;
	int i;

	for (i = 0; i < proxy->ndatabases; i++)
		proxy->databases[i].paused = paused;
	(void) c;
}

bool
cutover_all_drained(Cutover *c)
{
	const List *item;

	list_for_each(item, &c->proxy->active_clients)
	{
		const Client *client = container_of(item, const Client, head);

		if (cutover_is_moving(c, client) && !cutover_client_quiet(client))
			return false;
	}
	return true;
}

void
cutover_describe_busy(Cutover *c, char *buf, size_t len)
{
	const List *item;
	size_t used = 0;
	int n = 0;

	buf[0] = '\0';
	list_for_each(item, &c->proxy->active_clients)
	{
		const Client *client = container_of(item, const Client, head);

		if (!cutover_is_moving(c, client) || cutover_client_quiet(client))
			continue;
		if (n++ < 3 && used < len)
			used += (size_t) snprintf(buf + used, len - used, "%s%s", n > 1 ? ", " : "", client->subject);
	}
	if (n > 3 && used < len)
		snprintf(buf + used, len - used, " and %d more", n - 3);
}

static void
rollback_done(Server *server, Script *script)
{
	Client *client = server->client;

	if (!client)
		return;
	if (script->failed) {
		client_disconnect(client, "57P01", "its transaction could not be rolled back for the cutover: %s",
				  script->error);
		return;
	}
	/* The client still believes it is in a transaction: its next request hears it is gone. */
	client->txn_status = TXN_IDLE;
	client->cutover.txn_killed = true;
	proxy_recheck(server->proxy);
}

/*
 * on_drain_timeout = cancel: running statements are cancelled, idle
 * transactions rolled back; called again as cancelled statements end, since
 * they leave their transaction open (failed).
 */
void
cutover_cancel_open(Cutover *c)
{
	List *item, *tmp;

	list_for_each_safe(item, tmp, &c->proxy->active_clients)
	{
		Client *client = container_of(item, Client, head);

		if (!cutover_is_moving(c, client) || cutover_client_quiet(client))
			continue;
		if (client->server->script || client->cutover.txn_killed)
			continue; /* already being rolled back */
		if (client->pending_rfq > 0 || client->in_copy) {
			if (client->cutover.cancel_sent)
				continue;
			log_info(client->subject, "cancelling its running statement for the cutover");
			client->cutover.cancel_sent = true;
			server_send_cancel(c->proxy, client->server);
		} else if (!client->unsynced) {
			PktBuf pb;

			log_info(client->subject, "rolling back its open transaction for the cutover");
			pktbuf_init(&pb);
			pktbuf_write_query(&pb, "ROLLBACK");
			if (!script_run(client->server, &pb, 1, rollback_done))
				client_disconnect(client, "57P01",
						  "its transaction could not be rolled back for the cutover");
		}
	}
}

/* ---- switch and finish ---- */

/* The target's server_version, so drivers see whom they talk to now. */
static void
send_server_version(Client *client, Server *server)
{
	const uint8_t *p = server->login_params, *end = p + server->login_params_len;

	while (p && end - p >= 5) {
		uint32_t len = ((uint32_t) p[1] << 24) | ((uint32_t) p[2] << 16) | ((uint32_t) p[3] << 8) | p[4];
		ProtoParameterStatus ps;
		char err[64];

		if (len < 4 || (size_t) (end - p) < (size_t) len + 1)
			break;
		if (p[0] == PQMSG_PARAMETER_STATUS &&
		    proto_parse_parameter_status(p + 5, len - 4, &ps, err, sizeof(err)) &&
		    strcmp(ps.name, "server_version") == 0) {
			if (!sbuf_answer(&client->sbuf, p, len + 1))
				log_warning(client->subject, "could not send the new server_version");
			break;
		}
		p += len + 1;
	}
}

void
cutover_switch_clients(Cutover *c)
{
	List *item, *tmp;
	int n;

	list_for_each_safe(item, tmp, &c->proxy->active_clients)
	{
		Client *client = container_of(item, Client, head);
		Server *old, *standby;

		if (!cutover_is_moving(c, client))
			continue;
		if (!client->cutover.carry || !client->cutover.standby) {
			/* Its login to the old cluster ended during the pause: it has no session to carry. */
			c->terminated_clients++;
			client_disconnect(client, "57P01",
					  "pghandoff moved database \"%s\" to another server while this session was "
					  "logging in; reconnect",
					  client->db->name);
			continue;
		}
		if (client->cutover.carry->unmovable[0]) {
			c->terminated_clients++;
			client_disconnect(client, "57P01",
					  "pghandoff moved database \"%s\" to another server, and this session could not "
					  "follow: it holds %s; reconnect",
					  client->db->name, client->cutover.carry->unmovable);
			continue;
		}
		old = client->server;
		standby = client->cutover.standby;
		client->cutover.standby = NULL;
		standby->is_standby = false;
		server_change_state(standby, SV_ACTIVE);
		old->client = NULL;
		old->sbuf.peer = NULL;
		client_link_server(client, standby);
		/* Closing it ends a backend, which costs the machine more than the pause can spare: after it. */
		server_change_state(old, SV_RETIRING);
		send_server_version(client, standby);
		session_carry_free(client->cutover.carry);
		client->cutover.carry = NULL;
		c->moved++;
	}
	/* The pools' idle connections to the cluster left go the way the moved clients' old ones do. */
	n = pool_retire_idle(c->proxy, c->from);
	if (n > 0)
		log_info("cutover", "%d idle pooled connection(s) to the %s retired", n, c->from->role);
}
