/*
 * The cutover's phases that talk to the databases: checks, fence, catch-up,
 * sequences and verification.  Blocking libpq, on the worker thread.
 *
 * Catch-up does not compare WAL positions, which move for reasons that never
 * reach the follower (other databases, checkpoints): it writes a marker, a
 * transactional logical message, on the fenced side and waits until the
 * follower's replication origin has passed it.  Its commit is the last one on
 * that side, so every write before it has been applied.
 */
#include "cutover/db/steps.h"
#include "common/clock.h"
#include "common/errbuf.h"
#include "common/log.h"
#include "common/strbuf.h"
#include "replicator/conn.h"
#include "replicator/ddl.h"
#include "replicator/fence.h"
#include "replicator/largeobj.h"
#include "replicator/pgoutput.h"
#include "replicator/preflight.h"
#include "replicator/follow.h"
#include "replicator/names.h"
#include "replicator/replicate.h"
#include "replicator/sequences.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define VERIFY_MAX_CONNS 8

static void
sleep_seconds(double s)
{
	struct timespec ts = {(time_t) s, (long) ((s - (double) (time_t) s) * 1e9)};

	nanosleep(&ts, NULL);
}

/* Clients move the way the follower of the same direction streams (replicator/follow.h). */
static const ServerConfig *
from_server(const CutoverDirection *dir)
{
	return replicate_from_server(dir->config, dir->reverse);
}

static const ServerConfig *
to_server(const CutoverDirection *dir)
{
	return replicate_to_server(dir->config, dir->reverse);
}

static const char *
from_db(const CutoverDirection *dir, const DatabaseMapping *db)
{
	return replicate_from_db(db, dir->reverse);
}

static const char *
to_db(const CutoverDirection *dir, const DatabaseMapping *db)
{
	return replicate_to_db(db, dir->reverse);
}

/* The slot clients' writes leave through, and the origin that records them arriving. */
static void
follower_names(const CutoverDirection *dir, const DatabaseMapping *db, const char **slot, const char **origin,
	       ReplNames *names)
{
	ReplDirection follower;

	replicate_names(dir->config, db, names);
	replicate_direction(dir->config, db, names, dir->reverse, &follower);
	*slot = follower.slot;
	*origin = follower.origin;
}

static bool
connect_pair(const CutoverDirection *dir, const DatabaseMapping *db, ReplConn *from, ReplConn *to, char *err,
	     size_t errlen)
{
	char subject[160];

	snprintf(subject, sizeof(subject), "%s %s", dir->subject, from_db(dir, db));
	if (!repl_connect(from, from_server(dir), from_db(dir, db), false, subject))
		return errbuf_fail(err, errlen, "could not connect to the %s database %s", from_server(dir)->role,
				   from_db(dir, db));
	snprintf(subject, sizeof(subject), "%s %s", dir->subject, to_db(dir, db));
	/* A rollback writes sequences into the fenced source: this session is exempt. */
	if (!repl_connect(to, to_server(dir), to_db(dir, db), false, subject) ||
	    !repl_exec(to, "SET default_transaction_read_only = off")) {
		repl_close(from);
		repl_close(to);
		return errbuf_fail(err, errlen, "could not connect to the %s database %s", to_server(dir)->role,
				   to_db(dir, db));
	}
	return true;
}

static void
close_pair(ReplConn *from, ReplConn *to)
{
	repl_close(from);
	repl_close(to);
}

bool
steps_connect(const CutoverDirection *dir, CutoverLinks *links, char *err, size_t errlen)
{
	int i, n = dir->config->ndatabases;

	links->n = 0;
	links->from = calloc((size_t) n, sizeof(ReplConn));
	links->to = calloc((size_t) n, sizeof(ReplConn));
	if (!links->from || !links->to) {
		steps_disconnect(links);
		return errbuf_fail(err, errlen, "out of memory");
	}
	for (i = 0; i < n; i++) {
		if (!connect_pair(dir, &dir->config->databases[i], &links->from[i], &links->to[i], err, errlen)) {
			steps_disconnect(links);
			return false;
		}
		links->n++;
	}
	return true;
}

