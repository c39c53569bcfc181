/*
 * The session-state scanner on SQL text: the statements it must pass (the
 * pgbench and ORM shapes a cutover sees under load), the ones it must
 * refuse, PostgreSQL's lexical corners, and hostile input.  Then the custom
 * setting names it reports: each form of SET, RESET and set_config, what
 * hides them, and text the server may split in two ways.  Every input is
 * copied to a heap buffer of exactly its length, so AddressSanitizer sees
 * any read past it.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "proxy/sqlscan.h"

/* A bigger input than any test needs a bigger heap copy, nothing else. */
#define DEEP_NESTING 100000

static bool
scan_bytes(const char *sql, size_t len)
{
	char *copy = malloc(len ? len : 1);
	bool ok;

	assert_non_null(copy);
	if (len > 0)
		memcpy(copy, sql, len);
	ok = sql_leaves_session_alone(copy, len);
	free(copy);
	return ok;
}

static bool
scan(const char *sql)
{
	return scan_bytes(sql, strlen(sql));
}

static void
expect_all(const char *const *sqls, size_t n, bool want)
{
	for (size_t i = 0; i < n; i++) {
		if (scan(sqls[i]) != want)
			fail_msg("expected %s for: %s", want ? "true" : "false", sqls[i]);
	}
}

#define EXPECT_TRUE(list) expect_all((list), sizeof(list) / sizeof((list)[0]), true)
#define EXPECT_FALSE(list) expect_all((list), sizeof(list) / sizeof((list)[0]), false)

static void
test_brief_true(void **state)
{
	static const char *const sqls[] = {
		"BEGIN;",
		"END;",
		"UPDATE pgbench_accounts SET abalance = abalance + -4360 WHERE aid = 521368;",
		"SELECT abalance FROM pgbench_accounts WHERE aid = $1",
		"INSERT INTO pgbench_history (tid, bid, aid, delta, mtime) VALUES (1, 2, 3, 4, CURRENT_TIMESTAMP);",
		"select count(*) from t where x in (1,2) and y::numeric(10,2) > 0",
		"SELECT 'a;b', $$x; SET y$$, E'\\'' , \"Weird \"\"name\"\" (\" FROM t",
		"INSERT INTO t (a) VALUES (1) ON CONFLICT (a) DO UPDATE SET a = excluded.a RETURNING a",
		"WITH x AS (SELECT 1) SELECT * FROM x",
		"SELECT now(), pg_catalog.now()",
		"",
		"  ;  ; ",
		"/* c /* nested */ */ SELECT 1 -- x",
		"START TRANSACTION ISOLATION LEVEL SERIALIZABLE",
		"ROLLBACK TO SAVEPOINT s",
		"SHOW work_mem",
		"SELECT 1 AS t(a)",
		"SELECT * FROM (VALUES (1, 2)) AS v(a, b)",
	};

	(void) state;
	EXPECT_TRUE(sqls);
}

static void
test_brief_false(void **state)
{
	static const char *const sqls[] = {
		"SET work_mem = '64MB'",
		"set search_path to x",
		"SELECT set_config('a','b',false)",
		"select pg_catalog.set_config('a','b',false)",
		"SELECT \"set_config\"('a','b',false)",
		"SELECT pg_advisory_lock(1)",
		"SELECT myfunc(1)",
		"SELECT public.now()",
		"CREATE TEMP TABLE t (a int)",
		"SELECT 1 INTO TEMP t",
		"SELECT * INTO pg_temp.t FROM x",
		"PREPARE p AS SELECT 1",
		"EXECUTE p",
		"LISTEN c",
		"DECLARE c CURSOR WITH HOLD FOR SELECT 1",
		"DISCARD ALL",
		"RESET ALL",
		"SELECT 1; SET a = 1",
		"SELECT 'unterminated",
		"SELECT /* unterminated",
		"SELECT 'a\\'",
		"SELECT $$x",
		"SELECT \"x",
		"COPY t FROM STDIN",
		"CALL p()",
		"DO $$ BEGIN END $$",
		"(SELECT 1)",
		"SELECT )(",
	};

	(void) state;
	EXPECT_FALSE(sqls);
}

/* Statement kinds: only those that cannot touch the carried state start a statement. */
static void
test_statement_kinds(void **state)
{
	static const char *const yes[] = {
		"select 1",
		"Insert into t values (1)",
		"UPDATE t SET a = 1",
		"DELETE FROM t",
		"VALUES (1), (2)",
		"TABLE t",
		"begin",
		"BEGIN ISOLATION LEVEL REPEATABLE READ, READ ONLY",
		"START TRANSACTION READ WRITE",
		"COMMIT",
		"COMMIT AND CHAIN",
		"END",
		"ROLLBACK",
		"ABORT",
		"SAVEPOINT s",
		"RELEASE SAVEPOINT s",
		"RELEASE s",
		"SHOW ALL",
		"SHOW TRANSACTION ISOLATION LEVEL",
		"BEGIN; SELECT 1; COMMIT",
	};
	static const char *const no[] = {
		"DEALLOCATE p",
		"DEALLOCATE ALL",
		"UNLISTEN *",
		"NOTIFY c",
		"FETCH 1 FROM c",
		"MOVE c",
		"CLOSE c",
		"CLOSE ALL",
		"CREATE TABLE t (a int)",
		"ALTER TABLE t ADD b int",
		"DROP TABLE t",
		"LOCK t",
		"LOAD 'x'",
		"EXPLAIN SELECT 1",
		"EXPLAIN ANALYZE SELECT 1",
		"SET LOCAL a = 1",
		"SET SESSION AUTHORIZATION u",
		"SET ROLE u",
		"RESET a",
		"SET TRANSACTION READ ONLY",
		"MERGE INTO t USING s ON true WHEN MATCHED THEN DELETE",
		"\"select\" 1",
		"TRUNCATE t",
		"VACUUM",
		"ANALYZE t",
		"GRANT SELECT ON t TO u",
		"PREPARE TRANSACTION 'x'",
		"1",
		"'x'",
		"$1",
		"BEGIN; DISCARD TEMP; COMMIT",
		"SELECT 1;;; LISTEN x",
	};

	(void) state;
	EXPECT_TRUE(yes);
	EXPECT_FALSE(no);
}

