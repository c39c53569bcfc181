/*
 * Parallel table copy.  copy_jobs threads each hold one source connection
 * (inside the exported snapshot) and one target connection, and take tasks
 * from a shared list: whole tables, or ctid ranges of large tables (from
 * PostgreSQL 14, whose TID range scans read only the range).
 *
 * Binary COPY is used where it is safe: binary array and composite values
 * carry type OIDs, and a user-defined type has another OID on the target,
 * so tables with such columns go as text.
 *
 * When partitions are published through their root tables (partitions.h),
 * each partition of the source is still a task of its own, but its rows go
 * into the root table on the target, which routes them into its partitions.
 */
#include "replicator/copy.h"
#include "replicator/ddl.h"
#include "replicator/largeobj.h"
#include "replicator/replicate.h"
#include "replicator/status.h"
#include "common/log.h"
#include "common/strbuf.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define SPLIT_MIN_CHUNK_PAGES 8192 /* 64 MB: no range is smaller */
#define FIRST_NORMAL_OID 16384

typedef struct CopyTask {
	char *table;    /* quoted, qualified */
	char *into;     /* the target's table: table, or the root table of a partition */
	char *columns;  /* quoted, comma-separated */
	char range[96]; /* a ctid condition, or "" */
	bool binary;
	int64_t bytes; /* estimate, for ordering and progress */
	bool last_of_table;
} CopyTask;

typedef struct CopyRun {
	const Config *config;
	const DatabaseMapping *db;
	const char *snapshot;
	const char *subject;
	bool via_root;
	CopyTask *tasks;
	int ntasks;
	int next;
	bool failed;
	CopyProgress *progress;
	pthread_mutex_t lock;
} CopyRun;

static const char sql_tables[] =
	"SELECT format('%%I.%%I', n.nspname, c.relname), "
	"  string_agg(quote_ident(a.attname), ', ' ORDER BY a.attnum), "
	"  bool_and(a.atttypid < 16384 AND coalesce(t.typelem, 0) < 16384), "
	"  pg_relation_size(c.oid), c.relpages, %s "
	"FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
	"JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped "
	"JOIN pg_type t ON t.oid = a.atttypid "
	"WHERE c.relkind = 'r' AND c.relpersistence = 'p' "
	"  AND n.nspname NOT IN ('pg_catalog', 'information_schema') AND n.nspname !~ '^pg_(toast|temp)' " DDL_EXCLUDE_SCHEMA
	"  AND NOT EXISTS (SELECT 1 FROM pg_depend d WHERE d.classid = 'pg_class'::regclass "
	"                  AND d.objid = c.oid AND d.deptype = 'e') "
	"  %s "
	"GROUP BY 1, c.oid, c.relpages, c.relispartition ORDER BY 4 DESC";

/* The topmost root of a partition (pg_partition_root: PostgreSQL 12, and roots need 13). */
static const char sql_root[] =
	"CASE WHEN c.relispartition THEN (SELECT format('%I.%I', rn.nspname, r.relname) FROM pg_class r "
	"JOIN pg_namespace rn ON rn.oid = r.relnamespace WHERE r.oid = pg_partition_root(c.oid)) END";

/* Duplicates the names of row i of plan_tasks' list into task. */
static bool
task_names(CopyTask *task, const PGresult *res, int i)
{
	task->table = strdup(PQgetvalue(res, i, 0));
	task->columns = strdup(PQgetvalue(res, i, 1));
	task->into = strdup(PQgetisnull(res, i, 5) ? PQgetvalue(res, i, 0) : PQgetvalue(res, i, 5));
	return task->table && task->columns && task->into;
}

static void
free_task(CopyTask *task)
{
	free(task->table);
	free(task->columns);
	free(task->into);
}

static int
compare_tasks(const void *a, const void *b)
{
	const CopyTask *x = a, *y = b;

	return x->bytes < y->bytes ? 1 : x->bytes > y->bytes ? -1 : 0;
}

static bool
add_task(CopyRun *run, int *cap, const CopyTask *task)
{
	if (run->ntasks == *cap) {
		int grown_cap = *cap ? *cap * 2 : 64;
		CopyTask *grown = realloc(run->tasks, sizeof(CopyTask) * (size_t) grown_cap);

		if (!grown)
			return false;
		run->tasks = grown;
		*cap = grown_cap;
	}
	run->tasks[run->ntasks++] = *task;
	return true;
}

