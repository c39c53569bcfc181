/*
 * The admin console: the virtual database "pghandoff", open to admin_users,
 * answering simple queries with ordinary result sets, as PgBouncer's does.
 * Every answer is built whole and sent with one write.
 */
#include "proxy/objects.h"
#include "proxy/pool.h"
#include "proxy/poolstats.h"
#include "cutover/loop/cutover.h"
#include "common/log.h"
#include "common/strbuf.h"
#include "proxy/pktbuf.h"
#include "proxy/proto.h"
#include "proxy/progress.h"

#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#define MAX_WORDS 4

typedef struct Result {
	PktBuf pb;
	int ncols;
	int nrows;
} Result;

static void
result_begin(Result *r, int ncols, const char *const *names)
{
	pktbuf_init(&r->pb);
	r->ncols = ncols;
	r->nrows = 0;
	pktbuf_write_row_description(&r->pb, ncols, names);
}

static void
result_row(Result *r, const char *const *values)
{
	pktbuf_write_data_row(&r->pb, r->ncols, values);
	r->nrows++;
}

static bool
result_send(Client *client, Result *r, const char *command)
{
	char tag[64];
	bool ok;

	snprintf(tag, sizeof(tag), "%s %d", command, r->nrows);
	pktbuf_write_command_complete(&r->pb, tag);
	pktbuf_write_ready_for_query(&r->pb, TXN_IDLE);
	ok = !r->pb.failed && sbuf_answer(&client->sbuf, r->pb.buf, r->pb.len);
	pktbuf_free(&r->pb);
	if (!ok)
		client_disconnect(client, NULL, "could not send to the admin client");
	return ok;
}

static bool
send_command_ok(Client *client, const char *tag)
{
	PktBuf pb;

	pktbuf_init(&pb);
	pktbuf_write_command_complete(&pb, tag);
	pktbuf_write_ready_for_query(&pb, TXN_IDLE);
	return admin_send(&pb, client);
}

static bool
send_ready(Client *client, bool with_error, const char *sqlstate, const char *message, const char *hint)
{
	PktBuf pb;

	pktbuf_init(&pb);
	if (with_error)
		pktbuf_write_error(&pb, "ERROR", sqlstate, message, NULL, hint);
	pktbuf_write_ready_for_query(&pb, TXN_IDLE);
	return admin_send(&pb, client);
}

bool
admin_send_error(Client *client, const char *sqlstate, const char *message, const char *hint)
{
	return send_ready(client, true, sqlstate, message, hint);
}

/*
 * Every message but a Query, answered as a server that does not support it
 * would, so that no client waits for an answer that never comes.  The
 * extended protocol fails at its first message, with the error sent at once
 * (a client may Flush and wait), then everything up to Sync is skipped and
 * the Sync gets its ReadyForQuery.  The message is consumed, or the client
 * closed.
 */
static bool
admin_handle_other(Client *client, const PktHeader *pkt)
{
	static const char hint[] = "use psql, or a driver's simple-query mode";
	PktBuf pb;
	bool ok;

	if (pkt->type == PQMSG_SYNC) {
		sbuf_consume(&client->sbuf, pkt->len);
		client->admin_skip_to_sync = false;
		return send_ready(client, false, NULL, NULL, NULL);
	}
	if (client->admin_skip_to_sync) {
		sbuf_consume(&client->sbuf, pkt->len);
		return true;
	}
	switch (pkt->type) {
	case PQMSG_FUNCTION_CALL:
		sbuf_consume(&client->sbuf, pkt->len);
		return send_ready(client, true, "0A000", "the admin console does not support function calls", hint);
	case PQMSG_PARSE:
	case PQMSG_BIND:
	case PQMSG_DESCRIBE:
	case PQMSG_EXECUTE:
	case PQMSG_CLOSE:
		sbuf_consume(&client->sbuf, pkt->len);
		client->admin_skip_to_sync = true;
		pktbuf_init(&pb);
		pktbuf_write_error(&pb, "ERROR", "0A000", "the admin console supports only the simple query protocol",
				   NULL, hint);
		ok = !pb.failed && sbuf_answer(&client->sbuf, pb.buf, pb.len);
		pktbuf_free(&pb);
		if (!ok)
			client_disconnect(client, NULL, "could not send to the admin client");
		return ok;
	case PQMSG_FLUSH:
	case PQMSG_COPY_DATA:
	case PQMSG_COPY_DONE:
	case PQMSG_COPY_FAIL:
		/* Nothing to flush, no COPY running: a server ignores these too. */
		sbuf_consume(&client->sbuf, pkt->len);
		return true;
	default:
		client_disconnect(client, "08P01", "invalid frontend message type %d", pkt->type);
		return false;
	}
}

