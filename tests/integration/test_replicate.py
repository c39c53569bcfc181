"""`pghandoff replicate` against real clusters: copy, streaming, crashes, DDL, --drop.

The clusters are shared by the tests of this module (initdb is slow) and
parametrized over two pairs: 13 -> 17 (an upgrade across four majors) and
15 -> 15.  Tests that cost much run on one pair only.  Each test has its own
database, slot, publication and origin; its replicator is stopped with
SIGTERM at teardown (exit 0, no sanitizer report) and its objects dropped.

Environment: PGHANDOFF_TEST_SEED fixes the random moments of the crash tests.
"""

import glob
import os
import random
import re
import subprocess
import time

import pytest

from replfixtures import (  # noqa: F401  (fixtures are used by name)
    run_sql,
    in_transaction,
    start_and_sync,
    Pgbench,
    assert_tables_equal,
    cluster_pool,
    clusters,
    connect,
    lsn_int,
    make_database,
    need_pgbench,
    origin_progress,
    pgbench_init,
    query,
    random_seed,
    replicator_factory,
    wait_caught_up,
    wait_for,
)

ONLY_15 = pytest.mark.parametrize("clusters", [(15, 15)], indirect=True, ids=["15to15"])
ONLY_13_17 = pytest.mark.parametrize("clusters", [(13, 17)], indirect=True, ids=["13to17"])


def column_values(cluster, dbname, table, column, key="id"):
    return dict(query(cluster, dbname, f"SELECT {key}, ({column})::text FROM {table}"))


def assert_columns_equal(pair, db, table, columns, key="id"):
    """Compare every value of every column, naming each (row, column) that differs."""
    problems = []
    for col in columns:
        src = column_values(pair.source, db, table, col, key)
        tgt = column_values(pair.target, db, table, col, key)
        for k in sorted(set(src) | set(tgt), key=str):
            if k not in tgt:
                problems.append(f"{table} {key}={k}: row missing on the target")
            elif k not in src:
                problems.append(f"{table} {key}={k}: row only on the target")
            elif src[k] != tgt[k]:
                s, t = src[k], tgt[k]
                s = s if s is None or len(s) < 120 else s[:120] + f"...({len(s)} chars)"
                t = t if t is None or len(t) < 120 else t[:120] + f"...({len(t)} chars)"
                problems.append(f"{table} {key}={k} column {col}: source {s!r}, target {t!r}")
    problems = sorted(set(problems))
    assert not problems, f"{len(problems)} value(s) differ:\n" + "\n".join(problems[:60])


# ---- every built-in type family --------------------------------------------

def builtin_columns(source_version):
    """(column, type, [SQL values]) for the table with built-in types only (binary COPY)."""
    big = "9" * 1000 + "." + "1" * 1000
    cols = [
        ("n", "numeric", ["0", "'NaN'", "'-1.5'", f"'{big}'", "'1e-16383'",
                          "'-123456789012345678901234567890.000000000000000000001'"]
         + (["'Infinity'", "'-Infinity'"] if source_version >= 140000 else [])),
        ("n2", "numeric(12,4)", ["'12345678.1234'", "'-0.0001'", "0"]),
        ("i2", "int2", ["-32768", "32767", "0"]),
        ("i4", "int4", ["-2147483648", "2147483647", "0"]),
        ("i8", "int8", ["-9223372036854775808", "9223372036854775807", "0"]),
        ("f4", "float4", ["'Infinity'", "'-Infinity'", "'NaN'", "'-0'", "'1.17549435e-38'",
                          "'3.4028235e38'", "'0.1'", "'1e-45'"]),
        ("f8", "float8", ["'Infinity'", "'-Infinity'", "'NaN'", "'-0'", "'5e-324'",
                          "'1.7976931348623157e308'", "'0.1'", "'2.2250738585072014e-308'"]),
        ("ai", "int[]", ["'{{1,2},{3,4}}'", "'{{1,NULL},{NULL,4}}'", "'{}'", "'[0:2]={1,2,3}'",
                         "'{{{1},{2}},{{3},{4}}}'", "ARRAY[NULL]::int[]"]),
        ("at", "text[]", ["""ARRAY['a,b', 'c"d', 'e\\f', '', NULL, 'NULL', ' sp ', '{}', 'x''y']""",
                          "'{{a,b},{c,d}}'", "ARRAY[E'tab\\there', E'nl\\nhere', E'\\\\N']"]),
        ("af", "float8[]", ["ARRAY['NaN', 'Infinity', '-0', 0.1]::float8[]"]),
        ("na", "numeric[]", ["ARRAY['NaN', 1.5, NULL]::numeric[]"]),
        ("j", "json", ["""'{"a": 1,  "a": 2, "s": "q\\"uo\\\\te", "u": "\\u00e9\\u0000"}'""", "'[]'",
                       "'null'", """'  {"k": [1, 2.50, true]}  '"""]),
        ("jb", "jsonb", ["""'{"b": [1, {"c": null}], "a": "é😀", "n": 1e400}'""", "'[]'", "'\"str\"'",
                         """'{"q": "a\\"b\\\\c\\n"}'"""]),
        ("b", "bytea", ["'\\x00ff00'::bytea", "decode(repeat('00', 300), 'hex')", "''::bytea",
                        "'\\x5c0a0d0900'::bytea"]),
        ("tz", "timestamptz", ["'infinity'", "'-infinity'", "'2000-01-01 00:00:00+00'",
                               "'4713-01-01 00:00:00+00 BC'", "'294276-12-31 23:59:59.999999+00'",
                               "'2021-06-15 12:34:56.789012+05:30'"]),
        ("ts", "timestamp", ["'infinity'", "'-infinity'", "'2000-01-01 00:00:00'",
                             "'4713-01-01 00:00:00 BC'", "'294276-12-31 23:59:59.999999'",
                             "'2021-06-15 12:34:56.789012'"]),
        ("d", "date", ["'infinity'", "'-infinity'", "'4714-11-24 BC'", "'5874897-12-31'", "'2000-02-29'"]),
        ("tm", "time", ["'24:00:00'", "'00:00:00.000001'", "'12:34:56.5'"]),
        ("tmtz", "timetz", ["'23:59:59.999999+15:59'", "'00:00:00-15:59'", "'12:00:00+05:30'"]),
        ("iv", "interval", ["'178000000 years'", "'-178000000 years'", "'1 mon -1 day 03:00:00.000001'",
                            "'0'", "'P1Y2M3DT4H5M6.5S'"]),
        ("ir", "int4range", ["'[1,10)'", "'empty'", "'(,5]'", "'[3,)'", "'(,)'"]),
        ("tr", "tstzrange", ["'[2020-01-01 00:00+00, infinity)'", "'empty'",
                             """'("2020-01-01 00:00+00","2020-01-02 00:00+00"]'"""]),
        ("nr", "numrange", ["'[1.5,2.25]'", "'(,NaN)'", "'empty'"]),
        ("dr", "daterange", ["'[2020-01-01,2020-12-31]'", "'(,infinity)'"]),
        ("u", "uuid", ["'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11'", "'00000000-0000-0000-0000-000000000000'"]),
        ("ip", "inet", ["'192.168.1.5/24'", "'::ffff:1.2.3.4/128'", "'2001:db8::1'"]),
        ("cn", "cidr", ["'10.0.0.0/8'", "'2001:db8::/32'"]),
        ("mac", "macaddr", ["'08:00:2b:01:02:03'", "'ff:ff:ff:ff:ff:ff'"]),
        ("mac8", "macaddr8", ["'08:00:2b:01:02:03:04:05'"]),
        ("t", "text", ["E'quote\\' dq\" bs\\\\ tab\\t nl\\n cr\\r end'",
                       "U&'emoji \\+01F600 combining e\\0301 zero-width \\200B'",
                       "E'\\\\N'", "''", "'NULL'", "E'\\\\.'", "repeat('long ', 2000)"]),
        ("vc", "varchar(20)", ["'ab  '", "''"]),
        ("ch", "char(5)", ["'ab'", "'abcde'"]),
        ("nm", "name", ["'some name'", "''"]),
        ("bt", "bit(8)", ["B'10101010'", "B'00000000'"]),
        ("vb", "varbit", ["B''", "B'1'", "B'1010101010101010101'"]),
        ("pt", "point", ["'(1.5,-2)'", "'(NaN,Infinity)'", "'(-0,0)'"]),
        ("bx", "box", ["'((0,0),(1,1))'", "'((-1.5,2),(3,-4))'"]),
        ("pg", "polygon", ["'((0,0),(1,1),(1,0))'"]),
        ("ln", "line", ["'{1,-1,0}'"]),
        ("ls", "lseg", ["'[(0,0),(1,1)]'"]),
        ("pa", "path", ["'[(0,0),(1,1),(2,0)]'", "'((0,0),(1,1),(2,0))'"]),
        ("ci", "circle", ["'<(0,0),5>'"]),
        ("tv", "tsvector", ["'a fat cat:1A,2B sat on a mat'", "$q$'don''t' 'a\\b' 'with space':3$q$"]),
        ("tq", "tsquery", ["'fat & (rat | !cat)'", "'a <-> b'"]),
        ("bo", "bool", ["true", "false"]),
        ("lsn", "pg_lsn", ["'16/B374D848'", "'0/0'", "'FFFFFFFF/FFFFFFFF'"]),
        ("jp", "jsonpath", ["'$.a[*] ? (@ > 1)'", "'strict $.\"k y\"'"]),
    ]
    return cols