/* Lists the tables as the snapshot sees them, and splits the large ones. */
static bool
plan_tasks(CopyRun *run, ReplConn *source)
{
	char sql[sizeof(sql_tables) + sizeof(sql_root) + 128];
	char set[160];
	PGresult *res;
	int i, cap = 0;
	int jobs = run->config->replication.copy_jobs;
	int64_t split = run->config->replication.split_tables_larger_than;
	bool tid_ranges = source->version >= 140000;

	/* Generated columns are computed again on the target; they are not copied. */
	snprintf(sql, sizeof(sql), sql_tables, run->via_root ? sql_root : "NULL",
		 source->version >= 120000 ? "AND a.attgenerated = ''" : "");
	snprintf(set, sizeof(set), "SET TRANSACTION SNAPSHOT '%s'", run->snapshot);
	if (!repl_exec(source, "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY") || !repl_exec(source, set))
		return false;
	if (!repl_query(source, sql, 0, NULL, &res)) {
		if (!repl_exec(source, "ROLLBACK")) {
			/* already logged */
		}
		return false;
	}
	for (i = 0; i < PQntuples(res); i++) {
		CopyTask task;
		int64_t bytes = strtoll(PQgetvalue(res, i, 3), NULL, 10);
		long pages = strtol(PQgetvalue(res, i, 4), NULL, 10);

		memset(&task, 0, sizeof(task));
		task.binary = strcmp(PQgetvalue(res, i, 2), "t") == 0;
		run->progress->tables_total++;
		run->progress->bytes_total += bytes;
		/*
		 * Not by default: a table loaded whole goes in with COPY FREEZE (see
		 * copy_one), and then neither the index builds nor VACUUM write it
		 * all again.  On two cores that is faster than ranges side by side;
		 * servers with cores to spare may copy a huge table sooner in ranges.
		 */
		if (tid_ranges && split > 0 && bytes > split && jobs > 1 && pages >= 2 * SPLIT_MIN_CHUNK_PAGES) {
			long chunk = (pages + jobs - 1) / jobs;
			long start;

			if (chunk < SPLIT_MIN_CHUNK_PAGES)
				chunk = SPLIT_MIN_CHUNK_PAGES;
			for (start = 0; start < pages; start += chunk) {
				task.bytes = bytes * chunk / pages;
				task.last_of_table = start + chunk >= pages;
				/* The last range is open: pages added since relpages was computed are included. */
				if (start + chunk >= pages)
					snprintf(task.range, sizeof(task.range), "ctid >= '(%ld,0)'", start);
				else
					snprintf(task.range, sizeof(task.range),
						 "ctid >= '(%ld,0)' AND ctid < '(%ld,0)'", start, start + chunk);
				if (!task_names(&task, res, i) || !add_task(run, &cap, &task)) {
					free_task(&task);
					PQclear(res);
					return false;
				}
			}
		} else {
			task.bytes = bytes;
			task.last_of_table = true;
			if (!task_names(&task, res, i) || !add_task(run, &cap, &task)) {
				free_task(&task);
				PQclear(res);
				return false;
			}
		}
	}
	PQclear(res);
	qsort(run->tasks, (size_t) run->ntasks, sizeof(CopyTask), compare_tasks);
	return repl_exec(source, "COMMIT");
}

