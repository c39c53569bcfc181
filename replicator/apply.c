/*
 * The apply side of streaming.  Each change becomes one execution of a
 * prepared statement whose text depends on the table, the operation and
 * which columns the change carries: an UPDATE whose TOASTed column is
 * "unchanged" ('u') must not touch that column, so it gets a statement
 * without it.  Parameters go as text and untyped, so the target infers each
 * from its own column (user-defined types have other OIDs there).
 */
#include "replicator/apply.h"
#include "common/clock.h"
#include "common/log.h"
#include "common/strbuf.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define GROUP_MAX_CHANGES 200000
#define GROUP_MAX_XACTS 50000
#define GROUP_MAX_SECONDS 2.0

struct StmtCacheEntry {
	StmtCacheEntry *next;
	uint32_t relid;
	char *key; /* operation and column mask */
	char name[32];
};

/*
 * Pipeline mode: changes are sent without waiting for each result, and the
 * results are read in batches.  The batch is bounded so that unread results
 * never fill the socket buffers (which would stall both sides).
 */

static bool
pipeline_start(Applier *ap)
{
	if (ap->pipelined)
		return true;
	if (PQenterPipelineMode(ap->target->conn) != 1) {
		log_error(ap->subject, "could not enter pipeline mode: %s", PQerrorMessage(ap->target->conn));
		return false;
	}
	ap->pipelined = true;
	ap->queued = 0;
	return true;
}

/* Logs a failed change with what names it on the source; result is the target's error. */
static void
log_change_failed(const Applier *ap, const ApplyChange *change, const char *error)
{
	const RelCacheEntry *rel = relcache_lookup(&ap->relcache, change->relid);

	log_error(ap->subject,
		  "applying %s to %s%s%s (relation %u) of source transaction %u, committed at %X/%X, failed: %s",
		  pgoutput_message_name(change->type), rel ? rel->nspname : "", rel ? "." : "",
		  rel ? rel->relname : "an unknown table", change->relid, change->xid,
		  (unsigned) (change->final_lsn >> 32), (unsigned) change->final_lsn, error);
}

/* Syncs and reads every pending result; false (logged) if any statement failed. */
static bool
pipeline_drain(Applier *ap)
{
	PGconn *conn = ap->target->conn;
	bool ok = true;
	int done = 0; /* statements whose results were read */

	if (!ap->pipelined || ap->queued == 0)
		return true;
	if (PQpipelineSync(conn) != 1) {
		log_error(ap->subject, "pipeline sync failed: %s", PQerrorMessage(conn));
		return false;
	}
	for (;;) {
		PGresult *res = PQgetResult(conn);
		ExecStatusType st;

		if (!res) {
			/* The end of one statement's results. */
			done++;
			if (PQstatus(conn) != CONNECTION_OK) {
				log_error(ap->subject, "target connection lost: %s", PQerrorMessage(conn));
				return false;
			}
			continue;
		}
		st = PQresultStatus(res);
		if (st == PGRES_PIPELINE_SYNC) {
			PQclear(res);
			break;
		}
		if (st == PGRES_FATAL_ERROR && ok) {
			if (done < ap->queued)
				log_change_failed(ap, &ap->queued_changes[done], PQresultErrorMessage(res));
			else
				log_error(ap->subject, "applying changes failed: %s", PQresultErrorMessage(res));
			ok = false;
		} else if (st == PGRES_FATAL_ERROR || st == PGRES_PIPELINE_ABORTED) {
			ok = false;
		}
		PQclear(res);
	}
	ap->queued = 0;
	return ok;
}

static bool
pipeline_end(Applier *ap)
{
	bool ok;

	if (!ap->pipelined)
		return true;
	ok = pipeline_drain(ap);
	if (PQexitPipelineMode(ap->target->conn) != 1) {
		log_error(ap->subject, "could not leave pipeline mode: %s", PQerrorMessage(ap->target->conn));
		ok = false;
	}
	ap->pipelined = false;
	return ok;
}

/* Queues the current change's statement in the pipeline; drains when the batch is full. */
static bool
pipeline_queued(Applier *ap, int sent)
{
	if (sent != 1) {
		log_error(ap->subject, "could not send to the target: %s", PQerrorMessage(ap->target->conn));
		return false;
	}
	ap->queued_changes[ap->queued] = ap->change;
	return ++ap->queued < APPLY_PIPELINE_BATCH || pipeline_drain(ap);
}

