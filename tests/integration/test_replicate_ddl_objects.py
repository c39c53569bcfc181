"""Schema changes on the kinds of objects the migration sequence leaves out, replayed on the target.

Materialized views (made, refreshed, dropped), composite types, domains,
partitions detached, comments, grants on replicated objects, DROP SCHEMA
CASCADE, extensions; and DDL from inside a DO block, which is refused with a clear error.
Each test compares the catalogs of both sides for what it changed, and the
tables.  Parametrized over 13 -> 17 and 15 -> 15 like test_replicate_ddl.py.
"""

import re

import pytest

from replfixtures import (  # noqa: F401  (fixtures are used by name)
    run_sql,
    in_transaction,
    start_and_sync,
    assert_tables_equal,
    cluster_pool,
    clusters,
    connect,
    make_database,
    query,
    replicator_factory,
    wait_caught_up,
)
from test_replicate_ddl import assert_in_sync


def same_on_both(pair, db, sql):
    src, tgt = query(pair.source, db, sql), query(pair.target, db, sql)
    assert src == tgt, f"{sql}\nsource: {src}\ntarget: {tgt}"
    return src


def test_materialized_views(clusters, replicator_factory):
    """CREATE, REFRESH (plain and CONCURRENTLY), DROP MATERIALIZED VIEW: the target's view holds what the
    source's does at each step, computed from the target's own rows."""
    pair = clusters
    db = make_database(pair, "ddlmatview")
    run_sql(pair.source, db, "CREATE TABLE t (id int PRIMARY KEY, grp int)",
            "INSERT INTO t SELECT g, g % 3 FROM generate_series(1, 30) g")
    r = start_and_sync(replicator_factory, pair, db)
    count_sql = "SELECT grp, n FROM per_group ORDER BY grp"
    run_sql(pair.source, db, "CREATE MATERIALIZED VIEW per_group AS SELECT grp, count(*) AS n FROM t GROUP BY grp",
            "CREATE UNIQUE INDEX per_group_grp ON per_group (grp)",
            "CREATE MATERIALIZED VIEW later AS SELECT id FROM t WITH NO DATA")
    assert_in_sync(pair, db, r)
    assert same_on_both(pair, db, count_sql) == [(0, 10), (1, 10), (2, 10)]
    assert same_on_both(pair, db, "SELECT relispopulated FROM pg_class WHERE relname = 'later'") == [(False,)]
    # Rows change, the view does not until it is refreshed, on both sides.
    run_sql(pair.source, db, "INSERT INTO t SELECT g, 0 FROM generate_series(31, 35) g")
    assert_in_sync(pair, db, r)
    assert same_on_both(pair, db, count_sql)[0] == (0, 10)
    run_sql(pair.source, db, "REFRESH MATERIALIZED VIEW per_group", "INSERT INTO t VALUES (36, 1)",
            "REFRESH MATERIALIZED VIEW CONCURRENTLY per_group", "REFRESH MATERIALIZED VIEW later")
    assert_in_sync(pair, db, r)
    assert same_on_both(pair, db, count_sql) == [(0, 15), (1, 11), (2, 10)]
    assert same_on_both(pair, db, "SELECT count(*) FROM later") == [(36,)]
    run_sql(pair.source, db, "ALTER MATERIALIZED VIEW later RENAME TO renamed", "DROP MATERIALIZED VIEW per_group")
    assert_in_sync(pair, db, r)
    assert same_on_both(pair, db, "SELECT matviewname FROM pg_matviews ORDER BY 1") == [("renamed",)]