/* One task: COPY TO STDOUT on the source piped into COPY FROM STDIN on the target. */
static bool
copy_one(ReplConn *source, ReplConn *target, const CopyTask *task, bool may_freeze, ReplStatus *status, int64_t *bytes,
	 int64_t *rows)
{
	int64_t unpublished = 0;
	StrBuf out, in;
	const char *fmt = task->binary ? " (FORMAT binary)" : "";
	PGresult *res;
	char *buf;
	int n;
	bool ok = true;
	/* Never into a root table, whose other partitions a TRUNCATE would empty too. */
	bool whole = may_freeze && !task->range[0] && strcmp(task->into, task->table) == 0, in_transaction = false;

	strbuf_init(&out);
	strbuf_init(&in);
	if (task->range[0])
		strbuf_appendf(&out, "COPY (SELECT %s FROM %s WHERE %s) TO STDOUT%s", task->columns, task->table,
			       task->range, fmt);
	else
		strbuf_appendf(&out, "COPY %s (%s) TO STDOUT%s", task->table, task->columns, fmt);
	/*
	 * A whole table is loaded frozen: emptied in the same transaction, its
	 * rows need no hint bits set later, so the index builds that read it
	 * next do not write every page of it again (and neither does VACUUM).
	 * Only into a schema of our own: the DBA's (schema = none) may have
	 * foreign keys, which TRUNCATE ONLY refuses.
	 */
	if (whole)
		strbuf_appendf(&in, "COPY %s (%s) FROM STDIN (FREEZE%s)", task->into, task->columns,
			       task->binary ? ", FORMAT binary" : "");
	else
		strbuf_appendf(&in, "COPY %s (%s) FROM STDIN%s", task->into, task->columns, fmt);

	res = PQexec(source->conn, strbuf_str(&out));
	if (PQresultStatus(res) != PGRES_COPY_OUT) {
		log_error(source->subject, "%s: %s", task->table, PQresultErrorMessage(res));
		PQclear(res);
		ok = false;
		goto done;
	}
	PQclear(res);
	if (whole) {
		StrBuf truncate;

		strbuf_init(&truncate);
		strbuf_appendf(&truncate, "BEGIN; TRUNCATE ONLY %s", task->into);
		in_transaction = !truncate.failed && repl_exec(target, strbuf_str(&truncate));
		strbuf_free(&truncate);
	}
	res = whole && !in_transaction ? NULL : PQexec(target->conn, strbuf_str(&in));
	if (PQresultStatus(res) != PGRES_COPY_IN) {
		if (res) /* else BEGIN or TRUNCATE failed, and said so */
			log_error(target->subject, "%s: %s", task->into, PQresultErrorMessage(res));
		PQclear(res);
		/* Drain the source's COPY so the connection stays usable. */
		while ((n = PQgetCopyData(source->conn, &buf, 0)) > 0)
			PQfreemem(buf);
		PQclear(PQgetResult(source->conn));
		ok = false;
		goto done;
	}
	PQclear(res);
	while ((n = PQgetCopyData(source->conn, &buf, 0)) > 0) {
		if (replicate_stop_requested) {
			PQfreemem(buf);
			break;
		}
		if (ok && PQputCopyData(target->conn, buf, n) != 1) {
			log_error(target->subject, "%s: %s", task->into, PQerrorMessage(target->conn));
			ok = false;
		}
		*bytes += n;
		(*rows)++;
		PQfreemem(buf);
		/* Progress goes out every megabyte or so: the lock is not taken per row. */
		unpublished += n;
		if (status && unpublished >= (1 << 20)) {
			status_copy_bytes(status, unpublished);
			unpublished = 0;
		}
	}
	if (status && unpublished > 0)
		status_copy_bytes(status, unpublished);
	if (n > 0) {
		/*
		 * Stopped by request.  The source's COPY is left unread (closing its
		 * connection ends it); the target's is ended with an error, so
		 * nothing of this task stays.  The next run copies again.
		 */
		if (PQputCopyEnd(target->conn, "stopped by request") == 1)
			while ((res = PQgetResult(target->conn)) != NULL)
				PQclear(res);
		ok = false;
		goto done;
	}
	if (n == -2) {
		log_error(source->subject, "%s: %s", task->table, PQerrorMessage(source->conn));
		ok = false;
	}
	res = PQgetResult(source->conn);
	if (PQresultStatus(res) != PGRES_COMMAND_OK) {
		log_error(source->subject, "%s: %s", task->table, PQresultErrorMessage(res));
		ok = false;
	}
	PQclear(res);
	if (PQputCopyEnd(target->conn, ok ? NULL : "source COPY failed") != 1)
		ok = false;
	res = PQgetResult(target->conn);
	if (PQresultStatus(res) != PGRES_COMMAND_OK) {
		if (ok)
			log_error(target->subject, "%s: %s", task->into, PQresultErrorMessage(res));
		ok = false;
	}
	PQclear(res);
	if (in_transaction && !repl_exec(target, ok ? "COMMIT" : "ROLLBACK"))
		ok = false;
	in_transaction = false;
	if (task->binary && *rows > 0)
		(*rows)--; /* the binary trailer is not a row (the header rides on the first) */
done:
	if (in_transaction && !repl_exec(target, "ROLLBACK")) {
		/* already logged */
	}
	strbuf_free(&out);
	strbuf_free(&in);
	return ok;
}