static bool commit_before_alone(void *arg, bool *split);

bool
applier_init(Applier *ap, ReplConn *target, const char *origin, const char *skip_origin, uint64_t start_lsn,
	     uint64_t exact_before, const char *subject)
{
	const char *params[1] = {origin};
	PGresult *res;

	memset(ap, 0, sizeof(*ap));
	ap->target = target;
	ap->subject = subject;
	ap->origin = origin;
	ap->skip_origin = skip_origin;
	ap->skip_before = start_lsn;
	ap->flushed_lsn = start_lsn;
	ap->committed_lsn = start_lsn;
	ap->exact_before = exact_before;
	relcache_init(&ap->relcache);
	batch_init(&ap->batch);
	ddl_init(&ap->ddl, DDL_REPLAY);
	ap->ddl.commit_before_alone = commit_before_alone;
	ap->ddl.commit_arg = ap;
	/* Triggers and foreign keys stay quiet, as for a native subscription. */
	if (!repl_exec(target, "SET session_replication_role = replica") ||
	    !repl_exec(target, "SET synchronous_commit = off") ||
	    !repl_query_while_in_use(target, "SELECT pg_replication_origin_session_setup($1)", 1, params,
				     PGRES_TUPLES_OK, REPL_IN_USE_WAIT_S, &res))
		return false;
	PQclear(res);
	return true;
}

static void
forget_statements(Applier *ap, uint32_t relid)
{
	StmtCacheEntry **link = &ap->stmts;

	while (*link) {
		StmtCacheEntry *e = *link;

		if (e->relid == relid) {
			char sql[64];

			snprintf(sql, sizeof(sql), "DEALLOCATE %s", e->name);
			if (!repl_exec(ap->target, sql)) {
				/* already logged; the name is never reused */
			}
			*link = e->next;
			free(e->key);
			free(e);
			ap->nstmts--;
		} else {
			link = &e->next;
		}
	}
}

void
applier_free(Applier *ap)
{
	while (ap->stmts) {
		StmtCacheEntry *next = ap->stmts->next;

		free(ap->stmts->key);
		free(ap->stmts);
		ap->stmts = next;
	}
	free(ap->absent);
	ddl_free(&ap->ddl);
	batch_free(&ap->batch);
	relcache_free(&ap->relcache);
}

static int
absent_index(const Applier *ap, uint32_t relid)
{
	for (int i = 0; i < ap->nabsent; i++)
		if (ap->absent[i] == relid)
			return i;
	return -1;
}

/* Notes whether the target has a table for relid; false only when out of memory. */
static bool
set_absent(Applier *ap, uint32_t relid, bool absent)
{
	int i = absent_index(ap, relid);

	if (!absent && i >= 0)
		ap->absent[i] = ap->absent[--ap->nabsent];
	if (!absent || i >= 0)
		return true;
	if (ap->nabsent == ap->absent_cap) {
		int cap = ap->absent_cap ? ap->absent_cap * 2 : 16;
		uint32_t *grown = realloc(ap->absent, sizeof(uint32_t) * (size_t) cap);

		if (!grown) {
			log_error(ap->subject, "out of memory");
			return false;
		}
		ap->absent = grown;
		ap->absent_cap = cap;
	}
	ap->absent[ap->nabsent++] = relid;
	return true;
}

/* Applies the pending batch now, inside the open target transaction. */
static bool
flush_batch(Applier *ap)
{
	if (ap->batch.nchanges == 0)
		return true;
	if (!pipeline_end(ap))
		return false;
	if (!batch_flush(&ap->batch, ap->target, ap->subject)) {
		ap->batch_failed = true;
		return false;
	}
	return pipeline_start(ap);
}

#define BATCH_MAX_BYTES (256 * 1024 * 1024)

/* The WHERE clause finding the row: key columns, or every column for REPLICA IDENTITY FULL. */
static void
append_where(StrBuf *sql, StrBuf *key, PGconn *conn, const RelCacheEntry *rel, const PgoutputTuple *tup, bool full,
	     int *param)
{
	bool first = true;
	int i;

	for (i = 0; i < rel->natts && i < tup->ncols; i++) {
		const PgoutputColumn *c = &tup->cols[i];

		if (full ? c->kind == PGOUTPUT_COLUMN_UNCHANGED : !rel->cols[i].key)
			continue;
		strbuf_append(sql, first ? "" : " AND ");
		repl_append_ident(sql, conn, rel->cols[i].name);
		if (c->kind == PGOUTPUT_COLUMN_NULL) {
			strbuf_append(sql, " IS NULL");
			strbuf_append_char(key, 'n');
		} else {
			strbuf_appendf(sql, full ? " IS NOT DISTINCT FROM $%d" : " = $%d", (*param)++);
			strbuf_append_char(key, 'w');
		}
		first = false;
	}
	if (first)
		strbuf_append(sql, "false");
}

