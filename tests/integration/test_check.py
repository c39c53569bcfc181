"""`pghandoff check` and `pghandoff config` against real clusters.

Every FAIL condition is provoked for real on a running server: wal_level,
a table without a key, a missing extension, a wrong password, an unreachable
port, a missing database, a user without REPLICATION, large objects, no free
replication slot.
"""

import re

import pytest

from pgcluster import free_port

# (source major, target major): an upgrade across four versions, and a move
# between two clusters of the same version.
PAIRS = [(13, 17), (15, 15)]


def server_section(cluster, user="postgres", password=None):
    section = {"host": "127.0.0.1", "port": cluster.port, "user": user}
    if password is not None:
        section["password"] = password
    return section


def make_config(pghandoff, tmp_path, source, target, databases=("app",), source_section=None,
                target_section=None, extra=None):
    config = {
        "source": source_section or server_section(source),
        "target": target_section or server_section(target),
        "databases": {name: "" for name in databases},
    }
    config.update(extra or {})
    return pghandoff.write_config(tmp_path, config)


def lines_with(output, status):
    return [line for line in output.splitlines() if line.startswith(status + "  ")]


def run_check(pghandoff, path):
    result = pghandoff.run(["check", "-c", path])
    assert "AddressSanitizer" not in result.stderr and "runtime error" not in result.stderr, result.stderr
    return result


@pytest.fixture(params=PAIRS, ids=lambda p: f"{p[0]}to{p[1]}")
def clusters(request, pg_factory):
    """A source and a target cluster, each with database app holding one keyed table."""
    source_major, target_major = request.param
    source = pg_factory(source_major)
    target = pg_factory(target_major)
    for cluster in (source, target):
        cluster.execute("CREATE DATABASE app")
    source.execute("CREATE TABLE accounts (id int PRIMARY KEY, balance numeric)", dbname="app")
    source.execute("CREATE TABLE events (id bigint, payload text)", dbname="app")
    source.execute("ALTER TABLE events REPLICA IDENTITY FULL", dbname="app")
    return source, target


def test_check_passes(pghandoff, tmp_path, clusters):
    source, target = clusters
    result = run_check(pghandoff, make_config(pghandoff, tmp_path, source, target))
    assert result.returncode == 0, result.stdout + result.stderr
    assert lines_with(result.stdout, "FAIL") == []
    assert re.search(rf"^PASS  source reachable: PostgreSQL {source.major}\.", result.stdout, re.M)
    assert re.search(rf"^PASS  target reachable: PostgreSQL {target.major}\.", result.stdout, re.M)
    assert re.search(rf"^PASS  versions: source {source.major}\.\d+, target {target.major}\.", result.stdout, re.M)
    assert "PASS  source: wal_level = logical" in result.stdout
    assert "PASS  database app: every table has a primary key or replica identity" in result.stdout
    assert re.search(r"^0 failed$|, 0 failed$", result.stdout, re.M)


def test_wal_level_replica(pghandoff, tmp_path, clusters):
    source, target = clusters
    source.set(wal_level="replica")
    assert source.execute("SHOW wal_level")[0][0] == "replica"
    result = run_check(pghandoff, make_config(pghandoff, tmp_path, source, target))
    assert result.returncode == 1
    fails = lines_with(result.stdout, "FAIL")
    assert fails == ['FAIL  source: wal_level is "replica", logical replication needs "logical"']
    assert "hint: ALTER SYSTEM SET wal_level = logical on the source" in result.stdout


def test_table_without_primary_key(pghandoff, tmp_path, clusters):
    source, target = clusters
    source.execute("CREATE SCHEMA sales", dbname="app")
    source.execute('CREATE TABLE sales."Orders" (n int)', dbname="app")
    source.execute("CREATE TABLE logs (line text)", dbname="app")
    result = run_check(pghandoff, make_config(pghandoff, tmp_path, source, target))
    assert result.returncode == 1
    fails = lines_with(result.stdout, "FAIL")
    assert len(fails) == 1, result.stdout
    # Quoted where SQL needs it, sorted, and the keyed / REPLICA IDENTITY FULL tables not listed.
    assert fails[0] == ('FAIL  database app: tables without a primary key or replica identity (2): '
                        'public.logs, sales."Orders"')
    assert "REPLICA IDENTITY FULL" in result.stdout