void
steps_disconnect(CutoverLinks *links)
{
	int i;

	for (i = 0; i < links->n; i++)
		close_pair(&links->from[i], &links->to[i]);
	free(links->from);
	free(links->to);
	links->from = links->to = NULL;
	links->n = 0;
}

static bool
check_lag(const CutoverDirection *dir, const DatabaseMapping *db, ReplConn *from, ReplConn *to, PrecheckFacts *facts,
	  char *err, size_t errlen)
{
	const char *slot, *origin;
	const char *params[1];
	char applied[LSN_FORMAT_LEN + 2];
	uint64_t applied_lsn = 0, current = 0, confirmed = 0;
	ReplNames names;
	PGresult *res;
	int64_t lag;

	follower_names(dir, db, &slot, &origin, &names);
	params[0] = slot;
	if (!repl_query(from,
			"SELECT active, pg_current_wal_lsn(), coalesce(confirmed_flush_lsn, '0/0') "
			"FROM pg_replication_slots WHERE slot_name = $1",
			1, params, &res))
		return errbuf_fail(err, errlen, "could not read the slot %s on the %s", slot, from_server(dir)->role);
	if (PQntuples(res) != 1 || strcmp(PQgetvalue(res, 0, 0), "t") != 0) {
		errbuf_fail(err, errlen, "%s: replication is not streaming (slot %s on the %s is %s)", db->name, slot,
			    from_server(dir)->role, PQntuples(res) == 1 ? "inactive" : "missing");
		PQclear(res);
		log_error(dir->subject, "%s", err);
		return false;
	}
	if (!lsn_parse(PQgetvalue(res, 0, 1), &current) || !lsn_parse(PQgetvalue(res, 0, 2), &confirmed)) {
		PQclear(res);
		return errbuf_fail(err, errlen, "unreadable LSN on the %s", from_server(dir)->role);
	}
	PQclear(res);
	params[0] = origin;
	if (!repl_query_copy_value(to, "SELECT coalesce(pg_replication_origin_progress($1, false), '0/0')", 1, params,
				   applied, sizeof(applied)) ||
	    !lsn_parse(applied, &applied_lsn))
		return errbuf_fail(err, errlen, "could not read the replication origin %s on the %s", origin,
				   to_server(dir)->role);
	/* The slot confirms WAL the follower had nothing to apply from; the origin, what it applied. */
	if (confirmed > applied_lsn)
		applied_lsn = confirmed;
	lag = current > applied_lsn ? (int64_t) (current - applied_lsn) : 0;
	if (lag > facts->max_lag_bytes)
		facts->max_lag_bytes = lag;
	if (lag > dir->config->cutover.max_lag) {
		errbuf_fail(err, errlen, "%s: replication lag is %lld bytes, more than max_lag (%lld)", db->name,
			    (long long) lag, (long long) dir->config->cutover.max_lag);
		log_error(dir->subject, "%s", err);
		return false;
	}
	return true;
}

static bool
check_columns(const CutoverDirection *dir, const DatabaseMapping *db, ReplConn *from, ReplConn *to,
	      PrecheckFacts *facts, char *err, size_t errlen)
{
	PGresult *a, *b;
	int i, j, na, nb;
	bool ok = true;

	if (!repl_query(from, preflight_sql_table_columns, 0, NULL, &a))
		return errbuf_fail(err, errlen, "could not list the tables of %s", from_db(dir, db));
	if (!repl_query(to, preflight_sql_table_columns, 0, NULL, &b)) {
		PQclear(a);
		return errbuf_fail(err, errlen, "could not list the tables of %s", to_db(dir, db));
	}
	na = PQntuples(a);
	nb = PQntuples(b);
	/* Both lists are sorted by name: one merge pass. */
	for (i = 0, j = 0; ok && i < na; i++) {
		const char *name = PQgetvalue(a, i, 0);
		int cmp = 1;

		while (j < nb && (cmp = strcmp(PQgetvalue(b, j, 0), name)) < 0)
			j++;
		if (j >= nb || cmp != 0) {
			errbuf_fail(err, errlen, "%s: table %s is missing on the %s", db->name, name,
				    to_server(dir)->role);
			ok = false;
		} else if (strcmp(PQgetvalue(a, i, 1), PQgetvalue(b, j, 1)) != 0) {
			errbuf_fail(err, errlen, "%s: table %s differs: %s has (%s), %s has (%s)", db->name, name,
				    from_server(dir)->role, PQgetvalue(a, i, 1), to_server(dir)->role,
				    PQgetvalue(b, j, 1));
			ok = false;
		}
		facts->tables++;
	}
	PQclear(a);
	PQclear(b);
	if (!ok)
		log_error(dir->subject, "%s", err);
	return ok;
}

