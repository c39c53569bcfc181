/*
 * Where each database's migration stands, as the proxy sees it: the
 * follower's progress file (replicator/status.h) read and combined with the
 * slot and origin as the clusters report them (replprobe.h) and the proxy's
 * own state (a cutover or a rollback happened).  SHOW REPLICATION and the
 * metrics both show it.  lag_bytes is the larger of the follower's own
 * figure and the slot's: a follower that is stopped or dead reports nothing,
 * but its slot falls behind.
 */
#ifndef PGHANDOFF_PROXY_PROGRESS_H
#define PGHANDOFF_PROXY_PROGRESS_H

#include <stdbool.h>

#include "proxy/objects.h"

typedef struct ReplProgress {
	bool have;         /* a progress file was there */
	char phase[32];    /* starting, schema, copy, indexes, catch-up, streaming, retrying, stopped,
				 * failed, down, stalled, cut over, rolled back, unknown, source (target) written after fence */
	char follower[32]; /* the follower's own phase, "" without a file */
	char applied_lsn[32];
	char fence_violation[200]; /* "source written after fence: transaction ..." (replicator/fence.h), or "" */
	double tables_done;
	double tables_total;
	double bytes_done;
	double bytes_total;
	double copy_rate;   /* bytes per second since the copy began */
	double eta_seconds; /* -1 when unknown */
	double lag_bytes;
	double lag_seconds;
	double apply_rate;  /* changes per second */
	double changes;     /* applied since the follower started */
	double age_seconds; /* since the file was written */
	int pid;            /* the follower's process, 0 when unknown */
	bool down;          /* the file names a process that is gone without saying it stopped */
	/* From the clusters (replprobe.h), whatever the file says; probed false when not known lately. */
	bool probed;
	char slot[16];         /* active, inactive, missing; "" when not probed */
	double slot_lag_bytes; /* the source's end of WAL less the slot's confirmed position */
	/* From the file: the follower's last diff of the large objects (replicator/largeobj.h). */
	double large_objects;         /* on the source, -1 before a first diff */
	double large_objects_in_step; /* of those, equal on the target */
	char origin_lsn[32];          /* the target's origin remote_lsn, "" when unknown */
	bool ddl_stopped;             /* stopped at a schema change it could not replay */
} ReplProgress;

void progress_read(const Proxy *proxy, const Database *db, ReplProgress *p);

#endif
