/*
 * Log lines are built whole in memory and written with one write(2), so lines
 * from one process never interleave, and a log file opened O_APPEND stays
 * readable even when several processes share it.
 *
 * One event is one line.  Subjects and messages carry names a client chose
 * (user, database, application) and server error texts, so in the text
 * format every control character in them is escaped here, in the one place
 * all lines pass: a user named "x\nLOG: ..." cannot forge a line.  JSON
 * escapes them by its own rules.
 */
#include "common/log.h"
#include "common/strbuf.h"

#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

LogLevel log_min_level = LOG_LEVEL_INFO;

static LogFormat log_format = LOG_FORMAT_TEXT;
static int log_fd = STDERR_FILENO;
static char *log_path;

const char *
log_level_name(LogLevel level)
{
	switch (level) {
	case LOG_LEVEL_ERROR:
		return "ERROR";
	case LOG_LEVEL_WARNING:
		return "WARNING";
	case LOG_LEVEL_INFO:
		return "LOG";
	case LOG_LEVEL_DEBUG:
		return "DEBUG";
	}
	return "?";
}

static bool
log_open_file(const char *path, int *fd)
{
	*fd = open(path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0640);
	if (*fd < 0) {
		fprintf(stderr, "pghandoff: could not open log file \"%s\": %s\n", path, strerror(errno));
		return false;
	}
	return true;
}

bool
log_open(LogLevel level, LogFormat format, const char *path)
{
	int fd = STDERR_FILENO;
	char *copy = NULL;

	if (path && path[0]) {
		copy = strdup(path);
		if (!copy) {
			fprintf(stderr, "pghandoff: out of memory\n");
			return false;
		}
		if (!log_open_file(path, &fd)) {
			free(copy);
			return false;
		}
	}
	log_close();
	log_min_level = level;
	log_format = format;
	log_fd = fd;
	log_path = copy;
	return true;
}

bool
log_reopen(void)
{
	int fd;

	if (!log_path)
		return true;
	if (!log_open_file(log_path, &fd))
		return false;
	/* dup2 swaps the file under the same descriptor without a moment with no log. */
	if (dup2(fd, log_fd) < 0) {
		close(fd);
		return false;
	}
	close(fd);
	return true;
}

void
log_close(void)
{
	if (log_fd != STDERR_FILENO && log_fd >= 0)
		close(log_fd);
	log_fd = STDERR_FILENO;
	free(log_path);
	log_path = NULL;
}

static void
log_format_time(char *buf, size_t len, bool iso)
{
	struct timeval tv;
	struct tm tm;
	char base[32];

	gettimeofday(&tv, NULL);
	gmtime_r(&tv.tv_sec, &tm);
	strftime(base, sizeof(base), iso ? "%Y-%m-%dT%H:%M:%S" : "%Y-%m-%d %H:%M:%S", &tm);
	snprintf(buf, len, iso ? "%s.%03dZ" : "%s.%03d UTC", base, (int) (tv.tv_usec / 1000));
}

void
log_write(LogLevel level, const char *subject, const char *fmt, ...)
{
	StrBuf line, msg;
	char ts[48];
	va_list ap;
	const char *p;
	size_t left;
	int saved_errno = errno;

	strbuf_init(&msg);
	va_start(ap, fmt);
	strbuf_vappendf(&msg, fmt, ap);
	va_end(ap);
	/* libpq's messages end with a newline: the line has its own. */
	while (msg.len > 0 && (msg.data[msg.len - 1] == '\n' || msg.data[msg.len - 1] == '\r'))
		msg.data[--msg.len] = '\0';

	strbuf_init(&line);
	if (log_format == LOG_FORMAT_JSON) {
		log_format_time(ts, sizeof(ts), true);
		strbuf_appendf(&line, "{\"time\":\"%s\",\"pid\":%d,\"level\":", ts, (int) getpid());
		strbuf_append_json(&line, log_level_name(level));
		if (subject && subject[0]) {
			strbuf_append(&line, ",\"subject\":");
			strbuf_append_json(&line, subject);
		}
		strbuf_append(&line, ",\"message\":");
		strbuf_append_json(&line, strbuf_str(&msg));
		strbuf_append(&line, "}\n");
	} else {
		log_format_time(ts, sizeof(ts), false);
		strbuf_appendf(&line, "%s [%d] %s ", ts, (int) getpid(), log_level_name(level));
		if (subject && subject[0]) {
			strbuf_append_escaped(&line, subject, strlen(subject));
			strbuf_append(&line, ": ");
		}
		strbuf_append_escaped(&line, strbuf_str(&msg), msg.len);
		strbuf_append_char(&line, '\n');
	}

	if (!line.failed) {
		p = line.data;
		left = line.len;
		while (left > 0) {
			ssize_t n = write(log_fd, p, left);

			if (n < 0 && errno == EINTR)
				continue;
			if (n <= 0)
				break;
			p += n;
			left -= (size_t) n;
		}
	}
	strbuf_free(&line);
	strbuf_free(&msg);
	errno = saved_errno;
}
