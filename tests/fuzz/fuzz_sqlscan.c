/*
 * libFuzzer target: the session-state scanner on arbitrary client bytes.
 * The input is scanned from a heap copy of exactly its size, so
 * AddressSanitizer catches any read past len.  Then the same bytes are
 * followed by more text, which must not change the verdict as long as len
 * stays the same; and a passing input must still end outside any literal or
 * comment: a statement appended after it is seen, so a SELECT still passes
 * and a SET fails.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "proxy/sqlscan.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* The newline ends a trailing -- comment. */
#define SUFFIX_PASSES "\n;SELECT 1"
#define SUFFIX_FAILS "\n;SET a = 1"

static bool
scan_with_suffix(const uint8_t *data, size_t size, const char *suffix, size_t scan_len)
{
	size_t slen = strlen(suffix);
	char *buf = malloc(size + slen);
	bool ok;

	if (!buf)
		abort();
	if (size > 0)
		memcpy(buf, data, size);
	memcpy(buf + size, suffix, slen);
	ok = sql_leaves_session_alone(buf, scan_len);
	free(buf);
	return ok;
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	char *copy = malloc(size ? size : 1);
	bool ok;

	if (!copy)
		abort();
	if (size > 0)
		memcpy(copy, data, size);
	ok = sql_leaves_session_alone(copy, size);
	free(copy);

	if (scan_with_suffix(data, size, SUFFIX_FAILS, size) != ok)
		abort();
	if (ok) {
		if (!scan_with_suffix(data, size, SUFFIX_PASSES, size + strlen(SUFFIX_PASSES)))
			abort();
		if (scan_with_suffix(data, size, SUFFIX_FAILS, size + strlen(SUFFIX_FAILS)))
			abort();
	}
	return 0;
}
