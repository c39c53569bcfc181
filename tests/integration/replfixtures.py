"""Fixtures and helpers for the replicator's integration tests (test_replicate.py).

`pghandoff replicate` runs as a subprocess with a generated config between a
source and a target cluster.  Test modules import the fixtures by name:

    from replfixtures import clusters, replicator_factory  # noqa: F401

- clusters: a (source, target) Pair of running clusters, parametrized over
  PAIRS; the clusters are made on first use and shared by the tests of a
  module (cluster_pool), because initdb is slow.  Each test works
  in a database of its own, with a slot, publication and origin of its own,
  and its replicator_factory removes them (`replicate --drop`) and the
  databases afterwards, so the tests do not see each other.
- replicator_factory(pair, dbname, **options) -> ReplicatorProcess, started
  unless start=False; reverse=True makes it `replicate --reverse` (target ->
  source, after reverse_prepare()).  At teardown each is stopped with
  SIGTERM: it must exit 0, and its stderr must hold no sanitizer report (the
  suite also runs against an ASan/UBSan build).

The plain helpers: make_database, wait_caught_up, assert_tables_equal,
Pgbench, wait_for.
"""

import os
import random
import re
import signal
import subprocess
import time
from pathlib import Path

import pytest

from pgcluster import Cluster, conninfo

# (source major, target major): an upgrade across four majors, and a move
# between two clusters of the same major.
PAIRS = [(13, 17), (15, 15)]

# Text that a sanitized build prints when it finds a bug.
SANITIZER_MARKERS = ("AddressSanitizer", "LeakSanitizer", "runtime error", "ThreadSanitizer")

PGBENCH = "/usr/bin/pgbench"

# Session settings for the test's own queries, so values print the same way
# on both clusters whatever the databases' defaults are.
NORMALIZED_OPTIONS = ("-c DateStyle=ISO -c IntervalStyle=postgres -c extra_float_digits=3 "
                      "-c TimeZone=UTC -c bytea_output=hex")

# Generous bounds on correctness (the thing never happened), not performance
# thresholds: on an idle machine every wait ends in a fraction of them.
CATCH_UP_TIMEOUT = 180
LOG_TIMEOUT = 120


# ---- polling ---------------------------------------------------------------

def wait_for(condition, timeout=30.0, what="condition", interval=0.05, on_timeout=None):
    """Poll condition() until it returns something truthy; return that, or fail after timeout.

    on_timeout() may return extra text for the failure message (a log tail).
    """
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            extra = on_timeout() if on_timeout else ""
            pytest.fail(f"timed out after {timeout} s waiting for {what}\n{extra}", pytrace=False)
        time.sleep(interval)


def random_seed():
    """The seed for a test's random choices: PGHANDOFF_TEST_SEED, else a fresh one (printed)."""
    seed = int(os.environ.get("PGHANDOFF_TEST_SEED") or random.randrange(1 << 30))
    print(f"random seed: PGHANDOFF_TEST_SEED={seed}")
    return seed


# ---- clusters --------------------------------------------------------------

class Pair:
    def __init__(self, source, target):
        self.source = source
        self.target = target

    @property
    def label(self):
        return f"{self.source.major}to{self.target.major}"

    def __repr__(self):
        return f"<Pair {self.source!r} -> {self.target!r}>"


def connect(cluster, dbname, **kw):
    """A psycopg connection with normalized output settings (autocommit)."""
    kw.setdefault("options", NORMALIZED_OPTIONS)
    return cluster.connect(dbname, **kw)


def query(cluster, dbname, sql, params=None):
    with connect(cluster, dbname) as conn:
        cur = conn.execute(sql, params)
        return cur.fetchall() if cur.description is not None else None


def execute_script(cluster, dbname, sql):
    """Run several statements (a script, one transaction per statement) through psql."""
    result = cluster.psql(["-q", "-c", sql], dbname=dbname, check=False)
    if result.returncode != 0:
        raise AssertionError(f"script failed on {cluster!r} {dbname}:\n{result.stderr}\n{sql}")
    return result


