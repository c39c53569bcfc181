/*
 * libFuzzer target: the session-state scanner on arbitrary client bytes.
 * The input is scanned from a heap copy of exactly its size, so
 * AddressSanitizer catches any read past len.  Then the same bytes are
 * followed by more text, which must not change the verdict as long as len
 * stays the same; and a passing input must still end outside any literal or
 * comment: a statement appended after it is seen, so a SELECT still passes
 * and a SET fails.
 *
 * The custom setting names are checked the same way: every name reported
 * is a NUL-terminated, non-empty dotted name of at most
 * SQL_SETTING_NAME_MAX bytes; the text past len changes nothing; text
 * without "set" reports none; a SET before the input is always reported,
 * and one after an input that passes too.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "proxy/sqlscan.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* The newline ends a trailing -- comment. */
#define SUFFIX_PASSES "\n;SELECT 1"
#define SUFFIX_FAILS "\n;SET a = 1"
#define SETTING_PREFIX "SET app.fuzz = 1;"
#define SETTING_SUFFIX "\n;SET app.fuzz = 1"
#define SETTING_NAME "app.fuzz"

/* What the names reported came to. */
typedef struct SettingSeen {
	size_t count;
	uint64_t hash; /* FNV-1a over the names and their NULs, in order */
	bool found;    /* SETTING_NAME among them */
} SettingSeen;

static void
check_setting(const char *name, void *arg)
{
	SettingSeen *seen = arg;
	size_t len = strnlen(name, SQL_SETTING_NAME_MAX + 1);

	if (len == 0 || len > SQL_SETTING_NAME_MAX || memchr(name, '.', len) == NULL)
		abort();
	seen->count++;
	for (size_t i = 0; i <= len; i++) {
		seen->hash ^= (unsigned char) name[i];
		seen->hash *= UINT64_C(0x100000001b3);
	}
	if (strcmp(name, SETTING_NAME) == 0)
		seen->found = true;
}

/* prefix, data, suffix in a heap buffer of exactly that size; scans scan_len bytes of it. */
static char *
assemble(const char *prefix, const uint8_t *data, size_t size, const char *suffix, size_t *total)
{
	size_t plen = strlen(prefix);
	size_t slen = strlen(suffix);
	char *buf = malloc(plen + size + slen + 1);

	if (!buf)
		abort();
	memcpy(buf, prefix, plen);
	if (size > 0)
		memcpy(buf + plen, data, size);
	memcpy(buf + plen + size, suffix, slen);
	*total = plen + size + slen;
	return buf;
}

static bool
scan_with_suffix(const uint8_t *data, size_t size, const char *suffix, size_t scan_len)
{
	size_t total;
	char *buf = assemble("", data, size, suffix, &total);
	bool ok = sql_leaves_session_alone(buf, scan_len);

	free(buf);
	return ok;
}

static SettingSeen
settings_of(const char *prefix, const uint8_t *data, size_t size, const char *suffix, size_t scan_len)
{
	SettingSeen seen = {0, UINT64_C(0xcbf29ce484222325), false};
	size_t total;
	char *buf = assemble(prefix, data, size, suffix, &total);

	sql_each_custom_setting(buf, scan_len, check_setting, &seen);
	free(buf);
	return seen;
}

static bool
mentions_set(const uint8_t *data, size_t size)
{
	for (size_t i = 0; i + 3 <= size; i++) {
		if ((data[i] | 0x20) == 's' && (data[i + 1] | 0x20) == 'e' && (data[i + 2] | 0x20) == 't')
			return true;
	}
	return false;
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	char *copy = malloc(size ? size : 1);
	bool ok;
	SettingSeen exact;
	SettingSeen more;

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

	exact = settings_of("", data, size, "", size);
	more = settings_of("", data, size, SETTING_SUFFIX, size);
	if (exact.count != more.count || exact.hash != more.hash)
		abort();
	if (exact.count > 0 && !mentions_set(data, size))
		abort();
	if (!settings_of(SETTING_PREFIX, data, size, "", strlen(SETTING_PREFIX) + size).found)
		abort();
	/* Passing, the text lexes cleanly: what follows it is read. */
	if (ok && !settings_of("", data, size, SETTING_SUFFIX, size + strlen(SETTING_SUFFIX)).found)
		abort();
	return 0;
}