static void
test_temporary_objects(void **state)
{
	static const char *const no[] = {
		"SELECT * INTO TEMPORARY t FROM x",
		"select * into temp t from x",
		"SELECT * FROM pg_temp.t",
		"SELECT * FROM PG_TEMP.t",
		"SELECT * FROM \"pg_temp\".t",
		"SELECT * FROM pg_temp_3.t",
		"INSERT INTO pg_temp_12.t VALUES (1)",
		"SELECT * INTO \"pg_temp_1\".t FROM x",
		"SELECT temp FROM t", /* a false alarm, which only costs a read */
		"WITH x AS (SELECT 1) SELECT * INTO TEMP y FROM x",
	};
	static const char *const yes[] = {
		"SELECT tempo, temperature, my_temp, pg_temporal FROM t",
		"SELECT * INTO t2 FROM t", /* a plain table: not session state */
		"SELECT 'TEMP', $$pg_temp$$ -- temp\n",
	};

	(void) state;
	EXPECT_FALSE(no);
	EXPECT_TRUE(yes);
}

static void
test_functions(void **state)
{
	static const char *const yes[] = {
		"SELECT count(*), sum(a), avg(a), min(a), max(a) FROM t",
		"SELECT string_agg(a, ',' ORDER BY b), array_agg(DISTINCT a) FROM t",
		"SELECT row_number() OVER (PARTITION BY a ORDER BY b ROWS BETWEEN UNBOUNDED PRECEDING AND CURRENT ROW) FROM t",
		"SELECT count(*) FILTER (WHERE a > 0) OVER w FROM t WINDOW w AS (ORDER BY b)",
		"SELECT percentile_cont(0.5) WITHIN GROUP (ORDER BY a) FROM t",
		"SELECT NOW(), Clock_Timestamp(), date_trunc('day', now()) - interval '1 day'",
		"SELECT \"now\"(), \"pg_catalog\".\"now\"(), PG_CATALOG.NOW()",
		"SELECT abs(-1), width_bucket(1, 0, 10, 5), random(), pi()",
		"SELECT lower(a) || upper(b), substr(a, 1, 2), left(a, 2), right(a, 2) FROM t",
		"SELECT jsonb_build_object('a', 1) -> 'a', jsonb_set(j, '{a}', '1') FROM t",
		"SELECT * FROM generate_series(1, 10) g(i)",
		"SELECT * FROM unnest($1::int[]) WITH ORDINALITY AS u(v, n)",
		"SELECT nextval('s'), currval('s'), setval('s', 1), lastval()",
		"SELECT current_setting('work_mem'), version(), pg_backend_pid(), current_database()",
		"SELECT pg_notify('c', 'x'), pg_sleep(0), txid_current()",
		"SELECT coalesce(a, 0), nullif(a, 0), greatest(a, b), least(a, b) FROM t",
		"SELECT extract(epoch FROM now()), substring(a FROM 1 FOR 2), position('a' IN b), trim(both 'x' FROM a), overlay(a PLACING 'b' FROM 1) FROM t",
		"SELECT EXISTS (SELECT 1), ARRAY(SELECT 1), ROW(1, 2), CAST(a AS varchar(20)) FROM t",
		"SELECT a FROM t WHERE a = ANY($1) AND b <> ALL (ARRAY[1, 2]) AND c IN (SELECT d FROM u)",
		"SELECT CURRENT_TIMESTAMP(3), LOCALTIMESTAMP(0), CURRENT_TIME(1)",
		"SELECT a FROM t GROUP BY ROLLUP (a, b)",
		"SELECT a FROM t GROUP BY CUBE (a, b)",
		"SELECT a FROM t GROUP BY GROUPING SETS ((a), ())",
		"SELECT * FROM t TABLESAMPLE SYSTEM (10) REPEATABLE (1)",
		"SELECT * FROM a LEFT JOIN (b JOIN c ON true) ON true",
		"SELECT * FROM (SELECT 1) s JOIN t ON true",
		"SELECT * FROM t, LATERAL (SELECT 1) l",
		"SELECT now() AT TIME ZONE ('UTC')",
		"SELECT DISTINCT ON (a) a FROM t ORDER BY a",
		"SELECT a FROM t WHERE 'x' LIKE (a) AND (b) ILIKE ('y')",
		"SELECT count(*) AS \"__count\" FROM \"app_model\" WHERE \"app_model\".\"id\" = $1",
	};
	static const char *const no[] = {
		"SELECT pg_try_advisory_lock(1)",
		"SELECT pg_advisory_lock_shared(1)",
		"SELECT pg_try_advisory_lock_shared(1)",
		"SELECT pg_advisory_unlock(1)",
		"SELECT pg_advisory_unlock_shared(1)",
		"SELECT pg_advisory_unlock_all()",
		"SELECT pg_advisory_xact_lock(1)",
		"SELECT * FROM dblink('x', 'SET a = 1') AS t(a int)",
		"SELECT lo_import('/etc/passwd')",
		"SELECT setseed(0.5)",
		"SELECT \"NOW\"()",
		"SELECT \"Now\"()",
		"SELECT \"pg_catalog\".set_config('a', 'b', false)",
		"SELECT \"PG_CATALOG\".now()",
		"SELECT s.pg_catalog.now()",
		"SELECT db.pg_catalog.now()",
		"SELECT pg_catalog . set_config('a','b',false)",
		"SELECT pg_catalog./**/set_config('a','b',false)",
		"SELECT now(), set_config('a','b',false)",
		"SELECT * FROM set_config('a','b',false)",
		"SELECT count(set_config('a','b',false)) FROM t",
		"SELECT a FROM t ORDER BY set_config('a','b',false)",
		"SELECT a::numeric(set_config('a','1',false)::int) FROM t",
		"SELECT over(1)",
		"SELECT filter(1)",
		"SELECT set(1)",
		"SELECT zone(1)",
		"SELECT join(1)",
		"SELECT x FROM t WHERE NOT like(x)",
		"SELECT 1 OPERATOR(myschema.+) 2",
		"SELECT (t).now() FROM t",
		"SELECT a FROM t x(a)", /* an alias, but only a keyword would tell */
	};

	(void) state;
	EXPECT_TRUE(yes);
	EXPECT_FALSE(no);
}

