/*
 * What an aborted cutover or rollback could not undo at once: the fence on
 * the cluster its clients stay on (a source restarting refuses the
 * RESET), and the way back's slot and publication on the target and origin
 * on the source.  Clients routed back to a fenced cluster fail every write,
 * so the undo is tried again and again, each attempt on a thread of its own
 * (blocking libpq, never on the event loop), the pause between attempts
 * doubling up to CLEANUP_DELAY_MAX.
 *
 * Until it is done, the cutover report (still_fenced, cleanup_pending),
 * SHOW FENCE, `pghandoff status` and the metrics say what is left, and no
 * other cutover, rollback or reload starts: they would meet the fence, and
 * the thread reads the configuration.
 */
#include "cutover/loop/internal.h"
#include "common/errbuf.h"
#include "common/log.h"
#include "proxy/pktbuf.h"
#include "proxy/proto.h"
#include "replicator/conn.h"
#include "replicator/names.h"
#include "replicator/replicate.h"
#include "replicator/reverse.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define CLEANUP_DELAY_FIRST 0.25
#define CLEANUP_DELAY_MAX 10.0

struct CutoverCleanup {
	Proxy *proxy;
	CutoverKind kind; /* of the cutover that left this */
	CutoverDirection dir;
	const Cluster *from; /* the cluster the cutover left, and fenced */
	ev_timer retry;
	ev_async wake;
	double delay; /* before the next attempt */
	int attempts;
	bool done; /* nothing left: freed after this loop iteration */

	bool fenced;       /* from is still read-only */
	bool was_fenced;   /* when this began: once done, the log says from takes writes again */
	bool reverse_left; /* the way back's slot, publication, origin are still there */
	char error[512];   /* the last attempt's */

	/* An attempt: the thread's while it runs, read by the loop after the join. */
	pthread_t thread;
	bool thread_running;
	bool unfence; /* what it tries */
	bool drop;
	bool unfenced; /* what it did */
	bool dropped;
	char attempt_error[512];
	pthread_mutex_t lock;
	bool job_done; /* under lock */
};

static void *
cleanup_main(void *arg)
{
	CutoverCleanup *cl = arg;
	char err[512] = "";
	bool ok = true;
	int i;

	/*
	 * Both are idempotent: a database unfenced or an object dropped by the
	 * last attempt is no error.  Every login and query is bounded, as the
	 * cutover's own: an attempt against a cluster that stopped answering
	 * ends, and so does the proxy's shutdown that waits for it.
	 */
	repl_deadline_begin((double) cl->dir.config->cutover.answer_timeout / 1e6, "answer_timeout");
	cl->unfenced = cl->unfence && steps_unfence(&cl->dir, err, sizeof(err));
	if (cl->drop) {
		for (i = 0; i < cl->dir.config->ndatabases; i++)
			ok = reverse_drop(cl->dir.config, &cl->dir.config->databases[i], cl->dir.subject) && ok;
		cl->dropped = ok;
		if (!ok && !err[0])
			errbuf_fail(err, sizeof(err), "could not drop the way back's slot, publication or origin");
	}
	repl_deadline_end();
	snprintf(cl->attempt_error, sizeof(cl->attempt_error), "%s", err);
	pthread_mutex_lock(&cl->lock);
	cl->job_done = true;
	pthread_mutex_unlock(&cl->lock);
	ev_async_send(cl->proxy->loop, &cl->wake);
	return NULL;
}

