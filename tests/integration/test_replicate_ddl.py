"""Schema changes made on the source while the follower streams: captured, replayed in order on the target.

The clusters are shared by the module's tests and parametrized over 13 -> 17
and 15 -> 15 (a 13 source has no logical messages in pgoutput: the capture
goes through a published table on every version).  After each change the
tables must be equal and the target's schema must have the change: columns,
indexes, constraints, types, views, triggers compared through the catalogs.
"""

import re
import threading
import time

import pytest

from cutoverfixtures import migration, psql_value  # noqa: F401  (fixtures are used by name)
from replfixtures import (  # noqa: F401  (fixtures are used by name)
    emit_marker,
    wait_origin,
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
    replicator_factory,
    wait_caught_up,
    wait_for,
)

ONLY_15 = pytest.mark.parametrize("clusters", [(15, 15)], indirect=True, ids=["15to15"])


# What the target must have of the source's schema: the user's objects, pghandoff's own left out.
SCHEMA_QUERIES = {
    "columns": "SELECT table_name, column_name, data_type, is_nullable, coalesce(column_default, '') "
               "FROM information_schema.columns WHERE table_schema = 'public' ORDER BY 1, 2",
    "indexes": "SELECT tablename, indexname, indexdef FROM pg_indexes WHERE schemaname = 'public' ORDER BY 1, 2",
    "constraints": "SELECT conrelid::regclass::text, conname, pg_get_constraintdef(oid) FROM pg_constraint "
                   "WHERE connamespace = 'public'::regnamespace ORDER BY 1, 2",
    "enums": "SELECT t.typname, e.enumlabel FROM pg_enum e JOIN pg_type t ON t.oid = e.enumtypid "
             "ORDER BY 1, e.enumsortorder",
    # Names only: the deparsed definition reads differently from 16 on; the columns are compared above.
    "views": "SELECT viewname FROM pg_views WHERE schemaname = 'public' ORDER BY 1",
    "triggers": "SELECT tgrelid::regclass::text, tgname FROM pg_trigger WHERE NOT tgisinternal ORDER BY 1, 2",
    "functions": "SELECT proname, pg_get_function_identity_arguments(oid) FROM pg_proc "
                 "WHERE pronamespace = 'public'::regnamespace ORDER BY 1, 2",
    "partitions": "SELECT inhparent::regclass::text, inhrelid::regclass::text FROM pg_inherits ORDER BY 1, 2",
}


def assert_schemas_equal(pair, db):
    problems = []
    for what, sql in SCHEMA_QUERIES.items():
        src, tgt = query(pair.source, db, sql), query(pair.target, db, sql)
        if src != tgt:
            only_src = [r for r in src if r not in tgt]
            only_tgt = [r for r in tgt if r not in src]
            problems.append(f"{what}: only on the source {only_src}, only on the target {only_tgt}")
    assert not problems, "schemas differ:\n" + "\n".join(problems)


def assert_in_sync(pair, db, r):
    wait_caught_up(pair, db, r.origin, r)
    assert_tables_equal(pair, db)
    assert_schemas_equal(pair, db)


# ---- a Rails / Django style migration sequence ----------------------------

