/*
 * The cutover on the proxy's side.  One Cutover at a time moves through its
 * phases in cutover_advance(), the only place the phase changes:
 *
 *   PRECHECK  worker: streaming, lag, columns, the reverse slot (rollback =
 *             on) | loop: a standby server on the other cluster opened for
 *             every client
 *   DRAIN     databases paused; every client reaches a transaction boundary,
 *             and each quiet client's session is read and replayed on its
 *             standby meanwhile
 *   SYNC      worker: fence, catch up, sequences, verify | loop: the last
 *             sessions carried
 *   UNDO      worker: unfence, drop the reverse slot, after a failure
 *   DONE      switched (state file written first) and resumed, or resumed on
 *             the old cluster with the reason; freed after the loop iteration
 *
 * Whatever fails before the switch leaves clients on the cluster they were
 * on, each one's next query simply waits a little.
 */
#include "cutover/loop/internal.h"
#include "proxy/pool.h"
#include "common/log.h"
#include "proxy/pktbuf.h"
#include "proxy/proto.h"
#include "proxy/session.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Seconds between a completed cutover and the reverse follower's start. */
#define REVERSE_FOLLOWER_DELAY 1.0

/* The one place the phase changes; what the relay must know of it is copied to the Proxy. */
static void
set_phase(Cutover *c, CutoverPhase phase)
{
	c->phase = phase;
	c->proxy->logins_held = c->kind != CUTOVER_DRY_RUN && phase != CP_PRECHECK && phase != CP_DONE && !c->resumed;
}

/* Before clients move: a restarted proxy must never route back, and goes on with what an undo owes. */
static bool
write_switch(Proxy *proxy, const Cutover *c)
{
	const Cluster *fenced;
	bool way_back_left;

	cutover_cleanup_owed(proxy, &fenced, &way_back_left);
	return cutover_state_write(proxy, c->to, c->to == &proxy->target ? "cutover" : "rollback", fenced,
				   way_back_left);
}

static void
on_drain_timeout(struct ev_loop *loop, ev_timer *w, int revents)
{
	Cutover *c = container_of(w, Cutover, drain_timer);
	char busy[256];

	(void) loop;
	(void) revents;
	if (c->phase != CP_DRAIN)
		return;
	cutover_describe_busy(c, busy, sizeof(busy));
	if (c->proxy->config.cutover.on_drain_timeout == DRAIN_CANCEL && !c->cancel_round) {
		cutover_notice(c, "%s: drain_timeout reached, cancelling the open transactions of %s",
			       cutover_kind_name(c->kind), busy);
		c->cancel_round = true;
		cutover_cancel_open(c);
		ev_timer_set(&c->drain_timer, (ev_tstamp) c->proxy->config.cutover.drain_timeout / 1e6, 0.);
		ev_timer_start(c->proxy->loop, &c->drain_timer);
		return;
	}
	cutover_fail(c, "transactions still open after drain_timeout: %s", busy);
}

/* Standbys logged in and warmed up, of *moving clients: what shows the cluster they log in to answering. */
static int
standbys_in(const Cutover *c, int *moving)
{
	const List *item;
	int n = 0;

	*moving = 0;
	list_for_each(item, &c->proxy->active_clients)
	{
		const Client *client = container_of(item, const Client, head);

		if (!cutover_is_moving(c, client))
			continue;
		(*moving)++;
		n += client->cutover.standby && client->cutover.standby->state == SV_STANDBY &&
			client->cutover.standby->warmed;
	}
	return n;
}

/* The cluster the sessions not yet carried wait on: the one left while one is unread, else the other. */
static const Cluster *
carry_waits_on(const Cutover *c)
{
	const List *item;

	list_for_each(item, &c->proxy->active_clients)
	{
		const Client *client = container_of(item, const Client, head);

		if (cutover_is_moving(c, client) && (!client->cutover.carry || !client->cutover.carry->captured))
			return c->from;
	}
	return c->to;
}

/*
 * The loop's own waits on a cluster are bounded by answer_timeout like the
 * worker's: before the pause, without a standby logged in meanwhile; in the
 * sync phase, for the last sessions to be carried (cutover_advance fails
 * the cutover once the timer has run out and the worker, bounded too, has
 * reported).
 */
