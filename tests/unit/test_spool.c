/*
 * The spool of streamed transactions: messages come back in order and
 * byte for byte, several transactions are kept apart, a subtransaction's
 * abort cuts back exactly its messages and those of subtransactions begun
 * inside it, and a transaction sent again from its start replaces itself.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "replicator/spool.h"

#define MAX_SEEN 20000

/* What a replay delivered: each message's first bytes and length. */
typedef struct Seen {
	int n;
	char text[MAX_SEEN][24];
	size_t len[MAX_SEEN];
	int stop_after; /* fail the replay after this many (0: never) */
} Seen;

static Seen seen;

static bool
collect(void *arg, const uint8_t *data, size_t len)
{
	Seen *s = arg;

	assert_true(s->n < MAX_SEEN);
	snprintf(s->text[s->n], sizeof(s->text[0]), "%.*s", (int) (len < 23 ? len : 23), (const char *) data);
	s->len[s->n] = len;
	s->n++;
	return s->stop_after == 0 || s->n < s->stop_after;
}

static void
append_text(Spool *sp, uint32_t xid, uint32_t change_xid, const char *text)
{
	assert_true(spool_append(sp, xid, change_xid, (const uint8_t *) text, strlen(text)));
}

static void
replay(Spool *sp, uint32_t xid)
{
	memset(&seen, 0, sizeof(seen));
	assert_true(spool_replay(sp, xid, collect, &seen));
}

static void
test_order_and_interleaving(void **state)
{
	Spool sp;

	(void) state;
	spool_init(&sp, "test");
	assert_true(spool_start(&sp, 100, true));
	append_text(&sp, 100, 100, "a1");
	append_text(&sp, 100, 100, "a2");
	assert_true(spool_stop(&sp, 100));
	assert_true(spool_start(&sp, 200, true));
	append_text(&sp, 200, 200, "b1");
	assert_true(spool_stop(&sp, 200));
	assert_true(spool_start(&sp, 100, false));
	append_text(&sp, 100, 0, "a3"); /* a message without an xid, as Origin is */
	assert_true(spool_stop(&sp, 100));
	assert_int_equal(spool_count(&sp, 100), 3);
	assert_int_equal(spool_count(&sp, 200), 1);

	replay(&sp, 100);
	assert_int_equal(seen.n, 3);
	assert_string_equal(seen.text[0], "a1");
	assert_string_equal(seen.text[1], "a2");
	assert_string_equal(seen.text[2], "a3");
	/* Replay drops the transaction; the other one stays. */
	assert_int_equal(spool_count(&sp, 100), -1);
	replay(&sp, 200);
	assert_int_equal(seen.n, 1);
	assert_string_equal(seen.text[0], "b1");
	spool_free(&sp);
}

static void
test_unknown_transactions(void **state)
{
	Spool sp;

	(void) state;
	spool_init(&sp, "test");
	/* A later block of a transaction never started, a change outside any, a commit of nothing. */
	assert_false(spool_start(&sp, 7, false));
	assert_false(spool_append(&sp, 7, 7, (const uint8_t *) "x", 1));
	memset(&seen, 0, sizeof(seen));
	assert_false(spool_replay(&sp, 7, collect, &seen));
	assert_int_equal(seen.n, 0);
	/* Aborts of what was never spooled are nothing to do. */
	assert_true(spool_abort(&sp, 7, 7));
	assert_true(spool_abort(&sp, 7, 8));
	spool_free(&sp);
}

static void
test_whole_abort(void **state)
{
	Spool sp;

	(void) state;
	spool_init(&sp, "test");
	assert_true(spool_start(&sp, 5, true));
	append_text(&sp, 5, 5, "gone");
	assert_true(spool_stop(&sp, 5));
	assert_true(spool_abort(&sp, 5, 5));
	assert_int_equal(spool_count(&sp, 5), -1);
	spool_free(&sp);
}

