/*
 * The post-data section after the initial copy, built faster than
 * pg_restore alone builds it.  pg_restore adds a PRIMARY KEY or UNIQUE
 * constraint under an ACCESS EXCLUSIVE lock, so every other index of the
 * same table waits for it, and a table's indexes are built one after the
 * other.  Here every index of plain tables, and the index behind each
 * primary key and unique constraint, is built with CREATE INDEX on
 * copy_jobs connections at once, largest table first; the constraints are
 * then attached with ADD CONSTRAINT ... USING INDEX, which is instant.
 * pg_restore does everything else (foreign keys, triggers, rules, comments,
 * the indexes this file leaves alone) from a TOC list with the built entries
 * commented out.
 *
 * An entry is built here only if it is in the archive (its OID is in the TOC)
 * and pg_dump would emit nothing for it that CREATE INDEX does not: no
 * tablespace, no statistics targets, no extension dependency, no partition,
 * no inheritance.  Everything else is left to pg_restore, which is always
 * right, only slower.
 */
#include "replicator/indexes.h"
#include "replicator/ddl.h"
#include "replicator/replicate.h"
#include "replicator/schema.h"
#include "common/clock.h"
#include "common/log.h"
#include "common/strbuf.h"

#include <errno.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define PG_CLASS_OID 1259
#define PG_CONSTRAINT_OID 2606

typedef struct IndexTask {
	unsigned int oid; /* the TOC entry's object: an index, or a constraint */
	bool constraint;
	char *create;        /* CREATE [UNIQUE] INDEX ... */
	char *after;         /* statements once every index exists: constraints, CLUSTER ON, REPLICA IDENTITY */
	char *name;          /* for logs */
	int64_t table_bytes; /* on the source: what the build reads */
} IndexTask;

typedef struct IndexRun {
	const Config *config;
	const DatabaseMapping *db;
	const char *subject;
	IndexTask *tasks;
	int ntasks;
	int next;
	int64_t waiting_bytes; /* table_bytes of the tasks not taken yet */
	int64_t running_bytes; /* and of those being built */
	bool failed;
	pthread_mutex_t lock;
} IndexRun;

/*
 * pg_get_indexdef qualifies what search_path does not show: with only
 * pg_catalog on it, the statement names every user object's schema.
 * %s: the PostgreSQL 15 NULLS NOT DISTINCT test, which USING INDEX cannot say.
 */
static const char sql_indexes[] =
	"SELECT coalesce(con.oid, i.indexrelid), con.oid IS NOT NULL, pg_catalog.pg_get_indexdef(i.indexrelid), "
	"  CASE WHEN con.oid IS NOT NULL THEN pg_catalog.format('ALTER TABLE ONLY %%s ADD CONSTRAINT %%I %%s USING "
	"INDEX %%I;', t.oid::pg_catalog.regclass, con.conname, CASE con.contype WHEN 'p' THEN 'PRIMARY KEY' "
	"ELSE 'UNIQUE' END, ic.relname) ELSE '' END || "
	"  CASE WHEN i.indisclustered THEN pg_catalog.format('ALTER TABLE ONLY %%s CLUSTER ON %%I;', "
	"t.oid::pg_catalog.regclass, coalesce(con.conname, ic.relname)) ELSE '' END || "
	"  CASE WHEN i.indisreplident THEN pg_catalog.format('ALTER TABLE ONLY %%s REPLICA IDENTITY USING INDEX %%I;', "
	"t.oid::pg_catalog.regclass, coalesce(con.conname, ic.relname)) ELSE '' END, "
	"  ic.oid::pg_catalog.regclass::text, pg_catalog.pg_relation_size(t.oid) "
	"FROM pg_catalog.pg_index i "
	"JOIN pg_catalog.pg_class ic ON ic.oid = i.indexrelid "
	"JOIN pg_catalog.pg_class t ON t.oid = i.indrelid "
	"JOIN pg_catalog.pg_namespace n ON n.oid = t.relnamespace "
	"LEFT JOIN pg_catalog.pg_constraint con ON con.conindid = i.indexrelid AND con.conrelid = t.oid "
	"  AND con.contype IN ('p', 'u', 'x') "
	"WHERE t.relkind = 'r' AND t.relpersistence = 'p' AND NOT t.relispartition AND NOT t.relhassubclass "
	"  AND NOT EXISTS (SELECT 1 FROM pg_catalog.pg_inherits h WHERE h.inhrelid = t.oid) "
	"  AND ic.relkind = 'i' AND i.indisvalid AND i.indisready AND ic.reltablespace = 0 "
	"  AND n.nspname NOT IN ('pg_catalog', 'information_schema') AND n.nspname !~ '^pg_' " DDL_EXCLUDE_SCHEMA
	"  AND NOT EXISTS (SELECT 1 FROM pg_catalog.pg_attribute a WHERE a.attrelid = i.indexrelid "
	"                  AND coalesce(a.attstattarget, -1) <> -1) "
	"  AND NOT EXISTS (SELECT 1 FROM pg_catalog.pg_depend d WHERE d.classid = 'pg_catalog.pg_class'::pg_catalog.regclass "
	"                  AND d.objid = i.indexrelid AND d.deptype = 'x') "
	"  AND (con.oid IS NULL OR (con.contype IN ('p', 'u') AND NOT con.condeferrable AND i.indexprs IS NULL "
	"       AND i.indpred IS NULL AND i.indnkeyatts = i.indnatts AND ic.relam = 403 "
	"       AND pg_catalog.array_to_string(i.indoption::pg_catalog.int2[], ',') ~ '^[0,]*$' %s)) "
	"ORDER BY pg_catalog.pg_relation_size(t.oid) DESC, ic.relpages DESC";

