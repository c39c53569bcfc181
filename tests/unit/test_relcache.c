/*
 * The relation cache: copies that outlive the Relation message, replacement
 * on schema change with the column-change report, and lookups across many
 * relids while the table grows.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "replicator/relcache.h"

/* About 40 KB of columns: not on the stack. */
static PgoutputRelation rel;

/* Names for rel's strings, which the cache must copy, not keep. */
static char nspname[32];
static char relname[32];
static char colnames[4][16];

/* rel = relid in nsp.name, columns id (key, int4) and val (text), replica identity default. */
static void
make_relation(uint32_t relid, const char *nsp, const char *name)
{
	snprintf(nspname, sizeof(nspname), "%s", nsp);
	snprintf(relname, sizeof(relname), "%s", name);
	snprintf(colnames[0], sizeof(colnames[0]), "id");
	snprintf(colnames[1], sizeof(colnames[1]), "val");
	rel.relid = relid;
	rel.nspname = nspname;
	rel.relname = relname;
	rel.replident = PGOUTPUT_REPLIDENT_DEFAULT;
	rel.natts = 2;
	rel.cols[0] = (PgoutputRelColumn){PGOUTPUT_RELATION_COLUMN_KEY, colnames[0], 23, -1};
	rel.cols[1] = (PgoutputRelColumn){0, colnames[1], 25, -1};
}

static void
update(RelCache *cache, bool want_changed)
{
	bool changed = !want_changed;

	assert_true(relcache_update_copy(cache, &rel, &changed));
	assert_int_equal(changed, want_changed);
}

static void
test_empty(void **state)
{
	RelCache cache;

	(void) state;
	relcache_init(&cache);
	assert_null(relcache_lookup(&cache, 16391));
	relcache_free(&cache);
	relcache_free(&cache);
}

static void
test_copy(void **state)
{
	RelCache cache;
	const RelCacheEntry *e;

	(void) state;
	relcache_init(&cache);
	make_relation(16391, "public", "t1");
	update(&cache, true);
	/* Scribble over the source: the entry holds its own copies. */
	memset(nspname, 'x', sizeof(nspname) - 1);
	memset(relname, 'x', sizeof(relname) - 1);
	memset(colnames, 'x', sizeof(colnames) - 1);
	e = relcache_lookup(&cache, 16391);
	assert_non_null(e);
	assert_int_equal(e->relid, 16391);
	assert_string_equal(e->nspname, "public");
	assert_string_equal(e->relname, "t1");
	assert_int_equal(e->replident, PGOUTPUT_REPLIDENT_DEFAULT);
	assert_int_equal(e->natts, 2);
	assert_string_equal(e->cols[0].name, "id");
	assert_int_equal(e->cols[0].type_oid, 23);
	assert_int_equal(e->cols[0].typmod, -1);
	assert_true(e->cols[0].key);
	assert_string_equal(e->cols[1].name, "val");
	assert_int_equal(e->cols[1].type_oid, 25);
	assert_false(e->cols[1].key);
	assert_null(relcache_lookup(&cache, 16392));
	relcache_free(&cache);
}

/* A Relation message sent again, with and without a schema change. */
static void
test_replace(void **state)
{
	RelCache cache;
	const RelCacheEntry *e, *again;

	(void) state;
	relcache_init(&cache);
	make_relation(16391, "public", "t1");
	update(&cache, true);
	e = relcache_lookup(&cache, 16391);

	/* The same relation again (a new session, or after a cache flush on the server). */
	make_relation(16391, "public", "t1");
	update(&cache, false);

	/* ALTER TABLE ... RENAME and REPLICA IDENTITY FULL show in the entry, not the flag. */
	make_relation(16391, "app", "renamed");
	rel.replident = PGOUTPUT_REPLIDENT_FULL;
	update(&cache, false);
	again = relcache_lookup(&cache, 16391);
	assert_ptr_equal(again, e);
	assert_string_equal(e->nspname, "app");
	assert_string_equal(e->relname, "renamed");
	assert_int_equal(e->replident, PGOUTPUT_REPLIDENT_FULL);

	/* A typmod change: varchar(10) to varchar(20). */
	make_relation(16391, "app", "renamed");
	rel.cols[1].type_oid = 1043;
	rel.cols[1].typmod = 14;
	update(&cache, true);
	rel.cols[1].typmod = 24;
	update(&cache, true);
	assert_int_equal(e->cols[1].type_oid, 1043);
	assert_int_equal(e->cols[1].typmod, 24);

	/* The key moves to another column. */
	rel.cols[0].flags = 0;
	rel.cols[1].flags = PGOUTPUT_RELATION_COLUMN_KEY;
	update(&cache, true);
	assert_false(e->cols[0].key);
	assert_true(e->cols[1].key);

	/* ADD COLUMN, then RENAME COLUMN, then DROP COLUMN. */
	snprintf(colnames[2], sizeof(colnames[2]), "extra");
	rel.cols[2] = (PgoutputRelColumn){0, colnames[2], 23, -1};
	rel.natts = 3;
	update(&cache, true);
	assert_int_equal(e->natts, 3);
	assert_string_equal(e->cols[2].name, "extra");
	snprintf(colnames[2], sizeof(colnames[2]), "more");
	update(&cache, true);
	assert_string_equal(e->cols[2].name, "more");
	rel.natts = 2;
	update(&cache, true);
	assert_int_equal(e->natts, 2);

	/* No columns at all, and back. */
	rel.natts = 0;
	update(&cache, true);
	assert_int_equal(e->natts, 0);
	assert_null(e->cols);
	update(&cache, false);
	rel.natts = 2;
	update(&cache, true);

	/* columns_changed may be NULL. */
	assert_true(relcache_update_copy(&cache, &rel, NULL));
	assert_ptr_equal(relcache_lookup(&cache, 16391), e);
	relcache_free(&cache);
}