USER_TYPES_SQL = [
    """CREATE TYPE mood AS ENUM ('sad', 'ok', 'happy, "very"', 'it''s')""",
    "CREATE DOMAIN posint AS int CHECK (VALUE > 0)",
    "CREATE DOMAIN email AS text CHECK (VALUE LIKE '%@%')",
    "CREATE TYPE pair AS (a int, b text)",
    "CREATE TYPE nested AS (p pair, tags text[], m mood)",
    "CREATE TYPE floatrange AS RANGE (subtype = float8)",
]


def user_columns():
    """Columns of user-defined types: COPY goes as text for this table."""
    return [
        ("m", "mood", ["'sad'", """'happy, "very"'""", "'it''s'"]),
        ("ma", "mood[]", ["""ARRAY['sad', 'happy, "very"', NULL, 'it''s']::mood[]""", "'{}'"]),
        ("p", "posint", ["1", "2147483647"]),
        ("e", "email", ["'a@b'", "E'q\"\\\\@x'"]),
        ("c", "pair", ["""ROW(1, 'a,b "q" (p) \\')::pair""", "ROW(NULL, NULL)::pair", "ROW(2, '')::pair"]),
        ("ca", "pair[]", ["ARRAY[ROW(1,'x')::pair, NULL, ROW(NULL,'y,z')::pair]"]),
        ("ne", "nested", ["""ROW(ROW(1,'a"b')::pair, ARRAY['x','y,z',NULL], 'ok')::nested"""]),
        ("fr", "floatrange", ["'[1.5,2.5)'", "'empty'"]),
    ]


def create_types_tables(pair, db):
    source = pair.source
    sv = source.execute("SHOW server_version_num")[0][0]
    sv = int(sv)
    builtin = builtin_columns(sv)
    optional = []
    if sv >= 140000:
        optional.append(("mr", "int4multirange", ["'{[1,3), [5,7)}'", "'{}'", "'{(,0], [10,)}'"]))
    xml_ok = True
    for cluster in (pair.source, pair.target):
        try:
            cluster.execute("SELECT '<a/>'::xml")
        except Exception:
            xml_ok = False
    if xml_ok:
        optional.append(("x", "xml", ["""'<a b="1">t&amp;<c/></a>'""", "'text only'", "'<r>é😀</r>'"]))
    else:
        print("xml is not available on both clusters: no xml column")
    builtin += optional
    user = user_columns()
    stmts = list(USER_TYPES_SQL)
    stmts.append("CREATE TABLE builtin_types (id int PRIMARY KEY, "
                 + ", ".join(f"{c} {t}" for c, t, _ in builtin) + ")")
    stmts.append("CREATE TABLE user_types (id int PRIMARY KEY, "
                 + ", ".join(f"{c} {t}" for c, t, _ in user)
                 + ", g int GENERATED ALWAYS AS (id * 2) STORED)")
    run_sql(source, db, *stmts)
    return builtin, user


def insert_type_rows(pair, db, table, columns, base):
    """Rows base+1.. with value i of each column (NULL when a column has fewer), and row base+0 all NULL."""
    nrows = max(len(vals) for _, _, vals in columns)
    names = ", ".join(c for c, _, _ in columns)
    stmts = [f"INSERT INTO {table} (id) VALUES ({base})"]
    for i in range(nrows):
        values = ", ".join(vals[i] if i < len(vals) else "NULL" for _, _, vals in columns)
        stmts.append(f"INSERT INTO {table} (id, {names}) VALUES ({base + i + 1}, {values})")
    in_transaction(pair.source, db, *stmts)


def test_types_round_trip(clusters, replicator_factory):
    """Every type family, copied (binary and text COPY) and streamed (inserts and updates)."""
    pair = clusters
    db = make_database(pair, "types")
    builtin, user = create_types_tables(pair, db)
    insert_type_rows(pair, db, "builtin_types", builtin, 0)
    insert_type_rows(pair, db, "user_types", user, 0)

    r = start_and_sync(replicator_factory, pair, db)
    # The copy: builtin_types went as binary COPY, user_types as text.
    assert_columns_equal(pair, db, "builtin_types", [c for c, _, _ in builtin])
    assert_columns_equal(pair, db, "user_types", [c for c, _, _ in user] + ["g"])

    # Streaming: the same values again as inserts, then every row rewritten by
    # an update (all columns travel), one deleted.
    insert_type_rows(pair, db, "builtin_types", builtin, 100)
    insert_type_rows(pair, db, "user_types", user, 100)
    run_sql(pair.source, db,
            "UPDATE builtin_types SET bo = NOT coalesce(bo, false) WHERE id < 100",
            "UPDATE user_types SET p = coalesce(p, 1) WHERE id < 100",
            "DELETE FROM builtin_types WHERE id = 102",
            "DELETE FROM user_types WHERE id = 102")
    wait_caught_up(pair, db, r.origin, r)
    assert_columns_equal(pair, db, "builtin_types", [c for c, _, _ in builtin])
    assert_columns_equal(pair, db, "user_types", [c for c, _, _ in user] + ["g"])
    assert_tables_equal(pair, db)
    assert r.errors() == []


SOURCE_DEFAULTS = [
    # What a European DBA may well have set on the source.
    "DateStyle = 'SQL, DMY'",
    "IntervalStyle = 'sql_standard'",
    "extra_float_digits = 0",
    "TimeZone = 'Asia/Kathmandu'",
    "bytea_output = 'escape'",
]

STYLED_COLUMNS = "d date, ts timestamp, tz timestamptz, iv interval, f8 float8, f4 float4, b bytea"
STYLED_ROWS = [
    "'2021-01-02', '2021-01-02 03:04:05.123456', '2021-01-02 03:04:05.5+00', "
    "'1 year 2 mons 3 days 04:05:06.789', 0.1 + 0.2, 1.1, '\\x00ff'",
    "'2021-12-31', '1999-12-31 23:59:59', '2021-07-01 12:00:00+02', '-1 day +02:00:00', "
    "1e-300 * 3, 3.3333333, '\\x5c'",
]
STYLED_NAMES = ["d", "ts", "tz", "iv", "f8", "f4", "b"]


def set_source_defaults(pair, db):
    run_sql(pair.source, db, *(f"ALTER DATABASE {db} SET {setting}" for setting in SOURCE_DEFAULTS))


def test_source_session_defaults_copy(clusters, replicator_factory):
    """Text COPY from a source database whose defaults make values print ambiguously.

    A column of a user-defined type (an enum) makes the table go as text
    COPY, so dates, intervals and floats travel as text: the source's
    DateStyle and extra_float_digits must not change them.
    """
    pair = clusters
    db = make_database(pair, "stylecopy")
    run_sql(pair.source, db,
            "CREATE TYPE color AS ENUM ('red', 'green')",
            f"CREATE TABLE styled (id int PRIMARY KEY, c color, {STYLED_COLUMNS})",
            *(f"INSERT INTO styled VALUES ({i}, 'red', {row})" for i, row in enumerate(STYLED_ROWS)))
    set_source_defaults(pair, db)
    start_and_sync(replicator_factory, pair, db)
    assert_columns_equal(pair, db, "styled", STYLED_NAMES + ["c"])


def test_source_session_defaults_streaming(clusters, replicator_factory):
    """Streaming from a source database whose defaults make values print ambiguously.

    pgoutput sends values as text made by the walsender's output functions;
    native logical replication forces DateStyle=ISO, IntervalStyle=postgres
    and extra_float_digits=3 on the walsender for exactly this reason.
    """
    pair = clusters
    db = make_database(pair, "stylestream")
    run_sql(pair.source, db, f"CREATE TABLE styled (id int PRIMARY KEY, {STYLED_COLUMNS})")
    set_source_defaults(pair, db)
    r = start_and_sync(replicator_factory, pair, db)
    run_sql(pair.source, db, *(f"INSERT INTO styled VALUES ({i}, {row})" for i, row in enumerate(STYLED_ROWS)))
    wait_caught_up(pair, db, r.origin, r, fail_on_error=False)
    assert_columns_equal(pair, db, "styled", STYLED_NAMES)
    assert r.errors() == []


# ---- TOAST -----------------------------------------------------------------

def test_toast_unchanged_column(clusters, replicator_factory):
    """A 1 MB value stays on the target when an update leaves it alone (pgoutput's 'u')."""
    pair = clusters
    db = make_database(pair, "toast")
    big = "(SELECT string_agg(md5(g::text || '{seed}'), '') FROM generate_series(1, 32768) g)"
    run_sql(pair.source, db,
            "CREATE TABLE toasty (id int PRIMARY KEY, counter int, big text, big2 text, small text)",
            "ALTER TABLE toasty ALTER big SET STORAGE EXTERNAL",
            "CREATE TABLE toasty_full (k int, counter int, big text)",
            "ALTER TABLE toasty_full REPLICA IDENTITY FULL",
            "ALTER TABLE toasty_full ALTER big SET STORAGE EXTERNAL",
            f"INSERT INTO toasty VALUES (1, 0, {big.format(seed='a')}, {big.format(seed='b')}, 's')",
            f"INSERT INTO toasty_full VALUES (1, 0, {big.format(seed='c')}), (2, 0, {big.format(seed='d')})")
    assert pair.source.execute("SELECT length(big) FROM toasty", dbname=db)[0][0] == 32 * 32768
    r = start_and_sync(replicator_factory, pair, db)
    run_sql(pair.source, db,
            f"INSERT INTO toasty VALUES (2, 0, {big.format(seed='e')}, {big.format(seed='f')}, 's')",
            "UPDATE toasty SET counter = counter + 1",
            "UPDATE toasty SET small = 'changed', counter = counter + 1 WHERE id = 2",
            # The key moves, the TOASTed values stay.
            "UPDATE toasty SET id = id + 100",
            # One TOASTed column changes, the other not.
            f"UPDATE toasty SET big2 = {big.format(seed='g')} WHERE id = 101",
            "UPDATE toasty_full SET counter = counter + 1",
            "DELETE FROM toasty_full WHERE k = 2")
    wait_caught_up(pair, db, r.origin, r)
    cols = ["counter", "md5(big)", "length(big)", "md5(big2)", "small"]
    assert_columns_equal(pair, db, "toasty", cols)
    assert_columns_equal(pair, db, "toasty_full", ["counter", "md5(big)"], key="k")
    assert query(pair.target, db, "SELECT count(*) FROM toasty WHERE big IS NULL OR big2 IS NULL")[0][0] == 0
    assert_tables_equal(pair, db)


