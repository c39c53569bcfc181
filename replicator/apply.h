/*
 * Applying decoded changes to the target.
 *
 * Nobody reads the target before the cutover, so several source
 * transactions are grouped into one target transaction, committed at a
 * source commit boundary: the group is all or nothing, and the replication
 * origin advances in the same target transaction, so a crash never loses
 * or repeats a change.  Statements are prepared once per table, operation
 * and column set.
 */
#ifndef PGHANDOFF_REPLICATOR_APPLY_H
#define PGHANDOFF_REPLICATOR_APPLY_H

/* Statements sent in pipeline mode before their results are read. */
#define APPLY_PIPELINE_BATCH 500

#include <stdbool.h>
#include <stdint.h>

#include "replicator/batch.h"
#include "replicator/conn.h"
#include "replicator/ddl.h"
#include "replicator/pgoutput.h"
#include "replicator/relcache.h"

typedef struct StmtCacheEntry StmtCacheEntry;

/*
 * The change being applied, as PostgreSQL's apply_error_callback names it:
 * enough for an operator to find it on the source.
 */
typedef struct ApplyChange {
	uint8_t type;       /* PGOUTPUT_INSERT, _UPDATE, _DELETE or _TRUNCATE */
	uint32_t relid;     /* the source's relation */
	uint32_t xid;       /* the source transaction */
	uint64_t final_lsn; /* where that transaction commits on the source */
} ApplyChange;

typedef struct Applier {
	ReplConn *target; /* the database changes are applied to (the source, in reverse) */
	const char *subject;
	const char *origin;
	const char *skip_origin; /* transactions from this origin are the other direction's */
	RelCache relcache;
	StmtCacheEntry *stmts; /* a small hash chain list; statements are few */
	int nstmts;
	uint32_t *absent; /* relids named by a Relation message, with no table on the target */
	int nabsent;
	int absent_cap;

	bool in_source_xact;     /* between Begin and Commit */
	uint64_t xact_final_lsn; /* that source transaction's commit LSN */
	uint32_t xact_xid;
	bool skipping;       /* this source transaction was applied before a restart */
	bool origin_skipped; /* this source transaction came from skip_origin: not applied */
	bool target_open;    /* a target transaction is open */
	bool pipelined;      /* the target connection is in pipeline mode */
	int queued;          /* statements sent whose results are unread */
	ApplyChange queued_changes[APPLY_PIPELINE_BATCH]; /* what each of them applies, to name it in an error */
	ApplyChange change;                               /* the change being applied now */
	uint64_t skip_before;   /* origin progress at start: transactions ending before it are done */
	uint64_t group_end_lsn; /* end of the last source transaction in the open group */
	int64_t group_commit_time;
	int group_xacts;
	int64_t group_changes;
	int64_t xact_changes; /* applied of the source transaction in progress */
	double group_started; /* monotonic seconds */

	DdlReplay ddl;         /* schema changes captured on the sending side (ddl.h) */
	Batch batch;           /* net-effect batching of keyed tables */
	uint64_t exact_before; /* transactions ending before this are applied one change at a time */
	bool batch_this_xact;  /* the current source transaction may be batched */
	bool batch_failed;     /* applying a batch failed: retry these transactions exactly */

	uint64_t committed_lsn; /* committed on the target (asynchronously) */
	uint64_t flushed_lsn;   /* committed and on disk on the target: what feedback may confirm */
	int64_t changes_applied;
	int64_t xacts_applied;
	int64_t xacts_skipped; /* from skip_origin */
} Applier;

/*
 * exact_before: after a batched group failed to apply (a unique key moved
 * between rows, say), the same transactions are applied again in their
 * exact order, up to this LSN.
 *
 * skip_origin (NULL for none): a transaction whose Origin message names it
 * was applied by the follower running the other way, so applying it would
 * send it back where it came from; it is skipped, but counts like any other
 * for the origin's progress.  Transactions of other origins are applied.
 */
bool applier_init(Applier *ap, ReplConn *target, const char *origin, const char *skip_origin, uint64_t start_lsn,
		  uint64_t exact_before, const char *subject) __attribute__((warn_unused_result));
void applier_free(Applier *ap);

/* Whether the changes of the source transaction in progress are applied (not skipped). */
bool applier_applies(const Applier *ap);

/* Applies one decoded message; false (logged) on an error that stops this database. */
bool applier_handle(Applier *ap, const PgoutputMessage *msg) __attribute__((warn_unused_result));

/*
 * Target commits are asynchronous (synchronous_commit = off), as a native
 * subscription's are; what the target has flushed is read back from the
 * origin before feedback, so the slot never moves past what a target crash
 * would keep.
 */
bool applier_update_flushed(Applier *ap) __attribute__((warn_unused_result));

/*
 * Commits the open group if it is worth it now: when idle is true (no more
 * data waiting) or the group has grown large or old.
 */
bool applier_flush(Applier *ap, bool idle) __attribute__((warn_unused_result));

#endif
