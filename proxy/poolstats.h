/*
 * What a pool holds, counted one way for SHOW POOLS (admin.c) and the
 * metrics (metrics.c): PgBouncer's columns, read from the proxy's lists
 * without changing anything.  It reads struct Pool but calls nothing in
 * pool.c, so metrics.c, which server.c calls, reaches no file that calls back.
 */
#ifndef PGHANDOFF_PROXY_POOLSTATS_H
#define PGHANDOFF_PROXY_POOLSTATS_H

#include "proxy/objects.h"

typedef struct PoolStats {
	int cl_active;  /* clients with a server connection, or between transactions */
	int cl_waiting; /* clients waiting for a server connection */
	int sv_active;  /* server connections serving a client */
	int sv_idle;    /* idle on the cluster served, used within server_check_delay */
	int sv_used;    /* idle on the cluster served, past server_check_delay */
	int sv_tested;  /* running the reset or check query */
	int sv_login;   /* logging in to the cluster served, a cutover's standbys excepted */
	double maxwait; /* seconds the longest waiting client has waited, 0 with none */
	PoolMode mode;
} PoolStats;

void poolstats_count(const Proxy *proxy, const Pool *pool, PoolStats *stats);
/* "session" or "transaction", as SHOW POOLS and pool_mode spell it. */
const char *poolstats_mode_name(PoolMode mode);

#endif
