/*
 * The way back after a cutover: while clients write to the target, a
 * reverse follower streams their changes into the fenced source, so a
 * rollback moves them back to a source that misses nothing.  It runs beside
 * the forward follower, and each skips what the other applied.
 */
#ifndef PGHANDOFF_REPLICATOR_REVERSE_H
#define PGHANDOFF_REPLICATOR_REVERSE_H

#include <stdbool.h>

#include "config/config.h"

/*
 * On the target database (db->target_name): the publication FOR ALL TABLES
 * and a logical slot (pgoutput) the reverse follower reads, created now, at
 * a moment the cutover guarantees both sides hold the same data; on the
 * source database the replication origin it advances, starting at the
 * slot's consistent point.  Existing ones from an earlier attempt are
 * dropped and made again.
 */
bool reverse_prepare(const Config *config, const DatabaseMapping *db, const char *subject)
	__attribute__((warn_unused_result));

/* Drops the reverse slot (ending its walsender first, as --drop does), publication and origin. */
bool reverse_drop(const Config *config, const DatabaseMapping *db, const char *subject)
	__attribute__((warn_unused_result));

/*
 * `pghandoff replicate --reverse` for one database: streams from the
 * prepared slot into the source until stopped, with the forward follower's
 * applier and retries.  No schema and no copy: reverse_prepare made the
 * slot when both sides were equal.  Exit status.
 */
int reverse_run(const Config *config, const DatabaseMapping *db);

#endif