/* Which columns of a tuple a statement takes as parameters. */
typedef enum ParamPart {
	PARAMS_SET,         /* INSERT values, or UPDATE SET with every present column */
	PARAMS_SET_NO_KEYS, /* UPDATE SET of a row whose key did not change */
	PARAMS_WHERE_KEY,   /* WHERE on the replica identity's key columns */
	PARAMS_WHERE_FULL,  /* WHERE on every column (REPLICA IDENTITY FULL) */
} ParamPart;

/* Collects the parameter values of the columns the statement uses, in its order. */
static int
collect_params(const RelCacheEntry *rel, const PgoutputTuple *tup, ParamPart part, const char **values, int *lengths,
	       int n)
{
	int i;

	for (i = 0; i < rel->natts && i < tup->ncols; i++) {
		const PgoutputColumn *c = &tup->cols[i];

		switch (part) {
		case PARAMS_SET_NO_KEYS:
			if (rel->cols[i].key)
				continue;
			/* fall through */
		case PARAMS_SET:
			if (c->kind == PGOUTPUT_COLUMN_UNCHANGED)
				continue;
			break;
		case PARAMS_WHERE_KEY:
			if (!rel->cols[i].key || c->kind == PGOUTPUT_COLUMN_NULL)
				continue; /* IS NULL takes no parameter */
			break;
		case PARAMS_WHERE_FULL:
			if (c->kind == PGOUTPUT_COLUMN_UNCHANGED || c->kind == PGOUTPUT_COLUMN_NULL)
				continue;
			break;
		}
		values[n] = c->kind == PGOUTPUT_COLUMN_NULL ? NULL : (const char *) c->value;
		lengths[n] = (int) c->len;
		n++;
	}
	return n;
}

static StmtCacheEntry *
find_statement(Applier *ap, uint32_t relid, const char *key)
{
	StmtCacheEntry *e;

	for (e = ap->stmts; e; e = e->next)
		if (e->relid == relid && strcmp(e->key, key) == 0)
			return e;
	return NULL;
}

static StmtCacheEntry *
prepare_statement(Applier *ap, uint32_t relid, const char *key, const char *sql)
{
	static unsigned counter;
	StmtCacheEntry *e = calloc(1, sizeof(StmtCacheEntry));
	PGresult *res;

	if (!e || !(e->key = strdup(key))) {
		free(e);
		log_error(ap->subject, "out of memory");
		return NULL;
	}
	e->relid = relid;
	snprintf(e->name, sizeof(e->name), "pgh_%u", ++counter);
	if (ap->pipelined) {
		/* Its result is read with the batch; an error shows there. */
		if (!pipeline_queued(ap, PQsendPrepare(ap->target->conn, e->name, sql, 0, NULL))) {
			free(e->key);
			free(e);
			return NULL;
		}
	} else {
		res = PQprepare(ap->target->conn, e->name, sql, 0, NULL);
		if (PQresultStatus(res) != PGRES_COMMAND_OK) {
			log_error(ap->subject, "could not prepare \"%s\": %s", sql, PQresultErrorMessage(res));
			PQclear(res);
			free(e->key);
			free(e);
			return NULL;
		}
		PQclear(res);
	}
	e->next = ap->stmts;
	ap->stmts = e;
	ap->nstmts++;
	return e;
}