static void
on_answer_timeout(struct ev_loop *loop, ev_timer *w, int revents)
{
	Cutover *c = container_of(w, Cutover, answer_timer);
	int moving, in = standbys_in(c, &moving);

	(void) loop;
	(void) revents;
	if (c->phase == CP_PRECHECK) {
		if (in != c->answer_progress) {
			c->answer_progress = in;
			ev_timer_again(c->proxy->loop, &c->answer_timer);
			return;
		}
		cutover_fail(c, "precheck: the %s did not answer within %.1f s (answer_timeout); %s",
			     in < moving ? c->to->role : c->from->role,
			     (double) c->proxy->config.cutover.answer_timeout / 1e6,
			     in < moving ? "the connections for the clients could not log in"
					 : "the sessions could not be read");
		return;
	}
	if (c->phase == CP_SYNC)
		cutover_advance(c);
}

/*
 * Clients run again, on the cluster they were on unless switched: standbys
 * closed, databases unpaused, held queries and logins go on.  Once.
 */
static void
resume_clients(Cutover *c)
{
	Proxy *proxy = c->proxy;
	List *item, *tmp;

	if (c->resumed)
		return;
	c->resumed = true;
	proxy->logins_held = false;
	ev_timer_stop(proxy->loop, &c->drain_timer);
	ev_timer_stop(proxy->loop, &c->answer_timer);
	list_for_each_safe(item, tmp, &proxy->active_clients)
	{
		Client *client = container_of(item, Client, head);

		if (client->cutover.standby) {
			Server *standby = client->cutover.standby;

			client->cutover.standby = NULL;
			standby->client = NULL;
			server_disconnect(standby, NULL, "the %s ended", cutover_kind_name(c->kind));
		}
		session_carry_free(client->cutover.carry);
		client->cutover.carry = NULL;
		client->cutover.carry_round = 0;
	}
	c->t_resume = ev_time();
	list_for_each(item, &proxy->active_clients)
	{
		const Client *client = container_of(item, const Client, head);

		if (client->held && client->held_since > 0) {
			if (c->first_hold == 0 || client->held_since < c->first_hold)
				c->first_hold = client->held_since;
			if (c->t_resume - client->held_since > c->longest_hold)
				c->longest_hold = c->t_resume - client->held_since;
		}
	}
	cutover_set_paused(c, false);
	client_resume_held(proxy, NULL);
	list_for_each_safe(item, tmp, &proxy->active_clients)
	{
		Client *client = container_of(item, Client, head);

		if (client->cutover.wait_login) {
			client->cutover.wait_login = false;
			if (!proxy_connect_client(client)) {
				/* proxy_connect_client closed it */
			}
		}
	}
	/* Clients queued in a full pool meanwhile get theirs, on the cluster served now. */
	pool_kick_all(proxy);
}

