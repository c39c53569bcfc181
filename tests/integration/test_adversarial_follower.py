"""The follower with several databases, attacked: its supervisor and workers
killed or stopped, and databases whose names differ only in case.

- kill -9 of `pghandoff replicate` takes its database workers with it, and
  a new `replicate` streams again at once; one whose predecessor still holds
  the origin and slot waits for them; kill -9 of `pghandoff run` takes its
  follower and the follower's workers;
- a database worker killed with -9 is started again by its supervisor;
- a worker stopped (SIGSTOP) while the source takes writes shows as behind
  in `pghandoff status --json` and the metrics, and catches up after
  SIGCONT; one killed while nothing restarts it shows as down;
- databases "Cs…" and "cs…" get slots and origins of their own and are both
  replicated, each into its own target database; `check` fails on names
  that would still collide.
"""

import json
import os
import re
import signal
import urllib.request

import pytest

from pgcluster import free_port
from proxyfixtures import ProxyProcess
from replfixtures import (  # noqa: F401  (fixtures are used by name)
    run_sql,
    cluster_pool,
    clusters,
    connect,
    db_name_part,
    make_database,
    quote_ident,
    replicator_factory,
    wait_caught_up,
    wait_for,
)

ONLY_15 = pytest.mark.parametrize("clusters", [(15, 15)], indirect=True, ids=["15to15"])

# Bounds on correctness, not performance: an idle machine ends each wait in a fraction.
PROCESS_TIMEOUT = 60
STREAM_TIMEOUT = 180


def children_of(pid):
    """The pids whose parent is pid and that are not zombies, from /proc."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                stat = f.read()
        except OSError:
            continue
        # "pid (comm) state ppid ...": comm may hold spaces and parentheses.
        fields = stat[stat.rindex(")") + 2:].split()
        if fields[0] != "Z" and int(fields[1]) == pid:
            found.append(int(entry))
    return found


def alive(pid):
    """True while pid exists and is not a zombie."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            stat = f.read()
    except OSError:
        return False
    return stat[stat.rindex(")") + 2:].split()[0] != "Z"


def worker_pids(r, count):
    """The supervisor's worker processes, once there are count of them."""
    return wait_for(lambda: (lambda pids: pids if len(pids) == count else None)(children_of(r.proc.pid)),
                    PROCESS_TIMEOUT, what=f"{count} database workers", on_timeout=r.log_tail)


def three_databases(pair, prefix):
    dbs = [make_database(pair, prefix) for _ in range(3)]
    for db in dbs:
        run_sql(pair.source, db, "CREATE TABLE t (id serial PRIMARY KEY, v text)",
                f"INSERT INTO t (v) SELECT '{db}' FROM generate_series(1, 50)")
    return dbs


def wait_all_streaming(r, count, since_start=True):
    def streaming():
        if r.proc.poll() is not None:
            pytest.fail(f"replicate exited with status {r.proc.returncode}:\n{r.log_tail()}", pytrace=False)
        return r.log(since_start).count("streaming from") >= count
    wait_for(streaming, STREAM_TIMEOUT, what=f"{count} databases streaming", on_timeout=r.log_tail)


def names_for(suffix):
    """Slot and publication names of a test's own (config names are lower-case)."""
    return {"slot_name": f"s_{suffix}", "publication_name": f"p_{suffix}"}


@ONLY_15
def test_supervisor_killed_takes_its_workers(clusters, replicator_factory):
    """kill -9 of the supervisor: every worker exits, and a new replicate streams each database."""
    pair = clusters
    dbs = three_databases(pair, "sup")
    r = replicator_factory(pair, dbs[0], more_databases={db: db for db in dbs[1:]})
    wait_all_streaming(r, 3)
    workers = worker_pids(r, 3)
    r.kill9()
    wait_for(lambda: not any(alive(pid) for pid in workers), PROCESS_TIMEOUT,
             what=f"the workers {workers} of the killed supervisor to exit",
             on_timeout=lambda: f"still running: {[p for p in workers if alive(p)]}\n{r.log_tail()}")
    r.start()
    wait_all_streaming(r, 3)
    for db in dbs:
        wait_caught_up(pair, db, r.slot_of(db), r)


