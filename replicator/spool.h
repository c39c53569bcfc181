/*
 * Streamed in-progress transactions (pgoutput protocol 2, PostgreSQL 14 on),
 * kept until their end is known.
 *
 * A source transaction larger than logical_decoding_work_mem is sent in
 * blocks while it runs, between other transactions, and may still abort,
 * whole or one subtransaction at a time.  Its messages are written as they
 * come to a file of their own (unlinked at once, so nothing outlives the
 * process), and replayed through the applier as one ordinary transaction
 * at Stream Commit.  Nothing streamed is applied before its commit, so the
 * target never holds a change the source rolled back, and a restart simply
 * receives the transaction again from its start.
 *
 * Each record is one pgoutput message exactly as received (a Length word,
 * then the bytes), so replay decodes it with the same decoder.
 */
#ifndef PGHANDOFF_REPLICATOR_SPOOL_H
#define PGHANDOFF_REPLICATOR_SPOOL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef struct SpoolXact SpoolXact;

typedef struct Spool {
	const char *subject;
	SpoolXact *xacts; /* the open streamed transactions, few at a time */
	int nxacts;
	int cap;
} Spool;

void spool_init(Spool *sp, const char *subject);
void spool_free(Spool *sp);

/*
 * Stream Start.  first_segment starts the transaction afresh (a spool left
 * from an earlier sending of it is dropped); a later segment must find it.
 */
bool spool_start(Spool *sp, uint32_t xid, bool first_segment) __attribute__((warn_unused_result));

/*
 * One message of transaction xid's current block.  change_xid is the
 * (sub)transaction the change was made in (the message's own xid), or 0 for
 * a message that carries none; a subtransaction's first change is where an
 * abort of it cuts the file back to.
 */
bool spool_append(Spool *sp, uint32_t xid, uint32_t change_xid, const uint8_t *data, size_t len)
	__attribute__((warn_unused_result));

/* Stream Abort: the whole transaction (subxid == xid), or one subtransaction and those begun after it. */
bool spool_abort(Spool *sp, uint32_t xid, uint32_t subxid) __attribute__((warn_unused_result));

/* Stream Stop: what is buffered goes to the file, so memory stays small between blocks. */
bool spool_stop(Spool *sp, uint32_t xid) __attribute__((warn_unused_result));

/* Messages spooled for xid, for the log; -1 when it has none. */
int64_t spool_count(const Spool *sp, uint32_t xid);

/*
 * Stream Commit: calls fn for each message of xid in the order received,
 * with a pointer into a buffer reused for the next, then drops the spool.
 * Stops at the first false from fn and returns false.
 */
typedef bool (*SpoolReplayFn)(void *arg, const uint8_t *data, size_t len);
bool spool_replay(Spool *sp, uint32_t xid, SpoolReplayFn fn, void *arg) __attribute__((warn_unused_result));

#endif
