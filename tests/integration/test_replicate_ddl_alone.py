"""Schema changes that cannot run in a transaction block, replayed on their own at their place in the stream.

CREATE INDEX CONCURRENTLY, DROP INDEX CONCURRENTLY and DETACH PARTITION ...
CONCURRENTLY reach the follower inside a source transaction of their own.  The follower commits what it
applied before them, runs the statement alone on the target with
CONCURRENTLY, and goes on.  A kill -9 around that point replays it again
after the restart: a valid index is taken as built, an invalid one (the
build was cut short) is dropped and built again, a drop finds nothing, a
detach finds the partition detached or finalizes it.
Parametrized over 13 -> 17 and 15 -> 15 like test_replicate_ddl.py.
"""

import re
import subprocess

import pytest

from cutoverfixtures import migration, psql_value  # noqa: F401  (fixtures are used by name)
from proxyfixtures import PGBENCH
from replfixtures import (  # noqa: F401  (fixtures are used by name)
    run_sql,
    in_transaction,
    start_and_sync,
    assert_tables_equal,
    cluster_pool,
    clusters,
    connect,
    make_database,
    need_pgbench,
    query,
    replicator_factory,
    wait_caught_up,
    wait_for,
)
from test_replicate_ddl import assert_in_sync


def index_state(cluster, db, name):
    """(valid, ready) of the index named name, or None when there is none."""
    rows = query(cluster, db, "SELECT i.indisvalid, i.indisready FROM pg_index i JOIN pg_class c "
                              "ON c.oid = i.indexrelid WHERE c.relname = %s", params=(name,))
    return rows[0] if rows else None


def concurrent_build_waiting(target, db, exclude_pid):
    """The pid of the target backend running a CREATE INDEX CONCURRENTLY that waits on a lock, or None."""
    rows = target.execute("SELECT pid FROM pg_stat_activity WHERE datname = %s AND wait_event_type = 'Lock' "
                          "AND query ILIKE 'CREATE INDEX CONCURRENTLY%%' AND pid <> %s",
                          params=(db, exclude_pid))
    return rows[0][0] if rows else None


def backend_gone(target, pid):
    return target.execute("SELECT count(*) FROM pg_stat_activity WHERE pid = %s", params=(pid,))[0][0] == 0


def test_concurrent_index_statements_run_on_their_own(clusters, replicator_factory):
    """CREATE and DROP INDEX CONCURRENTLY, between transactions that write: replayed with CONCURRENTLY, outside
    the apply transaction, in their place; the index is valid on the target."""
    pair = clusters
    db = make_database(pair, "ddlcic")
    run_sql(pair.source, db, "CREATE TABLE t (id int PRIMARY KEY, v text)",
            "INSERT INTO t SELECT g, 'v' || g FROM generate_series(1, 1000) g")
    r = start_and_sync(replicator_factory, pair, db)
    run_sql(pair.source, db, "INSERT INTO t VALUES (1001, 'before')",
            "CREATE UNIQUE INDEX CONCURRENTLY t_v ON t (v)",
            "CREATE INDEX CONCURRENTLY ON t (lower(v))",
            "INSERT INTO t VALUES (1002, 'after')",
            "CREATE INDEX CONCURRENTLY IF NOT EXISTS t_v ON t (v)",
            "CREATE INDEX CONCURRENTLY gone ON t (id, v)",
            "DROP INDEX CONCURRENTLY gone")
    assert_in_sync(pair, db, r)
    assert index_state(pair.target, db, "t_v") == (True, True)
    assert index_state(pair.target, db, "t_lower_idx") == (True, True)
    assert index_state(pair.target, db, "gone") is None
    log = r.log(since_start=True)
    assert re.search(r"schema change at \S+ replayed on its own: CREATE UNIQUE INDEX CONCURRENTLY t_v ON t \(v\)",
                     log), log
    assert re.search(r"replayed on its own: DROP INDEX CONCURRENTLY IF EXISTS gone", log), log
    assert not r.errors(since_start=True), r.log_tail()