/* Resume, clean up, report.  The Cutover itself is freed after this loop iteration. */
void
cutover_finish(Cutover *c)
{
	Proxy *proxy = c->proxy;
	bool ok = c->failure[0] == '\0';
	bool switched = ok && c->kind != CUTOVER_DRY_RUN;
	CutoverReport *report;
	char error[700];

	set_phase(c, CP_DONE);
	resume_clients(c);
	/* Before the report: it says what is still owed. */
	if (!ok && c->kind != CUTOVER_DRY_RUN && (c->fenced || c->reverse_prepared))
		cutover_cleanup_start(c);
	report = cutover_report_build(c, ok);
	if (c->kind != CUTOVER_DRY_RUN && !ok) {
		char pending[2048];

		/* An abort's undo may be owed still: cleanup.c retries it and updates these. */
		cutover_cleanup_describe(proxy, pending, sizeof(pending));
		cutover_report_set(report, "still_fenced", true, c->fenced ? "true" : "false");
		cutover_report_set(report, "cleanup_pending", false, pending);
	}
	if (switched)
		log_info("cutover", "%s completed: %d client(s) moved to the %s, %d terminated",
			 cutover_kind_name(c->kind), c->moved, c->to->role, c->terminated_clients);
	else
		log_info("cutover", "%s %s%s%s", cutover_kind_name(c->kind),
			 ok ? "finished" : "aborted: ", ok ? "" : c->failure,
			 ok ? "" : "; clients stay where they were");
	cutover_send_notices(c);
	if (cutover_admin(c)) {
		snprintf(error, sizeof(error), "%s aborted: %s%s%s%s", cutover_kind_name(c->kind), c->failure,
			 c->fenced ? "; the " : "", c->fenced ? c->from->role : "",
			 c->fenced ? " is still fenced, unfencing is retried (SHOW FENCE)" : "");
		c->admin->admin_waiting_cutover = false;
		if (cutover_report_send(c->admin, report, false, c->kind == CUTOVER_ROLLBACK ? "ROLLBACK" : "CUTOVER",
					ok ? NULL : error))
			sbuf_continue(&c->admin->sbuf);
		c->admin = NULL;
	}
	cutover_report_free(proxy->last_report);
	proxy->last_report = report;
	if (c->kind != CUTOVER_DRY_RUN) {
		proxy->cutovers_total++;
		proxy->cutovers_failed_total += !ok;
		proxy->last_pause_seconds = c->pause_seconds;
	}
	/* After a rollback the way back is not needed: the follower stops, then its slot goes. */
	if (switched && c->kind == CUTOVER_ROLLBACK)
		followers_stop(proxy, FOLLOWER_REVERSE, true);
	/*
	 * Not at once: its start (a process, logins, a walsender decoding from
	 * the slot) would compete with the clients just resumed.  Its slot keeps
	 * every write for it meanwhile.
	 */
	if (switched && c->kind == CUTOVER_FORWARD && proxy->config.cutover.rollback)
		followers_start_after(proxy, FOLLOWER_REVERSE, REVERSE_FOLLOWER_DELAY);
}

/* A failure: what the worker did (fence, reverse slot) is undone first. */
void
cutover_fail(Cutover *c, const char *fmt, ...)
{
	va_list ap;

	if (!c->failure[0]) {
		va_start(ap, fmt);
		vsnprintf(c->failure, sizeof(c->failure), fmt, ap);
		va_end(ap);
	}
	if ((c->fenced || c->reverse_prepared) && c->phase != CP_UNDO) {
		set_phase(c, CP_UNDO);
		if (cutover_worker_start(c, JOB_UNDO))
			return;
	}
	cutover_finish(c);
}

/* The custom settings the worker found in the databases' functions join those clients set. */
static void
learn_function_settings(Cutover *c)
{
	char *names = strdup(strbuf_str(&c->function_settings)), *save = NULL, *name;

	for (name = names ? strtok_r(names, " ", &save) : NULL; name; name = strtok_r(NULL, " ", &save))
		session_learn_setting(c->proxy, name);
	free(names);
}

/* PRECHECK: what the loop learns, in the order it learns it. */
static void
precheck_facts(Cutover *c, PhaseFacts *f)
{
	Proxy *proxy = c->proxy;

	/* A few logins at a time, while the worker checks; warm-ups once it has listed the tables. */
	if (!c->warm_known || !c->logins_known) {
		pthread_mutex_lock(&c->lock);
		c->warm_known = c->warm_ready;
		c->logins_known = c->logins_ready;
		pthread_mutex_unlock(&c->lock);
	}
	if (!f->dry_run)
		(void) cutover_standbys_ready(c);
	f->worker_done = cutover_worker_finished(c);
	f->job_ok = c->job_ok;
	if (!f->worker_done || !f->job_ok)
		return;
	if (!ev_is_active(&c->answer_timer) && !f->dry_run) {
		int moving;

		c->answer_progress = standbys_in(c, &moving);
		ev_timer_set(&c->answer_timer, 0., (ev_tstamp) proxy->config.cutover.answer_timeout / 1e6);
		ev_timer_again(proxy->loop, &c->answer_timer);
	}
	c->hidden_known = c->hidden_code != NULL; /* the worker looked */
	c->warm_known = true;
	learn_function_settings(c);
	if (f->dry_run) {
		f->dry_run_listed = cutover_dry_run_inspect(c);
		return;
	}
	f->standby_lost = proxy->standbys_lost > 0;
	if (f->standby_lost)
		return;
	f->standbys_ready = cutover_standbys_ready(c);
	f->sessions_settled = cutover_sessions_settled(c, f->standbys_ready);
}

