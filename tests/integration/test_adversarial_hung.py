"""A cluster that stops answering during a cutover: every phase's deadline holds.

A stopped server (SIGSTOP of the postmaster and all its children) is the
hardest case: its kernel still accepts connections and acknowledges what is
sent, so only pghandoff's own clock can end the wait.  Each test stops a
whole cluster and always lets it run again (SIGCONT) before it ends; the
subprocess timeouts below are hang detectors, far above the deadlines set.
"""

import contextlib
import os
import signal
import subprocess
import threading

import pytest

from cutoverfixtures import migration, psql_value, wait_for  # noqa: F401
from replfixtures import clusters, cluster_pool, replicator_factory  # noqa: F401

ONE_PAIR = pytest.mark.parametrize("clusters", [(15, 15)], indirect=True, ids=["15to15"])

# How far past its deadlines a command may run before the test calls it hung.
HANG_MARGIN = 30


def descendants(pid):
    """pid's children, grandchildren, ..., read from /proc."""
    found, to_visit = [], [pid]
    while to_visit:
        parent = to_visit.pop()
        try:
            tasks = os.listdir(f"/proc/{parent}/task")
        except FileNotFoundError:
            continue
        for task in tasks:
            try:
                with open(f"/proc/{parent}/task/{task}/children") as f:
                    children = [int(p) for p in f.read().split()]
            except FileNotFoundError:
                continue
            found.extend(children)
            to_visit.extend(children)
    return found


def signal_all(pids, signum):
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signum)


@contextlib.contextmanager
def stopped_processes(root_pid):
    """root_pid and everything under it stopped; all of them continued on the way out, whatever happens."""
    stopped = [root_pid]
    try:
        # The parent first: it starts no new child meanwhile.
        os.kill(root_pid, signal.SIGSTOP)
        children = descendants(root_pid)
        signal_all(children, signal.SIGSTOP)
        stopped.extend(children)
        yield stopped
    finally:
        signal_all(stopped + descendants(root_pid), signal.SIGCONT)


def postmaster_pid(cluster):
    return int((cluster.datadir / "postmaster.pid").read_text().split("\n")[0])


def stopped_cluster(cluster):
    """The whole cluster stopped: its postmaster and every backend, walsender and worker."""
    return stopped_processes(postmaster_pid(cluster))


def in_thread(fn, timeout):
    """fn() run with a deadline (it may block on a stopped server): its result, or raises."""
    box = {}

    def run():
        try:
            box["value"] = fn()
        except BaseException as e:  # noqa: BLE001 - handed to the test
            box["error"] = e

    t = threading.Thread(target=run, daemon=True)
    t.start()
    t.join(timeout)
    assert not t.is_alive(), f"still blocked after {timeout} s"
    if "error" in box:
        raise box["error"]
    return box["value"]


def source_read_only(m):
    """default_transaction_read_only of a new session on the source database, around the proxy."""
    return psql_value(m.source_dsn(), "SHOW default_transaction_read_only")


