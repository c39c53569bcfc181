/*
 * Blocking libpq for the replicator.  Errors are logged here, once, with the
 * connection's subject and the server's SQLSTATE.
 */
#include "replicator/conn.h"
#include "common/log.h"
#include "common/clock.h"
#include "common/strbuf.h"
#include "replicator/replicate.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* Notices ("table ... does not exist, skipping") are the servers' chatter: the debug log takes them. */
static void
notice_to_log(void *arg, const char *message)
{
	(void) arg;
	log_debug("server", "%.*s", (int) strcspn(message, "\n"), message);
}

bool
repl_connect(ReplConn *rc, const ServerConfig *server, const char *dbname, bool replication, const char *subject)
{
	const char *keywords[CONFIG_MAX_CONN_PARAMS + 5];
	const char *values[CONFIG_MAX_CONN_PARAMS + 5];
	int n = 0;

	memset(rc, 0, sizeof(*rc));
	snprintf(rc->subject, sizeof(rc->subject), "%s", subject);
	config_conn_params(server, dbname, "pghandoff", keywords, values);
	while (keywords[n])
		n++;
	if (replication) {
		keywords[n] = "replication";
		values[n++] = "database";
	}
	/*
	 * Values travel as text between the clusters, so both ends speak one
	 * unambiguous dialect whatever the databases' defaults say: the settings
	 * native logical replication forces on its walsender too.
	 */
	keywords[n] = "options";
	values[n++] = "-c datestyle=ISO -c intervalstyle=postgres -c extra_float_digits=3";
	keywords[n] = "client_encoding";
	values[n++] = "UTF8";
	keywords[n] = NULL;
	values[n] = NULL;
	rc->conn = PQconnectdbParams(keywords, values, 1);
	if (!rc->conn || PQstatus(rc->conn) != CONNECTION_OK) {
		const char *msg = rc->conn ? PQerrorMessage(rc->conn) : "out of memory";

		log_error(rc->subject, "could not connect to the %s database %s: %.*s", server->role, dbname,
			  (int) strcspn(msg, "\n"), msg);
		PQfinish(rc->conn);
		rc->conn = NULL;
		return false;
	}
	rc->version = PQserverVersion(rc->conn);
	PQsetNoticeProcessor(rc->conn, notice_to_log, NULL);
	return true;
}

void
repl_close(ReplConn *rc)
{
	if (rc->conn)
		PQfinish(rc->conn);
	rc->conn = NULL;
}

static void
log_result_error(ReplConn *rc, PGresult *res, const char *sql)
{
	const char *state = res ? PQresultErrorField(res, PG_DIAG_SQLSTATE) : NULL;
	const char *msg = res ? PQresultErrorField(res, PG_DIAG_MESSAGE_PRIMARY) : NULL;
	const char *detail = res ? PQresultErrorField(res, PG_DIAG_MESSAGE_DETAIL) : NULL;

	if (!msg)
		msg = PQerrorMessage(rc->conn);
	log_error(rc->subject, "%s: %.*s%s%s (query: %.200s)", state ? state : "08006", (int) strcspn(msg, "\n"), msg,
		  detail ? "; " : "", detail ? detail : "", sql);
}

bool
repl_exec_params(ReplConn *rc, const char *sql, int nparams, const char *const *params)
{
	PGresult *res;

	if (!repl_query(rc, sql, nparams, params, &res))
		return false;
	PQclear(res);
	return true;
}

bool
repl_query(ReplConn *rc, const char *sql, int nparams, const char *const *params, PGresult **result)
{
	/* Replication connections take only the simple protocol. */
	PGresult *res = nparams == 0 ? PQexec(rc->conn, sql) : PQexecParams(rc->conn, sql, nparams, NULL, params, NULL, NULL, 0);
	ExecStatusType st = PQresultStatus(res);

	if (st == PGRES_TUPLES_OK || st == PGRES_COMMAND_OK) {
		*result = res;
		return true;
	}
	log_result_error(rc, res, sql);
	PQclear(res);
	return false;
}