class ClusterPool:
    """Clusters made on first use and kept for the module: initdb is slow."""

    def __init__(self, prerequisites):
        self.prerequisites = prerequisites
        self.pairs = {}
        self.clusters = []

    def get(self, source_major, target_major):
        key = (source_major, target_major)
        if key not in self.pairs:
            made = []
            with self.prerequisites.check():
                made.append(Cluster(source_major))
                made.append(Cluster(target_major))
            self.clusters.extend(made)
            for cluster in made:
                cluster.init()
                cluster.start()
            self.pairs[key] = Pair(*made)
        pair = self.pairs[key]
        for cluster in (pair.source, pair.target):
            if not cluster.is_running():  # a test stopped it and failed before starting it again
                cluster.start()
        return pair

    def destroy(self):
        for cluster in self.clusters:
            try:
                cluster.destroy()
            except Exception as e:  # keep destroying the others
                print(f"could not destroy {cluster!r}: {e}")


@pytest.fixture(scope="module")
def cluster_pool(prerequisites):
    pool = ClusterPool(prerequisites)
    yield pool
    pool.destroy()


@pytest.fixture(params=PAIRS, ids=lambda p: f"{p[0]}to{p[1]}")
def clusters(request, cluster_pool):
    """A (source, target) Pair of running clusters of the pair's majors, shared by a module's tests.

    Use `@pytest.mark.parametrize("clusters", [(15, 15)], indirect=True, ids=["15to15"])`
    to run a test on one pair only.
    """
    return cluster_pool.get(*request.param)


_db_counter = [0]


def make_database(pair, prefix="db"):
    """A fresh database on the source with the _sync marker table; returns its name.

    wait_caught_up() writes a marker row into _sync, a published table, and
    polls the target for it.
    """
    _db_counter[0] += 1
    name = f"{prefix}_{os.getpid()}_{_db_counter[0]}"
    pair.source.execute(f"CREATE DATABASE {name}")
    pair.source.execute("CREATE TABLE _sync (id serial PRIMARY KEY, at timestamptz DEFAULT now())",
                        dbname=name)
    return name


# ---- the replicator process ------------------------------------------------

def db_name_part(dbname):
    """The database's part of its slot and origin names, as replicate_names_db_part() makes it.

    A plain name (1 to 32 of [a-z0-9_], not ending in _rollback) as it is;
    any other: up to 23 characters lower-cased, the rest '_', then '_' and
    the 32-bit FNV-1a hash of the exact name in 8 hex digits.
    """
    if re.fullmatch(r"[a-z0-9_]{1,32}", dbname) and not dbname.endswith("_rollback"):
        return dbname
    h = 2166136261
    for byte in dbname.encode():
        h = ((h ^ byte) * 16777619) & 0xFFFFFFFF
    prefix = "".join(ch.lower() if ch.isascii() and ch.isalnum() else "_" for ch in dbname.encode().decode("latin-1"))
    return f"{prefix[:23]}_{h:08x}"


def quote_ident(name):
    return '"' + name.replace('"', '""') + '"'


