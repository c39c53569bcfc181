/*
 * The replication probe (replprobe.h): a thread with a blocking libpq
 * connection to each cluster, so that a cluster slow to answer never holds
 * the event loop.  Every query is bounded (connect_timeout,
 * statement_timeout), so stopping waits a few seconds at most.  What it
 * learns is kept under the probe's lock and read by the loop.
 */
#include "proxy/replprobe.h"
#include "common/clock.h"
#include "common/log.h"
#include "proxy/objects.h"
#include "replicator/names.h"
#include "replicator/status.h"

#include <errno.h>
#include <libpq-fe.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define PROBE_INTERVAL_S 1
#define PROBE_CONNECT_TIMEOUT "5"
#define PROBE_OPTIONS "-c statement_timeout=5000"

typedef struct ReplProbe {
	pthread_t thread;
	const Config *config; /* read only while the thread runs */
	int ndatabases;
	pthread_mutex_t lock;
	pthread_cond_t wake;
	bool stop;               /* under lock */
	ReplProbeValues *values; /* under lock: one per database */
	/* The thread's own. */
	PGconn *source;
	PGconn *target;
	bool failing; /* the last round failed: said once, until it works again */
} ReplProbe;

static PGconn *
probe_connect(const ServerConfig *server, const char *dbname)
{
	const char *keywords[CONFIG_MAX_CONN_PARAMS + 4];
	const char *values[CONFIG_MAX_CONN_PARAMS + 4];
	PGconn *conn;
	int n = 0;

	config_conn_params(server, dbname, "pghandoff probe", keywords, values);
	while (keywords[n])
		n++;
	keywords[n] = "connect_timeout";
	values[n++] = PROBE_CONNECT_TIMEOUT;
	keywords[n] = "options";
	values[n++] = PROBE_OPTIONS;
	keywords[n] = NULL;
	values[n] = NULL;
	conn = PQconnectdbParams(keywords, values, 1);
	if (conn && PQstatus(conn) == CONNECTION_OK)
		return conn;
	log_debug("probe", "could not connect to the %s database %s: %.*s", server->role, dbname,
		  conn ? (int) strcspn(PQerrorMessage(conn), "\n") : 13, conn ? PQerrorMessage(conn) : "out of memory");
	PQfinish(conn);
	return NULL;
}

/* Runs sql on *conn; a broken connection is closed, to be opened again next round. */
static PGresult *
probe_query(PGconn **conn, const char *role, const char *sql, int nparams, const char *const *params)
{
	PGresult *res = PQexecParams(*conn, sql, nparams, NULL, params, NULL, NULL, 0);

	if (PQresultStatus(res) == PGRES_TUPLES_OK)
		return res;
	log_debug("probe", "%s: %.*s", role, (int) strcspn(PQerrorMessage(*conn), "\n"), PQerrorMessage(*conn));
	PQclear(res);
	if (PQstatus(*conn) != CONNECTION_OK) {
		PQfinish(*conn);
		*conn = NULL;
	}
	return NULL;
}

