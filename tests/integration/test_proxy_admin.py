"""`pghandoff proxy`: the admin console (database "pghandoff") and signals.

SHOW CLIENTS|SERVERS|STATS|CONFIG|DATABASES|VERSION through psql and
psycopg, errors, PAUSE/RESUME under pgbench load, RELOAD, SHUTDOWN, and
SIGTERM / SIGHUP / SIGINT.
"""

import re
import signal
import socket
import subprocess
import threading
import time

import psycopg
import pytest

from proxyfixtures import (  # noqa: F401  (fixtures are used by name)
    PGBENCH, active_backends, login_error, module_pg_factory, need_tool, pg_login, pgbench_counts,
    proxy_factory, read_message, run_pgbench, startup_packet, wait_for)

SOURCE_SECRET = "source-secret-pw"
SSL_SECRET = "sslkey-secret-pw"
CONNINFO_SECRETS = ("conninfo-pw-1234", "conninfo-sslpw-5678")


@pytest.fixture(scope="module")
def pg(module_pg_factory):
    cluster = module_pg_factory(15)
    for db in ("app", "bench", "app2"):
        cluster.execute(f"CREATE DATABASE {db}")
    cluster.execute("CREATE ROLE alice LOGIN")
    return cluster


@pytest.fixture
def proxy(pg, proxy_factory):
    # A trust cluster ignores the password; it is there to be redacted.
    return proxy_factory(pg, databases=("app", "bench"), source_extra={
        "password": SOURCE_SECRET, "sslpassword": SSL_SECRET,
        "conninfo": "password=%s sslpassword=%s connect_timeout=10" % CONNINFO_SECRETS})


CLIENT_COLUMNS = ["id", "user", "database", "state", "addr", "connect_time", "tx", "pending", "prepared",
                  "server"]
SERVER_COLUMNS = ["id", "user", "database", "cluster", "state", "backend_pid", "client", "connect_time", "tls"]
STATS_COLUMNS = ["database", "total_xact_count", "total_query_count", "total_received", "total_sent",
                 "avg_xact_time_us", "avg_query_time_us"]
DATABASE_COLUMNS = ["name", "target_name", "paused", "clients"]


def test_show_commands_psycopg(pg, proxy, pghandoff):
    with proxy.connect() as app, proxy.connect("pghandoff") as admin:
        backend_pid = app.execute("SELECT pg_backend_pid()").fetchone()[0]
        for i in range(10):
            app.execute("SELECT %s::int", (i,))

        cur = admin.execute("SHOW CLIENTS")
        assert [c.name for c in cur.description] == CLIENT_COLUMNS
        clients = [dict(zip(CLIENT_COLUMNS, r)) for r in cur.fetchall()]
        by_db = {c["database"]: c for c in clients}
        assert set(by_db) == {"app", "pghandoff"}, clients
        assert by_db["app"]["user"] == "postgres"
        assert by_db["app"]["state"] == "active"
        assert by_db["app"]["tx"] == "I"
        assert re.fullmatch(r"S-\d+", by_db["app"]["server"])
        assert by_db["app"]["addr"].startswith("127.0.0.1:")
        assert by_db["pghandoff"]["state"] == "admin"

        cur = admin.execute("SHOW SERVERS")
        assert [c.name for c in cur.description] == SERVER_COLUMNS
        servers = [dict(zip(SERVER_COLUMNS, r)) for r in cur.fetchall()]
        assert len(servers) == 1
        s = servers[0]
        assert (s["user"], s["database"], s["cluster"], s["state"], s["tls"]) == \
            ("postgres", "app", "source", "active", "off")
        assert s["backend_pid"] == str(backend_pid)
        assert s["id"] == by_db["app"]["server"]
        assert s["client"] == by_db["app"]["id"]

        cur = admin.execute("SHOW STATS")
        assert [c.name for c in cur.description] == STATS_COLUMNS
        stats = {r[0]: dict(zip(STATS_COLUMNS, r)) for r in cur.fetchall()}
        assert set(stats) == {"app", "bench"}
        assert int(stats["app"]["total_query_count"]) >= 11
        assert int(stats["app"]["total_xact_count"]) >= 11
        assert int(stats["app"]["total_received"]) > 0 and int(stats["app"]["total_sent"]) > 0
        assert stats["bench"]["total_query_count"] == "0"

        cur = admin.execute("SHOW DATABASES")
        assert [c.name for c in cur.description] == DATABASE_COLUMNS
        assert sorted(cur.fetchall()) == [("app", "app", "no", "1"), ("bench", "bench", "no", "0")]

        cur = admin.execute("SHOW VERSION")
        assert [c.name for c in cur.description] == ["version"]
        (version,), = cur.fetchall()
        assert re.fullmatch(r"pghandoff \d+\.\d+\.\d+\S*", version), version
        assert version.split()[1] in pghandoff.run(["--version"]).stdout

        cur = admin.execute("SHOW CONFIG")
        assert [c.name for c in cur.description] == ["section", "key", "value"]
        config = {(r[0], r[1]): r[2] for r in cur.fetchall()}
        assert config[("source", "port")] == str(pg.port)
        assert config[("proxy", "listen_port")] == str(proxy.port)
        assert config[("databases", "app")] == "app"
        assert config[("source", "password")] == "********"
        assert "connect_timeout='10'" in config[("source", "conninfo")]
        secrets = (SOURCE_SECRET, SSL_SECRET, *CONNINFO_SECRETS)
        leaked = [(k, v) for k, v in config.items() if v and any(secret in v for secret in secrets)]
        assert not leaked, f"secrets shown by SHOW CONFIG: {leaked}"

        # Lower case, a trailing semicolon: the same command.
        assert admin.execute("show version;").fetchall() == [(version,)]