static void
test_names_before_parens(void **state)
{
	static const char *const yes[] = {
		"INSERT INTO s.t (a, b) VALUES (1, 2)",
		"INSERT INTO \"S\".\"T\" (a) VALUES (1)",
		"INSERT INTO t AS x (a) VALUES (1) ON CONFLICT (a) DO UPDATE SET (a) = ROW(x.a)",
		"INSERT INTO t (a) VALUES (1) ON CONFLICT (lower(a)) DO NOTHING",
		"UPDATE t SET (a, b) = (1, 2) WHERE c = 3",
		"SELECT a::pg_catalog.numeric(10, 2), b::\"char\", c::character varying(10), d::bit varying(3), e::timestamp(3) with time zone, f::interval second(0), g::double precision FROM t",
		"SELECT CAST(a AS national character varying(5)), CAST(b AS float(53)), CAST(c AS decimal(5, 1)) FROM t",
		"WITH RECURSIVE r(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM r WHERE n < 3) SELECT * FROM r",
		"WITH a(x) AS (SELECT 1), b(y) AS MATERIALIZED (SELECT 2), c AS NOT MATERIALIZED (SELECT 3) SELECT * FROM a, b, c",
		"WITH a AS (SELECT 1) (SELECT * FROM a)",
		"SELECT * FROM (WITH a(x) AS (SELECT 1) SELECT x FROM a) s",
		"SELECT 1 FROM t CROSS JOIN (SELECT 1) s NATURAL JOIN (SELECT 2) u",
	};
	static const char *const no[] = {
		"UPDATE t SET a = 1, set(2)",
		"UPDATE t AS set SET (a) = (1)", /* a second SET: in doubt */
		"WITH a AS (SELECT 1) (SELECT 1) ORDER BY 1, set_config('a', 'b', false)",
		"WITH a AS (SELECT 1) SELECT 1, f(x) AS (c int)",
		"WITH a AS (SELECT 1) SELECT * FROM a, f(x) AS (c int)",
		"SELECT * FROM t WHERE a IN (1, f(2))",
		"SELECT GROUPING(a), ROLLUP(a) FROM t",
		"SELECT interval '1' day to second(3)", /* refused, though only a typmod */
	};

	(void) state;
	EXPECT_TRUE(yes);
	EXPECT_FALSE(no);
}

/*
 * ON CONFLICT (target) is told from a join condition ON conflict(x), a call,
 * by the DO after the target.
 */
static void
test_on_conflict(void **state)
{
	static const char *const yes[] = {
		"INSERT INTO t VALUES (1) ON CONFLICT (lower(a), (b + 1)) DO NOTHING",
		"INSERT INTO t VALUES (1) ON CONFLICT ON CONSTRAINT c DO NOTHING",
		"INSERT INTO t VALUES (1) ON CONFLICT DO NOTHING",
		"INSERT INTO t VALUES (1) ON CONFLICT (a) DO UPDATE SET b = 2; SELECT 1",
		"INSERT INTO t SELECT * FROM a JOIN b ON a.x = b.x ON CONFLICT (x) DO NOTHING",
	};
	static const char *const no[] = {
		"INSERT INTO t SELECT * FROM a JOIN b ON conflict(a.x)",
		"INSERT INTO t SELECT * FROM a JOIN b ON conflict(x) ON CONFLICT DO NOTHING",
		"INSERT INTO t SELECT * FROM a JOIN b ON conflict(x) WHERE y ON CONFLICT DO NOTHING",
		"SELECT * FROM a JOIN b ON conflict(x)",
		"INSERT INTO t VALUES (1) ON CONFLICT (a) WHERE b DO NOTHING", /* in doubt */
		"INSERT INTO t VALUES (1) ON CONFLICT (a)",
		"INSERT INTO t VALUES (1) ON CONFLICT (a); SELECT 1",
		"INSERT INTO t VALUES (1) ON CONFLICT (a, conflict(b)) DO NOTHING",
	};

	(void) state;
	EXPECT_TRUE(yes);
	EXPECT_FALSE(no);
}

