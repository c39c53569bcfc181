/*
 * The cutover's worker: one thread per job, doing the blocking database work
 * of cutover/db/steps.h while the event loop goes on.  It reports through
 * Cutover.lock and the loop's ev_async; the loop joins it.
 */
#include "cutover/loop/internal.h"
#include "common/clock.h"
#include "common/errbuf.h"
#include "common/log.h"
#include "replicator/conn.h"
#include "replicator/reverse.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

const char *const cutover_phase_names[PH_COUNT] = {"fence", "catch_up", "sequences", "verify", "rollback_ready"};

/* ---- the worker thread ---- */

static void worker_notice(Cutover *c, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static void
worker_notice(Cutover *c, const char *fmt, ...)
{
	char line[512];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(line, sizeof(line), fmt, ap);
	va_end(ap);
	log_info(c->dir.subject, "%s", line);
	pthread_mutex_lock(&c->lock);
	strbuf_append(&c->notices, line);
	strbuf_append_char(&c->notices, '\n');
	pthread_mutex_unlock(&c->lock);
	ev_async_send(c->proxy->loop, &c->wake);
}

static bool
timed(Cutover *c, int phase, bool ok, double start)
{
	c->phase_ms[phase] = clock_monotonic() * 1e3 - start;
	if (!ok)
		c->failed_phase = cutover_phase_names[phase];
	if (ok)
		worker_notice(c, "%s: %s done in %.1f ms", cutover_kind_name(c->kind), cutover_phase_names[phase],
			      c->phase_ms[phase]);
	return ok;
}

/*
 * rollback = on: the reverse slot is made before the pause.  The follower
 * going back skips what the forward follower applied (its origin), so
 * nothing before the switch comes back; what clients write after it does.
 */
static bool
prepare_reverse(Cutover *c, char *err, size_t errlen)
{
	const Config *config = c->dir.config;
	double t = clock_monotonic() * 1e3;
	bool ok = true;
	int i;

	if (c->kind != CUTOVER_FORWARD || !config->cutover.rollback)
		return true;
	for (i = 0; ok && i < config->ndatabases; i++)
		ok = reverse_prepare(config, &config->databases[i], c->dir.subject);
	c->reverse_prepared = true; /* whatever was made goes if the cutover does not happen */
	if (!timed(c, PH_ROLLBACK_READY, ok, t))
		return errbuf_fail(err, errlen, "could not prepare the reverse follower on the target");
	return true;
}

static bool
drop_reverse(Cutover *c, char *err, size_t errlen)
{
	int i;
	bool ok = true;

	for (i = 0; i < c->dir.config->ndatabases; i++)
		ok = reverse_drop(c->dir.config, &c->dir.config->databases[i], c->dir.subject) && ok;
	if (ok)
		c->reverse_prepared = false;
	if (!ok)
		return errbuf_fail(err, errlen, "could not drop the reverse follower's slot on the target");
	return true;
}

static bool
job_sync(Cutover *c, char *err, size_t errlen)
{
	const Config *config = c->dir.config;
	double t;

	if (config->cutover.fence == FENCE_READ_ONLY) {
		t = clock_monotonic() * 1e3;
		/*
		 * Before it is asked for: a fence that fails half-way (the ALTER done, the
		 * terminations not), or one given up on (the cluster did not answer), may still land.
		 */
		c->fenced = true;
		if (!timed(c, PH_FENCE, steps_fence(&c->dir, &c->links, c->pids, &c->terminated, err, errlen), t))
			return false;
	}
	t = clock_monotonic() * 1e3;
	if (!timed(c, PH_CATCH_UP, steps_catch_up(&c->dir, &c->links, c->lsns, sizeof(c->lsns), err, errlen), t))
		return false;
	if (c->kind == CUTOVER_ROLLBACK && !steps_catch_up_other_way(&c->dir, &c->links, err, errlen))
		return false;
	t = clock_monotonic() * 1e3;
	if (!timed(c, PH_SEQUENCES, steps_sequences(&c->dir, &c->links, &c->sequences, err, errlen), t))
		return false;
	if (config->cutover.verify == VERIFY_COUNTS) {
		t = clock_monotonic() * 1e3;
		if (!timed(c, PH_VERIFY, steps_verify_counts(&c->dir, &c->tables_verified, err, errlen), t))
			return false;
	}
	/* A rollback fenced the source when it left: it takes writes again (and the target, after a re-cutover). */
	if (config->cutover.fence == FENCE_READ_ONLY && !steps_unfence_arrival(&c->dir, &c->links, err, errlen))
		return false;
	return true;
}

/*
 * The standbys may warm up while the reverse slot is made: making it waits
 * for the target's running transactions, which can take longer than all the
 * warm-ups together.
 */
static void
publish_warm_sql(Cutover *c)
{
	pthread_mutex_lock(&c->lock);
	c->warm_ready = true;
	pthread_mutex_unlock(&c->lock);
	ev_async_send(c->proxy->loop, &c->wake);
}

/*
 * The cluster left takes writes again, and the loop may resume the clients
 * on it: before the other cluster is dealt with, which may be the one that
 * stopped answering.
 */
static void
publish_from_undone(Cutover *c)
{
	pthread_mutex_lock(&c->lock);
	c->from_undone = true;
	pthread_mutex_unlock(&c->lock);
	ev_async_send(c->proxy->loop, &c->wake);
}

/* A cluster that did not answer in time is named in the report, with the phase it stopped. */
static void
name_missed_deadline(Cutover *c, char *err, size_t errlen)
{
	static const char *const job_names[] = {"precheck", "precheck", "sync", "undo"};
	const char *missed = repl_deadline_missed();
	StrBuf sb;

	if (!missed)
		return;
	strbuf_init(&sb);
	strbuf_appendf(&sb, "%s: %s%s%s", c->failed_phase ? c->failed_phase : job_names[c->job], missed,
		       err[0] ? "; " : "", err);
	if (!sb.failed) {
		/* Cut short if need be: the phase and the cluster come first. */
		size_t n = sb.len < errlen ? sb.len : errlen - 1;

		memcpy(err, sb.data, n);
		err[n] = '\0';
	}
	strbuf_free(&sb);
}

/*
 * Before any standby logs in: a database the clients go to may carry a
 * fence, which a standby must not take as its reset value.
 */
static bool
publish_read_only(Cutover *c, char *err, size_t errlen)
{
	if (c->job != JOB_PRECHECK)
		return true;
	if (!c->read_only)
		return errbuf_fail(err, errlen, "out of memory");
	if (!steps_read_only_defaults(&c->dir, &c->links, c->read_only, err, errlen))
		return false;
	pthread_mutex_lock(&c->lock);
	c->logins_ready = true;
	pthread_mutex_unlock(&c->lock);
	ev_async_send(c->proxy->loop, &c->wake);
	return true;
}

static void *
worker_main(void *arg)
{
	Cutover *c = arg;
	char err[512] = "";
	PrecheckFacts facts;
	bool ok = false;
	double t = clock_monotonic() * 1e3;

	/* Every login and query of the job is bounded: a cluster that stops answering ends it. */
	c->failed_phase = NULL;
	repl_deadline_begin((double) c->dir.config->cutover.answer_timeout / 1e6, "answer_timeout");
	switch (c->job) {
	case JOB_PRECHECK:
	case JOB_DRY_RUN:
		ok = steps_connect(&c->dir, &c->links, err, sizeof(err)) && publish_read_only(c, err, sizeof(err)) &&
			steps_precheck(&c->dir, &c->links, &facts, err, sizeof(err));
		if (ok && c->hidden_code && c->nhidden == c->links.n)
			ok = steps_find_hidden_code(&c->dir, &c->links, c->hidden_code, &c->function_settings, err,
						    sizeof(err));
		else if (c->hidden_code)
			memset(c->hidden_code, 1, sizeof(bool) * (size_t) c->nhidden);
		c->lag_bytes = facts.max_lag_bytes;
		c->precheck_ms = clock_monotonic() * 1e3 - t;
		if (ok && c->job == JOB_DRY_RUN)
			ok = steps_measure_catch_up(&c->dir, &c->links, &c->catch_up_estimate, err, sizeof(err)) &&
				steps_measure_large_objects(&c->dir, &c->links, &c->large_object_estimate,
							    &c->large_objects_differing, err, sizeof(err));
		if (ok && c->job == JOB_PRECHECK && c->warm_sql && c->nhidden == c->links.n &&
		    !steps_warm_sql(&c->dir, &c->links, c->warm_sql))
			ok = errbuf_fail(err, sizeof(err), "out of memory");
		if (ok && c->job == JOB_PRECHECK) {
			publish_warm_sql(c);
			ok = prepare_reverse(c, err, sizeof(err));
		}
		break;
	case JOB_SYNC:
		ok = job_sync(c, err, sizeof(err));
		break;
	case JOB_UNDO:
		/* What is left (fenced, reverse_prepared still true) is retried by cleanup.c. */
		if (c->fenced && steps_unfence(&c->dir, err, sizeof(err))) {
			worker_notice(c, "%s: the %s takes writes again", cutover_kind_name(c->kind), c->from->role);
			c->fenced = false;
		}
		/* The side left is dealt with: its clients resume before the other side's bounded waits. */
		publish_from_undone(c);
		if (c->reverse_prepared) {
			char drop_err[512];

			if (!drop_reverse(c, drop_err, sizeof(drop_err)) && !err[0])
				snprintf(err, sizeof(err), "%s", drop_err);
		}
		ok = !c->fenced && !c->reverse_prepared;
		break;
	}
	if (!ok)
		name_missed_deadline(c, err, sizeof(err));
	repl_deadline_end();
	pthread_mutex_lock(&c->lock);
	c->job_ok = ok;
	snprintf(c->job_error, sizeof(c->job_error), "%s", err);
	c->job_done = true;
	pthread_mutex_unlock(&c->lock);
	ev_async_send(c->proxy->loop, &c->wake);
	return NULL;
}

bool
cutover_worker_start(Cutover *c, WorkerJob job)
{
	int rc;

	c->job = job;
	c->job_done = false;
	c->job_ok = false;
	c->job_error[0] = '\0';
	rc = pthread_create(&c->thread, NULL, worker_main, c);
	if (rc != 0) {
		snprintf(c->failure, sizeof(c->failure), "could not start the cutover worker: %s", strerror(rc));
		log_error("cutover", "%s", c->failure);
		return false;
	}
	c->thread_running = true;
	return true;
}

/* True once the running job has reported; the thread is joined then. */
bool
cutover_worker_finished(Cutover *c)
{
	bool done;

	if (!c->thread_running)
		return true;
	pthread_mutex_lock(&c->lock);
	done = c->job_done;
	pthread_mutex_unlock(&c->lock);
	if (done) {
		pthread_join(c->thread, NULL);
		c->thread_running = false;
	}
	return done;
}
