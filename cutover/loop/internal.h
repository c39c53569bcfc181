/*
 * Inside the cutover: the Cutover object and the functions its files share.
 * cutover.c runs the phases; worker.c the database work on a thread;
 * clients.c holds, drains and switches the clients;
 * sessions.c reads and replays their sessions; report.c
 * tells the admin; state.c keeps the state file.  Nothing outside
 * every file of cutover/loop/ includes this.
 */
#ifndef PGHANDOFF_CUTOVER_LOOP_INTERNAL_H
#define PGHANDOFF_CUTOVER_LOOP_INTERNAL_H

#include <pthread.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common/strbuf.h"
#include "cutover/db/steps.h"
#include "cutover/loop/cutover.h"
#include "cutover/loop/phases.h"

#define REPORT_MAX_ITEMS 48

typedef enum WorkerJob {
	JOB_PRECHECK,
	JOB_DRY_RUN,
	JOB_SYNC,
	JOB_UNDO,
} WorkerJob;

typedef struct ReportItem {
	char key[40];
	char *value;
	bool number;
} ReportItem;

struct CutoverReport {
	int nitems;
	ReportItem items[REPORT_MAX_ITEMS];
	char *json;
};

/* The worker's phases, timed for the report. */
enum { PH_FENCE, PH_CATCH_UP, PH_SEQUENCES, PH_VERIFY, PH_ROLLBACK_READY, PH_COUNT };
extern const char *const cutover_phase_names[PH_COUNT];

struct Cutover {
	Proxy *proxy;
	CutoverKind kind;
	CutoverPhase phase;
	const Cluster *from;
	const Cluster *to;
	Client *admin;
	ev_timer drain_timer;
	ev_timer answer_timer; /* the loop's wait for a cluster: standby logins, sessions read and carried */
	int answer_progress;   /* standbys in when answer_timer last looked */
	bool resumed;          /* clients run again (on an abort, before the other cluster is dealt with) */
	bool cancel_round;     /* on_drain_timeout = cancel: the open transactions were cancelled */
	ev_async wake;
	char failure[512];    /* why it stopped; "" while all goes well */
	char undo_error[512]; /* what the abort could not undo, for the report; "" if nothing */

	/* The worker: one thread per job, joined by the loop when it reports. */
	pthread_t thread;
	bool thread_running;
	WorkerJob job;
	CutoverDirection dir;
	char **pids;        /* per database, the proxy's backends on the cluster left */
	CutoverLinks links; /* the worker's connections, opened by the precheck */
	bool reverse_prepared;
	pthread_mutex_t lock;
	/* Under lock: */
	bool job_done;
	bool job_ok;
	bool warm_ready;   /* the worker has filled warm_sql; the precheck goes on */
	bool from_undone;  /* undo: the cluster left takes writes again; its clients may resume */
	bool logins_ready; /* the worker has filled read_only: standbys may log in */
	char job_error[512];
	StrBuf notices; /* phase lines for the admin, newline-separated */
	/* Written by the worker, read by the loop after the join: */
	bool fenced;
	int terminated; /* sessions around the proxy ended by the fence */
	int sequences;
	int tables_verified;
	int64_t lag_bytes;
	double catch_up_estimate;
	double large_object_estimate; /* dry run: seconds the pause's diff of large objects takes */
	int large_objects_differing;  /* dry run: objects that diff would copy or unlink */
	char lsns[512];
	const char *failed_phase; /* the phase a job failed in, for its error; NULL: the job's own name */
	double phase_ms[PH_COUNT];

	/* Timings: ev_time(), the moment itself (ev_now() is when the loop iteration began). */
	ev_tstamp t_start;
	ev_tstamp t_settle; /* since when sessions were read before the pause with every standby in */
	int settle_round;   /* the round of reads before the pause */
	int settle_rounds;  /* rounds since every standby was in */
	int settle_unread;  /* unread when the last round ended; then, left for the pause */
	ev_tstamp t_pause;  /* databases paused */
	ev_tstamp t_drained;
	ev_tstamp t_captured; /* every session carried */
	ev_tstamp t_synced;
	ev_tstamp t_resume;
	ev_tstamp first_hold; /* of the clients held when they resumed: the earliest hold, 0 if none */
	double longest_hold;  /* and the longest, in seconds */
	double pause_seconds; /* first held query to resume */
	double precheck_ms;
	bool *hidden_code; /* per database of the side left: runs code its clients do not name */
	int nhidden;
	bool hidden_known; /* the worker filled hidden_code */
	char **warm_sql;   /* per database: what its standbys run before the pause (cutover/warm.c), or NULL */
	bool warm_known;   /* the loop saw warm_ready: warm_sql is the loop's to read */
	ReadOnlyDefaults *read_only; /* per database: what a standby logs in with (cutover/login.c) */
	bool logins_known;           /* the loop saw logins_ready: read_only is the loop's to read */
	StrBuf function_settings;    /* custom settings the databases' functions set: names, space-separated */
	int sessions_known;          /* known without reading: untouched (session_know_untouched) */
	int standbys_started;
	bool standbys_in; /* every moving client's standby logged in, once */
	bool pool_warmed; /* the pools' idle connections were opened on the cluster it goes to */
	int moved;
	int terminated_clients;
	int unmovable;
	StrBuf dry_clients; /* dry run: one line per client */
};