static void
format_time(ev_tstamp t, char *buf, size_t len)
{
	time_t secs = (time_t) t;
	struct tm tm;

	gmtime_r(&secs, &tm);
	strftime(buf, len, "%Y-%m-%d %H:%M:%S UTC", &tm);
}

static const char *
client_state_name(const Client *client)
{
	switch (client->state) {
	case CL_LOGIN:
		return "login";
	case CL_WAIT_SERVER:
		return "waiting";
	case CL_ACTIVE:
		return client->held ? "held" : "active";
	case CL_ADMIN:
		return "admin";
	case CL_JUSTFREE:
		return "closing";
	}
	return "?";
}

static void
address_of(const Client *client, char *addr, size_t len)
{
	/* The subject ends with the address. */
	const char *space = strrchr(client->subject, ' ');

	snprintf(addr, len, "%s", space ? space + 1 : "");
}

static void
client_row(Result *r, const Client *client)
{
	char id[16], addr[64], since[32], pending[16], stmts[16], server[16], tx[2] = {client->txn_status, 0};
	const char *values[10];

	snprintf(id, sizeof(id), "C-%u", client->id);
	address_of(client, addr, sizeof(addr));
	format_time(client->connect_time, since, sizeof(since));
	snprintf(pending, sizeof(pending), "%d", client->pending_rfq);
	snprintf(stmts, sizeof(stmts), "%d", client->nstmts);
	snprintf(server, sizeof(server), "S-%u", client->server ? client->server->id : 0);
	values[0] = id;
	values[1] = client->user;
	values[2] = client->dbname;
	values[3] = client_state_name(client);
	values[4] = addr;
	values[5] = since;
	values[6] = tx;
	values[7] = pending;
	values[8] = stmts;
	values[9] = client->server ? server : NULL;
	result_row(r, values);
}

static bool
show_clients(Client *client, const char *arg)
{
	static const char *const cols[] = {"id",           "user", "database", "state",    "addr",
					   "connect_time", "tx",   "pending",  "prepared", "server"};
	Proxy *proxy = client->proxy;
	const List *lists[] = {&proxy->login_clients, &proxy->active_clients, &proxy->admin_clients};
	const List *item;
	Result r;
	size_t i;

	(void) arg;
	result_begin(&r, 10, cols);
	for (i = 0; i < sizeof(lists) / sizeof(lists[0]); i++)
		list_for_each(item, lists[i]) client_row(&r, container_of(item, const Client, head));
	return result_send(client, &r, "SHOW");
}