/* What is left, for the report and SHOW FENCE; "" when nothing. */
static void
describe(const CutoverCleanup *cl, char *buf, size_t len)
{
	StrBuf sb;
	int i;

	strbuf_init(&sb);
	if (cl->fenced) {
		strbuf_appendf(&sb, "the %s is still fenced (database", cl->from->role);
		for (i = 0; i < cl->dir.config->ndatabases; i++) {
			const DatabaseMapping *db = &cl->dir.config->databases[i];

			strbuf_appendf(&sb, " %s", cl->dir.reverse ? db->target_name : db->name);
		}
		strbuf_append_char(&sb, ')');
	}
	for (i = 0; cl->reverse_left && i < cl->dir.config->ndatabases; i++) {
		ReplNames names;

		replicate_names(cl->dir.config, &cl->dir.config->databases[i], &names);
		strbuf_appendf(&sb,
			       "%sthe way back's slot %s and publication %s on the target and origin %s on the "
			       "source may still be there",
			       sb.len ? "; " : "", names.reverse_slot, names.reverse_publication, names.reverse_origin);
	}
	if (sb.len && cl->attempts > 0)
		strbuf_appendf(&sb, " (attempt %d failed: %s)", cl->attempts, cl->error);
	snprintf(buf, len, "%s", sb.failed ? "out of memory" : strbuf_str(&sb));
	strbuf_free(&sb);
}

/* The last report, which belongs to the cutover that left this (no other starts meanwhile), says where it stands. */
static void
update_report(CutoverCleanup *cl)
{
	char what[2048];

	describe(cl, what, sizeof(what));
	cutover_report_set(cl->proxy->last_report, "still_fenced", true, cl->fenced ? "true" : "false");
	cutover_report_set(cl->proxy->last_report, "cleanup_pending", false, what);
}

static void
on_retry(struct ev_loop *loop, ev_timer *w, int revents)
{
	CutoverCleanup *cl = container_of(w, CutoverCleanup, retry);
	int rc;

	(void) loop;
	(void) revents;
	cl->job_done = false;
	cl->unfence = cl->fenced;
	cl->drop = cl->reverse_left;
	cl->unfenced = cl->dropped = false;
	rc = pthread_create(&cl->thread, NULL, cleanup_main, cl);
	if (rc != 0) {
		log_error("cutover", "could not start the %s's cleanup: %s; trying again in %.1f s",
			  cutover_kind_name(cl->kind), strerror(rc), cl->delay);
		ev_timer_set(&cl->retry, cl->delay, 0.);
		ev_timer_start(cl->proxy->loop, &cl->retry);
		return;
	}
	cl->thread_running = true;
}

static void
on_wake(struct ev_loop *loop, ev_async *w, int revents)
{
	CutoverCleanup *cl = container_of(w, CutoverCleanup, wake);
	bool done;

	(void) loop;
	(void) revents;
	pthread_mutex_lock(&cl->lock);
	done = cl->job_done;
	pthread_mutex_unlock(&cl->lock);
	if (!cl->thread_running || !done)
		return;
	pthread_join(cl->thread, NULL);
	cl->thread_running = false;
	cl->attempts++;
	cl->fenced = cl->fenced && !cl->unfenced;
	cl->reverse_left = cl->reverse_left && !cl->dropped;
	snprintf(cl->error, sizeof(cl->error), "%s", cl->attempt_error);
	update_report(cl);
	if (!cl->fenced && !cl->reverse_left) {
		if (cl->was_fenced)
			log_info("cutover", "the %s's cleanup is done: the %s takes writes again after %d attempt(s)",
				 cutover_kind_name(cl->kind), cl->from->role, cl->attempts);
		else
			log_info("cutover", "the %s's cleanup is done after %d attempt(s)", cutover_kind_name(cl->kind),
				 cl->attempts);
		cl->done = true;                      /* freed by cutover_reap, after this callback */
		(void) cutover_save_state(cl->proxy); /* error already logged */
		return;
	}
	if (cl->unfenced || cl->dropped)
		(void) cutover_save_state(cl->proxy); /* error already logged */
	log_warning("cutover", "the %s's cleanup failed (attempt %d)%s: %s; trying again in %.1f s",
		    cutover_kind_name(cl->kind), cl->attempts, cl->fenced ? ", the cluster left is still fenced" : "",
		    cl->error, cl->delay);
	ev_timer_set(&cl->retry, cl->delay, 0.);
	ev_timer_start(cl->proxy->loop, &cl->retry);
	cl->delay = cl->delay * 2 > CLEANUP_DELAY_MAX ? CLEANUP_DELAY_MAX : cl->delay * 2;
}

