/*
 * The follower's progress file, read for SHOW REPLICATION and the metrics.
 * Lag in seconds is the age of the last source commit applied, while the
 * follower is behind; 0 once everything received is applied.
 */
#include "proxy/progress.h"
#include "replicator/status.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static double
number(const StatusValues *v, const char *key)
{
	char buf[64];

	return status_copy_value(v, key, buf, sizeof(buf)) ? strtod(buf, NULL) : 0.0;
}

void
progress_read(const Proxy *proxy, const Database *db, ReplProgress *p)
{
	char path[4096];
	StatusValues v;
	double now = ev_time(), started;

	memset(p, 0, sizeof(*p));
	p->eta_seconds = -1;
	status_path(&proxy->config, db->name, path, sizeof(path));
	p->have = path[0] && status_read(path, &v);
	if (p->have) {
		(void) status_copy_value(&v, "phase", p->follower, sizeof(p->follower));
		(void) status_copy_value(&v, "applied_lsn", p->applied_lsn, sizeof(p->applied_lsn));
		p->age_seconds = now - number(&v, "updated_at");
		p->tables_done = number(&v, "tables_done");
		p->tables_total = number(&v, "tables_total");
		p->bytes_done = number(&v, "bytes_done");
		p->bytes_total = number(&v, "bytes_total");
		p->lag_bytes = number(&v, "lag_bytes");
		p->apply_rate = number(&v, "apply_rate");
		p->changes = number(&v, "changes");
		{
			char lsn[32];

			p->ddl_stopped = status_copy_value(&v, "ddl_stopped_lsn", lsn, sizeof(lsn)) && strcmp(lsn, "0/0") != 0;
		}
		started = number(&v, "copy_started");
		if (strcmp(p->follower, "copy") == 0 && started > 0 && now > started) {
			p->copy_rate = p->bytes_done / (now - started);
			/* Sizes on disk are an estimate of what COPY sends: never promise less than a second. */
			if (p->copy_rate > 0)
				p->eta_seconds = p->bytes_total > p->bytes_done ? (p->bytes_total - p->bytes_done) / p->copy_rate
										: 1.0;
		}
		if (!number(&v, "caught_up") && number(&v, "last_commit") > 0)
			p->lag_seconds = now - number(&v, "last_commit");
	}
	if (proxy->serving == &proxy->target)
		snprintf(p->phase, sizeof(p->phase), "cut over");
	else if (!p->have)
		snprintf(p->phase, sizeof(p->phase), "unknown");
	else if (p->ddl_stopped)
		snprintf(p->phase, sizeof(p->phase), "stopped at DDL");
	else if (strcmp(p->follower, "streaming") == 0 && proxy->rolled_back)
		snprintf(p->phase, sizeof(p->phase), "rolled back");
	else if (strcmp(p->follower, "streaming") == 0 && p->lag_bytes > (double) proxy->config.cutover.max_lag)
		snprintf(p->phase, sizeof(p->phase), "catch-up");
	else
		snprintf(p->phase, sizeof(p->phase), "%s", p->follower);
}
