"""The fence against a failing cluster and across repeated switches.

- A source that goes away while the cutover has it fenced: the cutover
  aborts, and unfencing (and dropping what was made for the way back) is
  retried in the background until it works; until then the report, SHOW
  FENCE, `pghandoff status` and the metrics say that the source is still
  fenced.
- A cutover after a rollback (which leaves the target fenced) works:
  cutover, rollback, cutover, rollback under pgbench, nothing fails,
  nothing is lost.
"""

import json
import re
import subprocess
import threading

import psycopg

from cutoverfixtures import migration, psql_value, wait_for  # noqa: F401
from pgcluster import free_port
from proxyfixtures import PGBENCH
from replfixtures import clusters, cluster_pool, replicator_factory  # noqa: F401
from test_metrics import parse as parse_metrics, scrape as scrape_metrics


def status(m, *args):
    out = m.proxy.pghandoff.run(["status", "-c", m.proxy.config_path, *args], timeout=60)
    assert out.returncode == 0, out.stdout + out.stderr
    return out.stdout


def fenced_metric(port, cluster):
    samples, _ = parse_metrics(scrape_metrics(port))
    return samples[("pghandoff_fenced", (("cluster", cluster),))], samples[("pghandoff_cleanup_pending", ())]


def database_fenced(m):
    """Whether the source database carries the fence (read as a fresh session would start)."""
    return psql_value(m.source_dsn(), "SHOW default_transaction_read_only") == "on"


def test_unfence_is_retried_until_the_source_is_back(migration):
    """The source stops while fenced: the cutover aborts, the fence and the way back's objects go once it is back."""
    metrics_port = free_port()
    m = migration(prepare=lambda dsn: psql_value(dsn, "CREATE TABLE t (id int PRIMARY KEY)"),
                  proxy={"metrics_listen": f"127.0.0.1:{metrics_port}"},
                  cutover={"catchup_timeout": "10min"})
    with m.proxy.connect(m.dbname) as conn:
        conn.execute("INSERT INTO t VALUES (1)")
    wait_for(lambda: psql_value(m.target_dsn(), "SELECT count(*) FROM t") == "1", timeout=60, what="row 1 replicated")
    # A transaction open through the proxy holds the cutover in its pause, after the way back is made.
    busy = m.proxy.connect(m.dbname, autocommit=False)
    blocker = psycopg.connect(m.target_dsn())
    results = []
    cutover = threading.Thread(target=lambda: results.append(m.proxy.run_cutover(timeout=300)))
    try:
        busy.execute("INSERT INTO t VALUES (2)")
        cutover.start()
        m.proxy.wait_log(r"cutover: precheck done .*; pausing", timeout=120)
        # The follower's write of row 2 will wait for this lock, and the catch-up with it, fenced.
        blocker.execute("LOCK TABLE t IN ACCESS EXCLUSIVE MODE")
        busy.commit()
        m.proxy.wait_log(r"cutover: fence done", timeout=120)
        assert database_fenced(m)
        m.pair.source.stop(mode="immediate")
        # The catch-up would wait for catchup_timeout: end it by ending its connection to the target.
        psql_value(m.target_dsn(), "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                                   "WHERE datname = current_database() AND pid <> pg_backend_pid() "
                                   "AND query LIKE '%pg_replication_origin_progress%' AND wait_event_type "
                                   "IS DISTINCT FROM 'Lock'")
        cutover.join(timeout=300)
        assert results and results[0].returncode == 1, \
            (results[0].stdout + results[0].stderr if results else "") + m.proxy.log_tail()

        # The source is down: still fenced, and everything says so.
        report = m.proxy.report()
        assert report["result"] == "aborted" and report["still_fenced"] is True, report
        assert "source" in report["cleanup_pending"] and m.replicator.reverse_origin in report["cleanup_pending"]
        assert "still fenced" in results[0].stderr, results[0].stderr
        _, rows = m.proxy.admin("SHOW FENCE")
        fence = {row[0]: row for row in rows}
        assert fence["source"][1] in ("t", True) and fence["source"][2] in ("t", True), rows
        assert fence["target"][1] in ("f", False), rows
        st = json.loads(status(m, "--json"))
        assert st["fenced"] == {"source": True, "target": False} and st["cleanup_pending"], st
        assert st["last_cutover"]["still_fenced"] is True
        assert re.search(r"^WARNING: the source is still fenced", status(m), re.M)
        assert fenced_metric(metrics_port, "source") == (1, 1)
        # A new cutover waits for the cleanup.
        again = m.proxy.run_cutover()
        assert again.returncode == 1 and "still fenced" in again.stderr, again.stderr
    finally:
        blocker.close()
        busy.close()
        if not m.pair.source.is_running():
            m.pair.source.start()
        if cutover.ident is not None:
            cutover.join(timeout=300)

    # Back: the retry lifts the fence and drops the way back's objects.
    wait_for(lambda: not database_fenced(m), timeout=120, what="the source unfenced by the retry")
    wait_for(lambda: m.proxy.report()["still_fenced"] is False and m.proxy.report()["cleanup_pending"] == "",
             timeout=120, what="the report saying the cleanup is done")
    with m.proxy.connect(m.dbname) as conn:
        conn.execute("INSERT INTO t VALUES (3)")
        assert conn.execute("SELECT inet_server_port()").fetchone()[0] == m.pair.source.port
    assert psql_value(m.source_dsn(), "SELECT count(*) FROM pg_replication_origin "
                                      f"WHERE roname = '{m.replicator.reverse_origin}'") == "0"
    assert psql_value(m.target_dsn(), "SELECT count(*) FROM pg_replication_slots "
                                      f"WHERE slot_name = '{m.replicator.reverse_slot}'") == "0"
    assert psql_value(m.target_dsn(), "SELECT count(*) FROM pg_publication "
                                      f"WHERE pubname = '{m.replicator.reverse_publication}'") == "0"
    assert fenced_metric(metrics_port, "source") == (0, 0)
    st = json.loads(status(m, "--json"))
    assert st["fenced"] == {"source": False, "target": False} and not st["cleanup_pending"], st
    assert "still fenced" not in status(m)
    assert re.search(r"the source takes writes again after \d+ attempt", m.proxy.log())
    # And the next cutover works.
    result = m.proxy.run_cutover()
    assert result.returncode == 0, result.stdout + result.stderr + m.proxy.log_tail()
    assert fenced_metric(metrics_port, "source") == (1, 0)