def test_missing_extension(pghandoff, tmp_path, pg_factory):
    # adminpack ships with 13 and was removed in 17.
    source = pg_factory(13)
    target = pg_factory(17)
    for cluster in (source, target):
        cluster.execute("CREATE DATABASE app")
    source.execute("CREATE EXTENSION adminpack", dbname="app")
    source.execute("CREATE EXTENSION pgcrypto", dbname="app")
    result = run_check(pghandoff, make_config(pghandoff, tmp_path, source, target))
    assert result.returncode == 1
    fails = lines_with(result.stdout, "FAIL")
    assert fails == ["FAIL  database app: extensions installed on the source but not available "
                     "on the target: adminpack"], result.stdout


def test_wrong_password(pghandoff, tmp_path, pg_factory):
    source = pg_factory(15, hba="scram-sha-256", password="right-secret")
    target = pg_factory(15)
    target.execute("CREATE DATABASE app")
    source.execute("CREATE DATABASE app")

    good = make_config(pghandoff, tmp_path, source, target,
                       source_section=server_section(source, password="right-secret"))
    result = run_check(pghandoff, good)
    assert result.returncode == 0, result.stdout

    bad = make_config(pghandoff, tmp_path, source, target,
                      source_section=server_section(source, password="wrong-secret"))
    result = run_check(pghandoff, bad)
    assert result.returncode == 1
    fails = lines_with(result.stdout, "FAIL")
    assert len(fails) == 1, result.stdout
    assert fails[0].startswith("FAIL  source unreachable: ")
    assert 'password authentication failed for user "postgres"' in fails[0]
    assert "hint: check the password" in result.stdout
    # The secret itself is never printed.
    assert "wrong-secret" not in result.stdout + result.stderr


def test_unreachable_port(pghandoff, tmp_path, pg_factory):
    target = pg_factory(15)
    target.execute("CREATE DATABASE app")
    port = free_port()
    path = make_config(pghandoff, tmp_path, None, target,
                       source_section={"host": "127.0.0.1", "port": port, "user": "postgres"})
    result = run_check(pghandoff, path)
    assert result.returncode == 1
    fails = lines_with(result.stdout, "FAIL")
    assert len(fails) == 1, result.stdout
    assert fails[0].startswith("FAIL  source unreachable: ")
    assert f"port {port} failed: Connection refused" in fails[0]
    assert "hint: check host and port" in result.stdout
    assert "PASS  target reachable" in result.stdout


def test_missing_database_and_privileges(pghandoff, tmp_path, pg_factory):
    source = pg_factory(15)
    target = pg_factory(15)
    for cluster in (source, target):
        cluster.execute("CREATE DATABASE app")
    source.execute("CREATE ROLE plain LOGIN")
    path = make_config(pghandoff, tmp_path, source, target, databases=("app", "ghost"),
                       source_section=server_section(source, user="plain"))
    result = run_check(pghandoff, path)
    assert result.returncode == 1
    fails = lines_with(result.stdout, "FAIL")
    assert "FAIL  source: user plain lacks the REPLICATION privilege" in fails
    assert "FAIL  database ghost does not exist on the source" in fails
    assert "PASS  database app exists on the source" in result.stdout


def test_large_objects_and_slots(pghandoff, tmp_path, pg_factory):
    source = pg_factory(15, settings={"max_replication_slots": 1})
    target = pg_factory(15)
    for cluster in (source, target):
        cluster.execute("CREATE DATABASE app")
    source.execute("SELECT lo_from_bytea(0, 'blob')", dbname="app")
    source.execute("SELECT pg_create_logical_replication_slot('someone_else', 'pgoutput')", dbname="app")
    result = run_check(pghandoff, make_config(pghandoff, tmp_path, source, target))
    assert result.returncode == 1
    fails = lines_with(result.stdout, "FAIL")
    # Large objects are copied and kept in step: no failure, a line that says so.
    assert ("PASS  database app: large objects, copied with the tables and kept in step by a diff (1): "
            "1 large object(s)" in result.stdout), result.stdout
    assert "PASS  database app: large objects can be read" in result.stdout
    assert not [line for line in fails if "large object" in line], result.stdout
    assert ("FAIL  source: 1 of max_replication_slots = 1 in use, 1 needed (one per database)"
            in fails), result.stdout