/* One round: every database's slot on the source and origin on the target.  False when the source failed. */
static bool
probe_round(ReplProbe *p)
{
	const Config *config = p->config;
	int i;

	/*
	 * Only once a follower has run (its progress file exists): a proxy in
	 * front of a database nothing replicates yet opens no connection of
	 * its own to the clusters.
	 */
	for (i = 0; i < config->ndatabases; i++) {
		char path[1024];

		status_path(config, config->databases[i].name, path, sizeof(path));
		if (access(path, F_OK) == 0)
			break;
	}
	if (i == config->ndatabases)
		return true;

	/*
	 * Slots and origins are per cluster: any database reaches them.  The
	 * maintenance database first, so that the probe is no session of an
	 * application's database; else the first migrated one.
	 */
	if (!p->source)
		p->source = probe_connect(&config->source, "postgres");
	if (!p->source)
		p->source = probe_connect(&config->source, config->databases[0].name);
	if (!p->target)
		p->target = probe_connect(&config->target, "postgres");
	if (!p->target)
		p->target = probe_connect(&config->target, config->databases[0].target_name);
	if (!p->source)
		return false;
	for (i = 0; i < p->ndatabases; i++) {
		ReplNames names;
		ReplProbeValues v;
		const char *params[1];
		PGresult *res;

		memset(&v, 0, sizeof(v));
		replicate_names(config, &config->databases[i], &names);
		params[0] = names.slot;
		res = probe_query(&p->source, config->source.role,
				  "SELECT active, greatest(pg_wal_lsn_diff(pg_current_wal_lsn(), confirmed_flush_lsn), 0) "
				  "FROM pg_replication_slots WHERE slot_name = $1",
				  1, params);
		if (!res)
			return false;
		v.have = true;
		v.at = clock_unix();
		if (PQntuples(res) == 1) {
			v.slot_exists = true;
			v.slot_active = strcmp(PQgetvalue(res, 0, 0), "t") == 0;
			v.slot_lag_bytes = strtod(PQgetvalue(res, 0, 1), NULL);
		}
		PQclear(res);
		params[0] = names.origin;
		res = p->target ? probe_query(&p->target, config->target.role,
					      "SELECT coalesce(remote_lsn::text, '') FROM pg_replication_origin_status "
					      "WHERE external_id = $1",
					      1, params)
				: NULL;
		if (res && PQntuples(res) == 1) {
			v.origin_exists = true;
			snprintf(v.origin_lsn, sizeof(v.origin_lsn), "%s", PQgetvalue(res, 0, 0));
		}
		PQclear(res);
		pthread_mutex_lock(&p->lock);
		p->values[i] = v;
		pthread_mutex_unlock(&p->lock);
	}
	return true;
}

static void *
probe_main(void *arg)
{
	ReplProbe *p = arg;

	for (;;) {
		struct timespec until;
		bool ok = probe_round(p);

		if (!ok && !p->failing)
			log_warning("probe",
				    "could not read the replication slots on the source (see the debug log); "
				    "status shows the follower's own progress until it can");
		else if (ok && p->failing)
			log_info("probe", "reading the replication slots on the source again");
		p->failing = !ok;
		clock_gettime(CLOCK_REALTIME, &until);
		until.tv_sec += PROBE_INTERVAL_S;
		pthread_mutex_lock(&p->lock);
		while (!p->stop && pthread_cond_timedwait(&p->wake, &p->lock, &until) != ETIMEDOUT)
			;
		if (p->stop) {
			pthread_mutex_unlock(&p->lock);
			break;
		}
		pthread_mutex_unlock(&p->lock);
	}
	PQfinish(p->source);
	PQfinish(p->target);
	return NULL;
}

bool
replprobe_start(Proxy *proxy)
{
	ReplProbe *p = calloc(1, sizeof(*p));
	int rc;

	if (p)
		p->values = calloc((size_t) proxy->ndatabases + 1, sizeof(ReplProbeValues));
	if (!p || !p->values) {
		log_error("proxy", "out of memory");
		free(p);
		return false;
	}
	p->config = &proxy->config;
	p->ndatabases = proxy->ndatabases;
	pthread_mutex_init(&p->lock, NULL);
	pthread_cond_init(&p->wake, NULL);
	rc = pthread_create(&p->thread, NULL, probe_main, p);
	if (rc != 0) {
		log_error("proxy", "could not start the replication probe: %s", strerror(rc));
		pthread_mutex_destroy(&p->lock);
		pthread_cond_destroy(&p->wake);
		free(p->values);
		free(p);
		return false;
	}
	proxy->probe = p;
	return true;
}

void
replprobe_stop(Proxy *proxy)
{
	ReplProbe *p = proxy->probe;

	if (!p)
		return;
	pthread_mutex_lock(&p->lock);
	p->stop = true;
	pthread_cond_signal(&p->wake);
	pthread_mutex_unlock(&p->lock);
	(void) pthread_join(p->thread, NULL);
	pthread_mutex_destroy(&p->lock);
	pthread_cond_destroy(&p->wake);
	free(p->values);
	free(p);
	proxy->probe = NULL;
}

void
replprobe_get(const Proxy *proxy, int i, ReplProbeValues *values)
{
	ReplProbe *p = proxy->probe;

	memset(values, 0, sizeof(*values));
	if (!p || i < 0 || i >= p->ndatabases)
		return;
	pthread_mutex_lock(&p->lock);
	*values = p->values[i];
	pthread_mutex_unlock(&p->lock);
}