def test_kill9_while_a_concurrent_build_waits(clusters, replicator_factory):
    """kill -9 while the replayed CREATE INDEX CONCURRENTLY waits for a lock on the target: what came before it
    is committed; the build that outlives the follower finishes, and the restart takes its index as built."""
    pair = clusters
    db = make_database(pair, "ddlcickill")
    run_sql(pair.source, db, "CREATE TABLE t (id int PRIMARY KEY, v text)", "INSERT INTO t VALUES (1, 'a')")
    r = start_and_sync(replicator_factory, pair, db)
    with connect(pair.target, db) as blocker:
        blocker.execute("BEGIN")
        blocker.execute("LOCK TABLE t IN SHARE UPDATE EXCLUSIVE MODE")
        blocker_pid = blocker.execute("SELECT pg_backend_pid()").fetchone()[0]
        run_sql(pair.source, db, "INSERT INTO t VALUES (2, 'before')", "CREATE INDEX CONCURRENTLY t_v ON t (v)",
                "INSERT INTO t VALUES (3, 'after')")
        pid = wait_for(lambda: concurrent_build_waiting(pair.target, db, blocker_pid), timeout=60,
                       what="the replayed build waiting for the lock", on_timeout=r.log_tail)
        # What preceded the statement is committed; what follows it waits.
        assert query(pair.target, db, "SELECT id FROM t ORDER BY id") == [(1,), (2,)]
        r.kill9()
        blocker.execute("ROLLBACK")
    wait_for(lambda: backend_gone(pair.target, pid), timeout=120, what="the orphaned build to end")
    r.start()
    r.wait_streaming()
    assert_in_sync(pair, db, r)
    assert index_state(pair.target, db, "t_v") == (True, True)
    assert query(pair.target, db, "SELECT count(*) FROM pg_index WHERE indrelid = 't'::regclass") == [(2,)]
    assert "t_v is on the target and valid: built there before a restart" in r.log(since_start=True), r.log_tail()
    assert not r.errors(since_start=True), r.log_tail()


def test_kill9_leaves_an_invalid_index(clusters, replicator_factory):
    """The replayed build is cut short half-way (its index made but invalid): after the restart the follower
    drops the invalid index and builds it again, instead of taking IF NOT EXISTS at its word."""
    pair = clusters
    db = make_database(pair, "ddlcicinvalid")
    run_sql(pair.source, db, "CREATE TABLE t (id int PRIMARY KEY, v text)", "INSERT INTO t VALUES (1, 'a')")
    r = start_and_sync(replicator_factory, pair, db)
    with connect(pair.target, db) as blocker:
        # A transaction that wrote to t: the build makes its index, then waits for it to end.
        blocker.execute("BEGIN")
        blocker.execute("UPDATE t SET v = v WHERE id = 1")
        blocker_pid = blocker.execute("SELECT pg_backend_pid()").fetchone()[0]
        run_sql(pair.source, db, "CREATE INDEX CONCURRENTLY IF NOT EXISTS t_v ON t (v)",
                "INSERT INTO t VALUES (2, 'after')")
        pid = wait_for(lambda: concurrent_build_waiting(pair.target, db, blocker_pid), timeout=60,
                       what="the replayed build waiting for the writer", on_timeout=r.log_tail)
        r.kill9()
        pair.target.execute("SELECT pg_terminate_backend(%s)", params=(pid,))
        wait_for(lambda: backend_gone(pair.target, pid), timeout=60, what="the build's backend to end")
        blocker.execute("ROLLBACK")
    assert index_state(pair.target, db, "t_v") == (False, False), "the cut build should leave an invalid index"
    r.start()
    r.wait_streaming()
    assert_in_sync(pair, db, r)
    assert index_state(pair.target, db, "t_v") == (True, True)
    assert "t_v is on the target but invalid" in r.log(since_start=True), r.log_tail()