def test_composite_types_and_domains(clusters, replicator_factory):
    """Composite types and domains made, altered and used by columns; their values arrive as the source wrote them."""
    pair = clusters
    db = make_database(pair, "ddltypes")
    run_sql(pair.source, db, "CREATE TABLE t (id int PRIMARY KEY)")
    r = start_and_sync(replicator_factory, pair, db)
    run_sql(pair.source, db,
            "CREATE TYPE address AS (street text, zip int)",
            "CREATE DOMAIN zipcode AS int CHECK (VALUE BETWEEN 1000 AND 99999)",
            "CREATE DOMAIN short_text AS text",
            "ALTER TABLE t ADD COLUMN home address, ADD COLUMN zip zipcode, ADD COLUMN note short_text",
            "INSERT INTO t VALUES (1, ROW('Main St', 12345), 12345, 'a')")
    in_transaction(pair.source, db,
                   "ALTER TYPE address ADD ATTRIBUTE city text",
                   "ALTER TYPE address RENAME ATTRIBUTE street TO line1",
                   "ALTER DOMAIN short_text ADD CONSTRAINT short CHECK (length(VALUE) < 10)",
                   "ALTER DOMAIN zipcode SET DEFAULT 1000",
                   "INSERT INTO t (id, home, note) VALUES (2, ROW('Side St', 2000, 'Town'), 'b')")
    run_sql(pair.source, db, "ALTER DOMAIN short_text RENAME CONSTRAINT short TO brief")
    assert_in_sync(pair, db, r)
    same_on_both(pair, db, "SELECT a.attname, format_type(a.atttypid, a.atttypmod) FROM pg_attribute a "
                           "WHERE a.attrelid = 'address'::regclass AND a.attnum > 0 AND NOT a.attisdropped "
                           "ORDER BY a.attnum")
    assert same_on_both(pair, db, "SELECT t.typname, c.conname, pg_get_constraintdef(c.oid), t.typdefault "
                                  "FROM pg_constraint c JOIN pg_type t ON t.oid = c.contypid "
                                  "WHERE t.typnamespace = 'public'::regnamespace ORDER BY 1, 2") == [
        ("short_text", "brief", "CHECK ((length(VALUE) < 10))", None),
        ("zipcode", "zipcode_check", "CHECK (((VALUE >= 1000) AND (VALUE <= 99999)))", "1000")]
    assert query(pair.target, db, "SELECT id, (home).line1, (home).city, zip FROM t ORDER BY id") == [
        (1, "Main St", None, 12345), (2, "Side St", "Town", 1000)]
    run_sql(pair.source, db, "ALTER TABLE t DROP COLUMN home", "DROP TYPE address", "ALTER TABLE t DROP COLUMN zip",
            "DROP DOMAIN zipcode")
    assert_in_sync(pair, db, r)
    assert query(pair.target, db, "SELECT to_regtype('address'), to_regtype('zipcode')") == [(None, None)]


def test_detach_partition(clusters, replicator_factory):
    """A partition detached (CONCURRENTLY too, from 14 on): it goes on as a table of its own on both sides."""
    pair = clusters
    db = make_database(pair, "ddldetach")
    run_sql(pair.source, db,
            "CREATE TABLE events (id int NOT NULL, at date NOT NULL, what text, PRIMARY KEY (id, at)) "
            "PARTITION BY RANGE (at)",
            "CREATE TABLE events_2023 PARTITION OF events FOR VALUES FROM ('2023-01-01') TO ('2024-01-01')",
            "CREATE TABLE events_2024 PARTITION OF events FOR VALUES FROM ('2024-01-01') TO ('2025-01-01')",
            "INSERT INTO events VALUES (1, '2023-05-01', 'old'), (2, '2024-05-01', 'new')")
    r = start_and_sync(replicator_factory, pair, db)
    run_sql(pair.source, db, "ALTER TABLE events DETACH PARTITION events_2023",
            "INSERT INTO events_2023 VALUES (3, '2023-06-01', 'written to the detached table')",
            "UPDATE events_2023 SET what = 'still old' WHERE id = 1")
    if pair.source.major >= 14:
        run_sql(pair.source, db, "ALTER TABLE events DETACH PARTITION events_2024 CONCURRENTLY",
                "INSERT INTO events_2024 VALUES (4, '2024-07-01', 'after a concurrent detach')")
    assert_in_sync(pair, db, r)
    detached = same_on_both(pair, db, "SELECT c.relname FROM pg_class c WHERE c.relname LIKE 'events\\_%' "
                                      "AND NOT c.relispartition AND c.relkind = 'r' ORDER BY 1")
    assert detached == ([("events_2023",), ("events_2024",)] if pair.source.major >= 14 else [("events_2023",)])
    assert query(pair.target, db, "SELECT id, what FROM events_2023 ORDER BY id") == [
        (1, "still old"), (3, "written to the detached table")]
    assert query(pair.target, db, "SELECT count(*) FROM events") == \
        ([(0,)] if pair.source.major >= 14 else [(1,)])