/* The text of each parameter is not NUL-terminated in the message: copy into one block. */
static bool
execute(Applier *ap, StmtCacheEntry *stmt, int n, const char **values, const int *lengths)
{
	const char *terminated[PGOUTPUT_MAX_COLUMNS * 2];
	size_t total = 0;
	char *block, *p;
	PGresult *res;
	bool ok;
	int i;

	for (i = 0; i < n; i++)
		if (values[i])
			total += (size_t) lengths[i] + 1;
	block = malloc(total + 1);
	if (!block) {
		log_error(ap->subject, "out of memory");
		return false;
	}
	for (p = block, i = 0; i < n; i++) {
		if (!values[i]) {
			terminated[i] = NULL;
			continue;
		}
		memcpy(p, values[i], (size_t) lengths[i]);
		p[lengths[i]] = '\0';
		terminated[i] = p;
		p += lengths[i] + 1;
	}
	if (ap->pipelined) {
		/* libpq copies the parameters into its output buffer: block may go now. */
		ok = pipeline_queued(ap,
				     PQsendQueryPrepared(ap->target->conn, stmt->name, n, terminated, NULL, NULL, 0));
		free(block);
		return ok;
	}
	res = PQexecPrepared(ap->target->conn, stmt->name, n, terminated, NULL, NULL, 0);
	ok = PQresultStatus(res) == PGRES_COMMAND_OK;
	if (!ok)
		log_change_failed(ap, &ap->change, PQresultErrorMessage(res));
	PQclear(res);
	free(block);
	return ok;
}

static const RelCacheEntry *
relation_for(Applier *ap, uint32_t relid)
{
	const RelCacheEntry *rel = relcache_lookup(&ap->relcache, relid);

	if (!rel) {
		log_error(ap->subject, "change for relation %u before its Relation message", relid);
	} else if (absent_index(ap, relid) >= 0) {
		log_error(ap->subject, "table %s.%s does not exist on the target: create it, then restart replication",
			  rel->nspname, rel->relname);
		rel = NULL;
	}
	return rel;
}

static bool
apply_insert(Applier *ap, const PgoutputInsert *ins)
{
	const RelCacheEntry *rel = relation_for(ap, ins->relid);
	const char *values[PGOUTPUT_MAX_COLUMNS];
	int lengths[PGOUTPUT_MAX_COLUMNS];
	StmtCacheEntry *stmt;
	int i, n;

	if (!rel)
		return false;
	if (ap->batch_this_xact) {
		if (!batch_insert(&ap->batch, rel, &ins->newtuple)) {
			log_error(ap->subject, "out of memory");
			return false;
		}
		return ap->batch.bytes < BATCH_MAX_BYTES || flush_batch(ap);
	}
	if (!flush_batch(ap))
		return false;
	stmt = find_statement(ap, rel->relid, "I");
	if (!stmt) {
		StrBuf sql;

		strbuf_init(&sql);
		strbuf_append(&sql, "INSERT INTO ");
		repl_append_qualified(&sql, ap->target->conn, rel->nspname, rel->relname);
		strbuf_append(&sql, " (");
		for (i = 0; i < rel->natts; i++) {
			strbuf_append(&sql, i ? ", " : "");
			repl_append_ident(&sql, ap->target->conn, rel->cols[i].name);
		}
		/* The source's values win, identity columns included. */
		strbuf_append(&sql, ") OVERRIDING SYSTEM VALUE VALUES (");
		for (i = 0; i < rel->natts; i++)
			strbuf_appendf(&sql, "%s$%d", i ? ", " : "", i + 1);
		strbuf_append(&sql, ")");
		stmt = prepare_statement(ap, rel->relid, "I", strbuf_str(&sql));
		strbuf_free(&sql);
		if (!stmt)
			return false;
	}
	if (ins->newtuple.ncols != rel->natts) {
		log_error(ap->subject, "insert into %s.%s carries %d columns, the relation has %d", rel->nspname,
			  rel->relname, ins->newtuple.ncols, rel->natts);
		return false;
	}
	n = collect_params(rel, &ins->newtuple, PARAMS_SET, values, lengths, 0);
	return execute(ap, stmt, n, values, lengths);
}