static bool
show_servers(Client *client, const char *arg)
{
	static const char *const cols[] = {"id",          "user",   "database",     "cluster", "state",
					   "backend_pid", "client", "connect_time", "tls"};
	Proxy *proxy = client->proxy;
	const List *lists[] = {&proxy->login_servers, &proxy->active_servers, &proxy->standby_servers,
			       &proxy->idle_servers, &proxy->retiring_servers};
	const List *item;
	Result r;
	size_t i;

	(void) arg;
	result_begin(&r, 9, cols);
	for (i = 0; i < sizeof(lists) / sizeof(lists[0]); i++) {
		list_for_each(item, lists[i])
		{
			const Server *server = container_of(item, const Server, head);
			char id[16], pid[16], cid[16], since[32];
			const char *values[9];

			snprintf(id, sizeof(id), "S-%u", server->id);
			snprintf(pid, sizeof(pid), "%d", server->backend_pid);
			snprintf(cid, sizeof(cid), "C-%u", server->client ? server->client->id : 0);
			format_time(server->connect_time, since, sizeof(since));
			values[0] = id;
			values[1] = server->user;
			values[2] = server->cluster == &proxy->target ? server->db->target_name : server->db->name;
			values[3] = server->cluster->role;
			values[4] = server->state == SV_ACTIVE ? "active"
				: server->state == SV_STANDBY  ? "standby"
				: server->state == SV_RETIRING ? "retiring"
				: server->state == SV_IDLE     ? "idle"
				: server->state == SV_TESTING  ? "testing"
							       : "login";
			values[5] = pid;
			values[6] = server->client ? cid : NULL;
			values[7] = since;
			values[8] = server->sbuf.ssl ? "on" : "off";
			result_row(&r, values);
		}
	}
	return result_send(client, &r, "SHOW");
}

/* PgBouncer's columns, for each pool on the cluster served now. */
static void
pool_row(Result *r, const Proxy *proxy, const Pool *pool)
{
	PoolStats st;
	char v[9][24];
	const char *values[12];
	int i;

	poolstats_count(proxy, pool, &st);
	snprintf(v[0], sizeof(v[0]), "%d", st.cl_active);
	snprintf(v[1], sizeof(v[1]), "%d", st.cl_waiting);
	snprintf(v[2], sizeof(v[2]), "%d", st.sv_active);
	snprintf(v[3], sizeof(v[3]), "%d", st.sv_idle);
	snprintf(v[4], sizeof(v[4]), "%d", st.sv_used);
	snprintf(v[5], sizeof(v[5]), "%d", st.sv_tested);
	snprintf(v[6], sizeof(v[6]), "%d", st.sv_login);
	snprintf(v[7], sizeof(v[7]), "%d", (int) st.maxwait);
	snprintf(v[8], sizeof(v[8]), "%d", (int) ((st.maxwait - (int) st.maxwait) * 1e6));
	values[0] = pool->dbname;
	values[1] = pool->user;
	for (i = 0; i < 9; i++)
		values[i + 2] = v[i];
	values[11] = poolstats_mode_name(st.mode);
	result_row(r, values);
}

static bool
show_pools(Client *client, const char *arg)
{
	static const char *const cols[] = {"database",  "user",    "cl_active",  "cl_waiting",
					   "sv_active", "sv_idle", "sv_used",    "sv_tested",
					   "sv_login",  "maxwait", "maxwait_us", "pool_mode"};
	Proxy *proxy = client->proxy;
	const List *item;
	Result r;

	(void) arg;
	result_begin(&r, 12, cols);
	list_for_each(item, &proxy->pools)
	{
		const Pool *pool = container_of(item, const Pool, head);

		if (pool->db)
			pool_row(&r, proxy, pool);
	}
	return result_send(client, &r, "SHOW");
}