static void
test_lexing(void **state)
{
	static const char *const yes[] = {
		"SELECT $a$ x $b$ ; SET y $b$ $a$",
		"SELECT $a$x$ab$ $b$$a$",
		"SELECT $_$'$_$, $x1$ $x1 $x1$",
		"SELECT E'\\\\', E'\\'', e'\\n''', E'it\\'s'",
		"SELECT 'it''s', '', ''''",
		"SELECT B'101', X'1f', N'x', U&'d\"x', u&'x' UESCAPE '!'",
		"SELECT a$b, a$1$ FROM t",
		"SELECT 1.5e10, .5, 1e-3, 0x1F, 0o17, 0b101, 1_000_000, 1..2",
		"SELECT a[1:2], a[1][2] FROM t",
		"SELECT a::int, b :: text, c::\"int4\"[] FROM t",
		"SELECT 1 -- comment with ' and \" and $$\n",
		"SELECT 1 -- comment\r, 2",
		"SELECT /* a /* b /* c */ */ */ 1",
		"SELECT /**/1/***/",
		"SELECT 1 /* -- not a line comment */ + 2",
		"SELECT a+-1, a - -1, a !~* 'x', a @> b, j #>> '{a}', j ? 'k' FROM t",
		"SELECT\t1\n\r\f\v",
		"SELECT 'a'\n'b'",
		"SELECT \"a\"\"b\", \"\"\"\" FROM t",
		"SELECT caf\xc3\xa9 FROM \xe8\xa1\xa8",
		"SELECT 1;",
	};
	static const char *const no[] = {
		"SELECT /* /* */",
		"SELECT /*/",
		"SELECT E'\\",
		"SELECT E'abc",
		"SELECT 'abc''",
		"SELECT $a$ x $b$",
		"SELECT $a$ x $A$",
		"SELECT $",
		"SELECT $a",
		"SELECT $ a",
		"SELECT \"abc\"\"",
		"SELECT 'ok'\n'no\\'",                /* continuation: still standard_conforming */
		"SELECT E'ok'\n'\\' ; SET a = 1 --'", /* continuation of an E'': we refuse */
		"SELECT \\",
		"SELECT {}",
		"SELECT 1; SET a = 1 -- ;",
		"SELECT ((1)",
		"SELECT (1))",
		"SELECT a[1",
		"SELECT a]1",
		"SELECT (1; 2)",
		"SELECT a[1; 2]",
		"SELECT 1temp",
		"SELECT * INTO U&\"pg\\005ftemp\".t FROM x", /* U&"" can spell pg_temp */
		"SELECT u&\"x\" FROM t",
	};

	(void) state;
	EXPECT_TRUE(yes);
	EXPECT_FALSE(no);
}

/*
 * In SJIS, BIG5, GBK... 0x5c or 0x7c may be the second byte of a character,
 * in JOHAB 0x3b or 0x3d too: the server would see one character where we
 * see a backslash, a '|', a ';' or a '='.
 */
static void
test_multibyte_trail_bytes(void **state)
{
	static const char *const no[] = {
		"SELECT E'\x83\\' , set_config('a','b',false) --'",
		"SELECT \x83|now()",
		"SELECT \x83@E'\\'' FROM t",
		"SELECT \x83\\",
		"SELECT \xd8=now()",
		"SELECT \xd8;SELECT 1",
		"SELECT caf\xc3\xa9::text", /* UTF-8 needs none of this: a false alarm */
	};
	static const char *const yes[] = {
		"SELECT E'\\n\x83' FROM t",
		"SELECT \x83x FROM t",
		"SELECT '\x83|' FROM t",
		"SELECT x\xd8, y\xd8.z, caf\xc3\xa9 ::text FROM t",
	};

	(void) state;
	EXPECT_FALSE(no);
	EXPECT_TRUE(yes);
}

/* Only len bytes count: the text past them is not looked at. */
static void
test_length_bound(void **state)
{
	static const char sql[] = "SELECT 1; SET x = 1";

	(void) state;
	assert_true(sql_leaves_session_alone(sql, 9));
	assert_true(scan_bytes(sql, 9));
	assert_true(scan_bytes(sql, 10));
	assert_false(scan_bytes(sql, 13));
	assert_false(scan_bytes(sql, strlen(sql)));
	assert_true(scan_bytes("SELECT now()garbage", 12));
	assert_false(scan_bytes("SELECT 'abc'", 11));
	assert_false(scan_bytes("SELECT /* x */", 13));
	assert_false(scan_bytes("SELECT $$x$$", 11));
	assert_false(scan_bytes("SELECT E'\\'", 10));
	assert_true(scan_bytes("BEGIN", 0));
	assert_true(sql_leaves_session_alone(NULL, 0));
}

static void
test_nul_bytes(void **state)
{
	(void) state;
	assert_false(scan_bytes("SELECT f\0(", 10));
	assert_false(scan_bytes("SEL\0ECT 1", 9));
	assert_false(scan_bytes("SELECT '\0'", 10));
	assert_false(scan_bytes("SELECT 1 -- \0", 13));
	assert_false(scan_bytes("SELECT 1\0; SET a = 1", 20));
	assert_false(scan_bytes("\0", 1));
	/* A NUL right after len is not in the input. */
	assert_true(scan_bytes("SELECT 1\0", 8));
}

static void
test_hostile_sizes(void **state)
{
	size_t n = DEEP_NESTING;
	char *buf = malloc(2 * n + 16);
	size_t len;

	(void) state;
	assert_non_null(buf);

	/* Nesting past the limit is refused, without recursion. */
	len = (size_t) snprintf(buf, 16, "SELECT ");
	memset(buf + len, '(', n);
	memset(buf + len + n, ')', n);
	assert_false(scan_bytes(buf, len + 2 * n));

	/* Within the limit it passes. */
	len = (size_t) snprintf(buf, 16, "SELECT ");
	memset(buf + len, '(', 500);
	buf[len + 500] = '1';
	memset(buf + len + 501, ')', 500);
	assert_true(scan_bytes(buf, len + 1001));

	/* Unbalanced and huge. */
	memset(buf, '(', 2 * n);
	assert_false(scan_bytes(buf, 2 * n));
	memset(buf, ')', 2 * n);
	assert_false(scan_bytes(buf, 2 * n));

	/* Deeply nested comments are only a counter. */
	len = (size_t) snprintf(buf, 16, "SELECT 1 ");
	for (size_t i = 0; i < n / 2; i++)
		memcpy(buf + len + 2 * i, "/*", 2);
	len += n;
	for (size_t i = 0; i < n / 2; i++)
		memcpy(buf + len + 2 * i, "*/", 2);
	assert_true(scan_bytes(buf, len + n));
	assert_false(scan_bytes(buf, len + n - 1));

	/* A dollar-quote body full of near-misses of its tag. */
	memset(buf, 'a', 2 * n);
	memcpy(buf, "SELECT $aaaaa$", 14);
	for (size_t i = 14; i + 5 < 2 * n; i += 5)
		buf[i] = '$';
	assert_false(scan_bytes(buf, 2 * n));
	memcpy(buf + 2 * n - 7, "$aaaaa$", 7);
	assert_true(scan_bytes(buf, 2 * n));

	free(buf);
}

