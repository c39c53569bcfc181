"""Transactions larger than the source's logical_decoding_work_mem.

From PostgreSQL 14 the follower asks for pgoutput protocol 2 with streaming:
such a transaction arrives in blocks while it runs, is spooled, and is
applied whole at its commit.  With a 13 source the same transactions arrive
at their commit (protocol 1); the tests run there too and must give the same
tables.  Each test's database gets logical_decoding_work_mem = 64kB, so a few
thousand rows are enough to be streamed.
"""
import pytest

from replfixtures import (  # noqa: F401  (fixtures are used by name)
    assert_tables_equal,
    cluster_pool,
    clusters,
    connect,
    make_database,
    query,
    replicator_factory,
    wait_caught_up,
    wait_for,
)

ONLY_15 = pytest.mark.parametrize("clusters", [(15, 15)], indirect=True, ids=["15to15"])
STREAMING_FROM = 140000
ROWS = 5000  # about 500 kB of decoded changes: several blocks at 64kB


def streams(pair):
    return pair.source.version_num >= STREAMING_FROM


def small_decoding_memory(pair, db):
    """The walsender of db's slot streams anything past 64kB (a per-database setting it reads at connect)."""
    pair.source.execute(f'ALTER DATABASE "{db}" SET logical_decoding_work_mem = \'64kB\'')


def streamed_txns(pair, slot):
    rows = pair.source.execute("SELECT coalesce(stream_txns, 0) FROM pg_stat_replication_slots "
                               "WHERE slot_name = %s", params=(slot,))
    return rows[0][0] if rows else 0


def count(cluster, db, sql):
    return query(cluster, db, sql)[0][0]


def create_tables(pair, db):
    """On the source; schema = copy takes them to the target."""
    with connect(pair.source, db) as conn:
        conn.execute("CREATE TABLE big (id int PRIMARY KEY, v text)")
        conn.execute("CREATE TABLE small (id int PRIMARY KEY, v text)")
        # Never written before the streamed transaction: its description
        # first arrives inside a subtransaction that is rolled back.
        conn.execute("CREATE TABLE rescue (id int PRIMARY KEY, v text)")


def insert_big(conn, first, n=ROWS):
    conn.execute("INSERT INTO big SELECT g, repeat('x', 80) || g FROM generate_series(%s::int, %s::int) g",
                 (first, first + n - 1))


def test_streamed_commit_abort_and_savepoints(clusters, replicator_factory):
    pair = clusters
    db = make_database(pair, "streamed")
    create_tables(pair, db)
    small_decoding_memory(pair, db)
    r = replicator_factory(pair, db)
    r.wait_streaming()
    wait_caught_up(pair, db, r.origin, r)

    with connect(pair.source, db, autocommit=False) as big, connect(pair.source, db) as other:
        insert_big(big, 1)
        # Transactions committed while the big one runs arrive before it, and
        # nothing of the big one is applied until it commits.
        for i in range(1, 6):
            other.execute("INSERT INTO small VALUES (%s, 'while the big one runs')", (i,))
        wait_for(lambda: count(pair.target, db, "SELECT count(*) FROM small") == 5, 60,
                 what="the small transactions on the target", on_timeout=r.log_tail)
        if streams(pair):
            wait_for(lambda: streamed_txns(pair, r.slot) >= 1, 60, what="the big transaction streamed",
                     on_timeout=r.log_tail)
            r.wait_log(r"streamed transaction \d+: spooling")
        assert count(pair.target, db, "SELECT count(*) FROM big") == 0

        # A subtransaction rolled back after it was streamed, one released,
        # and a table described only inside a rolled-back one.
        big.execute("SAVEPOINT s1")
        insert_big(big, 100001)
        big.execute("ROLLBACK TO SAVEPOINT s1")
        big.execute("SAVEPOINT s2")
        big.execute("UPDATE big SET v = 'updated in s2' WHERE id % 10 = 0")
        big.execute("RELEASE SAVEPOINT s2")
        big.execute("SAVEPOINT s3")
        big.execute("INSERT INTO rescue SELECT g, 'rolled back' FROM generate_series(1, %s::int) g", (ROWS,))
        big.execute("ROLLBACK TO SAVEPOINT s3")
        big.execute("INSERT INTO rescue VALUES (0, 'kept')")
        big.execute("DELETE FROM big WHERE id % 7 = 0")
        insert_big(big, 200001)
        big.commit()
        if streams(pair):
            r.wait_log(r"subtransaction \d+ aborted")

        # A streamed transaction that aborts leaves nothing.
        insert_big(big, 300001)
        big.execute("UPDATE big SET v = 'never' WHERE id < 100")
        big.rollback()

    wait_caught_up(pair, db, r.origin, r)
    assert_tables_equal(pair, db)
    expected_big = ROWS - ROWS // 7 + ROWS
    assert count(pair.target, db, "SELECT count(*) FROM big") == expected_big
    assert count(pair.target, db, "SELECT count(*) FROM big WHERE v = 'updated in s2'") == \
        count(pair.source, db, "SELECT count(*) FROM big WHERE v = 'updated in s2'") > 0
    assert query(pair.target, db, "SELECT id, v FROM rescue") == [(0, "kept")]
    assert count(pair.target, db, "SELECT count(*) FROM big WHERE id > 300000 OR v = 'never'") == 0
    if streams(pair):
        assert streamed_txns(pair, r.slot) >= 2
    assert r.errors() == []


@ONLY_15
def test_kill9_inside_streamed_transaction(clusters, replicator_factory):
    """Killed while a streamed transaction is spooled: the restart receives it again from its start."""
    pair = clusters
    db = make_database(pair, "streamkill")
    create_tables(pair, db)
    small_decoding_memory(pair, db)
    r = replicator_factory(pair, db)
    r.wait_streaming()
    wait_caught_up(pair, db, r.origin, r)

    with connect(pair.source, db, autocommit=False) as big:
        insert_big(big, 1)
        r.wait_log(r"streamed transaction \d+: spooling")
        r.kill9()
        r.start()
        r.wait_streaming()
        insert_big(big, 100001)
        big.commit()
    wait_caught_up(pair, db, r.origin, r)
    assert_tables_equal(pair, db)
    assert count(pair.target, db, "SELECT count(*) FROM big") == 2 * ROWS
    # The second run spooled the transaction from its first block.
    assert "spooling" in r.log(since_start=True)
    assert r.errors(since_start=True) == []