@ONLY_15
def test_killed_worker_is_started_again(clusters, replicator_factory):
    """kill -9 of one database's worker: the supervisor starts it again, and rows written afterwards arrive."""
    pair = clusters
    dbs = three_databases(pair, "wrk")
    r = replicator_factory(pair, dbs[0], more_databases={db: db for db in dbs[1:]})
    wait_all_streaming(r, 3)
    victim = worker_pids(r, 3)[0]
    os.kill(victim, signal.SIGKILL)
    killed = r.wait_log(r"database (\S+): worker was killed by signal 9 .*starting it again").group(1)
    assert killed in dbs
    run_sql(pair.source, killed, "INSERT INTO t (v) VALUES ('after the kill')")
    wait_caught_up(pair, killed, r.slot_of(killed), r, fail_on_error=False)
    assert pair.target.execute("SELECT count(*) FROM t WHERE v = 'after the kill'", dbname=killed) == [(1,)]
    # The others streamed on undisturbed.
    for db in dbs:
        wait_caught_up(pair, db, r.slot_of(db), r, fail_on_error=False)
    assert victim not in children_of(r.proc.pid)
    assert len(children_of(r.proc.pid)) == 3


# ---- names -----------------------------------------------------------------

def make_named_database(pair, name):
    pair.source.execute(f"CREATE DATABASE {quote_ident(name)}")
    run_sql(pair.source, name, "CREATE TABLE _sync (id serial PRIMARY KEY, at timestamptz DEFAULT now())",
            "CREATE TABLE t (id serial PRIMARY KEY, v text)")
    return name


@ONLY_15
def test_databases_differing_in_case(clusters, replicator_factory):
    """Databases "Cs<n>" and "cs<n>": a slot and an origin each, both replicated into the right database."""
    pair = clusters
    upper = make_named_database(pair, f"Cs{os.getpid()}")
    lower = make_named_database(pair, upper.lower())
    run_sql(pair.source, upper, "INSERT INTO t (v) SELECT 'upper' FROM generate_series(1, 20)")
    run_sql(pair.source, lower, "INSERT INTO t (v) SELECT 'lower' FROM generate_series(1, 30)")
    r = replicator_factory(pair, upper, more_databases={lower: lower}, replication=names_for(f"case{os.getpid()}"))
    assert r.slot_of(upper) != r.slot_of(lower)
    wait_all_streaming(r, 2)
    slots = sorted(row[0] for row in pair.source.execute(
        "SELECT slot_name FROM pg_replication_slots WHERE slot_name LIKE %s", params=(r.slot + "%",)))
    assert slots == sorted([r.slot_of(upper), r.slot_of(lower)])
    origins = sorted(row[0] for row in pair.target.execute(
        "SELECT roname FROM pg_replication_origin WHERE roname LIKE %s", params=(r.slot + "%",)))
    assert origins == slots
    run_sql(pair.source, upper, "INSERT INTO t (v) VALUES ('upper, streamed')")
    run_sql(pair.source, lower, "INSERT INTO t (v) VALUES ('lower, streamed')")
    wait_caught_up(pair, upper, r.slot_of(upper), r)
    wait_caught_up(pair, lower, r.slot_of(lower), r)
    assert pair.target.execute("SELECT v, count(*) FROM t GROUP BY v ORDER BY v", dbname=upper) == \
        [("upper", 20), ("upper, streamed", 1)]
    assert pair.target.execute("SELECT v, count(*) FROM t GROUP BY v ORDER BY v", dbname=lower) == \
        [("lower", 30), ("lower, streamed", 1)]