def test_show_commands_psql(proxy):
    out = proxy.psql(["-A", "-F", "|", "-c", "SHOW CLIENTS"], dbname="pghandoff").stdout.splitlines()
    assert out[0] == "|".join(CLIENT_COLUMNS)
    assert out[-1] == "(1 row)"
    for command, columns in (("SHOW SERVERS", SERVER_COLUMNS), ("SHOW STATS", STATS_COLUMNS),
                             ("SHOW DATABASES", DATABASE_COLUMNS), ("SHOW VERSION", ["version"]),
                             ("SHOW CONFIG", ["section", "key", "value"])):
        out = proxy.psql(["-A", "-F", "|", "-c", command], dbname="pghandoff").stdout
        assert out.splitlines()[0] == "|".join(columns), out
        for secret in (SOURCE_SECRET, SSL_SECRET, *CONNINFO_SECRETS):
            assert secret not in out, f"{command} shows {secret!r}"
    out = proxy.psql(["-At", "-c", "SHOW DATABASES"], dbname="pghandoff").stdout
    assert out.splitlines() == ["app|app|no|0", "bench|bench|no|0"]


def test_unknown_command(proxy):
    with proxy.connect("pghandoff") as admin:
        with pytest.raises(psycopg.errors.SyntaxError) as info:
            admin.execute("SHOW NONSENSE")
        assert info.value.sqlstate == "42601"
        assert info.value.diag.message_hint and "SHOW CLIENTS" in info.value.diag.message_hint
        with pytest.raises(psycopg.errors.SyntaxError):
            admin.execute("SELECT 1")
        # The session goes on.
        assert admin.execute("SHOW VERSION").fetchone()[0].startswith("pghandoff ")
    result = proxy.psql(["-c", "DROP TABLE x"], dbname="pghandoff", check=False)
    assert result.returncode != 0
    assert "ERROR:  unknown admin command" in result.stderr
    assert "HINT:" in result.stderr


def test_admin_extended_protocol_refused(proxy):
    with proxy.connect("pghandoff") as admin:
        with pytest.raises(psycopg.errors.FeatureNotSupported):
            admin.execute("SHOW VERSION", prepare=True)
        with pytest.raises(psycopg.Error):
            admin.execute("SHOW CLIENTS WHERE %s", (1,))
        assert admin.execute("SHOW VERSION").fetchone()[0].startswith("pghandoff ")


