/*
 * `pghandoff replicate`: makes each database of [databases] on the target a
 * live copy of the source's, and keeps it so.
 *
 * Per database, in an order that makes every crash restartable:
 *   pre-data schema -> replication origin created -> publication -> slot with
 *   an exported snapshot -> parallel copy -> post-data schema -> origin
 *   advanced to the slot's consistent point -> streaming.
 * The origin on the target is the single source of truth: progress > 0
 * means the copy is complete and streaming resumes from there; an origin
 * without progress means an interrupted copy, whose target is reset.
 * Several databases run in child processes, one each.
 *
 * The streaming loop (follow.c) serves both directions: forward here, and
 * back from the target after a cutover (reverse.c).
 */
#include "replicator/replicate.h"
#include "replicator/follow.h"
#include "common/log.h"
#include "common/clock.h"
#include "replicator/copy.h"
#include "replicator/ddl.h"
#include "replicator/indexes.h"
#include "replicator/largeobj.h"
#include "replicator/slots.h"
#include "replicator/partitions.h"
#include "replicator/pgoutput.h"
#include "replicator/preflight.h"
#include "replicator/reverse.h"
#include "replicator/schema.h"
#include "replicator/status.h"
#include "replicator/stream.h"

#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

volatile sig_atomic_t replicate_stop_requested;

static void
on_stop_signal(int signo)
{
	(void) signo;
	replicate_stop_requested = 1;
}

static bool
table_count(ReplConn *conn, long *count)
{
	char buf[32];

	if (!repl_query_copy_value(conn,
				   "SELECT count(*) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
				   "WHERE c.relkind IN ('r', 'p') AND n.nspname NOT IN ('pg_catalog', 'information_schema') "
				   "AND n.nspname !~ '^pg_(toast|temp)'",
				   0, NULL, buf, sizeof(buf)))
		return false;
	*count = strtol(buf, NULL, 10);
	return true;
}

/*
 * Origins belong to the target cluster, not to a database.  One with
 * progress while the source has tables and the target database none was
 * made by another migration into this cluster under the same name:
 * streaming on from its progress would skip this database's copy.
 */
static bool
origin_is_ours(ReplConn *source, ReplConn *target, const char *origin, const char *target_db, const char *subject)
{
	long on_source, on_target;

	if (!table_count(source, &on_source) || !table_count(target, &on_target))
		return false;
	if (on_source == 0 || on_target > 0)
		return true;
	log_error(subject,
		  "replication origin %s has progress, but target database %s has none of the source's %ld table(s): "
		  "the origin belongs to another migration into the target cluster (origins are per cluster, "
		  "named after slot_name); give this migration a slot_name of its own",
		  origin, target_db, on_source);
	return false;
}

/* Drops and creates the target database: only for one this tool filled (its origin says so). */
static bool
recreate_target_database(const Config *config, const DatabaseMapping *db, const char *subject)
{
	ReplConn admin;
	char *ident;
	char sql[256];
	bool ok;

	if (!repl_connect(&admin, &config->target, "postgres", false, subject))
		return false;
	ident = PQescapeIdentifier(admin.conn, db->target_name, strlen(db->target_name));
	snprintf(sql, sizeof(sql), "DROP DATABASE IF EXISTS %s WITH (FORCE)", ident);
	ok = repl_exec(&admin, sql);
	snprintf(sql, sizeof(sql), "CREATE DATABASE %s", ident);
	ok = ok && repl_exec(&admin, sql);
	PQfreemem(ident);
	repl_close(&admin);
	if (ok)
		log_info(subject, "target database %s recreated after an interrupted copy", db->target_name);
	return ok;
}

static bool
ensure_target_database(const Config *config, const DatabaseMapping *db, const char *subject)
{
	ReplConn admin;
	const char *params[1] = {db->target_name};
	char buf[8];
	bool ok;

	if (!repl_connect(&admin, &config->target, "postgres", false, subject))
		return false;
	ok = repl_query_copy_value(&admin, "SELECT count(*) FROM pg_database WHERE datname = $1", 1, params, buf,
				   sizeof(buf));
	if (ok && strcmp(buf, "0") == 0) {
		char *ident = PQescapeIdentifier(admin.conn, db->target_name, strlen(db->target_name));
		char sql[160];

		snprintf(sql, sizeof(sql), "CREATE DATABASE %s", ident);
		PQfreemem(ident);
		ok = repl_exec(&admin, sql);
		if (ok)
			log_info(subject, "created database %s on the target", db->target_name);
	}
	repl_close(&admin);
	return ok;
}