@ONLY_15
def test_check_fails_on_colliding_names(clusters, replicator_factory, pghandoff):
    """check: PASS for names the naming keeps apart, FAIL naming both databases for names that still collide."""
    pair = clusters
    upper = f"Ab{os.getpid()}"
    # A plain name spelled exactly like upper's hashed part: the one collision the naming lets through.
    spelled = db_name_part(upper)
    assert spelled != upper.lower()
    r = replicator_factory(pair, upper, start=False, more_databases={upper.lower(): upper.lower()},
                           replication=names_for(f"chk{os.getpid()}"))
    result = pghandoff.run(["check", "-c", r.config_path])
    assert re.search(r"^PASS  the slot and origin names of the 2 databases are all different$", result.stdout,
                     re.M), result.stdout
    r2 = replicator_factory(pair, upper, start=False, more_databases={spelled: spelled},
                            replication=names_for(f"chk{os.getpid()}"))
    result = pghandoff.run(["check", "-c", r2.config_path])
    assert result.returncode != 0
    assert re.search(rf"^FAIL  databases {upper} and {spelled}: the slot of one and the slot of the other are both "
                     rf"named {r2.slot}_{spelled}$", result.stdout, re.M), result.stdout
    # replicate refuses too, before it makes anything.
    r2.start()
    assert r2.wait_exit() != 0
    assert "are both named" in r2.log(), r2.log_tail()
    assert pair.source.execute("SELECT count(*) FROM pg_replication_slots WHERE slot_name LIKE %s",
                               params=(r2.slot + "%",)) == [(0,)]


# ---- status while a worker is stopped --------------------------------------

class RunProcess(ProxyProcess):
    """`pghandoff run`: the proxy with its follower as a child, migrating databases from pair.source to pair.target."""

    command = "run"

    def __init__(self, pghandoff, workdir, pair, databases, replication):
        self.metrics_port = free_port()
        super().__init__(pghandoff, workdir, pair.source, databases=databases,
                         proxy={"metrics_listen": f"127.0.0.1:{self.metrics_port}"})
        self.pair = pair
        self.replication = replication

    def config_sections(self):
        sections = super().config_sections()
        sections["target"] = {"host": "127.0.0.1", "port": self.pair.target.port, "user": self.pair.target.superuser}
        sections["replication"] = dict(self.replication)
        sections["log"] = {"level": "debug"}
        return sections

    def status_json(self):
        out = self.pghandoff.run(["status", "-c", self.config_path, "--json"], timeout=60)
        assert out.returncode == 0, out.stdout + out.stderr
        return {db["database"]: db for db in json.loads(out.stdout)["databases"]}

    def metric(self, name, dbname):
        with urllib.request.urlopen(f"http://127.0.0.1:{self.metrics_port}/metrics", timeout=30) as response:
            text = response.read().decode()
        m = re.search(rf'^{name}{{database="{re.escape(dbname)}"}} (\S+)$', text, re.M)
        return float(m.group(1)) if m else None

    def worker_pid(self, dbname):
        """The pid the database's progress file names: its worker's."""
        text = (self.workdir / f"pghandoff.state-replication-{dbname}").read_text()
        return int(re.search(r"^pid (\d+)$", text, re.M).group(1))


