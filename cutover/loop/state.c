/*
 * What outlives a cutover: the state file, written before clients move so a
 * restarted proxy never routes back (and starts the reverse follower again),
 * and while an aborted cutover's undo is owed (cleanup.c), so a
 * restarted proxy goes on retrying it.
 */
#include "cutover/loop/internal.h"
#include "common/log.h"

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

/* ---- the state file ---- */

bool
cutover_state_write(Proxy *proxy, const Cluster *serving, const char *last, const Cluster *fenced, bool way_back_left)
{
	const char *path = proxy->config.proxy.state_file;
	char tmp[4096], line[512];
	int fd, len;
	time_t now = time(NULL);
	bool ok;

	snprintf(tmp, sizeof(tmp), "%s.tmp", path);
	len = snprintf(line, sizeof(line),
		       "serving = %s\nchanged_at = %lld\nlast = %s\nreverse_follower = %s\nunfence = %s\n"
		       "way_back_left = %s\n",
		       serving->role, (long long) now, last,
		       serving == &proxy->target && proxy->config.cutover.rollback ? "on" : "off",
		       fenced ? fenced->role : "none", way_back_left ? "on" : "off");
	fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
	if (fd < 0) {
		log_error("cutover", "could not write the state file %s: %s", tmp, strerror(errno));
		return false;
	}
	ok = write(fd, line, (size_t) len) == len && fsync(fd) == 0;
	ok = close(fd) == 0 && ok;
	ok = ok && rename(tmp, path) == 0;
	if (!ok)
		log_error("cutover", "could not write the state file %s: %s", path, strerror(errno));
	return ok;
}

bool
cutover_state_read(Proxy *proxy, bool *reverse, const Cluster **fenced, bool *way_back_left)
{
	FILE *f = fopen(proxy->config.proxy.state_file, "r");
	char line[256];

	*reverse = false;
	*fenced = NULL;
	*way_back_left = false;
	proxy->serving = &proxy->source;
	if (!f) {
		if (errno == ENOENT)
			return true;
		log_error("proxy", "could not read the state file %s: %s", proxy->config.proxy.state_file,
			  strerror(errno));
		return false;
	}
	while (fgets(line, sizeof(line), f)) {
		if (strcmp(line, "serving = target\n") == 0)
			proxy->serving = &proxy->target;
		else if (strcmp(line, "reverse_follower = on\n") == 0)
			*reverse = true;
		else if (strcmp(line, "last = rollback\n") == 0)
			proxy->rolled_back = true;
		else if (strcmp(line, "unfence = source\n") == 0)
			*fenced = &proxy->source;
		else if (strcmp(line, "unfence = target\n") == 0)
			*fenced = &proxy->target;
		else if (strcmp(line, "way_back_left = on\n") == 0)
			*way_back_left = true;
	}
	fclose(f);
	log_info("proxy", "state file %s: clients are served by the %s", proxy->config.proxy.state_file,
		 proxy->serving->role);
	return true;
}