MIGRATIONS = [
    ("add a column with a default",
     ["ALTER TABLE accounts ADD COLUMN status text DEFAULT 'active'"]),
    ("make it NOT NULL",
     ["UPDATE accounts SET status = 'active' WHERE status IS NULL",
      "ALTER TABLE accounts ALTER COLUMN status SET NOT NULL"]),
    ("CREATE INDEX CONCURRENTLY",
     ["CREATE INDEX CONCURRENTLY accounts_status_idx ON accounts (status)"]),
    ("rename a column",
     ["ALTER TABLE accounts RENAME COLUMN label TO title"]),
    ("a table with a foreign key, written to in the same transaction",
     [("CREATE TABLE orders (id serial PRIMARY KEY, account_id int NOT NULL REFERENCES accounts (id), "
       "amount numeric(12, 2) NOT NULL CHECK (amount > 0))",
       "INSERT INTO orders (account_id, amount) SELECT id, id * 1.5 FROM accounts WHERE id <= 20",
       "CREATE INDEX orders_account_idx ON orders (account_id)")]),
    ("CREATE TABLE AS and SELECT INTO",
     ["CREATE TABLE accounts_archive AS SELECT id, title FROM accounts WHERE id % 3 = 0",
      "SELECT id, status INTO accounts_status FROM accounts WHERE id <= 10",
      "ALTER TABLE accounts_archive ADD PRIMARY KEY (id)",
      "INSERT INTO accounts_archive VALUES (100000, 'after the CTAS')"]),
    ("drop a column",
     ["ALTER TABLE accounts DROP COLUMN legacy"]),
    ("create an enum and add a value",
     ["CREATE TYPE mood AS ENUM ('sad', 'ok')",
      "ALTER TABLE accounts ADD COLUMN mood mood",
      "ALTER TYPE mood ADD VALUE 'happy'",
      "UPDATE accounts SET mood = 'happy' WHERE id <= 5"]),
    ("a view, a function and a trigger",
     ["CREATE VIEW happy_accounts AS SELECT id, title FROM accounts WHERE mood = 'happy'",
      "ALTER TABLE accounts ADD COLUMN touched timestamptz",
      "CREATE FUNCTION touch() RETURNS trigger LANGUAGE plpgsql AS "
      "$$ BEGIN NEW.touched := '2024-01-01 00:00:00+00'; RETURN NEW; END $$",
      "CREATE TRIGGER accounts_touch BEFORE UPDATE ON accounts FOR EACH ROW EXECUTE FUNCTION touch()",
      "UPDATE accounts SET title = title || '!' WHERE id <= 3"]),
    ("change a column's type",
     ["ALTER TABLE orders ALTER COLUMN amount TYPE bigint USING round(amount)::bigint",
      "INSERT INTO orders (account_id, amount) VALUES (1, 7)"]),
    ("attach a partition",
     ["CREATE TABLE events (id int NOT NULL, at date NOT NULL, what text) PARTITION BY RANGE (at)",
      "CREATE TABLE events_2024 (id int NOT NULL, at date NOT NULL, what text)",
      "INSERT INTO events_2024 VALUES (1, '2024-03-01', 'before attach')",
      "ALTER TABLE events ATTACH PARTITION events_2024 FOR VALUES FROM ('2024-01-01') TO ('2025-01-01')",
      "INSERT INTO events VALUES (2, '2024-04-01', 'after attach')"]),
    ("comments, grants, sequences, domains",
     ["COMMENT ON TABLE accounts IS 'the accounts'",
      "CREATE SEQUENCE invoice_no START 1000",
      "CREATE DOMAIN positive AS int CHECK (VALUE > 0)",
      "CREATE TABLE invoices (no int PRIMARY KEY DEFAULT nextval('invoice_no'), qty positive)",
      "INSERT INTO invoices (qty) VALUES (3)",
      "GRANT SELECT ON invoices TO PUBLIC"]),
]