static bool
create_slot(ReplConn *repl, const char *slot, uint64_t *consistent_point, char *snapshot, size_t snaplen)
{
	char sql[200];
	PGresult *res;

	snprintf(sql, sizeof(sql), "CREATE_REPLICATION_SLOT \"%s\" LOGICAL pgoutput EXPORT_SNAPSHOT", slot);
	if (!repl_query(repl, sql, 0, NULL, &res))
		return false;
	if (PQntuples(res) != 1 || PQnfields(res) < 3 || !lsn_parse(PQgetvalue(res, 0, 1), consistent_point)) {
		log_error(repl->subject, "unexpected answer to CREATE_REPLICATION_SLOT");
		PQclear(res);
		return false;
	}
	snprintf(snapshot, snaplen, "%s", PQgetvalue(res, 0, 2));
	log_info(repl->subject, "created replication slot %s at %s, snapshot %s", slot, PQgetvalue(res, 0, 1),
		 snapshot);
	PQclear(res);
	return true;
}

/*
 * Statistics for the copied tables, as pg_restore users get from vacuumdb
 * --analyze: without them the planner guesses until autovacuum gets there,
 * and the clients moved at the cutover would be the first to pay for it.
 */
static bool
analyze_target(ReplConn *target, const char *subject)
{
	double t0 = clock_monotonic();

	if (!repl_exec(target, "ANALYZE"))
		return false;
	log_info(subject, "analyzed the target's tables in %.1f s", clock_monotonic() - t0);
	return true;
}

/* Everything up to streaming; on return *start_lsn is where streaming begins. */
static bool
initial_sync(const Config *config, const DatabaseMapping *db, const ReplNames *names, bool via_root, ReplConn *source,
	     ReplConn *target, ReplConn *repl, uint64_t *start_lsn, const char *dump_path, ReplStatus *status,
	     const char *subject)
{
	CopyProgress progress;
	char snapshot[128];
	bool origin_exists;
	uint64_t progress_lsn;
	long tables;

	if (!slots_origin_state(target, names->origin, &origin_exists, &progress_lsn))
		return false;
	if (origin_exists) {
		repl_close(target);
		if (config->replication.schema == SCHEMA_COPY) {
			if (!recreate_target_database(config, db, subject))
				return false;
		}
		if (!repl_connect(target, &config->target, db->target_name, false, subject))
			return false;
		if (config->replication.schema == SCHEMA_NONE &&
		    !repl_exec(target,
			       "DO $$ DECLARE r record; BEGIN FOR r IN SELECT c.oid::regclass AS t FROM pg_class c "
			       "JOIN pg_namespace n ON n.oid = c.relnamespace WHERE c.relkind IN ('r','p') AND "
			       "n.nspname NOT IN ('pg_catalog','information_schema') AND n.nspname !~ '^pg_' LOOP "
			       "EXECUTE format('TRUNCATE %s CASCADE', r.t); END LOOP; END $$"))
			return false;
		if (!slots_origin_state(target, names->origin, &origin_exists, &progress_lsn))
			return false;
	}
	if (config->replication.schema == SCHEMA_COPY) {
		if (!table_count(target, &tables))
			return false;
		if (tables > 0) {
			log_error(subject,
				  "target database %s already has %ld table(s): schema = copy needs an empty "
				  "database (or use schema = none)",
				  db->target_name, tables);
			return false;
		}
	}
	/*
	 * The origin comes first: from here on, a crash leaves an origin without
	 * progress, which tells the next run that the target is ours to reset.
	 */
	if (!origin_exists && !slots_create_origin(target, names->origin))
		return false;
	status_phase(status, "schema");
	if (config->replication.schema == SCHEMA_COPY) {
		if (config->replication.roles == ROLES_COPY &&
		    !schema_copy_roles(config, source->version / 10000, subject))
			return false;
		if (!ddl_leave_out(source) || !schema_dump(config, db, source->version / 10000, dump_path, subject) ||
		    !schema_restore(config, db, dump_path, "pre-data", NULL, 1, subject))
			return false;
	} else if (!schema_verify(source, target, via_root, subject)) {
		return false;
	}
	/* Before the slot: every schema change from its consistent point on is captured. */
	if (!ddl_install(source, "source")) {
		/* logged as a warning: schema changes stop the follower, as they would without it */
	}
	if (!slots_drop_stale_slot(source, names->slot) ||
	    !slots_ensure_publication(source, names->publication, via_root))
		return false;
	if (!create_slot(repl, names->slot, start_lsn, snapshot, sizeof(snapshot)))
		return false;
	memset(&progress, 0, sizeof(progress));
	progress.status = status;
	status_phase(status, "copy");
	if (!copy_database(config, db, source, snapshot, via_root, subject, &progress))
		return false;
	log_info(subject, "initial copy done: %d table(s), %lld rows", progress.tables_done,
		 (long long) progress.rows_done);
	status_phase(status, "indexes");
	if (replicate_stop_requested)
		return false;
	if (config->replication.schema == SCHEMA_COPY &&
	    !indexes_restore_post_data(config, db, source, dump_path, subject))
		return false;
	if (replicate_stop_requested || !analyze_target(target, subject))
		return false;
	/* Only now is the target complete: progress > 0 says so to a restarted replicator. */
	return slots_advance_origin(target, names->origin, *start_lsn);
}