static bool
show_stats(Client *client, const char *arg)
{
	static const char *const cols[] = {"database",   "total_xact_count", "total_query_count", "total_received",
					   "total_sent", "avg_xact_time_us", "avg_query_time_us"};
	Proxy *proxy = client->proxy;
	Result r;
	int i;

	(void) arg;
	result_begin(&r, 7, cols);
	for (i = 0; i < proxy->ndatabases; i++) {
		const DbStats *s = &proxy->databases[i].stats;
		char v[6][24];
		const char *values[7];

		snprintf(v[0], sizeof(v[0]), "%llu", (unsigned long long) s->xact_count);
		snprintf(v[1], sizeof(v[1]), "%llu", (unsigned long long) s->query_count);
		snprintf(v[2], sizeof(v[2]), "%llu", (unsigned long long) s->bytes_received);
		snprintf(v[3], sizeof(v[3]), "%llu", (unsigned long long) s->bytes_sent);
		snprintf(v[4], sizeof(v[4]), "%llu",
			 (unsigned long long) (s->xact_count ? s->xact_time_us / s->xact_count : 0));
		snprintf(v[5], sizeof(v[5]), "%llu",
			 (unsigned long long) (s->query_count ? s->query_time_us / s->query_count : 0));
		values[0] = proxy->databases[i].name;
		for (int k = 0; k < 6; k++)
			values[k + 1] = v[k];
		result_row(&r, values);
	}
	return result_send(client, &r, "SHOW");
}

static void
config_row(void *arg, const char *section, const char *key, const char *value)
{
	const char *values[3] = {section, key, value};

	result_row(arg, values);
}

static bool
show_config(Client *client, const char *arg)
{
	static const char *const cols[] = {"section", "key", "value"};
	Result r;

	(void) arg;
	result_begin(&r, 3, cols);
	config_each(&client->proxy->config, config_row, &r);
	return result_send(client, &r, "SHOW");
}

static bool
show_databases(Client *client, const char *arg)
{
	static const char *const cols[] = {"name", "target_name", "paused", "clients"};
	Proxy *proxy = client->proxy;
	Result r;
	int i;

	(void) arg;
	result_begin(&r, 4, cols);
	for (i = 0; i < proxy->ndatabases; i++) {
		const Database *db = &proxy->databases[i];
		char n[16];
		const char *values[4] = {db->name, db->target_name, db->paused ? "yes" : "no", n};

		snprintf(n, sizeof(n), "%d", db->nclients);
		result_row(&r, values);
	}
	return result_send(client, &r, "SHOW");
}

/*
 * SHOW REPLICATION: per database, where the migration stands (progress.c):
 * the follower's progress, then the slot and origin as the clusters see
 * them (empty when the probe has no fresh answer).
 */
static bool
show_replication(Client *client, const char *arg)
{
	static const char *const cols[] =
		{"database",     "phase",          "follower",        "tables_done",         "tables_total",
		 "copied_bytes", "total_bytes",    "copy_rate_bytes", "eta_seconds",         "lag_bytes",
		 "lag_seconds",  "apply_rate",     "applied_lsn",     "updated_seconds_ago", "pid",
		 "slot",         "slot_lag_bytes", "origin_lsn"};
	enum { NCOLS = sizeof(cols) / sizeof(cols[0]) };
	Proxy *proxy = client->proxy;
	Result r;
	int i, k;

	(void) arg;
	result_begin(&r, NCOLS, cols);
	for (i = 0; i < proxy->ndatabases; i++) {
		ReplProgress p;
		char f[12][32];
		const char *values[NCOLS];

		progress_read(proxy, &proxy->databases[i], &p);
		snprintf(f[0], 32, "%.0f", p.tables_done);
		snprintf(f[1], 32, "%.0f", p.tables_total);
		snprintf(f[2], 32, "%.0f", p.bytes_done);
		snprintf(f[3], 32, "%.0f", p.bytes_total);
		snprintf(f[4], 32, "%.0f", p.copy_rate);
		f[5][0] = '\0'; /* unknown */
		if (p.eta_seconds >= 0)
			snprintf(f[5], 32, "%.0f", p.eta_seconds);
		snprintf(f[6], 32, "%.0f", p.lag_bytes);
		snprintf(f[7], 32, "%.1f", p.lag_seconds);
		snprintf(f[8], 32, "%.1f", p.apply_rate);
		f[9][0] = f[10][0] = f[11][0] = '\0';
		if (p.have)
			snprintf(f[9], 32, "%.1f", p.age_seconds);
		if (p.pid > 0)
			snprintf(f[10], 32, "%d", p.pid);
		if (p.probed && strcmp(p.slot, "missing") != 0)
			snprintf(f[11], 32, "%.0f", p.slot_lag_bytes);
		values[0] = proxy->databases[i].name;
		values[1] = p.phase;
		values[2] = p.follower;
		for (k = 0; k < 9; k++)
			values[3 + k] = f[k];
		values[12] = p.applied_lsn;
		values[13] = f[9];
		values[14] = f[10];
		values[15] = p.slot;
		values[16] = f[11];
		values[17] = p.origin_lsn;
		result_row(&r, values);
	}
	return result_send(client, &r, "SHOW");
}