static void
test_subtransaction_abort(void **state)
{
	Spool sp;

	(void) state;
	spool_init(&sp, "test");
	assert_true(spool_start(&sp, 10, true));
	append_text(&sp, 10, 10, "top1");
	append_text(&sp, 10, 11, "s11"); /* SAVEPOINT a */
	append_text(&sp, 10, 11, "s11b");
	append_text(&sp, 10, 12, "s12");  /* SAVEPOINT b inside a */
	append_text(&sp, 10, 11, "s11c"); /* RELEASE b, back in a */
	assert_true(spool_stop(&sp, 10));
	assert_true(spool_start(&sp, 10, false));
	/* ROLLBACK TO a: the abort of b, then of a. */
	assert_true(spool_abort(&sp, 10, 12));
	assert_int_equal(spool_count(&sp, 10), 3);
	assert_true(spool_abort(&sp, 10, 11));
	assert_int_equal(spool_count(&sp, 10), 1);
	append_text(&sp, 10, 10, "top2");
	append_text(&sp, 10, 13, "s13"); /* SAVEPOINT c, released */
	append_text(&sp, 10, 14, "s14"); /* SAVEPOINT d, rolled back */
	assert_true(spool_abort(&sp, 10, 14));
	append_text(&sp, 10, 10, "top3");
	/* A subtransaction that wrote nothing published aborts: nothing changes. */
	assert_true(spool_abort(&sp, 10, 99));
	assert_true(spool_stop(&sp, 10));

	replay(&sp, 10);
	assert_int_equal(seen.n, 4);
	assert_string_equal(seen.text[0], "top1");
	assert_string_equal(seen.text[1], "top2");
	assert_string_equal(seen.text[2], "s13");
	assert_string_equal(seen.text[3], "top3");
	spool_free(&sp);
}

static void
test_sent_again(void **state)
{
	Spool sp;

	(void) state;
	spool_init(&sp, "test");
	assert_true(spool_start(&sp, 3, true));
	append_text(&sp, 3, 3, "first sending");
	assert_true(spool_stop(&sp, 3));
	assert_true(spool_start(&sp, 3, true));
	append_text(&sp, 3, 3, "second sending");
	assert_true(spool_stop(&sp, 3));
	replay(&sp, 3);
	assert_int_equal(seen.n, 1);
	assert_string_equal(seen.text[0], "second sending");
	spool_free(&sp);
}

/* Many messages, some larger than the write buffer and the read chunk, cut back across buffer flushes. */
static void
test_large(void **state)
{
	const size_t big = 300 * 1024;
	uint8_t *blob = malloc(big);
	char text[32];
	Spool sp;
	int i;

	(void) state;
	assert_non_null(blob);
	memset(blob, 'z', big);
	memcpy(blob, "blob", 4);
	spool_init(&sp, "test");
	assert_true(spool_start(&sp, 1, true));
	for (i = 0; i < 10000; i++) {
		snprintf(text, sizeof(text), "row %05d", i);
		append_text(&sp, 1, 1, text);
		if (i == 5000)
			assert_true(spool_append(&sp, 1, 1, blob, big));
	}
	/* 8000 small messages in a subtransaction, more than the write buffer holds; then cut. */
	for (i = 0; i < 8000; i++)
		append_text(&sp, 1, 2, "in the subtransaction");
	assert_true(spool_abort(&sp, 1, 2));
	append_text(&sp, 1, 1, "last");
	assert_true(spool_stop(&sp, 1));

	replay(&sp, 1);
	assert_int_equal(seen.n, 10002);
	assert_string_equal(seen.text[0], "row 00000");
	assert_memory_equal(seen.text[5001], "blob", 4);
	assert_int_equal(seen.len[5001], big);
	assert_string_equal(seen.text[5002], "row 05001");
	assert_string_equal(seen.text[10000], "row 09999");
	assert_string_equal(seen.text[10001], "last");
	free(blob);
	spool_free(&sp);
}

static void
test_replay_stops_on_false(void **state)
{
	Spool sp;

	(void) state;
	spool_init(&sp, "test");
	assert_true(spool_start(&sp, 4, true));
	append_text(&sp, 4, 4, "one");
	append_text(&sp, 4, 4, "two");
	append_text(&sp, 4, 4, "three");
	memset(&seen, 0, sizeof(seen));
	seen.stop_after = 2;
	assert_false(spool_replay(&sp, 4, collect, &seen));
	assert_int_equal(seen.n, 2);
	assert_int_equal(spool_count(&sp, 4), -1);
	spool_free(&sp);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_order_and_interleaving),
		cmocka_unit_test(test_unknown_transactions),
		cmocka_unit_test(test_whole_abort),
		cmocka_unit_test(test_subtransaction_abort),
		cmocka_unit_test(test_sent_again),
		cmocka_unit_test(test_large),
		cmocka_unit_test(test_replay_stops_on_false),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