/* DRAIN: the open transactions end (or are cancelled), sessions are carried meanwhile. */
static void
drain_facts(Cutover *c, PhaseFacts *f)
{
	f->standby_lost = c->proxy->standbys_lost > 0;
	if (f->standby_lost)
		return;
	if (c->cancel_round)
		cutover_cancel_open(c);
	(void) cutover_carry_sessions(c);
	f->drained = cutover_all_drained(c);
	f->standbys_ready = f->drained && cutover_standbys_ready(c);
}

/* SYNC: the worker's fence, catch-up, sequences and verify; the last sessions carried meanwhile. */
static void
sync_facts(Cutover *c, PhaseFacts *f, char *first, size_t firstlen)
{
	Proxy *proxy = c->proxy;

	if (proxy->standbys_lost > 0 && !c->failure[0])
		snprintf(c->failure, sizeof(c->failure), "could not log in to the %s: %.400s", c->to->role,
			 proxy->standby_lost_error);
	f->carried = cutover_carry_sessions(c);
	if (f->carried && c->t_captured == 0)
		c->t_captured = ev_time();
	f->worker_done = cutover_worker_finished(c);
	f->job_ok = c->job_ok;
	f->failed = c->failure[0] != '\0';
	f->answer_pending = ev_is_active(&c->answer_timer);
	if (f->worker_done && f->job_ok && !f->failed && f->carried) {
		c->unmovable = cutover_count_unmovable(c, first, firstlen);
		f->unmovable_abort = c->unmovable > 0 && proxy->config.cutover.unmovable == UNMOVABLE_ABORT;
	}
}

/*
 * Looks again at the cutover: gathers what the phase needs to know, asks
 * cutover_next_step (phases.c) what comes next and does it; a phase that
 * ends goes straight on to the next.
 */