/* The admin client waiting for c, or NULL once it has closed (it may not be freed yet). */
static inline Client *
cutover_admin(const Cutover *c)
{
	return c->admin && c->admin->state != CL_JUSTFREE ? c->admin : NULL;
}

/* cutover.c */
void cutover_advance(Cutover *c);
/* Resume, clean up, report; the Cutover is freed after this loop iteration. */
void cutover_finish(Cutover *c);
/* A failure: what the worker did (fence, reverse slot) is undone first. */
void cutover_fail(Cutover *c, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* worker.c */
bool cutover_worker_start(Cutover *c, WorkerJob job);
/* True once the running job has reported; the thread is joined then. */
bool cutover_worker_finished(Cutover *c);

/* clients.c */
/* Clients the cutover moves: logged in and served by the cluster left. */
bool cutover_is_moving(const Cutover *c, const Client *client);
/* Between transactions, nothing asked and unanswered, no query of the proxy's own running. */
bool cutover_client_quiet(const Client *client);
/* Opens the missing standbys; true when every moving client has one logged in. */
bool cutover_standbys_ready(Cutover *c);
void cutover_set_paused(Cutover *c, bool paused);
bool cutover_all_drained(Cutover *c);
void cutover_describe_busy(Cutover *c, char *buf, size_t len);
void cutover_cancel_open(Cutover *c);
void cutover_switch_clients(Cutover *c);

/* sessions.c */
bool cutover_sessions_settled(Cutover *c, bool may_settle);
bool cutover_carry_sessions(Cutover *c);
int cutover_count_unmovable(Cutover *c, char *first, size_t len);
void cutover_dry_run_list(Cutover *c);
bool cutover_dry_run_inspect(Cutover *c);

/* report.c */
const char *cutover_kind_name(CutoverKind kind);
void cutover_send_notices(Cutover *c);
void cutover_notice(Cutover *c, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
CutoverReport *cutover_report_build(Cutover *c, bool ok);
bool cutover_report_send(Client *admin, const CutoverReport *r, bool json, const char *tag, const char *error);
void cutover_report_free(CutoverReport *r);
/* Replaces key's value (or adds the item) in a finished report, its JSON too. */
void cutover_report_set(CutoverReport *r, const char *key, bool number, const char *value);

/* cleanup.c */
/* What c could not undo (c->fenced, c->reverse_prepared) is retried in the background until done. */
void cutover_cleanup_start(Cutover *c);
/* After each loop iteration: frees a cleanup that is done. */
void cutover_cleanup_reap(Proxy *proxy);
/* At exit: waits for an attempt running, says what is left. */
void cutover_cleanup_shutdown(Proxy *proxy);
/* What is owed, for the state file: the cluster still fenced (or NULL), the way back's objects. */
void cutover_cleanup_owed(const Proxy *proxy, const Cluster **fenced, bool *way_back_left);
/* At start: the state file says an undo was owed when the proxy stopped; it is retried again. */
void cutover_cleanup_resume(Proxy *proxy, const Cluster *fenced, bool way_back_left);

/* state.c */
/*
 * Where clients go (serving), the last switch ("cutover", "rollback" or
 * "none") and what an aborted one still owes: the cluster to unfence, the
 * way back's objects.
 */
bool cutover_state_write(Proxy *proxy, const Cluster *serving, const char *last, const Cluster *fenced,
			 bool way_back_left) __attribute__((warn_unused_result));
/* Sets proxy->serving and rolled_back from the state file (none: the source); says what was owed. */
bool cutover_state_read(Proxy *proxy, bool *reverse, const Cluster **fenced, bool *way_back_left)
	__attribute__((warn_unused_result));
/* cleanup.c: the state file written again as things stand (an undo owed, or no longer). */
bool cutover_save_state(Proxy *proxy);

#endif
