/*
 * Slot, origin and publication names per database: unique for names that
 * differ only in case, punctuation or past their 32nd character, within
 * NAMEDATALEN and the slot name character set, and stable.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <cmocka.h>

#include "replicator/names.h"

/* A config with the given source database names and replication names. */
static void
make_config(Config *config, DatabaseMapping *dbs, const char *const *names, int n, const char *slot,
	    const char *publication)
{
	int i;

	memset(config, 0, sizeof(*config));
	for (i = 0; i < n; i++) {
		dbs[i].name = (char *) names[i];
		dbs[i].target_name = (char *) names[i];
	}
	config->ndatabases = n;
	config->databases = dbs;
	config->replication.slot_name = (char *) slot;
	config->replication.publication_name = (char *) publication;
}

/* Valid as a replication slot name: 1..63 bytes of [a-z0-9_]. */
static void
assert_slot_name(const char *name)
{
	size_t i, n = strlen(name);

	assert_true(n > 0 && n <= 63);
	for (i = 0; i < n; i++)
		assert_true((name[i] >= 'a' && name[i] <= 'z') || (name[i] >= '0' && name[i] <= '9') || name[i] == '_');
}

static void
assert_all_valid(const ReplNames *n)
{
	assert_slot_name(n->slot);
	assert_slot_name(n->reverse_slot);
	assert_slot_name(n->origin);
	assert_slot_name(n->reverse_origin);
	assert_true(strlen(n->publication) <= 63);
	assert_true(strlen(n->reverse_publication) <= 63);
}

/* Every name of the pair distinct, each valid, and check finds no collision. */
static void
assert_distinct_pair(const char *a, const char *b, const char *slot)
{
	const char *names[2] = {a, b};
	DatabaseMapping dbs[2];
	Config config;
	ReplNames na, nb;
	char why[256];

	make_config(&config, dbs, names, 2, slot, "pghandoff");
	replicate_names(&config, &dbs[0], &na);
	replicate_names(&config, &dbs[1], &nb);
	assert_all_valid(&na);
	assert_all_valid(&nb);
	assert_string_not_equal(na.slot, nb.slot);
	assert_string_not_equal(na.origin, nb.origin);
	assert_string_not_equal(na.reverse_slot, nb.reverse_slot);
	assert_string_not_equal(na.reverse_origin, nb.reverse_origin);
	assert_false(replicate_names_collision(&config, why, sizeof(why)));
}

static void
test_case_differs(void **state)
{
	(void) state;
	assert_distinct_pair("Ab", "ab", "pghandoff");
	assert_distinct_pair("ORDERS", "orders", "pghandoff");
}

static void
test_punctuation_differs(void **state)
{
	(void) state;
	assert_distinct_pair("a-b", "a_b", "pghandoff");
	assert_distinct_pair("a-b", "a.b", "pghandoff");
	assert_distinct_pair("a b", "a\"b", "pghandoff");
	assert_distinct_pair("caf\xc3\xa9", "caf__", "pghandoff");
	/* x's rollback slot would be x_rollback's forward slot, were "x_rollback" used as it is. */
	assert_distinct_pair("x", "x_rollback", "s");
}

static void
test_long_names_sharing_a_prefix(void **state)
{
	/* 40 characters, equal in the first 32. */
	static const char a[] = "warehouse_inventory_2024_region_north_01";
	static const char b[] = "warehouse_inventory_2024_region_south_01";
	/* The longest slot_name and database names PostgreSQL allows (63 bytes). */
	static const char slot63[] = "abcdefghijklmnopqrstuvwxyzabcdefghijklmnopqrstuvwxyzabcdefghijk";
	static const char long_a[] = "Xabcdefghijklmnopqrstuvwxyzabcdefghijklmnopqrstuvwxyzabcdefghij";
	static const char long_b[] = "XabcdefghijklmnopqrstuvwxyzabcdefghijklmnopqrstuvwxyzabcdefghiJ";

	(void) state;
	assert_int_equal(strlen(a), 40);
	assert_int_equal(strncmp(a, b, 32), 0);
	assert_distinct_pair(a, b, "pghandoff");
	assert_int_equal(strlen(slot63), 63);
	assert_int_equal(strlen(long_a), 63);
	assert_distinct_pair(long_a, long_b, slot63);
	assert_distinct_pair(a, b, slot63);
	/* 32 plain characters are used as they are, 33 are not. */
	assert_distinct_pair("abcdefghijklmnopqrstuvwxyz012345", "abcdefghijklmnopqrstuvwxyz0123456", slot63);
}

