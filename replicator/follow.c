/*
 * A direction of replication and the loop that follows it: forward (source
 * to target) from `pghandoff replicate`, and back from the target after a
 * cutover (reverse.c).  Whatever ends a stream is retried with backoff from
 * the origin's progress.
 */
#include "replicator/follow.h"
#include "common/log.h"
#include "replicator/largeobj.h"
#include "replicator/slots.h"
#include "replicator/pgoutput.h"
#include "replicator/status.h"
#include "replicator/stream.h"

#include <string.h>
#include <time.h>
#include <unistd.h>

const ServerConfig *
replicate_from_server(const Config *config, bool reverse)
{
	return reverse ? &config->target : &config->source;
}

const ServerConfig *
replicate_to_server(const Config *config, bool reverse)
{
	return reverse ? &config->source : &config->target;
}

const char *
replicate_from_db(const DatabaseMapping *db, bool reverse)
{
	return reverse ? db->target_name : db->name;
}

const char *
replicate_to_db(const DatabaseMapping *db, bool reverse)
{
	return reverse ? db->name : db->target_name;
}

void
replicate_direction(const Config *config, const DatabaseMapping *db, const ReplNames *names, bool reverse,
		    ReplDirection *dir)
{
	memset(dir, 0, sizeof(*dir));
	dir->reverse = reverse;
	dir->from = replicate_from_server(config, reverse);
	dir->from_db = replicate_from_db(db, reverse);
	dir->to = replicate_to_server(config, reverse);
	dir->to_db = replicate_to_db(db, reverse);
	if (!reverse) {
		dir->slot = names->slot;
		dir->publication = names->publication;
		dir->origin = names->origin;
		/* Changes the reverse follower brought back to the source carry its origin there. */
		dir->skip_origin = names->reverse_origin;
		dir->drop_command = "`pghandoff replicate --drop`";
	} else {
		dir->slot = names->reverse_slot;
		dir->publication = names->reverse_publication;
		dir->origin = names->reverse_origin;
		/* What the forward follower applied on the target carries its origin there. */
		dir->skip_origin = names->origin;
		dir->drop_command = "`pghandoff replicate --reverse --drop`";
	}
}

bool
replicate_connect_apply(const ReplDirection *dir, ReplConn *conn, const char *subject)
{
	if (!repl_connect(conn, dir->to, dir->to_db, false, subject))
		return false;
	/*
	 * A cutover fences the side clients leave with ALTER DATABASE ... SET
	 * default_transaction_read_only = on (the source; the target after a
	 * rollback); the followers are the writers it must still let in.
	 */
	if (!repl_exec(conn, "SET default_transaction_read_only = off")) {
		repl_close(conn);
		return false;
	}
	return true;
}

/* Sleeps up to seconds, waking early for a stop request. */
static void
backoff_sleep(int seconds)
{
	int i;

	for (i = 0; i < seconds * 10 && !replicate_stop_requested; i++)
		usleep(100 * 1000);
}

int
replicate_follow(const Config *config, const ReplDirection *dir, ReplConn *repl, ReplConn *apply, uint64_t start_lsn,
		 const char *subject)
{
	bool origin_exists;
	int backoff = 1;
	uint64_t exact_before = 0; /* see stream_run */
	/* Large objects do not travel in the stream: a diff beside it keeps them in step. */
	LargeObjFollower *large_objects = largeobj_follow_start(config, dir, subject);

	/*
	 * Streaming until told to stop.  Whatever ends a stream (a lost
	 * connection, a restarted server, a table that no longer fits) is
	 * retried with backoff from the origin's progress: nothing is lost, and
	 * a fixed database resumes by itself.
	 */
	for (;;) {
		char lsnbuf[LSN_FORMAT_LEN];

		lsn_format(start_lsn, lsnbuf, sizeof(lsnbuf));
		time_t started = time(NULL);

		log_info(subject, "streaming resumes from the %s's replication origin at %s", dir->to->role, lsnbuf);
		if (stream_run(config, dir, repl, apply, start_lsn, &exact_before, subject) || replicate_stop_requested)
			break;
		/* A stream that ran a while failed afresh; one that fails at once keeps backing off. */
		if (time(NULL) - started > 60)
			backoff = 1;
		repl_close(repl);
		repl_close(apply);
		if (dir->status)
			status_phase(dir->status, "retrying");
		for (;;) {
			log_warning(subject, "retrying in %d s", backoff);
			backoff_sleep(backoff);
			backoff = backoff < 30 ? backoff * 2 : 30;
			if (replicate_stop_requested)
				goto stopped;
			if (replicate_connect_apply(dir, apply, subject) &&
			    repl_connect(repl, dir->from, dir->from_db, true, subject) &&
			    slots_origin_state(apply, dir->origin, &origin_exists, &start_lsn))
				break;
			repl_close(repl);
			repl_close(apply);
		}
	}
stopped:
	largeobj_follow_stop(large_objects);
	repl_close(apply);
	repl_close(repl);
	return 0;
}