# ---- DML -------------------------------------------------------------------

def test_nulls_key_updates_deletes(clusters, replicator_factory):
    pair = clusters
    db = make_database(pair, "dml")
    run_sql(pair.source, db,
            "CREATE TABLE items (id int PRIMARY KEY, dropme int, a int, b text, "
            "g int GENERATED ALWAYS AS (a * 2) STORED)",
            "ALTER TABLE items DROP COLUMN dropme",
            "INSERT INTO items (id, a, b) SELECT g, g, 'b' || g FROM generate_series(1, 300) g",
            "INSERT INTO items (id, a, b) VALUES (301, NULL, NULL)",
            "CREATE TABLE nullable (id int PRIMARY KEY, a int, b text, c jsonb, d int[])",
            "INSERT INTO nullable VALUES (1, NULL, NULL, NULL, NULL), (2, 1, 'x', '{}', '{1}')",
            "CREATE TABLE multikey (u uuid, t text, tz timestamptz, n numeric, v text, "
            "PRIMARY KEY (u, t, tz, n))",
            "INSERT INTO multikey SELECT md5(g::text)::uuid, 'key '' \" \\ ' || g, "
            "'2020-01-01 00:00+00'::timestamptz + g * interval '1 hour', g / 7.0, 'v' "
            "FROM generate_series(1, 50) g",
            "CREATE TABLE uniq (id int NOT NULL, code text NOT NULL, v text)",
            "CREATE UNIQUE INDEX uniq_code ON uniq (code)",
            "ALTER TABLE uniq REPLICA IDENTITY USING INDEX uniq_code",
            "INSERT INTO uniq SELECT g, 'c' || g, 'v' FROM generate_series(1, 20) g",
            'CREATE SCHEMA "Weird Schema"',
            'CREATE TABLE "Weird Schema"."Mixed Case" ("select" int PRIMARY KEY, "col with space" text, '
            '"ünïcode" text, "Quote""d" int)',
            'INSERT INTO "Weird Schema"."Mixed Case" VALUES (1, \'a\', \'b\', 1), (2, NULL, \'c\', 2)')
    r = start_and_sync(replicator_factory, pair, db)
    assert_tables_equal(pair, db)

    run_sql(pair.source, db,
            # NULLs both ways.
            "INSERT INTO nullable VALUES (3, NULL, NULL, NULL, NULL), (4, 4, NULL, 'null', '{NULL}')",
            "UPDATE nullable SET a = 10, b = 'now set', c = '{\"k\": null}', d = '{}' WHERE id = 1",
            "UPDATE nullable SET a = NULL, b = NULL, c = NULL, d = NULL WHERE id = 2",
            # Key updates.
            "UPDATE items SET id = id + 1000000",
            "UPDATE items SET a = a + 1, b = b || '!' WHERE id % 5 = 0",
            "DELETE FROM items WHERE id % 3 = 0",
            "UPDATE multikey SET t = t || ' moved', n = n * 2 WHERE n > 3",
            "UPDATE multikey SET v = NULL WHERE n < 1",
            "DELETE FROM multikey WHERE tz < '2020-01-01 10:00+00'",
            "UPDATE uniq SET code = code || 'x' WHERE id % 2 = 0",
            "UPDATE uniq SET v = 'w', id = id + 100 WHERE id % 3 = 0",
            "DELETE FROM uniq WHERE id = 5",
            'UPDATE "Weird Schema"."Mixed Case" SET "select" = "select" + 10, "Quote""d" = NULL',
            'DELETE FROM "Weird Schema"."Mixed Case" WHERE "ünïcode" = \'c\'',
            'INSERT INTO "Weird Schema"."Mixed Case" VALUES (3, E\'tab\\t\', NULL, 3)')
    # Several changes to one row in one transaction; a rolled-back
    # subtransaction; an aborted transaction.
    in_transaction(pair.source, db,
                   "INSERT INTO items (id, a, b) VALUES (7, 7, 'in xact')",
                   "UPDATE items SET a = 70 WHERE id = 7",
                   "UPDATE items SET id = 8 WHERE id = 7",
                   "INSERT INTO items (id, a, b) VALUES (9, 9, 'gone')",
                   "DELETE FROM items WHERE id = 9")
    with connect(pair.source, db) as conn:
        with conn.transaction():
            conn.execute("INSERT INTO items (id, a, b) VALUES (10, 10, 'kept')")
            try:
                with conn.transaction():
                    conn.execute("INSERT INTO items (id, a, b) VALUES (11, 11, 'rolled back')")
                    raise RuntimeError("roll back the savepoint")
            except RuntimeError:
                pass
        try:
            with conn.transaction():
                conn.execute("INSERT INTO items (id, a, b) VALUES (12, 12, 'aborted')")
                raise RuntimeError("abort")
        except RuntimeError:
            pass
    wait_caught_up(pair, db, r.origin, r)
    assert_tables_equal(pair, db)
    assert query(pair.target, db, "SELECT id FROM items WHERE id < 100 ORDER BY id") == [(8,), (10,)]
    assert query(pair.target, db, "SELECT count(*) FROM items WHERE g IS DISTINCT FROM a * 2")[0][0] == 0
    assert r.errors() == []


def test_target_analyzed_after_copy(clusters, replicator_factory):
    """The copied tables have planner statistics on the target before streaming begins."""
    pair = clusters
    db = make_database(pair, "analyzed")
    run_sql(pair.source, db, "CREATE TABLE t (id int PRIMARY KEY, k int)",
            "INSERT INTO t SELECT g, g % 7 FROM generate_series(1, 10000) g")
    r = start_and_sync(replicator_factory, pair, db)
    log = r.log()
    assert log.index("analyzed the target's tables") < log.index("streaming from"), r.log_tail()
    stats = query(pair.target, db, "SELECT n_distinct FROM pg_stats WHERE schemaname = 'public' "
                  "AND tablename = 't' AND attname = 'k'")
    assert stats == [(7.0,)], stats


def test_identity_columns(clusters, replicator_factory):
    """GENERATED ALWAYS AS IDENTITY keys take the source's values, on insert and on update."""
    pair = clusters
    db = make_database(pair, "ident")
    run_sql(pair.source, db,
            "CREATE TABLE ident_always (id int GENERATED ALWAYS AS IDENTITY PRIMARY KEY, v text)",
            "CREATE TABLE ident_default (id bigint GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY, v text)",
            "INSERT INTO ident_always (v) SELECT 'copied' FROM generate_series(1, 10)",
            "INSERT INTO ident_default (v) SELECT 'copied' FROM generate_series(1, 10)")
    r = start_and_sync(replicator_factory, pair, db)
    run_sql(pair.source, db,
            "INSERT INTO ident_always (v) SELECT 'streamed' FROM generate_series(1, 5)",
            "INSERT INTO ident_default (v) SELECT 'streamed' FROM generate_series(1, 5)",
            "UPDATE ident_always SET v = 'updated' WHERE id % 2 = 0",
            "UPDATE ident_default SET v = 'updated' WHERE id % 2 = 0",
            "DELETE FROM ident_always WHERE id = 3")
    wait_caught_up(pair, db, r.origin, r)
    assert_tables_equal(pair, db)
    assert r.errors() == []


def test_truncate(clusters, replicator_factory):
    pair = clusters
    db = make_database(pair, "trunc")
    run_sql(pair.source, db,
            "CREATE TABLE plain (id int PRIMARY KEY, v text)",
            "CREATE TABLE seqt (id serial PRIMARY KEY, v text)",
            "CREATE TABLE parent (id int PRIMARY KEY)",
            "CREATE TABLE child (id int PRIMARY KEY, parent_id int REFERENCES parent)",
            "CREATE TABLE bystander (id int PRIMARY KEY)",
            "INSERT INTO plain SELECT g, 'v' FROM generate_series(1, 100) g",
            "INSERT INTO seqt (v) SELECT 'v' FROM generate_series(1, 100)",
            "INSERT INTO parent SELECT g FROM generate_series(1, 10) g",
            "INSERT INTO child SELECT g, g % 10 + 1 FROM generate_series(1, 50) g",
            "INSERT INTO bystander SELECT g FROM generate_series(1, 10) g")
    # No periodic sequence copy in this test: RESTART IDENTITY alone must reset the sequence.
    r = start_and_sync(replicator_factory, pair, db, replication={"sequence_sync_interval": "1h"})
    # The target's sequence moved on (as after a cutover rehearsal):
    # RESTART IDENTITY must take it back.
    pair.target.execute("SELECT setval('seqt_id_seq', 500)", dbname=db)
    fks = query(pair.target, db, "SELECT conname FROM pg_constraint WHERE contype = 'f'")
    assert fks, "post-data did not create the foreign key on the target"

    run_sql(pair.source, db, "TRUNCATE plain")
    in_transaction(pair.source, db, "TRUNCATE plain", "INSERT INTO plain VALUES (1, 'after truncate')")
    run_sql(pair.source, db,
            "TRUNCATE seqt RESTART IDENTITY",
            "TRUNCATE parent CASCADE",
            "INSERT INTO parent VALUES (1)",
            "INSERT INTO child VALUES (1, 1)")
    wait_caught_up(pair, db, r.origin, r)
    assert_tables_equal(pair, db)
    assert query(pair.target, db, "SELECT last_value, is_called FROM seqt_id_seq") == [(1, False)]
    assert query(pair.target, db, "SELECT count(*) FROM bystander")[0][0] == 10
    run_sql(pair.source, db, "INSERT INTO seqt (v) VALUES ('after restart')")
    wait_caught_up(pair, db, r.origin, r)
    assert_tables_equal(pair, db)
    assert r.errors() == []