def test_comments(clusters, replicator_factory):
    """COMMENT ON tables, columns, indexes, types, functions, views and schemas; a comment removed."""
    pair = clusters
    db = make_database(pair, "ddlcomment")
    run_sql(pair.source, db, "CREATE TABLE t (id int PRIMARY KEY, v text)")
    r = start_and_sync(replicator_factory, pair, db)
    run_sql(pair.source, db,
            "CREATE SCHEMA app", "CREATE VIEW app.v AS SELECT id FROM t", "CREATE TYPE app.kind AS ENUM ('x')",
            "CREATE FUNCTION app.f(int) RETURNS int LANGUAGE sql AS 'SELECT $1'",
            "COMMENT ON TABLE t IS 'the table'", "COMMENT ON COLUMN t.v IS 'a value; with ''quotes'''",
            "COMMENT ON INDEX t_pkey IS 'its key'", "COMMENT ON SCHEMA app IS 'the app'",
            "COMMENT ON VIEW app.v IS 'a view'", "COMMENT ON TYPE app.kind IS 'a type'",
            "COMMENT ON FUNCTION app.f(int) IS 'a function'", "COMMENT ON CONSTRAINT t_pkey ON t IS 'a constraint'")
    run_sql(pair.source, db, "COMMENT ON TABLE t IS NULL")
    assert_in_sync(pair, db, r)
    comments = same_on_both(
        pair, db, "SELECT c.relname::text, d.objsubid, d.description FROM pg_description d "
                  "JOIN pg_class c ON c.oid = d.objoid AND d.classoid = 'pg_class'::regclass "
                  "UNION ALL SELECT obj_description(oid, 'pg_namespace'), 0, nspname FROM pg_namespace "
                  "WHERE nspname = 'app' "
                  "UNION ALL SELECT 'kind', 0, obj_description('app.kind'::regtype, 'pg_type') "
                  "UNION ALL SELECT 'f', 0, obj_description('app.f(int)'::regprocedure, 'pg_proc') "
                  "UNION ALL SELECT 'pkey', 0, obj_description(oid, 'pg_constraint') FROM pg_constraint "
                  "WHERE conname = 't_pkey' ORDER BY 1, 2")
    assert ("t", 2, "a value; with 'quotes'") in comments and ("t_pkey", 0, "its key") in comments
    assert ("t", 0, "the table") not in comments
    assert ("pkey", 0, "a constraint") in comments and ("f", 0, "a function") in comments