@ONLY_15
def test_stopped_worker_shows_behind(clusters, pghandoff, tmp_path):
    """SIGSTOP of one database's worker while the source takes writes: status --json shows that database behind
    (its slot's lag, not the stale progress file's), the other not; after SIGCONT it catches up."""
    pair = clusters
    dbs = [make_database(pair, "lag") for _ in range(2)]
    for db in dbs:
        run_sql(pair.source, db, "CREATE TABLE t (id serial PRIMARY KEY, v text)")
    p = RunProcess(pghandoff, tmp_path / "run", pair, dbs, names_for(f"lag{os.getpid()}"))
    stopped = []
    try:
        p.start()
        wait_for(lambda: all(d["phase"] == "streaming" for d in p.status_json().values()), STREAM_TIMEOUT,
                 what="both databases streaming", on_timeout=p.log_tail)
        victim, other = dbs
        # Caught up first, as the slot sees it: the lag seen later comes from the writes below.
        # (Without the slot column, as before the probe existed, the follower's own figure is all there is.)
        wait_for(lambda: (lambda d: d["lag_bytes"] == 0 and d.get("slot", "active") == "active")(
                 p.status_json()[victim]),
                 STREAM_TIMEOUT, what=f"status showing {victim} caught up", on_timeout=p.log_tail)
        pid = p.worker_pid(victim)
        assert alive(pid) and pid != p.worker_pid(other)
        os.kill(pid, signal.SIGSTOP)
        stopped.append(pid)
        run_sql(pair.source, victim, "INSERT INTO t (v) SELECT 'while stopped' FROM generate_series(1, 1000)")
        status = wait_for(lambda: (lambda s: s if s[victim]["lag_bytes"] > 0 else None)(p.status_json()),
                          PROCESS_TIMEOUT, what=f"status showing {victim} behind", on_timeout=p.log_tail)
        assert status[victim]["slot"] == "active" and status[victim]["slot_lag_bytes"] > 0, status
        assert p.metric("pghandoff_replication_lag_bytes", victim) > 0
        assert p.metric("pghandoff_replication_slot_lag_bytes", victim) > 0
        assert pair.target.execute("SELECT count(*) FROM t", dbname=victim) == [(0,)]
        # The other database streams on, and says so.
        run_sql(pair.source, other, "INSERT INTO t (v) VALUES ('other')")
        wait_for(lambda: pair.target.execute("SELECT count(*) FROM t", dbname=other) == [(1,)], STREAM_TIMEOUT,
                 what=f"{other} streaming on", on_timeout=p.log_tail)
        os.kill(pid, signal.SIGCONT)
        stopped.remove(pid)
        wait_for(lambda: pair.target.execute("SELECT count(*) FROM t", dbname=victim) == [(1000,)], STREAM_TIMEOUT,
                 what=f"{victim} catching up", on_timeout=p.log_tail)
        wait_for(lambda: (lambda s: s[victim]["lag_bytes"] == 0 and s[victim]["phase"] == "streaming")(
                 p.status_json()), STREAM_TIMEOUT, what=f"status showing {victim} caught up", on_timeout=p.log_tail)
    finally:
        for pid in stopped:
            os.kill(pid, signal.SIGCONT)
        p.stop()
        pghandoff.run(["replicate", "-c", p.config_path, "--drop"], timeout=120)
        for db in dbs:
            for cluster in (pair.source, pair.target):
                cluster.execute(f"DROP DATABASE IF EXISTS {quote_ident(db)} WITH (FORCE)")


@ONLY_15
def test_killed_worker_shows_down(clusters, pghandoff, tmp_path):
    """A worker killed along with its supervisor, the progress file saying streaming: status says down."""
    pair = clusters
    dbs = [make_database(pair, "down") for _ in range(2)]
    p = RunProcess(pghandoff, tmp_path / "run", pair, dbs, names_for(f"down{os.getpid()}"))
    try:
        p.start()
        wait_for(lambda: all(d["phase"] == "streaming" for d in p.status_json().values()), STREAM_TIMEOUT,
                 what="both databases streaming", on_timeout=p.log_tail)
        # The proxy's follower (a supervisor) stopped, so that nothing starts the worker again; then the worker.
        supervisor = [c for c in children_of(p.proc.pid)]
        assert len(supervisor) == 1, supervisor
        pid = p.worker_pid(dbs[0])
        os.kill(supervisor[0], signal.SIGSTOP)
        try:
            os.kill(pid, signal.SIGKILL)
            status = wait_for(lambda: (lambda s: s if s[dbs[0]]["phase"] == "down" else None)(p.status_json()),
                              PROCESS_TIMEOUT, what=f"status showing {dbs[0]} down", on_timeout=p.log_tail)
            assert status[dbs[1]]["phase"] == "streaming", status
            assert p.metric("pghandoff_replication_follower_up", dbs[0]) == 0
            assert p.metric("pghandoff_replication_follower_up", dbs[1]) == 1
        finally:
            os.kill(supervisor[0], signal.SIGCONT)
        # Started again by its supervisor, it streams again.
        wait_for(lambda: p.status_json()[dbs[0]]["phase"] == "streaming", STREAM_TIMEOUT,
                 what=f"{dbs[0]} streaming again", on_timeout=p.log_tail)
    finally:
        p.stop()
        pghandoff.run(["replicate", "-c", p.config_path, "--drop"], timeout=120)
        for db in dbs:
            for cluster in (pair.source, pair.target):
                cluster.execute(f"DROP DATABASE IF EXISTS {quote_ident(db)} WITH (FORCE)")