static CutoverCleanup *
cleanup_new(Proxy *proxy, CutoverKind kind, const Cluster *from, bool fenced, bool reverse_left, const char *error)
{
	CutoverCleanup *cl;

	if (proxy->cleanup) {
		/* cutover_start refuses while one is pending: this cannot happen. */
		log_error("cutover", "a cleanup is pending already; the %s's is not retried", cutover_kind_name(kind));
		return NULL;
	}
	cl = calloc(1, sizeof(CutoverCleanup));
	if (!cl) {
		log_error("cutover", "out of memory: what the %s left on the %s is not retried",
			  cutover_kind_name(kind), from->role);
		return NULL;
	}
	cl->proxy = proxy;
	cl->kind = kind;
	cl->dir.config = &proxy->config;
	cl->dir.reverse = kind == CUTOVER_ROLLBACK;
	cl->dir.subject = "cutover";
	cl->from = from;
	cl->fenced = fenced;
	cl->was_fenced = fenced;
	cl->reverse_left = reverse_left;
	cl->delay = CLEANUP_DELAY_FIRST;
	snprintf(cl->error, sizeof(cl->error), "%s", error);
	pthread_mutex_init(&cl->lock, NULL);
	ev_timer_init(&cl->retry, on_retry, cl->delay, 0.);
	ev_async_init(&cl->wake, on_wake);
	ev_async_start(proxy->loop, &cl->wake);
	ev_timer_start(proxy->loop, &cl->retry);
	cl->delay *= 2;
	proxy->cleanup = cl;
	return cl;
}

void
cutover_cleanup_start(Cutover *c)
{
	CutoverCleanup *cl = cleanup_new(c->proxy, c->kind, c->from, c->fenced, c->reverse_prepared, c->job_error);

	if (!cl)
		return;
	cl->attempts = 1; /* the undo's own */
	if (cl->fenced)
		cutover_notice(c, "%s: the %s is still fenced (read-only); unfencing is retried in the background",
			       cutover_kind_name(c->kind), c->from->role);
	if (cl->reverse_left)
		cutover_notice(c,
			       "%s: the way back's slot, publication and origin are still there; dropping them is "
			       "retried in the background",
			       cutover_kind_name(c->kind));
	/* A restarted proxy goes on retrying. */
	(void) cutover_save_state(c->proxy); /* error already logged */
}

void
cutover_cleanup_resume(Proxy *proxy, const Cluster *fenced, bool way_back_left)
{
	CutoverKind kind = fenced == &proxy->target ? CUTOVER_ROLLBACK : CUTOVER_FORWARD;

	log_warning("proxy", "state file %s: an aborted %s left %s%s%s; retrying", proxy->config.proxy.state_file,
		    cutover_kind_name(kind), fenced ? "the " : "", fenced ? fenced->role : "",
		    fenced ? (way_back_left ? " fenced and the way back's objects" : " fenced")
			   : "the way back's objects");
	(void) cleanup_new(proxy, kind, fenced ? fenced : &proxy->source, fenced != NULL, way_back_left, "");
}

void
cutover_cleanup_owed(const Proxy *proxy, const Cluster **fenced, bool *way_back_left)
{
	bool pending = cutover_cleanup_pending(proxy);

	*fenced = pending && proxy->cleanup->fenced ? proxy->cleanup->from : NULL;
	*way_back_left = pending && proxy->cleanup->reverse_left;
}