def test_partitioned_table(clusters, replicator_factory):
    pair = clusters
    db = make_database(pair, "part")
    run_sql(pair.source, db,
            "CREATE TABLE meas (id int, ts date, v text, PRIMARY KEY (id, ts)) PARTITION BY RANGE (ts)",
            "CREATE TABLE meas_2021 PARTITION OF meas FOR VALUES FROM ('2021-01-01') TO ('2022-01-01')",
            "CREATE TABLE meas_2022 PARTITION OF meas FOR VALUES FROM ('2022-01-01') TO ('2023-01-01')",
            # Two levels: 2023 is split by hash.
            "CREATE TABLE meas_2023 PARTITION OF meas FOR VALUES FROM ('2023-01-01') TO ('2024-01-01') "
            "PARTITION BY HASH (id)",
            "CREATE TABLE meas_2023_a PARTITION OF meas_2023 FOR VALUES WITH (MODULUS 2, REMAINDER 0)",
            "CREATE TABLE meas_2023_b PARTITION OF meas_2023 FOR VALUES WITH (MODULUS 2, REMAINDER 1)",
            "CREATE TABLE meas_default PARTITION OF meas DEFAULT",
            "INSERT INTO meas SELECT g, date '2021-01-01' + (g * 7) % 1200, 'v' || g "
            "FROM generate_series(1, 2000) g")
    counts = query(pair.source, db, "SELECT tableoid::regclass::text, count(*) FROM meas GROUP BY 1")
    assert len(counts) == 5, counts
    r = start_and_sync(replicator_factory, pair, db)
    assert_tables_equal(pair, db)

    run_sql(pair.source, db,
            "INSERT INTO meas SELECT g, date '2021-06-01' + (g * 13) % 1300, 'new' FROM generate_series(3001, 4000) g",
            # Rows move between partitions, including into and out of the two-level one.
            "UPDATE meas SET ts = ts + 365 WHERE id % 2 = 0",
            "UPDATE meas SET ts = date '2023-03-03', v = 'to 2023' WHERE id % 7 = 0",
            "UPDATE meas SET v = v || '+' WHERE id % 5 = 0",
            "DELETE FROM meas WHERE id % 11 = 0",
            "TRUNCATE meas_2022")
    wait_caught_up(pair, db, r.origin, r)
    assert_tables_equal(pair, db)
    run_sql(pair.source, db, "TRUNCATE meas", "INSERT INTO meas VALUES (1, '2021-05-05', 'last')")
    wait_caught_up(pair, db, r.origin, r)
    assert_tables_equal(pair, db)
    assert r.errors() == []


def test_replica_identity_full_duplicates(clusters, replicator_factory):
    """Without a key, one of two identical rows is deleted, one updated: exactly one each."""
    pair = clusters
    db = make_database(pair, "full")
    run_sql(pair.source, db,
            "CREATE TABLE dup (a int, b text, c float8)",
            "ALTER TABLE dup REPLICA IDENTITY FULL",
            "INSERT INTO dup VALUES (1, 'x', 0.5), (1, 'x', 0.5), (2, 'y', NULL), (2, 'y', NULL), "
            "(3, NULL, 1), (3, NULL, 1), (4, 'solo', 2)")
    r = start_and_sync(replicator_factory, pair, db)
    run_sql(pair.source, db,
            "INSERT INTO dup VALUES (5, 'z', 3), (5, 'z', 3), (5, 'z', 3)",
            "DELETE FROM dup WHERE ctid = (SELECT min(ctid) FROM dup WHERE a = 1)",
            "UPDATE dup SET b = 'updated' WHERE ctid = (SELECT min(ctid) FROM dup WHERE a = 2)",
            "DELETE FROM dup WHERE ctid = (SELECT min(ctid) FROM dup WHERE a = 3)",
            "UPDATE dup SET c = 4 WHERE ctid = (SELECT max(ctid) FROM dup WHERE a = 5)",
            "DELETE FROM dup WHERE ctid = (SELECT min(ctid) FROM dup WHERE a = 5)",
            "UPDATE dup SET a = 40 WHERE a = 4")
    wait_caught_up(pair, db, r.origin, r)
    assert_tables_equal(pair, db)
    got = query(pair.target, db, "SELECT a, b, c, count(*) FROM dup GROUP BY 1, 2, 3 ORDER BY 1, 2, 3")
    assert got == [(1, "x", 0.5, 1), (2, "updated", None, 1), (2, "y", None, 1), (3, None, 1.0, 1),
                   (5, "z", 3.0, 1), (5, "z", 4.0, 1), (40, "solo", 2.0, 1)], got
    assert r.errors() == []


# ---- volume ----------------------------------------------------------------

def fill_wide_table(cluster, db, rows):
    """rows rows of about 140 bytes: 1 million is about 145 MB."""
    run_sql(cluster, db,
            "CREATE TABLE big (id bigint PRIMARY KEY, k int, pad text)",
            f"INSERT INTO big SELECT g, g % 1000, md5(g::text) || md5((g + 1)::text) || md5((g + 2)::text) "
            f"FROM generate_series(1, {rows}) g",
            "VACUUM ANALYZE big")


def _large_copy(pair, replicator_factory, rows, split=None):
    db = make_database(pair, "large")
    fill_wide_table(pair.source, db, rows)
    pages = pair.source.execute("SELECT relpages FROM pg_class WHERE relname = 'big'", dbname=db)[0][0]
    # Writes go on during the copy: they must arrive exactly once.
    options = {"copy_jobs": 4}
    if split:
        options["split_tables_larger_than"] = split
    r = replicator_factory(pair, db, replication=options)
    r.wait_log(r"copying \d+ table")
    run_sql(pair.source, db,
            f"INSERT INTO big VALUES ({rows + 1}, 1, 'during copy')",
            "UPDATE big SET pad = 'updated during copy' WHERE id = 1",
            "DELETE FROM big WHERE id = 2")
    r.wait_streaming(timeout=1800)
    wait_caught_up(pair, db, r.origin, r)
    assert_tables_equal(pair, db)
    if split and pair.source.major >= 14 and pages >= 16384:
        assert re.search(r"copied public\.big where ctid", r.log()), \
            "a table over split_tables_larger_than was not split into ctid ranges:\n" + r.log_tail()
    m = re.search(r"initial copy done: \d+ table\(s\), (\d+) rows", r.log())
    assert m and int(m.group(1)) >= rows, r.log_tail()
    assert r.errors() == []


@ONLY_15
def test_large_table_copy(clusters, replicator_factory):
    """About 1.2 million rows (150 MB), copied in parallel ctid ranges while writes go on."""
    _large_copy(clusters, replicator_factory, 1_200_000, split="100MB")


@ONLY_15
def test_very_large_table_copy(clusters, replicator_factory):
    """5 million rows (700 MB), copied whole with COPY FREEZE while writes go on."""
    _large_copy(clusters, replicator_factory, 5_000_000)


@ONLY_13_17
def test_concurrent_writers(clusters, replicator_factory, prerequisites):
    """pgbench -c 8 -T 10 on the source while replicating; then the tables are equal."""
    need_pgbench(prerequisites)
    pair = clusters
    db = make_database(pair, "bench")
    pgbench_init(pair.source, db, scale=2)
    r = start_and_sync(replicator_factory, pair, db)
    n = Pgbench(pair.source, db, ["-c", 8, "-j", 2, "-T", 10]).wait()
    assert n > 0
    wait_caught_up(pair, db, r.origin, r)
    assert_tables_equal(pair, db)
    assert r.errors() == []


@ONLY_15
def test_one_large_transaction(clusters, replicator_factory):
    """One source transaction of a million rows is applied whole."""
    pair = clusters
    db = make_database(pair, "bigxact")
    run_sql(pair.source, db, "CREATE TABLE t (id int PRIMARY KEY, v text)")
    r = start_and_sync(replicator_factory, pair, db)
    n = 1_000_000
    in_transaction(pair.source, db,
                   f"INSERT INTO t SELECT g, 'row ' || g FROM generate_series(1, {n}) g",
                   "UPDATE t SET v = 'updated' WHERE id % 1000 = 0",
                   "DELETE FROM t WHERE id % 1000 = 1")
    wait_caught_up(pair, db, r.origin, r, timeout=1800)
    assert_tables_equal(pair, db)
    assert r.errors() == []


def target_xact_open(target, db):
    """True while the replicator's target connection is inside a transaction that wrote."""
    rows = target.execute("SELECT 1 FROM pg_stat_activity WHERE datname = %s AND application_name = "
                          "'pghandoff' AND backend_xid IS NOT NULL", params=(db,))
    return bool(rows)


