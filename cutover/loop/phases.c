/*
 * Which step the cutover takes next (phases.h).  The order of the tests is
 * the contract: a worker's failure before a lost standby, a lost standby
 * before anything waited for, answer_timeout only once the rest is in.
 */
#include "cutover/loop/phases.h"

PhaseStep
cutover_next_step(const PhaseFacts *f)
{
	switch (f->phase) {
	case CP_PRECHECK:
		if (!f->worker_done)
			return STEP_WAIT;
		if (!f->job_ok)
			return STEP_FAIL_JOB;
		if (f->dry_run)
			return f->dry_run_listed ? STEP_FINISH_DRY_RUN : STEP_WAIT;
		if (f->standby_lost)
			return STEP_FAIL_STANDBY;
		/* Sessions are read while the last logins go on; settled only once they are in. */
		if (!f->sessions_settled || !f->standbys_ready)
			return STEP_WAIT;
		return STEP_PAUSE;
	case CP_DRAIN:
		if (f->standby_lost)
			return STEP_FAIL_STANDBY;
		if (!f->drained || !f->standbys_ready)
			return STEP_WAIT;
		return STEP_SYNC;
	case CP_SYNC:
		/* A worker that failed ends the cutover whether or not the sessions are carried. */
		if (!f->worker_done)
			return STEP_WAIT;
		if (!f->job_ok || f->failed)
			return STEP_FAIL_SYNC;
		if (!f->carried)
			return f->answer_pending ? STEP_WAIT : STEP_FAIL_CARRY;
		if (f->unmovable_abort)
			return STEP_FAIL_UNMOVABLE;
		return STEP_SWITCH;
	case CP_UNDO:
		/* The cluster left takes writes again: its clients go on while the other one is dealt with. */
		if (f->from_undone && !f->resumed)
			return STEP_RESUME_LEFT;
		if (!f->worker_done)
			return STEP_WAIT;
		return STEP_FINISH_UNDO;
	case CP_DONE:
		break;
	}
	return STEP_WAIT;
}
