/*
 * `pghandoff verify`: an online, consistent comparison of every table on the
 * source and the target while replication goes on.
 *
 * Per database: the follower is paused (hold.h); a temporary slot on the
 * source exports a snapshot that sees exactly the transactions committed
 * before its consistent point C; the follower applies exactly those and
 * exports a snapshot of the target there; both snapshots are imported, the
 * follower goes on, and the tables are compared in those two snapshots,
 * copy_jobs at a time: row count and an order-independent hash of the rows
 * (sum of the first 60 bits of each row's md5, columns in name order, text
 * in one dialect on both sides).  For a table that differs, a few differing
 * keys are found by walking both sides in key order.  Partitions are
 * compared as they are published: one by one, or, through their roots, each
 * partitioned table whole.
 */
#include "replicator/verify.h"
#include "replicator/ddl.h"
#include "common/clock.h"
#include "common/log.h"
#include "common/strbuf.h"
#include "replicator/conn.h"
#include "replicator/hold.h"
#include "replicator/slots.h"
#include "replicator/pgoutput.h"
#include "replicator/names.h"
#include "replicator/replicate.h"
#include "replicator/status.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define VERIFY_MAX_JOBS 16
#define SHOWN_KEYS 5
#define REPLY_TIMEOUT 60.0

/* Tables with their columns in name order and their primary key's columns, "" without one. */
#define SQL_TABLES(which, size) \
	"SELECT format('%I.%I', n.nspname, c.relname), " \
	"  (SELECT string_agg(quote_ident(a.attname), ', ' ORDER BY a.attname) FROM pg_attribute a " \
	"   WHERE a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped), " \
	"  coalesce((SELECT string_agg(quote_ident(a.attname), ', ' ORDER BY array_position(i.indkey, a.attnum)) " \
	"   FROM pg_index i JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = ANY (i.indkey) " \
	"   WHERE i.indrelid = c.oid AND i.indisprimary), '') " \
	"FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace " \
	"WHERE " which " AND c.relpersistence = 'p' " \
	"  AND n.nspname NOT IN ('pg_catalog', 'information_schema') AND n.nspname !~ '^pg_' " DDL_EXCLUDE_SCHEMA \
	"ORDER BY " size " DESC"

/* Partitions one by one, as they are published: the target has the same. */
static const char sql_tables[] = SQL_TABLES("c.relkind = 'r'", "pg_relation_size(c.oid)");
/*
 * Published through their roots: the target may partition differently, so
 * each partitioned table is compared whole (pg_partition_tree: PostgreSQL
 * 12, and publishing through the roots needs 13).
 */
static const char sql_root_tables[] =
	SQL_TABLES("c.relkind IN ('r', 'p') AND NOT c.relispartition",
		   "(SELECT sum(pg_relation_size(p.relid)) FROM pg_partition_tree(c.oid) p)");

typedef struct Table {
	char *name;
	char *columns;
	char *key;
	char source_count[32];
	char target_count[32];
	char source_hash[64];
	char target_hash[64];
	bool differs;
	bool failed;
	StrBuf keys; /* a few differing keys */
} Table;

typedef struct Job {
	ReplConn source;
	ReplConn target;
	Table *tables;
	int ntables;
	int first; /* this job takes tables first, first + njobs, ... */
	int step;
} Job;

/* Writes a request and waits for the follower's answer to it; the answer's words after the nonce go to reply. */
static bool
ask_follower(const char *control, const char *replypath, const char *nonce, const char *request, const char *expect,
	     char *reply, size_t replylen, const char *subject)
{
	char tmp[4200], line[512];
	double start = clock_monotonic();
	FILE *f;

	snprintf(tmp, sizeof(tmp), "%s.tmp", control);
	f = fopen(tmp, "w");
	if (!f || fprintf(f, "%s request %s\n", nonce, request) < 0 || fclose(f) != 0 || rename(tmp, control) != 0) {
		log_error(subject, "could not write the verify request %s", control);
		return false;
	}
	for (;;) {
		struct timespec tick = {0, 10 * 1000 * 1000};

		f = fopen(replypath, "r");
		if (f) {
			bool got = fgets(line, sizeof(line), f) != NULL;

			fclose(f);
			if (got && strncmp(line, nonce, strlen(nonce)) == 0 && line[strlen(nonce)] == ' ') {
				const char *words = line + strlen(nonce) + 1;

				snprintf(reply, replylen, "%.*s", (int) strcspn(words, "\n"), words);
				if (strncmp(reply, expect, strlen(expect)) == 0)
					return true;
				log_error(subject, "the follower answered \"%s\" to \"%s\"", reply, request);
				return false;
			}
		}
		if (clock_monotonic() - start > REPLY_TIMEOUT) {
			log_error(subject,
				  "the follower did not answer \"%s\" within %.0f s: is `pghandoff run` (or "
				  "replicate) running with this configuration?",
				  request, REPLY_TIMEOUT);
			return false;
		}
		nanosleep(&tick, NULL);
	}
}