bool
cutover_save_state(Proxy *proxy)
{
	const Cluster *fenced;
	bool way_back_left;

	cutover_cleanup_owed(proxy, &fenced, &way_back_left);
	return cutover_state_write(proxy, proxy->serving,
				   proxy->serving == &proxy->target ? "cutover"
					   : proxy->rolled_back     ? "rollback"
								    : "none",
				   fenced, way_back_left);
}

bool
cutover_cleanup_pending(const Proxy *proxy)
{
	return proxy->cleanup != NULL && !proxy->cleanup->done;
}

bool
cutover_cluster_fenced(const Proxy *proxy, const Cluster *cluster)
{
	if (cutover_cleanup_pending(proxy) && proxy->cleanup->fenced && proxy->cleanup->from == cluster)
		return true;
	if (proxy->config.cutover.fence != FENCE_READ_ONLY)
		return false;
	/* A completed cutover leaves the source fenced, a rollback the target. */
	if (cluster == &proxy->source)
		return proxy->serving == &proxy->target;
	return proxy->serving == &proxy->source && proxy->rolled_back;
}

void
cutover_cleanup_describe(const Proxy *proxy, char *buf, size_t len)
{
	if (cutover_cleanup_pending(proxy))
		describe(proxy->cleanup, buf, len);
	else
		snprintf(buf, len, "%s", "");
}

/* SHOW FENCE: per cluster, whether pghandoff keeps it read-only, and what an aborted cutover still owes. */
bool
cutover_show_fence(Client *admin)
{
	static const char *const cols[] = {"cluster", "fenced", "cleanup_pending", "detail"};
	const Proxy *proxy = admin->proxy;
	const Cluster *clusters[2] = {&proxy->source, &proxy->target};
	char what[2048];
	PktBuf pb;
	int i;

	cutover_cleanup_describe(proxy, what, sizeof(what));
	pktbuf_init(&pb);
	pktbuf_write_row_description(&pb, 4, cols);
	for (i = 0; i < 2; i++) {
		/* The fence is owed on the cluster left; the way back has objects on both. */
		bool owed = cutover_cleanup_pending(proxy) &&
			((proxy->cleanup->fenced && proxy->cleanup->from == clusters[i]) ||
			 proxy->cleanup->reverse_left);
		const char *v[4] = {clusters[i]->role, cutover_cluster_fenced(proxy, clusters[i]) ? "t" : "f",
				    owed ? "t" : "f", owed ? what : ""};

		pktbuf_write_data_row(&pb, 4, v);
	}
	pktbuf_write_command_complete(&pb, "SHOW 2");
	pktbuf_write_ready_for_query(&pb, TXN_IDLE);
	return admin_send(&pb, admin);
}

/* Frees a cleanup that is done; called after each loop iteration. */
void
cutover_cleanup_reap(Proxy *proxy)
{
	CutoverCleanup *cl = proxy->cleanup;

	if (!cl || !cl->done)
		return;
	ev_timer_stop(proxy->loop, &cl->retry);
	ev_async_stop(proxy->loop, &cl->wake);
	pthread_mutex_destroy(&cl->lock);
	free(cl);
	proxy->cleanup = NULL;
}

/* At exit: an attempt running is waited for; what is still left is said once more, with the fix. */
void
cutover_cleanup_shutdown(Proxy *proxy)
{
	CutoverCleanup *cl = proxy->cleanup;
	char what[2048];

	if (!cl)
		return;
	if (cl->thread_running) {
		pthread_join(cl->thread, NULL);
		cl->thread_running = false;
	}
	if (cl->fenced || cl->reverse_left) {
		describe(cl, what, sizeof(what));
		log_error("cutover",
			  "stopping with the %s's cleanup undone: %s; `ALTER DATABASE ... RESET "
			  "default_transaction_read_only` lifts the fence, `pghandoff replicate --reverse --drop` drops "
			  "the way back",
			  cutover_kind_name(cl->kind), what);
	}
	cl->done = true;
	cutover_cleanup_reap(proxy);
}
