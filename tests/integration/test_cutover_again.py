"""A cutover after a rollback: the way there again, as a migration rehearsal takes it (13 -> 17, 15 -> 15)."""

from cutoverfixtures import migration, psql_value, wait_for  # noqa: F401
from replfixtures import clusters, cluster_pool, replicator_factory  # noqa: F401


def test_cutover_after_rollback(migration):
    """The rollback leaves the target fenced; the second cutover still prepares its way back there."""
    m = migration(prepare=lambda dsn: psql_value(dsn, "CREATE TABLE t (id serial PRIMARY KEY, side text)"))
    conn = m.proxy.connect(m.dbname)
    conn.execute("INSERT INTO t (side) VALUES ('source')")
    result = m.proxy.run_cutover()
    assert result.returncode == 0, result.stdout + result.stderr + m.proxy.log_tail()
    wait_for(lambda: psql_value(m.target_dsn(), "SELECT count(*) FROM pg_replication_slots "
                                                "WHERE slot_name LIKE '%rollback' AND active") == "1",
             timeout=60, what="the reverse follower streaming")
    conn.execute("INSERT INTO t (side) VALUES ('target')")
    result = m.proxy.run_rollback()
    assert result.returncode == 0, result.stdout + result.stderr + m.proxy.log_tail()
    wait_for(lambda: psql_value(m.target_dsn(), "SELECT count(*) FROM pg_replication_slots "
                                                "WHERE slot_name LIKE '%rollback'") == "0",
             timeout=60, what="the reverse slot dropped")
    conn.execute("INSERT INTO t (side) VALUES ('source again')")
    result = m.proxy.run_cutover()
    assert result.returncode == 0, result.stdout + result.stderr + m.proxy.log_tail()
    assert conn.execute("SELECT inet_server_port()").fetchone()[0] == m.pair.target.port
    conn.execute("INSERT INTO t (side) VALUES ('target again')")
    assert [r[0] for r in conn.execute("SELECT side FROM t ORDER BY id").fetchall()] == \
        ["source", "target", "source again", "target again"]
    # The way back is ready again: the reverse follower streams from the target.
    wait_for(lambda: psql_value(m.target_dsn(), "SELECT count(*) FROM pg_replication_slots "
                                                "WHERE slot_name LIKE '%rollback' AND active") == "1",
             timeout=60, what="the reverse follower streaming after the second cutover")
    conn.close()
