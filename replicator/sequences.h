/*
 * Sequences are not carried by logical replication: their values are copied
 * from the source to the target now and then while streaming (so the target
 * is close), and exactly at cutover.
 */
#ifndef PGHANDOFF_REPLICATOR_SEQUENCES_H
#define PGHANDOFF_REPLICATOR_SEQUENCES_H

#include <stdbool.h>

#include "replicator/conn.h"

/* Copies every sequence's last_value and is_called; *count says how many. */
bool sequences_sync(ReplConn *source, ReplConn *target, int *count) __attribute__((warn_unused_result));

#endif
