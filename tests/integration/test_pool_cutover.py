"""A cutover and a rollback with pooled server connections (13 -> 17, 15 -> 15).

Clients that connect per transaction (pgbench -C) and persistent ones run
through the proxy while it switches: nothing fails, nothing is lost, the
idle pooled connections to the cluster left are closed, and the pool of the
cluster reached was warmed before the pause.
"""

import subprocess

from cutoverfixtures import migration, psql_value, wait_for  # noqa: F401
from proxyfixtures import PGBENCH, pgbench_counts
from replfixtures import clusters, cluster_pool, replicator_factory  # noqa: F401
from test_cutover import pgbench_init


def alive(dsn):
    """The pids of the cluster's backends."""
    return set(psql_value(dsn, "SELECT string_agg(pid::text, ' ') FROM pg_stat_activity").split())


def servers(m, cluster=None, state=None):
    return [r for r in m.proxy.admin_dicts("SHOW SERVERS")
            if (cluster is None or r["cluster"] == cluster) and (state is None or r["state"] == state)]


def bench(m, *args):
    return subprocess.Popen([PGBENCH, "-n", "-j", "2", "-T", "8", "-h", "127.0.0.1", "-p", str(m.proxy.port),
                             "-U", "postgres", *args, m.dbname],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def finish(proc):
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, out + err
    return pgbench_counts(out)


def test_cutover_and_rollback_with_pools(migration):
    m = migration(prepare=pgbench_init)
    # A few logins and their departure leave idle pooled connections to the source.
    conns = [m.proxy.connect(m.dbname) for _ in range(4)]
    for c in conns:
        c.close()
    wait_for(lambda: len(servers(m, "source", "idle")) == 4, 30, "four idle pooled connections")

    per_txn = bench(m, "-C", "-c", "4")
    persistent = bench(m, "-c", "4")
    wait_for(lambda: int(psql_value(m.source_dsn(), "SELECT count(*) FROM pgbench_history")) > 200,
             timeout=60, what="pgbench writing")
    source_pids = {r["backend_pid"] for r in servers(m, "source")}
    result = m.proxy.run_cutover()
    committed = [finish(per_txn), finish(persistent)]
    assert result.returncode == 0, result.stdout + result.stderr + m.proxy.log_tail()
    assert [failed for _, failed in committed] == [0, 0]
    history = int(psql_value(m.target_dsn(), "SELECT count(*) FROM pgbench_history"))
    assert history == sum(done for done, _ in committed)
    # The target's pool was warmed before the pause, and the source's idle connections are gone.
    assert "warming the target's pools" in m.proxy.log()
    wait_for(lambda: servers(m, "source") == [], 30, "the source's pooled connections to close")
    # Their backends end (the reverse follower's own connection to the source is not one of them).
    wait_for(lambda: not source_pids & alive(m.source_dsn()), 30, "the source's pooled backends to end")
    assert servers(m, "target", "idle"), m.proxy.admin_dicts("SHOW SERVERS")
    with m.proxy.connect(m.dbname) as conn:
        assert conn.execute("SELECT inet_server_port()").fetchone()[0] == m.pair.target.port

    # And back, the same way.
    wait_for(lambda: psql_value(m.target_dsn(), "SELECT count(*) FROM pg_replication_slots "
                                                "WHERE slot_name LIKE '%rollback' AND active") == "1",
             timeout=60, what="the reverse follower streaming")
    per_txn = bench(m, "-C", "-c", "4")
    wait_for(lambda: int(psql_value(m.target_dsn(), "SELECT count(*) FROM pgbench_history")) > history + 100,
             timeout=60, what="pgbench writing to the target")
    result = m.proxy.run_rollback()
    done, failed = finish(per_txn)
    assert result.returncode == 0, result.stdout + result.stderr + m.proxy.log_tail()
    assert failed == 0
    assert int(psql_value(m.source_dsn(), "SELECT count(*) FROM pgbench_history")) == history + done
    wait_for(lambda: servers(m, "target") == [], 30, "the target's pooled connections to close")
    with m.proxy.connect(m.dbname) as conn:
        assert conn.execute("SELECT inet_server_port()").fetchone()[0] == m.pair.source.port


def test_cutover_in_transaction_mode(migration):
    """TPC-B with 16 clients over a pool of 4 in transaction mode: the pause drains running transactions only."""
    m = migration(prepare=pgbench_init, proxy={"pool_mode": "transaction", "default_pool_size": 4})
    load = bench(m, "-c", "16")
    wait_for(lambda: int(psql_value(m.source_dsn(), "SELECT count(*) FROM pgbench_history")) > 200,
             timeout=60, what="pgbench writing")
    result = m.proxy.run_cutover()
    done, failed = finish(load)
    assert result.returncode == 0, result.stdout + result.stderr + m.proxy.log_tail()
    assert failed == 0
    assert int(psql_value(m.target_dsn(), "SELECT count(*) FROM pgbench_history")) == done
    # No session was carried: every client was between transactions, without a server connection.
    assert m.proxy.report()["clients_moved"] == 0
    wait_for(lambda: servers(m, "source") == [], 30, "the source's pooled connections to close")
    assert 0 < len(servers(m, "target")) <= 4 + 4, m.proxy.admin_dicts("SHOW SERVERS")