static bool
apply_update_or_delete(Applier *ap, uint32_t relid, bool is_update, uint8_t old_kind, const PgoutputTuple *oldtup,
		       const PgoutputTuple *newtup)
{
	const RelCacheEntry *rel = relation_for(ap, relid);
	const PgoutputTuple *where_tup;
	const char *values[PGOUTPUT_MAX_COLUMNS * 2];
	int lengths[PGOUTPUT_MAX_COLUMNS * 2];
	bool full;
	StrBuf sql, key;
	StmtCacheEntry *stmt;
	int param = 1, i, n = 0;

	if (!rel)
		return false;
	/* A key update (an old key sent along) is never batched: its row changes identity. */
	if (ap->batch_this_xact && batch_relation_ok(rel) &&
	    (is_update ? old_kind == 0 : old_kind == PGOUTPUT_TUPLE_KEY)) {
		bool ok = is_update ? batch_update(&ap->batch, rel, newtup) : batch_delete(&ap->batch, rel, oldtup);

		if (!ok) {
			log_error(ap->subject, "out of memory");
			return false;
		}
		return ap->batch.bytes < BATCH_MAX_BYTES || flush_batch(ap);
	}
	if (!flush_batch(ap))
		return false;
	full = old_kind == PGOUTPUT_TUPLE_OLD;
	where_tup = old_kind ? oldtup : newtup;
	strbuf_init(&sql);
	strbuf_init(&key);
	strbuf_append_char(&key, is_update ? 'U' : 'D');
	strbuf_append_char(&key, full ? 'F' : 'K');
	if (is_update) {
		bool first = true;

		strbuf_append(&sql, "UPDATE ");
		repl_append_qualified(&sql, ap->target->conn, rel->nspname, rel->relname);
		strbuf_append(&sql, " SET ");
		for (i = 0; i < rel->natts && i < newtup->ncols; i++) {
			/* An unchanged key is not set: an identity column GENERATED ALWAYS refuses that. */
			if (newtup->cols[i].kind == PGOUTPUT_COLUMN_UNCHANGED || (old_kind == 0 && rel->cols[i].key)) {
				strbuf_append_char(&key, 'u');
				continue;
			}
			strbuf_append(&sql, first ? "" : ", ");
			repl_append_ident(&sql, ap->target->conn, rel->cols[i].name);
			strbuf_appendf(&sql, " = $%d", param++);
			strbuf_append_char(&key, 's');
			first = false;
		}
		if (first) {
			/* Every column unchanged: nothing to write. */
			strbuf_free(&sql);
			strbuf_free(&key);
			return true;
		}
	} else {
		strbuf_append(&sql, "DELETE FROM ");
		repl_append_qualified(&sql, ap->target->conn, rel->nspname, rel->relname);
	}
	strbuf_append_char(&key, '|');
	if (full) {
		/* Duplicate rows are possible without a key: touch exactly one of them. */
		strbuf_append(&sql, " WHERE ctid = (SELECT ctid FROM ");
		repl_append_qualified(&sql, ap->target->conn, rel->nspname, rel->relname);
		strbuf_append(&sql, " WHERE ");
		append_where(&sql, &key, ap->target->conn, rel, where_tup, true, &param);
		strbuf_append(&sql, " LIMIT 1)");
	} else {
		strbuf_append(&sql, " WHERE ");
		append_where(&sql, &key, ap->target->conn, rel, where_tup, false, &param);
	}
	stmt = find_statement(ap, rel->relid, strbuf_str(&key));
	if (!stmt)
		stmt = prepare_statement(ap, rel->relid, strbuf_str(&key), strbuf_str(&sql));
	strbuf_free(&sql);
	strbuf_free(&key);
	if (!stmt)
		return false;
	if (is_update)
		n = collect_params(rel, newtup, old_kind == 0 ? PARAMS_SET_NO_KEYS : PARAMS_SET, values, lengths, 0);
	n = collect_params(rel, where_tup, full ? PARAMS_WHERE_FULL : PARAMS_WHERE_KEY, values, lengths, n);
	return execute(ap, stmt, n, values, lengths);
}

/* Whether the target's table of that name is partitioned; false if it has none (the TRUNCATE will say). */
static bool
target_partitioned(Applier *ap, const RelCacheEntry *rel, bool *partitioned)
{
	const char *params[2] = {rel->nspname, rel->relname};
	PGresult *res;

	if (!repl_query(ap->target,
			"SELECT 1 FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
			"WHERE n.nspname = $1 AND c.relname = $2 AND c.relkind = 'p'",
			2, params, &res))
		return false;
	*partitioned = PQntuples(res) > 0;
	PQclear(res);
	return true;
}

/*
 * Each table truncated ONLY, since the source sends every table it emptied
 * (an inheritance child too) by name; but a partitioned table on the target
 * (its root, published through the root, or a source's plain table) cannot
 * be truncated ONLY, and all of it is what the source emptied.
 */
