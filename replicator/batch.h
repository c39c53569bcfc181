/*
 * Net-effect batching: within one target transaction, the changes to each
 * keyed table are reduced to one final change per row (a row updated 500
 * times is written once; inserted then deleted, not at all), then applied
 * set-wise: inserts with COPY, updates and deletes by joining a temporary
 * table filled with COPY.  Only possible because nobody reads the target
 * before the cutover; the result at the commit is the same as applying the
 * changes one by one.
 */
#ifndef PGHANDOFF_REPLICATOR_BATCH_H
#define PGHANDOFF_REPLICATOR_BATCH_H

#include <stdbool.h>
#include <stdint.h>

#include "replicator/conn.h"
#include "replicator/pgoutput.h"
#include "replicator/relcache.h"

typedef struct RelBatch RelBatch;

typedef struct Batch {
	RelBatch *rels;   /* tables with pending changes */
	int64_t nchanges; /* changes added since the last flush */
	int64_t nrows;    /* rows they reduce to */
	int64_t bytes;    /* memory held */
	int ntemps;
	char **temps; /* temporary tables made this session: "relid:mask" keys */
} Batch;

void batch_init(Batch *batch);
void batch_free(Batch *batch);

/*
 * Whether rel's updates and deletes can be batched: it has key columns.
 * Inserts into any table can be; updates and deletes of a keyless table
 * (REPLICA IDENTITY FULL) are applied one at a time, after the batch.
 */
bool batch_relation_ok(const RelCacheEntry *rel);

/* The changes; the tuple bytes are copied.  False only when out of memory. */
bool batch_insert(Batch *batch, const RelCacheEntry *rel, const PgoutputTuple *tup) __attribute__((warn_unused_result));
bool batch_update(Batch *batch, const RelCacheEntry *rel, const PgoutputTuple *tup) __attribute__((warn_unused_result));
bool batch_delete(Batch *batch, const RelCacheEntry *rel, const PgoutputTuple *key) __attribute__((warn_unused_result));

/* Applies every pending row on target (inside its open transaction) and empties the batch. */
bool batch_flush(Batch *batch, ReplConn *target, const char *subject) __attribute__((warn_unused_result));

/* A table's columns changed: its temporary tables are dropped with the next flush's transaction. */
void batch_forget_relation(Batch *batch, uint32_t relid);

#endif
