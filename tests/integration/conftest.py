"""Fixtures for the integration tests: real PostgreSQL clusters and the real binary.

Run with Debian's interpreter, which has pytest and psycopg:
    /usr/bin/python3 -m pytest tests/integration

Environment:
    PGHANDOFF_BIN           the pghandoff binary under test (tests that need it skip without it)
    PGHANDOFF_PG_CACHE      where tests/install-postgres.sh put the PostgreSQL majors
    PGHANDOFF_REQUIRE_ALL=1 a missing prerequisite fails the test instead of skipping it (CI)
"""

import contextlib
import os
import subprocess
from pathlib import Path

import pytest

from pgcluster import Cluster, MissingPrerequisite


class Prerequisites:
    """Turns a missing prerequisite into a skip, or into a failure under CI."""

    def __init__(self, require_all):
        self.require_all = require_all

    def missing(self, reason):
        """Skip the test with reason, or fail it when PGHANDOFF_REQUIRE_ALL=1."""
        if self.require_all:
            pytest.fail(f"missing prerequisite (PGHANDOFF_REQUIRE_ALL=1): {reason}",
                        pytrace=False)
        pytest.skip(reason)

    @contextlib.contextmanager
    def check(self):
        """Run a block; a MissingPrerequisite raised in it goes to missing()."""
        try:
            yield
        except MissingPrerequisite as e:
            self.missing(str(e))


@pytest.fixture(scope="session")
def prerequisites():
    """Session-wide Prerequisites: call .missing(reason), or wrap code in .check().

    A test that cannot find what it needs is skipped with the reason, never
    passed silently; with PGHANDOFF_REQUIRE_ALL=1 (set by CI, where everything
    must be installed) it fails instead.
    """
    return Prerequisites(os.environ.get("PGHANDOFF_REQUIRE_ALL") == "1")


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    # Keep each phase's report on the test item, so fixtures can tell at
    # teardown whether the test failed.
    outcome = yield
    report = outcome.get_result()
    setattr(item, f"rep_{report.when}", report)


@pytest.fixture
def pg_factory(prerequisites, request):
    """Make PostgreSQL clusters: pg_factory(major=15, start=True, **Cluster kwargs) -> Cluster.

    Keywords go to pgcluster.Cluster (settings, hba, superuser, password,
    base_dir).  The cluster is initialised and, unless start=False, started.
    A major that is not installed skips the test (fails it under
    PGHANDOFF_REQUIRE_ALL=1).  At teardown every cluster is stopped and
    removed, also when the test failed; the tail of each server log is printed
    then, so it shows in pytest's report.
    """
    clusters = []

    def make(major=15, *, start=True, **kwargs):
        with prerequisites.check():
            cluster = Cluster(major, **kwargs)
        # Tracked before init(), so a failed init still gets cleaned up.
        clusters.append(cluster)
        cluster.init()
        if start:
            cluster.start()
        return cluster

    yield make

    call = getattr(request.node, "rep_call", None)
    if call is not None and call.failed:
        for cluster in clusters:
            if cluster.base_dir is not None:
                print(f"---- {cluster!r}: last lines of {cluster.logfile} ----")
                print(cluster.log_tail(50))
    errors = []
    for cluster in clusters:
        try:
            cluster.destroy()
        except Exception as e:  # keep destroying the others
            errors.append(f"{cluster!r}: {e}")
    if errors:
        raise RuntimeError("could not destroy clusters:\n" + "\n".join(errors))


def render_ini(sections):
    """Render {section: {key: value}} as INI text; None values are left out."""
    out = []
    for section, entries in sections.items():
        out.append(f"[{section}]")
        for key, value in entries.items():
            if value is None:
                continue
            if isinstance(value, bool):
                value = "true" if value else "false"
            value = str(value)
            if "\n" in value:
                raise ValueError(f"[{section}] {key}: INI values cannot span lines")
            out.append(f"{key} = {value}")
        out.append("")
    return "\n".join(out)


class PgHandoff:
    """The pghandoff binary under test, and helpers to feed it a config and run it."""

    def __init__(self, binary):
        self.bin = binary

    def write_config(self, tmp_path, config, name="pghandoff.ini"):
        """Write config (INI text, or {section: {key: value}}) into tmp_path; return its path."""
        text = config if isinstance(config, str) else render_ini(config)
        path = Path(tmp_path) / name
        path.write_text(text)
        return path

    def run(self, args, timeout=60):
        """Run pghandoff with args and wait; stdout and stderr captured as text."""
        return subprocess.run([str(self.bin), *map(str, args)], capture_output=True,
                              text=True, timeout=timeout)


@pytest.fixture
def pghandoff(prerequisites):
    """The pghandoff binary named by PGHANDOFF_BIN, as a PgHandoff helper.

    .bin is its path, .write_config(tmp_path, text_or_sections) writes a config
    file, .run(args, timeout=60) runs it.  Without PGHANDOFF_BIN, or if it
    names no executable, the test is skipped (failed under PGHANDOFF_REQUIRE_ALL=1).
    """
    value = os.environ.get("PGHANDOFF_BIN")
    if not value:
        prerequisites.missing("PGHANDOFF_BIN is not set (meson test sets it to the built binary)")
    binary = Path(value).resolve()
    if not (binary.is_file() and os.access(binary, os.X_OK)):
        prerequisites.missing(f"PGHANDOFF_BIN={value} is not an executable file")
    return PgHandoff(binary)