static bool
follower_streaming(const Config *config, const DatabaseMapping *db, const char *subject)
{
	char path[4096], phase[32] = "", updated[32] = "";
	StatusValues v;
	struct timespec ts;

	status_path(config, db->name, path, sizeof(path));
	clock_gettime(CLOCK_REALTIME, &ts);
	if (!path[0] || !status_read(path, &v) || !status_copy_value(&v, "phase", phase, sizeof(phase)) ||
	    !status_copy_value(&v, "updated_at", updated, sizeof(updated)) || strcmp(phase, "streaming") != 0 ||
	    (double) ts.tv_sec - strtod(updated, NULL) > 30) {
		log_error(subject,
			  "no follower is streaming database %s (its progress file %s says \"%s\"): run "
			  "`pghandoff run` or `pghandoff replicate` with this configuration first",
			  db->name, path[0] ? path : "(state_file is empty)", phase[0] ? phase : "nothing");
		return false;
	}
	return true;
}

static bool
import_snapshot(ReplConn *conn, const char *snapshot)
{
	char sql[200];

	snprintf(sql, sizeof(sql), "SET TRANSACTION SNAPSHOT '%s'", snapshot);
	return repl_exec(conn, "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY") && repl_exec(conn, sql) &&
		repl_exec(conn, "SET LOCAL TimeZone = 'UTC'");
}

static bool
run_pair(Job *job, const char *sql_source, const char *sql_target, PGresult **a, PGresult **b)
{
	bool ok;

	*a = *b = NULL;
	/* Both sides at once: the comparison takes as long as the slower one. */
	ok = PQsendQuery(job->source.conn, sql_source) == 1 && PQsendQuery(job->target.conn, sql_target) == 1;
	*a = PQgetResult(job->source.conn);
	while (*a && PQgetResult(job->source.conn))
		; /* a single statement: the NULL that ends it */
	*b = PQgetResult(job->target.conn);
	while (*b && PQgetResult(job->target.conn))
		;
	if (!ok || PQresultStatus(*a) != PGRES_TUPLES_OK || PQresultStatus(*b) != PGRES_TUPLES_OK) {
		log_error(job->source.subject, "comparing failed: %s%s",
			  *a ? PQresultErrorMessage(*a) : PQerrorMessage(job->source.conn),
			  *b ? PQresultErrorMessage(*b) : PQerrorMessage(job->target.conn));
		return false;
	}
	return true;
}

/* Walks both sides in key order (as text, in the C collation on both) and notes the first differing keys. */
static void
find_differing_keys(Job *job, Table *t)
{
	StrBuf sql;
	PGresult *a, *b;
	int i = 0, j = 0, found = 0, na, nb;

	strbuf_init(&sql);
	strbuf_appendf(&sql, "SELECT ROW(%s)::text COLLATE \"C\" AS k, md5(ROW(%s)::text) FROM %s ORDER BY 1", t->key,
		       t->columns, t->name);
	if (!run_pair(job, strbuf_str(&sql), strbuf_str(&sql), &a, &b)) {
		PQclear(a);
		PQclear(b);
		strbuf_free(&sql);
		return;
	}
	na = PQntuples(a);
	nb = PQntuples(b);
	while ((i < na || j < nb) && found < SHOWN_KEYS) {
		int cmp = i >= na ? 1 : j >= nb ? -1 : strcmp(PQgetvalue(a, i, 0), PQgetvalue(b, j, 0));

		if (cmp == 0 && strcmp(PQgetvalue(a, i, 1), PQgetvalue(b, j, 1)) == 0) {
			i++;
			j++;
			continue;
		}
		strbuf_appendf(&t->keys, "%s%s %s", found++ ? ", " : "",
			       cmp < 0 ? PQgetvalue(a, i, 0) : PQgetvalue(b, j, 0),
			       cmp < 0           ? "(only on the source)"
				       : cmp > 0 ? "(only on the target)"
						 : "(differs)");
		if (cmp <= 0)
			i++;
		if (cmp >= 0)
			j++;
	}
	PQclear(a);
	PQclear(b);
	strbuf_free(&sql);
}