/* With ddl = replay schema changes were replayed: indexes and constraints must have come along too. */
static bool
check_definitions(const CutoverDirection *dir, const DatabaseMapping *db, ReplConn *from, ReplConn *to, char *err,
		  size_t errlen)
{
	if (dir->config->replication.ddl != DDL_REPLAY ||
	    ddl_compare_definitions(from, to, db->name, from_server(dir)->role, to_server(dir)->role, err, errlen))
		return true;
	log_error(dir->subject, "%s", err);
	return false;
}

/*
 * A rollback also waits for the forward follower (it must pass the reverse
 * follower's writes before their origin goes): its slot must be in use.
 */
static bool
check_forward_streams(const CutoverDirection *dir, const DatabaseMapping *db, ReplConn *source, char *err,
		      size_t errlen)
{
	const char *params[1];
	char active[8];
	ReplNames names;

	replicate_names(dir->config, db, &names);
	params[0] = names.slot;
	if (!repl_query_copy_value(source,
				   "SELECT coalesce(bool_or(active), false) FROM pg_replication_slots "
				   "WHERE slot_name = $1",
				   1, params, active, sizeof(active)))
		return errbuf_fail(err, errlen, "could not read the slot %s on the source", names.slot);
	if (strcmp(active, "t") != 0) {
		errbuf_fail(err, errlen,
			    "%s: the forward follower is not streaming (slot %s on the source is inactive): "
			    "start `pghandoff run` or `pghandoff replicate`",
			    db->name, names.slot);
		log_error(dir->subject, "%s", err);
		return false;
	}
	return true;
}

bool
steps_precheck(const CutoverDirection *dir, CutoverLinks *links, PrecheckFacts *facts, char *err, size_t errlen)
{
	int i;

	memset(facts, 0, sizeof(*facts));
	for (i = 0; i < links->n; i++) {
		const DatabaseMapping *db = &dir->config->databases[i];

		if (!check_lag(dir, db, &links->from[i], &links->to[i], facts, err, errlen) ||
		    !check_columns(dir, db, &links->from[i], &links->to[i], facts, err, errlen) ||
		    !check_definitions(dir, db, &links->from[i], &links->to[i], err, errlen) ||
		    (dir->reverse && !check_forward_streams(dir, db, &links->to[i], err, errlen)))
			return false;
	}
	return true;
}

/* conn is a connection to dbname, on the cluster role names.  Off also removes the fence's LSN (record_fence). */
static bool
set_read_only(ReplConn *conn, const char *role, const char *dbname, bool on, char *err, size_t errlen)
{
	StrBuf sql;
	bool ok;

	strbuf_init(&sql);
	strbuf_append(&sql, "ALTER DATABASE ");
	repl_append_ident(&sql, conn->conn, dbname);
	strbuf_append(&sql, on ? " SET default_transaction_read_only = on" : " RESET default_transaction_read_only");
	if (!on) {
		strbuf_append(&sql, "; ALTER DATABASE ");
		repl_append_ident(&sql, conn->conn, dbname);
		strbuf_append(&sql, " RESET " FENCE_SETTING);
	}
	ok = !sql.failed && repl_exec(conn, strbuf_str(&sql));
	strbuf_free(&sql);
	if (!ok)
		return errbuf_fail(err, errlen, "could not %s the %s database %s", on ? "fence" : "unfence", role,
				   dbname);
	return true;
}