class ReplicatorProcess:
    """One `pghandoff replicate` subprocess (restartable) and its config and log."""

    def __init__(self, pghandoff, workdir, pair, dbname, *, target_dbname=None, replication=None,
                 log_level="debug", more_databases=None, reverse=False):
        self.pghandoff = pghandoff
        # `replicate --reverse`: from the reverse slot on the target into the source.
        self.reverse = reverse
        # More command-line arguments for the next start (--skip-ddl LSN).
        self.extra_args = []
        self.workdir = Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.pair = pair
        self.dbname = dbname
        self.target_dbname = target_dbname or dbname
        # {source name: target name} of further databases in [databases].
        self.more_databases = dict(more_databases or {})
        self.replication = {
            # Unique per test: the clusters are shared by a module's tests.
            "slot_name": f"s_{dbname}",
            "publication_name": f"p_{dbname}",
        }
        self.replication.update(replication or {})
        self.log_level = log_level
        self.config_path = self.workdir / "pghandoff.ini"
        self.log_path = self.workdir / "replicate.stderr"
        self.proc = None
        self.starts = 0
        self._log_file = None
        self._start_offset = 0
        self.write_config()

    @property
    def slot(self):
        # None in the options: the default name.
        return self.replication.get("slot_name") or "pghandoff"

    @property
    def publication(self):
        return self.replication.get("publication_name") or "pghandoff"

    @property
    def origin(self):
        # One database: the origin is named like the slot.
        return self.slot

    # The way back, named as replicate_names() does: the publication and slot
    # on the target, the origin on the source.
    @property
    def reverse_publication(self):
        return f"{self.publication[:54]}_rollback"

    def reverse_slot_of(self, dbname):
        if not self.more_databases:
            return f"{self.slot[:54]}_rollback"
        return f"{self.slot[:21]}_{db_name_part(dbname)}_rollback"

    @property
    def reverse_slot(self):
        return self.reverse_slot_of(self.dbname)

    @property
    def reverse_origin(self):
        return self.reverse_slot

    def databases(self):
        """[(source name, target name)] of every database in the config."""
        return [(self.dbname, self.target_dbname)] + list(self.more_databases.items())

    def slot_of(self, dbname):
        """The slot (and origin) of one database, named as replicate_names() does."""
        if not self.more_databases:
            return self.slot
        return f"{self.slot[:30]}_{db_name_part(dbname)}"

    def write_config(self):
        def server(cluster):
            return {"host": "127.0.0.1", "port": cluster.port, "user": cluster.superuser}

        sections = {
            "source": server(self.pair.source),
            "target": server(self.pair.target),
            "databases": {source: "" if target == source else target for source, target in self.databases()},
            "replication": dict(self.replication),
            "log": {"level": self.log_level},
        }
        self.pghandoff.write_config(self.workdir, sections, name="pghandoff.ini")

    # ---- lifecycle ---------------------------------------------------------

    def start(self):
        assert not self.running(), "already running"
        self.write_config()  # the source's port changes if it was restarted on another
        if self._log_file is None:
            self._log_file = open(self.log_path, "ab")
        self._log_file.write(f"==== pytest: start #{self.starts + 1} ====\n".encode())
        self._log_file.flush()
        self._start_offset = self.log_path.stat().st_size
        self.proc = subprocess.Popen(
            [str(self.pghandoff.bin), "replicate", "-c", str(self.config_path)]
            + (["--reverse"] if self.reverse else []) + list(self.extra_args),
            stdin=subprocess.DEVNULL, stdout=self._log_file, stderr=self._log_file,
            cwd=self.workdir)
        self.starts += 1
        return self

    def running(self):
        return self.proc is not None and self.proc.poll() is None

    def kill9(self):
        """SIGKILL, as a crash would; children (pg_dump, psql) are left running, as they would be."""
        assert self.running(), "not running:\n" + self.log_tail()
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait()

    def stop(self, timeout=60):
        """SIGTERM, wait; it must exit 0 with no sanitizer report."""
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
                raise AssertionError(f"replicator ignored SIGTERM for {timeout} s:\n" + self.log_tail())
            assert self.proc.returncode == 0, \
                f"replicator exited with status {self.proc.returncode} after SIGTERM:\n" + self.log_tail()
        self.check_sanitizers()

    def close(self):
        if self._log_file is not None:
            self._log_file.close()
            self._log_file = None

    def check_sanitizers(self):
        text = self.log()
        found = [m for m in SANITIZER_MARKERS if m in text]
        assert not found, f"sanitizer report in the replicator's stderr ({found}):\n{text[-20000:]}"

    def wait_exit(self, timeout=120):
        try:
            return self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            pytest.fail(f"replicator still running {timeout} s later:\n{self.log_tail()}", pytrace=False)

    def drop(self):
        """`replicate [--reverse] --drop`: returns the CompletedProcess (asserting nothing)."""
        return self.pghandoff.run(["replicate", "-c", self.config_path, "--drop"]
                                  + (["--reverse"] if self.reverse else []), timeout=120)

    def reverse_prepare(self):
        """`replicate --reverse --prepare`: returns the CompletedProcess (asserting nothing)."""
        self.write_config()
        return self.pghandoff.run(["replicate", "--reverse", "--prepare", "-c", self.config_path], timeout=120)

    def reverse_drop(self):
        """`replicate --reverse --drop`: returns the CompletedProcess (asserting nothing)."""
        self.write_config()
        return self.pghandoff.run(["replicate", "--reverse", "--drop", "-c", self.config_path], timeout=120)

    # ---- the log -----------------------------------------------------------

    def log(self, since_start=False):
        try:
            with open(self.log_path, "rb") as f:
                if since_start:
                    f.seek(self._start_offset)
                return f.read().decode(errors="replace")
        except OSError:
            return ""

    def log_tail(self, lines=80):
        return "\n".join(self.log().splitlines()[-lines:])

    def wait_log(self, pattern, timeout=LOG_TIMEOUT, since_start=True):
        """Poll the log (of the current run) until the regex occurs; return the match.

        Fails at once if the process exits meanwhile.
        """
        def found():
            m = re.search(pattern, self.log(since_start), re.M)
            if m:
                return m
            if self.proc is not None and self.proc.poll() is not None:
                pytest.fail(f"replicator exited with status {self.proc.returncode} before logging "
                            f"{pattern!r}:\n{self.log_tail()}", pytrace=False)
            return None
        return wait_for(found, timeout, what=f"{pattern!r} in the replicator log",
                        on_timeout=self.log_tail)

    def wait_streaming(self, timeout=LOG_TIMEOUT):
        return self.wait_log(r"streaming from [0-9A-F]+/[0-9A-F]+", timeout)

    def errors(self, since_start=False):
        """The ERROR lines of the log (of the current run with since_start)."""
        return [line for line in self.log(since_start).splitlines() if " ERROR " in line]