static int
replicate_database(const Config *config, const DatabaseMapping *db)
{
	ReplConn source = {0}, target = {0}, repl = {0};
	ReplNames names;
	ReplDirection dir;
	ReplStatus status;
	char subject[160];
	bool origin_exists;
	uint64_t start_lsn = 0;
	bool via_root;
	int rc = 1;

	snprintf(subject, sizeof(subject), "replicator %s", db->name);
	replicate_names(config, db, &names);
	replicate_direction(config, db, &names, false, &dir);
	status_init(&status, config, db->name);
	dir.status = &status;
	status_phase(&status, "starting");
	if (!ensure_target_database(config, db, subject) ||
	    !repl_connect(&source, &config->source, db->name, false, subject) ||
	    !replicate_connect_apply(&dir, &target, subject) ||
	    !repl_connect(&repl, &config->source, db->name, true, subject) ||
	    !slots_origin_state(&target, names.origin, &origin_exists, &start_lsn) ||
	    !partitions_publish_mode(config, &source, &target, names.publication, &via_root, subject))
		goto fail;
	if (start_lsn != 0 && !origin_is_ours(&source, &target, names.origin, db->target_name, subject))
		goto fail;
	if (start_lsn == 0) {
		char dump_path[64];
		int fd;
		bool ok;

		/* The schema-only archive lives as long as the initial sync. */
		fd = schema_anonymous_file("schema", dump_path, sizeof(dump_path), subject);
		if (fd < 0)
			goto fail;
		ok = initial_sync(config, db, &names, via_root, &source, &target, &repl, &start_lsn, dump_path, &status,
				  subject);
		close(fd);
		if (!ok)
			goto fail;
	}
	if (start_lsn != 0 && !ddl_install(&source, "source")) {
		/* logged as a warning: a capture made by an older run stays as it was */
	}
	repl_close(&source);
	rc = replicate_follow(config, &dir, &repl, &target, start_lsn, subject);
	status_phase(&status, rc == 0 ? "stopped" : "failed");
	status_destroy(&status);
	return rc;
fail:
	if (replicate_stop_requested) {
		/* The origin has no progress yet: the next run resets the target and starts over. */
		log_info(subject, "stopped by request before the initial sync completed; the next run starts it again");
		rc = 0;
	}
	status_phase(&status, rc == 0 ? "stopped" : "failed");
	status_destroy(&status);
	repl_close(&source);
	repl_close(&target);
	repl_close(&repl);
	return rc;
}

static int
drop_database_objects(const Config *config, const DatabaseMapping *db)
{
	ReplConn source, target;
	ReplNames names;
	char subject[160];
	bool ok = true;

	snprintf(subject, sizeof(subject), "replicator %s", db->name);
	replicate_names(config, db, &names);
	if (repl_connect(&source, &config->source, db->name, false, subject)) {
		/* After a cutover the source is fenced read-only; removing our own objects is still allowed. */
		ok = repl_exec(&source, "SET default_transaction_read_only = off") &&
			slots_drop_slot(&source, names.slot, true) &&
			slots_drop_publication(&source, names.publication) && ddl_leave_out(&source) &&
			largeobj_forget(&source);
		repl_close(&source);
	} else {
		ok = false;
	}
	if (repl_connect(&target, &config->target, db->target_name, false, subject)) {
		if (!slots_drop_origin(&target, names.origin) || !largeobj_forget(&target))
			ok = false;
		repl_close(&target);
	} else {
		ok = false;
	}
	if (ok)
		log_info(subject,
			 "dropped slot %s, publication %s and the capture of schema changes on the source, origin %s "
			 "on the target, and the record of large objects in step (schema pghandoff_lo) on both",
			 names.slot, names.publication, names.origin);
	return ok ? 0 : 1;
}