@ONLY_13_17
def test_sigterm_inside_large_transaction(clusters, replicator_factory):
    """SIGTERM while a large source transaction is half applied: exit 0, and a restart completes it."""
    pair = clusters
    db = make_database(pair, "stopxact")
    run_sql(pair.source, db, "CREATE TABLE t (id int PRIMARY KEY, v text)")
    r = start_and_sync(replicator_factory, pair, db)
    before = lsn_int(pair.source.execute("SELECT pg_current_wal_insert_lsn()::text")[0][0])
    run_sql(pair.source, db, "INSERT INTO t SELECT g, 'row ' || g FROM generate_series(1, 300000) g")
    wait_for(lambda: target_xact_open(pair.target, db), 120, what="the large transaction being applied",
             interval=0.01, on_timeout=r.log_tail)
    r.stop()
    assert "stopping:" in r.log(since_start=True), r.log_tail()
    # Half a transaction is never committed, nor counted as applied.
    count = query(pair.target, db, "SELECT count(*) FROM t")[0][0]
    if count == 0:
        progress = origin_progress(pair.target, r.origin)
        assert progress <= before, f"origin at {progress:#x}, past the unapplied transaction at {before:#x}"
    else:
        assert count == 300000
    stop_errors = r.errors()
    r.start()
    r.wait_streaming()
    wait_caught_up(pair, db, r.origin, r)
    assert_tables_equal(pair, db)
    assert stop_errors == [], "a clean stop logged errors"


@ONLY_15
def test_two_databases(clusters, replicator_factory):
    """Two databases, one renamed on the target: a child process each, slots named per database."""
    pair = clusters
    db1 = make_database(pair, "multi")
    db2 = make_database(pair, "multi")
    renamed = db2 + "_new"
    for db in (db1, db2):
        run_sql(pair.source, db, "CREATE TABLE t (id int PRIMARY KEY, db text)",
                f"INSERT INTO t SELECT g, '{db}' FROM generate_series(1, 100) g")
    r = replicator_factory(pair, db1, more_databases={db2: renamed})
    wait_for(lambda: r.log().count("streaming from") >= 2, 180, what="both databases streaming",
             on_timeout=r.log_tail)
    slots = sorted(row[0] for row in pair.source.execute(
        "SELECT slot_name FROM pg_replication_slots WHERE slot_name LIKE %s", params=(r.slot + "%",)))
    assert slots == sorted([r.slot_of(db1), r.slot_of(db2)])
    run_sql(pair.source, db1, "UPDATE t SET db = 'changed' WHERE id < 10")
    run_sql(pair.source, db2, "DELETE FROM t WHERE id < 10")
    wait_caught_up(pair, db1, r.slot_of(db1), r)
    wait_caught_up(pair, db2, r.slot_of(db2), r, target_dbname=renamed)
    assert_tables_equal(pair, db1)
    assert_tables_equal(pair, db2, target_dbname=renamed)
    r.stop()  # SIGTERM reaches both children; the parent exits 0


@ONLY_15
def test_second_migration_with_the_same_names(clusters, replicator_factory):
    """Origins are per cluster: a second migration into another target database under the same slot_name
    fails, naming the origin, rather than streaming on from the first one's progress without a copy."""
    pair = clusters
    db = make_database(pair, "clash")
    run_sql(pair.source, db, "CREATE TABLE t (id int PRIMARY KEY, v text)", "INSERT INTO t VALUES (1, 'a')")
    r1 = start_and_sync(replicator_factory, pair, db)
    r1.stop()
    r2 = replicator_factory(pair, db, target_dbname=db + "_second",
                            replication={"slot_name": r1.slot, "publication_name": r1.publication})
    assert r2.wait_exit() != 0
    assert re.search(rf"replication origin {r1.origin} has progress, but target database {db}_second has none",
                     r2.log()), r2.log_tail()
    # The first migration is untouched and goes on.
    r1.start()
    r1.wait_streaming()
    run_sql(pair.source, db, "INSERT INTO t VALUES (2, 'b')")
    wait_caught_up(pair, db, r1.origin, r1)
    assert_tables_equal(pair, db)
    assert r1.errors(since_start=True) == []


@ONLY_13_17
def test_schema_none(clusters, replicator_factory):
    """schema = none: the DBA made the target's tables (columns in another order, one extra)."""
    pair = clusters
    db = make_database(pair, "nosch")
    run_sql(pair.source, db,
            "CREATE TABLE t (id int PRIMARY KEY, a text, b numeric, c timestamptz)",
            "INSERT INTO t SELECT g, 'a' || g, g / 3.0, '2020-01-01 00:00+00'::timestamptz + g * interval '1 min' "
            "FROM generate_series(1, 500) g",
            "CREATE TABLE u (id int PRIMARY KEY, t_id int REFERENCES t)",
            "INSERT INTO u SELECT g, g FROM generate_series(1, 100) g WHERE g % 11 <> 0")
    pair.target.execute(f"CREATE DATABASE {db}")
    # The target's foreign key: the copy may not TRUNCATE ONLY either table.
    run_sql(pair.target, db,
            "CREATE TABLE _sync (id serial PRIMARY KEY, at timestamptz DEFAULT now())",
            "CREATE TABLE t (c timestamptz, extra text DEFAULT 'target only', b numeric, id int PRIMARY KEY, a text)",
            "CREATE TABLE u (id int PRIMARY KEY, t_id int REFERENCES t)")
    r = start_and_sync(replicator_factory, pair, db, replication={"schema": "none"})
    run_sql(pair.source, db,
            "INSERT INTO t VALUES (1000, 'new', 1.5, now())",
            "UPDATE t SET a = 'upd', b = NULL WHERE id % 7 = 0",
            "DELETE FROM t WHERE id % 11 = 0")
    wait_caught_up(pair, db, r.origin, r)
    assert_columns_equal(pair, db, "t", ["a", "b", "c"])
    assert_columns_equal(pair, db, "u", ["t_id"])
    assert query(pair.target, db, "SELECT DISTINCT extra FROM t") == [("target only",)]
    assert r.errors() == []


# ---- crashes and lost connections ------------------------------------------

def children_of(pid):
    """pids of the direct children of pid."""
    out = subprocess.run(["ps", "-o", "pid=,comm=", "--ppid", str(pid)], capture_output=True, text=True).stdout
    return [(int(line.split()[0]), line.split()[1]) for line in out.splitlines() if line.strip()]


@ONLY_15
def test_kill9_during_copy(clusters, replicator_factory):
    """kill -9 at random moments of the copy (up to 3 times), restart: it finishes with equal tables."""
    rng = random.Random(random_seed())
    pair = clusters
    db = make_database(pair, "killcopy")
    fill_wide_table(pair.source, db, 1_000_000)
    run_sql(pair.source, db,
            "CREATE TABLE small (id int PRIMARY KEY, v text)",
            "INSERT INTO small SELECT g, 'v' FROM generate_series(1, 1000) g")
    r = replicator_factory(pair, db, start=False)
    archives_before = set(glob.glob("/tmp/pghandoff-schema-*"))
    kills = 0
    for attempt in range(3):
        r.start()
        r.wait_log(r"copying \d+ table")
        delay = rng.uniform(0, 0.8)
        time.sleep(delay)  # a random moment, not synchronisation
        if "initial copy done" in r.log(since_start=True):
            print(f"attempt {attempt + 1}: the copy ended within {delay:.2f} s, no kill")
            break
        print(f"kill #{attempt + 1} {delay:.2f} s after the copy started")
        r.kill9()
        kills += 1
        # The schema archive is never left behind: its file is unlinked as soon as it is made.
        assert set(glob.glob("/tmp/pghandoff-schema-*")) <= archives_before
        run_sql(pair.source, db, f"INSERT INTO small VALUES ({2000 + attempt}, 'between kills')")
    assert kills > 0, "the copy was always over before the kill: make the table bigger"
    if not r.running():
        r.start()
    r.wait_streaming(timeout=600)
    wait_caught_up(pair, db, r.origin, r, fail_on_error=False)
    assert_tables_equal(pair, db)


@ONLY_15
def test_sigterm_during_copy(clusters, replicator_factory):
    """SIGTERM in the middle of the copy: a prompt, clean exit 0; the next run copies again."""
    pair = clusters
    db = make_database(pair, "stopcopy")
    fill_wide_table(pair.source, db, 1_000_000)
    r = replicator_factory(pair, db)
    r.wait_log(r"copying public\.big")
    r.stop()
    log = r.log(since_start=True)
    assert "stopped by request before the initial sync completed" in log, r.log_tail()
    assert "initial copy done" not in log
    assert r.errors(since_start=True) == []
    assert origin_progress(pair.target, r.origin) in (None, 0)
    r.start()
    r.wait_streaming(timeout=600)
    wait_caught_up(pair, db, r.origin, r)
    assert_tables_equal(pair, db)
    # By default a table of any size is copied whole (and frozen), not in ctid ranges.
    log = r.log(since_start=True)
    assert "copied public.big: 1000000 rows" in log and "where ctid" not in log, r.log_tail()


@ONLY_15
def test_kill9_during_schema_copy(clusters, replicator_factory):
    """kill -9 while the pre-data schema is being restored on the target, restart: it finishes.

    The restore tool (pg_restore, or psql fed by pg_dump) outlives its killed
    parent and completes, as it would after a crash of the replicator alone:
    the target then has the tables but the replicator has not recorded
    anything yet.
    """
    pair = clusters
    db = make_database(pair, "killschema")
    # Enough objects that the restore takes a moment to catch.
    run_sql(pair.source, db,
            "CREATE TABLE t (id int PRIMARY KEY, v text)",
            "INSERT INTO t SELECT g, 'v' FROM generate_series(1, 100) g",
            "DO $$ BEGIN FOR i IN 1..150 LOOP EXECUTE format("
            "'CREATE TABLE extra_%s (id int PRIMARY KEY, a text, b int CHECK (b > 0))', i); END LOOP; END $$")
    r = replicator_factory(pair, db)

    def loader():
        if r.proc.poll() is not None:
            pytest.fail(f"replicator exited before restoring the schema:\n{r.log_tail()}", pytrace=False)
        return [c for c in children_of(r.proc.pid) if c[1] in ("pg_restore", "psql")]

    kids = wait_for(loader, 120, what="the schema restore started by the replicator", interval=0.005)
    r.kill9()
    print(f"killed the replicator while {kids} ran")
    # What a crash leaves: the restore finishes on its own.
    wait_for(lambda: all(not os.path.exists(f"/proc/{pid}") for pid, _ in kids), 60,
             what="the orphaned restore to end")
    assert query(pair.target, db, "SELECT count(*) FROM pg_class WHERE relname = 't'")[0][0] == 1
    r.start()
    r.wait_streaming()
    wait_caught_up(pair, db, r.origin, r, fail_on_error=False)
    assert_tables_equal(pair, db)