/* Custom setting names: collected distinct, in the order first reported. */
#define MAX_NAMES 8

typedef struct Names {
	size_t n;
	size_t calls;
	char name[MAX_NAMES][SQL_SETTING_NAME_MAX + 1];
} Names;

static void
collect_name(const char *name, void *arg)
{
	Names *names = arg;
	size_t len = strnlen(name, SQL_SETTING_NAME_MAX + 1);

	assert_true(len > 0 && len <= SQL_SETTING_NAME_MAX);
	assert_non_null(strchr(name, '.'));
	names->calls++;
	for (size_t i = 0; i < names->n; i++) {
		if (strcmp(names->name[i], name) == 0)
			return;
	}
	assert_true(names->n < MAX_NAMES);
	memcpy(names->name[names->n++], name, len + 1);
}

static void
settings_of_bytes(const char *sql, size_t len, Names *names)
{
	char *copy = malloc(len ? len : 1);

	assert_non_null(copy);
	if (len > 0)
		memcpy(copy, sql, len);
	memset(names, 0, sizeof(*names));
	sql_each_custom_setting(copy, len, collect_name, names);
	free(copy);
}

/* The names expected, in the order first reported, then NULL. */
static void
expect_settings_bytes(const char *sql, size_t len, ...)
{
	Names names;
	va_list ap;
	size_t i = 0;
	const char *want;

	settings_of_bytes(sql, len, &names);
	va_start(ap, len);
	while ((want = va_arg(ap, const char *)) != NULL) {
		if (i >= names.n || strcmp(names.name[i], want) != 0)
			fail_msg("expected \"%s\" as name %zu of: %.*s", want, i, (int) len, sql);
		i++;
	}
	va_end(ap);
	if (i != names.n)
		fail_msg("unexpected \"%s\" from: %.*s", names.name[i], (int) len, sql);
}

#define EXPECT_SETTINGS(sql, ...) expect_settings_bytes((sql), strlen(sql), __VA_ARGS__, NULL)

static void
expect_no_settings(const char *const *sqls, size_t n)
{
	for (size_t i = 0; i < n; i++) {
		Names names;

		settings_of_bytes(sqls[i], strlen(sqls[i]), &names);
		if (names.n != 0)
			fail_msg("unexpected \"%s\" from: %s", names.name[0], sqls[i]);
	}
}

#define EXPECT_NO_SETTINGS(list) expect_no_settings((list), sizeof(list) / sizeof((list)[0]))

static void
test_settings_set_forms(void **state)
{
	(void) state;
	EXPECT_SETTINGS("SET app.x = 1", "app.x");
	EXPECT_SETTINGS("SET app.x TO 'y'", "app.x");
	EXPECT_SETTINGS("SET app.x=1", "app.x");
	EXPECT_SETTINGS("SET app.x =-1", "app.x");
	EXPECT_SETTINGS("SET app.x TO DEFAULT", "app.x");
	EXPECT_SETTINGS("SET app.x FROM CURRENT", "app.x");
	EXPECT_SETTINGS("SET SESSION app.x = 1", "app.x");
	EXPECT_SETTINGS("SET LOCAL app.x = 1", "app.x");
	EXPECT_SETTINGS("set local app.x to 1", "app.x");
	EXPECT_SETTINGS("SET myapp.user_id = 42", "myapp.user_id");
	EXPECT_SETTINGS("SET a.b.c = 1", "a.b.c");
	EXPECT_SETTINGS("SET app . x = 1", "app.x");
	EXPECT_SETTINGS("SET /* c */ app -- c\n.x = 1", "app.x");
	EXPECT_SETTINGS("  SET app.x = 1;", "app.x");
	EXPECT_SETTINGS("SET _a$.b$1 = 1", "_a$.b$1");
	/* SESSION and LOCAL are names too, when a '.' follows. */
	EXPECT_SETTINGS("SET session.x = 1", "session.x");
	EXPECT_SETTINGS("SET LOCAL.x TO 1", "local.x");
	EXPECT_SETTINGS("SET SESSION session.x = 1", "session.x");
	EXPECT_SETTINGS("SET LOCAL \"Local\".x = 1", "Local.x");
	EXPECT_SETTINGS("RESET app.x", "app.x");
	EXPECT_SETTINGS("RESET app.x;", "app.x");
	EXPECT_SETTINGS("reset App.X ; ", "app.x");
	EXPECT_SETTINGS("RESET session.x", "session.x");
}

static void
test_settings_case(void **state)
{
	(void) state;
	EXPECT_SETTINGS("SET App.Tenant = 'acme'", "app.tenant");
	EXPECT_SETTINGS("set \"App\".x = 1", "App.x");
	EXPECT_SETTINGS("SET APP.\"Mixed Case\" = 1", "app.Mixed Case");
	EXPECT_SETTINGS("SET \"a\"\"b\".c = 1", "a\"b.c");
	EXPECT_SETTINGS("SET \"a.b\".C = 1", "a.b.c");
	EXPECT_SETTINGS("SET Caf\xc3\x89.X = 1", "caf\xc3\x89.x"); /* ASCII only */
	EXPECT_SETTINGS("SELECT set_config('App.Tenant', 'acme', false)", "app.tenant");
	EXPECT_SETTINGS("SELECT SET_CONFIG('APP.X', 'Y', false)", "app.x");
}

