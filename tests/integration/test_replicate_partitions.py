"""Partitioned tables with schema = none, where the DBA's target may partition differently.

A target that partitions a partitioned table of the source otherwise (other
bounds and partition names, or a plain table in its place) gets it through
the root: the publication is made WITH (publish_via_partition_root = true),
the copy routes each source partition's rows into the target's root table,
and every comparison takes the table whole.  A target that partitions like
the source keeps the publication per partition.  The choice is the
publication's, so a restart keeps it.
"""

import re

from cutoverfixtures import migration, psql_value, wait_for  # noqa: F401
from replfixtures import (  # noqa: F401  (fixtures are used by name)
    run_sql,
    assert_tables_equal,
    cluster_pool,
    clusters,
    connect,
    make_database,
    query,
    replicator_factory,
    table_digest,
    wait_caught_up,
)

SYNC_TABLE = "CREATE TABLE _sync (id serial PRIMARY KEY, at timestamptz DEFAULT now())"

# The source's meas: by year, 2023 split again by hash, and a default partition.
SOURCE_MEAS = (
    "CREATE TABLE meas (id int, ts date, v text, PRIMARY KEY (id, ts)) PARTITION BY RANGE (ts)",
    "CREATE TABLE meas_2021 PARTITION OF meas FOR VALUES FROM ('2021-01-01') TO ('2022-01-01')",
    "CREATE TABLE meas_2022 PARTITION OF meas FOR VALUES FROM ('2022-01-01') TO ('2023-01-01')",
    "CREATE TABLE meas_2023 PARTITION OF meas FOR VALUES FROM ('2023-01-01') TO ('2024-01-01') "
    "PARTITION BY HASH (id)",
    "CREATE TABLE meas_2023_a PARTITION OF meas_2023 FOR VALUES WITH (MODULUS 2, REMAINDER 0)",
    "CREATE TABLE meas_2023_b PARTITION OF meas_2023 FOR VALUES WITH (MODULUS 2, REMAINDER 1)",
    "CREATE TABLE meas_default PARTITION OF meas DEFAULT",
)

# The target's meas: one level, other names, bounds across the source's (mid-2022).
TARGET_MEAS = (
    "CREATE TABLE meas (id int, ts date, v text, PRIMARY KEY (id, ts)) PARTITION BY RANGE (ts)",
    "CREATE TABLE meas_old PARTITION OF meas FOR VALUES FROM (MINVALUE) TO ('2022-07-01')",
    "CREATE TABLE meas_new PARTITION OF meas FOR VALUES FROM ('2022-07-01') TO (MAXVALUE)",
)

VIA_ROOT_WARNING = (r"WARNING.*table {} is partitioned differently on the target: it is replicated through its "
                    r"root table.*TRUNCATE of a single partition")


def make_target(pair, db, *statements):
    pair.target.execute(f"CREATE DATABASE {db}")
    run_sql(pair.target, db, SYNC_TABLE, *statements)


def via_root(pair, r, db):
    """The publication's publish_via_partition_root (false before PostgreSQL 13 has no such column)."""
    return query(pair.source, db, "SELECT pubviaroot FROM pg_publication WHERE pubname = %s",
                 (r.publication,)) == [(True,)]


def partition_of(cluster, db, table, where):
    """The partition (tableoid) that holds the rows of table matching where, one name per distinct one."""
    return sorted(row[0] for row in query(cluster, db, f"SELECT DISTINCT tableoid::regclass::text FROM {table} "
                                                       f"WHERE {where}"))


def start_and_sync(replicator_factory, pair, db):
    r = replicator_factory(pair, db, replication={"schema": "none"})
    r.wait_streaming()
    wait_caught_up(pair, db, r.origin, r)
    return r