/* An archive entry's catalog and object OIDs as one sortable key. */
static uint64_t
entry_key(unsigned long catalog, unsigned long oid)
{
	return ((uint64_t) (uint32_t) catalog << 32) | (uint32_t) oid;
}

static int
key_cmp(const void *a, const void *b)
{
	uint64_t x = *(const uint64_t *) a, y = *(const uint64_t *) b;

	return x < y ? -1 : x > y;
}

static bool
key_in(const uint64_t *keys, int n, uint64_t key)
{
	return n > 0 && bsearch(&key, keys, (size_t) n, sizeof(key), key_cmp) != NULL;
}

/*
 * The key of a TOC line that is an INDEX or CONSTRAINT entry, such as
 * "215; 1259 16422 INDEX public name owner"; false for any other line.
 */
static bool
toc_line_key(const char *line, uint64_t *key)
{
	unsigned long id, cat, obj;
	int used = 0;

	if (sscanf(line, "%lu; %lu %lu %n", &id, &cat, &obj, &used) != 3 || used == 0 ||
	    (strncmp(line + used, "INDEX ", 6) != 0 && strncmp(line + used, "CONSTRAINT ", 11) != 0))
		return false;
	*key = entry_key(cat, obj);
	return true;
}

/* The keys of the archive's INDEX and CONSTRAINT entries, sorted. */
static bool
toc_keys(const char *toc, uint64_t **keys, int *n, const char *subject)
{
	const char *line;
	int cap = 0;

	*keys = NULL;
	*n = 0;
	for (line = toc; line && *line; line = strchr(line, '\n'), line = line ? line + 1 : NULL) {
		uint64_t key;

		if (!toc_line_key(line, &key))
			continue;
		if (*n == cap) {
			uint64_t *grown = realloc(*keys, sizeof(uint64_t) * (size_t) (cap ? cap * 2 : 256));

			if (!grown) {
				log_error(subject, "out of memory");
				free(*keys);
				*keys = NULL;
				return false;
			}
			*keys = grown;
			cap = cap ? cap * 2 : 256;
		}
		(*keys)[(*n)++] = key;
	}
	if (*n > 0)
		qsort(*keys, (size_t) *n, sizeof(uint64_t), key_cmp);
	return true;
}

