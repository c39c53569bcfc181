/*
 * Strict parsing of the configuration's scalar values: sizes ("16MB"),
 * durations ("500ms", "5s", "2min"), integers and booleans.  Each parser
 * rejects trailing garbage, overflow and negative values, and writes a
 * message fit for a "FILE:LINE: " prefix into err.
 */
#ifndef PGHANDOFF_COMMON_UNITS_H
#define PGHANDOFF_COMMON_UNITS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Units B, kB, MB, GB, TB (1024-based, as in postgresql.conf); none means bytes. */
bool parse_size(const char *s, int64_t *bytes, char *err, size_t errlen) __attribute__((warn_unused_result));
/* Units us, ms, s, min, h, d; a unit is required.  Result in microseconds. */
bool parse_duration(const char *s, int64_t *usec, char *err, size_t errlen) __attribute__((warn_unused_result));
bool parse_int(const char *s, int64_t min, int64_t max, int64_t *out, char *err, size_t errlen)
	__attribute__((warn_unused_result));
/* on/off, true/false, yes/no, 1/0, case-insensitive. */
bool parse_bool(const char *s, bool *out, char *err, size_t errlen) __attribute__((warn_unused_result));

/* The shortest exact spelling: 16777216 -> "16MB", 5000000 -> "5s". */
void format_size(int64_t bytes, char *buf, size_t len);
void format_duration(int64_t usec, char *buf, size_t len);

#endif
