/*
 * Cutting one captured schema change out of its query string and rewriting
 * it for replay (replicator/ddlsql.c): statement splitting under quotes,
 * dollar quotes, comments and BEGIN ATOMIC bodies; the ordinal counted over
 * the statements that fire event triggers only; CREATE/DROP INDEX
 * CONCURRENTLY kept to run on their own (the drop made IF EXISTS), or
 * CONCURRENTLY removed inside a transaction and from DETACH PARTITION;
 * CREATE TABLE AS and SELECT INTO made structure only; temporary tables
 * skipped; a change that is not a statement of its string refused.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "replicator/ddlsql.h"

/* The statement for (query, tag, ordinal), or NULL when skipped or not found; *result says which. */
static char out_text[4096];

static DdlSqlResult
pick_in(const char *query, const char *tag, int ordinal, bool in_transaction)
{
	StrBuf out;
	DdlSqlResult r;

	strbuf_init(&out);
	r = ddlsql_statement(query, strlen(query), tag, ordinal, in_transaction, &out);
	assert_false(out.failed);
	snprintf(out_text, sizeof(out_text), "%s", out.data ? out.data : "");
	strbuf_free(&out);
	return r;
}

static DdlSqlResult
pick(const char *query, const char *tag, int ordinal)
{
	return pick_in(query, tag, ordinal, false);
}

static void
test_single_statement(void **state)
{
	(void) state;
	assert_int_equal(pick("ALTER TABLE t ADD COLUMN c int;", "ALTER TABLE", 1), DDL_SQL_OK);
	assert_string_equal(out_text, "ALTER TABLE t ADD COLUMN c int");
	assert_int_equal(pick("  -- why\n  create table t (a int)  /* done */ ", "CREATE TABLE", 1), DDL_SQL_OK);
	assert_string_equal(out_text, "create table t (a int)");
}

static void
test_ordinal_skips_dml_and_literals(void **state)
{
	const char *q = "CREATE TABLE m (id int, note text DEFAULT 'a;b'); INSERT INTO m VALUES (1, ';'); "
			"/* c; */ ALTER TABLE m ADD w text DEFAULT $x$d; $y$ q$x$; SELECT 1; UPDATE m SET w = E'\\';'; "
			"CREATE INDEX m_w ON m (w) -- last";

	(void) state;
	assert_int_equal(ddlsql_count_statements(q, strlen(q)), 6);
	assert_int_equal(pick(q, "CREATE TABLE", 1), DDL_SQL_OK);
	assert_string_equal(out_text, "CREATE TABLE m (id int, note text DEFAULT 'a;b')");
	assert_int_equal(pick(q, "ALTER TABLE", 2), DDL_SQL_OK);
	assert_string_equal(out_text, "ALTER TABLE m ADD w text DEFAULT $x$d; $y$ q$x$");
	assert_int_equal(pick(q, "CREATE INDEX", 3), DDL_SQL_OK);
	assert_string_equal(out_text, "CREATE INDEX m_w ON m (w)");
	assert_int_equal(pick(q, "CREATE INDEX", 4), DDL_SQL_NOT_FOUND);
	/* The tag must agree with the statement at that place. */
	assert_int_equal(pick(q, "DROP TABLE", 2), DDL_SQL_NOT_FOUND);
}

static void
test_shared_objects_not_counted(void **state)
{
	const char *q = "CREATE ROLE r; GRANT r TO postgres; GRANT SELECT ON t TO r; COMMENT ON DATABASE d IS 'x'; "
			"COMMENT ON TABLE t IS 'y'";

	(void) state;
	assert_int_equal(pick(q, "GRANT", 1), DDL_SQL_OK);
	assert_string_equal(out_text, "GRANT SELECT ON t TO r");
	assert_int_equal(pick(q, "COMMENT", 2), DDL_SQL_OK);
	assert_string_equal(out_text, "COMMENT ON TABLE t IS 'y'");
}