static bool
apply_truncate(Applier *ap, const PgoutputTruncate *t)
{
	StrBuf sql;
	bool ok;
	int i;

	if (!flush_batch(ap) || !pipeline_end(ap))
		return false;
	strbuf_init(&sql);
	strbuf_append(&sql, "TRUNCATE ");
	for (i = 0; i < t->nrels; i++) {
		const RelCacheEntry *rel = relation_for(ap, pgoutput_truncate_relid(t, i));
		bool partitioned;

		if (!rel || !target_partitioned(ap, rel, &partitioned)) {
			strbuf_free(&sql);
			return false;
		}
		strbuf_append(&sql, i ? ", " : "");
		strbuf_append(&sql, partitioned ? "" : "ONLY ");
		repl_append_qualified(&sql, ap->target->conn, rel->nspname, rel->relname);
	}
	if (t->flags & PGOUTPUT_TRUNCATE_RESTART_IDENTITY)
		strbuf_append(&sql, " RESTART IDENTITY");
	if (t->flags & PGOUTPUT_TRUNCATE_CASCADE)
		strbuf_append(&sql, " CASCADE");
	ok = repl_exec(ap->target, strbuf_str(&sql)) && pipeline_start(ap);
	strbuf_free(&sql);
	return ok;
}

/*
 * A Relation message: when its columns no longer match the target table,
 * applying stops with the difference named, rather than losing data.
 */
static bool
apply_relation(Applier *ap, const PgoutputRelation *rel)
{
	char qualified[300];
	const char *params[2] = {rel->nspname, rel->relname};
	bool changed = false;
	PGresult *res;
	int i, j, missing = 0;

	/* Pending rows hold the columns as they were: they go out first. */
	if (!flush_batch(ap))
		return false;
	if (!relcache_update_copy(&ap->relcache, rel, &changed)) {
		log_error(ap->subject, "out of memory");
		return false;
	}
	if (!changed)
		return true;
	if (!pipeline_end(ap))
		return false;
	forget_statements(ap, rel->relid);
	batch_forget_relation(&ap->batch, rel->relid);
	snprintf(qualified, sizeof(qualified), "%s.%s", rel->nspname, rel->relname);
	if (!repl_query(ap->target,
			"SELECT a.attname FROM pg_attribute a JOIN pg_class c ON c.oid = a.attrelid "
			"JOIN pg_namespace n ON n.oid = c.relnamespace "
			"WHERE n.nspname = $1 AND c.relname = $2 AND a.attnum > 0 AND NOT a.attisdropped",
			2, params, &res))
		return false;
	/*
	 * Publishing through the root, pgoutput sends a partition's own Relation
	 * message after its root's, though every change names the root: only a
	 * change to a table the target lacks is an error (relation_for).
	 */
	if (PQntuples(res) == 0) {
		log_debug(ap->subject, "table %s does not exist on the target: its changes cannot be applied",
			  qualified);
		PQclear(res);
		return set_absent(ap, rel->relid, true) && (!ap->target_open || pipeline_start(ap));
	}
	if (!set_absent(ap, rel->relid, false)) {
		PQclear(res);
		return false;
	}
	for (i = 0; i < rel->natts; i++) {
		bool found = false;

		for (j = 0; j < PQntuples(res) && !found; j++)
			found = strcmp(rel->cols[i].name, PQgetvalue(res, j, 0)) == 0;
		if (!found) {
			log_error(ap->subject,
				  "table %s: column %s exists on the source but not on the target: add it "
				  "on the target, then restart replication",
				  qualified, rel->cols[i].name);
			missing++;
		}
	}
	PQclear(res);
	if (missing > 0)
		ddl_name_last_change(&ap->ddl, ap->subject);
	return missing == 0 && (!ap->target_open || pipeline_start(ap));
}

static bool
open_target(Applier *ap)
{
	if (ap->target_open)
		return true;
	if (!repl_exec(ap->target, "BEGIN") || !pipeline_start(ap))
		return false;
	ap->target_open = true;
	ap->group_started = clock_monotonic();
	return true;
}

/*
 * An Insert into the capture table (ddl.h): the schema change runs here, in
 * the open apply transaction, after the changes before it and before those
 * after it.  Pending rows go first, as they were made before it.
 */
static bool
apply_ddl(Applier *ap, const PgoutputTuple *tup)
{
	if (!flush_batch(ap) || !pipeline_end(ap))
		return false;
	if (!ddl_replay(&ap->ddl, ap->target, tup, ap->subject))
		return false; /* error already logged; the caller's failure rolls the transaction back */
	/* A statement run on its own left none open: the rest of its source transaction goes in a new one. */
	return ap->target_open ? pipeline_start(ap) : open_target(ap);
}