static void
print_check(void *arg, CheckStatus status, const char *message, const char *hint)
{
	(void) arg;
	if (status == CHECK_FAIL)
		log_error("preflight", "%s (hint: %s)", message, hint ? hint : "");
	else if (status == CHECK_WARN)
		log_warning("preflight", "%s (hint: %s)", message, hint ? hint : "");
	else
		log_debug("preflight", "%s", message);
}

/* A database's worker process, as its supervisor sees it. */
typedef struct Worker {
	const DatabaseMapping *db;
	pid_t pid;         /* 0 while not running */
	bool done;         /* stopped for good: not started again */
	double started;    /* monotonic seconds */
	double restart_at; /* when a worker that died is started again; 0: not pending */
	int backoff;       /* seconds before the next restart */
} Worker;

#define WORKER_BACKOFF_MAX 60
/* A worker that ran this long died afresh: its next restart waits the least again. */
#define WORKER_STABLE_S 60.0

static void
on_child_signal(int signo)
{
	/* Only there so that the supervisor's sleep ends when a worker exits. */
	(void) signo;
}

static bool
worker_start(Worker *w, const Config *config, int (*fn)(const Config *, const DatabaseMapping *))
{
	pid_t parent = getpid();
	pid_t pid = fork();

	if (pid < 0) {
		log_error("replicator", "database %s: could not start its worker: fork: %s", w->db->name,
			  strerror(errno));
		return false;
	}
	if (pid == 0) {
		/*
		 * A worker streams only while supervised: when the supervisor dies,
		 * however it dies, the kernel sends SIGTERM and the worker stops as
		 * on request, letting go of its slot and origin for the next
		 * supervisor's workers.  The supervisor may have died before
		 * prctl, which the parent pid tells.
		 */
		struct sigaction dfl;

		(void) prctl(PR_SET_PDEATHSIG, SIGTERM);
		if (getppid() != parent)
			_exit(0);
		/* The supervisor's SIGCHLD handler would interrupt the worker's waits for pg_dump and pg_restore. */
		memset(&dfl, 0, sizeof(dfl));
		dfl.sa_handler = SIG_DFL;
		sigaction(SIGCHLD, &dfl, NULL);
		_exit(fn(config, w->db));
	}
	w->pid = pid;
	w->started = clock_monotonic();
	w->restart_at = 0;
	return true;
}

/* Describes how a worker ended, for the log. */
static void
describe_exit(int status, char *buf, size_t len)
{
	if (WIFSIGNALED(status))
		snprintf(buf, len, "was killed by signal %d (%s)", WTERMSIG(status), strsignal(WTERMSIG(status)));
	else if (WIFEXITED(status))
		snprintf(buf, len, "exited with status %d", WEXITSTATUS(status));
	else
		snprintf(buf, len, "ended with wait status %d", status);
}

/*
 * A worker ended.  Stopped on request (exit 0) it stays stopped; killed or
 * failed while no stop was asked for, it is started again after a backoff
 * that doubles up to WORKER_BACKOFF_MAX: it resumes from its origin, so a
 * restart loses nothing.
 */
static void
worker_exited(Worker *w, int status)
{
	char how[96];
	double ran = clock_monotonic() - w->started;

	w->pid = 0;
	describe_exit(status, how, sizeof(how));
	if (replicate_stop_requested) {
		w->done = true;
		if (!WIFEXITED(status) || WEXITSTATUS(status) != 0)
			log_error("replicator", "database %s: worker %s while stopping", w->db->name, how);
		return;
	}
	if (WIFEXITED(status) && WEXITSTATUS(status) == 0) {
		w->done = true;
		log_warning("replicator",
			    "database %s: worker stopped (it %s) although replication was not asked to "
			    "stop; it stays stopped until pghandoff replicate is started again",
			    w->db->name, how);
		return;
	}
	if (ran > WORKER_STABLE_S)
		w->backoff = 1;
	log_error("replicator", "database %s: worker %s after %.0f s; starting it again in %d s", w->db->name, how, ran,
		  w->backoff);
	w->restart_at = clock_monotonic() + w->backoff;
	w->backoff = w->backoff * 2 < WORKER_BACKOFF_MAX ? w->backoff * 2 : WORKER_BACKOFF_MAX;
}

/*
 * Runs fn for every database: in this process for one; for several, in a
 * worker process each under this one, which restarts a worker that dies
 * and stops them all on SIGTERM/SIGINT.  The exit status is 1 when a worker
 * failed while stopping, or could not be started at all.
 */