def test_different_partitions_via_root(clusters, replicator_factory, pghandoff):
    """Other bounds and partition names on the target: copied, streamed and verified through the root."""
    pair = clusters
    db = make_database(pair, "viaroot")
    run_sql(pair.source, db, *SOURCE_MEAS,
            "INSERT INTO meas SELECT g, date '2021-01-01' + (g * 7) % 1200, 'v' || g "
            "FROM generate_series(1, 2000) g")
    make_target(pair, db, *TARGET_MEAS)
    r = start_and_sync(replicator_factory, pair, db)
    assert via_root(pair, r, db)
    r.wait_log(VIA_ROOT_WARNING.format(re.escape("public.meas")))
    # Each source partition was its own copy task, into the target's root.
    assert re.search(r"copied public\.meas_2023_a into public\.meas: \d+ rows", r.log())
    assert_tables_equal(pair, db, roots_only=True)
    assert query(pair.target, db, "SELECT count(*) FROM meas") == [(2000,)]

    run_sql(pair.source, db,
            "INSERT INTO meas SELECT g, date '2021-06-01' + (g * 13) % 1300, 'new' FROM generate_series(3001, 4000) g",
            # Within one source partition (2022), across the target's bound at July: a move only there.
            "UPDATE meas SET ts = date '2022-12-01', v = 'moved on the target' "
            "WHERE ts >= '2022-01-01' AND ts < '2022-07-01' AND id % 3 = 0",
            # Across the source's partitions, into and out of the two-level one.
            "UPDATE meas SET ts = ts + 365 WHERE id % 2 = 0 AND v <> 'moved on the target'",
            "UPDATE meas SET v = v || '+' WHERE id % 5 = 0",
            "DELETE FROM meas WHERE id % 11 = 0")
    wait_caught_up(pair, db, r.origin, r)
    assert_tables_equal(pair, db, roots_only=True)
    assert partition_of(pair.target, db, "meas", "v = 'moved on the target'") == ["meas_new"]

    # `pghandoff verify` compares meas whole on both sides.
    result = pghandoff.run(["verify", "-c", r.config_path], timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
    assert re.search(r"^OK    public\.meas: \d+ row\(s\)$", result.stdout, re.M), result.stdout
    assert "meas_2021" not in result.stdout

    # A restart finds the publication and keeps it as it was made.
    r.stop()
    r.start()
    r.wait_log(VIA_ROOT_WARNING.format(re.escape("public.meas")))
    r.wait_streaming()
    run_sql(pair.source, db, "TRUNCATE meas",
            "INSERT INTO meas VALUES (1, '2021-05-05', 'after truncate'), (2, '2023-05-05', 'after truncate')")
    wait_caught_up(pair, db, r.origin, r)
    assert via_root(pair, r, db)
    assert_tables_equal(pair, db, roots_only=True)
    assert query(pair.target, db, "SELECT id, v FROM meas ORDER BY id") == [(1, "after truncate"),
                                                                           (2, "after truncate")]
    assert r.errors() == []


def test_plain_table_on_target(clusters, replicator_factory):
    """A partitioned table of the source is a plain table on the target."""
    pair = clusters
    db = make_database(pair, "viaplain")
    run_sql(pair.source, db,
            "CREATE TABLE logs (id bigint, at timestamptz, msg text, PRIMARY KEY (id, at)) PARTITION BY RANGE (at)",
            "CREATE TABLE logs_1 PARTITION OF logs FOR VALUES FROM ('2024-01-01 00:00+00') TO ('2024-02-01 00:00+00')",
            "CREATE TABLE logs_2 PARTITION OF logs FOR VALUES FROM ('2024-02-01 00:00+00') TO ('2024-03-01 00:00+00')",
            "INSERT INTO logs SELECT g, '2024-01-01 00:00+00'::timestamptz + g * interval '1 hour', 'm' || g "
            "FROM generate_series(1, 1000) g")
    make_target(pair, db, "CREATE TABLE logs (id bigint, at timestamptz, msg text, PRIMARY KEY (id, at))")
    r = start_and_sync(replicator_factory, pair, db)
    assert via_root(pair, r, db)
    r.wait_log(VIA_ROOT_WARNING.format(re.escape("public.logs")))
    assert_tables_equal(pair, db, roots_only=True)

    run_sql(pair.source, db,
            "INSERT INTO logs VALUES (5000, '2024-02-15 00:00+00', 'new')",
            # From logs_1 to logs_2 on the source; one table on the target.
            "UPDATE logs SET at = at + interval '31 days', msg = 'moved' WHERE id % 4 = 0 AND id < 300",
            "DELETE FROM logs WHERE id % 9 = 0")
    wait_caught_up(pair, db, r.origin, r)
    assert_tables_equal(pair, db, roots_only=True)
    run_sql(pair.source, db, "TRUNCATE logs", "INSERT INTO logs VALUES (1, '2024-01-05 00:00+00', 'only')")
    wait_caught_up(pair, db, r.origin, r)
    assert_tables_equal(pair, db, roots_only=True)
    assert query(pair.target, db, "SELECT count(*) FROM logs") == [(1,)]
    assert r.errors() == []


def test_partitioned_on_target(clusters, replicator_factory):
    """A plain table of the source is partitioned on the target: nothing to publish through a root."""
    pair = clusters
    db = make_database(pair, "plainsrc")
    run_sql(pair.source, db,
            "CREATE TABLE events (id int PRIMARY KEY, kind int, payload text)",
            "INSERT INTO events SELECT g, g % 7, 'p' || g FROM generate_series(1, 1500) g")
    make_target(pair, db,
                "CREATE TABLE events (id int PRIMARY KEY, kind int, payload text) PARTITION BY HASH (id)",
                "CREATE TABLE events_0 PARTITION OF events FOR VALUES WITH (MODULUS 3, REMAINDER 0)",
                "CREATE TABLE events_1 PARTITION OF events FOR VALUES WITH (MODULUS 3, REMAINDER 1)",
                "CREATE TABLE events_2 PARTITION OF events FOR VALUES WITH (MODULUS 3, REMAINDER 2)")
    r = start_and_sync(replicator_factory, pair, db)
    assert not via_root(pair, r, db)
    assert "partitioned differently" not in r.log()
    assert_tables_equal(pair, db, roots_only=True)
    assert len(partition_of(pair.target, db, "events", "true")) == 3

    run_sql(pair.source, db,
            "INSERT INTO events SELECT g, 0, 'new' FROM generate_series(2001, 2100) g",
            # A new key moves the row between the target's hash partitions.
            "UPDATE events SET id = id + 10000 WHERE id % 10 = 0",
            "UPDATE events SET payload = 'upd' WHERE kind = 3",
            "DELETE FROM events WHERE id % 13 = 0")
    wait_caught_up(pair, db, r.origin, r)
    assert_tables_equal(pair, db, roots_only=True)
    run_sql(pair.source, db, "TRUNCATE events", "INSERT INTO events VALUES (7, 7, 'only')")
    wait_caught_up(pair, db, r.origin, r)
    assert_tables_equal(pair, db, roots_only=True)
    assert r.errors() == []


def test_same_partitions_per_partition(clusters, replicator_factory):
    """schema = none with the source's own partitions: published per partition, as with schema = copy."""
    pair = clusters
    db = make_database(pair, "sameparts")
    run_sql(pair.source, db, *SOURCE_MEAS,
            "INSERT INTO meas SELECT g, date '2021-01-01' + (g * 7) % 1200, 'v' || g "
            "FROM generate_series(1, 1000) g")
    make_target(pair, db, *SOURCE_MEAS)
    r = start_and_sync(replicator_factory, pair, db)
    assert not via_root(pair, r, db)
    assert "partitioned differently" not in r.log()
    assert "into public.meas" not in r.log()
    assert_tables_equal(pair, db)
    # Per partition, a TRUNCATE of one partition is replicated too.
    run_sql(pair.source, db, "TRUNCATE meas_2022", "UPDATE meas SET ts = ts + 365 WHERE id % 2 = 0")
    wait_caught_up(pair, db, r.origin, r)
    assert_tables_equal(pair, db)
    assert r.errors() == []


def test_restart_after_target_repartitioned(clusters, replicator_factory):
    """Publication per partition, target partitioned otherwise meanwhile: the restart stops and says what to do."""
    pair = clusters
    db = make_database(pair, "reparts")
    run_sql(pair.source, db, *SOURCE_MEAS,
            "INSERT INTO meas SELECT g, date '2021-01-01' + g, 'v' || g FROM generate_series(1, 300) g")
    make_target(pair, db, *SOURCE_MEAS)
    r = start_and_sync(replicator_factory, pair, db)
    assert not via_root(pair, r, db)
    r.stop()
    run_sql(pair.target, db, "ALTER TABLE meas DETACH PARTITION meas_default", "DROP TABLE meas_default",
            "CREATE TABLE meas_rest PARTITION OF meas DEFAULT")
    r.start()
    assert r.wait_exit() != 0
    assert re.search(r"ERROR.*publication p_\w+ publishes partitions one by one.*now the target partitions 1 "
                     r"table\(s\) differently \(public\.meas\).*`pghandoff replicate --drop` and start again",
                     r.log(since_start=True)), r.log_tail()
    assert not via_root(pair, r, db)


def test_via_root_needs_identity_of_root(clusters, replicator_factory):
    """Keys on the partitions only: through the root, updates would find no row, so the replicator refuses."""
    pair = clusters
    db = make_database(pair, "noident")
    run_sql(pair.source, db,
            "CREATE TABLE ev (id int NOT NULL, at date NOT NULL, v text) PARTITION BY RANGE (at)",
            "CREATE TABLE ev_1 PARTITION OF ev FOR VALUES FROM ('2024-01-01') TO ('2024-07-01')",
            "CREATE TABLE ev_2 PARTITION OF ev FOR VALUES FROM ('2024-07-01') TO ('2025-01-01')",
            "ALTER TABLE ev_1 ADD PRIMARY KEY (id)",
            "ALTER TABLE ev_2 ADD PRIMARY KEY (id)")
    make_target(pair, db, "CREATE TABLE ev (id int PRIMARY KEY, at date NOT NULL, v text)")
    r = replicator_factory(pair, db, replication={"schema": "none"})
    assert r.wait_exit() != 0
    assert re.search(r"ERROR.*1 partitioned table\(s\) have no primary key or replica identity of their own "
                     r"\(public\.ev\).*REPLICA IDENTITY FULL", r.log()), r.log_tail()
    assert query(pair.source, db, "SELECT count(*) FROM pg_publication WHERE pubname = %s",
                 (r.publication,)) == [(0,)]


def test_cutover_and_rollback_via_root(migration):
    """verify = counts counts meas whole on both sides; the way back goes through the root too."""
    def prepare_source(dsn):
        psql_value(dsn, "; ".join(SOURCE_MEAS) + "; INSERT INTO meas SELECT g, date '2021-01-01' + g, 'v' || g "
                                                 "FROM generate_series(1, 1200) g")

    def prepare_target(dsn):
        psql_value(dsn, "; ".join((SYNC_TABLE,) + TARGET_MEAS))

    m = migration(prepare=prepare_source, prepare_target=prepare_target, replication={"schema": "none"},
                  cutover={"verify": "counts"})
    assert via_root(m.pair, m.replicator, m.dbname)
    conn = m.proxy.connect(m.dbname)
    conn.execute("INSERT INTO meas VALUES (5001, '2022-03-03', 'source before')")
    result = m.proxy.run_cutover()
    assert result.returncode == 0, result.stdout + result.stderr + m.proxy.log_tail()
    # The way back publishes through the root as well: the source has no meas_old or meas_new.
    assert psql_value(m.target_dsn(), "SELECT pubviaroot FROM pg_publication "
                                      f"WHERE pubname = '{m.replicator.reverse_publication}'") == "t"
    wait_for(lambda: psql_value(m.target_dsn(), "SELECT count(*) FROM pg_replication_slots "
                                                "WHERE slot_name LIKE '%rollback' AND active") == "1",
             timeout=60, what="the reverse follower streaming")
    conn.execute("INSERT INTO meas VALUES (5002, '2023-08-08', 'target')")
    # Across the target's bound (July 2022) and the source's (2023): moves on both sides.
    conn.execute("UPDATE meas SET ts = date '2023-02-02', v = 'moved on target' WHERE id = 5001")
    conn.execute("DELETE FROM meas WHERE id <= 100")
    result = m.proxy.run_rollback()
    assert result.returncode == 0, result.stdout + result.stderr + m.proxy.log_tail()
    assert conn.execute("SELECT inet_server_port()").fetchone()[0] == m.pair.source.port
    # Routed into the source's own partitions: 2023 is split by hash there.
    rows = conn.execute("SELECT id, v, tableoid::regclass::text FROM meas WHERE id > 5000 ORDER BY id").fetchall()
    assert [(i, v) for i, v, _ in rows] == [(5001, "moved on target"), (5002, "target")]
    assert all(part in ("meas_2023_a", "meas_2023_b") for _, _, part in rows), rows
    assert table_digest(m.pair.source, m.dbname, "meas") == table_digest(m.pair.target, m.dbname, "meas")
    assert table_digest(m.pair.source, m.dbname, "meas")[0] == 1200 + 2 - 100

