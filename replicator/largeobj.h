/*
 * Large objects are not carried by logical replication (pg_largeobject is a
 * catalog).  They are copied with the tables at the initial sync, kept in
 * step while streaming by a periodic diff, and diffed a last time inside the
 * cutover's pause, after the fence.  Whichever way a follower streams, the
 * side it applies to is made equal to the side it reads: same OIDs, owners,
 * grants and contents.
 *
 * The diff compares, per OID, a signature of the reading side (owner,
 * grants, and the page numbers and xmin of its pg_largeobject rows, which
 * change with every write) with the signature recorded on the writing side
 * when the object was last copied there (an unlogged table in the schema
 * pghandoff_lo, written in the same transaction as the object).  Objects
 * new, changed or gone are copied or unlinked; nothing else is read.
 */
#ifndef PGHANDOFF_REPLICATOR_LARGEOBJ_H
#define PGHANDOFF_REPLICATOR_LARGEOBJ_H

#include <stdbool.h>
#include <stdint.h>

#include "config/config.h"
#include "replicator/conn.h"

struct ReplDirection;

typedef struct LargeObjRound {
	/* Asked for by the caller. */
	const char *snapshot; /* an exported snapshot of from to read in, or NULL: a snapshot of its own */
	int64_t max_bytes;    /* copy about this much at most, the rest in the next round; 0: everything */
	double deadline;      /* clock_monotonic() by which the round must be done; 0: none */
	bool diff_only;       /* find what differs, change nothing (the dry run) */
	/* What it found and did. */
	int total;     /* large objects on the reading side */
	int in_step;   /* of those, equal on the writing side when the round ended */
	int copied;    /* objects written (or, with diff_only, that would be) */
	int unlinked;  /* objects removed from the writing side (or that would be) */
	int verified;  /* objects found equal without a recorded signature, recorded now */
	int64_t bytes; /* bytes copied */
	bool more;     /* max_bytes stopped it: another round has work */
} LargeObjRound;

/*
 * One round of the diff: to's large objects made equal to from's (from and
 * to are plain connections to the same database on either side; to must be
 * allowed to write, fenced or not).  Rounds, from any process, take turns
 * on an advisory lock on to.  Each copied object, its signature recorded
 * with it, commits in a transaction of to: a crash anywhere leaves every
 * object either old or new, and the next round carries on.
 */
bool largeobj_sync(ReplConn *from, ReplConn *to, LargeObjRound *round) __attribute__((warn_unused_result));

/* `replicate --drop`: the recorded signatures (schema pghandoff_lo) go, on either side. */
bool largeobj_forget(ReplConn *conn) __attribute__((warn_unused_result));

/* The initial copy, in the slot's exported snapshot, on connections of its own. */
bool largeobj_copy_initial(const Config *config, const DatabaseMapping *db, const char *snapshot, const char *subject)
	__attribute__((warn_unused_result));

/*
 * The periodic diff while a follower streams: a thread with connections of
 * its own, a round every large_object_sync_interval (at once again while a
 * bounded round left work), until stopped.  It stands down while the side
 * it reads is fenced, and forward also while the way back is prepared
 * (the other direction's origin exists there): clients are then moving or
 * gone to the other side, and the cutover's own diff has the last word.
 * NULL when it is off or could not start (logged).
 */
typedef struct LargeObjFollower LargeObjFollower;
LargeObjFollower *largeobj_follow_start(const Config *config, const struct ReplDirection *dir, const char *subject);
void largeobj_follow_stop(LargeObjFollower *f);

#endif
