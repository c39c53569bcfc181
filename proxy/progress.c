/*
 * The follower's progress file, read for SHOW REPLICATION and the metrics.
 * Lag in seconds is the age of the last source commit applied, while the
 * follower is behind; 0 once everything received is applied.
 */
#include "proxy/progress.h"
#include "proxy/replprobe.h"
#include "replicator/status.h"

#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static double
number(const StatusValues *v, const char *key)
{
	char buf[64];

	return status_copy_value(v, key, buf, sizeof(buf)) ? strtod(buf, NULL) : 0.0;
}

/* A probe older than this is not shown: the source stopped answering. */
#define PROBE_FRESH_S 10.0
/* A streaming follower writes its file at least every 10 s (its feedback interval): three times that is stalled. */
#define STREAMING_STALLED_S 30.0

/* The file's own end states: a follower that wrote them went away on purpose. */
static bool
phase_is_final(const char *phase)
{
	return strcmp(phase, "stopped") == 0 || strcmp(phase, "failed") == 0;
}

/*
 * The process is gone, or dead and not yet reaped by a parent that is
 * itself stopped or hung (a zombie).  The proxy shares the follower's pid
 * namespace, as `pghandoff run` starts it; elsewhere a pid that does not
 * exist here is no evidence, and one that does is left alone.
 */
static bool
process_gone(int pid)
{
	char path[64], stat[512];
	const char *close_paren;
	FILE *f;
	size_t n;

	if (pid <= 0)
		return false;
	if (kill(pid, 0) != 0)
		return errno == ESRCH;
	snprintf(path, sizeof(path), "/proc/%d/stat", pid);
	f = fopen(path, "r");
	if (!f)
		return false;
	n = fread(stat, 1, sizeof(stat) - 1, f);
	fclose(f);
	stat[n] = '\0';
	/* "pid (comm) state ...": comm may hold anything, so the state follows the last ')'. */
	close_paren = strrchr(stat, ')');
	return close_paren && close_paren[1] == ' ' && close_paren[2] == 'Z';
}

static void
merge_probe(const Proxy *proxy, const Database *db, ReplProgress *p, double now)
{
	ReplProbeValues v;

	replprobe_get(proxy, (int) (db - proxy->databases), &v);
	if (!v.have || now - v.at > PROBE_FRESH_S)
		return;
	p->probed = true;
	snprintf(p->slot, sizeof(p->slot), "%s", !v.slot_exists ? "missing" : v.slot_active ? "active" : "inactive");
	snprintf(p->origin_lsn, sizeof(p->origin_lsn), "%s", v.origin_lsn);
	if (v.slot_exists) {
		p->slot_lag_bytes = v.slot_lag_bytes;
		if (v.slot_lag_bytes > p->lag_bytes)
			p->lag_bytes = v.slot_lag_bytes;
	}
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
		(void) status_copy_value(&v, "fence_violation", p->fence_violation, sizeof(p->fence_violation));
		p->age_seconds = now - number(&v, "updated_at");
		p->tables_done = number(&v, "tables_done");
		p->tables_total = number(&v, "tables_total");
		p->bytes_done = number(&v, "bytes_done");
		p->bytes_total = number(&v, "bytes_total");
		p->lag_bytes = number(&v, "lag_bytes");
		p->apply_rate = number(&v, "apply_rate");
		p->changes = number(&v, "changes");
		{
			char count[32];

			/* Absent until the follower's first diff. */
			p->large_objects =
				status_copy_value(&v, "large_objects", count, sizeof(count)) ? strtod(count, NULL) : -1;
			p->large_objects_in_step = number(&v, "large_objects_in_step");
		}
		{
			char lsn[32];

			p->ddl_stopped =
				status_copy_value(&v, "ddl_stopped_lsn", lsn, sizeof(lsn)) && strcmp(lsn, "0/0") != 0;
		}
		started = number(&v, "copy_started");
		if (strcmp(p->follower, "copy") == 0 && started > 0 && now > started) {
			p->copy_rate = p->bytes_done / (now - started);
			/* Sizes on disk are an estimate of what COPY sends: never promise less than a second. */
			if (p->copy_rate > 0)
				p->eta_seconds = p->bytes_total > p->bytes_done
					? (p->bytes_total - p->bytes_done) / p->copy_rate
					: 1.0;
		}
		if (!number(&v, "caught_up") && number(&v, "last_commit") > 0)
			p->lag_seconds = now - number(&v, "last_commit");
		p->pid = (int) number(&v, "pid");
		p->down = !phase_is_final(p->follower) && process_gone(p->pid);
	}
	merge_probe(proxy, db, p, now);
	/* Above all else: the follower refuses to go on. */
	if (p->fence_violation[0])
		snprintf(p->phase, sizeof(p->phase), "%.*s", (int) strcspn(p->fence_violation, ":"),
			 p->fence_violation);
	else if (p->down)
		snprintf(p->phase, sizeof(p->phase), "down");
	else if (proxy->serving == &proxy->target)
		snprintf(p->phase, sizeof(p->phase), "cut over");
	else if (!p->have)
		snprintf(p->phase, sizeof(p->phase), "unknown");
	else if (p->ddl_stopped)
		snprintf(p->phase, sizeof(p->phase), "stopped at DDL");
	else if (strcmp(p->follower, "streaming") == 0 && proxy->rolled_back)
		snprintf(p->phase, sizeof(p->phase), "rolled back");
	else if (strcmp(p->follower, "streaming") == 0 && p->age_seconds > STREAMING_STALLED_S)
		snprintf(p->phase, sizeof(p->phase), "stalled");
	else if (strcmp(p->follower, "streaming") == 0 && p->lag_bytes > (double) proxy->config.cutover.max_lag)
		snprintf(p->phase, sizeof(p->phase), "catch-up");
	else
		snprintf(p->phase, sizeof(p->phase), "%s", p->follower);
}