void
cutover_advance(Cutover *c)
{
	Proxy *proxy = c->proxy;
	char first[256] = "";
	bool undone;

	cutover_send_notices(c);
	for (;;) {
		PhaseFacts f = {.phase = c->phase, .dry_run = c->kind == CUTOVER_DRY_RUN, .resumed = c->resumed};

		switch (c->phase) {
		case CP_PRECHECK:
			precheck_facts(c, &f);
			break;
		case CP_DRAIN:
			drain_facts(c, &f);
			break;
		case CP_SYNC:
			sync_facts(c, &f, first, sizeof(first));
			break;
		case CP_UNDO:
			pthread_mutex_lock(&c->lock);
			undone = c->from_undone;
			pthread_mutex_unlock(&c->lock);
			f.from_undone = undone;
			if (cutover_next_step(&f) == STEP_RESUME_LEFT) {
				resume_clients(c);
				cutover_notice(c, "%s: clients resumed on the %s", cutover_kind_name(c->kind),
					       c->from->role);
				cutover_send_notices(c);
				f.resumed = true;
			}
			f.worker_done = cutover_worker_finished(c);
			break;
		case CP_DONE:
			return;
		}
		switch (cutover_next_step(&f)) {
		case STEP_WAIT:
		case STEP_RESUME_LEFT:
			return;
		case STEP_FAIL_JOB:
			cutover_fail(c, "%s", c->job_error);
			return;
		case STEP_FAIL_STANDBY:
			cutover_fail(c, "could not log in to the %s: %.400s", c->to->role, proxy->standby_lost_error);
			return;
		case STEP_FINISH_DRY_RUN:
			cutover_dry_run_list(c);
			cutover_finish(c);
			return;
		case STEP_PAUSE:
			cutover_notice(c,
				       "%s: precheck done in %.1f ms (lag %lld bytes), %s connections ready, "
				       "%d session(s) left to read; pausing",
				       cutover_kind_name(c->kind), c->precheck_ms, (long long) c->lag_bytes,
				       c->to->role, c->settle_unread);
			ev_timer_stop(proxy->loop, &c->answer_timer);
			set_phase(c, CP_DRAIN);
			c->t_pause = ev_time();
			cutover_set_paused(c, true);
			ev_timer_set(&c->drain_timer, (ev_tstamp) proxy->config.cutover.drain_timeout / 1e6, 0.);
			ev_timer_start(proxy->loop, &c->drain_timer);
			continue;
		case STEP_SYNC:
			ev_timer_stop(proxy->loop, &c->drain_timer);
			c->t_drained = ev_time();
			cutover_notice(c, "%s: every client between transactions after %.1f ms",
				       cutover_kind_name(c->kind), (c->t_drained - c->t_pause) * 1e3);
			set_phase(c, CP_SYNC);
			ev_timer_set(&c->answer_timer, (ev_tstamp) proxy->config.cutover.answer_timeout / 1e6, 0.);
			ev_timer_start(proxy->loop, &c->answer_timer);
			if (!cutover_worker_start(c, JOB_SYNC)) {
				cutover_fail(c, "%s", c->failure);
				return;
			}
			continue;
		case STEP_FAIL_SYNC:
			cutover_fail(c, "%s", c->failure[0] ? c->failure : c->job_error);
			return;
		case STEP_FAIL_CARRY:
			cutover_fail(c,
				     "sync: the %s did not answer within %.1f s (answer_timeout); "
				     "the sessions could not be carried",
				     carry_waits_on(c)->role, (double) proxy->config.cutover.answer_timeout / 1e6);
			return;
		case STEP_FAIL_UNMOVABLE:
			cutover_fail(c, "%d session(s) cannot move (unmovable = abort): %s", c->unmovable, first);
			return;
		case STEP_SWITCH:
			c->t_synced = ev_time();
			/* Written before anyone runs on the new cluster: a restart never goes back. */
			if (!write_switch(proxy, c)) {
				cutover_fail(c, "could not write the state file %s", proxy->config.proxy.state_file);
				return;
			}
			proxy->serving = c->to;
			proxy->rolled_back = c->kind == CUTOVER_ROLLBACK;
			c->reverse_prepared = false; /* it is the way back now */
			cutover_switch_clients(c);
			cutover_finish(c);
			return;
		case STEP_FINISH_UNDO:
			if (!c->job_ok) {
				/* The job names what it left: a fence, or a reverse slot on a cluster that stopped answering. */
				log_error("cutover", "the abort could not undo everything: %s", c->job_error);
				snprintf(c->undo_error, sizeof(c->undo_error), "%s", c->job_error);
			}
			/* What the undo could not do, cutover_finish hands to cleanup.c. */
			cutover_finish(c);
			return;
		}
	}
}

static void
on_wake(struct ev_loop *loop, ev_async *w, int revents)
{
	Cutover *c = container_of(w, Cutover, wake);

	(void) loop;
	(void) revents;
	cutover_advance(c);
}

/* The proxy's own backends on the cluster left, per database, as SQL arrays. */
static bool
collect_pids(Cutover *c)
{
	Proxy *proxy = c->proxy;
	const List *item;
	int i;

	c->pids = calloc((size_t) proxy->config.ndatabases, sizeof(char *));
	if (!c->pids)
		return false;
	for (i = 0; i < proxy->config.ndatabases; i++) {
		const char *name = proxy->config.databases[i].name;
		StrBuf sb;
		int n = 0;

		strbuf_init(&sb);
		strbuf_append_char(&sb, '{');
		list_for_each(item, &proxy->active_servers)
		{
			const Server *server = container_of(item, const Server, head);

			if (server->cluster == c->from && strcmp(server->db->name, name) == 0)
				strbuf_appendf(&sb, "%s%d", n++ ? "," : "", server->backend_pid);
		}
		strbuf_append_char(&sb, '}');
		c->pids[i] = sb.failed ? NULL : strdup(strbuf_str(&sb));
		strbuf_free(&sb);
		if (!c->pids[i])
			return false;
	}
	return true;
}

