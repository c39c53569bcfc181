/*
 * Log lines: text and JSON formats, level filtering, reopening after
 * rotation, and JSON escaping in the string buffer.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <cmocka.h>

#include "common/log.h"
#include "common/strbuf.h"

static char *
slurp(const char *path)
{
	FILE *f = fopen(path, "r");
	char *buf = calloc(1, 65536);
	size_t n;

	assert_non_null(f);
	n = fread(buf, 1, 65535, f);
	buf[n] = '\0';
	fclose(f);
	return buf;
}

static int evaluated;

static int
count_evaluation(void)
{
	return ++evaluated;
}

static void
test_text_and_levels(void **state)
{
	char path[] = "/tmp/pghandoff-log-XXXXXX";
	int fd = mkstemp(path);
	char *text;

	(void) state;
	close(fd);
	assert_true(log_open(LOG_LEVEL_INFO, LOG_FORMAT_TEXT, path));
	log_info("proxy C-12 app@db 127.0.0.1:50312", "client connected, %d", 7);
	evaluated = 0;
	log_debug("proxy", "not shown %d", count_evaluation());
	assert_int_equal(evaluated, 0); /* a disabled level does not evaluate its arguments */
	log_error(NULL, "no subject");
	log_close();
	text = slurp(path);
	assert_non_null(strstr(text, " LOG proxy C-12 app@db 127.0.0.1:50312: client connected, 7\n"));
	assert_null(strstr(text, "not shown"));
	assert_non_null(strstr(text, " ERROR no subject\n"));
	assert_non_null(strstr(text, " UTC ["));
	free(text);
	unlink(path);
}

static void
test_json(void **state)
{
	char path[] = "/tmp/pghandoff-log-XXXXXX";
	int fd = mkstemp(path);
	char *text;

	(void) state;
	close(fd);
	assert_true(log_open(LOG_LEVEL_DEBUG, LOG_FORMAT_JSON, path));
	log_debug("replicator app", "quote \" backslash \\ newline \n tab \t bell \a");
	log_close();
	text = slurp(path);
	assert_non_null(strstr(text,
			       "\"level\":\"DEBUG\",\"subject\":\"replicator app\","
			       "\"message\":\"quote \\\" backslash \\\\ newline \\n tab \\t bell \\u0007\"}\n"));
	assert_int_equal(strncmp(text, "{\"time\":\"", 9), 0);
	free(text);
	unlink(path);
}

/* A name a client chose must not end the line or start one of its own. */
static void
test_text_escapes_control_characters(void **state)
{
	char path[] = "/tmp/pghandoff-log-XXXXXX";
	int fd = mkstemp(path);
	char *text, *line;
	int nlines = 0;

	(void) state;
	close(fd);
	assert_true(log_open(LOG_LEVEL_INFO, LOG_FORMAT_TEXT, path));
	log_info("C-1 x\nLOG: forged@app 127.0.0.1:5", "closing: database \"%s\" does not exist", "d\r\nLOG: db");
	log_info("C-2 y\x01\x1b[2J\x7f@app", "tab\there, backslash \\n stays, \xc3\xa9 stays");
	log_error("replicator", "libpq says: %s", "connection lost\nserver closed the connection\n");
	log_close();
	text = slurp(path);
	for (line = text; (line = strchr(line, '\n')) != NULL; line++)
		nlines++;
	assert_int_equal(nlines, 3);
	assert_non_null(strstr(text,
			       " LOG C-1 x\\nLOG: forged@app 127.0.0.1:5: "
			       "closing: database \"d\\r\\nLOG: db\" does not exist\n"));
	assert_non_null(
		strstr(text, " LOG C-2 y\\x01\\x1b[2J\\x7f@app: tab\\there, backslash \\n stays, \xc3\xa9 stays\n"));
	/* The trailing newline of a libpq message is dropped, the inner one escaped. */
	assert_non_null(
		strstr(text, " ERROR replicator: libpq says: connection lost\\nserver closed the connection\n"));
	assert_null(strstr(text, "\nLOG: "));
	assert_null(strchr(text, '\r'));
	assert_null(strchr(text, '\x01'));
	free(text);
	unlink(path);
}

static void
test_reopen(void **state)
{
	char path[] = "/tmp/pghandoff-log-XXXXXX";
	char rotated[64];
	int fd = mkstemp(path);
	char *before, *after;

	(void) state;
	close(fd);
	snprintf(rotated, sizeof(rotated), "%s.1", path);
	assert_true(log_open(LOG_LEVEL_INFO, LOG_FORMAT_TEXT, path));
	log_info("t", "before rotation");
	assert_int_equal(rename(path, rotated), 0);
	assert_true(log_reopen());
	log_info("t", "after rotation");
	log_close();
	before = slurp(rotated);
	after = slurp(path);
	assert_non_null(strstr(before, "before rotation"));
	assert_null(strstr(before, "after rotation"));
	assert_non_null(strstr(after, "after rotation"));
	free(before);
	free(after);
	unlink(path);
	unlink(rotated);
}

static void
test_open_failure(void **state)
{
	(void) state;
	assert_false(log_open(LOG_LEVEL_INFO, LOG_FORMAT_TEXT, "/nonexistent-dir/x.log"));
}

static void
test_strbuf(void **state)
{
	StrBuf sb;
	int i;

	(void) state;
	strbuf_init(&sb);
	assert_string_equal(strbuf_str(&sb), "");
	for (i = 0; i < 1000; i++)
		strbuf_appendf(&sb, "%d,", i);
	assert_false(sb.failed);
	assert_int_equal(strncmp(sb.data, "0,1,2,", 6), 0);
	assert_int_equal(sb.len, strlen(sb.data));
	strbuf_reset(&sb);
	strbuf_append_json(&sb, "a\"b");
	assert_string_equal(strbuf_str(&sb), "\"a\\\"b\"");
	strbuf_reset(&sb);
	strbuf_append_escaped(&sb, "a\nb\0c\x1f", 6); /* a length, not a NUL, ends it */
	assert_string_equal(strbuf_str(&sb), "a\\nb\\x00c\\x1f");
	strbuf_reset(&sb);
	strbuf_append_escaped(&sb, "plain", 5);
	assert_string_equal(strbuf_str(&sb), "plain");
	strbuf_free(&sb);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_text_and_levels),
		cmocka_unit_test(test_json),
		cmocka_unit_test(test_text_escapes_control_characters),
		cmocka_unit_test(test_reopen),
		cmocka_unit_test(test_open_failure),
		cmocka_unit_test(test_strbuf),
	};

	return cmocka_run_group_tests_name("log", tests, NULL, NULL);
}