def test_grants_on_replicated_objects(clusters, replicator_factory):
    """GRANT and REVOKE on tables, columns, sequences, schemas, functions and types, and default privileges:
    the target's ACLs end as the source's (the role exists on both, as `roles = copy` would make it)."""
    pair = clusters
    db = make_database(pair, "ddlgrant")
    for cluster in (pair.source, pair.target):
        cluster.execute("DROP ROLE IF EXISTS ddl_reader")
        cluster.execute("CREATE ROLE ddl_reader")
    r = None
    try:
        run_sql(pair.source, db, "CREATE TABLE t (id serial PRIMARY KEY, v text, secret text)")
        r = start_and_sync(replicator_factory, pair, db)
        run_sql(pair.source, db,
                "CREATE SCHEMA app", "CREATE FUNCTION app.f() RETURNS int LANGUAGE sql AS 'SELECT 1'",
                "CREATE TYPE app.kind AS ENUM ('x')",
                "GRANT SELECT, INSERT ON t TO ddl_reader", "GRANT UPDATE (v) ON t TO ddl_reader",
                "GRANT USAGE ON SEQUENCE t_id_seq TO ddl_reader", "GRANT USAGE ON SCHEMA app TO ddl_reader",
                "REVOKE EXECUTE ON FUNCTION app.f() FROM PUBLIC", "GRANT EXECUTE ON FUNCTION app.f() TO ddl_reader",
                "REVOKE USAGE ON TYPE app.kind FROM PUBLIC",
                "ALTER DEFAULT PRIVILEGES IN SCHEMA app GRANT SELECT ON TABLES TO ddl_reader",
                "CREATE TABLE app.later (id int PRIMARY KEY)",
                "REVOKE INSERT ON t FROM ddl_reader")
        assert_in_sync(pair, db, r)
        # The grants to others than the owner: from 16 on an owner also holds MAINTAIN, which 13 lacks.
        acl = ("SELECT x.k, a.grantee::regrole::text, a.privilege_type, a.is_grantable "
               "FROM (SELECT %s::text AS k, %s AS acl FROM %s WHERE %s) x, aclexplode(x.acl) a "
               "WHERE a.grantee <> a.grantor ORDER BY 1, 2, 3")
        for table, key, column, where, reader in [
                ("pg_class", "relname", "relacl", "relname IN ('t', 't_id_seq', 'later')", True),
                ("pg_attribute", "attname", "attacl", "attrelid = 't'::regclass AND attacl IS NOT NULL", True),
                ("pg_namespace", "nspname", "nspacl", "nspname = 'app'", True),
                ("pg_proc", "proname", "proacl", "proname = 'f'", True),
                ("pg_type", "typname", "typacl", "typname = 'kind'", False),
                ("pg_default_acl", "defaclobjtype", "defaclacl", "true", True)]:
            rows = same_on_both(pair, db, acl % (key, column, table, where))
            assert not reader or any(row[1] == "ddl_reader" for row in rows), (table, rows)
        # PUBLIC lost USAGE on the type on both sides: its ACL is the owner's alone.
        assert same_on_both(pair, db, "SELECT typacl IS NOT NULL FROM pg_type WHERE typname = 'kind'") == [(True,)]
        assert query(pair.target, db, "SELECT has_table_privilege('ddl_reader', 't', 'INSERT'), "
                                      "has_table_privilege('ddl_reader', 'app.later', 'SELECT'), "
                                      "has_function_privilege('public', 'app.f()', 'EXECUTE')") == \
            [(False, True, False)]
    finally:
        if r is not None:
            r.stop()
        for cluster in (pair.source, pair.target):
            run_sql(cluster, db, "DROP OWNED BY ddl_reader")
            cluster.execute("DROP ROLE IF EXISTS ddl_reader")


def test_drop_schema_cascade(clusters, replicator_factory):
    """A schema made during the migration, with tables (rows streamed), a view, a function, a type and a
    sequence in it, dropped with CASCADE (taking a view in another schema along): gone on the target too."""
    pair = clusters
    db = make_database(pair, "ddlschema")
    run_sql(pair.source, db, "CREATE TABLE keep (id int PRIMARY KEY)", "INSERT INTO keep VALUES (1)")
    r = start_and_sync(replicator_factory, pair, db)
    run_sql(pair.source, db,
            "CREATE SCHEMA doomed", "CREATE TYPE doomed.kind AS ENUM ('x', 'y')",
            "CREATE TABLE doomed.t (id int PRIMARY KEY, k doomed.kind, keep_id int REFERENCES public.keep (id))",
            "INSERT INTO doomed.t VALUES (1, 'x', 1), (2, 'y', 1)",
            "CREATE SEQUENCE doomed.s", "CREATE VIEW doomed.v AS SELECT id FROM doomed.t",
            "CREATE VIEW public.depends AS SELECT id FROM doomed.v",
            "CREATE FUNCTION doomed.f() RETURNS int LANGUAGE sql AS 'SELECT 1'")
    assert_in_sync(pair, db, r)
    assert query(pair.target, db, "SELECT id, k::text FROM doomed.t ORDER BY id") == [(1, "x"), (2, "y")]
    in_transaction(pair.source, db, "DROP SCHEMA doomed CASCADE", "INSERT INTO keep VALUES (2)")
    assert_in_sync(pair, db, r)
    assert query(pair.target, db, "SELECT to_regnamespace('doomed'), to_regclass('public.depends')") == [(None, None)]
    assert query(pair.target, db, "SELECT count(*) FROM pg_constraint WHERE conrelid = 'keep'::regclass "
                                  "AND contype = 'f'") == [(0,)]
    assert query(pair.target, db, "SELECT id FROM keep ORDER BY id") == [(1,), (2,)]
    assert not r.errors(since_start=True), r.log_tail()