static bool
is_ddl_relation(const Applier *ap, uint32_t relid)
{
	return ap->ddl.relid != 0 && relid == ap->ddl.relid;
}

/*
 * Commits the open target transaction with the origin's progress (the end
 * of its last whole source transaction); pending changes are applied first.
 */
static bool
commit_group(Applier *ap)
{
	char lsn[LSN_FORMAT_LEN] = "-";

	if (!pipeline_end(ap))
		return false;
	if (ap->batch.nchanges > 0 && !batch_flush(&ap->batch, ap->target, ap->subject)) {
		ap->batch_failed = true;
		return false;
	}
	/*
	 * Deferred constraints and triggers fire now, before the origin is set
	 * up: an abort with the origin set would still move its progress, and a
	 * restart would then skip the transactions that were rolled back.
	 */
	if (!repl_exec(ap->target, "SET CONSTRAINTS ALL IMMEDIATE"))
		return false;
	if (ap->group_xacts > 0) {
		/* The origin moves in the same transaction as the data: both or neither. */
		char sql[240];

		lsn_format(ap->group_end_lsn, lsn, sizeof(lsn));
		/*
		 * Setup and COMMIT travel in one Query message.  From PostgreSQL 16
		 * an abort with the origin set still moves its progress, so a
		 * connection lost between two messages would skip the rolled-back
		 * group on restart; the server runs one message whole or not at all.
		 *
		 * txid_current(): a transaction that wrote nothing has no ID, commits
		 * without a commit record, and leaves the origin where it was.  A
		 * group of transactions that changed nothing here (the cutover's
		 * marker, holding a message only; the other direction's, skipped)
		 * must still move it past them: the cutover waits for that.  Such a
		 * commit, with no other record of its transaction, is never decoded
		 * (the walsender has nothing to replay for it), so it never reaches
		 * the follower running the other way.
		 */
		snprintf(sql, sizeof(sql),
			 "SELECT pg_replication_origin_xact_setup('%s', to_timestamp(%lld / 1000000.0)), txid_current(); "
			 "COMMIT",
			 lsn, (long long) pgtime_to_unix_us(ap->group_commit_time));
		if (!repl_exec(ap->target, sql))
			return false;
	} else if (!repl_exec(ap->target, "COMMIT")) {
		return false;
	}
	ap->target_open = false;
	if (ap->group_xacts > 0)
		ap->committed_lsn = ap->group_end_lsn;
	ap->xacts_applied += ap->group_xacts;
	log_debug(ap->subject, "committed %d source transaction(s), %lld change(s), up to %s", ap->group_xacts,
		  (long long) ap->group_changes, lsn);
	ap->group_xacts = 0;
	ap->group_changes = 0;
	return true;
}

bool
applier_flush(Applier *ap, bool idle)
{
	if (!ap->target_open || ap->in_source_xact)
		return true;
	if (!idle && ap->group_changes < GROUP_MAX_CHANGES && ap->group_xacts < GROUP_MAX_XACTS &&
	    clock_monotonic() - ap->group_started < GROUP_MAX_SECONDS)
		return true;
	return commit_group(ap);
}

/*
 * ddl.h commit_before_alone: in the middle of a source transaction, commits
 * the source transactions before it, unless it has changed rows already.
 */
static bool
commit_before_alone(void *arg, bool *split)
{
	Applier *ap = arg;

	*split = ap->xact_changes == 0;
	return !*split || !ap->target_open || commit_group(ap);
}

bool
applier_update_flushed(Applier *ap)
{
	const char *params[1] = {ap->origin};
	char buf[LSN_FORMAT_LEN];
	uint64_t lsn;

	if (ap->target_open || ap->committed_lsn == ap->flushed_lsn)
		return true;
	/* With flush = true the origin reports only what the target's WAL has on disk. */
	if (!repl_query_copy_value(ap->target, "SELECT coalesce(pg_replication_origin_progress($1, true), '0/0')", 1,
				   params, buf, sizeof(buf)))
		return false;
	if (lsn_parse(buf, &lsn) && lsn > ap->flushed_lsn)
		ap->flushed_lsn = lsn;
	return true;
}

/* Changes of a transaction from skip_origin, or applied before a restart, are not applied. */
static void
set_change(Applier *ap, uint8_t type, uint32_t relid)
{
	ap->change.type = type;
	ap->change.relid = relid;
}