static bool
show_version(Client *client, const char *arg)
{
	static const char *const cols[] = {"version"};
	const char *values[] = {"pghandoff " PGHANDOFF_VERSION};
	Result r;

	(void) arg;
	result_begin(&r, 1, cols);
	result_row(&r, values);
	return result_send(client, &r, "SHOW");
}

/* A client is at a transaction boundary when nothing of it is in flight. */
static bool
client_is_quiet(const Client *client)
{
	if (client->state == CL_WAIT_SERVER)
		return true;
	return client->held || client_between_transactions(client);
}

static bool
pause_reached(Proxy *proxy, const char *dbname)
{
	const List *item;

	list_for_each(item, &proxy->active_clients)
	{
		const Client *c = container_of(item, const Client, head);

		if ((!dbname[0] || strcmp(c->db->name, dbname) == 0) && !client_is_quiet(c))
			return false;
	}
	return true;
}

void
admin_check_pause_waiters(Proxy *proxy)
{
	List *item, *tmp;

	if (proxy->pause_waiters == 0)
		return;
	list_for_each_safe(item, tmp, &proxy->admin_clients)
	{
		Client *admin = container_of(item, Client, head);

		if (!admin->admin_waiting_pause || !pause_reached(proxy, admin->admin_pause_db))
			continue;
		admin->admin_waiting_pause = false;
		proxy->pause_waiters--;
		log_info(admin->subject, "PAUSE %s: every client is between transactions",
			 admin->admin_pause_db[0] ? admin->admin_pause_db : "(all)");
		if (send_command_ok(admin, "PAUSE"))
			sbuf_continue(&admin->sbuf);
	}
}

static bool
set_paused(Client *client, const char *dbname, bool paused)
{
	Proxy *proxy = client->proxy;
	int i;

	if (dbname[0] && !proxy_find_database(proxy, dbname)) {
		char msg[128];

		snprintf(msg, sizeof(msg), "database \"%s\" is not in [databases]", dbname);
		return admin_send_error(client, "3D000", msg, "SHOW DATABASES lists them");
	}
	for (i = 0; i < proxy->ndatabases; i++)
		if (!dbname[0] || strcmp(proxy->databases[i].name, dbname) == 0)
			proxy->databases[i].paused = paused;
	if (!paused) {
		log_info(client->subject, "RESUME %s", dbname[0] ? dbname : "(all)");
		client_resume_held(proxy, NULL);
		return send_command_ok(client, "RESUME");
	}
	log_info(client->subject, "PAUSE %s requested", dbname[0] ? dbname : "(all)");
	snprintf(client->admin_pause_db, sizeof(client->admin_pause_db), "%s", dbname);
	client->admin_waiting_pause = true;
	proxy->pause_waiters++;
	admin_check_pause_waiters(proxy);
	return true;
}

/* Splits sql into up to MAX_WORDS words, trimming a trailing semicolon. */
static int
split_words(const char *sql, char words[MAX_WORDS][64])
{
	int n = 0;
	const char *p = sql;

	while (*p) {
		size_t len = 0;

		while (isspace((unsigned char) *p) || *p == ';')
			p++;
		if (!*p)
			break;
		if (n == MAX_WORDS)
			return -1;
		while (*p && !isspace((unsigned char) *p) && *p != ';') {
			if (len + 1 < 64)
				words[n][len++] = *p;
			p++;
		}
		words[n][len] = '\0';
		n++;
	}
	return n;
}

