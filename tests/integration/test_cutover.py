"""The cutover through the real proxy, replicator and clusters (13 -> 17, 15 -> 15)."""

import json
import re
import signal
import os
import subprocess
import threading

import psycopg
import pytest

from cutoverfixtures import migration, psql_value, wait_for  # noqa: F401
from pgcluster import free_port
from proxyfixtures import PGBENCH
from test_metrics import parse as parse_metrics, scrape as scrape_metrics
from replfixtures import clusters, cluster_pool, replicator_factory  # noqa: F401


def pgbench_init(dsn):
    out = subprocess.run([PGBENCH, "-i", "-q", "-s", "1", dsn], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    # pgbench_history has no key: published, it needs a replica identity.
    psql_value(dsn, "ALTER TABLE pgbench_history REPLICA IDENTITY FULL")


def test_cutover_under_pgbench(migration):
    """TPC-B with 16 clients through the proxy, cut over half-way: nothing fails, nothing is lost."""
    metrics_port = free_port()
    m = migration(prepare=pgbench_init, proxy={"metrics_listen": f"127.0.0.1:{metrics_port}"})
    env_args = ["-h", "127.0.0.1", "-p", str(m.proxy.port), "-U", "postgres"]
    bench = subprocess.Popen([PGBENCH, "-n", "-c", "16", "-j", "2", "-T", "8", *env_args, m.dbname],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    # Cut over once pgbench has written through the proxy for a while.
    wait_for(lambda: int(psql_value(m.source_dsn(), "SELECT count(*) FROM pgbench_history")) > 200,
             timeout=60, what="pgbench writing")
    result = m.proxy.run_cutover()
    out, err = bench.communicate(timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr + m.proxy.log_tail()
    assert bench.returncode == 0, out + err
    processed = int(out.split("number of transactions actually processed: ")[1].split()[0])
    failed = out.split("number of failed transactions: ")
    assert len(failed) == 1 or int(failed[1].split()[0]) == 0, out
    history = int(psql_value(m.target_dsn(), "SELECT count(*) FROM pgbench_history"))
    assert history == processed, f"pgbench committed {processed}, the target has {history}"
    report = m.proxy.report()
    assert report["result"] == "completed"
    assert report["clients_moved"] == 16
    # pgbench only runs DML and transaction control on tables without triggers: nothing to read.
    assert report["sessions_known_unread"] == 16
    # The source is fenced: a write that goes around the proxy fails.
    fenced = subprocess.run(["psql", "-XAtq", "-d", m.source_dsn(), "-c",
                             "INSERT INTO pgbench_history (tid, bid, aid, delta) VALUES (1, 1, 1, 1)"],
                            capture_output=True, text=True)
    assert fenced.returncode != 0 and "read-only transaction" in fenced.stderr
    # New clients go to the target.
    with m.proxy.connect(m.dbname) as conn:
        assert conn.execute("SELECT inet_server_port()").fetchone()[0] == m.pair.target.port
    # The metrics say so too.
    samples, _ = parse_metrics(scrape_metrics(metrics_port))
    assert samples[("pghandoff_serving_target", ())] == 1
    assert samples[("pghandoff_cutovers_total", (("result", "completed"),))] == 1
    assert abs(samples[("pghandoff_cutover_last_pause_seconds", ())] - report["pause_ms"] / 1000) < 0.001


def insert_and_wait_for_stats(m, table, rows):
    """Rows inserted on the source, and the source's statistics the warm-up is chosen by showing them.

    Inserted by a session of its own, not through the proxy: a backend 13 reports its statistics when it
    goes idle at most every 500 ms, or when it exits, and the proxy's pool keeps its backends.
    """
    psql_value(m.source_dsn(), f'INSERT INTO "{table}" SELECT generate_series(1, {rows})')
    # They reach the source's views a moment after the writes.
    wait_for(lambda: psql_value(m.source_dsn(), "SELECT n_tup_ins FROM pg_stat_user_tables "
                                                f"WHERE relname = '{table}'") == str(rows),
             timeout=30, what="the source's table statistics")


def test_target_connections_warm_up_before_the_pause(migration):
    """Each client's new connection opens the source's most used tables, busiest first, before the pause."""
    m = migration(prepare=lambda dsn: psql_value(dsn, 'CREATE TABLE quiet (id int PRIMARY KEY); '
                                                      'CREATE TABLE busy (id int PRIMARY KEY); '
                                                      'CREATE TABLE "Mixed Case" (id int PRIMARY KEY)'))
    insert_and_wait_for_stats(m, "busy", 500)
    insert_and_wait_for_stats(m, "Mixed Case", 50)
    with m.proxy.connect(m.dbname, dsn_extra={"application_name": "warm_check"}) as idle:
        assert idle.execute("SELECT 1").fetchone()[0] == 1
        result = m.proxy.run_cutover()
        assert result.returncode == 0, result.stdout + result.stderr + m.proxy.log_tail()
        # The client has sent nothing since: its target backend's last query is the warm-up.
        warm = psql_value(m.target_dsn(), "SELECT query FROM pg_stat_activity WHERE application_name = 'warm_check'")
        assert warm.startswith("SET LOCAL lock_timeout = '100ms'; "), warm
        statements = warm.split("; ")[1:]
        assert statements[:2] == ['SELECT FROM public.busy LIMIT 0', 'SELECT FROM public."Mixed Case" LIMIT 0'], warm
        assert 'SELECT FROM public.quiet LIMIT 0' in statements, warm
        # The warm-up left nothing behind in the session.
        assert idle.execute("SHOW lock_timeout").fetchone()[0] == "0"
        assert idle.execute("SELECT inet_server_port()").fetchone()[0] == m.pair.target.port
        assert idle.execute("SELECT count(*) FROM busy").fetchone()[0] == 500


def test_target_connections_warm_up_while_the_way_back_is_prepared(migration):
    """The warm-up does not wait for the rollback slot, whose creation waits for the target's transactions."""
    m = migration(prepare=lambda dsn: psql_value(dsn, "CREATE TABLE busy (id int PRIMARY KEY)"))
    insert_and_wait_for_stats(m, "busy", 100)
    # A transaction with an id, open on the target: the rollback slot's snapshot waits for it to end.
    blocker = psycopg.connect(m.target_dsn())
    blocker.execute("SELECT txid_current()")
    results = []
    cutover = threading.Thread(target=lambda: results.append(m.proxy.run_cutover()))
    try:
        with m.proxy.connect(m.dbname, dsn_extra={"application_name": "warm_early"}) as idle:
            assert idle.execute("SELECT 1").fetchone()[0] == 1
            cutover.start()
            wait_for(lambda: psql_value(m.target_dsn(), "SELECT query FROM pg_stat_activity "
                                                        "WHERE application_name = 'warm_early'")
                     .startswith("SET LOCAL lock_timeout"),
                     timeout=60, what="the standby's warm-up")
            # Still waiting for the slot: the cutover has not paused anybody yet.
            assert cutover.is_alive() and not results
            assert "rollback_ready done" not in m.proxy.log_tail(200)
            blocker.commit()
            cutover.join(timeout=120)
            assert results and results[0].returncode == 0, \
                (results[0].stdout + results[0].stderr if results else "") + m.proxy.log_tail()
            assert idle.execute("SELECT inet_server_port()").fetchone()[0] == m.pair.target.port
    finally:
        blocker.close()
        if cutover.ident is not None:
            cutover.join(timeout=120)


def test_session_state_moves(migration):
    """Settings, SQL and protocol prepared statements, LISTEN and cancel survive the switch."""
    m = migration(prepare=lambda dsn: psql_value(dsn, "CREATE TABLE t (id int PRIMARY KEY, v text); "
                                                      "INSERT INTO t VALUES (1, 'one'); CREATE SCHEMA s2; "
                                                      "CREATE TABLE s2.u (x int PRIMARY KEY); INSERT INTO s2.u VALUES (42)"))
    conn = m.proxy.connect(m.dbname, autocommit=True)
    conn.execute("SET work_mem = '7MB'")
    conn.execute("SET search_path = s2, public")
    conn.execute("SET TimeZone = 'Asia/Tokyo'")
    conn.execute("SET application_name = 'moving app'")
    conn.execute("PREPARE byid (int) AS SELECT v FROM t WHERE id = $1")
    conn.execute("LISTEN moved_channel")
    notes = []
    conn.add_notify_handler(notes.append)
    # Protocol-level named statements (psycopg prepares after the first use with prepare=True).
    for _ in range(3):
        assert conn.execute("SELECT v FROM t WHERE id = %s", (1,), prepare=True).fetchone()[0] == "one"
    before_port = conn.execute("SELECT inet_server_port()").fetchone()[0]
    assert before_port == m.pair.source.port

    result = m.proxy.run_cutover()
    assert result.returncode == 0, result.stdout + result.stderr + m.proxy.log_tail()

    assert conn.execute("SELECT inet_server_port()").fetchone()[0] == m.pair.target.port
    assert conn.execute("SHOW work_mem").fetchone()[0] == "7MB"
    assert conn.execute("SHOW search_path").fetchone()[0] == "s2, public"
    assert conn.execute("SHOW TimeZone").fetchone()[0] == "Asia/Tokyo"
    assert conn.execute("SHOW application_name").fetchone()[0] == "moving app"
    assert conn.execute("SELECT x FROM u").fetchone()[0] == 42
    assert conn.execute("EXECUTE byid(1)").fetchone()[0] == "one"
    assert conn.execute("SELECT v FROM t WHERE id = %s", (1,), prepare=True).fetchone()[0] == "one"
    # NOTIFY on the target reaches the session that listened on the source.
    psql_value(m.target_dsn(), "NOTIFY moved_channel, 'after'")
    wait_for(lambda: conn.execute("SELECT 1") and notes, timeout=10, what="the notification")
    assert [n.payload for n in notes] == ["after"]
    # Cancel now reaches the target backend.
    target_pid = conn.execute("SELECT pg_backend_pid()").fetchone()[0]
    def cancel_when_running():
        wait_for(lambda: psql_value(m.target_dsn(), f"SELECT count(*) FROM pg_stat_activity WHERE pid = {target_pid} "
                                                   "AND state = 'active' AND query LIKE '%pg_sleep%' AND pid <> pg_backend_pid()") == "1",
                 timeout=30, what="the sleep running on the target")
        conn.cancel()
    canceller = threading.Thread(target=cancel_when_running)
    canceller.start()
    with pytest.raises(psycopg.errors.QueryCanceled):
        conn.execute("SELECT pg_sleep(30)")
    canceller.join()
    assert conn.execute("SELECT pg_backend_pid()").fetchone()[0] == target_pid
    conn.close()


NODE_SCRIPT = r"""
const { Client } = require('pg');
const readline = require('readline');
(async () => {
  const c = new Client({ host: '127.0.0.1', port: +process.env.PROXY_PORT, user: 'postgres',
                         database: process.env.DBNAME });
  await c.connect();
  const notes = [];
  c.on('notification', (n) => notes.push(n.payload));
  await c.query("SET work_mem = '9MB'");
  await c.query("SET application_name = 'node app'");
  await c.query('LISTEN node_channel');
  const byId = { name: 'by_id', text: 'SELECT v FROM t WHERE id = $1', values: [1] };
  const before = (await c.query(byId)).rows[0].v;
  const port1 = (await c.query('SELECT inet_server_port() AS p')).rows[0].p;
  console.log(JSON.stringify({ ready: true }));
  const rl = readline.createInterface({ input: process.stdin });
  for await (const line of rl) { if (line === 'go') break; }
  // The named statement is only Bound now: it must exist on the new server.
  const after = (await c.query(byId)).rows[0].v;
  const port2 = (await c.query('SELECT inet_server_port() AS p')).rows[0].p;
  const workMem = (await c.query('SHOW work_mem')).rows[0].work_mem;
  const app = (await c.query('SHOW application_name')).rows[0].application_name;
  await c.query("SELECT pg_notify('node_channel', 'after')");
  while (notes.length === 0) await c.query('SELECT 1');
  console.log(JSON.stringify({ before, after, port1, port2, workMem, app, notes }));
  await c.end();
})().catch((e) => { console.error(e); process.exit(1); });
"""


def test_node_postgres_session_moves(migration, prerequisites, tmp_path):
    """node-postgres: named statements, settings and LISTEN keep working after the switch."""
    from proxyfixtures import node_pg_dir

    cache = node_pg_dir(prerequisites)
    m = migration(prepare=lambda dsn: psql_value(dsn, "CREATE TABLE t (id int PRIMARY KEY, v text); "
                                                      "INSERT INTO t VALUES (1, 'one')"))
    script = tmp_path / "session.js"
    script.write_text(NODE_SCRIPT)
    env = dict(os.environ, PROXY_PORT=str(m.proxy.port), DBNAME=m.dbname, NODE_PATH=str(cache / "node_modules"))
    node = subprocess.Popen(["node", str(script)], env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    assert json.loads(node.stdout.readline()) == {"ready": True}, node.stderr.read()
    result = m.proxy.run_cutover()
    assert result.returncode == 0, result.stdout + result.stderr
    out, err = node.communicate("go\n", timeout=60)
    assert node.returncode == 0, err
    r = json.loads(out.strip().splitlines()[-1])
    assert r["before"] == r["after"] == "one"
    assert (r["port1"], r["port2"]) == (m.pair.source.port, m.pair.target.port)
    assert (r["workMem"], r["app"], r["notes"]) == ("9MB", "node app", ["after"])


def test_long_transaction_aborts_the_cutover(migration):
    """on_drain_timeout = abort: an open transaction past drain_timeout leaves everyone on the source."""
    m = migration(prepare=lambda dsn: psql_value(dsn, "CREATE TABLE t (id int PRIMARY KEY)"),
                  cutover={"drain_timeout": "300ms", "on_drain_timeout": "abort"})
    busy = m.proxy.connect(m.dbname, autocommit=False)
    busy.execute("INSERT INTO t VALUES (1)")  # a transaction left open
    idle = m.proxy.connect(m.dbname)
    result = m.proxy.run_cutover()
    assert result.returncode == 1
    assert "transactions still open after drain_timeout" in result.stderr
    report = m.proxy.report()
    assert report["result"] == "aborted"
    # Nobody noticed: the open transaction commits on the source, the idle client goes on there.
    busy.execute("INSERT INTO t VALUES (2)")
    busy.commit()
    assert idle.execute("SELECT count(*), inet_server_port() FROM t").fetchone() == (2, m.pair.source.port)
    # Not fenced: the source still takes writes around the proxy.
    psql_value(m.source_dsn(), "INSERT INTO t VALUES (3)")
    busy.close()
    idle.close()


def test_long_transaction_is_cancelled(migration):
    """on_drain_timeout = cancel: the open transaction gets a retryable error, then works on the target."""
    m = migration(prepare=lambda dsn: psql_value(dsn, "CREATE TABLE t (id int PRIMARY KEY)"),
                  cutover={"drain_timeout": "300ms", "on_drain_timeout": "cancel"})
    idle_in_txn = m.proxy.connect(m.dbname, autocommit=False)
    idle_in_txn.execute("INSERT INTO t VALUES (1)")
    running = m.proxy.connect(m.dbname, autocommit=False)
    errors = []

    def long_statement():
        try:
            running.execute("SELECT pg_sleep(60)")
        except psycopg.Error as e:
            errors.append(e)
    t = threading.Thread(target=long_statement)
    t.start()
    wait_for(lambda: psql_value(m.source_dsn(), "SELECT count(*) FROM pg_stat_activity WHERE state = 'active' "
                                                "AND query LIKE '%pg_sleep(60)%' AND pid <> pg_backend_pid()") == "1",
             what="the long statement")
    result = m.proxy.run_cutover()
    t.join(timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr + m.proxy.log_tail()
    assert len(errors) == 1 and errors[0].sqlstate == "57014" and "cutover" in str(errors[0])
    running.rollback()
    assert running.execute("SELECT inet_server_port()").fetchone()[0] == m.pair.target.port
    with pytest.raises(psycopg.Error) as killed:
        idle_in_txn.execute("INSERT INTO t VALUES (2)")
    assert killed.value.sqlstate == "40001" and "cutover" in str(killed.value)
    idle_in_txn.rollback()
    idle_in_txn.execute("INSERT INTO t VALUES (2)")
    idle_in_txn.commit()
    # The rolled-back row never reached either side; the retried one is on the target.
    assert psql_value(m.target_dsn(), "SELECT string_agg(id::text, ',') FROM t") == "2"
    running.close()
    idle_in_txn.close()


UNMOVABLE = {
    "temporary tables": ("CREATE TEMP TABLE scratch (x int)", "SELECT count(*) FROM scratch"),
    "advisory locks": ("SELECT pg_advisory_lock(42)", "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' "
                                                      "AND pid = pg_backend_pid()"),
    "WITH HOLD cursors": ("DECLARE held CURSOR WITH HOLD FOR SELECT 1", "SELECT count(*) FROM pg_cursors"),
}


@pytest.mark.parametrize("what,policy", [("temporary tables", "terminate"), ("temporary tables", "abort"),
                                         ("advisory locks", "terminate"), ("WITH HOLD cursors", "abort")])
def test_unmovable_session(migration, what, policy):
    """A session holding state that cannot move: terminated with a clear FATAL, or the cutover aborts."""
    make, still_there = UNMOVABLE[what]
    m = migration(prepare=lambda dsn: psql_value(dsn, "CREATE TABLE t (id int PRIMARY KEY)"),
                  cutover={"unmovable": policy})
    holder = m.proxy.connect(m.dbname)
    holder.execute(make)
    other = m.proxy.connect(m.dbname)
    result = m.proxy.run_cutover()
    if policy == "abort":
        assert result.returncode == 1 and what in result.stderr, result.stderr
        # Untouched: the state is still there, everyone is on the source, which takes writes.
        assert holder.execute(still_there).fetchone()[0] == 1 or what == "temporary tables"
        assert other.execute("SELECT inet_server_port()").fetchone()[0] == m.pair.source.port
        psql_value(m.source_dsn(), "INSERT INTO t VALUES (1)")
        assert psql_value(m.target_dsn(), "SELECT count(*) FROM pg_replication_slots "
                                          "WHERE slot_name LIKE '%rollback'") == "0"
    else:
        assert result.returncode == 0, result.stderr
        assert m.proxy.report()["clients_terminated"] == 1
        with pytest.raises(psycopg.OperationalError) as gone:
            holder.execute("SELECT 1")
        assert what in str(gone.value) and "reconnect" in str(gone.value)
        assert other.execute("SELECT inet_server_port()").fetchone()[0] == m.pair.target.port
    holder.close()
    other.close()


def test_target_down_aborts(migration):
    """The target unreachable at cutover: refused in the precheck, clients never held."""
    m = migration(prepare=lambda dsn: psql_value(dsn, "CREATE TABLE t (id int PRIMARY KEY)"))
    conn = m.proxy.connect(m.dbname)
    m.replicator.stop()
    m.pair.target.stop()
    try:
        result = m.proxy.run_cutover()
        assert result.returncode == 1
        assert m.proxy.report()["result"] == "aborted"
        assert "pausing" not in result.stderr
        conn.execute("INSERT INTO t VALUES (1)")
        assert conn.execute("SELECT inet_server_port()").fetchone()[0] == m.pair.source.port
    finally:
        m.pair.target.start()
        m.replicator.start()
        m.replicator.wait_streaming()
    conn.close()


def test_restart_after_cutover_stays_on_target(migration):
    m = migration(prepare=lambda dsn: psql_value(dsn, "CREATE TABLE t (id int PRIMARY KEY)"),
                  cutover={"rollback": "off"})
    assert m.proxy.run_cutover().returncode == 0
    m.proxy.stop()
    m.proxy.start()
    with m.proxy.connect(m.dbname) as conn:
        assert conn.execute("SELECT inet_server_port()").fetchone()[0] == m.pair.target.port
    # And a second CUTOVER is refused: there is nothing left to move.
    second = m.proxy.run_cutover()
    assert second.returncode == 1 and "already served by the target" in second.stderr


def test_dry_run_changes_nothing(migration):
    m = migration(prepare=lambda dsn: psql_value(dsn, "CREATE TABLE t (id int PRIMARY KEY)"))
    conn = m.proxy.connect(m.dbname)
    conn.execute("CREATE TEMP TABLE scratch (x int)")
    slots_before = psql_value(m.target_dsn(), "SELECT count(*) FROM pg_replication_slots")
    result = m.proxy.run_cutover("--dry-run")
    assert result.returncode == 0, result.stdout + result.stderr
    report = m.proxy.report()
    assert report["kind"] == "cutover dry run" and report["result"] == "ready"
    assert report["clients"] == 1 and report["clients_unmovable"] == 1
    assert "temporary tables" in report["client_list"]
    # Still on the source, still writable there, no slot made on the target.
    assert conn.execute("SELECT inet_server_port()").fetchone()[0] == m.pair.source.port
    psql_value(m.source_dsn(), "INSERT INTO t VALUES (1)")
    assert psql_value(m.target_dsn(), "SELECT count(*) FROM pg_replication_slots") == slots_before
    # `pghandoff check` asks the running proxy the same question.
    check = m.proxy.pghandoff.run(["check", "-c", m.proxy.config_path], timeout=120)
    assert re.search(rf"^PASS  source: slot {m.replicator.slot} holds \d+ MB of WAL$", check.stdout, re.M), check.stdout
    assert re.search(r"^WARN  proxy: 1 client\(s\) connected, 1 cannot move: C-\d+ .*temporary tables",
                     check.stdout, re.M), check.stdout
    conn.close()


def test_rollback_round_trip(migration):
    """Writes before, between and after a cutover and its rollback all end up on both sides."""
    m = migration(prepare=lambda dsn: psql_value(dsn, "CREATE TABLE t (id serial PRIMARY KEY, side text)"))
    conn = m.proxy.connect(m.dbname)
    conn.execute("INSERT INTO t (side) VALUES ('source before')")
    assert m.proxy.run_cutover().returncode == 0
    # The way back streams once the reverse follower the proxy started is in.
    wait_for(lambda: psql_value(m.target_dsn(), "SELECT count(*) FROM pg_replication_slots "
                                                "WHERE slot_name LIKE '%rollback' AND active") == "1",
             timeout=60, what="the reverse follower streaming")
    conn.execute("INSERT INTO t (side) VALUES ('target')")
    conn.execute("UPDATE t SET side = side || ' (updated on target)' WHERE id = 1")
    result = m.proxy.run_rollback()
    assert result.returncode == 0, result.stdout + result.stderr + m.proxy.log_tail()
    assert conn.execute("SELECT inet_server_port()").fetchone()[0] == m.pair.source.port
    conn.execute("INSERT INTO t (side) VALUES ('source after')")
    rows = conn.execute("SELECT id, side FROM t ORDER BY id").fetchall()
    assert rows == [(1, "source before (updated on target)"), (2, "target"), (3, "source after")]
    # The forward follower goes on: the last write reaches the target too.
    wait_for(lambda: psql_value(m.target_dsn(), "SELECT count(*) FROM t") == "3", timeout=60,
             what="the write after the rollback on the target")
    # The way back is gone: the reverse follower stops and its slot is dropped.
    wait_for(lambda: psql_value(m.target_dsn(), "SELECT count(*) FROM pg_replication_slots "
                                                "WHERE slot_name LIKE '%rollback'") == "0",
             timeout=60, what="the reverse slot dropped")


def test_run_keeps_the_follower_going(migration):
    """`pghandoff run`: the follower is a child; killed, it is started again and resumes; cutover works."""
    m = migration(prepare=lambda dsn: psql_value(dsn, "CREATE TABLE t (id int PRIMARY KEY)"), run=True)
    conn = m.proxy.connect(m.dbname)
    conn.execute("INSERT INTO t SELECT generate_series(1, 100)")
    wait_for(lambda: psql_value(m.target_dsn(), "SELECT count(*) FROM t") == "100", timeout=60,
             what="rows replicated by the child follower")
    started = re.findall(r"follower started \(pid (\d+)\)", m.proxy.log())
    assert len(started) == 1
    # A session of its own: the proxy's CPU share and the terminal's signals stay the proxy's.
    assert os.getsid(int(started[0])) == int(started[0]) != os.getsid(m.proxy.proc.pid)
    os.kill(int(started[0]), signal.SIGKILL)
    m.proxy.wait_log(r"the follower exited with status -1; starting it again")
    conn.execute("INSERT INTO t SELECT generate_series(101, 200)")
    wait_for(lambda: len(re.findall(r"follower started \(pid (\d+)\)", m.proxy.log())) == 2, timeout=60,
             what="the follower started again")
    wait_for(lambda: psql_value(m.target_dsn(), "SELECT count(*) FROM t") == "200", timeout=120,
             what="rows written while the follower was down")
    result = m.proxy.run_cutover()
    assert result.returncode == 0, result.stdout + result.stderr
    assert conn.execute("SELECT inet_server_port()").fetchone()[0] == m.pair.target.port
    conn.close()
    # SIGHUP reloads; SIGTERM stops the proxy and its followers: nobody streams from the slot afterwards.
    m.proxy.signal(signal.SIGHUP)
    m.proxy.wait_log(r"configuration reloaded")
    m.proxy.signal(signal.SIGTERM)
    assert m.proxy.wait_exit(timeout=60) == 0, m.proxy.log_tail()
    assert m.slot_pid() is None
    assert not re.search(r"follower .*exited with status", m.proxy.log().split("cutover completed")[-1])


def status_json(m):
    out = m.proxy.pghandoff.run(["status", "-c", m.proxy.config_path, "--json"], timeout=60)
    assert out.returncode == 0, out.stdout + out.stderr
    return json.loads(out.stdout)


@pytest.mark.parametrize("clusters", [(15, 15)], indirect=True, ids=["15to15"])
def test_status_through_copy_and_streaming(migration, clusters):
    """`pghandoff status --json` during the copy (a source COPY held with SIGSTOP) and while streaming."""
    def prepare(dsn):
        psql_value(dsn, "CREATE TABLE big (id int PRIMARY KEY, pad text); "
                        "INSERT INTO big SELECT g, repeat('x', 40) FROM generate_series(1, 2000000) g; "
                        "CREATE TABLE small (id int PRIMARY KEY)")

    frozen = []

    def freeze_copy():
        pid = psql_value(source_dsn_of(clusters), "SELECT pid FROM pg_stat_activity WHERE query LIKE 'COPY %big%TO STDOUT%' "
                                                   "AND pid <> pg_backend_pid()")
        if pid:
            os.kill(int(pid), signal.SIGSTOP)
            frozen.append(int(pid))
        return pid

    import threading as _t
    started = _t.Event()

    def watcher():
        started.wait()
        wait_for(freeze_copy, timeout=120, interval=0.01, what="the source COPY of big")
    w = _t.Thread(target=watcher)
    w.start()
    started.set()
    try:
        m = migration(prepare=prepare, run=True, wait_streaming=False)
        w.join()
        st = wait_for(lambda: (lambda s: s if s["databases"][0]["phase"] == "copy" else None)(status_json(m)),
                      timeout=60, what="status in the copy phase")
        db = st["databases"][0]
        assert db["database"] == m.dbname and db["tables_total"] == 3  # big, small, _sync
        assert db["tables_done"] < 3 and db["total_bytes"] > 0
        assert st["last_cutover"] is None
    finally:
        for pid in frozen:
            os.kill(pid, signal.SIGCONT)
    wait_for(lambda: status_json(m)["databases"][0]["phase"] == "streaming", timeout=300, what="streaming")
    conn = m.proxy.connect(m.dbname)
    conn.execute("INSERT INTO small SELECT generate_series(1, 10)")
    st = wait_for(lambda: (lambda s: s if s["databases"][0]["lag_bytes"] == 0 and
                           s["databases"][0]["applied_lsn"] else None)(status_json(m)),
                  timeout=60, what="caught up")
    db = st["databases"][0]
    assert db["tables_done"] == db["tables_total"] == 3
    assert db["lag_seconds"] == 0 and st["clients"] == 1 and st["servers"] == {"source": 1, "target": 0}
    text = m.proxy.pghandoff.run(["status", "-c", m.proxy.config_path], timeout=60)
    assert re.search(rf"^{m.dbname}\s+streaming\s+3/3 ", text.stdout, re.M), text.stdout
    # --watch off a terminal: one plain block per second, until Ctrl-C.
    watch = subprocess.Popen([str(m.proxy.pghandoff.bin), "status", "-c", str(m.proxy.config_path), "--watch"],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    blocks = 0
    for line in watch.stdout:
        blocks += line.startswith("clients: ")
        if blocks == 2:
            break
    watch.send_signal(signal.SIGINT)
    out, err = watch.communicate(timeout=30)
    assert blocks == 2 and watch.returncode == 0, err
    assert "\033[" not in out  # no screen control codes when not on a terminal
    assert m.proxy.run_cutover().returncode == 0
    st = status_json(m)
    assert st["databases"][0]["phase"] == "cut over" and st["last_cutover"]["result"] == "completed"
    assert st["servers"] == {"source": 0, "target": 1}
    conn.close()


def source_dsn_of(pair):
    return f"host=127.0.0.1 port={pair.source.port} dbname=postgres user={pair.source.superuser}"


def test_verify_online(migration):
    """`pghandoff verify` while pgbench writes: equal passes; a row changed behind the follower's back is found."""
    def prepare(dsn):
        pgbench_init(dsn)
        psql_value(dsn, "CREATE TABLE t (id int PRIMARY KEY, v text, at timestamptz DEFAULT now(), f float8); "
                        "INSERT INTO t SELECT g, 'row ' || g, now(), g / 3.0 FROM generate_series(1, 1000) g")

    m = migration(prepare=prepare, run=True)
    wait_for(lambda: psql_value(m.target_dsn(), "SELECT count(*) FROM t") == "1000", timeout=120, what="copy")
    bench = subprocess.Popen([PGBENCH, "-n", "-c", "4", "-T", "60", "-h", "127.0.0.1", "-p", str(m.proxy.port),
                              "-U", "postgres", m.dbname], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        wait_for(lambda: int(psql_value(m.target_dsn(), "SELECT count(*) FROM pgbench_history")) > 100,
                 timeout=60, what="pgbench's writes replicated")
        same = m.proxy.pghandoff.run(["verify", "-c", m.proxy.config_path], timeout=300)
        assert same.returncode == 0, same.stdout + same.stderr
        assert "OK    public.pgbench_history: " in same.stdout and "every table matches" in same.stdout
        # Behind the follower's back: one row changed, one deleted on the target.
        psql_value(m.target_dsn(), "UPDATE t SET v = 'tampered' WHERE id = 42; DELETE FROM t WHERE id = 7")
        differ = m.proxy.pghandoff.run(["verify", "-c", m.proxy.config_path], timeout=300)
        assert differ.returncode == 1, differ.stdout + differ.stderr
        line = [l for l in differ.stdout.splitlines() if l.startswith("DIFF")]
        assert len(line) == 1 and line[0].startswith("DIFF  public.t: 1000 row(s) on the source, 999 on the target")
        assert "(7) (only on the source)" in line[0] and "(42) (differs)" in line[0]
        assert "OK    public.pgbench_accounts" in differ.stdout
    finally:
        bench.terminate()
        bench.communicate(timeout=60)


@pytest.mark.parametrize("clusters", [(15, 15)], indirect=True, ids=["15to15"])
def test_rollback_refused_without_forward_follower(migration, clusters):
    """A rollback needs the forward follower to pass the reverse one's writes: refused while it is down."""
    m = migration(prepare=lambda dsn: psql_value(dsn, "CREATE TABLE t (id int PRIMARY KEY)"))
    conn = m.proxy.connect(m.dbname)
    assert m.proxy.run_cutover().returncode == 0
    wait_for(lambda: psql_value(m.target_dsn(), "SELECT count(*) FROM pg_replication_slots "
                                                "WHERE slot_name LIKE '%rollback' AND active") == "1",
             timeout=60, what="the reverse follower streaming")
    m.replicator.stop()
    wait_for(lambda: m.slot_pid() is None, timeout=60, what="the forward slot released")
    result = m.proxy.run_rollback()
    assert result.returncode == 1 and "the forward follower is not streaming" in result.stderr, result.stderr
    conn.execute("INSERT INTO t VALUES (1)")
    assert conn.execute("SELECT inet_server_port()").fetchone()[0] == m.pair.target.port
    conn.close()