def pgbench_init(dsn):
    out = subprocess.run([PGBENCH, "-i", "-q", "-s", "1", dsn], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    # pgbench_history has no key: published, it needs a replica identity.
    psql_value(dsn, "ALTER TABLE pgbench_history REPLICA IDENTITY FULL")


PGBENCH_TABLES = {
    "pgbench_accounts": "count(*), sum(aid), sum(abalance)",
    "pgbench_branches": "count(*), sum(bid), sum(bbalance)",
    "pgbench_tellers": "count(*), sum(tid), sum(tbalance)",
    "pgbench_history": "count(*), sum(tid), sum(bid), sum(aid), sum(delta)",
}


def pgbench_digest(dsn):
    return {table: psql_value(dsn, f"SELECT {what} FROM {table}") for table, what in PGBENCH_TABLES.items()}


def test_cutover_rollback_cycle_under_pgbench(migration):
    """cutover -> rollback -> cutover -> rollback under pgbench: 0 failures, every commit on both sides."""
    m = migration(prepare=pgbench_init)
    history = lambda: int(psql_value(m.source_dsn() if on_source[0] else m.target_dsn(),  # noqa: E731
                                     "SELECT count(*) FROM pgbench_history"))
    on_source = [True]
    bench = subprocess.Popen([PGBENCH, "-n", "-c", "8", "-j", "2", "-T", "60", "-h", "127.0.0.1",
                              "-p", str(m.proxy.port), "-U", "postgres", m.dbname],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        for step in range(4):
            seen = history()
            wait_for(lambda: history() > seen + 100, timeout=60, what=f"pgbench writing before switch {step + 1}")
            if step % 2 == 0:
                result = m.proxy.run_cutover()
            else:
                # The way back streams once the reverse follower the proxy started is in.
                wait_for(lambda: psql_value(m.target_dsn(), "SELECT count(*) FROM pg_replication_slots "
                                                            "WHERE slot_name LIKE '%rollback' AND active") == "1",
                         timeout=60, what="the reverse follower streaming")
                result = m.proxy.run_rollback()
            assert result.returncode == 0, f"switch {step + 1}: " + result.stdout + result.stderr + m.proxy.log_tail()
            on_source[0] = step % 2 == 1
        out, err = bench.communicate(timeout=180)
    finally:
        if bench.poll() is None:
            bench.kill()
            bench.communicate()
    assert bench.returncode == 0, out + err
    processed = int(out.split("number of transactions actually processed: ")[1].split()[0])
    failed = out.split("number of failed transactions: ")
    assert len(failed) == 1 or int(failed[1].split()[0]) == 0, out
    assert int(psql_value(m.source_dsn(), "SELECT count(*) FROM pgbench_history")) == processed
    # The forward follower brings the target level with the source.
    source = pgbench_digest(m.source_dsn())
    wait_for(lambda: pgbench_digest(m.target_dsn()) == source, timeout=120, what="the target equal to the source")
    # After the last rollback the target is fenced again, the source is not.
    assert not database_fenced(m)
    assert psql_value(m.target_dsn(), "SHOW default_transaction_read_only") == "on"
