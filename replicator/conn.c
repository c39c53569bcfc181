/*
 * Blocking libpq for the replicator and the cutover's worker.  Errors are
 * logged here, once, with the connection's subject and the server's SQLSTATE.
 * Under a deadline (repl_deadline_begin) logins and queries run on libpq's
 * asynchronous calls, polled until the deadline, since a stopped server never
 * times itself out.
 */
#include "replicator/conn.h"
#include "common/clock.h"
#include "common/log.h"
#include "common/clock.h"
#include "common/pgsql.h"
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

/*
 * The calling thread's deadlines: per thread, because the cutover's worker
 * and the replicator's threads share this file but not their bounds.
 */
static __thread struct {
	double timeout; /* seconds per call; 0: unbounded */
	const char *timeout_what;
	double cap; /* clock_monotonic(); 0: none */
	const char *cap_what;
	char missed[160];
} deadline;

void
repl_deadline_begin(double timeout, const char *what)
{
	deadline.timeout = timeout;
	deadline.timeout_what = what;
	deadline.cap = 0;
	deadline.cap_what = NULL;
	deadline.missed[0] = '\0';
}

void
repl_deadline_cap(double until, const char *what)
{
	deadline.cap = until;
	deadline.cap_what = what;
}

void
repl_deadline_end(void)
{
	deadline.timeout = 0;
	deadline.cap = 0;
}

const char *
repl_deadline_missed(void)
{
	return deadline.missed[0] ? deadline.missed : NULL;
}

static bool
deadline_active(void)
{
	return deadline.timeout > 0 || deadline.cap > 0;
}

/* When the call starting now gives up: the earlier of its timeout and the cap. */
static double
deadline_for_call(const char **what, double *waited)
{
	double now = clock_monotonic(), at = deadline.timeout > 0 ? now + deadline.timeout : 0;

	*what = deadline.timeout_what;
	if (deadline.cap > 0 && (at == 0 || deadline.cap < at)) {
		at = deadline.cap;
		*what = deadline.cap_what;
	}
	*waited = at - now;
	return at;
}

/* The server did not answer in time: said once, remembered for the caller's report. */
static void
deadline_missed(ReplConn *rc, const char *what, double waited, const char *doing)
{
	if (!deadline.missed[0])
		snprintf(deadline.missed, sizeof(deadline.missed), "the %s did not answer within %.1f s (%s)",
			 rc->role ? rc->role : "server", waited > 0 ? waited : 0.0, what ? what : "deadline");
	log_error(rc->subject, "the %s did not answer within %.1f s (%s), giving up on it (%.200s)",
		  rc->role ? rc->role : "server", waited > 0 ? waited : 0.0, what ? what : "deadline", doing);
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
	rc->role = server->role;
	if (deadline_active()) {
		const char *what;
		double waited, at = deadline_for_call(&what, &waited);
		bool expired;

		rc->conn = pgsql_connect_until(keywords, values, at, &expired);
		if (expired) {
			deadline_missed(rc, what, waited, "login");
			return false;
		}
	} else {
		rc->conn = PQconnectdbParams(keywords, values, 1);
	}
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

/* Waits for what was sent; on expiry the connection is closed, mid-query as it is. */
static bool
wait_result(ReplConn *rc, const char *sql, PGresult **result)
{
	const char *what;
	double waited, at = deadline_for_call(&what, &waited);

	if (pgsql_get_result_until(rc->conn, at, result))
		return true;
	deadline_missed(rc, what, waited, sql);
	pgsql_cancel_detached(rc->conn);
	repl_close(rc);
	return false;
}

/* Runs sql as PQexec (or PQexecParams) would, within the thread's deadline; errors logged. */
static bool
run(ReplConn *rc, const char *sql, int nparams, const char *const *params, PGresult **result)
{
	PGresult *res = NULL;
	ExecStatusType st;

	*result = NULL;
	if (!rc->conn) {
		log_error(rc->subject, "08003: no connection to the %s (query: %.200s)", rc->role ? rc->role : "server",
			  sql);
		return false;
	}
	/* Replication connections take only the simple protocol. */
	if (!deadline_active())
		res = nparams == 0 ? PQexec(rc->conn, sql)
				   : PQexecParams(rc->conn, sql, nparams, NULL, params, NULL, NULL, 0);
	else if ((nparams == 0 ? PQsendQuery(rc->conn, sql)
			       : PQsendQueryParams(rc->conn, sql, nparams, NULL, params, NULL, NULL, 0)) == 1 &&
		 !wait_result(rc, sql, &res))
		return false; /* error already logged */
	st = PQresultStatus(res);
	if (st == PGRES_TUPLES_OK || st == PGRES_COMMAND_OK) {
		*result = res;
		return true;
	}
	log_result_error(rc, res, sql);
	PQclear(res);
	return false;
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
	return run(rc, sql, nparams, params, result);
}

bool
repl_query_while_in_use(ReplConn *rc, const char *sql, int nparams, const char *const *params, ExecStatusType ok,
			double wait_s, PGresult **result)
{
	double give_up_at = clock_monotonic() + wait_s;
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
		if (!state || strcmp(state, "55006") != 0 || clock_monotonic() >= give_up_at ||
		    replicate_stop_requested) {
			log_result_error(rc, res, sql);
			PQclear(res);
			return false;
		}
		if (!warned) {
			const char *msg = PQresultErrorField(res, PG_DIAG_MESSAGE_PRIMARY);

			log_warning(rc->subject,
				    "%s: held by a previous follower's session that has not ended yet; "
				    "trying again for up to %.0f s",
				    msg ? msg : "object in use", wait_s);
			warned = true;
		}
		PQclear(res);
		usleep(250 * 1000);
	}
}

bool
repl_exec(ReplConn *rc, const char *sql)
{
	PGresult *res;

	if (!run(rc, sql, 0, NULL, &res))
		return false;
	PQclear(res);
	return true;
}

bool
repl_get_result(ReplConn *rc, PGresult **result)
{
	PGresult *res = NULL;
	ExecStatusType st;

	*result = NULL;
	if (!rc->conn)
		return false;
	if (deadline_active()) {
		if (!wait_result(rc, "the query sent", &res))
			return false; /* error already logged */
	} else {
		PGresult *next;

		/* As PQexec: the first error, else the last result. */
		while ((next = PQgetResult(rc->conn)) != NULL) {
			if (res && PQresultStatus(res) == PGRES_FATAL_ERROR) {
				PQclear(next);
			} else {
				PQclear(res);
				res = next;
			}
		}
	}
	st = PQresultStatus(res);
	if (st == PGRES_TUPLES_OK || st == PGRES_COMMAND_OK) {
		*result = res;
		return true;
	}
	log_result_error(rc, res, "the query sent");
	PQclear(res);
	return false;
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
