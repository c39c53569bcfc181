/*
 * How partitioned tables are published.  Per partition (the default) needs
 * every partition of the source on the target, under the same root: true
 * whenever the replicator restored the schema itself (schema = copy).  A
 * target the DBA made (schema = none) may partition differently; then the
 * publication publishes each partition's changes as changes to its root
 * table, and the target routes them into its own partitions.
 */
#ifndef PGHANDOFF_REPLICATOR_PARTITIONS_H
#define PGHANDOFF_REPLICATOR_PARTITIONS_H

#include <stdbool.h>

#include "config/config.h"
#include "replicator/conn.h"

/*
 * Sets *via_root for the forward publication of one database.  An existing
 * publication keeps the way it was made with (a restart does not decide
 * again); a new one is published through the roots when schema = none and
 * some partitioned table of the source has other partitions on the target.
 * Either way with schema = none, the target is checked against the choice:
 * false (logged) when a publication per partition meets a target that
 * partitions differently, when the source is too old to publish through
 * the roots, or when a partitioned table to publish through its root has
 * no replica identity of its own.  Every table replicated through its root
 * because of a difference is named in a warning.
 */
bool partitions_publish_mode(const Config *config, ReplConn *source, ReplConn *target, const char *publication,
			     bool *via_root, const char *subject) __attribute__((warn_unused_result));

#endif