def test_non_admin_user(proxy):
    error = login_error(proxy.port, user="alice", database="pghandoff")
    assert error["S"] == "FATAL"
    assert error["C"] == "28000"
    assert "admin" in error["M"]
    with pytest.raises(psycopg.OperationalError, match="not allowed in the admin console"):
        proxy.connect("pghandoff", user="alice")
    # alice may still use the proxied databases.
    with proxy.connect(user="alice") as conn:
        assert conn.execute("SELECT current_user").fetchone() == ("alice",)


def bench_clients(proxy):
    return [c for c in proxy.admin_dicts("SHOW CLIENTS") if c["database"] == "bench"]


def bench_xacts(proxy):
    return int(next(r for r in proxy.admin_dicts("SHOW STATS") if r["database"] == "bench")["total_xact_count"])


def test_pause_resume_under_pgbench(pg, proxy, prerequisites):
    need_tool(prerequisites, PGBENCH, "apt-get install postgresql-contrib")
    init = run_pgbench(proxy, ["-i", "-q", "-s", "1"])
    assert init.returncode == 0, init.stderr
    nclients = 8
    env_args = ["-M", "extended", "-c", str(nclients), "-j", "2", "-T", "8"]
    bench = subprocess.Popen(
        [PGBENCH, *env_args, "-h", "127.0.0.1", "-p", str(proxy.port), "-U", "postgres", "bench"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        wait_for(lambda: len([c for c in bench_clients(proxy) if c["state"] == "active"]) == nclients, 30,
                 "pgbench's clients to log in")
        wait_for(lambda: bench_xacts(proxy) > 100, 30,
                 "pgbench to commit some transactions")
        with proxy.connect("pghandoff") as admin:
            # PAUSE answers once every client is between transactions.
            assert admin.execute("PAUSE").statusmessage == "PAUSE"
            dbs = {r[0]: r[2] for r in admin.execute("SHOW DATABASES").fetchall()}
            assert dbs == {"app": "yes", "bench": "yes"}
            # pgbench sends its next transaction at once, and it is held.
            wait_for(lambda: all(c["state"] == "held" for c in bench_clients(proxy)), 30,
                     "every pgbench client to be held")
            assert len(bench_clients(proxy)) == nclients
            assert all(c["tx"] == "I" for c in bench_clients(proxy))
            # Nothing runs on the server for them.
            assert active_backends(pg, "bench") == []
            count = pg.execute("SELECT count(*) FROM pgbench_history", dbname="bench")
            assert pg.execute("SELECT count(*) FROM pgbench_history", dbname="bench") == count
            assert admin.execute("RESUME").statusmessage == "RESUME"
            wait_for(lambda: any(c["state"] == "active" for c in bench_clients(proxy)), 30,
                     "clients to be released")
        out, err = bench.communicate(timeout=120)
    finally:
        if bench.poll() is None:
            bench.kill()
            bench.wait()
    assert bench.returncode == 0, out + err + proxy.log_tail()
    processed, failed = pgbench_counts(out)
    assert failed == 0, out
    assert processed > 0
    assert pg.execute("SELECT count(*) FROM pgbench_history", dbname="bench") == [(processed,)]


def test_pause_one_database(pg, proxy):
    with proxy.connect("bench") as bench, proxy.connect() as app, proxy.connect("pghandoff") as admin:
        assert admin.execute("PAUSE bench").statusmessage == "PAUSE"
        # app is not paused.
        assert app.execute("SELECT 'app runs'").fetchone() == ("app runs",)
        # bench's next query waits until RESUME.
        cur = bench.cursor()
        result = {}

        def run():
            result["row"] = cur.execute("SELECT 'bench runs'").fetchone()

        t = threading.Thread(target=run, daemon=True)
        t.start()
        wait_for(lambda: [c["state"] for c in bench_clients(proxy)] == ["held"], 20, "bench to be held")
        assert "row" not in result
        assert admin.execute("RESUME bench").statusmessage == "RESUME"
        t.join(20)
        assert result.get("row") == ("bench runs",)

        with pytest.raises(psycopg.errors.InvalidCatalogName):
            admin.execute("PAUSE no_such_db")


def test_pause_waits_for_open_transaction(proxy):
    with proxy.connect() as app, proxy.connect("pghandoff") as admin:
        app.execute("BEGIN")
        app.execute("SELECT 1")
        done = threading.Event()

        def pause():
            admin.execute("PAUSE app")
            done.set()

        t = threading.Thread(target=pause, daemon=True)
        t.start()
        # The PAUSE answers only once the transaction is over.
        wait_for(lambda: "PAUSE app requested" in proxy.log(), 20, "the PAUSE to be requested")
        assert not done.is_set()
        app.execute("COMMIT")
        assert done.wait(20), "PAUSE did not answer after the transaction ended"
        t.join(5)
        with proxy.connect("pghandoff") as admin2:
            admin2.execute("RESUME")
        assert app.execute("SELECT 2").fetchone() == (2,)


def test_reload_adds_database(pg, proxy):
    assert login_error(proxy.port, database="app2")["C"] == "3D000"
    proxy.databases["app2"] = ""
    proxy.write_files()
    assert proxy.admin("RELOAD") == (None, "RELOAD")
    with proxy.connect("app2") as conn:
        assert conn.execute("SELECT current_database()").fetchone() == ("app2",)
        names = [r["name"] for r in proxy.admin_dicts("SHOW DATABASES")]
        assert names == ["app", "bench", "app2"]
    assert "configuration reloaded" in proxy.log()


def test_reload_refuses_to_drop_a_database_in_use(pg, proxy):
    with proxy.connect("bench") as bench:
        del proxy.databases["bench"]
        proxy.write_files()
        with proxy.connect("pghandoff") as admin:
            with pytest.raises(psycopg.Error) as info:
                admin.execute("RELOAD")
            assert info.value.sqlstate == "F0000"
        assert bench.execute("SELECT current_database()").fetchone() == ("bench",)
    # Once its clients are gone, the same file reloads.
    wait_for(lambda: next(r for r in proxy.admin_dicts("SHOW DATABASES") if r["name"] == "bench")["clients"]
             == "0", 20, "bench's client to leave")
    assert proxy.admin("RELOAD") == (None, "RELOAD")
    assert [r["name"] for r in proxy.admin_dicts("SHOW DATABASES")] == ["app"]
    assert login_error(proxy.port, database="bench")["C"] == "3D000"


def test_reload_while_clients_log_in(pg, proxy_factory):
    """RELOAD replaces the database list while clients are half way through authentication."""
    p = proxy_factory(pg, databases=("app", "bench"), auth_type="scram-sha-256", users={"postgres": "pw"})

    def reload():
        assert p.admin("RELOAD", password="pw") == (None, "RELOAD")

    # One finishes its login after the reload...
    error, sock, _ = pg_login(p.port, "postgres", "app", "pw", before_auth=reload)
    assert error is None, error
    sock.close()
    # ...one gives up after it.
    with socket.create_connection(("127.0.0.1", p.port), timeout=10) as s:
        s.sendall(startup_packet({"user": "postgres", "database": "bench"}))
        assert read_message(s)[0] == b"R"
        reload()
    with p.connect(password="pw") as conn:
        assert conn.execute("SELECT 1").fetchone() == (1,)
        wait_for(lambda: {r["name"]: r["clients"] for r in p.admin_dicts("SHOW DATABASES", password="pw")}
                 == {"app": "1", "bench": "0"}, 20, "the client counts to settle")
    assert p.running()


def test_reload_bad_config_keeps_the_old_one(proxy):
    with proxy.connect() as app:
        proxy.config_path.write_text(proxy.config_path.read_text() + "\n[proxy]\nno_such_key = 1\n")
        with proxy.connect("pghandoff") as admin:
            with pytest.raises(psycopg.Error) as info:
                admin.execute("RELOAD")
            assert info.value.sqlstate == "F0000"
        assert app.execute("SELECT 1").fetchone() == (1,)
    with proxy.connect() as again:
        assert again.execute("SELECT 1").fetchone() == (1,)


def test_shutdown_command(proxy):
    with proxy.connect() as app:
        assert app.execute("SELECT 1").fetchone() == (1,)
        assert proxy.admin("SHUTDOWN") == (None, "SHUTDOWN")
        wait_for(lambda: not proxy.accepts(), 20, "the proxy to stop listening")
    # Once the last client is gone, it exits.
    assert proxy.wait_exit() == 0


# ---- signals ---------------------------------------------------------------

def test_sigterm_waits_for_idle_client(pg, proxy_factory):
    p = proxy_factory(pg, proxy={"shutdown_timeout": "60s"})
    conn = p.connect()
    try:
        assert conn.execute("SELECT 1").fetchone() == (1,)
        p.signal(signal.SIGTERM)
        wait_for(lambda: not p.accepts(), 20, "the proxy to stop accepting")
        assert p.running()
        # The connected client may finish its work.
        assert conn.execute("SELECT 'still served'").fetchone() == ("still served",)
    finally:
        conn.close()
    assert p.wait_exit() == 0


def test_sigterm_shutdown_timeout(pg, proxy_factory):
    p = proxy_factory(pg, proxy={"shutdown_timeout": "2s"})
    with p.connect() as conn:
        p.signal(signal.SIGTERM)
        assert p.wait_exit() == 0
        assert "shutdown_timeout reached" in p.log()
        with pytest.raises(psycopg.OperationalError):
            conn.execute("SELECT 1")


def test_sigint_closes_at_once(pg, proxy_factory):
    p = proxy_factory(pg)
    with p.connect() as conn:
        start = time.monotonic()
        p.signal(signal.SIGINT)
        assert p.wait_exit() == 0
        with pytest.raises(psycopg.OperationalError):
            conn.execute("SELECT 1")
        assert time.monotonic() - start < 10


def test_sighup_reloads_auth_file(pg, proxy_factory):
    pg.execute("DROP ROLE IF EXISTS newbie; CREATE ROLE newbie LOGIN")
    p = proxy_factory(pg, auth_type="scram-sha-256", users={"postgres": "pw"})
    error = login_error(p.port, "newbie", password="newbie-pw")
    assert error["C"] == "28P01"
    p.users["newbie"] = "newbie-pw"
    p.reload()  # rewrites the auth file, then SIGHUP

    def newbie_logs_in():
        try:
            with p.connect(user="newbie", password="newbie-pw") as conn:
                return conn.execute("SELECT current_user").fetchone()[0]
        except psycopg.OperationalError as e:
            assert "password authentication failed" in str(e)
            return None
    assert wait_for(newbie_logs_in, 20, "the new auth file to take effect") == "newbie"
    # A broken auth file changes nothing.
    p.auth_path.write_text('"newbie" "newbie-pw"\nthis is not a quoted pair\n')
    p.signal(signal.SIGHUP)
    p.wait_log(r"reload failed")
    assert newbie_logs_in() == "newbie"
    # And a removed user is refused.
    del p.users["newbie"]
    p.reload()
    wait_for(lambda: newbie_logs_in() is None, 20, "the user to be removed")


def test_admin_show_help_lists_what_works(proxy):
    """SHOW HELP and an unknown command's hint come from one table; every SHOW listed answers."""
    help_rows = proxy.admin_dicts("SHOW HELP")
    usages = [row["command"] for row in help_rows]
    assert "PAUSE [db]" in usages and "SHOW HELP" in usages and "CUTOVER DRY RUN" in usages
    assert all(row["description"] for row in help_rows)
    with proxy.connect("pghandoff") as admin:
        for usage in usages:
            if usage.startswith("SHOW "):
                assert admin.execute(usage.lower()).description is not None, usage
        with pytest.raises(psycopg.errors.SyntaxError) as info:
            admin.execute("SHOW NOTHING")
        assert info.value.diag.message_hint == "commands: " + ", ".join(usages)
        # A database named as PAUSE's argument keeps its case; one not served is refused by name.
        with pytest.raises(psycopg.errors.InvalidCatalogName) as info:
            admin.execute("PAUSE NoSuchDb")
        assert '"NoSuchDb"' in info.value.diag.message_primary