static bool
skip_change(const Applier *ap)
{
	return ap->skipping || ap->origin_skipped;
}

bool
applier_applies(const Applier *ap)
{
	return ap->in_source_xact && !skip_change(ap);
}

bool
applier_handle(Applier *ap, const PgoutputMessage *msg)
{
	switch (msg->type) {
	case PGOUTPUT_BEGIN:
		ap->in_source_xact = true;
		ap->change.xid = msg->begin.xid;
		ap->change.final_lsn = msg->begin.final_lsn;
		ap->xact_final_lsn = msg->begin.final_lsn;
		ap->xact_xid = msg->begin.xid;
		/* Applied before a restart: the origin says so. */
		ap->skipping = msg->begin.final_lsn < ap->skip_before;
		ap->origin_skipped = false;
		ap->batch_this_xact = msg->begin.final_lsn >= ap->exact_before;
		ap->ddl.replayed_in_xact = false;
		ap->xact_changes = 0;
		return ap->skipping || open_target(ap);
	case PGOUTPUT_ORIGIN:
		/* Sent after Begin, before the changes, when the transaction has an origin. */
		if (ap->in_source_xact && ap->skip_origin && msg->origin.name &&
		    strcmp(msg->origin.name, ap->skip_origin) == 0) {
			ap->origin_skipped = true;
			log_debug(ap->subject, "skipping a transaction of origin %s: the other direction applied it",
				  msg->origin.name);
		}
		return true;
	case PGOUTPUT_COMMIT:
		ap->in_source_xact = false;
		if (ap->skipping) {
			ap->skipping = false;
			return true;
		}
		ap->group_end_lsn = msg->commit.end_lsn;
		ap->group_commit_time = msg->commit.commit_time;
		ap->group_xacts++;
		if (ap->origin_skipped)
			ap->xacts_skipped++;
		ap->origin_skipped = false;
		/*
		 * After a schema change the group commits with this transaction: the
		 * next ones may use what it made (a new enum value is usable only
		 * once the transaction that added it has committed).
		 */
		if (ap->ddl.replayed_in_xact) {
			ap->ddl.replayed_in_xact = false;
			return applier_flush(ap, true);
		}
		return applier_flush(ap, false);
	case PGOUTPUT_RELATION:
		/* Even in a skipped transaction: later changes name the table by its relid only. */
		if (ddl_relation(&ap->ddl, &msg->relation))
			return true;
		return apply_relation(ap, &msg->relation);
	case PGOUTPUT_INSERT:
		if (skip_change(ap))
			return true;
		if (is_ddl_relation(ap, msg->insert.relid))
			return apply_ddl(ap, &msg->insert.newtuple);
		ap->group_changes++;
		ap->xact_changes++;
		ap->changes_applied++;
		set_change(ap, msg->type, msg->insert.relid);
		return apply_insert(ap, &msg->insert);
	case PGOUTPUT_UPDATE:
		if (skip_change(ap) || is_ddl_relation(ap, msg->update.relid))
			return true;
		ap->group_changes++;
		ap->xact_changes++;
		ap->changes_applied++;
		set_change(ap, msg->type, msg->update.relid);
		return apply_update_or_delete(ap, msg->update.relid, true, msg->update.old_kind, &msg->update.oldtuple,
					      &msg->update.newtuple);
	case PGOUTPUT_DELETE:
		/* The capture deletes each of its rows at once: nothing to apply. */
		if (skip_change(ap) || is_ddl_relation(ap, msg->delete.relid))
			return true;
		ap->group_changes++;
		ap->xact_changes++;
		ap->changes_applied++;
		set_change(ap, msg->type, msg->delete.relid);
		return apply_update_or_delete(ap, msg->delete.relid, false, msg->delete.old_kind, &msg->delete.oldtuple,
					      NULL);
	case PGOUTPUT_TRUNCATE:
		if (skip_change(ap))
			return true;
		ap->group_changes++;
		ap->xact_changes++;
		return apply_truncate(ap, &msg->truncate);
	case PGOUTPUT_TYPE:
	case PGOUTPUT_MESSAGE:
		/* The cutover's marker needs no more than its transaction's Commit. */
		return true;
	default:
		log_error(ap->subject, "unexpected pgoutput message %s", pgoutput_message_name(msg->type));
		return false;
	}
}