/*
 * Many relids, sequential like OIDs and scattered so that low bits collide,
 * with entry addresses checked to survive every growth of the table.
 */
static void
test_many(void **state)
{
	enum { N = 20000 };
	RelCache cache;
	const RelCacheEntry **seen = calloc(N, sizeof(*seen));
	char name[32];

	(void) state;
	assert_non_null(seen);
	relcache_init(&cache);
	for (uint32_t i = 0; i < N; i++) {
		/* Even i: 16384 + i; odd i: multiples of 65536, which share their low bits. */
		uint32_t relid = (i % 2 == 0) ? 16384 + i : (i << 16) | 1;

		snprintf(name, sizeof(name), "t%u", (unsigned) i);
		make_relation(relid, "public", name);
		rel.natts = 1 + (int) (i % 3);
		if (rel.natts == 3) {
			snprintf(colnames[2], sizeof(colnames[2]), "c%u", (unsigned) i);
			rel.cols[2] = (PgoutputRelColumn){0, colnames[2], 20, -1};
		}
		update(&cache, true);
		seen[i] = relcache_lookup(&cache, relid);
		assert_non_null(seen[i]);
	}
	assert_int_equal(cache.count, N);
	assert_true(cache.nslots >= N * 4 / 3);
	for (uint32_t i = 0; i < N; i++) {
		uint32_t relid = (i % 2 == 0) ? 16384 + i : (i << 16) | 1;
		const RelCacheEntry *e = relcache_lookup(&cache, relid);

		snprintf(name, sizeof(name), "t%u", (unsigned) i);
		assert_ptr_equal(e, seen[i]);
		assert_int_equal(e->relid, relid);
		assert_string_equal(e->relname, name);
		assert_int_equal(e->natts, 1 + (int) (i % 3));
	}
	/* Relids never inserted, including 0. */
	assert_null(relcache_lookup(&cache, 0));
	assert_null(relcache_lookup(&cache, 16384 + N + 1));
	assert_null(relcache_lookup(&cache, 16385));
	assert_null(relcache_lookup(&cache, (2u << 16) | 1));

	/* Replace every tenth with a new schema. */
	for (uint32_t i = 0; i < N; i += 10) {
		uint32_t relid = (i % 2 == 0) ? 16384 + i : (i << 16) | 1;

		make_relation(relid, "changed", "t");
		rel.natts = 1;
		rel.cols[0].type_oid = 20;
		update(&cache, true);
		assert_ptr_equal(relcache_lookup(&cache, relid), seen[i]);
		assert_string_equal(seen[i]->nspname, "changed");
	}
	assert_int_equal(cache.count, N);
	relcache_free(&cache);
	assert_int_equal(cache.count, 0);
	assert_null(relcache_lookup(&cache, 16384));

	/* Usable again after free. */
	make_relation(1, "public", "again");
	update(&cache, true);
	assert_string_equal(relcache_lookup(&cache, 1)->relname, "again");
	relcache_free(&cache);
	free(seen);
}

/* From the decoder straight into the cache: a Relation captured from PostgreSQL 15. */
static void
test_from_decoder(void **state)
{
	/* s.t3 (id bigint primary key), then public.t1 with five columns, one of type mood. */
	static const uint8_t t3[] = {
		0x52, 0x00, 0x00, 0x40, 0x14, 's',  0,    't',  '3',  0,    'd',  0x00, 0x01,
		0x01, 'i',  'd',  0,    0x00, 0x00, 0x00, 0x14, 0xff, 0xff, 0xff, 0xff,
	};
	static PgoutputMessage m;
	RelCache cache;
	const RelCacheEntry *e;
	char err[256];
	bool changed = false;

	(void) state;
	relcache_init(&cache);
	assert_true(pgoutput_decode(t3, sizeof(t3), 1, false, &m, err, sizeof(err)));
	assert_true(relcache_update_copy(&cache, &m.relation, &changed));
	assert_true(changed);
	e = relcache_lookup(&cache, 16404);
	assert_non_null(e);
	assert_string_equal(e->nspname, "s");
	assert_string_equal(e->relname, "t3");
	assert_int_equal(e->natts, 1);
	assert_true(e->cols[0].key);
	assert_int_equal(e->cols[0].type_oid, 20);
	assert_true(relcache_update_copy(&cache, &m.relation, &changed));
	assert_false(changed);
	relcache_free(&cache);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_empty), cmocka_unit_test(test_copy),         cmocka_unit_test(test_replace),
		cmocka_unit_test(test_many),  cmocka_unit_test(test_from_decoder),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