static bool
show_cutover(Client *client, const char *arg)
{
	(void) arg;
	return cutover_show(client, false);
}

static bool
show_cutover_json(Client *client, const char *arg)
{
	(void) arg;
	return cutover_show(client, true);
}

static bool
start_cutover(Client *client, CutoverKind kind)
{
	char why[2300];

	if (cutover_refusal(client->proxy, kind, why, sizeof(why)))
		return admin_send_error(client, "55000", why, NULL);
	return cutover_start(client, kind);
}

static bool
show_fence(Client *client, const char *arg)
{
	(void) arg;
	return cutover_show_fence(client);
}

static bool
run_cutover(Client *client, const char *arg)
{
	(void) arg;
	return start_cutover(client, CUTOVER_FORWARD);
}

static bool
run_cutover_dry(Client *client, const char *arg)
{
	(void) arg;
	return start_cutover(client, CUTOVER_DRY_RUN);
}

static bool
run_rollback(Client *client, const char *arg)
{
	(void) arg;
	return start_cutover(client, CUTOVER_ROLLBACK);
}

static bool
run_pause(Client *client, const char *arg)
{
	return set_paused(client, arg, true);
}

static bool
run_resume(Client *client, const char *arg)
{
	return set_paused(client, arg, false);
}

static bool
run_reload(Client *client, const char *arg)
{
	(void) arg;
	if (cutover_running(client->proxy))
		return admin_send_error(client, "55000",
					"configuration not reloaded: a cutover is running or being undone",
					"RELOAD again once it has finished");
	if (!proxy_reload(client->proxy))
		return admin_send_error(client, "F0000", "configuration not reloaded: see the log for the errors",
					"fix the file and RELOAD again; the previous configuration stays in force");
	return send_command_ok(client, "RELOAD");
}

static bool
run_shutdown(Client *client, const char *arg)
{
	(void) arg;
	log_info(client->subject, "SHUTDOWN requested");
	if (!send_command_ok(client, "SHUTDOWN"))
		return false;
	proxy_shutdown(client->proxy, false);
	return true;
}

static bool show_help(Client *client, const char *arg);

/*
 * The console's commands: dispatch, SHOW HELP and the hint for an unknown
 * command all read this table.  arg names an optional last word; run gets it,
 * or "" when it was not given.
 */
typedef struct AdminCommand {
	const char *words; /* upper case, one space between words */
	const char *arg;
	bool (*run)(Client *client, const char *arg);
	const char *help;
} AdminCommand;

static const AdminCommand commands[] = {
	{"SHOW CLIENTS", NULL, show_clients, "client connections: state, transaction status, server"},
	{"SHOW SERVERS", NULL, show_servers, "server connections: cluster, state, client"},
	{"SHOW POOLS", NULL, show_pools, "server connection pools: clients active and waiting, connections by state"},
	{"SHOW STATS", NULL, show_stats, "totals per database since start"},
	{"SHOW CONFIG", NULL, show_config, "the effective settings, secrets redacted"},
	{"SHOW DATABASES", NULL, show_databases, "the databases served, their cluster and pause state"},
	{"SHOW REPLICATION", NULL, show_replication, "the follower's phase, copy progress and lag per database"},
	{"SHOW VERSION", NULL, show_version, "pghandoff's version"},
	{"SHOW CUTOVER", NULL, show_cutover, "the running or last cutover or rollback"},
	{"SHOW CUTOVER JSON", NULL, show_cutover_json, "the same, as one JSON document"},
	{"SHOW FENCE", NULL, show_fence, "per cluster: fenced or not, and what an aborted cutover still has to undo"},
	{"SHOW HELP", NULL, show_help, "these commands"},
	{"PAUSE", "db", run_pause, "hold new queries; returns once every client is between transactions"},
	{"RESUME", "db", run_resume, "release what PAUSE holds"},
	{"CUTOVER", NULL, run_cutover, "move every client to the target"},
	{"CUTOVER DRY RUN", NULL, run_cutover_dry, "every check of a cutover, nothing switched"},
	{"ROLLBACK", NULL, run_rollback, "move every client back to the source"},
	{"RELOAD", NULL, run_reload, "read the configuration file again"},
	{"SHUTDOWN", NULL, run_shutdown, "stop the proxy"},
};