bool
repl_query_while_in_use(ReplConn *rc, const char *sql, int nparams, const char *const *params, ExecStatusType ok,
			double wait_s, PGresult **result)
{
	double deadline = clock_monotonic() + wait_s;
	bool warned = false;

	for (;;) {
		PGresult *res = nparams == 0 ? PQexec(rc->conn, sql)
					     : PQexecParams(rc->conn, sql, nparams, NULL, params, NULL, NULL, 0);
		const char *state = PQresultErrorField(res, PG_DIAG_SQLSTATE);

		if (PQresultStatus(res) == ok) {
			if (warned)
				log_info(rc->subject, "the previous session let go; going on");
			*result = res;
			return true;
		}
		if (!state || strcmp(state, "55006") != 0 || clock_monotonic() >= deadline || replicate_stop_requested) {
			log_result_error(rc, res, sql);
			PQclear(res);
			return false;
		}
		if (!warned) {
			const char *msg = PQresultErrorField(res, PG_DIAG_MESSAGE_PRIMARY);

			log_warning(rc->subject, "%s: held by a previous follower's session that has not ended yet; "
				    "trying again for up to %.0f s", msg ? msg : "object in use", wait_s);
			warned = true;
		}
		PQclear(res);
		usleep(250 * 1000);
	}
}

bool
repl_exec(ReplConn *rc, const char *sql)
{
	PGresult *res = PQexec(rc->conn, sql);
	ExecStatusType st = PQresultStatus(res);
	bool ok = st == PGRES_TUPLES_OK || st == PGRES_COMMAND_OK;

	if (!ok)
		log_result_error(rc, res, sql);
	PQclear(res);
	return ok;
}

bool
repl_query_copy_value(ReplConn *rc, const char *sql, int nparams, const char *const *params, char *buf, size_t len)
{
	PGresult *res;

	if (!repl_query(rc, sql, nparams, params, &res))
		return false;
	if (PQntuples(res) < 1 || PQnfields(res) < 1) {
		log_error(rc->subject, "query returned no row: %.200s", sql);
		PQclear(res);
		return false;
	}
	snprintf(buf, len, "%s", PQgetvalue(res, 0, 0));
	PQclear(res);
	return true;
}

static void
append_conninfo_value(StrBuf *sb, const char *key, const char *value)
{
	const char *p;

	if (!value || !value[0])
		return;
	strbuf_appendf(sb, "%s%s='", sb->len ? " " : "", key);
	for (p = value; *p; p++) {
		if (*p == '\'' || *p == '\\')
			strbuf_append_char(sb, '\\');
		strbuf_append_char(sb, *p);
	}
	strbuf_append_char(sb, '\'');
}

char *
repl_conninfo(const ServerConfig *server, const char *dbname)
{
	const char *keywords[CONFIG_MAX_CONN_PARAMS + 1];
	const char *values[CONFIG_MAX_CONN_PARAMS + 1];
	PQconninfoOption *opts = NULL;
	StrBuf sb;
	int i;

	strbuf_init(&sb);
	config_conn_params(server, dbname, "pghandoff", keywords, values);
	for (i = 0; keywords[i]; i++) {
		if (i == 0 && strcmp(keywords[i], "dbname") == 0 && server->conninfo[0]) {
			/* Spell out what the conninfo says; later keys override it. */
			PQconninfoOption *o;

			opts = PQconninfoParse(server->conninfo, NULL);
			for (o = opts; o && o->keyword; o++)
				if (strcmp(o->keyword, "password") != 0 && strcmp(o->keyword, "dbname") != 0)
					append_conninfo_value(&sb, o->keyword, o->val);
			continue;
		}
		if (strcmp(keywords[i], "password") == 0)
			continue;
		append_conninfo_value(&sb, keywords[i], values[i]);
	}
	PQconninfoFree(opts);
	if (sb.failed) {
		strbuf_free(&sb);
		return NULL;
	}
	return sb.data;
}

void
repl_append_ident(StrBuf *sb, PGconn *conn, const char *name)
{
	char *id = PQescapeIdentifier(conn, name, strlen(name));

	if (!id) {
		sb->failed = true;
		return;
	}
	strbuf_append(sb, id);
	PQfreemem(id);
}

void
repl_append_qualified(StrBuf *sb, PGconn *conn, const char *nspname, const char *relname)
{
	repl_append_ident(sb, conn, nspname);
	strbuf_append_char(sb, '.');
	repl_append_ident(sb, conn, relname);
}