def test_failed_concurrent_build_leaves_no_invalid_index(clusters, replicator_factory):
    """A unique build the target refuses (its rows differ): the apply stops with the statement and the error,
    and the invalid index the failed build made is dropped; once the rows agree, the retry builds it."""
    pair = clusters
    db = make_database(pair, "ddlcicfail")
    run_sql(pair.source, db, "CREATE TABLE t (id int PRIMARY KEY, v text)",
            "INSERT INTO t VALUES (1, 'a'), (2, 'b')")
    r = start_and_sync(replicator_factory, pair, db)
    # A row changed by hand on the target: the unique build fails there.
    run_sql(pair.target, db, "UPDATE t SET v = 'a' WHERE id = 2")
    run_sql(pair.source, db, "CREATE UNIQUE INDEX CONCURRENTLY t_v ON t (v)")
    r.wait_log(r"ERROR .*replaying the schema change at \S+ failed.*CREATE UNIQUE INDEX CONCURRENTLY t_v.*23505")
    r.wait_log(r"dropped the invalid index public\.t_v the failed build left on the target")
    assert index_state(pair.target, db, "t_v") is None
    run_sql(pair.target, db, "UPDATE t SET v = 'b' WHERE id = 2")
    wait_caught_up(pair, db, r.origin, r, fail_on_error=False)
    assert index_state(pair.target, db, "t_v") == (True, True)
    assert_tables_equal(pair, db)


def test_enum_value_used_by_the_next_transaction_of_a_group(clusters, replicator_factory):
    """ALTER TYPE ... ADD VALUE and a later source transaction using the value, arriving together after a
    stop (one apply group): the value is committed before the rows that use it."""
    pair = clusters
    db = make_database(pair, "ddlenum")
    run_sql(pair.source, db, "CREATE TYPE mood AS ENUM ('sad', 'ok')",
            "CREATE TABLE t (id int PRIMARY KEY, m mood)", "INSERT INTO t VALUES (1, 'ok')")
    r = start_and_sync(replicator_factory, pair, db)
    r.stop()
    run_sql(pair.source, db, "INSERT INTO t VALUES (2, 'sad')", "ALTER TYPE mood ADD VALUE 'happy'",
            "INSERT INTO t VALUES (3, 'happy')", "UPDATE t SET m = 'happy' WHERE id = 1")
    r.start()
    assert_in_sync(pair, db, r)
    assert query(pair.target, db, "SELECT id, m::text FROM t ORDER BY id") == [(1, "happy"), (2, "sad"), (3, "happy")]


