/*
 * The cutover's phase machine as a pure function.  cutover_advance
 * (cutover.c) gathers what the loop knows, in the order it learns it, and
 * asks which step comes next; the unit tests ask the same question with no
 * loop and no cluster.
 */
#ifndef PGHANDOFF_CUTOVER_LOOP_PHASES_H
#define PGHANDOFF_CUTOVER_LOOP_PHASES_H

#include <stdbool.h>

typedef enum CutoverPhase {
	CP_PRECHECK,
	CP_DRAIN,
	CP_SYNC,
	CP_UNDO,
	CP_DONE,
} CutoverPhase;

/* What the loop knows when it looks again; a fact not learnt yet is false. */
typedef struct PhaseFacts {
	CutoverPhase phase;
	bool dry_run;
	bool worker_done;      /* the worker's job has finished */
	bool job_ok;           /* and succeeded */
	bool standby_lost;     /* a server opened on the other cluster could not log in */
	bool standbys_ready;   /* every moving client has its server on the other cluster */
	bool sessions_settled; /* the sessions read before the pause are read */
	bool dry_run_listed;   /* the dry run has looked at every client */
	bool drained;          /* every client is between transactions */
	bool carried;          /* every session is carried to its new server */
	bool failed;           /* a failure is recorded already */
	bool answer_pending;   /* answer_timeout has not run out */
	bool unmovable_abort;  /* sessions cannot move, and unmovable = abort */
	bool from_undone;      /* undo: the cluster left takes writes again */
	bool resumed;          /* the clients run again */
} PhaseFacts;

typedef enum PhaseStep {
	STEP_WAIT,           /* nothing to do until something changes */
	STEP_FAIL_JOB,       /* the worker's precheck failed */
	STEP_FAIL_STANDBY,   /* a server on the other cluster could not log in */
	STEP_FINISH_DRY_RUN, /* the dry run's report */
	STEP_PAUSE,          /* PRECHECK -> DRAIN: hold the clients */
	STEP_SYNC,           /* DRAIN -> SYNC: fence, catch up, sequences, verify */
	STEP_FAIL_SYNC,      /* the worker or the loop failed in SYNC */
	STEP_FAIL_CARRY,     /* the sessions were not carried within answer_timeout */
	STEP_FAIL_UNMOVABLE, /* sessions cannot move and unmovable = abort */
	STEP_SWITCH,         /* clients move to the other cluster: done */
	STEP_RESUME_LEFT,    /* undo: clients resume on the cluster left */
	STEP_FINISH_UNDO,    /* undo: done, the report */
} PhaseStep;

PhaseStep cutover_next_step(const PhaseFacts *f);

#endif