#define NCOMMANDS ((int) (sizeof(commands) / sizeof(commands[0])))

/* The command as a user types it: "PAUSE [db]". */
static void
command_usage(const AdminCommand *cmd, char *buf, size_t len)
{
	snprintf(buf, len, "%s%s%s%s", cmd->words, cmd->arg ? " [" : "", cmd->arg ? cmd->arg : "", cmd->arg ? "]" : "");
}

static bool
show_help(Client *client, const char *arg)
{
	static const char *const cols[] = {"command", "description"};
	Result r;
	int i;

	(void) arg;
	result_begin(&r, 2, cols);
	for (i = 0; i < NCOMMANDS; i++) {
		char usage[64];
		const char *values[2] = {usage, commands[i].help};

		command_usage(&commands[i], usage, sizeof(usage));
		result_row(&r, values);
	}
	return result_send(client, &r, "SHOW");
}

/* Does w[0..n) say cmd?  *arg is its optional last word, or "". */
static bool
command_matches(const AdminCommand *cmd, char w[MAX_WORDS][64], int n, const char **arg)
{
	const char *p = cmd->words;
	int i = 0;

	while (*p) {
		size_t len = strcspn(p, " ");

		if (i == n || strlen(w[i]) != len || strncasecmp(w[i], p, len) != 0)
			return false;
		i++;
		p += len;
		p += *p == ' ';
	}
	if (i == n) {
		*arg = "";
		return true;
	}
	if (cmd->arg && i + 1 == n) {
		*arg = w[i];
		return true;
	}
	return false;
}

static bool
admin_handle_query(Client *client, const char *sql)
{
	char w[MAX_WORDS][64];
	int n = split_words(sql, w);
	StrBuf hint;
	bool ok;
	int i;

	log_debug(client->subject, "admin command: %s", sql);
	if (n == 0)
		return send_command_ok(client, "EMPTY");
	for (i = 0; n > 0 && i < NCOMMANDS; i++) {
		const char *arg;

		if (command_matches(&commands[i], w, n, &arg))
			return commands[i].run(client, arg);
	}
	strbuf_init(&hint);
	strbuf_append(&hint, "commands: ");
	for (i = 0; i < NCOMMANDS; i++) {
		char usage[64];

		command_usage(&commands[i], usage, sizeof(usage));
		strbuf_appendf(&hint, "%s%s", i ? ", " : "", usage);
	}
	ok = admin_send_error(client, "42601", "unknown admin command", strbuf_str(&hint));
	strbuf_free(&hint);
	return ok;
}

bool
admin_on_packet(Client *client, const PktHeader *pkt)
{
	ProtoQuery q;
	char err[128];

	if (client->admin_waiting_pause || client->admin_waiting_cutover)
		return false; /* held until the PAUSE or CUTOVER it asked for is done */
	if (pkt->type == PQMSG_TERMINATE) {
		sbuf_consume(&client->sbuf, pkt->len);
		client_disconnect(client, NULL, "admin client sent Terminate");
		return false;
	}
	if (pkt->type != PQMSG_QUERY || client->admin_skip_to_sync)
		return admin_handle_other(client, pkt);
	if (pkt->avail != pkt->len || !proto_parse_query(pkt->body, pkt->body_avail, &q, err, sizeof(err))) {
		client_disconnect(client, "08P01", "invalid query message");
		return false;
	}
	sbuf_consume(&client->sbuf, pkt->len);
	return admin_handle_query(client, q.sql);
}
