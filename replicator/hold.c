/*
 * The control and reply files of the verify hold (hold.h).  Both are
 * replaced whole with rename(), so neither side ever reads half a line.
 */
#include "replicator/hold.h"
#include "common/clock.h"
#include "common/log.h"
#include "replicator/pgoutput.h"

#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

void
hold_paths(const Config *config, const char *dbname, char *control, size_t clen, char *reply, size_t rlen)
{
	const char *state = config->proxy.state_file;

	if (!state || !state[0]) {
		control[0] = reply[0] = '\0';
		return;
	}
	snprintf(control, clen, "%s-verify-%s", state, dbname);
	snprintf(reply, rlen, "%s-verify-%s.reply", state, dbname);
}

void
hold_init(Hold *hold, const Config *config, const char *dbname)
{
	memset(hold, 0, sizeof(*hold));
	hold_paths(config, dbname, hold->control, sizeof(hold->control), hold->reply, sizeof(hold->reply));
	/* A request left from before a restart is stale. */
	if (hold->control[0])
		(void) unlink(hold->control);
}

void
hold_free(Hold *hold)
{
	repl_close(&hold->snapshot);
}

HoldRequest
hold_poll(Hold *hold, uint64_t *lsn)
{
	char line[256], nonce[64], word[32], arg[64] = "";
	double now = clock_monotonic();
	FILE *f;
	int n;

	if (!hold->control[0] || now - hold->last_poll < 0.05)
		return HOLD_REQ_NONE;
	hold->last_poll = now;
	f = fopen(hold->control, "r");
	if (!f)
		return HOLD_REQ_NONE;
	n = fgets(line, sizeof(line), f) ? sscanf(line, "%63s request %31s %63s", nonce, word, arg) : 0;
	fclose(f);
	if (n < 2)
		return HOLD_REQ_NONE;
	/* The same request seen again: nothing new, unless a hold was forgotten. */
	if (strcmp(nonce, hold->nonce) == 0)
		return HOLD_REQ_NONE;
	snprintf(hold->nonce, sizeof(hold->nonce), "%s", nonce);
	if (strcmp(word, "pause") == 0)
		return HOLD_REQ_PAUSE;
	if (strcmp(word, "release") == 0)
		return HOLD_REQ_RELEASE;
	if (strcmp(word, "hold") == 0 && n == 3 && lsn_parse(arg, lsn))
		return HOLD_REQ_HOLD;
	log_warning("replicator", "ignoring an unreadable verify request in %s", hold->control);
	return HOLD_REQ_NONE;
}

bool
hold_answer(Hold *hold, const char *fmt, ...)
{
	char tmp[sizeof(hold->reply) + 8], text[512];
	va_list ap;
	int fd, len;

	len = snprintf(text, sizeof(text), "%s ", hold->nonce);
	va_start(ap, fmt);
	len += vsnprintf(text + len, sizeof(text) - (size_t) len, fmt, ap);
	va_end(ap);
	if (len >= (int) sizeof(text) - 1)
		return false;
	text[len++] = '\n';
	snprintf(tmp, sizeof(tmp), "%s.tmp", hold->reply);
	fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
	if (fd < 0) {
		log_error("replicator", "could not answer the verify request in %s: %s", hold->reply, strerror(errno));
		return false;
	}
	if (write(fd, text, (size_t) len) != len || close(fd) != 0 || rename(tmp, hold->reply) != 0) {
		log_error("replicator", "could not answer the verify request in %s: %s", hold->reply, strerror(errno));
		(void) unlink(tmp);
		return false;
	}
	return true;
}