def test_large_objects_the_source_user_cannot_read(pghandoff, tmp_path, pg_factory):
    """The copy and the diff read pg_largeobject, which only superusers may read unless granted."""
    source = pg_factory(15)
    target = pg_factory(15)
    for cluster in (source, target):
        cluster.execute("CREATE DATABASE app")
    source.execute("CREATE ROLE plain LOGIN REPLICATION")
    source.execute("SELECT lo_from_bytea(0, 'blob')", dbname="app")
    path = make_config(pghandoff, tmp_path, source, target, source_section=server_section(source, user="plain"))
    result = run_check(pghandoff, path)
    assert result.returncode == 1
    assert ("FAIL  database app: the source user cannot read pg_largeobject (1): 1 large object(s)"
            in lines_with(result.stdout, "FAIL")), result.stdout
    assert "GRANT SELECT on it to the [source] user" in result.stdout


def test_target_older_than_source(pghandoff, tmp_path, pg_factory):
    source = pg_factory(17)
    target = pg_factory(13)
    for cluster in (source, target):
        cluster.execute("CREATE DATABASE app")
    result = run_check(pghandoff, make_config(pghandoff, tmp_path, source, target))
    assert result.returncode == 1
    assert re.search(r"^FAIL  target version 13\.\d+ is older than source version 17\.\d+$",
                     result.stdout, re.M), result.stdout


def test_config_command(pghandoff, tmp_path):
    path = pghandoff.write_config(tmp_path, {
        "source": {"host": "db1", "password": "hunter2"},
        "target": {"conninfo": "host=db2 user=u password=hunter3"},
        "databases": {"app": "", "reports": "reports_v2"},
        "cutover": {"drain_timeout": "1500ms"},
    })
    result = pghandoff.run(["config", "-c", path])
    assert result.returncode == 0, result.stderr
    assert "hunter2" not in result.stdout and "hunter3" not in result.stdout
    assert "password = ********" in result.stdout
    assert "reports = reports_v2" in result.stdout
    assert "drain_timeout = 1500ms" in result.stdout
    assert f"auth_file = {tmp_path}/userlist.txt" in result.stdout


def test_bad_config_exits_2(pghandoff, tmp_path):
    path = pghandoff.write_config(tmp_path, "[source]\nhost = a\nprot = 1\n[target]\nhost = b\n"
                                            "[databases]\napp =\n[cutover]\nmax_lag = lots\n")
    for command in ("config", "check"):
        result = pghandoff.run([command, "-c", path])
        assert result.returncode == 2
        assert f'{path}:3: unknown key "prot" in [source]; did you mean "port"?' in result.stderr
        assert f"{path}:9: max_lag: invalid value" in result.stderr
        assert result.stdout == ""


def test_cli_usage(pghandoff):
    result = pghandoff.run(["--version"])
    assert result.returncode == 0 and re.match(r"^pghandoff \d+\.\d+\.\d+$", result.stdout.strip())
    result = pghandoff.run(["--help"])
    assert result.returncode == 0
    assert "check" in result.stdout and "config" in result.stdout
    result = pghandoff.run(["check", "--help"])
    assert result.returncode == 0 and "Usage: pghandoff check -c FILE" in result.stdout
    # The manual: every command's help, and the sections a man page has.
    result = pghandoff.run(["help"])
    assert result.returncode == 0
    for text in ("NAME", "SYNOPSIS", "DESCRIPTION", "COMMANDS", "FILES", "SIGNALS", "EXIT STATUS",
                 "Usage: pghandoff cutover -c FILE", "Usage: pghandoff verify -c FILE",
                 "Usage: pghandoff status -c FILE", "Usage: pghandoff run -c FILE"):
        assert text in result.stdout, text
    result = pghandoff.run(["frobnicate"])
    assert result.returncode == 2 and 'unknown command "frobnicate"' in result.stderr
    result = pghandoff.run(["check"])
    assert result.returncode == 2 and "no configuration file given" in result.stderr