@pytest.fixture
def replicator_factory(pghandoff, tmp_path, request):
    """replicator_factory(pair, dbname, start=True, **ReplicatorProcess options).

    At teardown: every replicator is stopped (SIGTERM, exit 0, no sanitizer
    report), `replicate --drop` removes its slot, publication and origin, and
    the databases are dropped on both clusters.
    """
    made = []

    def make(pair, dbname, start=True, **options):
        r = ReplicatorProcess(pghandoff, tmp_path / f"repl{len(made)}", pair, dbname, **options)
        made.append(r)
        if start:
            r.start()
        return r

    yield make

    failed = getattr(getattr(request.node, "rep_call", None), "failed", False)
    errors = []
    for r in made:
        if failed:
            print(f"---- replicator {r.dbname}: last lines of {r.log_path} ----")
            print(r.log_tail(120))
            for cluster in (r.pair.source, r.pair.target):
                print(f"---- {cluster!r}: last lines of {cluster.logfile} ----")
                print(cluster.log_tail(40))
        try:
            r.stop()
        except AssertionError as e:
            errors.append(str(e))
        r.close()
    for r in made:
        try:
            cleanup(r)
        except Exception as e:
            errors.append(f"cleanup of {r.dbname}: {e}")
    if errors:
        pytest.fail("replicator teardown:\n" + "\n\n".join(errors), pytrace=False)


def cleanup(r):
    """Remove what a test left on the shared clusters: slots, publications, origins, databases."""
    source, target = r.pair.source, r.pair.target
    if not (source.is_running() and target.is_running()):
        return
    # test_drop checks what --drop does; here it only tidies up.
    r.drop()
    # Whatever --drop could not remove, remove by hand so the next tests start clean:
    # the forward slot on the source and origin on the target, and the way
    # back's slot on the target and origin on the source, which a test may
    # have made (reverse_prepare) without a reverse replicator.
    for dbname, target_dbname in r.databases():
        for slot_cluster, slot, origin_cluster in ((source, r.slot_of(dbname), target),
                                                   (target, r.reverse_slot_of(dbname), source)):
            drop_slot(slot_cluster, slot)
            origin_cluster.execute("SELECT pg_replication_origin_drop(roname) FROM pg_replication_origin "
                                   "WHERE roname = %s", params=(slot,))
        source.execute(f"DROP DATABASE IF EXISTS {quote_ident(dbname)} WITH (FORCE)")
        target.execute(f"DROP DATABASE IF EXISTS {quote_ident(target_dbname)} WITH (FORCE)")


def drop_slot(cluster, slot):
    """End the walsender of slot, if any, and drop it, if it exists."""
    cluster.execute("SELECT pg_terminate_backend(active_pid) FROM pg_replication_slots "
                    "WHERE slot_name = %s AND active_pid IS NOT NULL", params=(slot,))
    wait_for(lambda: not cluster.execute(
        "SELECT 1 FROM pg_replication_slots WHERE slot_name = %s AND active", params=(slot,)),
        30, what=f"slot {slot} inactive")
    cluster.execute("SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots "
                    "WHERE slot_name = %s", params=(slot,))


# ---- catching up and comparing ---------------------------------------------

def origin_progress(target, origin):
    """The origin's progress on the target as an int LSN, or None without the origin."""
    rows = target.execute("SELECT pg_replication_origin_progress(%s, true)::text "
                          "FROM pg_replication_origin WHERE roname = %s", params=(origin, origin))
    if not rows or rows[0][0] is None:
        return None
    return lsn_int(rows[0][0])


def lsn_int(text):
    hi, lo = text.split("/")
    return (int(hi, 16) << 32) | int(lo, 16)