bool
steps_unfence_arrival(const CutoverDirection *dir, CutoverLinks *links, char *err, size_t errlen)
{
	int i;

	for (i = 0; i < links->n; i++)
		if (!set_read_only(&links->to[i], to_server(dir)->role, to_db(dir, &dir->config->databases[i]), false,
				   err, errlen))
			return false;
	return true;
}

/*
 * Once the sessions the fence ended are gone (none of them can commit any
 * more), the WAL position is the fence's: recorded in the database's
 * settings, where the follower reads it (replicator/fence.h) and refuses
 * any transaction committed after it, until set_read_only(off) removes it.
 */
static bool
record_fence(const CutoverDirection *dir, ReplConn *conn, const char *dbname, const char *ended, char *err,
	     size_t errlen)
{
	const char *params[1] = {ended};
	double start = clock_monotonic(), pause = 0.0002;
	char left[32];

	for (;;) {
		if (!repl_query_copy_value(conn,
					   "SELECT count(*) FROM pg_catalog.pg_stat_activity WHERE pid = ANY ($1::int[])",
					   1, params, left, sizeof(left)))
			return errbuf_fail(err, errlen, "could not read the sessions of %s", dbname);
		if (strcmp(left, "0") == 0)
			break;
		if (clock_monotonic() - start > (double) dir->config->cutover.catchup_timeout / 1e6) {
			errbuf_fail(err, errlen,
				    "%s: %s session(s) ended by the fence still there after %.1f s (catchup_timeout)",
				    dbname, left, (double) dir->config->cutover.catchup_timeout / 1e6);
			log_error(dir->subject, "%s", err);
			return false;
		}
		sleep_seconds(pause);
		if (pause < 0.005)
			pause *= 2;
	}
	if (!repl_exec(conn,
		       "DO $$BEGIN EXECUTE pg_catalog.format('ALTER DATABASE %I SET " FENCE_SETTING " = %L', "
		       "pg_catalog.current_database(), pg_catalog.pg_current_wal_lsn()); END$$"))
		return errbuf_fail(err, errlen, "could not record the fence of the %s database %s",
				   from_server(dir)->role, dbname);
	return true;
}

bool
steps_fence(const CutoverDirection *dir, CutoverLinks *links, char *const *pids, int *terminated, char *err,
	    size_t errlen)
{
	int i;

	*terminated = 0;
	for (i = 0; i < links->n; i++) {
		const DatabaseMapping *db = &dir->config->databases[i];
		const char *params[2] = {from_db(dir, db), pids[i]};
		PGresult *res;
		bool ok;

		/*
		 * New sessions start read-only; those already there (other than
		 * the proxy's own and pghandoff's followers) are ended, so nothing
		 * written around the proxy can land after the marker.
		 */
		if (!set_read_only(&links->from[i], from_server(dir)->role, from_db(dir, db), true, err, errlen))
			return false;
		/* OFFSET 0: pg_terminate_backend runs on the sessions chosen, and on nothing else. */
		if (!repl_query(&links->from[i],
				"SELECT count(*), coalesce(array_agg(pid)::text, '{}') FROM ("
				"  SELECT pid FROM pg_stat_activity "
				"  WHERE datname = $1 AND pid <> pg_backend_pid() AND backend_type = 'client backend' "
				"    AND coalesce(application_name, '') <> 'pghandoff' AND NOT (pid = ANY ($2::int[])) OFFSET 0) a "
				"WHERE pg_terminate_backend(pid)",
				2, params, &res))
			return errbuf_fail(err, errlen, "could not end the sessions around the proxy on %s",
					   from_db(dir, db));
		ok = PQntuples(res) == 1;
		if (ok) {
			*terminated += (int) strtol(PQgetvalue(res, 0, 0), NULL, 10);
			ok = record_fence(dir, &links->from[i], from_db(dir, db), PQgetvalue(res, 0, 1), err, errlen);
		} else {
			errbuf_fail(err, errlen, "could not end the sessions around the proxy on %s", from_db(dir, db));
		}
		PQclear(res);
		if (!ok)
			return false;
	}
	return true;
}

