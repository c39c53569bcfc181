"""Checks that the test harness itself works: clusters of each major start,
are set up for logical replication, and enforce the authentication asked for.

If these fail, every other integration test's result means nothing.
"""

import psycopg
import pytest

from pgcluster import Cluster, MissingPrerequisite

# 15 is Debian's; the others come from tests/install-postgres.sh.
MAJORS = [13, 14, 15, 16, 17, 18]


@pytest.mark.parametrize("major", MAJORS)
def test_cluster_starts_with_logical_wal(pg_factory, major):
    cluster = pg_factory(major)

    version_num = int(cluster.execute("SHOW server_version_num")[0][0])
    assert version_num // 10000 == major
    assert version_num == cluster.version_num
    assert cluster.execute("SHOW wal_level") == [("logical",)]
    assert cluster.execute("SHOW port") == [(str(cluster.port),)]
    # psql, over the same DSN, reaches the same server.
    out = cluster.psql(["-Atc", "SELECT current_setting('server_version_num')"]).stdout
    assert int(out) == version_num


@pytest.mark.parametrize("major", [13, 15, 17])
def test_scram_rejects_wrong_password(pg_factory, major):
    cluster = pg_factory(major, hba="scram-sha-256", password="s3cret")

    with pytest.raises(psycopg.OperationalError, match="password authentication failed"):
        cluster.connect(password="wrong")
    with cluster.connect() as conn:
        stored = conn.execute("SELECT rolpassword FROM pg_authid WHERE rolname = current_user")
        assert stored.fetchone()[0].startswith("SCRAM-SHA-256$")


@pytest.mark.parametrize("major", [13, 17])
def test_md5_stores_md5_password(pg_factory, major):
    # From 14 on initdb hashes with SCRAM, and an md5 hba line then runs SCRAM:
    # the harness must re-hash, or md5 tests would silently test SCRAM.
    cluster = pg_factory(major, hba="md5", password="s3cret")

    with pytest.raises(psycopg.OperationalError, match="password authentication failed"):
        cluster.connect(password="wrong")
    stored = cluster.execute("SELECT rolpassword FROM pg_authid WHERE rolname = current_user")
    assert stored[0][0].startswith("md5")


def test_set_reloads_or_restarts(pg_factory):
    cluster = pg_factory()

    cluster.set(work_mem="7MB")  # reloadable
    assert cluster.execute("SHOW work_mem") == [("7MB",)]

    started = cluster.execute("SELECT pg_postmaster_start_time()")
    cluster.set(max_connections=42)  # needs a restart
    assert cluster.execute("SHOW max_connections") == [("42",)]
    assert cluster.execute("SELECT pg_postmaster_start_time()") != started


def test_missing_major_names_the_fix():
    with pytest.raises(MissingPrerequisite, match="install-postgres.sh 99"):
        Cluster(99)


def test_destroy_removes_everything(pg_factory):
    cluster = pg_factory()
    base = cluster.base_dir
    cluster.destroy()
    assert not base.exists()
    cluster.destroy()  # a second destroy, as pg_factory's teardown does, is harmless