/* Writes toc to fd with the built entries commented out, for pg_restore -L. */
static bool
write_use_list(int fd, const char *toc, const IndexRun *run, const char *subject)
{
	StrBuf out;
	const char *line, *end;
	uint64_t *built = malloc(sizeof(uint64_t) * (size_t) (run->ntasks > 0 ? run->ntasks : 1));
	bool ok;
	int i;

	if (!built) {
		log_error(subject, "out of memory");
		return false;
	}
	for (i = 0; i < run->ntasks; i++)
		built[i] = entry_key(run->tasks[i].constraint ? PG_CONSTRAINT_OID : PG_CLASS_OID, run->tasks[i].oid);
	qsort(built, (size_t) run->ntasks, sizeof(uint64_t), key_cmp);
	strbuf_init(&out);
	for (line = toc; *line; line = *end ? end + 1 : end) {
		uint64_t key;

		end = strchr(line, '\n');
		if (!end)
			end = line + strlen(line);
		if (toc_line_key(line, &key) && key_in(built, run->ntasks, key))
			strbuf_append(&out, ";");
		strbuf_append_len(&out, line, (size_t) (end - line));
		strbuf_append(&out, "\n");
	}
	free(built);
	ok = !out.failed;
	if (ok && (write(fd, strbuf_str(&out), out.len) != (ssize_t) out.len || lseek(fd, 0, SEEK_SET) != 0)) {
		log_error(subject, "could not write the pg_restore list: %s", strerror(errno));
		ok = false;
	}
	strbuf_free(&out);
	return ok;
}

static bool
plan(IndexRun *run, ReplConn *source, const char *toc)
{
	char sql[sizeof(sql_indexes) + 64];
	PGresult *res;
	uint64_t *keys;
	int i, n, nkeys;

	if (!toc_keys(toc, &keys, &nkeys, run->subject))
		return false;
	snprintf(sql, sizeof(sql), sql_indexes, source->version >= 150000 ? "AND NOT i.indnullsnotdistinct" : "");
	if (!repl_exec(source, "SELECT pg_catalog.set_config('search_path', 'pg_catalog', false)") ||
	    !repl_query(source, sql, 0, NULL, &res)) {
		free(keys);
		return false;
	}
	n = PQntuples(res);
	run->tasks = calloc((size_t) (n > 0 ? n : 1), sizeof(IndexTask));
	if (!run->tasks) {
		PQclear(res);
		free(keys);
		log_error(run->subject, "out of memory");
		return false;
	}
	for (i = 0; i < n; i++) {
		IndexTask *task = &run->tasks[run->ntasks];
		unsigned long oid = strtoul(PQgetvalue(res, i, 0), NULL, 10);

		task->constraint = strcmp(PQgetvalue(res, i, 1), "t") == 0;
		if (!key_in(keys, nkeys, entry_key(task->constraint ? PG_CONSTRAINT_OID : PG_CLASS_OID, oid)))
			continue;
		task->oid = (unsigned int) oid;
		task->create = strdup(PQgetvalue(res, i, 2));
		task->after = strdup(PQgetvalue(res, i, 3));
		task->name = strdup(PQgetvalue(res, i, 4));
		task->table_bytes = strtoll(PQgetvalue(res, i, 5), NULL, 10);
		run->waiting_bytes += task->table_bytes;
		run->ntasks++;
		if (!task->create || !task->after || !task->name) {
			PQclear(res);
			free(keys);
			log_error(run->subject, "out of memory");
			return false;
		}
	}
	PQclear(res);
	free(keys);
	return repl_exec(source, "RESET search_path");
}

static bool
session_setup(ReplConn *target, const Config *config)
{
	char set[96];

	if (config->replication.maintenance_work_mem <= 0)
		return true;
	/* Index builds sort in memory rather than in temporary files: the target's default (64MB) spills. */
	snprintf(set, sizeof(set), "SET maintenance_work_mem = '%lldkB'",
		 (long long) (config->replication.maintenance_work_mem / 1024));
	return repl_exec(target, set);
}