@ONLY_13_17
def test_kill9_during_streaming(clusters, replicator_factory, prerequisites):
    """kill -9 five times while pgbench writes; restart each time; nothing lost or doubled."""
    need_pgbench(prerequisites)
    rng = random.Random(random_seed())
    pair = clusters
    db = make_database(pair, "killstream")
    pgbench_init(pair.source, db, scale=1)
    r = start_and_sync(replicator_factory, pair, db)
    bench = Pgbench(pair.source, db, ["-c", 4, "-j", 2, "-T", 600, "-R", 300])
    try:
        for attempt in range(5):
            # Wait for changes to be applied in this run, then kill at a random moment.
            r.wait_log(r"committed \d+ source transaction")
            delay = rng.uniform(0, 1.5)
            print(f"kill #{attempt + 1} {delay:.2f} s after the first commit of the run")
            time.sleep(delay)  # a random moment, not synchronisation
            r.kill9()
            r.start()
            r.wait_streaming()
        assert bench.running(), f"pgbench ended early:\n{bench.proc.stderr.read()}"
    finally:
        bench.interrupt()
    wait_caught_up(pair, db, r.origin, r, fail_on_error=False)
    assert_tables_equal(pair, db)


def slot_pid(source, slot):
    rows = source.execute("SELECT active_pid FROM pg_replication_slots WHERE slot_name = %s", params=(slot,))
    return rows[0][0] if rows else None


def apply_pids(target, db):
    rows = target.execute("SELECT pid FROM pg_stat_activity WHERE datname = %s AND application_name = "
                          "'pghandoff' AND backend_type = 'client backend'", params=(db,))
    return [row[0] for row in rows]


@ONLY_15
def test_walsender_terminated(clusters, replicator_factory, prerequisites):
    """pg_terminate_backend of its walsender, twice, while writes go on: it reconnects."""
    need_pgbench(prerequisites)
    pair = clusters
    db = make_database(pair, "killwal")
    pgbench_init(pair.source, db, scale=1)
    r = start_and_sync(replicator_factory, pair, db)
    bench = Pgbench(pair.source, db, ["-c", 2, "-T", 600, "-R", 200])
    try:
        for _ in range(2):
            pid = wait_for(lambda: slot_pid(pair.source, r.slot), 60, what="an active walsender")
            assert pair.source.execute("SELECT pg_terminate_backend(%s)", params=(pid,))[0][0]
            wait_for(lambda: slot_pid(pair.source, r.slot) not in (None, pid), 120,
                     what="a new walsender", on_timeout=r.log_tail)
        assert bench.running()
    finally:
        bench.interrupt()
    wait_caught_up(pair, db, r.origin, r, fail_on_error=False)
    assert_tables_equal(pair, db)
    assert r.running()


@ONLY_15
def test_apply_backend_terminated(clusters, replicator_factory, prerequisites):
    """pg_terminate_backend of its target connection, twice, while writes go on: it reconnects."""
    need_pgbench(prerequisites)
    pair = clusters
    db = make_database(pair, "killapply")
    pgbench_init(pair.source, db, scale=1)
    r = start_and_sync(replicator_factory, pair, db)
    bench = Pgbench(pair.source, db, ["-c", 2, "-T", 600, "-R", 200])
    try:
        for _ in range(2):
            pids = wait_for(lambda: apply_pids(pair.target, db), 60, what="the apply connection")
            assert len(pids) == 1, f"expected one apply connection, found {pids}"
            assert pair.target.execute("SELECT pg_terminate_backend(%s)", params=(pids[0],))[0][0]
            wait_for(lambda: [p for p in apply_pids(pair.target, db) if p != pids[0]], 120,
                     what="a new apply connection", on_timeout=r.log_tail)
        assert bench.running()
    finally:
        bench.interrupt()
    wait_caught_up(pair, db, r.origin, r, fail_on_error=False)
    assert_tables_equal(pair, db)
    assert r.running()


@ONLY_13_17
def test_source_restart(clusters, replicator_factory, prerequisites):
    """pg_ctl restart of the source during streaming: it reconnects and catches up."""
    need_pgbench(prerequisites)
    pair = clusters
    db = make_database(pair, "restart")
    pgbench_init(pair.source, db, scale=1)
    r = start_and_sync(replicator_factory, pair, db)
    Pgbench(pair.source, db, ["-c", 2, "-t", 200]).wait()
    pair.source.restart()
    Pgbench(pair.source, db, ["-c", 2, "-t", 200]).wait()
    wait_caught_up(pair, db, r.origin, r, fail_on_error=False)
    assert_tables_equal(pair, db)
    assert r.running()
    assert re.search(r"retrying in \d+ s", r.log()), "no retry after the restart?\n" + r.log_tail()


@ONLY_13_17
def test_target_crash(clusters, replicator_factory, prerequisites):
    """The target crashes (immediate stop) while changes stream in: nothing is lost.

    Commits on the target may be asynchronous: what the crash took back must
    come again from the source.
    """
    need_pgbench(prerequisites)
    pair = clusters
    db = make_database(pair, "tcrash")
    pgbench_init(pair.source, db, scale=1)
    r = start_and_sync(replicator_factory, pair, db)
    bench = Pgbench(pair.source, db, ["-c", 4, "-j", 2, "-T", 600, "-R", 300])
    try:
        for _ in range(2):
            r.wait_log(r"committed \d+ source transaction")
            pair.target.stop(mode="immediate")
            pair.target.start()
            mark = len(r.log())
            wait_for(lambda: re.search(r"committed \d+ source transaction", r.log()[mark:]), 120,
                     what="changes applied after the target restarted", on_timeout=r.log_tail)
        assert bench.running()
    finally:
        bench.interrupt()
    wait_caught_up(pair, db, r.origin, r, fail_on_error=False)
    assert_tables_equal(pair, db)


def test_restart_resumes_without_copy(clusters, replicator_factory):
    """SIGTERM, changes while stopped, start again: streaming resumes from the origin."""
    pair = clusters
    db = make_database(pair, "resume")
    run_sql(pair.source, db, "CREATE TABLE t (id int PRIMARY KEY, v text)",
            "INSERT INTO t SELECT g, 'v' FROM generate_series(1, 100) g")
    r = start_and_sync(replicator_factory, pair, db)
    r.stop()
    assert "stopping:" in r.log(since_start=True)
    progress = origin_progress(pair.target, r.origin)
    run_sql(pair.source, db, "INSERT INTO t VALUES (1000, 'while stopped')", "DELETE FROM t WHERE id = 1")
    r.start()
    m = r.wait_log(r"streaming resumes from the target's replication origin at ([0-9A-F]+/[0-9A-F]+)")
    assert lsn_int(m.group(1)) == progress
    assert "copying" not in r.log(since_start=True)
    wait_caught_up(pair, db, r.origin, r)
    assert_tables_equal(pair, db)


# ---- DDL -------------------------------------------------------------------

def test_ddl_add_column(clusters, replicator_factory):
    """With ddl = stop, a column added on the source stops applying with the table, the column
    and the statement named; adding it on the target lets it resume by itself."""
    pair = clusters
    db = make_database(pair, "ddl")
    run_sql(pair.source, db,
            "CREATE TABLE t (id int PRIMARY KEY, v text)",
            "CREATE TABLE other (id int PRIMARY KEY)",
            "INSERT INTO t SELECT g, 'v' FROM generate_series(1, 10) g")
    r = start_and_sync(replicator_factory, pair, db, replication={"ddl": "stop"})
    run_sql(pair.source, db, "ALTER TABLE t ADD COLUMN c int")
    # Where the first transaction with the new column begins (the ALTER itself
    # may come as an empty transaction from a 13 source, and be applied).
    before = lsn_int(pair.source.execute("SELECT pg_current_wal_insert_lsn()::text")[0][0])
    run_sql(pair.source, db,
            "INSERT INTO t VALUES (11, 'with c', 42), (12, 'with c', 43)",
            "INSERT INTO other VALUES (1)")
    r.wait_log(r"ERROR .*public\.t\b.*\bc\b")
    line = [l for l in r.errors(since_start=True) if "public.t" in l][0]
    assert "public.t" in line and "column c" in line, line
    assert any("ALTER TABLE t ADD COLUMN c int" in l for l in r.errors(since_start=True)), r.log_tail()
    # Nothing after the change is applied without its column, and nothing later either.
    assert query(pair.target, db, "SELECT count(*) FROM t")[0][0] == 10
    assert query(pair.target, db, "SELECT count(*) FROM other")[0][0] == 0
    progress = origin_progress(pair.target, r.origin)
    assert progress <= before, f"origin at {progress:#x}, past the failed transaction at {before:#x}"
    r.wait_log(r"retrying in \d+ s")
    assert r.running()

    pair.target.execute("ALTER TABLE t ADD COLUMN c int", dbname=db)
    wait_caught_up(pair, db, r.origin, r, fail_on_error=False)
    assert_tables_equal(pair, db)
    assert query(pair.target, db, "SELECT id, c FROM t WHERE id > 10 ORDER BY id") == [(11, 42), (12, 43)]