static void
test_settings_not_custom(void **state)
{
	static const char *const none[] = {
		"SET work_mem = '64MB'",
		"SET search_path TO a, b",
		"RESET ALL",
		"RESET work_mem",
		"RESET SESSION AUTHORIZATION",
		"SET SESSION AUTHORIZATION u",
		"SET SESSION AUTHORIZATION DEFAULT",
		"SET SESSION CHARACTERISTICS AS TRANSACTION READ ONLY",
		"SET TIME ZONE 'UTC'",
		"SET LOCAL TIME ZONE 'UTC'",
		"SET TRANSACTION ISOLATION LEVEL SERIALIZABLE",
		"SET ROLE app",
		"SET CONSTRAINTS s.c DEFERRED",
		"SET SCHEMA 'a.b'",
		"SHOW app.x",
		"SELECT current_setting('app.x', true)",
		/* Not the first token of the statement: not a setting. */
		"UPDATE t SET a.b = 1",
		"UPDATE app SET app.x = 1 WHERE y",
		"INSERT INTO t VALUES (1) ON CONFLICT (a) DO UPDATE SET app.x = 1",
		"ALTER ROLE r SET app.x = 1",
		"ALTER DATABASE d SET app.x TO 1",
		"CREATE FUNCTION f() RETURNS int SET app.x = 1 AS 'SELECT 1' LANGUAGE sql",
		"SELECT 1 SET app.x = 1",
		"\"SET\" app.x = 1",
		"RESET \"RESET\"; \"set\" app.x = 1",
		/* Malformed or incomplete. */
		"SET app.x",
		"SET app.x 1",
		"SET app. = 1",
		"SET app..x = 1",
		"SET .x = 1",
		"SET app.1x = 1",
		"SET app.x.= 1",
		"SET \"\".x = 1",
		"SET app.\"\" = 1",
		"SET U&\"app\".x = 1",
		"SET app.x.'y' = 1",
		"RESET app.x y",
		"RESET app.",
		"RESET app.x TO 1",
		"SET",
		"RESET",
		"SET LOCAL",
		"SET SESSION = 1",
	};

	(void) state;
	EXPECT_NO_SETTINGS(none);
}

static void
test_settings_statements(void **state)
{
	(void) state;
	EXPECT_SETTINGS("BEGIN; SET app.x = 1; COMMIT", "app.x");
	EXPECT_SETTINGS("SELECT 1;SET app.x=1", "app.x");
	EXPECT_SETTINGS(" ; ;; SET app.x = 1", "app.x");
	EXPECT_SETTINGS("SELECT 'x'; /* c */ SET app.x = 1 -- t", "app.x");
	EXPECT_SETTINGS("SET LOCAL app.a = 1; SELECT set_config('app.b', 'v', true); RESET app.c", "app.a", "app.b",
			"app.c");
	EXPECT_SETTINGS("RESET app.a;RESET app.b;SET app.a TO 2", "app.a", "app.b");
	EXPECT_SETTINGS("UPDATE t SET a.b = 1; SET app.x = 2", "app.x");
	EXPECT_SETTINGS("SET work_mem = 1; SET app.x = 2; SET TIME ZONE 'UTC'", "app.x");
}

static void
test_settings_hidden(void **state)
{
	static const char *const none[] = {
		"SELECT 'SET app.x = 1'",
		"SELECT 'x'; SELECT '; SET app.x = 1'",
		"SELECT 'set_config(''app.x'', ''1'', false)'",
		"SELECT \"SET app.x = 1\"",
		"SELECT \"set_config\"",
		"SELECT 1 -- SET app.x = 1",
		"SELECT 1 -- x\n-- SET app.x = 1",
		"/* SET app.x = 1 */",
		"SELECT /* /* */ ; SET app.x = 1; set_config('app.y', '', false) */ 1",
		"DO $$ BEGIN SET app.x = 1; PERFORM set_config('app.y', '1', false); END $$",
		"DO $body$ BEGIN SET app.x = 1; END $body$",
		"SELECT $t$; SET app.x = 1; $t$",
		"SELECT $a$ $b$ ; SET app.x = 1; $b$ $a$",
		"SELECT E'\\'; SET app.x = 1; --'",
		"CREATE FUNCTION f() RETURNS void AS 'SELECT set_config(''app.x'', ''1'', false)' LANGUAGE sql",
		"SELECT offset FROM reset_log",
		"SELECT 1",
	};

	(void) state;
	EXPECT_NO_SETTINGS(none);
	/* After the string, comment or body, the text is read again. */
	EXPECT_SETTINGS("SELECT 'SET app.a = 1'; SET app.b = 1", "app.b");
	EXPECT_SETTINGS("DO $$ SET app.a = 1 $$; SET app.b = 1", "app.b");
	EXPECT_SETTINGS("/* ; SET app.a = 1; */ SET app.b = 1", "app.b");
}