bool
steps_unfence(const CutoverDirection *dir, char *err, size_t errlen)
{
	bool ok = true;
	int i;

	for (i = 0; i < dir->config->ndatabases; i++) {
		const DatabaseMapping *db = &dir->config->databases[i];
		ReplConn from;
		char subject[160];

		snprintf(subject, sizeof(subject), "%s %s", dir->subject, from_db(dir, db));
		/* A new session there is read-only by now: this one is exempt. */
		if (!repl_connect(&from, from_server(dir), from_db(dir, db), false, subject) ||
		    !repl_exec(&from, "SET default_transaction_read_only = off")) {
			repl_close(&from);
			ok = errbuf_fail(err, errlen, "could not connect to the %s database %s to unfence it",
					 from_server(dir)->role, from_db(dir, db));
			continue;
		}
		if (!set_read_only(&from, from_server(dir)->role, from_db(dir, db), false, err, errlen))
			ok = false;
		repl_close(&from);
	}
	return ok;
}

/* Writes the marker on every database, then waits for every origin to pass its marker. */
static bool
markers_applied(const CutoverDirection *dir, CutoverLinks *links, double timeout, const char *timeout_name, char *lsns,
		size_t lsnslen, char *err, size_t errlen)
{
	int n = links->n, i, left;
	uint64_t *marker = calloc((size_t) n + 1, sizeof(uint64_t));
	bool *done = calloc((size_t) n + 1, sizeof(bool));
	bool ok = true;
	double start, pause = 0.0002;
	StrBuf report;

	/* A side that stops answering holds no query past the catch-up's own deadline. */
	repl_deadline_cap(clock_monotonic() + timeout, timeout_name);
	strbuf_init(&report);
	if (!marker || !done) {
		ok = errbuf_fail(err, errlen, "out of memory");
		goto out;
	}
	for (i = 0; ok && i < n; i++) {
		char lsn[LSN_FORMAT_LEN + 2];

		if (!repl_query_copy_value(&links->from[i],
					   "SELECT pg_logical_emit_message(true, 'pghandoff', 'cutover')", 0, NULL, lsn,
					   sizeof(lsn)) ||
		    !lsn_parse(lsn, &marker[i]))
			ok = errbuf_fail(err, errlen, "could not write the catch-up marker on the %s database %s",
					 from_server(dir)->role, from_db(dir, &dir->config->databases[i]));
		strbuf_appendf(&report, "%s%s=%s", i ? " " : "", dir->config->databases[i].name, lsn);
	}
	start = clock_monotonic();
	for (left = n; ok && left > 0;) {
		for (i = 0; ok && i < n; i++) {
			const char *slot, *origin;
			const char *params[1];
			char applied[LSN_FORMAT_LEN + 2];
			uint64_t lsn = 0;
			ReplNames names;

			if (done[i])
				continue;
			follower_names(dir, &dir->config->databases[i], &slot, &origin, &names);
			params[0] = origin;
			if (!repl_query_copy_value(&links->to[i],
						   "SELECT coalesce(pg_replication_origin_progress($1, false), '0/0')",
						   1, params, applied, sizeof(applied)) ||
			    !lsn_parse(applied, &lsn)) {
				ok = errbuf_fail(err, errlen, "could not read the replication origin %s", origin);
				break;
			}
			if (lsn >= marker[i]) {
				done[i] = true;
				left--;
			}
		}
		if (!ok || left == 0)
			break;
		if (clock_monotonic() - start > timeout) {
			ok = errbuf_fail(err, errlen,
					 "the follower did not apply the last writes within %.1f s "
					 "(%s)",
					 timeout, timeout_name);
			log_error(dir->subject, "%s", err);
			break;
		}
		/* The follower commits within milliseconds; poll fast, then back off a little. */
		sleep_seconds(pause);
		if (pause < 0.005)
			pause *= 2;
	}
	if (ok && lsns)
		snprintf(lsns, lsnslen, "%s", strbuf_str(&report));
out:
	repl_deadline_cap(0, NULL);
	strbuf_free(&report);
	free(marker);
	free(done);
	return ok;
}