def test_commit_failure_on_target(clusters, replicator_factory):
    """A target transaction that fails at COMMIT is applied again once the target is fixed.

    A deferred trigger (ENABLE ALWAYS, so it fires under session_replication_role
    = replica) rejects one row at COMMIT.  Nothing of the failed group may be
    counted as applied: the origin must stay before it, and after the trigger
    is dropped every row arrives.
    """
    pair = clusters
    db = make_database(pair, "commitfail")
    run_sql(pair.source, db, "CREATE TABLE t (id int PRIMARY KEY, v text)",
            "INSERT INTO t VALUES (1, 'copied')")
    r = start_and_sync(replicator_factory, pair, db)
    run_sql(pair.target, db,
            "CREATE FUNCTION reject_poison() RETURNS trigger LANGUAGE plpgsql AS "
            "$$ BEGIN IF NEW.v = 'poison' THEN RAISE EXCEPTION 'poison row %', NEW.id; END IF; "
            "RETURN NULL; END $$",
            "CREATE CONSTRAINT TRIGGER poison AFTER INSERT ON t DEFERRABLE INITIALLY DEFERRED "
            "FOR EACH ROW EXECUTE FUNCTION reject_poison()",
            "ALTER TABLE t ENABLE ALWAYS TRIGGER poison")
    before = lsn_int(pair.source.execute("SELECT pg_current_wal_insert_lsn()::text")[0][0])
    in_transaction(pair.source, db, "INSERT INTO t VALUES (2, 'ok')", "INSERT INTO t VALUES (3, 'poison')")
    run_sql(pair.source, db, "INSERT INTO t VALUES (4, 'after')")
    r.wait_log(r"ERROR .*poison row 3")
    progress = origin_progress(pair.target, r.origin)
    assert progress <= before, \
        (f"the target rolled back the group, yet origin {r.origin} moved to {progress:#x}, past "
         f"{before:#x} where the failed transaction begins: a restart skips it")
    assert query(pair.target, db, "SELECT count(*) FROM t")[0][0] == 1

    run_sql(pair.target, db, "DROP TRIGGER poison ON t")
    wait_caught_up(pair, db, r.origin, r, fail_on_error=False)
    assert_tables_equal(pair, db)


@pytest.mark.parametrize("key", ["PRIMARY KEY", "REPLICA IDENTITY FULL"])
def test_apply_error_names_the_table(clusters, replicator_factory, key):
    """A change the target rejects with a message that does not name the table: the log names it."""
    pair = clusters
    db = make_database(pair, "applyerr")
    ddl = ("CREATE TABLE other (id int PRIMARY KEY)",
           "CREATE TABLE picky (id int PRIMARY KEY, v text)" if key == "PRIMARY KEY" else
           "CREATE TABLE picky (id int, v text)",
           *(["ALTER TABLE picky REPLICA IDENTITY FULL"] if key != "PRIMARY KEY" else []))
    run_sql(pair.source, db, *ddl)
    r = start_and_sync(replicator_factory, pair, db)
    run_sql(pair.target, db,
            "CREATE FUNCTION refuse() RETURNS trigger LANGUAGE plpgsql AS "
            "$$ BEGIN IF NEW.v = 'no' THEN RAISE EXCEPTION 'refused row %', NEW.id; END IF; RETURN NEW; END $$",
            "CREATE TRIGGER refuse BEFORE INSERT ON picky FOR EACH ROW EXECUTE FUNCTION refuse()",
            "ALTER TABLE picky ENABLE ALWAYS TRIGGER refuse")
    in_transaction(pair.source, db, "INSERT INTO other VALUES (1)", "INSERT INTO picky VALUES (1, 'yes')",
                   "INSERT INTO picky VALUES (2, 'no')", "INSERT INTO other VALUES (2)")
    r.wait_log(r"ERROR .*public\.picky.*refused row 2")
    run_sql(pair.target, db, "DROP TRIGGER refuse ON picky")
    wait_caught_up(pair, db, r.origin, r, fail_on_error=False)
    assert_tables_equal(pair, db)


# ---- --drop ----------------------------------------------------------------

@ONLY_15
def test_drop(clusters, replicator_factory):
    """`replicate --drop` removes the slot and publication (source) and the origin (target)."""
    pair = clusters
    db = make_database(pair, "drop")
    run_sql(pair.source, db, "CREATE TABLE t (id int PRIMARY KEY)", "INSERT INTO t VALUES (1)")
    # The default names: one database, so slot, publication and origin are all "pghandoff".
    r = start_and_sync(replicator_factory, pair, db,
                       replication={"slot_name": None, "publication_name": None})
    assert r.slot == "pghandoff"
    assert pair.source.execute("SELECT slot_name, database FROM pg_replication_slots "
                               "WHERE slot_name = 'pghandoff'") == [("pghandoff", db)]
    assert query(pair.source, db, "SELECT pubname, puballtables FROM pg_publication") == [("pghandoff", True)]
    assert pair.target.execute("SELECT roname FROM pg_replication_origin "
                               "WHERE roname = 'pghandoff'") == [("pghandoff",)]
    r.stop()
    result = r.drop()
    assert result.returncode == 0, result.stderr
    assert not any(m in result.stderr for m in ("AddressSanitizer", "LeakSanitizer", "runtime error"))
    assert pair.source.execute("SELECT slot_name FROM pg_replication_slots WHERE slot_name = 'pghandoff'") == []
    assert query(pair.source, db, "SELECT pubname FROM pg_publication") == []
    assert pair.target.execute("SELECT roname FROM pg_replication_origin WHERE roname = 'pghandoff'") == []
    # Again: nothing left to drop is no error.
    again = r.drop()
    assert again.returncode == 0, again.stderr


@ONLY_15
def test_drop_while_running(clusters, replicator_factory, prerequisites):
    """--drop while the replicator streams a busy source: its walsender is ended, everything removed."""
    need_pgbench(prerequisites)
    pair = clusters
    db = make_database(pair, "droprun")
    pgbench_init(pair.source, db, scale=1)
    r = start_and_sync(replicator_factory, pair, db)
    assert pair.source.execute("SELECT active FROM pg_replication_slots WHERE slot_name = %s",
                               params=(r.slot,)) == [(True,)]
    bench = Pgbench(pair.source, db, ["-c", 4, "-j", 2, "-T", 600])
    try:
        r.wait_log(r"committed \d+ source transaction\(s\), \d+ change\(s\)")
        result = r.drop()
    finally:
        bench.interrupt()
    assert result.returncode == 0, result.stderr
    assert pair.source.execute("SELECT slot_name FROM pg_replication_slots WHERE slot_name = %s",
                               params=(r.slot,)) == []
    assert query(pair.source, db, "SELECT pubname FROM pg_publication") == []
    assert pair.target.execute("SELECT roname FROM pg_replication_origin WHERE roname = %s",
                               params=(r.origin,)) == []


# ---- the cutover's marker and origins ---------------------------------------

def test_cutover_marker_moves_origin(clusters, replicator_factory):
    """A transaction holding only a logical message moves the origin past it.

    The cutover emits pg_logical_emit_message(true, 'pghandoff', 'cutover') on
    the fenced source and waits for the target's origin to reach the LSN it
    returns.  With nothing else written: from 15 pgoutput leaves an empty
    transaction out unless messages are asked for, and on the target a
    transaction that wrote nothing has no commit record to carry the origin.
    """
    pair = clusters
    db = make_database(pair, "marker")
    run_sql(pair.source, db, "CREATE TABLE t (id int PRIMARY KEY)", "INSERT INTO t VALUES (1)")
    r = start_and_sync(replicator_factory, pair, db)
    before = query(pair.target, db, "SELECT count(*) FROM t")
    for n in range(3):
        lsn = lsn_int(query(pair.source, db,
                            "SELECT pg_logical_emit_message(true, 'pghandoff', 'cutover')::text")[0][0])
        wait_for(lambda: (origin_progress(pair.target, r.origin) or 0) >= lsn, 60,
                 what=f"origin {r.origin} past the marker at {lsn:#x} (round {n})", on_timeout=r.log_tail)
    # A message outside any transaction is no transaction: nothing to apply, no error.
    run_sql(pair.source, db, "SELECT pg_logical_emit_message(false, 'other', 'not transactional')")
    wait_caught_up(pair, db, r.origin, r)
    assert query(pair.target, db, "SELECT count(*) FROM t") == before
    assert not r.errors()