def wait_caught_up(pair, dbname, origin, replicator=None, timeout=CATCH_UP_TIMEOUT,
                   target_dbname=None, fail_on_error=True):
    """Write a marker row into _sync on the source and poll until the target has it.

    Then the target holds every transaction committed on the source before
    the marker.  Also checks that the origin's progress covers the marker's
    WAL: it moves in the same target transaction as the data.  With
    fail_on_error, an ERROR logged by the replicator meanwhile fails at once
    (rather than after the timeout); tests that provoke errors turn it off.
    """
    source, target = pair.source, pair.target
    target_dbname = target_dbname or dbname
    errors_before = len(replicator.errors()) if replicator is not None else 0
    with connect(source, dbname) as conn:
        with conn.transaction():
            marker = conn.execute("INSERT INTO _sync DEFAULT VALUES RETURNING id").fetchone()[0]
            before_commit = lsn_int(conn.execute("SELECT pg_current_wal_insert_lsn()::text").fetchone()[0])

    def arrived():
        if replicator is not None and replicator.proc is not None and replicator.proc.poll() is not None:
            pytest.fail(f"replicator exited with status {replicator.proc.returncode} while catching "
                        f"up:\n{replicator.log_tail()}", pytrace=False)
        if fail_on_error and replicator is not None:
            new_errors = replicator.errors()[errors_before:]
            if new_errors:
                pytest.fail("the replicator logged an error while catching up:\n" + "\n".join(new_errors)
                            + "\n---- log tail ----\n" + replicator.log_tail(30), pytrace=False)
        try:
            return bool(target.execute("SELECT 1 FROM _sync WHERE id = %s", dbname=target_dbname,
                                       params=(marker,)))
        except Exception:
            # The database or table may not exist yet (copy still running).
            return False

    wait_for(arrived, timeout, what=f"marker {marker} of {dbname} on the target", interval=0.1,
             on_timeout=(replicator.log_tail if replicator else None))
    progress = origin_progress(target, origin)
    assert progress is not None and progress >= before_commit, \
        (f"marker {marker} is on the target, but origin {origin} is at "
         f"{progress and hex(progress)}, before the marker's commit (> {before_commit:#x})")
    return marker


def user_tables(cluster, dbname, roots_only=False):
    """Every user table (plain and partitioned), as quoted qualified names.

    The schema pghandoff (the replicator's capture of schema changes) is not
    the user's.

    roots_only leaves partitions out: plain tables and partitioned roots only,
    the tables a target that partitions differently has too.
    """
    rows = query(cluster, dbname,
                 "SELECT format('%I.%I', n.nspname, c.relname) FROM pg_class c "
                 "JOIN pg_namespace n ON n.oid = c.relnamespace "
                 "WHERE c.relkind IN ('r', 'p') AND c.relpersistence = 'p' "
                 + ("AND NOT c.relispartition " if roots_only else "")
                 + "AND n.nspname NOT IN ('pg_catalog', 'information_schema', 'pghandoff') "
                 "AND n.nspname !~ '^pg_(toast|temp)' ORDER BY 1")
    return [r[0] for r in rows]


def table_digest(cluster, dbname, table):
    """(row count, order-independent hash of every row's text)."""
    return tuple(query(cluster, dbname,
                       f"SELECT count(*), coalesce(sum(hashtext(t::text)::bigint), 0) FROM {table} t")[0])


def assert_tables_equal(pair, dbname, target_dbname=None, exclude=("public._sync",), roots_only=False):
    """Every user table of the source has the same rows on the target.

    Compares a row count and an order-independent hash per table; the failure
    lists every table that differs, with a few example rows for small ones.
    roots_only compares a partitioned table as a whole (through its root), not
    partition by partition: for a target that partitions differently.
    """
    source, target = pair.source, pair.target
    target_dbname = target_dbname or dbname
    tables = [t for t in user_tables(source, dbname, roots_only) if t not in exclude]
    on_target = set(user_tables(target, target_dbname, roots_only))
    differing = []
    for table in tables:
        if table not in on_target:
            differing.append(f"{table}: missing on the target")
            continue
        s = table_digest(source, dbname, table)
        t = table_digest(target, target_dbname, table)
        if s != t:
            line = f"{table}: source {s[0]} rows (hash {s[1]}), target {t[0]} rows (hash {t[1]})"
            if s[0] <= 5000 and t[0] <= 5000:
                line += "\n" + row_differences(pair, dbname, target_dbname, table)
            differing.append(line)
    assert not differing, f"{len(differing)} table(s) differ in {dbname}:\n" + "\n".join(differing)
    return tables