@ONE_PAIR
def test_target_stopped_during_catch_up_aborts_within_the_deadline(migration):
    """The target stops while the paused cutover waits for it: abort at catchup_timeout, clients go on."""
    catchup, answer = 2, 2
    m = migration(prepare=lambda dsn: psql_value(dsn, "CREATE TABLE t (id int PRIMARY KEY)"),
                  cutover={"catchup_timeout": f"{catchup}s", "answer_timeout": f"{answer}s"})
    client = m.proxy.connect(m.dbname)
    client.execute("INSERT INTO t VALUES (1)")
    # The follower stopped first, so the catch-up waits on the target, which then stops too.
    with stopped_processes(m.replicator.proc.pid):
        result = {}

        def cutover():
            try:
                result["r"] = m.proxy.run_cutover(timeout=catchup + answer + HANG_MARGIN)
            except subprocess.TimeoutExpired:
                result["r"] = None

        runner = threading.Thread(target=cutover, daemon=True)
        runner.start()
        m.proxy.wait_log(r"fence done in", timeout=60)
        with stopped_cluster(m.pair.target):
            runner.join(catchup + answer + HANG_MARGIN + 5)
            assert not runner.is_alive(), "pghandoff cutover did not return"
            r = result["r"]
            assert r is not None, "pghandoff cutover did not return:\n" + m.proxy.log_tail()
            assert r.returncode != 0, r.stdout + r.stderr
            assert "catch_up: the target did not answer" in r.stderr, r.stderr + m.proxy.log_tail()
            # With the target still stopped: the client goes on on the source, and writes.
            assert in_thread(lambda: client.execute("INSERT INTO t VALUES (2) RETURNING inet_server_port()")
                             .fetchone()[0], 30) == m.pair.source.port
            # A new client too.
            assert in_thread(lambda: m.proxy.connect(m.dbname).execute("SELECT count(*) FROM t").fetchone()[0],
                             30) == 2
            # The source is not fenced: a new session there takes writes.
            assert source_read_only(m) == "off"
            psql_value(m.source_dsn(), "INSERT INTO t VALUES (3)")
            report = in_thread(m.proxy.report, 30)
            assert report["result"] == "aborted"
            assert report["reason"].startswith("catch_up: the target did not answer within"), report["reason"]
            assert "(catchup_timeout)" in report["reason"], report["reason"]
            # Dealt with last, and bounded too: the reverse slot on the stopped target is reported left.
            assert report["undo_error"].startswith("undo: the target did not answer within"), report
            assert "reverse follower's slot on the target" in report["undo_error"], report
    client.close()


@ONE_PAIR
def test_target_stopped_before_the_cutover_is_named(migration):
    """`pghandoff cutover` against a stopped target returns with an error naming it, not never."""
    answer = 2
    m = migration(prepare=lambda dsn: psql_value(dsn, "CREATE TABLE t (id int PRIMARY KEY)"),
                  cutover={"answer_timeout": f"{answer}s"})
    client = m.proxy.connect(m.dbname)
    with stopped_cluster(m.pair.target):
        r = m.proxy.run_cutover(timeout=answer + HANG_MARGIN)
        assert r.returncode != 0, r.stdout + r.stderr
        assert "precheck: the target did not answer within" in r.stderr, r.stderr + m.proxy.log_tail()
        assert "(answer_timeout)" in r.stderr, r.stderr
        # Clients never left the source.
        assert in_thread(lambda: client.execute("INSERT INTO t VALUES (1) RETURNING inet_server_port()")
                         .fetchone()[0], 30) == m.pair.source.port
        assert source_read_only(m) == "off"
    client.close()


@ONE_PAIR
def test_source_not_answering_the_fence_aborts_and_leaves_it_unfenced(migration):
    """The fence waits on a lock on the source past answer_timeout: abort, and the fence never lands."""
    answer = 2
    m = migration(prepare=lambda dsn: psql_value(dsn, "CREATE TABLE t (id int PRIMARY KEY)"),
                  cutover={"answer_timeout": f"{answer}s"})
    client = m.proxy.connect(m.dbname)
    # ALTER DATABASE ... SET writes pg_db_role_setting: a session that locks it against writes (not reads: logins read it) stalls the fence.
    blocker = m.pair.source.connect(m.dbname, autocommit=False)
    blocker.execute("LOCK TABLE pg_db_role_setting IN SHARE MODE")
    try:
        r = m.proxy.run_cutover(timeout=3 * answer + HANG_MARGIN)
        assert r.returncode != 0, r.stdout + r.stderr
        assert "fence: the source did not answer within" in r.stderr, r.stderr + m.proxy.log_tail()
        assert in_thread(lambda: client.execute("INSERT INTO t VALUES (1) RETURNING inet_server_port()")
                         .fetchone()[0], 30) == m.pair.source.port
    finally:
        blocker.rollback()
        blocker.close()
    # The fence given up on was cancelled, not left to run once the lock went.
    wait_for(lambda: psql_value(m.source_dsn(), "SELECT count(*) FROM pg_stat_activity "
                                                "WHERE query LIKE 'ALTER DATABASE%' AND state = 'active'") == "0",
             timeout=30, what="the fence's statement gone")
    assert source_read_only(m) == "off"
    client.execute("INSERT INTO t VALUES (2)")
    client.close()


