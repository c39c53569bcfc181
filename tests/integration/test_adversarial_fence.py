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

import contextlib
import json
import re
import subprocess
import threading

import psycopg
import pytest

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


def database_fenced(m, dsn=None):
    """Whether the source database (or dsn's) carries the fence, as a fresh session starts."""
    return psql_value(dsn or m.source_dsn(), "SHOW default_transaction_read_only") == "on"


@contextlib.contextmanager
def aborted_with_the_cluster_left_down(m, rollback=False):
    """A cutover that aborts fenced while the source is stopped: yields its CompletedProcess, the source still down.

    A transaction open through the proxy holds the cutover in its pause, after
    the way back is made; a lock on the target then holds the follower's write
    of that transaction, and the catch-up with it, fenced.  The source stops
    (immediate: a fast shutdown would wait for the walsender whose follower is
    stuck), and ending the catch-up's connection to the target aborts the
    cutover.  The source starts again on the way out.  rollback=True: the
    same for a rollback, the target and the source swapped.
    """
    if rollback:
        kind, left, left_dsn, arrival = "rollback", m.pair.target, m.target_dsn(), m.source_dsn()
    else:
        kind, left, left_dsn, arrival = "cutover", m.pair.source, m.source_dsn(), m.target_dsn()
    busy = m.proxy.connect(m.dbname, autocommit=False)
    blocker = psycopg.connect(arrival)
    results = []
    run = m.proxy.run_rollback if rollback else m.proxy.run_cutover
    switch = threading.Thread(target=lambda: results.append(run(timeout=300)))
    try:
        busy.execute("INSERT INTO t VALUES (2)")
        switch.start()
        m.proxy.wait_log(rf"cutover: {kind}: precheck done .*; pausing", timeout=120)
        blocker.execute("LOCK TABLE t IN ACCESS EXCLUSIVE MODE")
        busy.commit()
        m.proxy.wait_log(rf"cutover: {kind}: fence done", timeout=120)
        assert database_fenced(m, left_dsn)
        left.stop(mode="immediate")
        psql_value(arrival, "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                            "WHERE datname = current_database() AND pid <> pg_backend_pid() "
                            "AND query LIKE '%pg_replication_origin_progress%' AND wait_event_type "
                            "IS DISTINCT FROM 'Lock'")
        switch.join(timeout=300)
        assert results and results[0].returncode == 1, \
            (results[0].stdout + results[0].stderr if results else "") + m.proxy.log_tail()
        yield results[0]
    finally:
        blocker.close()
        busy.close()
        if not left.is_running():
            left.start()
        if switch.ident is not None:
            switch.join(timeout=300)


def fence_rows(m):
    _, rows = m.proxy.admin("SHOW FENCE")
    return {row[0]: (row[1] in ("t", True), row[2] in ("t", True), row[3]) for row in rows}


def assert_no_way_back_left(m):
    assert psql_value(m.source_dsn(), "SELECT count(*) FROM pg_replication_origin "
                                      f"WHERE roname = '{m.replicator.reverse_origin}'") == "0"
    assert psql_value(m.target_dsn(), "SELECT count(*) FROM pg_replication_slots "
                                      f"WHERE slot_name = '{m.replicator.reverse_slot}'") == "0"
    assert psql_value(m.target_dsn(), "SELECT count(*) FROM pg_publication "
                                      f"WHERE pubname = '{m.replicator.reverse_publication}'") == "0"


def prepare_t(dsn):
    psql_value(dsn, "CREATE TABLE t (id int PRIMARY KEY); INSERT INTO t VALUES (1)")


def test_unfence_is_retried_until_the_source_is_back(migration):
    """The source stops while fenced: the cutover aborts, the fence and the way back's objects go once it is back."""
    metrics_port = free_port()
    m = migration(prepare=prepare_t, proxy={"metrics_listen": f"127.0.0.1:{metrics_port}"},
                  cutover={"catchup_timeout": "10min"})
    with aborted_with_the_cluster_left_down(m) as result:
        # The source is down: still fenced, and everything says so.
        report = m.proxy.report()
        assert report["result"] == "aborted" and report["still_fenced"] is True, report
        assert "the source is still fenced" in report["cleanup_pending"], report
        assert m.replicator.reverse_origin in report["cleanup_pending"], report
        assert "the source is still fenced" in result.stderr, result.stderr
        fence = fence_rows(m)
        assert fence["source"][:2] == (True, True) and "still fenced" in fence["source"][2], fence
        assert fence["target"][0] is False, fence
        st = json.loads(status(m, "--json"))
        assert st["fenced"] == {"source": True, "target": False} and "still fenced" in st["cleanup_pending"], st
        assert st["last_cutover"]["still_fenced"] is True
        assert re.search(r"^WARNING: the source is still fenced", status(m), re.M)
        assert fenced_metric(metrics_port, "source") == (1, 1)
        # No other cutover meanwhile: it would meet the fence.
        again = m.proxy.run_cutover()
        assert again.returncode == 1 and "the source is still fenced" in again.stderr, again.stderr

    # Back: the retry lifts the fence and drops the way back's objects.
    wait_for(lambda: not database_fenced(m), timeout=120, what="the source unfenced by the retry")
    wait_for(lambda: m.proxy.report()["still_fenced"] is False and m.proxy.report()["cleanup_pending"] == "",
             timeout=120, what="the report saying the cleanup is done")
    with m.proxy.connect(m.dbname) as conn:
        conn.execute("INSERT INTO t VALUES (3)")
        assert conn.execute("SELECT inet_server_port()").fetchone()[0] == m.pair.source.port
    assert_no_way_back_left(m)
    assert fenced_metric(metrics_port, "source") == (0, 0)
    assert fence_rows(m) == {"source": (False, False, ""), "target": (False, False, "")}
    st = json.loads(status(m, "--json"))
    assert st["fenced"] == {"source": False, "target": False} and st["cleanup_pending"] is None, st
    assert "still fenced" not in status(m)
    assert re.search(r"the source takes writes again after \d+ attempt", m.proxy.log())
    # And the next cutover works, once the follower streams from the restarted source again.
    wait_for(lambda: m.slot_pid() is not None, timeout=120, what="the follower streaming again")
    result = m.proxy.run_cutover()
    assert result.returncode == 0, result.stdout + result.stderr + m.proxy.log_tail()
    assert fenced_metric(metrics_port, "source") == (1, 0)