def test_do_block_ddl_is_refused_with_what_to_do(clusters, replicator_factory):
    """DDL run by a DO block is not replayed: the error names the command, its object, its LSN and the block,
    says why, and what to do; after the change is made by hand and skipped, streaming goes on."""
    pair = clusters
    db = make_database(pair, "ddldo")
    run_sql(pair.source, db, "CREATE TABLE t (id int PRIMARY KEY)")
    r = start_and_sync(replicator_factory, pair, db)
    run_sql(pair.source, db, "DO $$ BEGIN EXECUTE 'ALTER TABLE t ADD COLUMN made_in_do int'; END $$",
            "INSERT INTO t VALUES (1, 5)")
    line = r.wait_log(r"ERROR .*made inside a function, procedure or DO block.*").group(0)
    m = re.search(r"schema change ALTER TABLE of public\.t at ([0-9A-F]+/[0-9A-F]+) was made inside a function, "
                  r"procedure or DO block, so it is not replayed: .*\"DO \$\$ BEGIN EXECUTE 'ALTER TABLE t ADD COLUMN "
                  r"made_in_do int'; END \$\$\".*hint: make the same change on the target by hand, then run "
                  r"`pghandoff replicate --skip-ddl \1`", line)
    assert m, line
    run_sql(pair.target, db, "ALTER TABLE t ADD COLUMN made_in_do int")
    r.stop()
    r.extra_args = ["--skip-ddl", m.group(1)]
    r.start()
    r.wait_log(r"not replayed, as --skip-ddl asked")
    r.extra_args = []
    wait_caught_up(pair, db, r.origin, r, fail_on_error=False)
    assert_tables_equal(pair, db)
    assert query(pair.target, db, "SELECT * FROM t") == [(1, 5)]


@pytest.mark.parametrize("clusters", [(15, 15)], indirect=True, ids=["15to15"])
def test_create_extension(clusters, replicator_factory):
    """CREATE EXTENSION runs its script's commands inside it: those are the extension's own work, not replayed
    one by one; the extension is created on the target by its own statement, and a column of its type follows."""
    pair = clusters
    db = make_database(pair, "ddlext")
    run_sql(pair.source, db, "CREATE TABLE t (id int PRIMARY KEY)")
    r = start_and_sync(replicator_factory, pair, db)
    run_sql(pair.source, db, "CREATE EXTENSION citext", "ALTER TABLE t ADD COLUMN email citext",
            "INSERT INTO t VALUES (1, 'A@Example.org')")
    assert_in_sync(pair, db, r)
    assert same_on_both(pair, db, "SELECT extname FROM pg_extension WHERE extname = 'citext'") == [("citext",)]
    assert query(pair.target, db, "SELECT id FROM t WHERE email = 'a@example.ORG'") == [(1,)]
    run_sql(pair.source, db, "ALTER TABLE t DROP COLUMN email", "DROP EXTENSION citext")
    assert_in_sync(pair, db, r)
    assert query(pair.target, db, "SELECT count(*) FROM pg_extension WHERE extname = 'citext'") == [(0,)]
    assert not r.errors(since_start=True), r.log_tail()