static int
for_each_database_in_parallel(const Config *config, int (*fn)(const Config *, const DatabaseMapping *))
{
	struct sigaction sa;
	Worker *workers;
	bool stopping = false;
	int i, rc = 0, running;

	if (config->ndatabases == 1)
		return fn(config, &config->databases[0]);

	workers = calloc((size_t) config->ndatabases, sizeof(Worker));
	if (!workers) {
		log_error("replicator", "out of memory");
		return 1;
	}
	memset(&sa, 0, sizeof(sa));
	sa.sa_handler = on_child_signal;
	sa.sa_flags = SA_RESTART | SA_NOCLDSTOP;
	sigaction(SIGCHLD, &sa, NULL);
	for (i = 0; i < config->ndatabases; i++) {
		workers[i].db = &config->databases[i];
		workers[i].backoff = 1;
		if (!worker_start(&workers[i], config, fn)) {
			workers[i].done = true;
			rc = 1;
		}
	}
	for (;;) {
		double now = clock_monotonic(), next = now + 1.0;
		int status;
		pid_t pid;

		if (replicate_stop_requested && !stopping) {
			stopping = true;
			for (i = 0; i < config->ndatabases; i++)
				if (workers[i].pid > 0)
					(void) kill(workers[i].pid, SIGTERM);
		}
		while ((pid = waitpid(-1, &status, WNOHANG)) > 0) {
			for (i = 0; i < config->ndatabases; i++) {
				if (workers[i].pid == pid) {
					worker_exited(&workers[i], status);
					if (stopping && (!WIFEXITED(status) || WEXITSTATUS(status) != 0))
						rc = 1;
				}
			}
		}
		running = 0;
		for (i = 0; i < config->ndatabases; i++) {
			Worker *w = &workers[i];

			if (w->pid == 0 && !w->done && w->restart_at > 0 && !stopping) {
				if (now >= w->restart_at) {
					log_info("replicator", "database %s: starting its worker again", w->db->name);
					if (!worker_start(w, config, fn))
						w->restart_at = now + w->backoff; /* logged; tried again */
				}
				if (w->restart_at > 0 && w->restart_at < next)
					next = w->restart_at;
			}
			if (w->pid > 0 || (!w->done && w->restart_at > 0 && !stopping))
				running++;
		}
		if (running == 0)
			break;
		/* SIGCHLD, SIGTERM and SIGINT end the sleep early. */
		{
			double left = next - clock_monotonic();
			struct timespec ts = {0, 0};

			if (left > 0) {
				ts.tv_sec = (time_t) left;
				ts.tv_nsec = (long) ((left - (double) ts.tv_sec) * 1e9);
				(void) nanosleep(&ts, NULL);
			}
		}
	}
	free(workers);
	return rc;
}

int
replicate_main(const Config *config, ReplMode mode)
{
	struct sigaction sa;
	char why[512];
	int i, rc = 0;

	/* Two databases sharing a slot or an origin would take each other's changes: never start so. */
	if (replicate_names_collision(config, why, sizeof(why))) {
		log_error("replicator", "%s: rename one of the databases, or migrate them with separate configurations",
			  why);
		return 1;
	}
	memset(&sa, 0, sizeof(sa));
	sa.sa_handler = on_stop_signal;
	sigaction(SIGTERM, &sa, NULL);
	sigaction(SIGINT, &sa, NULL);

	switch (mode) {
	case REPL_DROP:
		for (i = 0; i < config->ndatabases; i++)
			rc |= drop_database_objects(config, &config->databases[i]);
		return rc;
	case REPL_REVERSE_PREPARE:
	case REPL_REVERSE_DROP:
		for (i = 0; i < config->ndatabases; i++) {
			const DatabaseMapping *db = &config->databases[i];
			char subject[160];
			bool ok;

			snprintf(subject, sizeof(subject), "reverse replicator %s", db->name);
			ok = mode == REPL_REVERSE_PREPARE ? reverse_prepare(config, db, subject)
							  : reverse_drop(config, db, subject);
			if (!ok)
				rc = 1; /* error already logged */
		}
		return rc;
	case REPL_REVERSE:
		/* No preflight: the cutover checked both clusters, and reverse_run checks its slot and origin. */
		return for_each_database_in_parallel(config, reverse_run);
	case REPL_FORWARD:
		break;
	}
	{
		Preflight pf = {.config = config, .emit = print_check};

		if (!preflight_run(&pf)) {
			log_error("replicator", "preflight failed: run `pghandoff check` for the details");
			return 1;
		}
	}
	return for_each_database_in_parallel(config, replicate_database);
}