static void *
job_main(void *arg)
{
	Job *job = arg;
	int i;

	for (i = job->first; i < job->ntables; i += job->step) {
		Table *t = &job->tables[i];
		StrBuf sql;
		PGresult *a, *b;

		strbuf_init(&sql);
		strbuf_appendf(&sql,
			       "SELECT count(*), coalesce(sum(('x' || substr(md5(ROW(%s)::text), 1, 15))::bit(60)::bigint::numeric), "
			       "0) FROM %s",
			       t->columns, t->name);
		if (run_pair(job, strbuf_str(&sql), strbuf_str(&sql), &a, &b)) {
			snprintf(t->source_count, sizeof(t->source_count), "%s", PQgetvalue(a, 0, 0));
			snprintf(t->target_count, sizeof(t->target_count), "%s", PQgetvalue(b, 0, 0));
			snprintf(t->source_hash, sizeof(t->source_hash), "%s", PQgetvalue(a, 0, 1));
			snprintf(t->target_hash, sizeof(t->target_hash), "%s", PQgetvalue(b, 0, 1));
			t->differs = strcmp(t->source_count, t->target_count) != 0 ||
				strcmp(t->source_hash, t->target_hash) != 0;
		} else {
			t->failed = true;
		}
		PQclear(a);
		PQclear(b);
		strbuf_free(&sql);
		if (t->differs && t->key[0])
			find_differing_keys(job, t);
	}
	return NULL;
}

/* The follower held, both snapshots imported into every job's connections. */
static bool
take_snapshots(const Config *config, const DatabaseMapping *db, Job *jobs, int njobs, char *lsn, size_t lsnlen,
	       const char *subject)
{
	char control[4096], replypath[4200], nonce[64], reply[256], request[96], source_snapshot[128],
		target_snapshot[128], slot_sql[200];
	ReplConn repl;
	PGresult *res;
	bool ok = false;
	int k;

	hold_paths(config, db->name, control, sizeof(control), replypath, sizeof(replypath));
	snprintf(nonce, sizeof(nonce), "v%d-%ld", (int) getpid(), (long) time(NULL));
	if (!ask_follower(control, replypath, nonce, "pause", "paused", reply, sizeof(reply), subject))
		return false;
	if (!repl_connect(&repl, &config->source, db->name, true, subject))
		goto release;
	snprintf(slot_sql, sizeof(slot_sql),
		 "CREATE_REPLICATION_SLOT \"pghandoff_verify_%d\" TEMPORARY LOGICAL pgoutput EXPORT_SNAPSHOT",
		 (int) getpid());
	res = PQexec(repl.conn, slot_sql);
	if (PQresultStatus(res) != PGRES_TUPLES_OK) {
		log_error(subject, "could not take a snapshot of the source: %s", PQresultErrorMessage(res));
		PQclear(res);
		repl_close(&repl);
		goto release;
	}
	snprintf(lsn, lsnlen, "%s", PQgetvalue(res, 0, 1));
	snprintf(source_snapshot, sizeof(source_snapshot), "%s", PQgetvalue(res, 0, 2));
	PQclear(res);
	/* The exported snapshot lives until the replication connection's next command: import it now. */
	for (k = 0; k < njobs; k++)
		if (!import_snapshot(&jobs[k].source, source_snapshot)) {
			repl_close(&repl);
			goto release;
		}
	strncat(nonce, "h", sizeof(nonce) - strlen(nonce) - 1);
	snprintf(request, sizeof(request), "hold %s", lsn);
	if (!ask_follower(control, replypath, nonce, request, "held", reply, sizeof(reply), subject) ||
	    sscanf(reply, "held %*s %127s", target_snapshot) != 1) {
		repl_close(&repl);
		goto release;
	}
	ok = true;
	for (k = 0; ok && k < njobs; k++)
		ok = import_snapshot(&jobs[k].target, target_snapshot);
	repl_close(&repl);
release:
	strncat(nonce, "r", sizeof(nonce) - strlen(nonce) - 1);
	if (!ask_follower(control, replypath, nonce, "release", "released", reply, sizeof(reply), subject))
		ok = false;
	(void) unlink(control);
	return ok;
}