static void
test_concurrently_alone(void **state)
{
	(void) state;
	assert_int_equal(pick("CREATE UNIQUE INDEX CONCURRENTLY IF NOT EXISTS i ON t (a)", "CREATE INDEX", 1),
			 DDL_SQL_ALONE);
	assert_string_equal(out_text, "CREATE UNIQUE INDEX CONCURRENTLY IF NOT EXISTS i ON t (a)");
	assert_int_equal(pick("create index concurrently on t using gin (a)", "CREATE INDEX", 1), DDL_SQL_ALONE);
	assert_string_equal(out_text, "create index concurrently on t using gin (a)");
	/* A drop replayed again after a restart finds nothing to drop. */
	assert_int_equal(pick("drop index concurrently i", "DROP INDEX", 1), DDL_SQL_ALONE);
	assert_string_equal(out_text, "drop index concurrently IF EXISTS i");
	assert_int_equal(pick("DROP INDEX CONCURRENTLY IF EXISTS s.i CASCADE", "DROP INDEX", 1), DDL_SQL_ALONE);
	assert_string_equal(out_text, "DROP INDEX CONCURRENTLY IF EXISTS s.i CASCADE");
	assert_int_equal(pick("alter table if exists s.\"P\" detach partition s.c concurrently;", "ALTER TABLE", 1),
			 DDL_SQL_ALONE);
	assert_string_equal(out_text, "alter table if exists s.\"P\" detach partition s.c concurrently");
	/* Not at the start: no statement of these kinds. */
	assert_int_equal(pick("CREATE INDEX i ON t (concurrently)", "CREATE INDEX", 1), DDL_SQL_OK);
	assert_string_equal(out_text, "CREATE INDEX i ON t (concurrently)");
}

static void
test_detach_names(void **state)
{
	const char *q = "ALTER TABLE IF EXISTS ONLY s.\"Events\" DETACH PARTITION \"s\".e_2024 CONCURRENTLY";
	StrBuf parent, child, finalize;

	(void) state;
	strbuf_init(&parent);
	strbuf_init(&child);
	strbuf_init(&finalize);
	assert_true(ddlsql_detach(q, strlen(q), &parent, &child, &finalize));
	assert_string_equal(strbuf_str(&parent), "s.\"Events\"");
	assert_string_equal(strbuf_str(&child), "\"s\".e_2024");
	assert_string_equal(strbuf_str(&finalize),
			    "ALTER TABLE IF EXISTS ONLY s.\"Events\" DETACH PARTITION \"s\".e_2024 FINALIZE");
	strbuf_free(&parent);
	strbuf_free(&child);
	strbuf_free(&finalize);
	strbuf_init(&parent);
	strbuf_init(&child);
	strbuf_init(&finalize);
	q = "ALTER TABLE p DETACH PARTITION c";
	assert_false(ddlsql_detach(q, strlen(q), &parent, &child, &finalize));
	q = "ALTER TABLE p DETACH PARTITION CONCURRENTLY";
	assert_false(ddlsql_detach(q, strlen(q), &parent, &child, &finalize));
	q = "ALTER TABLE p ADD COLUMN c int, DETACH PARTITION c CONCURRENTLY";
	assert_false(ddlsql_detach(q, strlen(q), &parent, &child, &finalize));
	assert_int_equal(parent.len + child.len + finalize.len, 0);
	strbuf_free(&parent);
	strbuf_free(&child);
	strbuf_free(&finalize);
}

static void
test_concurrently_removed(void **state)
{
	(void) state;
	/* In a transaction that cannot be split: a plain build. */
	assert_int_equal(pick_in("CREATE UNIQUE INDEX CONCURRENTLY IF NOT EXISTS i ON t (a)", "CREATE INDEX", 1, true),
			 DDL_SQL_OK);
	assert_string_equal(out_text, "CREATE UNIQUE INDEX IF NOT EXISTS i ON t (a)");
	assert_int_equal(pick_in("drop index concurrently i", "DROP INDEX", 1, true), DDL_SQL_OK);
	assert_string_equal(out_text, "drop index i");
	assert_int_equal(pick_in("ALTER TABLE p DETACH PARTITION c CONCURRENTLY", "ALTER TABLE", 1, true), DDL_SQL_OK);
	assert_string_equal(out_text, "ALTER TABLE p DETACH PARTITION c ");
	/* A quoted name is a name. */
	assert_int_equal(pick("CREATE INDEX \"concurrently\" ON t (a)", "CREATE INDEX", 1), DDL_SQL_OK);
	assert_string_equal(out_text, "CREATE INDEX \"concurrently\" ON t (a)");
}