static void
test_settings_set_config(void **state)
{
	static const char *const none[] = {
		"SELECT set_config(x, 'y', false)",
		"SELECT set_config($1, 'y', false)",
		"SELECT set_config(('app.x'), 'y', false)",
		"SELECT set_config('work_mem', '1MB', false)",
		"SELECT set_config('app.' || 'x', 'y', false)",
		"SELECT set_config('app.x' || '', 'y', false)",
		"SELECT set_config('app..x', 'y', false)",
		"SELECT set_config('.x', 'y', false)",
		"SELECT set_config('app.', 'y', false)",
		"SELECT set_config('', 'y', false)",
		"SELECT set_config('app.x y', 'y', false)",
		"SELECT set_config(' app.x', 'y', false)",
		"SELECT set_config('\"App\".x', 'y', false)",
		"SELECT set_config('app.x''', 'y', false)",
		"SELECT set_config('1app.x', 'y', false)",
		"SELECT set_config('app.1x', 'y', false)",
		"SELECT set_config('app.$x', 'y', false)",
		"SELECT set_config(E'app.\\x41', 'y', false)",
		"SELECT set_config(U&'app.x', 'y', false)",
		"SELECT set_config($$app.x$$, 'y', false)",
		"SELECT set_config(1.5, 'y', false)",
		"SELECT set_config",
		"SELECT set_config(",
		"SELECT set_config('app.x'",
		"SELECT set_config('app.x')",
		"SELECT set_config 'app.x', 'y'",
		"SELECT \"SET_CONFIG\"('app.x', 'y', false)",
		"SELECT U&\"set_config\"('app.x', 'y', false)",
		"SELECT set_configs('app.x', 'y', false)",
		"SELECT current_setting('app.x', true)",
	};

	(void) state;
	EXPECT_SETTINGS("SELECT set_config('app.tenant', 'acme', false)", "app.tenant");
	EXPECT_SETTINGS("select pg_catalog.set_config('app.x', 'y', true)", "app.x");
	EXPECT_SETTINGS("SELECT PG_CATALOG . SET_CONFIG('app.x', 'y', true)", "app.x");
	EXPECT_SETTINGS("SELECT \"pg_catalog\".\"set_config\"('app.x', 'y', true)", "app.x");
	EXPECT_SETTINGS("SELECT set_config ( 'app.x' , 'y' , false )", "app.x");
	EXPECT_SETTINGS("SELECT set_config('app.x'::text, 'y', false)", "app.x");
	EXPECT_SETTINGS("SELECT set_config(E'app.x', 'y', false)", "app.x");
	EXPECT_SETTINGS("SELECT set_config('a.b.c', 'y', false)", "a.b.c");
	EXPECT_SETTINGS("SELECT set_config('_a.b$1', 'y', false)", "_a.b$1");
	EXPECT_SETTINGS("SELECT set_config('app.x', 'SET app.y = 1', false)", "app.x");
	/* Another schema's set_config most likely wraps the built-in. */
	EXPECT_SETTINGS("SELECT util.set_config('app.x', 'y', false)", "app.x");
	/* Anywhere in the statement, and any number of them. */
	EXPECT_SETTINGS("SELECT 1 FROM set_config('app.x', 'y', false)", "app.x");
	EXPECT_SETTINGS("SELECT * FROM t WHERE set_config('app.a', '1', true) IS NOT NULL "
			"AND (SELECT set_config('app.b', '2', true)) = '2'",
			"app.a", "app.b");
	EXPECT_SETTINGS("WITH s AS (SELECT set_config('app.x', $1, false)) SELECT * FROM s", "app.x");
	EXPECT_SETTINGS("SELECT set_config('app.x', set_config('app.y', 'v', false), false)", "app.x", "app.y");
	EXPECT_SETTINGS("INSERT INTO t VALUES (set_config('app.x', 'v', true))", "app.x");
	EXPECT_SETTINGS("SELECT set_config(set_config, 'v', false), "
			"set_config('app.x', 'v', false) FROM t",
			"app.x");
	EXPECT_SETTINGS("UPDATE t SET a = set_config('app.x', 'v', true)", "app.x");
	EXPECT_NO_SETTINGS(none);
}

static void
test_settings_too_long(void **state)
{
	char sql[256];
	/* 63 bytes: "a" x 30, ".", "b" x 32; then one more "b". */
	char name63[SQL_SETTING_NAME_MAX + 1];
	char name64[SQL_SETTING_NAME_MAX + 2];
	char want[SQL_SETTING_NAME_MAX + 1];
	size_t n = 100000;
	char *big;
	size_t len;

	(void) state;
	memset(name63, 'a', 30);
	name63[30] = '.';
	memset(name63 + 31, 'b', 32);
	name63[63] = '\0';
	memcpy(name64, name63, sizeof(name63));
	name64[63] = 'b';
	name64[64] = '\0';

	snprintf(sql, sizeof(sql), "SET %s = 1", name63);
	EXPECT_SETTINGS(sql, name63);
	snprintf(sql, sizeof(sql), "SELECT set_config('%s', 'v', false)", name63);
	EXPECT_SETTINGS(sql, name63);
	snprintf(sql, sizeof(sql), "RESET %s", name63);
	EXPECT_SETTINGS(sql, name63);

	snprintf(sql, sizeof(sql), "SET %s = 1; SET app.x = 2", name64);
	EXPECT_SETTINGS(sql, "app.x");
	snprintf(sql, sizeof(sql), "SELECT set_config('%s', 'v', false), set_config('app.x', 'v', false)", name64);
	EXPECT_SETTINGS(sql, "app.x");
	snprintf(sql, sizeof(sql), "RESET %s", name64);
	EXPECT_SETTINGS(sql, NULL);

	/* A doubled quote counts once: 60 + 1 + 2 bytes is the longest kept. */
	snprintf(sql, sizeof(sql), "SET \"%.61s\"\"\".x = 1", name63);
	EXPECT_SETTINGS(sql, NULL);
	snprintf(sql, sizeof(sql), "SET \"%.60s\"\"\".x = 1", name63);
	snprintf(want, sizeof(want), "%.60s\".x", name63);
	EXPECT_SETTINGS(sql, want);

	/* Very long names, quoted or not, and very many parts. */
	big = malloc(n + 32);
	assert_non_null(big);
	len = (size_t) snprintf(big, 32, "SET ");
	for (size_t i = 0; i < n; i += 2)
		memcpy(big + len + i, "a.", 2);
	memcpy(big + len + n - 1, "b = 1", 5);
	expect_settings_bytes(big, len + n + 4, NULL);
	memcpy(big, "RESET \"", 7);
	memset(big + 7, 'x', n);
	memcpy(big + 7 + n, "\".y", 3);
	expect_settings_bytes(big, n + 10, NULL);
	len = (size_t) snprintf(big, 32, "SELECT set_config('");
	memset(big + len, 'a', n);
	big[len + 1] = '.';
	memcpy(big + len + n, "', '', false)", 13);
	expect_settings_bytes(big, len + n + 13, NULL);
	free(big);
}

