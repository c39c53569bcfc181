/*
 * The objects a follower streams through, whichever way it runs: the
 * publication and the logical slot on the cluster changes come from, the
 * replication origin on the cluster they are applied to.  Every function
 * takes a plain connection to the right database, logs its error once with
 * that connection's subject, and returns false.
 */
#ifndef PGHANDOFF_REPLICATOR_SLOTS_H
#define PGHANDOFF_REPLICATOR_SLOTS_H

#include <stdbool.h>
#include <stdint.h>

#include "replicator/conn.h"

/*
 * Whether origin exists, and its progress as the database's data stands
 * (flush = false): data and progress come from the same WAL, so after a
 * crash both are what recovery kept.  0 when it has none.
 */
bool slots_origin_state(ReplConn *conn, const char *origin, bool *exists, uint64_t *progress)
	__attribute__((warn_unused_result));
bool slots_create_origin(ReplConn *conn, const char *origin) __attribute__((warn_unused_result));
bool slots_advance_origin(ReplConn *conn, const char *origin, uint64_t lsn) __attribute__((warn_unused_result));
/* Drops origin if it exists. */
bool slots_drop_origin(ReplConn *conn, const char *origin) __attribute__((warn_unused_result));

/* publish_via_partition_root exists from this server_version_num on. */
#define PUBVIAROOT_MIN_VERSION 130000

/*
 * Creates publication FOR ALL TABLES unless one of that name exists; with
 * via_root, changes to partitions are published as changes to their
 * topmost root table (publish_via_partition_root, PostgreSQL 13).
 */
bool slots_ensure_publication(ReplConn *conn, const char *publication, bool via_root)
	__attribute__((warn_unused_result));
/* Whether publication exists, and whether it publishes partitions through their roots. */
bool slots_publication_state(ReplConn *conn, const char *publication, bool *exists, bool *via_root)
	__attribute__((warn_unused_result));
/* Drops publication if it exists. */
bool slots_drop_publication(ReplConn *conn, const char *publication) __attribute__((warn_unused_result));

/*
 * Creates a pgoutput slot from SQL (no snapshot exported); *lsn is its
 * consistent point, where streaming from it begins.
 */
bool slots_create_slot(ReplConn *conn, const char *slot, uint64_t *lsn) __attribute__((warn_unused_result));
/*
 * Drops slot if it exists.  With terminate, a walsender streaming from it is
 * ended first and waited for, since an active slot cannot be dropped.
 */
bool slots_drop_slot(ReplConn *conn, const char *slot, bool terminate) __attribute__((warn_unused_result));
/* Whether slot exists. */
bool slots_slot_exists(ReplConn *conn, const char *slot, bool *exists) __attribute__((warn_unused_result));
/*
 * Before an initial sync: a slot of that name that nobody streams from was
 * left by an earlier attempt and only holds WAL, so it is dropped (with a
 * warning); one in use belongs to a follower still running, perhaps another
 * migration's, and makes this fail instead.
 */
bool slots_drop_stale_slot(ReplConn *conn, const char *slot) __attribute__((warn_unused_result));

#endif
