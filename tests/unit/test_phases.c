/*
 * The cutover's phase machine (cutover/loop/phases.c): from each phase, what
 * the loop does for each thing it may know.  The integration tests reach
 * these paths only through real clusters and timing; here every path is one
 * line, and an ordering mistake (a lost standby tested after a wait, a
 * failed worker ignored while sessions are carried) shows at once.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <cmocka.h>

#include "cutover/loop/phases.h"

static PhaseStep
next(PhaseFacts f)
{
	return cutover_next_step(&f);
}

static void
test_precheck(void **state)
{
	PhaseFacts ready = {.phase = CP_PRECHECK,
			    .worker_done = true,
			    .job_ok = true,
			    .standbys_ready = true,
			    .sessions_settled = true};
	PhaseFacts f;

	(void) state;
	assert_int_equal(next(ready), STEP_PAUSE);
	/* The worker's checks first: nothing pauses before they passed. */
	f = ready;
	f.worker_done = false;
	assert_int_equal(next(f), STEP_WAIT);
	f = ready;
	f.job_ok = false;
	assert_int_equal(next(f), STEP_FAIL_JOB);
	f.standby_lost = true;
	assert_int_equal(next(f), STEP_FAIL_JOB);
	/* A lost standby aborts rather than waits. */
	f = ready;
	f.standby_lost = true;
	f.standbys_ready = false;
	assert_int_equal(next(f), STEP_FAIL_STANDBY);
	/* Pausing waits for every standby and for the sessions read before the pause. */
	f = ready;
	f.standbys_ready = false;
	assert_int_equal(next(f), STEP_WAIT);
	f = ready;
	f.sessions_settled = false;
	assert_int_equal(next(f), STEP_WAIT);
}

static void
test_dry_run(void **state)
{
	PhaseFacts f = {.phase = CP_PRECHECK, .dry_run = true, .worker_done = true, .job_ok = true};

	(void) state;
	/* Never pauses: it reports once it has looked at every client. */
	assert_int_equal(next(f), STEP_WAIT);
	f.dry_run_listed = true;
	assert_int_equal(next(f), STEP_FINISH_DRY_RUN);
	f.standbys_ready = f.sessions_settled = true;
	assert_int_equal(next(f), STEP_FINISH_DRY_RUN);
	f.job_ok = false;
	assert_int_equal(next(f), STEP_FAIL_JOB);
}

static void
test_drain(void **state)
{
	PhaseFacts f = {.phase = CP_DRAIN, .drained = true, .standbys_ready = true};

	(void) state;
	assert_int_equal(next(f), STEP_SYNC);
	f.drained = false;
	assert_int_equal(next(f), STEP_WAIT);
	f.drained = true;
	f.standbys_ready = false;
	assert_int_equal(next(f), STEP_WAIT);
	f.standby_lost = true;
	assert_int_equal(next(f), STEP_FAIL_STANDBY);
	f.drained = f.standbys_ready = true;
	assert_int_equal(next(f), STEP_FAIL_STANDBY);
}

static void
test_sync(void **state)
{
	PhaseFacts done = {.phase = CP_SYNC,
			   .worker_done = true,
			   .job_ok = true,
			   .carried = true,
			   .answer_pending = true};
	PhaseFacts f;

	(void) state;
	assert_int_equal(next(done), STEP_SWITCH);
	f = done;
	f.worker_done = false;
	assert_int_equal(next(f), STEP_WAIT);
	/* Not carried yet: wait while answer_timeout runs, then fail naming it. */
	f = done;
	f.carried = false;
	assert_int_equal(next(f), STEP_WAIT);
	f.answer_pending = false;
	assert_int_equal(next(f), STEP_FAIL_CARRY);
	/* A worker that failed ends the cutover whether or not the sessions are carried. */
	f.job_ok = false;
	assert_int_equal(next(f), STEP_FAIL_SYNC);
	f = done;
	f.failed = true;
	assert_int_equal(next(f), STEP_FAIL_SYNC);
	f = done;
	f.unmovable_abort = true;
	assert_int_equal(next(f), STEP_FAIL_UNMOVABLE);
	f.job_ok = false;
	assert_int_equal(next(f), STEP_FAIL_SYNC);
}

static void
test_undo(void **state)
{
	PhaseFacts f = {.phase = CP_UNDO};

	(void) state;
	assert_int_equal(next(f), STEP_WAIT);
	/* The cluster left is back: its clients resume before the worker is done with the other one. */
	f.from_undone = true;
	assert_int_equal(next(f), STEP_RESUME_LEFT);
	f.worker_done = true;
	assert_int_equal(next(f), STEP_RESUME_LEFT);
	f.resumed = true;
	assert_int_equal(next(f), STEP_FINISH_UNDO);
	f.worker_done = false;
	assert_int_equal(next(f), STEP_WAIT);
	/* A worker that ends before the side left says so still finishes. */
	f = (PhaseFacts){.phase = CP_UNDO, .worker_done = true};
	assert_int_equal(next(f), STEP_FINISH_UNDO);
}

static void
test_done_waits(void **state)
{
	PhaseFacts f = {.phase = CP_DONE, .worker_done = true, .job_ok = true, .carried = true};

	(void) state;
	assert_int_equal(next(f), STEP_WAIT);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_precheck), cmocka_unit_test(test_dry_run), cmocka_unit_test(test_drain),
		cmocka_unit_test(test_sync),     cmocka_unit_test(test_undo),    cmocka_unit_test(test_done_waits),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