def row_differences(pair, dbname, target_dbname, table, limit=5):
    src = _row_multiset(pair.source, dbname, table)
    tgt = _row_multiset(pair.target, target_dbname, table)
    only_src = [r for r in src if src[r] > tgt.get(r, 0)]
    only_tgt = [r for r in tgt if tgt[r] > src.get(r, 0)]
    out = [f"    only on the source ({len(only_src)}): " + ", ".join(_short(r) for r in only_src[:limit]),
           f"    only on the target ({len(only_tgt)}): " + ", ".join(_short(r) for r in only_tgt[:limit])]
    return "\n".join(out)


def _row_multiset(cluster, dbname, table):
    counts = {}
    for (row,) in query(cluster, dbname, f"SELECT t::text FROM {table} t"):
        counts[row] = counts.get(row, 0) + 1
    return counts


def _short(text, n=200):
    return text if len(text) <= n else text[:n] + f"...({len(text)} chars)"


# ---- load ------------------------------------------------------------------

def pgbench_env(cluster):
    return dict(os.environ, PGHOST="127.0.0.1", PGPORT=str(cluster.port),
                PGUSER=cluster.superuser, LC_ALL="C")


def need_pgbench(prerequisites):
    if not os.access(PGBENCH, os.X_OK):
        prerequisites.missing(f"{PGBENCH} not found (apt-get install postgresql-contrib or "
                              "postgresql-client)")


def pgbench_init(cluster, dbname, scale=1):
    """pgbench -i, with pgbench_history given REPLICA IDENTITY FULL (it has no key)."""
    result = subprocess.run([PGBENCH, "-i", "-q", "-s", str(scale), dbname], env=pgbench_env(cluster),
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, f"pgbench -i failed:\n{result.stderr}"
    cluster.execute("ALTER TABLE pgbench_history REPLICA IDENTITY FULL", dbname=dbname)


class Pgbench:
    """pgbench in the background against the source."""

    def __init__(self, cluster, dbname, args):
        self.cmd = [PGBENCH, "-n", *map(str, args), dbname]
        self.proc = subprocess.Popen(self.cmd, env=pgbench_env(cluster), stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE, text=True)
        self.out = self.err = None

    def running(self):
        return self.proc.poll() is None

    def wait(self, timeout=600):
        """Wait for it to finish on its own (-T); it must succeed."""
        self.out, self.err = self.proc.communicate(timeout=timeout)
        assert self.proc.returncode == 0, f"{' '.join(self.cmd)} failed:\n{self.out}\n{self.err}"
        m = re.search(r"number of transactions actually processed: (\d+)", self.out)
        assert m, f"no transaction count in pgbench's output:\n{self.out}"
        return int(m.group(1))

    def interrupt(self):
        """Stop it early (SIGINT); transactions in flight are rolled back by the server."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
        self.out, self.err = self.proc.communicate(timeout=60)


def source_dsn(cluster, dbname):
    return conninfo(host="127.0.0.1", port=cluster.port, dbname=dbname, user=cluster.superuser)


# ---- small helpers shared by the replication tests -------------------------

def run_sql(cluster, dbname, *statements):
    """Each statement in its own transaction (autocommit)."""
    with connect(cluster, dbname) as conn:
        for sql in statements:
            conn.execute(sql)


def in_transaction(cluster, dbname, *statements):
    """All statements in one transaction."""
    with connect(cluster, dbname) as conn:
        with conn.transaction():
            for sql in statements:
                conn.execute(sql)


def start_and_sync(replicator_factory, pair, db, **options):
    """Start a replicator on db, wait until the copy is done and streaming caught up."""
    r = replicator_factory(pair, db, **options)
    r.wait_streaming()
    wait_caught_up(pair, db, r.origin, r)
    return r


def emit_marker(cluster, db):
    """A transactional logical message, as the cutover's marker; its LSN.  Works on a fenced database."""
    with connect(cluster, db) as conn:
        conn.execute("SET default_transaction_read_only = off")
        return lsn_int(conn.execute(
            "SELECT pg_logical_emit_message(true, 'pghandoff', 'test marker')::text").fetchone()[0])


def wait_origin(cluster, origin, lsn, replicator, what):
    wait_for(lambda: (origin_progress(cluster, origin) or 0) >= lsn, 120,
             what=f"origin {origin} past {lsn:#x} ({what})", on_timeout=replicator.log_tail)