/* Only len bytes count, and the server stops at a NUL. */
static void
test_settings_length_bound(void **state)
{
	static const char two[] = "SET app.xyz = 1; SET app.b = 2";
	static const char nul[] = "SET app.a = 1;\0SET app.b = 1";
	static const char call[] = "SELECT set_config('app.x', 'y')";
	Names names;

	(void) state;
	expect_settings_bytes(two, strlen(two), "app.xyz", "app.b", NULL);
	expect_settings_bytes(two, 16, "app.xyz", NULL);
	expect_settings_bytes(two, 13, "app.xyz", NULL); /* "SET app.xyz =" */
	expect_settings_bytes(two, 11, NULL);            /* "SET app.xyz": no '=' */
	expect_settings_bytes("RESET app.abc", 12, "app.ab", NULL);
	expect_settings_bytes(call, 25, NULL); /* no ',' after the name */
	expect_settings_bytes(call, 26, "app.x", NULL);
	expect_settings_bytes("SELECT 'x' ; SET app.x = 1", 8, NULL);
	expect_settings_bytes(nul, sizeof(nul) - 1, "app.a", NULL);
	expect_settings_bytes("SET app.a\0 = 1", 14, NULL);
	expect_settings_bytes("SE", 2, NULL);
	expect_settings_bytes("SET", 0, NULL);
	memset(&names, 0, sizeof(names));
	sql_each_custom_setting(NULL, 0, collect_name, &names);
	assert_int_equal(names.calls, 0);
}

/*
 * Where the server may split the text two ways, the names of both readings
 * are reported.  A reading the lexer cannot finish is one the server
 * rejects whole: only what came before it is reported.
 */
static void
test_settings_readings(void **state)
{
	static const char *const none[] = {
		"SELECT 'unterminated; SET app.x = 1",
		"SELECT $a$ SET app.x = 1",
		"SELECT \"x; SET app.x = 1",
		"SELECT /* SET app.x = 1",
		"SELECT E'\\'; SET app.x = 1",
		"SELECT \\; SET app.x = 1",
		"SELECT $a; SET app.x = 1",
	};

	(void) state;
	/* standard_conforming_strings on: the backslash is a character. */
	EXPECT_SETTINGS("INSERT INTO t VALUES ('C:\\dir\\'); SET app.x = 1", "app.x");
	/* Off: it escapes the quote. */
	EXPECT_SETTINGS("SELECT 'it\\'s'; SET app.x = 1", "app.x");
	EXPECT_SETTINGS("SELECT 'a\\'; SET app.on = 1; SELECT '; SET app.off = 1; --'", "app.on", "app.off");
	EXPECT_SETTINGS("SELECT set_config('app.x', 'C:\\', false)", "app.x");
	/* In SJIS, BIG5, GBK... 0x83 0x5c is one character, not a backslash. */
	EXPECT_SETTINGS("SELECT E'\x83\\' ; SET app.sjis = 1; SELECT E'; SET app.utf8 = 1; --'", "app.utf8",
			"app.sjis");
	EXPECT_SETTINGS("SELECT x\x83\\ FROM t; SET app.x = 1", "app.x");
	EXPECT_SETTINGS("SELECT $t\x83\\$ ; $t\x83\\$; SET app.x = 1", "app.x");
	/* Seen only with standard_conforming_strings off in a client-only encoding. */
	EXPECT_SETTINGS("SELECT E'\x83\\'; SELECT 'x\\''; SET app.both = 1; --'", "app.both");
	/* U&"" names are skipped, the text after them is read. */
	EXPECT_SETTINGS("SELECT U&\"a\\0061\" FROM t; SET app.x = 1", "app.x");
	EXPECT_SETTINGS("SET app.a = 1; SELECT \\; SET app.b = 1", "app.a");
	EXPECT_NO_SETTINGS(none);
}

/* Many names, readings and near-misses: linear, and nothing is kept between calls. */
static void
test_settings_hostile(void **state)
{
	static const char *const units[] = {
		"SET a.b=1;", "set_config(", "RESET ", "'\\", "E'\x83\\'", "$a$", "SET \"",
	};
	size_t n = 100000;
	char *big = malloc(n);
	Names names;

	(void) state;
	assert_non_null(big);
	for (size_t u = 0; u < sizeof(units) / sizeof(units[0]); u++) {
		size_t ulen = strlen(units[u]);

		for (size_t i = 0; i < n; i++)
			big[i] = units[u][i % ulen];
		settings_of_bytes(big, n - n % ulen, &names);
		if (u == 0) {
			assert_int_equal(names.calls, n / ulen);
			assert_int_equal(names.n, 1);
			assert_string_equal(names.name[0], "a.b");
		} else {
			assert_int_equal(names.calls, 0);
		}
	}
	/* Every reading at once, over and over. */
	{
		static const char mixed[] = "E'\x83\\' 'a\\' x\x83|; SET a.b = 1;";
		size_t mlen = sizeof(mixed) - 1;
		size_t len = 0;

		for (; len + mlen <= n; len += mlen)
			memcpy(big + len, mixed, mlen);
		settings_of_bytes(big, len, &names);
		assert_int_equal(names.n, 1);
		assert_string_equal(names.name[0], "a.b");
	}
	free(big);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_brief_true),
		cmocka_unit_test(test_brief_false),
		cmocka_unit_test(test_statement_kinds),
		cmocka_unit_test(test_temporary_objects),
		cmocka_unit_test(test_functions),
		cmocka_unit_test(test_names_before_parens),
		cmocka_unit_test(test_on_conflict),
		cmocka_unit_test(test_lexing),
		cmocka_unit_test(test_multibyte_trail_bytes),
		cmocka_unit_test(test_length_bound),
		cmocka_unit_test(test_nul_bytes),
		cmocka_unit_test(test_hostile_sizes),
		cmocka_unit_test(test_settings_set_forms),
		cmocka_unit_test(test_settings_case),
		cmocka_unit_test(test_settings_not_custom),
		cmocka_unit_test(test_settings_statements),
		cmocka_unit_test(test_settings_hidden),
		cmocka_unit_test(test_settings_set_config),
		cmocka_unit_test(test_settings_too_long),
		cmocka_unit_test(test_settings_length_bound),
		cmocka_unit_test(test_settings_readings),
		cmocka_unit_test(test_settings_hostile),
	};

	return cmocka_run_group_tests_name("sqlscan", tests, NULL, NULL);
}