bool
steps_catch_up(const CutoverDirection *dir, CutoverLinks *links, char *lsns, size_t lsnslen, char *err, size_t errlen)
{
	return markers_applied(dir, links, (double) dir->config->cutover.catchup_timeout / 1e6, "catchup_timeout", lsns,
			       lsnslen, err, errlen);
}

bool
steps_catch_up_other_way(const CutoverDirection *dir, CutoverLinks *links, char *err, size_t errlen)
{
	CutoverDirection other = *dir;
	CutoverLinks flipped = {links->n, links->to, links->from};

	other.reverse = !dir->reverse;
	return markers_applied(&other, &flipped, (double) dir->config->cutover.catchup_timeout / 1e6, "catchup_timeout",
			       NULL, 0, err, errlen);
}

bool
steps_measure_catch_up(const CutoverDirection *dir, CutoverLinks *links, double *seconds, char *err, size_t errlen)
{
	double start = clock_monotonic();

	if (!markers_applied(dir, links, (double) dir->config->cutover.catchup_timeout / 1e6, "catchup_timeout", NULL,
			     0, err, errlen))
		return false;
	*seconds = clock_monotonic() - start;
	return true;
}

/*
 * Large objects are not in the stream: the last diff runs here, after the
 * fence, and must end within catchup_timeout like the catch-up before it.
 * It waits for a round of the follower still running (largeobj.h).
 */
static bool
last_large_object_diff(const CutoverDirection *dir, CutoverLinks *links, int i, char *err, size_t errlen)
{
	double timeout = (double) dir->config->cutover.catchup_timeout / 1e6;
	LargeObjRound round = {.deadline = clock_monotonic() + timeout};
	bool ok;

	repl_deadline_cap(round.deadline, "catchup_timeout");
	ok = largeobj_sync(&links->from[i], &links->to[i], &round);
	repl_deadline_cap(0, NULL);
	if (!ok)
		return errbuf_fail(err, errlen,
				   "could not copy the large objects of %s within %.1f s (catchup_timeout)",
				   dir->config->databases[i].name, timeout);
	if (round.total > 0 || round.unlinked > 0)
		log_info(dir->subject, "%s: large objects: %d copied, %d unlinked, %d found equal, %d in step",
			 dir->config->databases[i].name, round.copied, round.unlinked, round.verified, round.in_step);
	return true;
}

bool
steps_sequences(const CutoverDirection *dir, CutoverLinks *links, int *count, char *err, size_t errlen)
{
	int i;

	*count = 0;
	for (i = 0; i < links->n; i++) {
		int n = 0;

		if (!sequences_sync(&links->from[i], &links->to[i], &n))
			return errbuf_fail(err, errlen, "could not copy the sequences of %s",
					   dir->config->databases[i].name);
		*count += n;
		if (!last_large_object_diff(dir, links, i, err, errlen))
			return false;
	}
	return true;
}

bool
steps_measure_large_objects(const CutoverDirection *dir, CutoverLinks *links, double *seconds, int *differing,
			    char *err, size_t errlen)
{
	double start = clock_monotonic();
	int i;

	*differing = 0;
	for (i = 0; i < links->n; i++) {
		LargeObjRound round = {.diff_only = true};

		if (!largeobj_sync(&links->from[i], &links->to[i], &round))
			return errbuf_fail(err, errlen, "could not diff the large objects of %s",
					   dir->config->databases[i].name);
		*differing += round.copied + round.unlinked;
	}
	*seconds = clock_monotonic() - start;
	return true;
}

/* One connection's share of the tables, counted in one query. */
typedef struct CountJob {
	ReplConn conn;
	StrBuf sql;
	PGresult *res;
} CountJob;