@pytest.mark.parametrize("clusters", [(15, 15)], indirect=True, ids=["15to15"])
def test_unfence_owed_survives_a_proxy_restart(migration, clusters):
    """The proxy restarted while the undo is owed: the state file says so, the new proxy retries it."""
    m = migration(prepare=prepare_t, cutover={"catchup_timeout": "10min"})
    with aborted_with_the_cluster_left_down(m):
        m.proxy.stop()
        m.proxy.start()
        m.proxy.wait_log(r"state file .*: an aborted cutover left the source fenced and the way back's objects; "
                         r"retrying")
        fence = fence_rows(m)
        assert fence["source"][:2] == (True, True) and "still fenced" in fence["source"][2], fence
    wait_for(lambda: not database_fenced(m), timeout=120, what="the source unfenced by the restarted proxy")
    wait_for(lambda: fence_rows(m)["source"] == (False, False, ""), timeout=120, what="SHOW FENCE saying done")
    assert_no_way_back_left(m)
    with m.proxy.connect(m.dbname) as conn:
        conn.execute("INSERT INTO t VALUES (3)")
    # Done is recorded too: a second restart owes nothing.
    m.proxy.stop()
    m.proxy.start()
    assert fence_rows(m)["source"] == (False, False, "")
    assert "an aborted cutover left" not in m.proxy.log().split("proxy started")[-1]


@pytest.mark.parametrize("clusters", [(15, 15)], indirect=True, ids=["15to15"])
def test_unfence_of_the_target_is_retried_after_an_aborted_rollback(migration, clusters):
    """A rollback aborted fenced while the target is down: clients stay on the target, which takes writes again."""
    metrics_port = free_port()
    m = migration(prepare=prepare_t, proxy={"metrics_listen": f"127.0.0.1:{metrics_port}"},
                  cutover={"catchup_timeout": "10min"})
    result = m.proxy.run_cutover()
    assert result.returncode == 0, result.stdout + result.stderr + m.proxy.log_tail()
    wait_for(lambda: psql_value(m.target_dsn(), "SELECT count(*) FROM pg_replication_slots "
                                                "WHERE slot_name LIKE '%rollback' AND active") == "1",
             timeout=60, what="the reverse follower streaming")
    with aborted_with_the_cluster_left_down(m, rollback=True) as result:
        assert "the target is still fenced" in result.stderr, result.stderr
        report = m.proxy.report()
        assert report["kind"] == "rollback" and report["still_fenced"] is True, report
        fence = fence_rows(m)
        assert fence["target"][:2] == (True, True) and "the target is still fenced" in fence["target"][2], fence
        # The source is fenced as a cutover leaves it, nothing owed there.
        assert fence["source"][:2] == (True, False), fence
        assert fenced_metric(metrics_port, "target") == (1, 1)
    wait_for(lambda: not database_fenced(m, m.target_dsn()), timeout=120, what="the target unfenced by the retry")
    wait_for(lambda: fence_rows(m)["target"] == (False, False, ""), timeout=120, what="SHOW FENCE saying done")
    assert m.proxy.report()["still_fenced"] is False
    with m.proxy.connect(m.dbname) as conn:
        conn.execute("INSERT INTO t VALUES (3)")
        assert conn.execute("SELECT inet_server_port()").fetchone()[0] == m.pair.target.port
    assert database_fenced(m)
    assert fenced_metric(metrics_port, "target") == (0, 0)


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


@pytest.mark.parametrize("clusters", [(15, 15)], indirect=True, ids=["15to15"])
def test_cleanup_against_a_stopped_cluster_is_bounded(migration, clusters):
    """The retried undo meets a cluster that stopped answering: each attempt ends, and so does the proxy's stop."""
    from test_adversarial_hung import stopped_cluster

    m = migration(prepare=prepare_t, cutover={"catchup_timeout": "10min", "answer_timeout": "3s"})
    # libpq's own bound far away: only the cutover's answer_timeout can end a wait on the target.
    m.proxy.target_extra = {"conninfo": "connect_timeout=600"}
    m.proxy.reload()
    m.proxy.wait_log(r"configuration reloaded")
    with aborted_with_the_cluster_left_down(m):
        # The source is down (the unfence fails at once); the target, where the
        # way back's slot and publication are dropped, stops answering.
        with stopped_cluster(m.pair.target):
            # Attempts against the stopped target end at answer_timeout: two more of
            # them fail in turn (the second one started with the target stopped).
            before = m.proxy.log().count("cleanup failed")
            wait_for(lambda: m.proxy.log().count("cleanup failed") >= before + 2, timeout=150,
                     what="two attempts of the cleanup to end against the stopped target")
            # Stopping waits for the attempt running, which is bounded too.
            m.proxy.stop()
    # Started again with both clusters back, the proxy finishes the undo.
    m.proxy.start()
    wait_for(lambda: not database_fenced(m), timeout=120, what="the source unfenced")
    wait_for(lambda: fence_rows(m)["source"] == (False, False, ""), timeout=120, what="SHOW FENCE saying done")
    assert_no_way_back_left(m)