def test_origins_skipped_and_applied(clusters, replicator_factory):
    """Transactions of the reverse follower's origin are skipped, other origins applied.

    A session on the source that set up the reverse origin stands for the
    reverse follower: its rows must not come back to the target, yet the
    forward origin must move past its commit.  A session with any other origin
    (a source that itself subscribes to something) is applied as before.
    """
    pair = clusters
    db = make_database(pair, "origins")
    run_sql(pair.source, db, "CREATE TABLE t (id int PRIMARY KEY, v text)")
    r = start_and_sync(replicator_factory, pair, db)
    elsewhere = f"elsewhere_{db}"
    for name in (elsewhere, r.reverse_origin):
        pair.source.execute("SELECT pg_replication_origin_create(%s)", params=(name,))
    try:
        def write_as(origin, *statements):
            """Statements in one transaction of a session with origin set; its commit's end LSN."""
            with connect(pair.source, db) as conn:
                conn.execute("SELECT pg_replication_origin_session_setup(%s)", (origin,))
                with conn.transaction():
                    for sql in statements:
                        conn.execute(sql)
                end = conn.execute("SELECT local_lsn::text FROM pg_replication_origin_status "
                                   "WHERE external_id = %s", (origin,)).fetchone()[0]
                conn.execute("SELECT pg_replication_origin_session_reset()")
            return lsn_int(end)

        write_as(elsewhere, "INSERT INTO t VALUES (1, 'from elsewhere')")
        skipped_end = write_as(r.reverse_origin, "INSERT INTO t VALUES (2, 'came back')",
                               "UPDATE t SET v = 'changed by the way back' WHERE id = 1")
        # Nothing else written: the skipped transaction alone must move the origin.
        wait_for(lambda: (origin_progress(pair.target, r.origin) or 0) >= skipped_end, 60,
                 what=f"origin {r.origin} past the skipped transaction ending at {skipped_end:#x}",
                 on_timeout=r.log_tail)
        run_sql(pair.source, db, "INSERT INTO t VALUES (3, 'plain')")
        wait_caught_up(pair, db, r.origin, r)
        assert query(pair.target, db, "SELECT id, v FROM t ORDER BY id") == \
            [(1, "from elsewhere"), (3, "plain")]
        assert re.search(rf"skipping a transaction of origin {r.reverse_origin}\b", r.log())
        assert not r.errors()
    finally:
        for name in (elsewhere, r.reverse_origin):
            pair.source.execute("SELECT pg_replication_origin_drop(roname) FROM pg_replication_origin "
                                "WHERE roname = %s", params=(name,))


# The post-data objects of every kind the index builder takes or leaves to
# pg_restore; the comments say which.
POST_DATA_SCHEMA = [
    # built: a_pkey, a_code_key (constraints), a_v_partial, a_lower, a_id_inc, a_v_idx,
    # a_code_hash, a_doc_gin
    "CREATE TABLE a (id int PRIMARY KEY, code text UNIQUE, u2 int UNIQUE DEFERRABLE INITIALLY DEFERRED, "
    "  v int, r int4range, doc jsonb, EXCLUDE USING gist (r WITH &&))",
    "CREATE INDEX a_v_partial ON a (v) WHERE v > 0",
    "CREATE INDEX a_lower ON a (lower(code))",
    "CREATE INDEX a_lower_stats ON a (lower(code), (v + 1))",      # pg_restore: statistics target
    "ALTER INDEX a_lower_stats ALTER COLUMN 2 SET STATISTICS 500",
    "CREATE UNIQUE INDEX a_id_inc ON a (id) INCLUDE (code)",
    "CREATE INDEX a_v_idx ON a (v DESC NULLS LAST)",
    "ALTER TABLE a CLUSTER ON a_v_idx",
    "CREATE INDEX a_code_hash ON a USING hash (code)",
    "CREATE INDEX a_doc_gin ON a USING gin (doc)",
    "COMMENT ON INDEX a_lower IS 'lower-case code'",
    "COMMENT ON CONSTRAINT a_code_key ON a IS 'codes are unique'",
    # pg_restore: a primary key with INCLUDE columns cannot be attached USING INDEX
    "CREATE TABLE b (id int, x int, PRIMARY KEY (id) INCLUDE (x))",
    # built: c_pkey (constraint), c_k (and the replica identity that uses it)
    "CREATE TABLE c (id int PRIMARY KEY, k int NOT NULL, v text)",
    "CREATE UNIQUE INDEX c_k ON c (k)",
    "ALTER TABLE c REPLICA IDENTITY USING INDEX c_k",
    # built: d_pkey (constraint); pg_restore: the foreign key, which needs a_code_key
    "CREATE TABLE d (id int PRIMARY KEY, code text REFERENCES a (code))",
    # pg_restore: partitioned and inherited tables
    "CREATE TABLE p (id int, ts date, PRIMARY KEY (id, ts)) PARTITION BY RANGE (ts)",
    "CREATE TABLE p_2024 PARTITION OF p FOR VALUES FROM ('2024-01-01') TO ('2025-01-01')",
    "CREATE INDEX p_ts ON p (ts)",
    "CREATE TABLE parent (id int PRIMARY KEY)",
    "CREATE TABLE child (extra int) INHERITS (parent)",
    "ALTER TABLE child REPLICA IDENTITY FULL",
    "CREATE INDEX child_extra ON child (extra)",
    "INSERT INTO a SELECT g, 'C' || g, g, g % 50, int4range(g * 10, g * 10 + 5), "
    "  jsonb_build_object('g', g) FROM generate_series(1, 3000) g",
    "INSERT INTO b SELECT g, g FROM generate_series(1, 100) g",
    "INSERT INTO c SELECT g, g * 2, 'c' || g FROM generate_series(1, 500) g",
    "INSERT INTO d SELECT g, 'C' || g FROM generate_series(1, 200) g",
    "INSERT INTO p SELECT g, date '2024-01-01' + g % 300 FROM generate_series(1, 400) g",
    "INSERT INTO child SELECT g, g FROM generate_series(1, 50) g",
]
# The "built:" entries above, and make_database's _sync table and its primary key.
POST_DATA_BUILT = 11 + 1
POST_DATA_BUILT_CONSTRAINTS = 4 + 1

POST_DATA_DESCRIPTION = [
    # Every index with its definition, validity, CLUSTER ON, replica identity, comment and statistics targets.
    "SELECT i.indexrelid::regclass::text, pg_get_indexdef(i.indexrelid), i.indisvalid, i.indisclustered, "
    "  i.indisreplident, obj_description(i.indexrelid, 'pg_class'), "
    "  (SELECT string_agg(coalesce(a.attstattarget, -1)::text, ',' ORDER BY a.attnum) "
    "   FROM pg_attribute a WHERE a.attrelid = i.indexrelid) "
    "FROM pg_index i JOIN pg_class c ON c.oid = i.indrelid JOIN pg_namespace n ON n.oid = c.relnamespace "
    "WHERE n.nspname = 'public' ORDER BY 1",
    # Every constraint with its definition, deferrability, backing index and comment.
    "SELECT conrelid::regclass::text, conname, pg_get_constraintdef(oid), condeferrable, condeferred, "
    "  conindid::regclass::text, obj_description(oid, 'pg_constraint') "
    "FROM pg_constraint WHERE connamespace = 'public'::regnamespace ORDER BY 1, 2",
    "SELECT relname, relreplident FROM pg_class WHERE relnamespace = 'public'::regnamespace "
    "AND relkind IN ('r', 'p') ORDER BY 1",
]


def test_post_data_built_side_by_side(clusters, replicator_factory):
    """Indexes and constraints built by pghandoff or by pg_restore: the target's are the source's."""
    pair = clusters
    db = make_database(pair, "postdata")
    run_sql(pair.source, db, *POST_DATA_SCHEMA)
    r = start_and_sync(replicator_factory, pair, db)
    assert re.search(rf"built {POST_DATA_BUILT} index\(es\), {POST_DATA_BUILT_CONSTRAINTS} of them for a "
                     r"primary key or unique constraint", r.log()), r.log_tail()
    for sql in POST_DATA_DESCRIPTION:
        assert query(pair.target, db, sql) == query(pair.source, db, sql), sql
    assert_tables_equal(pair, db)

    # The constraints work on the target, and updates stream through the replica identity index.
    run_sql(pair.source, db, "UPDATE c SET v = v || '!' WHERE id % 3 = 0", "DELETE FROM c WHERE id % 7 = 0",
            "UPDATE a SET v = v + 1 WHERE id % 5 = 0")
    wait_caught_up(pair, db, r.origin, r)
    assert_tables_equal(pair, db)
    with pytest.raises(Exception, match="a_code_key|duplicate key"):
        run_sql(pair.target, db, "INSERT INTO a (id, code) VALUES (100000, 'C1')")
    with pytest.raises(Exception, match="d_code_fkey|foreign key"):
        run_sql(pair.target, db, "INSERT INTO d VALUES (100000, 'no such code')")
    assert r.errors() == []


@pytest.mark.parametrize("batched", [False, True], ids=["exact", "batched"])
def test_apply_error_names_the_change(clusters, replicator_factory, batched):
    """A change the target refuses: the error names its message type, table, transaction and commit LSN."""
    db = make_database(clusters)
    run_sql(clusters.source, db, "CREATE TABLE t (id int PRIMARY KEY, v int)")
    r = start_and_sync(replicator_factory, clusters, db)
    # The target refuses what the source allows.
    run_sql(clusters.target, db, "ALTER TABLE t ADD CONSTRAINT small CHECK (v < 100) NOT VALID")
    before = lsn_int(query(clusters.source, db, "SELECT pg_current_wal_lsn()::text")[0][0])
    with connect(clusters.source, db) as conn:
        with conn.transaction():
            xid = conn.execute("SELECT txid_current()").fetchone()[0] & 0xFFFFFFFF
            # Many rows make the group a batch; one row goes the exact way.
            conn.execute("INSERT INTO t SELECT g, 1 FROM generate_series(1, %s) g" % (500 if batched else 1))
            conn.execute("UPDATE t SET v = 500 WHERE id = 1")
    after = lsn_int(query(clusters.source, db, "SELECT pg_current_wal_lsn()::text")[0][0])
    m = r.wait_log(r"applying (\w+) to public\.t \(relation \d+\) of source transaction (\d+), "
                   r"committed at ([0-9A-F]+/[0-9A-F]+), failed: .*small", since_start=False)
    # A batch that fails is applied again change by change: the error names the one change.
    assert m.group(1) == "Update", m.group(0)
    assert int(m.group(2)) == xid, (m.group(0), xid)
    assert before <= lsn_int(m.group(3)) <= after, (m.group(0), before, after)