static void *
copy_worker(void *arg)
{
	CopyRun *run = arg;
	ReplConn source, target;
	char subject[160], set[160];
	bool connected;

	snprintf(subject, sizeof(subject), "%s copy", run->subject);
	snprintf(set, sizeof(set), "SET TRANSACTION SNAPSHOT '%s'", run->snapshot);
	connected = repl_connect(&source, &run->config->source, run->db->name, false, subject) &&
		repl_connect(&target, &run->config->target, run->db->target_name, false, subject) &&
		repl_exec(&source, "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY") && repl_exec(&source, set) &&
		repl_exec(&target, "SET session_replication_role = replica") &&
		repl_exec(&target, "SET synchronous_commit = off");
	if (!connected) {
		pthread_mutex_lock(&run->lock);
		run->failed = true;
		pthread_mutex_unlock(&run->lock);
	}
	while (connected) {
		CopyTask *task = NULL;
		int64_t bytes = 0, rows = 0;
		bool ok;

		pthread_mutex_lock(&run->lock);
		if (replicate_stop_requested)
			run->failed = true;
		else if (!run->failed && run->next < run->ntasks)
			task = &run->tasks[run->next++];
		pthread_mutex_unlock(&run->lock);
		if (!task)
			break;
		log_debug(subject, "copying %s%s%s", task->table, task->range[0] ? " where " : "", task->range);
		ok = copy_one(&source, &target, task, run->config->replication.schema == SCHEMA_COPY,
			      run->progress->status, &bytes, &rows);
		pthread_mutex_lock(&run->lock);
		if (!ok)
			run->failed = true;
		run->progress->bytes_done += task->bytes;
		run->progress->rows_done += rows;
		if (task->last_of_table)
			run->progress->tables_done++;
		pthread_mutex_unlock(&run->lock);
		if (task->last_of_table && run->progress->status)
			status_copy_table_done(run->progress->status);
		if (ok && strcmp(task->into, task->table) != 0)
			log_info(subject, "copied %s%s%s into %s: %lld rows", task->table,
				 task->range[0] ? " where " : "", task->range, task->into, (long long) rows);
		else if (ok)
			log_info(subject, "copied %s%s%s: %lld rows", task->table, task->range[0] ? " where " : "",
				 task->range, (long long) rows);
	}
	repl_close(&source);
	repl_close(&target);
	return NULL;
}

bool
copy_database(const Config *config, const DatabaseMapping *db, ReplConn *source, const char *snapshot, bool via_root,
	      const char *subject, CopyProgress *progress)
{
	CopyRun run;
	pthread_t threads[64];
	int nthreads = config->replication.copy_jobs;
	int i, started = 0;

	memset(&run, 0, sizeof(run));
	run.config = config;
	run.db = db;
	run.snapshot = snapshot;
	run.subject = subject;
	run.via_root = via_root;
	run.progress = progress;
	pthread_mutex_init(&run.lock, NULL);
	if (!plan_tasks(&run, source)) {
		run.failed = true;
		goto done;
	}
	if (progress->status)
		status_copy_plan(progress->status, progress->tables_total, progress->bytes_total);
	log_info(subject, "copying %d table(s), %lld MB, in %d task(s) with %d job(s)", progress->tables_total,
		 (long long) (progress->bytes_total >> 20), run.ntasks, nthreads);
	if (nthreads > run.ntasks)
		nthreads = run.ntasks > 0 ? run.ntasks : 0;
	for (i = 0; i < nthreads; i++) {
		if (pthread_create(&threads[i], NULL, copy_worker, &run) != 0) {
			log_error(subject, "could not start a copy thread");
			run.failed = true;
			break;
		}
		started++;
	}
	for (i = 0; i < started; i++)
		pthread_join(threads[i], NULL);
	/* Large objects are not tables: copied in the same snapshot, after them. */
	if (!run.failed && !replicate_stop_requested && !largeobj_copy_initial(config, db, snapshot, subject))
		run.failed = true;
done:
	for (i = 0; i < run.ntasks; i++)
		free_task(&run.tasks[i]);
	free(run.tasks);
	pthread_mutex_destroy(&run.lock);
	return !run.failed;
}