def proxy_pgbench_init(dsn):
    out = subprocess.run([PGBENCH, "-i", "-q", "-s", "1", dsn], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    psql_value(dsn, "ALTER TABLE pgbench_history REPLICA IDENTITY FULL")


def test_concurrent_index_under_pgbench_through_the_proxy(migration, prerequisites):
    """pgbench writes through the proxy while CREATE INDEX CONCURRENTLY and DROP INDEX CONCURRENTLY run through it:
    the target gets the index valid, the drop, every row, and verify passes."""
    need_pgbench(prerequisites)
    m = migration(prepare=proxy_pgbench_init)
    r = m.replicator
    args = ["-h", "127.0.0.1", "-p", str(m.proxy.port), "-U", "postgres"]
    bench = subprocess.Popen([PGBENCH, "-n", "-c", "4", "-j", "2", "-T", "600", *args, m.dbname],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        wait_for(lambda: int(psql_value(m.source_dsn(), "SELECT count(*) FROM pgbench_history")) > 200,
                 timeout=60, what="pgbench writing")
        with m.proxy.connect(m.dbname) as conn:
            conn.autocommit = True
            conn.execute("CREATE INDEX CONCURRENTLY accounts_abalance ON pgbench_accounts (abalance)")
            conn.execute("CREATE INDEX CONCURRENTLY history_mtime ON pgbench_history (mtime)")
            conn.execute("DROP INDEX CONCURRENTLY history_mtime")
        wait_for(lambda: index_state(m.pair.target, m.dbname, "accounts_abalance") == (True, True), timeout=180,
                 what="the index on the target", on_timeout=r.log_tail)
        wait_for(lambda: int(psql_value(m.source_dsn(), "SELECT count(*) FROM pgbench_history")) > 400,
                 timeout=60, what="pgbench writing after the index")
    finally:
        bench.send_signal(2)  # SIGINT: pgbench stops; transactions in flight roll back
        _, err = bench.communicate(timeout=60)
    assert "error" not in err.lower(), err
    wait_caught_up(m.pair, m.dbname, r.origin, r)
    assert_tables_equal(m.pair, m.dbname)
    assert index_state(m.pair.target, m.dbname, "history_mtime") is None
    assert re.search(r"replayed on its own: CREATE INDEX CONCURRENTLY accounts_abalance", r.log()), r.log_tail()
    result = r.pghandoff.run(["verify", "-c", r.config_path], timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
    assert not r.errors(), r.log_tail()


def detach_waiting(target, db, exclude_pid):
    rows = target.execute("SELECT pid FROM pg_stat_activity WHERE datname = %s AND wait_event_type = 'Lock' "
                          "AND query ILIKE 'ALTER TABLE events DETACH PARTITION%%' AND pid <> %s",
                          params=(db, exclude_pid))
    return rows[0][0] if rows else None


@pytest.mark.parametrize("clusters", [(15, 15)], indirect=True, ids=["15to15"])
@pytest.mark.parametrize("cut", ["before", "half-way"])
def test_kill9_during_a_concurrent_detach(clusters, replicator_factory, cut):
    """DETACH PARTITION CONCURRENTLY (from 14 on) replayed on its own, and the follower killed while it waits on
    the target: held up before it starts, the orphaned detach finishes and the restart finds it done; cut
    half-way (its first transaction committed), the restart finalizes it.  Either way the partition ends
    detached, with the CHECK constraint the concurrent detach leaves, as on the source."""
    pair = clusters
    db = make_database(pair, "ddldetachkill")
    run_sql(pair.source, db,
            "CREATE TABLE events (id int NOT NULL, at date NOT NULL, PRIMARY KEY (id, at)) PARTITION BY RANGE (at)",
            "CREATE TABLE events_2024 PARTITION OF events FOR VALUES FROM ('2024-01-01') TO ('2025-01-01')",
            "INSERT INTO events VALUES (1, '2024-05-01')")
    r = start_and_sync(replicator_factory, pair, db)
    with connect(pair.target, db) as blocker:
        blocker.execute("BEGIN")
        if cut == "before":
            blocker.execute("LOCK TABLE events IN SHARE UPDATE EXCLUSIVE MODE")
        else:
            # A reader of the table: the detach marks the partition pending, commits, then waits for it.
            blocker.execute("SELECT count(*) FROM events")
        blocker_pid = blocker.execute("SELECT pg_backend_pid()").fetchone()[0]
        run_sql(pair.source, db, "ALTER TABLE events DETACH PARTITION events_2024 CONCURRENTLY",
                "INSERT INTO events_2024 VALUES (2, '2024-06-01')")
        pid = wait_for(lambda: detach_waiting(pair.target, db, blocker_pid), timeout=60,
                       what="the replayed detach waiting", on_timeout=r.log_tail)
        r.kill9()
        if cut == "half-way":
            assert query(pair.target, db, "SELECT inhdetachpending FROM pg_inherits "
                                          "WHERE inhrelid = 'events_2024'::regclass") == [(True,)]
            pair.target.execute("SELECT pg_terminate_backend(%s)", params=(pid,))
        blocker.execute("ROLLBACK")
    wait_for(lambda: backend_gone(pair.target, pid), timeout=120, what="the detach's backend to end")
    r.start()
    r.wait_streaming()
    assert_in_sync(pair, db, r)
    assert query(pair.target, db, "SELECT count(*) FROM pg_inherits WHERE inhparent = 'events'::regclass") == [(0,)]
    assert query(pair.target, db, "SELECT count(*) FROM pg_constraint WHERE conrelid = 'events_2024'::regclass "
                                  "AND contype = 'c'") == [(1,)]
    assert query(pair.target, db, "SELECT id FROM events_2024 ORDER BY id") == [(1,), (2,)]
    expected = "detached there before a restart" if cut == "before" else "stopped half-way: finalizing it"
    assert expected in r.log(since_start=True), r.log_tail()