static bool
run_counts(CountJob *jobs, int njobs, char *err, size_t errlen)
{
	int i;
	bool ok = true;

	for (i = 0; i < njobs; i++)
		if (jobs[i].sql.len > 0 && PQsendQuery(jobs[i].conn.conn, strbuf_str(&jobs[i].sql)) != 1)
			ok = errbuf_fail(err, errlen, "could not send a count query: %s",
					 PQerrorMessage(jobs[i].conn.conn));
	/* Within the worker's deadline: a side that stops answering fails the verification, it does not hold it. */
	for (i = 0; ok && i < njobs; i++)
		if (jobs[i].sql.len > 0 && !repl_get_result(&jobs[i].conn, &jobs[i].res))
			ok = errbuf_fail(err, errlen, "counting rows failed on the %s", jobs[i].conn.role);
	return ok;
}

static bool
verify_database(const CutoverDirection *dir, const DatabaseMapping *db, int *ntables, char *err, size_t errlen)
{
	int njobs = dir->config->replication.copy_jobs, i, k, n;
	CountJob jobs[2 * VERIFY_MAX_CONNS];
	ReplConn list_from, list_to;
	PGresult *tables;
	bool ok = true;

	if (njobs > VERIFY_MAX_CONNS)
		njobs = VERIFY_MAX_CONNS;
	if (!connect_pair(dir, db, &list_from, &list_to, err, errlen))
		return false;
	ok = repl_query(&list_from, preflight_sql_table_columns, 0, NULL, &tables);
	close_pair(&list_from, &list_to);
	if (!ok)
		return errbuf_fail(err, errlen, "could not list the tables of %s", db->name);
	n = PQntuples(tables);
	if (njobs > n)
		njobs = n;
	memset(jobs, 0, sizeof(jobs));
	/* jobs[k] counts on the side left, jobs[njobs + k] the same tables on the other side. */
	for (k = 0; ok && k < njobs; k++) {
		if (!connect_pair(dir, db, &jobs[k].conn, &jobs[njobs + k].conn, err, errlen)) {
			ok = false;
			break;
		}
		strbuf_init(&jobs[k].sql);
		strbuf_init(&jobs[njobs + k].sql);
	}
	for (i = 0; ok && i < n; i++) {
		for (k = 0; k < 2; k++) {
			StrBuf *sql = &jobs[k * njobs + i % njobs].sql;

			strbuf_appendf(sql, "%s(SELECT count(*) FROM %s)", sql->len ? ", " : "SELECT ",
				       PQgetvalue(tables, i, 0));
		}
	}
	if (ok)
		ok = run_counts(jobs, 2 * njobs, err, errlen);
	for (i = 0; ok && i < n; i++) {
		PGresult *a = jobs[i % njobs].res, *b = jobs[njobs + i % njobs].res;
		int col = i / njobs;

		if (!a || !b || PQntuples(a) != 1 || PQntuples(b) != 1) {
			ok = errbuf_fail(err, errlen, "%s: row counts could not be read", db->name);
			break;
		}
		if (strcmp(PQgetvalue(a, 0, col), PQgetvalue(b, 0, col)) != 0) {
			ok = errbuf_fail(err, errlen, "%s: table %s has %s rows on the %s and %s on the %s", db->name,
					 PQgetvalue(tables, i, 0), PQgetvalue(a, 0, col), from_server(dir)->role,
					 PQgetvalue(b, 0, col), to_server(dir)->role);
			log_error(dir->subject, "verify: %s", err);
		}
	}
	for (k = 0; k < 2 * njobs; k++) {
		repl_close(&jobs[k].conn);
		strbuf_free(&jobs[k].sql);
		PQclear(jobs[k].res);
	}
	PQclear(tables);
	*ntables += n;
	return ok;
}

bool
steps_verify_counts(const CutoverDirection *dir, int *tables, char *err, size_t errlen)
{
	int i;

	*tables = 0;
	for (i = 0; i < dir->config->ndatabases; i++)
		if (!verify_database(dir, &dir->config->databases[i], tables, err, errlen))
			return false;
	return true;
}
