/*
 * Where each database's migration stands, as the proxy sees it: the
 * follower's progress file (replicator/status.h) read and combined with the
 * proxy's own state (a cutover or a rollback happened).  SHOW REPLICATION and
 * the metrics both show it.
 */
#ifndef PGHANDOFF_PROXY_PROGRESS_H
#define PGHANDOFF_PROXY_PROGRESS_H

#include <stdbool.h>

#include "proxy/objects.h"

typedef struct ReplProgress {
	bool have;		/* a progress file was there */
	char phase[32];		/* starting, schema, copy, indexes, catch-up, streaming, retrying, stopped,
				 * failed, cut over, rolled back, unknown */
	char follower[32];	/* the follower's own phase, "" without a file */
	char applied_lsn[32];
	double tables_done;
	double tables_total;
	double bytes_done;
	double bytes_total;
	double copy_rate;	/* bytes per second since the copy began */
	double eta_seconds;	/* -1 when unknown */
	double lag_bytes;
	double lag_seconds;
	double apply_rate;	/* changes per second */
	double changes;		/* applied since the follower started */
	double age_seconds;	/* since the file was written */
	bool ddl_stopped;	/* stopped at a schema change it could not replay */
} ReplProgress;

void progress_read(const Proxy *proxy, const Database *db, ReplProgress *p);

#endif