static bool
verify_database(const Config *config, const DatabaseMapping *db, FILE *out, int *ndiffer)
{
	int njobs = config->replication.copy_jobs > VERIFY_MAX_JOBS ? VERIFY_MAX_JOBS : config->replication.copy_jobs;
	Job jobs[VERIFY_MAX_JOBS];
	pthread_t threads[VERIFY_MAX_JOBS];
	Table *tables = NULL;
	PGresult *list = NULL;
	char subject[160], lsn[32] = "";
	ReplNames names;
	bool ok = false, published, via_root;
	int i, n = 0, started = 0;

	snprintf(subject, sizeof(subject), "verify %s", db->name);
	memset(jobs, 0, sizeof(jobs));
	if (!follower_streaming(config, db, subject))
		return false;
	for (i = 0; i < njobs; i++)
		if (!repl_connect(&jobs[i].source, &config->source, db->name, false, subject) ||
		    !repl_connect(&jobs[i].target, &config->target, db->target_name, false, subject))
			goto done;
	replicate_names(config, db, &names);
	if (!slots_publication_state(&jobs[0].source, names.publication, &published, &via_root) ||
	    !repl_query(&jobs[0].source, via_root ? sql_root_tables : sql_tables, 0, NULL, &list))
		goto done;
	n = PQntuples(list);
	tables = calloc((size_t) n + 1, sizeof(Table));
	if (!tables)
		goto done;
	for (i = 0; i < n; i++) {
		tables[i].name = PQgetvalue(list, i, 0);
		tables[i].columns = PQgetvalue(list, i, 1);
		tables[i].key = PQgetvalue(list, i, 2);
		strbuf_init(&tables[i].keys);
	}
	if (!take_snapshots(config, db, jobs, njobs, lsn, sizeof(lsn), subject))
		goto done;
	for (i = 0; i < njobs; i++) {
		jobs[i].tables = tables;
		jobs[i].ntables = n;
		jobs[i].first = i;
		jobs[i].step = njobs;
		if (pthread_create(&threads[i], NULL, job_main, &jobs[i]) != 0)
			break;
		started++;
	}
	for (i = 0; i < started; i++)
		pthread_join(threads[i], NULL);
	ok = started == njobs;
	fprintf(out, "database %s: source snapshot at %s, %d table(s)\n", db->name, lsn, n);
	for (i = 0; i < n; i++) {
		Table *t = &tables[i];

		if (t->failed) {
			ok = false;
			fprintf(out, "ERROR %s: could not be compared (see the log)\n", t->name);
		} else if (t->differs) {
			(*ndiffer)++;
			fprintf(out, "DIFF  %s: %s row(s) on the source, %s on the target%s%s%s\n", t->name,
				t->source_count, t->target_count,
				strcmp(t->source_count, t->target_count) == 0 ? ", contents differ" : "",
				t->keys.len ? "; keys: " : "", strbuf_str(&t->keys));
		} else {
			fprintf(out, "OK    %s: %s row(s)\n", t->name, t->source_count);
		}
	}
done:
	for (i = 0; tables && i < n; i++)
		strbuf_free(&tables[i].keys);
	free(tables);
	PQclear(list);
	for (i = 0; i < njobs; i++) {
		repl_close(&jobs[i].source);
		repl_close(&jobs[i].target);
	}
	return ok;
}

int
verify_main(const Config *config, FILE *out)
{
	int i, ndiffer = 0;
	bool ok = true;

	for (i = 0; i < config->ndatabases; i++)
		ok = verify_database(config, &config->databases[i], out, &ndiffer) && ok;
	if (!ok) {
		fprintf(out, "verify could not compare everything: see the errors above\n");
		return 1;
	}
	fprintf(out, ndiffer ? "%d table(s) differ\n" : "every table matches\n", ndiffer);
	return ndiffer ? 1 : 0;
}