static void
test_create_table_as(void **state)
{
	(void) state;
	assert_int_equal(pick("CREATE TABLE a AS SELECT * FROM t;", "CREATE TABLE AS", 1), DDL_SQL_OK);
	assert_string_equal(out_text, "CREATE TABLE a AS SELECT * FROM t WITH NO DATA");
	assert_int_equal(pick("create table a as select 1 with data", "CREATE TABLE AS", 1), DDL_SQL_OK);
	assert_string_equal(out_text, "create table a as select 1 with NO DATA");
	assert_int_equal(pick("CREATE TABLE a AS SELECT 1 WITH NO DATA", "CREATE TABLE AS", 1), DDL_SQL_OK);
	assert_string_equal(out_text, "CREATE TABLE a AS SELECT 1 WITH NO DATA");
	assert_int_equal(pick("CREATE TEMP TABLE a AS SELECT 1", "CREATE TABLE AS", 1), DDL_SQL_SKIP);
}

static void
test_select_into(void **state)
{
	(void) state;
	assert_int_equal(pick("SELECT id, v INTO s.copy FROM t WHERE id < 3", "SELECT INTO", 1), DDL_SQL_OK);
	assert_string_equal(out_text, "CREATE TABLE s.copy AS SELECT id, v FROM t WHERE id < 3 WITH NO DATA");
	assert_int_equal(pick("SELECT 1; INSERT INTO t SELECT 1; SELECT * INTO UNLOGGED TABLE \"C\" FROM t",
			      "SELECT INTO", 1),
			 DDL_SQL_OK);
	assert_string_equal(out_text, "CREATE UNLOGGED TABLE \"C\" AS SELECT * FROM t WITH NO DATA");
	assert_int_equal(pick("SELECT * INTO TEMP x FROM t", "SELECT INTO", 1), DDL_SQL_SKIP);
}

static void
test_inside_function_refused(void **state)
{
	(void) state;
	assert_int_equal(pick("DO $$ BEGIN EXECUTE 'CREATE TABLE x (a int)'; END $$", "CREATE TABLE", 1),
			 DDL_SQL_NOT_FOUND);
	assert_int_equal(pick("SELECT make_tables()", "CREATE TABLE", 1), DDL_SQL_NOT_FOUND);
	assert_int_equal(pick("", "CREATE TABLE", 1), DDL_SQL_NOT_FOUND);
}

static void
test_begin_atomic_body(void **state)
{
	const char *q = "CREATE FUNCTION f() RETURNS int LANGUAGE sql BEGIN ATOMIC SELECT 1; SELECT CASE WHEN true "
			"THEN 2 END; END; ALTER FUNCTION f() OWNER TO postgres";

	(void) state;
	assert_int_equal(ddlsql_count_statements(q, strlen(q)), 2);
	assert_int_equal(pick(q, "ALTER FUNCTION", 2), DDL_SQL_OK);
	assert_string_equal(out_text, "ALTER FUNCTION f() OWNER TO postgres");
}

static void
test_unterminated_never_overreads(void **state)
{
	static const char *const texts[] =
		{"CREATE TABLE 'x",  "CREATE TABLE \"x", "CREATE $a$ x", "CREATE /* x", "CREATE E'\\",
		 "CREATE TABLE x (", "ALTER $",          "U&'",          NULL};

	(void) state;
	for (int i = 0; texts[i]; i++) {
		size_t n = strlen(texts[i]);
		char *copy = malloc(n); /* exactly its length: no NUL to stop on */

		assert_non_null(copy);
		memcpy(copy, texts[i], n);
		{
			StrBuf out;

			strbuf_init(&out);
			(void) ddlsql_statement(copy, n, "CREATE TABLE", 1, false, &out);
			strbuf_free(&out);
		}
		free(copy);
	}
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_single_statement),
		cmocka_unit_test(test_ordinal_skips_dml_and_literals),
		cmocka_unit_test(test_shared_objects_not_counted),
		cmocka_unit_test(test_concurrently_alone),
		cmocka_unit_test(test_detach_names),
		cmocka_unit_test(test_concurrently_removed),
		cmocka_unit_test(test_create_table_as),
		cmocka_unit_test(test_select_into),
		cmocka_unit_test(test_inside_function_refused),
		cmocka_unit_test(test_begin_atomic_body),
		cmocka_unit_test(test_unterminated_never_overreads),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
