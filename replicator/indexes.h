/*
 * The post-data section of the schema archive, restored after the initial
 * copy with the indexes of each table built side by side.
 */
#ifndef PGHANDOFF_REPLICATOR_INDEXES_H
#define PGHANDOFF_REPLICATOR_INDEXES_H

#include <stdbool.h>

#include "config/config.h"
#include "replicator/conn.h"

/*
 * Builds the archive's indexes and primary key / unique constraints of plain
 * tables on copy_jobs target connections at once (their definitions read
 * from source), then restores the rest of post-data with pg_restore.
 */
bool indexes_restore_post_data(const Config *config, const DatabaseMapping *db, ReplConn *source, const char *archive,
			       const char *subject) __attribute__((warn_unused_result));

#endif
