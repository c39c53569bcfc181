/*
 * Each database's replication as the clusters see it, whatever the
 * follower's progress file says: a thread of the proxy asks the source how
 * far the slot's confirmed position is behind its end of WAL, and the
 * target where the origin stands, about once a second.  A follower that is
 * stopped, hung or dead writes no progress, but its slot falls behind all
 * the same: SHOW REPLICATION, `pghandoff status` and the metrics read both.
 */
#ifndef PGHANDOFF_PROXY_REPLPROBE_H
#define PGHANDOFF_PROXY_REPLPROBE_H

#include <stdbool.h>
#include <stdint.h>

typedef struct Proxy Proxy;

typedef struct ReplProbeValues {
	bool have; /* the source answered for this database */
	double at; /* unix seconds of that answer */
	bool slot_exists;
	bool slot_active;      /* a walsender streams from it */
	double slot_lag_bytes; /* the source's end of WAL less the slot's confirmed_flush_lsn, >= 0 */
	bool origin_exists;    /* on the target */
	char origin_lsn[32];   /* its remote_lsn, "" when unknown */
} ReplProbeValues;

/* Starts the thread; false (logged) when it cannot be. */
bool replprobe_start(Proxy *proxy) __attribute__((warn_unused_result));
/* Stops it and waits; its queries are bounded by statement_timeout and connect_timeout. */
void replprobe_stop(Proxy *proxy);
/* The latest values for database i; have is false before the first answer. */
void replprobe_get(const Proxy *proxy, int i, ReplProbeValues *values);

#endif