@pytest.mark.parametrize("clusters", [(13, 17)], indirect=True, ids=["13to17"])
def test_everything_a_migration_trips_on(pghandoff, tmp_path, clusters):
    """Unlogged tables, materialized views, generated columns, unreadable tables, name conflicts,
    tables that differ on the target, unbounded WAL retention and a long transaction, each reported."""
    source, target = clusters
    for sql in ("CREATE ROLE checker LOGIN REPLICATION",
                "GRANT SELECT ON accounts, events TO checker",
                "CREATE UNLOGGED TABLE scratch (id int PRIMARY KEY)",
                "CREATE MATERIALIZED VIEW totals AS SELECT sum(balance) FROM accounts",
                "CREATE TABLE shapes (id int PRIMARY KEY, w int, h int, area int GENERATED ALWAYS AS (w * h) STORED)",
                "CREATE TABLE secrets (id int PRIMARY KEY)",
                "CREATE PUBLICATION pghandoff FOR TABLE accounts"):
        source.execute(sql, dbname="app")
    source.execute("GRANT SELECT ON shapes TO checker", dbname="app")
    source.execute("SELECT pg_create_physical_replication_slot('pghandoff')")
    target.execute("CREATE TABLE accounts (id int PRIMARY KEY, balance text)", dbname="app")
    path = make_config(pghandoff, tmp_path, source, target, source_section=server_section(source, user="checker"),
                       extra={"cutover": {"drain_timeout": "100ms"}})
    # A transaction of the check's user, open longer than drain_timeout.
    with source.connect("app", user="checker") as idle:
        idle.execute("BEGIN")
        idle.execute("SELECT 1")
        out = {}

        def long_transaction_seen():
            out["r"] = run_check(pghandoff, path)
            return "transaction(s) open longer than drain_timeout" in out["r"].stdout

        from replfixtures import wait_for
        wait_for(long_transaction_seen, timeout=30, what="the long transaction reported")
        idle.execute("ROLLBACK")
    result = out["r"]
    assert result.returncode == 1
    warns, fails = lines_with(result.stdout, "WARN"), lines_with(result.stdout, "FAIL")
    assert "FAIL  database app: tables the source user cannot read (1): public.secrets" in fails
    assert "WARN  database app: unlogged tables (1): public.scratch" in warns
    assert "WARN  database app: materialized views (1): public.totals" in warns
    assert "WARN  database app: generated columns (1): public.shapes.area" in warns
    assert "FAIL  source: slot pghandoff exists and is not a pgoutput slot of database app" in fails
    assert "FAIL  database app: publication pghandoff exists and does not publish all tables" in fails
    assert any(f.startswith("FAIL  database app: 1 table(s) differ on the target: public.accounts: "
                            "source (balance numeric, id integer), target (balance text, id integer)")
               for f in fails), fails
    assert any(w.startswith("WARN  database app: ") and "missing on the target" in w for w in warns), warns
    assert "WARN  source: max_slot_wal_keep_size = -1 (unlimited)" in warns
    assert "WARN  source: 1 transaction(s) open longer than drain_timeout" in warns
    assert "REFRESH MATERIALIZED VIEW" in result.stdout


@pytest.mark.parametrize("clusters", [(15, 15)], indirect=True, ids=["15to15"])
def test_check_query_that_never_answers(pghandoff, tmp_path, clusters):
    """A check query stuck behind a lock on the source fails after the bound instead of hanging check."""
    import psycopg

    source, target = clusters
    path = make_config(pghandoff, tmp_path, source, target)
    with psycopg.connect(source.dsn("app")) as locker:
        # pghandoff's own check of its publication reads pg_publication, which logins never touch.
        locker.execute("LOCK TABLE pg_catalog.pg_publication IN ACCESS EXCLUSIVE MODE")
        result = run_check(pghandoff, path)
    assert result.returncode == 1, result.stdout + result.stderr
    assert re.search(r"^FAIL  .*the server did not answer within 30 s", result.stdout, re.M), result.stdout
