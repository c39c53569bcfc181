/*
 * The follower's progress where other processes can read it: one small file
 * per database next to the proxy's state_file ("<state_file>-replication-
 * <database>"), rewritten at most once a second (and at each change of
 * phase), atomically.  The proxy's SHOW REPLICATION, `pghandoff status` and
 * the metrics read it; the follower may run in the proxy's process tree
 * (`pghandoff run`) or anywhere that shares the file system.
 *
 * The file is "key value" lines; readers ignore keys they do not know.
 */
#ifndef PGHANDOFF_REPLICATOR_STATUS_H
#define PGHANDOFF_REPLICATOR_STATUS_H

#include <pthread.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "config/config.h"

typedef struct ReplStatus {
	pthread_mutex_t lock;
	char path[4096];
	const char *phase; /* starting, schema, copy, indexes, streaming, retrying, stopped, failed */
	int tables_total;
	int tables_done;
	int64_t bytes_total;
	int64_t bytes_done; /* bytes streamed so far, finished tasks and running ones */
	int64_t rows_done;
	double copy_started; /* unix seconds */
	uint64_t received_lsn;
	uint64_t applied_lsn;   /* committed on the target */
	uint64_t wal_end;       /* the source's end of WAL, as it last said */
	int64_t last_commit_us; /* unix microseconds: the source commit of the last transaction applied */
	int64_t xacts;
	int64_t changes;
	double last_write;
	int64_t rate_changes; /* changes at the last rate sample */
	double rate_at;
	double apply_rate;         /* changes per second */
	char fence_violation[200]; /* the transaction refused as written after the fence, "" for none */
	uint64_t ddl_stopped_lsn;  /* a schema change that could not be replayed stops the follower here; 0: none */
	int large_objects;         /* on the source at the last diff (largeobj.h); -1 before one */
	int large_objects_in_step; /* of those, equal on the target */
} ReplStatus;

/* The file for db under config; "" when state_file is empty. */
void status_path(const Config *config, const char *dbname, char *buf, size_t len);

void status_init(ReplStatus *st, const Config *config, const char *dbname);
void status_destroy(ReplStatus *st);
/* Written at once. */
void status_phase(ReplStatus *st, const char *phase);
/* Copy progress; workers call these concurrently. */
void status_copy_plan(ReplStatus *st, int tables, int64_t bytes);
void status_copy_bytes(ReplStatus *st, int64_t bytes);
void status_copy_table_done(ReplStatus *st);
/* Streaming progress, from the stream loop; written at most once a second. */
void status_stream(ReplStatus *st, uint64_t received, uint64_t applied, uint64_t wal_end, int64_t last_commit_us,
		   int64_t xacts, int64_t changes);

/* The last diff of the large objects: how many, and how many in step.  Written when they change. */
void status_large_objects(ReplStatus *st, int total, int in_step);

/* A transaction refused as written after the fence (replicator/fence.h); "" once one is applied again. Written at once. */
void status_fence_violation(ReplStatus *st, const char *what);
/* The follower stopped at the schema change captured at lsn (ddl.h); cleared once applying gets past it. */
void status_ddl_stopped(ReplStatus *st, uint64_t lsn);
/* Transactions up to committed are applied: a stop at a schema change before it is over. */
void status_ddl_passed(ReplStatus *st, uint64_t committed);

/* Reading (the proxy): the file's contents, then one value by key, copied; false when missing. */
typedef struct StatusValues {
	char text[2048];
} StatusValues;
bool status_read(const char *path, StatusValues *values);
bool status_copy_value(const StatusValues *values, const char *key, char *buf, size_t len);

#endif