static void *
build_worker(void *arg)
{
	IndexRun *run = arg;
	ReplConn target;
	char subject[160];
	bool ok;

	snprintf(subject, sizeof(subject), "%s indexes", run->subject);
	ok = repl_connect(&target, &run->config->target, run->db->target_name, false, subject) &&
		session_setup(&target, run->config);
	for (;;) {
		IndexTask *task = NULL;
		bool alongside = false;

		pthread_mutex_lock(&run->lock);
		if (!ok || replicate_stop_requested) {
			run->failed = true;
		} else if (!run->failed && run->next < run->ntasks) {
			task = &run->tasks[run->next++];
			run->waiting_bytes -= task->table_bytes;
			alongside = run->waiting_bytes + run->running_bytes >= task->table_bytes / 2;
			run->running_bytes += task->table_bytes;
		}
		pthread_mutex_unlock(&run->lock);
		if (!task)
			break;
		log_debug(subject, "building %s%s", task->name, alongside ? "" : " with parallel workers");
		/*
		 * With builds of a like size beside it, this one is not split among
		 * parallel workers: the builds already keep every core busy, and the
		 * workers' own sorts and merge only add work.  Built alone (or beside
		 * small ones), a large index gets the target's workers.
		 */
		ok = repl_exec(&target,
			       alongside ? "SET max_parallel_maintenance_workers = 0"
					 : "RESET max_parallel_maintenance_workers") &&
			repl_exec(&target, task->create);
		if (!ok)
			log_error(subject, "index %s could not be built", task->name);
		pthread_mutex_lock(&run->lock);
		run->running_bytes -= task->table_bytes;
		pthread_mutex_unlock(&run->lock);
	}
	repl_close(&target);
	return NULL;
}

/* Builds every task's index, copy_jobs at once; then the statements that need them all. */
static bool
build_all(IndexRun *run)
{
	pthread_t threads[64];
	int nthreads = run->config->replication.copy_jobs;
	int i, started = 0;
	ReplConn target;
	StrBuf after;
	bool ok;

	if (nthreads > run->ntasks)
		nthreads = run->ntasks;
	if (nthreads > (int) (sizeof(threads) / sizeof(threads[0])))
		nthreads = (int) (sizeof(threads) / sizeof(threads[0]));
	for (i = 0; i < nthreads; i++) {
		if (pthread_create(&threads[i], NULL, build_worker, run) != 0) {
			log_error(run->subject, "could not start an index thread");
			run->failed = true;
			break;
		}
		started++;
	}
	for (i = 0; i < started; i++)
		pthread_join(threads[i], NULL);
	if (run->failed)
		return false;
	/* One transaction: the ACCESS EXCLUSIVE locks of ADD CONSTRAINT are taken once the builds are over. */
	strbuf_init(&after);
	strbuf_append(&after, "BEGIN;");
	for (i = 0; i < run->ntasks; i++)
		strbuf_append(&after, run->tasks[i].after);
	strbuf_append(&after, "COMMIT;");
	ok = !after.failed && repl_connect(&target, &run->config->target, run->db->target_name, false, run->subject);
	if (ok) {
		ok = repl_exec(&target, strbuf_str(&after));
		repl_close(&target);
	}
	strbuf_free(&after);
	return ok;
}

bool
indexes_restore_post_data(const Config *config, const DatabaseMapping *db, ReplConn *source, const char *archive,
			  const char *subject)
{
	IndexRun run;
	char *toc = NULL;
	char list_path[64];
	int fd = -1, i, constraints = 0;
	bool ok = false;
	double t0 = 0;

	memset(&run, 0, sizeof(run));
	run.config = config;
	run.db = db;
	run.subject = subject;
	pthread_mutex_init(&run.lock, NULL);
	if (!schema_list(config, archive, "post-data", &toc, subject) || !plan(&run, source, toc))
		goto done;
	if (run.ntasks == 0) {
		ok = schema_restore(config, db, archive, "post-data", NULL, config->replication.copy_jobs, subject);
		goto done;
	}
	for (i = 0; i < run.ntasks; i++)
		constraints += run.tasks[i].constraint;
	t0 = clock_monotonic();
	if (!build_all(&run))
		goto done;
	log_info(subject, "built %d index(es), %d of them for a primary key or unique constraint, in %.1f s",
		 run.ntasks, constraints, clock_monotonic() - t0);
	fd = schema_anonymous_file("list", list_path, sizeof(list_path), subject);
	ok = fd >= 0 && write_use_list(fd, toc, &run, subject) &&
		schema_restore(config, db, archive, "post-data", list_path, config->replication.copy_jobs, subject);
done:
	if (fd >= 0)
		close(fd);
	for (i = 0; i < run.ntasks; i++) {
		free(run.tasks[i].create);
		free(run.tasks[i].after);
		free(run.tasks[i].name);
	}
	free(run.tasks);
	free(toc);
	pthread_mutex_destroy(&run.lock);
	return ok;
}
