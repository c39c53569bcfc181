/*
 * Streaming: the replication connection's loop, after pg_recvlogical.c.
 * START_REPLICATION with pgoutput, changes decoded and applied to the target,
 * keepalives answered, and feedback that reports as flushed only what is
 * committed on the target.
 */
#ifndef PGHANDOFF_REPLICATOR_STREAM_H
#define PGHANDOFF_REPLICATOR_STREAM_H

#include <stdbool.h>
#include <stdint.h>

#include "config/config.h"
#include "replicator/conn.h"
#include "replicator/follow.h"

/*
 * Streams dir's slot from start_lsn over repl and applies to apply, until
 * stopped (true) or an error (false, logged).
 *
 * *exact_before belongs to the caller and lives across streams: transactions
 * ending before it are applied one change at a time.  A stream whose batched
 * group failed to apply raises it past what it received, so the next stream
 * applies those transactions again in their exact order.
 */
bool stream_run(const Config *config, const ReplDirection *dir, ReplConn *repl, ReplConn *apply, uint64_t start_lsn,
		uint64_t *exact_before, const char *subject) __attribute__((warn_unused_result));

#endif