bool
cutover_refusal(const Proxy *proxy, CutoverKind kind, char *why, size_t len)
{
	char what[2048];

	if (cutover_cleanup_pending(proxy)) {
		cutover_cleanup_describe(proxy, what, sizeof(what));
		snprintf(why, len,
			 "the last aborted cutover or rollback is not undone yet: %s; it is retried in the "
			 "background (SHOW FENCE)",
			 what);
	} else if (cutover_running(proxy))
		snprintf(why, len, "a cutover or rollback is already running");
	else if (kind == CUTOVER_ROLLBACK && proxy->serving != &proxy->target)
		snprintf(why, len, "nothing to roll back: clients are served by the source");
	else if (kind != CUTOVER_ROLLBACK && proxy->serving != &proxy->source)
		snprintf(why, len, "clients are already served by the target; ROLLBACK goes back");
	else if (kind == CUTOVER_ROLLBACK && !proxy->config.cutover.rollback)
		snprintf(why, len, "rollback = off: no reverse follower kept the source up to date");
	else
		return false;
	return true;
}

bool
cutover_start(Client *admin, CutoverKind kind)
{
	Proxy *proxy = admin->proxy;
	Cutover *c;

	c = calloc(1, sizeof(Cutover));
	if (!c) {
		client_disconnect(admin, "53200", "out of memory");
		return false;
	}
	c->proxy = proxy;
	c->kind = kind;
	set_phase(c, CP_PRECHECK);
	c->admin = admin;
	proxy->standbys_lost = 0;
	proxy->standby_lost_error[0] = '\0';
	c->from = kind == CUTOVER_ROLLBACK ? &proxy->target : &proxy->source;
	c->to = kind == CUTOVER_ROLLBACK ? &proxy->source : &proxy->target;
	c->dir.config = &proxy->config;
	c->dir.reverse = kind == CUTOVER_ROLLBACK;
	c->dir.subject = "cutover";
	c->t_start = ev_time();
	c->nhidden = proxy->config.ndatabases;
	c->hidden_code = malloc(sizeof(bool) * (size_t) (c->nhidden > 0 ? c->nhidden : 1));
	c->warm_sql = calloc((size_t) (c->nhidden > 0 ? c->nhidden : 1), sizeof(char *));
	c->read_only = calloc((size_t) (c->nhidden > 0 ? c->nhidden : 1), sizeof(ReadOnlyDefaults));
	pthread_mutex_init(&c->lock, NULL);
	strbuf_init(&c->notices);
	strbuf_init(&c->dry_clients);
	strbuf_init(&c->function_settings);
	ev_timer_init(&c->drain_timer, on_drain_timeout, 0., 0.);
	ev_timer_init(&c->answer_timer, on_answer_timeout, 0., 0.);
	ev_async_init(&c->wake, on_wake);
	ev_async_start(proxy->loop, &c->wake);
	proxy->cutover = c;
	admin->admin_waiting_cutover = true;
	log_info(admin->subject, "%s requested", cutover_kind_name(kind));
	if (!collect_pids(c)) {
		snprintf(c->failure, sizeof(c->failure), "out of memory");
		cutover_finish(c);
		return true;
	}
	if (!cutover_worker_start(c, kind == CUTOVER_DRY_RUN ? JOB_DRY_RUN : JOB_PRECHECK)) {
		cutover_finish(c);
		return true;
	}
	/* Standbys log in while the worker checks. */
	if (kind != CUTOVER_DRY_RUN && !cutover_standbys_ready(c)) {
		/* cutover_advance notices when they are in */
	}
	return true;
}

bool
cutover_show(Client *admin, bool json)
{
	return cutover_report_send(admin, admin->proxy->last_report, json, "SHOW", NULL);
}

bool
cutover_running(const Proxy *proxy)
{
	return (proxy->cutover && proxy->cutover->phase != CP_DONE) || cutover_cleanup_pending(proxy);
}

/*
 * The connections clients left, closed once nobody waits, RETIRE_PER_TICK
 * every RETIRE_INTERVAL: each ends a backend, and hundreds ending at once
 * (about 2 ms of CPU each) starved the clients just resumed on the other
 * cluster for a second.  The cluster left is fenced; its idle backends
 * cost nothing while they wait.
 */
#define RETIRE_PER_TICK 1
#define RETIRE_INTERVAL 0.02

