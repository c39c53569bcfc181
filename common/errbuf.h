/*
 * Reasons for callers: parsers and codecs that log nothing write why they
 * failed into a caller's buffer, which may be NULL or empty when the caller
 * does not care.
 */
#ifndef PGHANDOFF_COMMON_ERRBUF_H
#define PGHANDOFF_COMMON_ERRBUF_H

#include <stdbool.h>
#include <stddef.h>

/* Formats the reason into err; always returns false, so `return errbuf_fail(...)` reads well. */
bool errbuf_fail(char *err, size_t errlen, const char *fmt, ...) __attribute__((format(printf, 3, 4)));

#endif