@ONE_PAIR
def test_source_stopped_before_a_rollback_is_named(migration):
    """After a cutover, `pghandoff rollback` against a stopped source returns naming it; clients stay on the target."""
    answer = 2
    m = migration(prepare=lambda dsn: psql_value(dsn, "CREATE TABLE t (id int PRIMARY KEY)"),
                  cutover={"answer_timeout": f"{answer}s"})
    client = m.proxy.connect(m.dbname)
    r = m.proxy.run_cutover()
    assert r.returncode == 0, r.stdout + r.stderr + m.proxy.log_tail()
    with stopped_cluster(m.pair.source):
        r = m.proxy.run_rollback(timeout=answer + HANG_MARGIN)
        assert r.returncode != 0, r.stdout + r.stderr
        assert "precheck: the source did not answer within" in r.stderr, r.stderr + m.proxy.log_tail()
        assert in_thread(lambda: client.execute("INSERT INTO t VALUES (1) RETURNING inet_server_port()")
                         .fetchone()[0], 30) == m.pair.target.port
    client.close()


@ONE_PAIR
def test_source_stopped_during_the_fence_aborts_within_the_deadline(migration):
    """The source stops while the fence runs: the abort returns naming it, and the fence never lands."""
    answer = 2
    m = migration(prepare=lambda dsn: psql_value(dsn, "CREATE TABLE t (id int PRIMARY KEY)"),
                  cutover={"answer_timeout": f"{answer}s"})
    client = m.proxy.connect(m.dbname)
    # The fence waits on this lock, so the source is surely stopped while it runs.
    blocker = m.pair.source.connect(m.dbname, autocommit=False)
    blocker.execute("LOCK TABLE pg_db_role_setting IN SHARE MODE")
    try:
        result = {}

        def cutover():
            try:
                result["r"] = m.proxy.run_cutover(timeout=3 * answer + HANG_MARGIN)
            except subprocess.TimeoutExpired:
                result["r"] = None

        runner = threading.Thread(target=cutover, daemon=True)
        runner.start()
        wait_for(lambda: psql_value(m.source_dsn(), "SELECT count(*) FROM pg_stat_activity "
                                                    "WHERE query LIKE 'ALTER DATABASE%' AND wait_event_type = 'Lock'")
                 == "1", timeout=60, what="the fence waiting on the lock")
        with stopped_cluster(m.pair.source):
            runner.join(3 * answer + HANG_MARGIN + 5)
            r = result["r"]
            assert r is not None, "pghandoff cutover did not return:\n" + m.proxy.log_tail()
            assert r.returncode != 0, r.stdout + r.stderr
            assert "fence: the source did not answer within" in r.stderr, r.stderr + m.proxy.log_tail()
            report = in_thread(m.proxy.report, 30)
            assert report["result"] == "aborted"
            assert report["reason"].startswith("fence: the source did not answer"), report["reason"]
        # Running again, the source gets the cancel of the fence given up on, before the lock goes.
        wait_for(lambda: psql_value(m.source_dsn(), "SELECT count(*) FROM pg_stat_activity "
                                                    "WHERE query LIKE 'ALTER DATABASE%' AND state = 'active'") == "0",
                 timeout=30, what="the fence's statement cancelled")
    finally:
        blocker.rollback()
        blocker.close()
    assert source_read_only(m) == "off"
    assert in_thread(lambda: client.execute("INSERT INTO t VALUES (1) RETURNING inet_server_port()").fetchone()[0],
                     30) == m.pair.source.port
    client.close()