@ONLY_15
def test_run_killed_takes_its_follower_and_workers(clusters, pghandoff, tmp_path):
    """kill -9 of `pghandoff run`: its follower and the follower's database workers all exit."""
    pair = clusters
    dbs = [make_database(pair, "runk") for _ in range(2)]
    p = RunProcess(pghandoff, tmp_path / "run", pair, dbs, names_for(f"runk{os.getpid()}"))
    try:
        p.start()
        wait_for(lambda: all(d["phase"] == "streaming" for d in p.status_json().values()), STREAM_TIMEOUT,
                 what="both databases streaming", on_timeout=p.log_tail)
        followers = children_of(p.proc.pid)
        assert len(followers) == 1, followers
        processes = followers + children_of(followers[0])
        assert len(processes) == 3, processes
        p.proc.kill()
        p.proc.wait()
        wait_for(lambda: not any(alive(pid) for pid in processes), PROCESS_TIMEOUT,
                 what=f"the follower and workers {processes} of the killed proxy to exit",
                 on_timeout=lambda: f"still running: {[q for q in processes if alive(q)]}\n{p.log_tail()}")
        for db in dbs:
            wait_for(lambda: pair.source.execute("SELECT NOT active FROM pg_replication_slots WHERE slot_name = %s",
                                                 params=(f"s_runk{os.getpid()}_{db}",)) == [(True,)],
                     PROCESS_TIMEOUT, what=f"the slot of {db} let go")
    finally:
        if p.proc is not None and p.proc.poll() is None:
            p.stop()
        elif p._log_file is not None:
            p._log_file.close()
            p._log_file = None
        pghandoff.run(["replicate", "-c", p.config_path, "--drop"], timeout=120)
        for db in dbs:
            for cluster in (pair.source, pair.target):
                cluster.execute(f"DROP DATABASE IF EXISTS {quote_ident(db)} WITH (FORCE)")


@ONLY_15
def test_new_worker_waits_for_its_predecessor(clusters, replicator_factory):
    """A worker stopped (SIGSTOP) still holds its origin and slot when its supervisor is killed: the new
    replicate's worker waits for them, with a warning and no error, and streams once the old one has let go."""
    pair = clusters
    dbs = [make_database(pair, "pred") for _ in range(2)]
    r = replicator_factory(pair, dbs[0], more_databases={dbs[1]: dbs[1]})
    wait_all_streaming(r, 2)
    workers = worker_pids(r, 2)
    for pid in workers:
        os.kill(pid, signal.SIGSTOP)
    try:
        r.kill9()
        r.start()
        r.wait_log(r"held by a previous follower's session that has not ended yet; trying again")
    finally:
        # Continued, the old workers find the SIGTERM their dead supervisor left them, and stop.
        for pid in workers:
            os.kill(pid, signal.SIGCONT)
    wait_for(lambda: not any(alive(pid) for pid in workers), PROCESS_TIMEOUT, what="the old workers to exit",
             on_timeout=r.log_tail)
    wait_all_streaming(r, 2)
    for db in dbs:
        wait_caught_up(pair, db, r.slot_of(db), r)
    assert r.errors(since_start=True) == [], r.log_tail()
