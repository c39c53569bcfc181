/*
 * The initial copy: every table of a source database, as of the snapshot
 * exported with the replication slot, into the target, copy_jobs tables at
 * a time, largest first, large tables split into ctid ranges.  Data flows
 * from COPY TO STDOUT straight into COPY FROM STDIN; nothing touches disk.
 */
#ifndef PGHANDOFF_REPLICATOR_COPY_H
#define PGHANDOFF_REPLICATOR_COPY_H

#include <stdbool.h>
#include <stdint.h>

#include "config/config.h"
#include "replicator/conn.h"

typedef struct CopyProgress {
	int tables_total;
	int tables_done;
	int64_t bytes_total; /* estimated from relation sizes */
	int64_t bytes_done;
	int64_t rows_done;
	struct ReplStatus *status; /* where progress is published, or NULL */
} CopyProgress;

/*
 * Copies every table; source lists them (inside no snapshot: the list only).
 * via_root: the rows of each partition go into its root table on the target.
 */
bool copy_database(const Config *config, const DatabaseMapping *db, ReplConn *source, const char *snapshot,
		   bool via_root, const char *subject, CopyProgress *progress) __attribute__((warn_unused_result));

#endif