static void
on_retire(struct ev_loop *loop, ev_timer *w, int revents)
{
	Proxy *proxy = container_of(w, Proxy, retire_timer);
	List *item, *tmp;
	int closed = 0;

	(void) revents;
	list_for_each_safe(item, tmp, &proxy->retiring_servers)
	{
		if (closed++ == RETIRE_PER_TICK)
			return;
		server_disconnect(container_of(item, Server, head), NULL, "its client moved to the %s",
				  proxy->serving->role);
	}
	ev_timer_stop(loop, w);
}

void
cutover_init(Proxy *proxy)
{
	ev_timer_init(&proxy->retire_timer, on_retire, RETIRE_INTERVAL, RETIRE_INTERVAL);
}

static void
cutover_free(Cutover *c)
{
	int i;

	if (c->thread_running) {
		pthread_join(c->thread, NULL);
		c->thread_running = false;
	}
	ev_async_stop(c->proxy->loop, &c->wake);
	ev_timer_stop(c->proxy->loop, &c->drain_timer);
	ev_timer_stop(c->proxy->loop, &c->answer_timer);
	for (i = 0; c->pids && i < c->proxy->config.ndatabases; i++)
		free(c->pids[i]);
	free(c->pids);
	free(c->hidden_code);
	for (i = 0; c->warm_sql && i < c->nhidden; i++)
		free(c->warm_sql[i]);
	free(c->warm_sql);
	steps_read_only_defaults_free(c->read_only, c->nhidden);
	steps_disconnect(&c->links);
	strbuf_free(&c->notices);
	strbuf_free(&c->dry_clients);
	strbuf_free(&c->function_settings);
	pthread_mutex_destroy(&c->lock);
	free(c);
}

/*
 * Looking again happens once per loop iteration, however many events asked
 * for it (recheck): with many clients each look walks them all.
 */
void
cutover_reap(Proxy *proxy, bool recheck)
{
	Cutover *c = proxy->cutover;

	/* Before closed clients are freed: let go of an admin that left.  The cutover runs on, stopping half-way would do more harm than finishing. */
	if (c && c->admin && c->admin->state == CL_JUSTFREE) {
		log_info(c->admin->subject, "left during the cutover, which goes on");
		c->admin = NULL;
	}
	if (!cutover_running(proxy) && !list_empty(&proxy->retiring_servers) && !ev_is_active(&proxy->retire_timer))
		ev_timer_start(proxy->loop, &proxy->retire_timer);
	if (recheck && proxy->cutover && proxy->cutover->phase != CP_DONE)
		cutover_advance(proxy->cutover);
	if (proxy->cutover && proxy->cutover->phase == CP_DONE) {
		cutover_free(proxy->cutover);
		proxy->cutover = NULL;
	}
	cutover_cleanup_reap(proxy);
	if (proxy->resume_pending) {
		proxy->resume_pending = false;
		client_resume_held(proxy, NULL);
	}
}

void
cutover_shutdown(Proxy *proxy)
{
	List *item, *tmp;

	ev_timer_stop(proxy->loop, &proxy->retire_timer);
	list_for_each_safe(item, tmp, &proxy->retiring_servers)
		server_disconnect(container_of(item, Server, head), NULL, "pghandoff is stopping");
	if (proxy->cutover) {
		/* The worker's results are read once it is done: an undo running finishes first. */
		if (proxy->cutover->thread_running) {
			pthread_join(proxy->cutover->thread, NULL);
			proxy->cutover->thread_running = false;
		}
		if (proxy->cutover->phase != CP_DONE) {
			snprintf(proxy->cutover->failure, sizeof(proxy->cutover->failure),
				 "pghandoff is shutting down");
			proxy->cutover->admin = NULL;
			cutover_finish(proxy->cutover);
		}
		cutover_free(proxy->cutover);
		proxy->cutover = NULL;
	}
	cutover_cleanup_shutdown(proxy);
	cutover_report_free(proxy->last_report);
	proxy->last_report = NULL;
}

bool
cutover_load_state(Proxy *proxy)
{
	bool reverse, way_back_left;
	const Cluster *fenced;

	if (!cutover_state_read(proxy, &reverse, &fenced, &way_back_left))
		return false;
	if (proxy->serving == &proxy->target && reverse && !followers_start(proxy, FOLLOWER_REVERSE))
		return false;
	if (fenced || way_back_left)
		cutover_cleanup_resume(proxy, fenced, way_back_left);
	return true;
}
