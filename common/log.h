/*
 * Logging: one line per event, text or JSON, to stderr or a file that is
 * reopened on SIGHUP so logrotate works.  Every line names its subject (the
 * connection or component it is about).  A disabled level costs one integer
 * comparison: the arguments are not even evaluated.
 */
#ifndef PGHANDOFF_COMMON_LOG_H
#define PGHANDOFF_COMMON_LOG_H

#include <stdbool.h>

typedef enum LogLevel {
	LOG_LEVEL_ERROR = 0,
	LOG_LEVEL_WARNING,
	LOG_LEVEL_INFO,
	LOG_LEVEL_DEBUG,
} LogLevel;

typedef enum LogFormat {
	LOG_FORMAT_TEXT = 0,
	LOG_FORMAT_JSON,
} LogFormat;

extern LogLevel log_min_level;

/* path NULL or "" logs to stderr.  Safe to call again to change settings. */
bool log_open(LogLevel level, LogFormat format, const char *path) __attribute__((warn_unused_result));
/* Reopens the log file (after rotation); a no-op when logging to stderr. */
bool log_reopen(void) __attribute__((warn_unused_result));
void log_close(void);

void log_write(LogLevel level, const char *subject, const char *fmt, ...) __attribute__((format(printf, 3, 4)));

const char *log_level_name(LogLevel level);

#define log_enabled(level) ((level) <= log_min_level)

#define log_at(level, subject, ...) \
	do { \
		if (log_enabled(level)) \
			log_write((level), (subject), __VA_ARGS__); \
	} while (0)

#define log_error(subject, ...) log_at(LOG_LEVEL_ERROR, subject, __VA_ARGS__)
#define log_warning(subject, ...) log_at(LOG_LEVEL_WARNING, subject, __VA_ARGS__)
#define log_info(subject, ...) log_at(LOG_LEVEL_INFO, subject, __VA_ARGS__)
#define log_debug(subject, ...) log_at(LOG_LEVEL_DEBUG, subject, __VA_ARGS__)

#endif