def test_migration_sequence(clusters, replicator_factory, prerequisites):
    """Each migration applied on the source while pgbench writes: the target follows, tables equal."""
    need_pgbench(prerequisites)
    pair = clusters
    db = make_database(pair, "ddlseq")
    pgbench_init(pair.source, db)
    run_sql(pair.source, db,
            "CREATE TABLE accounts (id int PRIMARY KEY, label text, legacy int)",
            "INSERT INTO accounts SELECT g, 'account ' || g, g FROM generate_series(1, 200) g")
    r = start_and_sync(replicator_factory, pair, db)
    bench = Pgbench(pair.source, db, ["-c", "2", "-T", "600"])
    try:
        for what, statements in MIGRATIONS:
            print(f"migration: {what}")
            for s in statements:
                if isinstance(s, tuple):
                    in_transaction(pair.source, db, *s)
                else:
                    run_sql(pair.source, db, s)
            wait_caught_up(pair, db, r.origin, r)
            assert_schemas_equal(pair, db)
    finally:
        bench.interrupt()
    assert_in_sync(pair, db, r)
    # CREATE TABLE AS / SELECT INTO: made empty on the target, their rows came once through the stream.
    assert query(pair.target, db, "SELECT count(*) FROM accounts_archive") == \
        query(pair.source, db, "SELECT count(*) FROM accounts_archive")
    assert query(pair.target, db, "SELECT count(*) FROM accounts_status") == [(10,)]
    assert re.search(r"schema change at [0-9A-F]+/[0-9A-F]+ replayed on its own: "
                     r"CREATE INDEX CONCURRENTLY accounts_status_idx", r.log())
    # The follower's own replay is never captured on the target.
    assert query(pair.target, db, "SELECT count(*) FROM pg_namespace WHERE nspname = 'pghandoff'") == [(0,)]
    result = r.pghandoff.run(["verify", "-c", r.config_path], timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr


def test_rolled_back_ddl_leaves_nothing(clusters, replicator_factory):
    pair = clusters
    db = make_database(pair, "ddlrollback")
    run_sql(pair.source, db, "CREATE TABLE t (id int PRIMARY KEY, v text)", "INSERT INTO t VALUES (1, 'a')")
    r = start_and_sync(replicator_factory, pair, db)
    with connect(pair.source, db) as conn:
        conn.execute("BEGIN")
        conn.execute("CREATE TABLE never (id int)")
        conn.execute("ALTER TABLE t ADD COLUMN never int")
        conn.execute("INSERT INTO t VALUES (2, 'b')")
        conn.execute("ROLLBACK")
    run_sql(pair.source, db, "ALTER TABLE t ADD COLUMN kept int DEFAULT 7", "INSERT INTO t VALUES (3, 'c', 8)")
    assert_in_sync(pair, db, r)
    assert query(pair.target, db, "SELECT to_regclass('never') IS NULL") == [(True,)]
    assert query(pair.target, db, "SELECT id, kept FROM t ORDER BY id") == [(1, 7), (3, 8)]
    assert "never" not in r.log()


def test_multi_statement_query_string(clusters, replicator_factory):
    """One query string mixing DDL and DML (a simple Query): each DDL statement replayed once, in its place."""
    pair = clusters
    db = make_database(pair, "ddlmulti")
    r = start_and_sync(replicator_factory, pair, db)
    text = ("CREATE TABLE m (id int PRIMARY KEY, note text DEFAULT 'it''s; fine'); "
            "INSERT INTO m (id) VALUES (1), (2); "
            "/* a comment; with a semicolon */ ALTER TABLE m ADD COLUMN w text DEFAULT $x$dollar; quoted$x$; "
            "INSERT INTO m (id) VALUES (3); SELECT 1; "
            "CREATE TEMP TABLE scratch (id int); "
            "CREATE TABLE n AS SELECT id FROM m; "
            "UPDATE m SET note = 'updated' WHERE id = 2; "
            "DROP TABLE scratch; "
            "CREATE INDEX m_w ON m (w) -- the last one, no semicolon")
    with connect(pair.source, db) as conn:
        conn.execute(text.encode())  # bytes: no parameters, sent as one simple Query
    assert_in_sync(pair, db, r)
    assert query(pair.target, db, "SELECT id, note, w FROM m ORDER BY id") == [
        (1, "it's; fine", "dollar; quoted"), (2, "updated", "dollar; quoted"), (3, "it's; fine", "dollar; quoted")]
    assert query(pair.target, db, "SELECT count(*) FROM n") == [(3,)]
    assert query(pair.target, db, "SELECT count(*) FROM pg_indexes WHERE indexname = 'm_w'") == [(1,)]


def apply_backend_waiting_on_lock(target, db):
    rows = target.execute("SELECT count(*) FROM pg_stat_activity WHERE datname = %s AND wait_event_type = 'Lock' "
                          "AND query ILIKE '%%ADD COLUMN k%%'", params=(db,))
    return rows[0][0] > 0


def test_kill9_at_the_ddl(clusters, replicator_factory):
    """kill -9 while the follower replays a change (held up by a lock on the target): replayed once after the restart."""
    pair = clusters
    db = make_database(pair, "ddlkill")
    run_sql(pair.source, db, "CREATE TABLE t (id int PRIMARY KEY, v text)", "INSERT INTO t VALUES (1, 'a')",
            "CREATE TABLE other (id int PRIMARY KEY)")
    r = start_and_sync(replicator_factory, pair, db)
    with connect(pair.target, db) as blocker:
        blocker.execute("BEGIN")
        blocker.execute("LOCK TABLE t IN ACCESS EXCLUSIVE MODE")
        in_transaction(pair.source, db, "INSERT INTO other VALUES (1)", "ALTER TABLE t ADD COLUMN k int DEFAULT 1",
                       "INSERT INTO t VALUES (2, 'b', 2)")
        wait_for(lambda: apply_backend_waiting_on_lock(pair.target, db), timeout=60,
                 what="the replay waiting for the lock", on_timeout=r.log_tail)
        r.kill9()
        blocker.execute("ROLLBACK")
    wait_for(lambda: not apply_backend_waiting_on_lock(pair.target, db), timeout=60,
             what="the killed follower's session to end")
    assert query(pair.target, db, "SELECT count(*) FROM other") == [(0,)]
    r.start()
    r.wait_streaming()
    assert_in_sync(pair, db, r)
    assert query(pair.target, db, "SELECT id, k FROM t ORDER BY id") == [(1, 1), (2, 2)]
    assert query(pair.target, db, "SELECT count(*) FROM other") == [(1,)]
    assert not [l for l in r.errors(since_start=True)], r.log_tail()


def test_failing_statement_stops_then_skip(clusters, replicator_factory):
    """A change the target refuses: the apply stops with the statement, its LSN and the target's error,
    nothing of its transaction applied; --skip-ddl LSN skips it once and streaming resumes."""
    pair = clusters
    db = make_database(pair, "ddlfail")
    run_sql(pair.source, db, "CREATE TABLE t (id int PRIMARY KEY, v text)", "INSERT INTO t VALUES (1, 'a')")
    r = start_and_sync(replicator_factory, pair, db)
    # Someone made it on the target already, by hand.
    run_sql(pair.target, db, "CREATE TABLE clash (id int PRIMARY KEY, v text)")
    before = lsn_int(pair.source.execute("SELECT pg_current_wal_insert_lsn()::text")[0][0])
    in_transaction(pair.source, db, "INSERT INTO t VALUES (2, 'b')", "CREATE TABLE clash (id int PRIMARY KEY, v text)",
                   "INSERT INTO clash VALUES (1, 'x')")
    run_sql(pair.source, db, "INSERT INTO t VALUES (3, 'c')")
    line = r.wait_log(r"ERROR .*replaying the schema change at [0-9A-F]+/[0-9A-F]+ failed")
    errors = [l for l in r.errors(since_start=True) if "replaying the schema change" in l]
    assert errors, r.log_tail()
    m = re.search(r"schema change at ([0-9A-F]+/[0-9A-F]+) failed.*CREATE TABLE clash.*already exists", errors[0])
    assert m, errors[0]
    lsn = m.group(1)
    assert f"--skip-ddl {lsn}" in errors[0]
    # Nothing partial: the row of the same transaction, and those after, wait.
    assert query(pair.target, db, "SELECT count(*) FROM t") == [(1,)]
    progress = origin_progress(pair.target, r.origin)
    assert progress <= before
    r.wait_log(r"retrying in \d+ s")
    # The status shows the stop (the proxy's SHOW REPLICATION and metrics read it).
    status = r.workdir / f"pghandoff.state-replication-{db}"
    wait_for(lambda: status.exists() and f"ddl_stopped_lsn {lsn}\n" in status.read_text(), 30,
             what="the stop in the status file")
    r.stop()
    r.extra_args = ["--skip-ddl", lsn]
    r.start()
    r.wait_log(rf"schema change CREATE TABLE at {re.escape(lsn)} not replayed, as --skip-ddl asked")
    r.extra_args = []
    wait_caught_up(pair, db, r.origin, r, fail_on_error=False)
    assert_tables_equal(pair, db)
    assert query(pair.target, db, "SELECT * FROM clash") == [(1, "x")]
    wait_for(lambda: "ddl_stopped_lsn 0/0\n" in status.read_text(), 30, what="the stop cleared in the status file")
    # Once: a restart does not skip anything again (the origin is past it).
    r.stop()
    r.start()
    r.wait_streaming()
    run_sql(pair.source, db, "ALTER TABLE clash ADD COLUMN w int")
    assert_in_sync(pair, db, r)


def test_function_made_ddl_is_refused_clearly(clusters, replicator_factory):
    """DDL run from inside a DO block is not in the query string as a statement: the follower stops and says so."""
    pair = clusters
    db = make_database(pair, "ddlfunc")
    r = start_and_sync(replicator_factory, pair, db)
    run_sql(pair.source, db, "DO $$ BEGIN EXECUTE 'CREATE TABLE from_do (id int)'; END $$")
    r.wait_log(r"ERROR .*made inside a function, procedure or DO block.*--skip-ddl [0-9A-F]+/[0-9A-F]+")


def capture_objects(cluster, db):
    return query(cluster, db, "SELECT (SELECT count(*) FROM pg_event_trigger WHERE evtname LIKE 'pghandoff%'), "
                              "(SELECT count(*) FROM pg_namespace WHERE nspname = 'pghandoff')")[0]


@ONLY_15
def test_drop_removes_the_capture(clusters, replicator_factory):
    """`replicate --drop` removes the event triggers, their functions and the schema pghandoff from the source."""
    pair = clusters
    db = make_database(pair, "ddldrop")
    r = start_and_sync(replicator_factory, pair, db)
    assert capture_objects(pair.source, db) == (3, 1)
    r.stop()
    result = r.drop()
    assert result.returncode == 0, result.stdout + result.stderr
    assert capture_objects(pair.source, db) == (0, 0)
    # DDL on the source works as before, with nothing left to fire.
    run_sql(pair.source, db, "CREATE TABLE after_drop (id int)")


@ONLY_15
def test_check_says_whether_event_triggers_may_be_created(clusters, pghandoff, tmp_path):
    pair = clusters
    db = make_database(pair, "ddlcheck")
    pair.source.execute("DROP ROLE IF EXISTS ddl_plain")
    pair.source.execute("CREATE ROLE ddl_plain LOGIN REPLICATION")

    def check(user):
        (tmp_path / user).mkdir()
        path = pghandoff.write_config(tmp_path / user, {
            "source": {"host": "127.0.0.1", "port": pair.source.port, "user": user},
            "target": {"host": "127.0.0.1", "port": pair.target.port, "user": pair.target.superuser},
            "databases": {db: ""},
        })
        return pghandoff.run(["check", "-c", path]).stdout

    out = check(pair.source.superuser)
    assert re.search(r"^PASS  source: user \S+ may create event triggers", out, re.M), out
    out = check("ddl_plain")
    assert re.search(r"^WARN  source: user ddl_plain is not a superuser and may not create event triggers", out,
                     re.M), out
    assert re.search(r"hint: .*set ddl = stop", out), out
    pair.source.execute("DROP ROLE ddl_plain")


# ---- the way back ----------------------------------------------------------

def test_ddl_on_the_target_goes_back(clusters, replicator_factory):
    """After a cutover a migration on the target reaches the fenced source through the reverse follower,
    once: neither side captures what the other replayed."""
    pair = clusters
    db = make_database(pair, "ddlback")
    run_sql(pair.source, db, "CREATE TABLE t (id int PRIMARY KEY, v text)",
            "INSERT INTO t SELECT g, 'copied' FROM generate_series(1, 20) g")
    fwd = start_and_sync(replicator_factory, pair, db)
    # What the cutover does: fence the source, wait for its marker, prepare the way back.
    pair.source.execute(f"ALTER DATABASE {db} SET default_transaction_read_only = on")
    wait_origin(pair.target, fwd.origin, emit_marker(pair.source, db), fwd, "the cutover's marker")
    result = fwd.reverse_prepare()
    assert result.returncode == 0, result.stderr
    assert capture_objects(pair.target, db) == (3, 1)
    rev = replicator_factory(pair, db, reverse=True)
    rev.wait_streaming()

    # A deploy on the target.
    in_transaction(pair.target, db, "ALTER TABLE t ADD COLUMN deployed text DEFAULT 'after'",
                   "CREATE TABLE fresh (id int PRIMARY KEY, t_id int REFERENCES t (id))",
                   "INSERT INTO fresh VALUES (1, 1)")
    run_sql(pair.target, db, "CREATE INDEX CONCURRENTLY t_deployed ON t (deployed)",
            "INSERT INTO t VALUES (21, 'on the target', 'new')")
    rev.wait_log(r"schema change at [0-9A-F]+/[0-9A-F]+ replayed on its own: CREATE INDEX CONCURRENTLY t_deployed")

    def same():
        return all(query(pair.source, db, sql) == query(pair.target, db, sql) for sql in SCHEMA_QUERIES.values()) \
            and query(pair.source, db, "SELECT * FROM t ORDER BY id") == \
            query(pair.target, db, "SELECT * FROM t ORDER BY id")

    wait_for(same, 120, what="the target's migration and rows on the source", on_timeout=rev.log_tail)
    assert query(pair.source, db, "SELECT * FROM fresh") == [(1, 1)]
    # No loop: the forward follower skips the reverse follower's transactions and sees no schema change.
    wait_origin(pair.target, fwd.origin, emit_marker(pair.source, db), fwd, "a marker after the migration")
    assert "replayed" not in fwd.log(since_start=True).split("streaming from")[-1]
    assert not fwd.errors() and not rev.errors()

    rev.stop()
    result = fwd.reverse_drop()
    assert result.returncode == 0, result.stderr
    assert capture_objects(pair.target, db) == (0, 0)


# ---- the cutover and its rollback -------------------------------------------

def test_cutover_and_rollback_with_a_migration_on_the_target(migration):
    """The precheck names an index only one side has; after the cutover a migration on the target
    reaches the source, and the rollback's precheck finds both sides alike."""
    m = migration(prepare=lambda dsn: psql_value(dsn, "CREATE TABLE t (id serial PRIMARY KEY, side text)"))
    conn = m.proxy.connect(m.dbname)
    conn.execute("INSERT INTO t (side) VALUES ('source before')")
    psql_value(m.target_dsn(), "CREATE INDEX only_here ON t (side)")
    refused = m.proxy.run_cutover()
    assert refused.returncode != 0
    assert re.search(r"public\.t index only_here only on the target", refused.stdout + refused.stderr), \
        refused.stdout + refused.stderr
    psql_value(m.target_dsn(), "DROP INDEX only_here")
    result = m.proxy.run_cutover()
    assert result.returncode == 0, result.stdout + result.stderr + m.proxy.log_tail()
    wait_for(lambda: psql_value(m.target_dsn(), "SELECT count(*) FROM pg_replication_slots "
                                                "WHERE slot_name LIKE '%rollback' AND active") == "1",
             timeout=60, what="the reverse follower streaming")
    # A deploy while clients are on the target.
    conn.execute("ALTER TABLE t ADD COLUMN deployed int DEFAULT 5")
    conn.execute("CREATE INDEX t_deployed ON t (deployed)")
    conn.execute("INSERT INTO t (side, deployed) VALUES ('target', 6)")
    result = m.proxy.run_rollback()
    assert result.returncode == 0, result.stdout + result.stderr + m.proxy.log_tail()
    assert conn.execute("SELECT inet_server_port()").fetchone()[0] == m.pair.source.port
    assert conn.execute("SELECT id, side, deployed FROM t ORDER BY id").fetchall() == \
        [(1, "source before", 5), (2, "target", 6)]
    assert psql_value(m.source_dsn(), "SELECT count(*) FROM pg_indexes WHERE indexname = 't_deployed'") == "1"


@ONLY_15
def test_roles_none_replays_as_the_follower(clusters, replicator_factory):
    """With roles = none the schema copy makes the follower's user the owner of everything on the
    target: a change made on the source by another role is replayed as that user, even where the
    role exists on the target without the source's privileges."""
    pair = clusters
    db = make_database(pair, "ddlrole")
    for cluster in (pair.source, pair.target):
        cluster.execute("DROP ROLE IF EXISTS ddl_app")
        cluster.execute("CREATE ROLE ddl_app LOGIN")
    run_sql(pair.source, db, "GRANT CREATE ON SCHEMA public TO ddl_app")
    r = start_and_sync(replicator_factory, pair, db)
    with connect(pair.source, db) as conn:
        conn.execute("SET ROLE ddl_app")
        conn.execute("CREATE TABLE mine (id int PRIMARY KEY)")
        conn.execute("INSERT INTO mine VALUES (1)")
        conn.execute("ALTER TABLE mine ADD COLUMN v text DEFAULT 'x'")
    assert_in_sync(pair, db, r)
    assert query(pair.target, db, "SELECT * FROM mine") == [(1, "x")]
    assert query(pair.target, db, "SELECT tableowner FROM pg_tables WHERE tablename = 'mine'") == \
        [(pair.target.superuser,)]
    r.stop()
    run_sql(pair.source, db, "REASSIGN OWNED BY ddl_app TO CURRENT_USER", "DROP OWNED BY ddl_app")
    for cluster in (pair.source, pair.target):
        cluster.execute("DROP ROLE ddl_app")


@ONLY_15
def test_ddl_inside_a_streamed_transaction(clusters, replicator_factory):
    """A transaction larger than logical_decoding_work_mem arrives while it runs (protocol 2): its schema
    changes are spooled with its rows and replayed in their place at its commit; a rolled-back
    savepoint takes its change back out."""
    pair = clusters
    db = make_database(pair, "ddlstream")
    pair.source.execute(f'ALTER DATABASE "{db}" SET logical_decoding_work_mem = \'64kB\'')
    run_sql(pair.source, db, "CREATE TABLE t (id int PRIMARY KEY, v text)")
    r = start_and_sync(replicator_factory, pair, db)
    with connect(pair.source, db) as conn:
        with conn.transaction():
            conn.execute("INSERT INTO t SELECT g, repeat('x', 80) FROM generate_series(1, 20000) g")
            conn.execute("ALTER TABLE t ADD COLUMN w int DEFAULT 0")
            conn.execute("CREATE TABLE made_inside (id int PRIMARY KEY)")
            conn.execute("INSERT INTO made_inside SELECT generate_series(1, 5000)")
            conn.execute("SAVEPOINT s")
            conn.execute("ALTER TABLE t ADD COLUMN gone int")
            conn.execute("ROLLBACK TO SAVEPOINT s")
            conn.execute("INSERT INTO t SELECT g, 'after', g FROM generate_series(20001, 40000) g")
    assert_in_sync(pair, db, r)
    rows = pair.source.execute("SELECT coalesce(stream_txns, 0) FROM pg_stat_replication_slots WHERE slot_name = %s",
                               params=(r.slot,))
    assert rows and rows[0][0] > 0, "the transaction was not streamed: make it larger"
    assert query(pair.target, db, "SELECT count(*) FROM t WHERE w > 0") == [(20000,)]
