/*
 * The follower's progress file: written by the follower's threads under one
 * lock, read by the proxy.  Writes go to a temporary file renamed over the
 * old one, so a reader never sees half a file.
 */
#include "replicator/status.h"
#include "common/clock.h"
#include "common/log.h"
#include "replicator/pgoutput.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

void
status_path(const Config *config, const char *dbname, char *buf, size_t len)
{
	const char *state = config->proxy.state_file;

	if (!state || !state[0])
		buf[0] = '\0';
	else
		snprintf(buf, len, "%s-replication-%s", state, dbname);
}

void
status_init(ReplStatus *st, const Config *config, const char *dbname)
{
	memset(st, 0, sizeof(*st));
	pthread_mutex_init(&st->lock, NULL);
	status_path(config, dbname, st->path, sizeof(st->path));
	st->phase = "starting";
	st->large_objects = -1;
}

void
status_destroy(ReplStatus *st)
{
	pthread_mutex_destroy(&st->lock);
}

/* Under st->lock. */
static void
write_file(ReplStatus *st, double now)
{
	char tmp[sizeof(st->path) + 8], text[1024], received[LSN_FORMAT_LEN], applied[LSN_FORMAT_LEN],
		walend[LSN_FORMAT_LEN], ddl_stopped[LSN_FORMAT_LEN];
	int fd, len;

	st->last_write = now;
	if (!st->path[0])
		return;
	if (now - st->rate_at >= 1.0) {
		st->apply_rate = st->rate_at > 0 ? (double) (st->changes - st->rate_changes) / (now - st->rate_at) : 0;
		st->rate_changes = st->changes;
		st->rate_at = now;
	}
	lsn_format(st->received_lsn, received, sizeof(received));
	lsn_format(st->applied_lsn, applied, sizeof(applied));
	lsn_format(st->wal_end, walend, sizeof(walend));
	lsn_format(st->ddl_stopped_lsn, ddl_stopped, sizeof(ddl_stopped));
	len = snprintf(text, sizeof(text),
		       "phase %s\npid %d\nupdated_at %.3f\ntables_total %d\ntables_done %d\nbytes_total %lld\n"
		       "bytes_done %lld\nrows_done %lld\ncopy_started %.3f\nreceived_lsn %s\napplied_lsn %s\nwal_end %s\n"
		       "lag_bytes %lld\nlast_commit %.6f\ncaught_up %d\nxacts %lld\nchanges %lld\napply_rate %.1f\n"
		       "ddl_stopped_lsn %s\n",
		       st->phase, (int) getpid(), now, st->tables_total, st->tables_done, (long long) st->bytes_total,
		       (long long) st->bytes_done, (long long) st->rows_done, st->copy_started, received, applied,
		       walend, (long long) (st->wal_end > st->applied_lsn ? st->wal_end - st->applied_lsn : 0),
		       (double) st->last_commit_us / 1e6,
		       st->applied_lsn >= st->received_lsn && st->received_lsn >= st->wal_end, (long long) st->xacts,
		       (long long) st->changes, st->apply_rate, ddl_stopped);
	if (st->large_objects >= 0 && len > 0 && len < (int) sizeof(text))
		len += snprintf(text + len, sizeof(text) - (size_t) len, "large_objects %d\nlarge_objects_in_step %d\n",
				st->large_objects, st->large_objects_in_step);
	if (st->fence_violation[0] && len > 0 && len < (int) sizeof(text))
		len += snprintf(text + len, sizeof(text) - (size_t) len, "fence_violation %s\n", st->fence_violation);
	if (len < 0 || len >= (int) sizeof(text))
		len = (int) strlen(text);
	snprintf(tmp, sizeof(tmp), "%s.tmp", st->path);
	fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
	if (fd < 0 || write(fd, text, (size_t) len) != len || close(fd) != 0 || rename(tmp, st->path) != 0) {
		/* Progress is for the eyes only: a failure is logged once and never stops the follower. */
		static bool warned;

		if (!warned)
			log_warning("replicator", "could not write the progress file %s: %s", st->path,
				    strerror(errno));
		warned = true;
		if (fd >= 0)
			(void) unlink(tmp);
	}
}