static void
test_readable_and_stable(void **state)
{
	const char *names[3] = {"app", "Ab", "Orders-2024"};
	const char *reordered[2] = {"Orders-2024", "app"};
	DatabaseMapping dbs[3], dbs2[2];
	Config config, config2;
	ReplNames n, n2;
	char part[REPL_NAMES_DB_PART_MAX + 1];

	(void) state;
	/* Plain names keep the names they always had. */
	make_config(&config, dbs, names, 3, "pghandoff", "pghandoff");
	replicate_names(&config, &dbs[0], &n);
	assert_string_equal(n.slot, "pghandoff_app");
	assert_string_equal(n.origin, "pghandoff_app");
	assert_string_equal(n.reverse_slot, "pghandoff_app_rollback");
	assert_string_equal(n.reverse_origin, "pghandoff_app_rollback");
	assert_string_equal(n.publication, "pghandoff");
	assert_string_equal(n.reverse_publication, "pghandoff_rollback");
	/* Others: a readable prefix and a hash of the exact name (32-bit FNV-1a). */
	replicate_names(&config, &dbs[1], &n);
	assert_string_equal(n.slot, "pghandoff_ab_4cd553ea");
	assert_string_equal(n.reverse_slot, "pghandoff_ab_4cd553ea_rollback");
	replicate_names_db_part("Orders-2024", part, sizeof(part));
	assert_string_equal(part, "orders_2024_5a1d6c9f");
	replicate_names_db_part("ab", part, sizeof(part));
	assert_string_equal(part, "ab");
	/* A database's names depend on nothing but its own name: not the order or the others. */
	replicate_names(&config, &dbs[2], &n);
	make_config(&config2, dbs2, reordered, 2, "pghandoff", "pghandoff");
	replicate_names(&config2, &dbs2[0], &n2);
	assert_string_equal(n.slot, n2.slot);
	assert_string_equal(n.reverse_slot, n2.reverse_slot);
	/* One database: slot_name as it is. */
	make_config(&config, dbs, names, 1, "pghandoff", "pghandoff");
	replicate_names(&config, &dbs[0], &n);
	assert_string_equal(n.slot, "pghandoff");
	assert_string_equal(n.reverse_slot, "pghandoff_rollback");
}

/* Check's defence in depth: a collision that the naming lets through is found and named. */
static void
test_collision_found(void **state)
{
	/* A plain name spelled like another database's hashed part. */
	const char *names[2] = {"Ab", "ab_4cd553ea"};
	const char *same[2] = {"app", "app"};
	DatabaseMapping dbs[2];
	Config config;
	char why[256];

	(void) state;
	make_config(&config, dbs, names, 2, "pghandoff", "pghandoff");
	assert_true(replicate_names_collision(&config, why, sizeof(why)));
	assert_non_null(strstr(why, "databases Ab and ab_4cd553ea"));
	assert_non_null(strstr(why, "pghandoff_ab_4cd553ea"));
	make_config(&config, dbs, same, 2, "pghandoff", "pghandoff");
	assert_true(replicate_names_collision(&config, why, sizeof(why)));
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_case_differs),
		cmocka_unit_test(test_punctuation_differs),
		cmocka_unit_test(test_long_names_sharing_a_prefix),
		cmocka_unit_test(test_readable_and_stable),
		cmocka_unit_test(test_collision_found),
	};

	return cmocka_run_group_tests_name("names", tests, NULL, NULL);
}
