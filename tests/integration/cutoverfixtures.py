"""Fixtures for the cutover's integration tests (test_cutover.py).

A cutover needs the three parts running together: a source and a target
cluster (the `clusters` pair of replfixtures), `pghandoff replicate` keeping
the target up to date, and `pghandoff proxy` in front, configured with the
same slot, publication and origin names.  Test modules import by name:

    from cutoverfixtures import migration  # noqa: F401

- migration(prepare=None, proxy=None, cutover=None) -> Migration: a fresh
  database on the source (prepare(dsn) fills it before the copy), replicated
  and streaming, and a proxy in front of it; .cutover() runs
  `pghandoff cutover` and returns the CompletedProcess.
"""

import json
import subprocess

import pytest

from proxyfixtures import ProxyProcess, _stop_all
from replfixtures import make_database, source_dsn, wait_for


class CutoverProxy(ProxyProcess):
    """A proxy whose [target], [replication] and [cutover] match a replicator's."""

    def __init__(self, pghandoff, workdir, replicator, *, cutover=None, command="proxy", **kw):
        self.replicator = replicator
        self.command = command
        self.cutover_options = dict(cutover or {})
        self.target_extra = {}  # more [target] keys (conninfo, say)
        super().__init__(pghandoff, workdir, replicator.pair.source,
                         databases={s: "" if t == s else t for s, t in replicator.databases()}, **kw)

    def config_sections(self):
        sections = super().config_sections()
        target = self.replicator.pair.target
        sections["target"] = {"host": "127.0.0.1", "port": target.port, "user": target.superuser,
                              **self.target_extra}
        sections["replication"] = dict(self.replicator.replication)
        sections["cutover"] = dict(self.cutover_options)
        sections["log"] = {"level": "debug"}
        return sections

    def run_cutover(self, *args, timeout=180):
        return self.pghandoff.run(["cutover", "-c", self.config_path, *args], timeout=timeout)

    def run_rollback(self, *args, timeout=180):
        return self.pghandoff.run(["rollback", "-c", self.config_path, *args], timeout=timeout)

    def report(self):
        _, rows = self.admin("SHOW CUTOVER JSON")
        return json.loads(rows[0][0])


class Migration:
    def __init__(self, pair, dbname, replicator, proxy):
        self.pair = pair
        self.dbname = dbname
        self.replicator = replicator
        self.proxy = proxy

    def source_dsn(self):
        return source_dsn(self.pair.source, self.dbname)

    def target_dsn(self):
        return source_dsn(self.pair.target, self.dbname)

    def slot_pid(self):
        """The pid of the walsender streaming the forward slot, None while nobody streams it."""
        pid = psql_value(self.source_dsn(), "SELECT active_pid FROM pg_replication_slots "
                                            f"WHERE slot_name = '{self.replicator.slot}'")
        return int(pid) if pid else None


@pytest.fixture
def migration(pghandoff, tmp_path, request, clusters, replicator_factory):
    proxies = []

    def make(prepare=None, proxy=None, cutover=None, users=None, auth_type="trust", run=False, wait_streaming=True,
             replication=None, prepare_target=None):
        """run=True: `pghandoff run`, the follower a child of the proxy (the replicator object only names it).

        prepare_target(dsn) fills the target database, made empty first (for replication = {"schema": "none"}).
        """
        dbname = make_database(clusters, prefix="co")
        if prepare:
            prepare(source_dsn(clusters.source, dbname))
        if prepare_target:
            clusters.target.execute(f"CREATE DATABASE {dbname}")
            prepare_target(source_dsn(clusters.target, dbname))
        r = replicator_factory(clusters, dbname, start=not run, replication=replication)
        if not run:
            r.wait_streaming()
        p = CutoverProxy(pghandoff, tmp_path / f"proxy{len(proxies)}", r, cutover=cutover,
                         proxy=proxy, users=users, auth_type=auth_type, command="run" if run else "proxy")
        proxies.append(p)
        p.start()
        m = Migration(clusters, dbname, r, p)
        if run and wait_streaming:
            wait_for(lambda: m.slot_pid() is not None, timeout=120, what="the follower streaming")
        return m

    yield make
    _stop_all(proxies, request)


def psql_value(dsn, sql):
    out = subprocess.run(["psql", "-XAtq", "-d", dsn, "-c", sql], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    return out.stdout.strip()


__all__ = ["migration", "psql_value", "wait_for", "CutoverProxy", "Migration"]