void
status_ddl_stopped(ReplStatus *st, uint64_t lsn)
{
	pthread_mutex_lock(&st->lock);
	st->ddl_stopped_lsn = lsn;
	write_file(st, clock_unix());
	pthread_mutex_unlock(&st->lock);
}

void
status_ddl_passed(ReplStatus *st, uint64_t committed)
{
	pthread_mutex_lock(&st->lock);
	if (st->ddl_stopped_lsn != 0 && committed > st->ddl_stopped_lsn) {
		st->ddl_stopped_lsn = 0;
		write_file(st, clock_unix());
	}
	pthread_mutex_unlock(&st->lock);
}

void
status_phase(ReplStatus *st, const char *phase)
{
	pthread_mutex_lock(&st->lock);
	st->phase = phase;
	if (strcmp(phase, "copy") == 0)
		st->copy_started = clock_unix();
	/* Sizes on disk only estimated what COPY would send: once it is over, it is all. */
	if (strcmp(phase, "indexes") == 0 && st->tables_done == st->tables_total)
		st->bytes_done = st->bytes_total;
	write_file(st, clock_unix());
	pthread_mutex_unlock(&st->lock);
}

void
status_large_objects(ReplStatus *st, int total, int in_step)
{
	pthread_mutex_lock(&st->lock);
	if (st->large_objects != total || st->large_objects_in_step != in_step) {
		st->large_objects = total;
		st->large_objects_in_step = in_step;
		write_file(st, clock_unix());
	}
	pthread_mutex_unlock(&st->lock);
}

void
status_fence_violation(ReplStatus *st, const char *what)
{
	pthread_mutex_lock(&st->lock);
	if (strcmp(st->fence_violation, what) != 0) {
		snprintf(st->fence_violation, sizeof(st->fence_violation), "%s", what);
		write_file(st, clock_unix());
	}
	pthread_mutex_unlock(&st->lock);
}

void
status_copy_plan(ReplStatus *st, int tables, int64_t bytes)
{
	pthread_mutex_lock(&st->lock);
	st->tables_total = tables;
	st->bytes_total = bytes;
	write_file(st, clock_unix());
	pthread_mutex_unlock(&st->lock);
}

void
status_copy_bytes(ReplStatus *st, int64_t bytes)
{
	double now = clock_unix();

	pthread_mutex_lock(&st->lock);
	st->bytes_done += bytes;
	if (now - st->last_write >= 1.0)
		write_file(st, now);
	pthread_mutex_unlock(&st->lock);
}

void
status_copy_table_done(ReplStatus *st)
{
	pthread_mutex_lock(&st->lock);
	st->tables_done++;
	write_file(st, clock_unix());
	pthread_mutex_unlock(&st->lock);
}

void
status_stream(ReplStatus *st, uint64_t received, uint64_t applied, uint64_t wal_end, int64_t last_commit_us,
	      int64_t xacts, int64_t changes)
{
	double now = clock_unix();

	pthread_mutex_lock(&st->lock);
	st->received_lsn = received;
	st->applied_lsn = applied;
	st->wal_end = wal_end;
	if (last_commit_us > 0)
		st->last_commit_us = last_commit_us;
	st->xacts = xacts;
	st->changes = changes;
	if (now - st->last_write >= 1.0)
		write_file(st, now);
	pthread_mutex_unlock(&st->lock);
}

bool
status_read(const char *path, StatusValues *values)
{
	FILE *f = fopen(path, "r");
	size_t n;

	values->text[0] = '\0';
	if (!f)
		return false;
	n = fread(values->text, 1, sizeof(values->text) - 1, f);
	values->text[n] = '\0';
	fclose(f);
	return n > 0;
}

bool
status_copy_value(const StatusValues *values, const char *key, char *buf, size_t len)
{
	size_t klen = strlen(key);
	const char *p = values->text;

	buf[0] = '\0';
	while (p && *p) {
		if (strncmp(p, key, klen) == 0 && p[klen] == ' ') {
			const char *v = p + klen + 1;

			snprintf(buf, len, "%.*s", (int) strcspn(v, "\n"), v);
			return true;
		}
		p = strchr(p, '\n');
		if (p)
			p++;
	}
	return false;
}
