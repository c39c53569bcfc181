/*
 * Capture of schema changes (event triggers writing to pghandoff.ddl_log)
 * and their replay at the same position of the stream: see ddl.h.
 */
#include "replicator/ddl.h"
#include "common/log.h"
#include "common/strbuf.h"
#include "replicator/ddlsql.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/*
 * The capture, created in one transaction, with event triggers off in this
 * session so that its own commands are not captured.
 *
 * ddl_ordinal: the n-th command of the same query string (same statement
 * start time and text length) in this session; a multi-statement string
 * fires the triggers once per statement, and current_query() is the whole
 * string, so the ordinal is what tells its statements apart.  REINDEX is
 * not counted (it fires event triggers only from 17 on); ddlsql.c counts
 * the string's statements the same way.
 *
 * ddl_depth: how deep the command is in other schema changes of the same
 * statement, counted up at ddl_command_start and down at ddl_command_end
 * (both fire for the same commands; a rollback takes the counts back with
 * the settings).  A command inside another (the temporary tables REFRESH
 * MATERIALIZED VIEW CONCURRENTLY makes and drops) is that command's own
 * work: it is neither counted nor captured, the outer command is.  A DO
 * block or a function fires no trigger of its own, so the commands it runs
 * are at depth one, captured, and refused by the replay (ddlsql.h).  The key
 * resets the depth at the next statement, after a command that committed
 * part of its work before it failed (CREATE INDEX CONCURRENTLY).
 *
 * ddl_record runs as its owner (the table is nobody else's to write), takes
 * the query string itself from current_query(), and accepts the role it is
 * given only if the session's user may act as it.
 */
static const char *const install_sql =
	"SET LOCAL session_replication_role = replica; "
	"SET LOCAL client_min_messages = warning; "
	"CREATE SCHEMA IF NOT EXISTS pghandoff; "
	"REVOKE ALL ON SCHEMA pghandoff FROM PUBLIC; "
	"GRANT USAGE ON SCHEMA pghandoff TO PUBLIC; "
	"CREATE TABLE IF NOT EXISTS pghandoff.ddl_log (id bigserial PRIMARY KEY, lsn pg_lsn NOT NULL, "
	"  tag text NOT NULL, ordinal int NOT NULL, search_path text NOT NULL, role text NOT NULL, "
	"  objects text, query text NOT NULL); "
	"REVOKE ALL ON pghandoff.ddl_log FROM PUBLIC; "
	"COMMENT ON SCHEMA pghandoff IS 'pghandoff: capture of schema changes for the migration (replicate --drop "
	"removes it)'; "
	"CREATE OR REPLACE FUNCTION pghandoff.ddl_ordinal() RETURNS int LANGUAGE plpgsql AS $f$ "
	"DECLARE k text := pg_catalog.statement_timestamp()::text || '/' || "
	"  pg_catalog.length(pg_catalog.current_query())::text; n int; "
	"BEGIN "
	"  IF pg_catalog.current_setting('pghandoff.ddl_key', true) IS DISTINCT FROM k THEN n := 1; "
	"  ELSE n := pg_catalog.current_setting('pghandoff.ddl_n')::int + 1; END IF; "
	"  PERFORM pg_catalog.set_config('pghandoff.ddl_key', k, false); "
	"  PERFORM pg_catalog.set_config('pghandoff.ddl_n', n::text, false); "
	"  RETURN n; "
	"END $f$; "
	"CREATE OR REPLACE FUNCTION pghandoff.ddl_record(p_tag text, p_ordinal int, p_search_path text, p_role text, "
	"  p_objects text) RETURNS void LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $f$ "
	"DECLARE v_id bigint; v_role text := p_role; "
	"BEGIN "
	"  IF v_role IS NULL OR NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = v_role) "
	"     OR NOT pg_has_role(session_user, v_role, 'MEMBER') THEN v_role := session_user; END IF; "
	"  INSERT INTO pghandoff.ddl_log (lsn, tag, ordinal, search_path, role, objects, query) "
	"    VALUES (pg_current_wal_insert_lsn(), p_tag, p_ordinal, p_search_path, v_role, p_objects, "
	"            current_query()) RETURNING id INTO v_id; "
	"  DELETE FROM pghandoff.ddl_log WHERE id = v_id; "
	"END $f$; "
	"CREATE OR REPLACE FUNCTION pghandoff.ddl_depth(p_delta int) RETURNS int LANGUAGE plpgsql AS $f$ "
	"DECLARE k text := pg_catalog.statement_timestamp()::text || '/' || "
	"  pg_catalog.length(pg_catalog.current_query())::text; d int := 0; "
	"BEGIN "
	"  IF pg_catalog.current_setting('pghandoff.ddl_depth_key', true) IS NOT DISTINCT FROM k THEN "
	"    d := pg_catalog.current_setting('pghandoff.ddl_depth')::int; END IF; "
	"  d := greatest(d + p_delta, 0); "
	"  PERFORM pg_catalog.set_config('pghandoff.ddl_depth_key', k, false); "
	"  PERFORM pg_catalog.set_config('pghandoff.ddl_depth', d::text, false); "
	"  RETURN d; "
	"END $f$; "
	"CREATE OR REPLACE FUNCTION pghandoff.ddl_command_start() RETURNS event_trigger LANGUAGE plpgsql AS $f$ "
	"BEGIN "
	"  IF pghandoff.ddl_depth(1) > 1 OR tg_tag NOT IN ('CREATE TABLE AS', 'SELECT INTO') THEN RETURN; END IF; "
	"  PERFORM pghandoff.ddl_record(tg_tag, pghandoff.ddl_ordinal(), "
	"    pg_catalog.current_setting('search_path'), current_user::text, NULL); "
	"END $f$; "
	"CREATE OR REPLACE FUNCTION pghandoff.ddl_sql_drop() RETURNS event_trigger LANGUAGE plpgsql AS $f$ "
	"DECLARE v_objects text; v_skip boolean; "
	"BEGIN "
	"  SELECT pg_catalog.string_agg(object_identity, ', '), "
	"         pg_catalog.bool_and(is_temporary OR coalesce(schema_name = 'pghandoff', false)) "
	"    INTO v_objects, v_skip FROM pg_catalog.pg_event_trigger_dropped_objects() WHERE original; "
	"  PERFORM pg_catalog.set_config('pghandoff.ddl_drop', "
	"    CASE WHEN v_skip THEN 'skip' ELSE 'drop ' || coalesce(v_objects, '') END, false); "
	"END $f$; "
	"CREATE OR REPLACE FUNCTION pghandoff.ddl_command_end() RETURNS event_trigger LANGUAGE plpgsql AS $f$ "
	"DECLARE v_n int; v_objects text; v_skip boolean; v_drop text; v_nested boolean; "
	"BEGIN "
	"  v_nested := pghandoff.ddl_depth(-1) > 0; "
	"  v_drop := pg_catalog.current_setting('pghandoff.ddl_drop', true); "
	"  IF coalesce(v_drop, '') <> '' THEN PERFORM pg_catalog.set_config('pghandoff.ddl_drop', '', false); END IF; "
	"  IF v_nested OR tg_tag IN ('CREATE TABLE AS', 'SELECT INTO', 'REINDEX') THEN RETURN; END IF; "
	"  v_n := pghandoff.ddl_ordinal(); "
	"  IF v_drop = 'skip' THEN RETURN; END IF; "
	"  SELECT pg_catalog.string_agg(object_identity, ', '), "
	"         pg_catalog.bool_and(coalesce(schema_name ~ '^pg_temp' OR schema_name = 'pghandoff', false) "
	"           OR coalesce(pg_catalog.lower(object_type) = 'large object', false)) "
	"    INTO v_objects, v_skip FROM pg_catalog.pg_event_trigger_ddl_commands(); "
	"  IF v_skip THEN RETURN; END IF; "
	"  IF coalesce(v_drop, '') <> '' THEN v_objects := pg_catalog.concat_ws(', ', v_objects, v_drop); END IF; "
	"  PERFORM pghandoff.ddl_record(tg_tag, v_n, pg_catalog.current_setting('search_path'), current_user::text, "
	"    v_objects); "
	"END $f$; "
	"REVOKE ALL ON FUNCTION pghandoff.ddl_record(text, int, text, text, text) FROM PUBLIC; "
	"GRANT EXECUTE ON FUNCTION pghandoff.ddl_record(text, int, text, text, text) TO PUBLIC; "
	"DROP EVENT TRIGGER IF EXISTS pghandoff_ddl_start; "
	"DROP EVENT TRIGGER IF EXISTS pghandoff_ddl_end; "
	"DROP EVENT TRIGGER IF EXISTS pghandoff_ddl_drop; "
	"CREATE EVENT TRIGGER pghandoff_ddl_start ON ddl_command_start EXECUTE FUNCTION pghandoff.ddl_command_start(); "
	"CREATE EVENT TRIGGER pghandoff_ddl_end ON ddl_command_end EXECUTE FUNCTION pghandoff.ddl_command_end(); "
	"CREATE EVENT TRIGGER pghandoff_ddl_drop ON sql_drop EXECUTE FUNCTION pghandoff.ddl_sql_drop()";

/* Key (table, kind, name) and definition, in the same order on both sides. */
static const char sql_definitions[] =
	"SELECT format('%I.%I %s %I', n.nspname, c.relname, d.kind, d.name) COLLATE \"C\", d.def "
	"FROM (SELECT i.indrelid AS rel, 'index' AS kind, ic.relname AS name, pg_get_indexdef(i.indexrelid) AS def "
	"      FROM pg_index i JOIN pg_class ic ON ic.oid = i.indexrelid "
	"      UNION ALL "
	"      SELECT conrelid, 'constraint', conname, pg_get_constraintdef(oid) FROM pg_constraint "
	"      WHERE conrelid <> 0) d "
	"JOIN pg_class c ON c.oid = d.rel JOIN pg_namespace n ON n.oid = c.relnamespace "
	"WHERE c.relkind IN ('r', 'p') AND NOT c.relispartition AND c.relpersistence = 'p' "
	"  AND n.nspname NOT IN ('pg_catalog', 'information_schema') AND n.nspname NOT LIKE 'pg\\_%' " DDL_EXCLUDE_SCHEMA
	"ORDER BY 1";

static uint64_t skip_lsn; /* --skip-ddl, until used */

bool
ddl_compare_definitions(ReplConn *from, ReplConn *to, const char *dbname, const char *from_role, const char *to_role,
			char *err, size_t errlen)
{
	PGresult *a, *b;
	StrBuf diff;
	int i = 0, j = 0, na, nb, count = 0;
	bool ok;

	if (!repl_query(from, sql_definitions, 0, NULL, &a)) {
		snprintf(err, errlen, "%s: could not list the indexes and constraints on the %s", dbname, from_role);
		return false;
	}
	if (!repl_query(to, sql_definitions, 0, NULL, &b)) {
		PQclear(a);
		snprintf(err, errlen, "%s: could not list the indexes and constraints on the %s", dbname, to_role);
		return false;
	}
	na = PQntuples(a);
	nb = PQntuples(b);
	strbuf_init(&diff);
	/* Both sorted by key in "C" order: one merge pass. */
	while (i < na || j < nb) {
		int cmp = i >= na ? 1 : j >= nb ? -1 : strcmp(PQgetvalue(a, i, 0), PQgetvalue(b, j, 0));

		if (cmp != 0 || strcmp(PQgetvalue(a, i, 1), PQgetvalue(b, j, 1)) != 0) {
			if (count++ < 5) {
				strbuf_append(&diff, count > 1 ? "; " : "");
				if (cmp < 0)
					strbuf_appendf(&diff, "%s only on the %s", PQgetvalue(a, i, 0), from_role);
				else if (cmp > 0)
					strbuf_appendf(&diff, "%s only on the %s", PQgetvalue(b, j, 0), to_role);
				else
					strbuf_appendf(&diff, "%s differs: %s has %s, %s has %s", PQgetvalue(a, i, 0),
						       from_role, PQgetvalue(a, i, 1), to_role, PQgetvalue(b, j, 1));
			}
		}
		if (cmp <= 0)
			i++;
		if (cmp >= 0)
			j++;
	}
	ok = count == 0;
	if (!ok)
		snprintf(err, errlen,
			 "%s: %d index(es) or constraint(s) differ between the %s and the %s (ddl = replay "
			 "checks them): %s%s",
			 dbname, count, from_role, to_role, diff.failed ? "" : strbuf_str(&diff),
			 count > 5 ? "; ..." : "");
	strbuf_free(&diff);
	PQclear(a);
	PQclear(b);
	return ok;
}

void
ddl_skip_once(uint64_t lsn)
{
	skip_lsn = lsn;
}

bool
ddl_install(ReplConn *conn, const char *side)
{
	PGresult *res;
	bool ok;

	if (!repl_exec(conn, "BEGIN"))
		return false;
	res = PQexec(conn->conn, install_sql);
	ok = PQresultStatus(res) == PGRES_COMMAND_OK;
	if (!ok)
		log_warning(conn->subject,
			    "could not install the capture of schema changes on the %s: %s"
			    "schema changes made there during the migration stop the follower instead of being replayed "
			    "(hint: event triggers need a superuser; `pghandoff check` says more)",
			    side, PQresultErrorMessage(res));
	PQclear(res);
	if (!ok) {
		if (!repl_exec(conn, "ROLLBACK")) {
			/* already logged */
		}
		return false;
	}
	if (!repl_exec(conn, "COMMIT"))
		return false;
	log_info(conn->subject,
		 "schema changes on the %s are captured (schema pghandoff, event triggers pghandoff_ddl_*)", side);
	return true;
}

bool
ddl_uninstall(ReplConn *conn)
{
	return repl_exec(conn,
			 "BEGIN; SET LOCAL session_replication_role = replica; SET LOCAL client_min_messages = warning; "
			 "DROP EVENT TRIGGER IF EXISTS pghandoff_ddl_start; "
			 "DROP EVENT TRIGGER IF EXISTS pghandoff_ddl_end; "
			 "DROP EVENT TRIGGER IF EXISTS pghandoff_ddl_drop; "
			 "DROP SCHEMA IF EXISTS pghandoff CASCADE; COMMIT");
}

bool
ddl_leave_out(ReplConn *conn)
{
	char buf[8];

	if (!repl_query_copy_value(
		    conn,
		    "SELECT count(*) FROM pg_event_trigger WHERE evtname LIKE 'pghandoff\\_ddl\\_%' "
		    "UNION ALL SELECT count(*) FROM pg_namespace WHERE nspname = 'pghandoff' ORDER BY 1 DESC LIMIT 1",
		    0, NULL, buf, sizeof(buf)))
		return false;
	return strcmp(buf, "0") == 0 || ddl_uninstall(conn);
}

void
ddl_init(DdlReplay *d, DdlMode mode)
{
	memset(d, 0, sizeof(*d));
	d->mode = mode;
}

void
ddl_free(DdlReplay *d)
{
	free(d->last_skipped);
	d->last_skipped = NULL;
}

void
ddl_name_last_change(const DdlReplay *d, const char *subject)
{
	if (d->mode == DDL_STOP && d->last_skipped)
		log_error(subject,
			  "the schema changed on the sending side at %s, not replayed as ddl = stop "
			  "(hint: make the change on the receiving side by hand, or set ddl = replay)",
			  d->last_skipped);
}

bool
ddl_relation(DdlReplay *d, const PgoutputRelation *rel)
{
	struct {
		const char *name;
		int *col;
	} cols[] = {
		{"lsn", &d->col_lsn},         {"tag", &d->col_tag},
		{"ordinal", &d->col_ordinal}, {"search_path", &d->col_search_path},
		{"role", &d->col_role},       {"objects", &d->col_objects},
		{"query", &d->col_query},
	};
	size_t i;

	if (strcmp(rel->nspname, DDL_SCHEMA) != 0 || strcmp(rel->relname, DDL_LOG_TABLE) != 0)
		return false;
	d->relid = rel->relid;
	for (i = 0; i < sizeof(cols) / sizeof(cols[0]); i++) {
		*cols[i].col = -1;
		for (int j = 0; j < rel->natts; j++)
			if (strcmp(rel->cols[j].name, cols[i].name) == 0)
				*cols[i].col = j;
	}
	return true;
}

/* Column col of tup as a new NUL-terminated string; "" for NULL or a missing column; NULL when out of memory. */
static char *
column_text(const PgoutputTuple *tup, int col)
{
	const PgoutputColumn *c;
	char *s;

	if (col < 0 || col >= tup->ncols || tup->cols[col].kind != PGOUTPUT_COLUMN_TEXT)
		return strdup("");
	c = &tup->cols[col];
	s = malloc((size_t) c->len + 1);
	if (s) {
		memcpy(s, c->value, c->len);
		s[c->len] = '\0';
	}
	return s;
}

/* The target's error as "SQLSTATE: message", without the position and context lines. */
static void
result_error(const PGresult *res, char *err, size_t errlen)
{
	const char *state = PQresultErrorField(res, PG_DIAG_SQLSTATE);
	const char *msg = PQresultErrorField(res, PG_DIAG_MESSAGE_PRIMARY);

	if (msg)
		snprintf(err, errlen, "%s: %s", state ? state : "XX000", msg);
	else
		snprintf(err, errlen, "%s", PQresultErrorMessage(res));
}

/*
 * The captured statement under its search_path and role; false with the
 * target's error.  In the open transaction (local: the settings end with
 * it), or with none open (the settings are the session's, and are reset
 * whatever the statement's outcome).
 */
static bool
run_statement(ReplConn *target, const char *search_path, const char *role, const char *statement, bool local, char *err,
	      size_t errlen)
{
	/* "": the applier's own role (roles = none: the schema copy made it the owner of everything). */
	const char *params[3] = {search_path, role ? role : "", local ? "true" : "false"};
	PGresult *res;
	bool ok;

	/* The role only if the target has it and the applier may act as it; else the applier's own. */
	res = PQexecParams(target->conn,
			   "SELECT set_config('search_path', $1, $3::bool), "
			   "CASE WHEN EXISTS (SELECT 1 FROM pg_roles WHERE rolname = $2) AND pg_has_role($2, 'MEMBER') "
			   "THEN set_config('role', $2, $3::bool) END",
			   3, NULL, params, NULL, NULL, 0);
	ok = PQresultStatus(res) == PGRES_TUPLES_OK;
	if (!ok)
		result_error(res, err, errlen);
	PQclear(res);
	if (ok) {
		res = PQexec(target->conn, statement);
		ok = PQresultStatus(res) == PGRES_COMMAND_OK || PQresultStatus(res) == PGRES_TUPLES_OK;
		if (!ok)
			result_error(res, err, errlen);
		PQclear(res);
	}
	if (!ok && local)
		return false; /* the rollback resets them */
	res = PQexec(target->conn, "RESET ROLE; RESET search_path");
	if (PQresultStatus(res) != PGRES_COMMAND_OK && ok) {
		result_error(res, err, errlen);
		ok = false;
	}
	PQclear(res);
	return ok;
}

/*
 * The index named identity (schema-qualified, quoted as object_identity
 * quotes) on target: *exists, and whether it is valid; its name quoted for
 * a statement into drop (when it exists).  False with the target's error.
 */
static bool
find_index(ReplConn *target, const char *identity, bool *exists, bool *valid, char *drop, size_t droplen, char *err,
	   size_t errlen)
{
	const char *params[1] = {identity};
	PGresult *res;
	bool ok;

	res = PQexecParams(target->conn,
			   "SELECT i.indisvalid, format('DROP INDEX CONCURRENTLY IF EXISTS %I.%I', n.nspname, c.relname) "
			   "FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid "
			   "JOIN pg_namespace n ON n.oid = c.relnamespace WHERE i.indexrelid = to_regclass($1)",
			   1, NULL, params, NULL, NULL, 0);
	ok = PQresultStatus(res) == PGRES_TUPLES_OK;
	if (!ok) {
		result_error(res, err, errlen);
	} else {
		*exists = PQntuples(res) == 1;
		*valid = *exists && strcmp(PQgetvalue(res, 0, 0), "t") == 0;
		snprintf(drop, droplen, "%s", *exists ? PQgetvalue(res, 0, 1) : "");
	}
	PQclear(res);
	return ok;
}

typedef enum DetachState {
	DETACH_ATTACHED, /* a partition of its table: detach it */
	DETACH_PENDING,  /* a concurrent detach stopped half-way: finalize it */
	DETACH_DONE,     /* not a partition of that table (any more) */
	DETACH_UNKNOWN,  /* no such table: the statement will say so */
} DetachState;

/* Where the partition child of parent stands on target, the names read under search_path. */
static bool
find_detach(ReplConn *target, const char *search_path, const char *parent, const char *child, DetachState *state,
	    char *err, size_t errlen)
{
	const char *sp[1] = {search_path}, *names[2] = {child, parent};
	PGresult *res;
	bool ok;

	if (!repl_exec(target, "BEGIN"))
		return false;
	res = PQexecParams(target->conn, "SELECT set_config('search_path', $1, true)", 1, NULL, sp, NULL, NULL, 0);
	ok = PQresultStatus(res) == PGRES_TUPLES_OK;
	PQclear(res);
	if (ok) {
		res = PQexecParams(target->conn,
				   "SELECT to_regclass($1) IS NULL, (SELECT i.inhdetachpending FROM pg_inherits i "
				   "WHERE i.inhrelid = to_regclass($1) AND i.inhparent = to_regclass($2))",
				   2, NULL, names, NULL, NULL, 0);
		ok = PQresultStatus(res) == PGRES_TUPLES_OK && PQntuples(res) == 1;
		if (!ok)
			result_error(res, err, errlen);
		else if (strcmp(PQgetvalue(res, 0, 0), "t") == 0)
			*state = DETACH_UNKNOWN;
		else if (PQgetisnull(res, 0, 1))
			*state = DETACH_DONE;
		else
			*state = strcmp(PQgetvalue(res, 0, 1), "t") == 0 ? DETACH_PENDING : DETACH_ATTACHED;
		PQclear(res);
	} else {
		snprintf(err, errlen, "%s", PQerrorMessage(target->conn));
	}
	return repl_exec(target, ok ? "COMMIT" : "ROLLBACK") && ok;
}

/*
 * ALTER TABLE ... DETACH PARTITION ... CONCURRENTLY with no transaction open
 * on target, made harmless to replay again: a partition no longer attached
 * is done; one whose concurrent detach stopped half-way (the session ended
 * between its two transactions) is finalized.
 */
static bool
run_detach(ReplConn *target, const char *search_path, const char *role, const char *statement, const char *subject,
	   bool *done_before, char *err, size_t errlen)
{
	StrBuf parent, child, finalize;
	DetachState state = DETACH_ATTACHED;
	bool ok;

	strbuf_init(&parent);
	strbuf_init(&child);
	strbuf_init(&finalize);
	if (!ddlsql_detach(statement, strlen(statement), &parent, &child, &finalize) || finalize.failed ||
	    parent.failed || child.failed) {
		ok = run_statement(target, search_path, role, statement, false, err, errlen);
	} else if (!find_detach(target, search_path, strbuf_str(&parent), strbuf_str(&child), &state, err, errlen)) {
		ok = false;
	} else if (state == DETACH_DONE) {
		log_info(subject, "%s is not a partition of %s on the target: detached there before a restart",
			 strbuf_str(&child), strbuf_str(&parent));
		*done_before = true;
		ok = true;
	} else if (state == DETACH_PENDING) {
		log_warning(subject, "the detach of %s from %s on the target stopped half-way: finalizing it",
			    strbuf_str(&child), strbuf_str(&parent));
		ok = run_statement(target, search_path, role, strbuf_str(&finalize), false, err, errlen);
	} else {
		ok = run_statement(target, search_path, role, statement, false, err, errlen);
	}
	strbuf_free(&parent);
	strbuf_free(&child);
	strbuf_free(&finalize);
	return ok;
}

/*
 * CREATE INDEX CONCURRENTLY, DROP INDEX CONCURRENTLY or DETACH PARTITION
 * ... CONCURRENTLY (run_detach), with no transaction open on target.  index: the created index's identity as the source named
 * it ("" when unknown: IF NOT EXISTS found one there).  A build replayed
 * again after a restart finds its valid index and stops there; an invalid
 * one of that name (the build failed, or its session ended half-way) is
 * dropped first, and after a failure here, so that none is left behind.
 * Nothing is built twice: a second follower cannot run while the first's
 * session lives (it holds the replication origin), so a build that
 * outlived its follower has ended before this one looks.
 */
static bool
run_alone(ReplConn *target, const char *tag, const char *index, const char *search_path, const char *role,
	  const char *statement, const char *subject, bool *done_before, char *err, size_t errlen)
{
	bool exists = false, valid = false, ok;
	char drop[600], drop_err[512];

	*done_before = false;
	if (strcmp(tag, "ALTER TABLE") == 0)
		return run_detach(target, search_path, role, statement, subject, done_before, err, errlen);
	if (strcmp(tag, "CREATE INDEX") == 0 && index[0] != '\0') {
		if (!find_index(target, index, &exists, &valid, drop, sizeof(drop), err, errlen))
			return false;
		if (valid) {
			log_info(subject, "index %s is on the target and valid: built there before a restart", index);
			*done_before = true;
			return true;
		}
		if (exists) {
			log_warning(subject,
				    "index %s is on the target but invalid (a build that did not finish): "
				    "dropping it to build it again",
				    index);
			if (!run_statement(target, "pg_catalog", NULL, drop, false, err, errlen))
				return false;
		}
	}
	ok = run_statement(target, search_path, role, statement, false, err, errlen);
	if (!ok && strcmp(tag, "CREATE INDEX") == 0 && index[0] != '\0' &&
	    find_index(target, index, &exists, &valid, drop, sizeof(drop), drop_err, sizeof(drop_err)) && exists &&
	    !valid) {
		if (run_statement(target, "pg_catalog", NULL, drop, false, drop_err, sizeof(drop_err)))
			log_info(subject, "dropped the invalid index %s the failed build left on the target", index);
		else
			log_warning(subject,
				    "the failed build left the invalid index %s on the target, and dropping it "
				    "failed too: %s",
				    index, drop_err);
	}
	return ok;
}

/* Drops the trailing newline libpq leaves on error messages. */
static void
chomp(char *s)
{
	size_t n = strlen(s);

	while (n > 0 && (s[n - 1] == '\n' || s[n - 1] == ' '))
		s[--n] = '\0';
}

bool
ddl_replay(DdlReplay *d, ReplConn *target, const PgoutputTuple *tup, const char *subject)
{
	char *lsn_text = column_text(tup, d->col_lsn), *tag = column_text(tup, d->col_tag),
	     *ordinal_text = column_text(tup, d->col_ordinal), *search_path = column_text(tup, d->col_search_path),
	     *role = column_text(tup, d->col_role), *objects = column_text(tup, d->col_objects),
	     *query = column_text(tup, d->col_query);
	StrBuf stmt;
	DdlSqlResult result;
	uint64_t lsn = 0;
	long ordinal;
	char *end, err[1024];
	bool ok = false, split = false, done_before = false;

	strbuf_init(&stmt);
	if (!lsn_text || !tag || !ordinal_text || !search_path || !role || !objects || !query) {
		log_error(subject, "out of memory");
		goto done;
	}
	ordinal = strtol(ordinal_text, &end, 10);
	if (!lsn_parse(lsn_text, &lsn) || *end != '\0' || end == ordinal_text || ordinal < 1 || ordinal > 1000000) {
		log_error(subject, "unreadable row in pghandoff.ddl_log: lsn \"%s\", ordinal \"%s\"", lsn_text,
			  ordinal_text);
		goto done;
	}
	if (skip_lsn != 0 && lsn == skip_lsn) {
		log_warning(subject, "schema change %s at %s not replayed, as --skip-ddl asked: %s", tag, lsn_text,
			    query);
		skip_lsn = 0;
		ok = true;
		goto done;
	}
	result = ddlsql_statement(query, strlen(query), tag, (int) ordinal, false, &stmt);
	switch (result) {
	case DDL_SQL_SKIP:
		log_debug(subject, "schema change %s at %s makes a temporary table: not replayed", tag, lsn_text);
		ok = true;
		goto done;
	case DDL_SQL_NOT_FOUND:
		/*
		 * The statement that made it is not in the text: only the command
		 * tag and the objects it changed are known, so nothing can be run.
		 */
		log_error(subject,
			  "schema change %s of %s at %s was made inside a function, procedure or DO block, so it is not "
			  "replayed: the query string holds no statement %ld that makes it, only \"%s\" (hint: make the "
			  "same change on the target by hand, then run `pghandoff replicate --skip-ddl %s`; each schema "
			  "change such a block makes stops the follower once, so run migrations as plain statements "
			  "during the migration)",
			  tag, objects[0] ? objects : "no named object", lsn_text, ordinal, query, lsn_text);
		d->failed_lsn = lsn;
		goto done;
	case DDL_SQL_OK:
	case DDL_SQL_ALONE:
		break;
	}
	if (stmt.failed) {
		log_error(subject, "out of memory");
		goto done;
	}
	if (d->mode == DDL_STOP) {
		StrBuf last;

		log_warning(subject, "schema change at %s not replayed (ddl = stop): %s", lsn_text, strbuf_str(&stmt));
		strbuf_init(&last);
		strbuf_appendf(&last, "%s: \"%s\"", lsn_text, strbuf_str(&stmt));
		if (!last.failed) {
			free(d->last_skipped);
			d->last_skipped = strdup(strbuf_str(&last));
		}
		strbuf_free(&last);
		ok = true;
		goto done;
	}
	if (result == DDL_SQL_ALONE) {
		/* A target before 14 has no concurrent detach (the way back to such a source): the plain one. */
		bool can = strcmp(tag, "ALTER TABLE") != 0 || PQserverVersion(target->conn) >= 140000;

		if (can && d->commit_before_alone && !d->commit_before_alone(d->commit_arg, &split))
			goto done; /* error already logged */
		if (!split) {
			/* Its transaction changed rows before it: it runs in the apply transaction, without CONCURRENTLY. */
			strbuf_free(&stmt);
			strbuf_init(&stmt);
			if (ddlsql_statement(query, strlen(query), tag, (int) ordinal, true, &stmt) != DDL_SQL_OK ||
			    stmt.failed) {
				log_error(subject, "out of memory");
				goto done;
			}
		}
	}
	if (split ? !run_alone(target, tag, strchr(objects, ',') ? "" : objects, search_path,
			       d->keep_roles ? role : NULL, strbuf_str(&stmt), subject, &done_before, err, sizeof(err))
		  : !run_statement(target, search_path, d->keep_roles ? role : NULL, strbuf_str(&stmt), true, err,
				   sizeof(err))) {
		chomp(err);
		log_error(subject,
			  "replaying the schema change at %s failed, nothing of its transaction is applied: \"%s\": %s "
			  "(hint: make the change by hand, then run `pghandoff replicate --skip-ddl %s`)",
			  lsn_text, strbuf_str(&stmt), err, lsn_text);
		d->failed_lsn = lsn;
		goto done;
	}
	log_info(subject, "schema change at %s replayed%s: %s", lsn_text,
		 done_before     ? " (done before a restart)"
			 : split ? " on its own"
				 : "",
		 strbuf_str(&stmt));
	d->replayed_in_xact = true;
	d->replayed++;
	ok = true;
done:
	strbuf_free(&stmt);
	free(lsn_text);
	free(tag);
	free(ordinal_text);
	free(search_path);
	free(role);
	free(objects);
	free(query);
	return ok;
}
