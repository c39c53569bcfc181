"""`pghandoff proxy`: secrets looked up on the cluster (auth_user, auth_query).

The auth file lists only the admin user and auth_user; every application
role's secret comes from the cluster, through the SECURITY DEFINER function
the README documents, so auth_user is no superuser.  The clusters' pg_hba
asks for md5, under which PostgreSQL runs SCRAM for a role with a SCRAM
verifier: the proxy's server logins are SCRAM pass-through (with the key the
client's proof reveals) for SCRAM roles and md5 (with the looked-up hash) for
md5 roles, both from looked-up secrets.

Failed logins are checked over a raw socket (proxyfixtures.pg_login) for
their SQLSTATE; that client also checks the proxy's SCRAM server signature,
which only the real verifier can make.  A cluster that stops answering
(SIGSTOP of all its processes) shows that the lookup has a deadline and
never holds the proxy's loop.  The last test runs a cutover and then logs in
with the target's passwords.
"""

import itertools
import re
import socket
import subprocess
import threading

import psycopg
import pytest

from cutoverfixtures import migration  # noqa: F401  (fixtures are used by name)
from proxyfixtures import (  # noqa: F401
    login_error, module_pg_factory, node_pg_dir, pg_login, proxy_factory, startup_packet, wait_for)
from replfixtures import cluster_pool, clusters, replicator_factory  # noqa: F401
from test_adversarial_hung import in_thread, stopped_cluster
from test_proxy_auth import md5_secret, same_message_for

SUPER_PW = "super-pw"
AUTH_USER, AUTH_PW = "pghandoff_auth", "auth-pw"

# The README's setup, word for word.
LOOKUP_FUNCTION = """
CREATE SCHEMA pghandoff_auth AUTHORIZATION postgres;
CREATE FUNCTION pghandoff_auth.lookup(p_user text, OUT usename name, OUT passwd text)
RETURNS SETOF record LANGUAGE sql SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS $$ SELECT usename, passwd FROM pg_catalog.pg_shadow WHERE usename = p_user $$;
REVOKE ALL ON FUNCTION pghandoff_auth.lookup(text) FROM PUBLIC;
GRANT USAGE ON SCHEMA pghandoff_auth TO pghandoff_auth;
GRANT EXECUTE ON FUNCTION pghandoff_auth.lookup(text) TO pghandoff_auth;
"""
AUTH_QUERY = "SELECT usename, passwd FROM pghandoff_auth.lookup($1)"

_names = itertools.count(1)


def new_role(cluster, prefix, password, encryption):
    """A new login role (a name of its own, so tests that change passwords do not meet)."""
    name = f"{prefix}{next(_names)}"
    cluster.execute(f"SET password_encryption = '{encryption}'; "
                    f"CREATE ROLE {name} LOGIN PASSWORD '{password}'; GRANT CONNECT ON DATABASE app TO {name}")
    return name


def set_password(cluster, role, password, encryption):
    cluster.execute(f"SET password_encryption = '{encryption}'; ALTER ROLE {role} PASSWORD '{password}'")


@pytest.fixture(scope="module", params=[13, 17], ids=lambda m: f"pg{m}")
def aq_pg(request, module_pg_factory):
    """A cluster asking for md5 in pg_hba, with auth_user, its function, a SCRAM role and an md5 role."""
    cluster = module_pg_factory(request.param, hba="md5", password=SUPER_PW)
    cluster.execute("CREATE DATABASE app")
    cluster.execute(f"SET password_encryption = 'scram-sha-256'; "
                    f"CREATE ROLE {AUTH_USER} LOGIN PASSWORD '{AUTH_PW}'; "
                    "CREATE ROLE sam LOGIN PASSWORD 'sam-pw'; "
                    "SET password_encryption = 'md5'; CREATE ROLE mia LOGIN PASSWORD 'mia-pw'")
    cluster.execute(LOOKUP_FUNCTION, dbname="app")
    assert cluster.execute("SELECT rolsuper FROM pg_roles WHERE rolname = %s", params=(AUTH_USER,)) == [(False,)]
    return cluster


def make_proxy(proxy_factory, cluster, auth_type, **options):
    """A proxy whose auth file has only postgres and auth_user; its log at debug, which shows each lookup."""
    proxy = proxy_factory(cluster, start=False, auth_type=auth_type,
                          users={"postgres": SUPER_PW, AUTH_USER: AUTH_PW},
                          proxy={"auth_user": AUTH_USER, "auth_query": AUTH_QUERY, **options})
    sections = proxy.config_sections
    proxy.config_sections = lambda: {**sections(), "log": {"level": "debug"}}
    return proxy.start()


@pytest.fixture
def scram_proxy(aq_pg, proxy_factory):
    return make_proxy(proxy_factory, aq_pg, "scram-sha-256")


@pytest.fixture
def md5_proxy(aq_pg, proxy_factory):
    return make_proxy(proxy_factory, aq_pg, "md5")


def whoami(proxy, user, password, dbname="app"):
    with proxy.connect(dbname, user=user, password=password) as conn:
        return conn.execute("SELECT current_user, current_database()").fetchone()


def psql_user(proxy, user, password):
    return proxy.psql(["-Atc", "SELECT current_user"], user=user, password=password).stdout.strip()


def raw_login_ok(proxy, user, password):
    error, sock, messages = pg_login(proxy.port, user, "app", password)
    assert error is None, error
    sock.close()
    return messages


def auth_code(messages):
    """The proxy's first authentication request: 5 md5, 10 SASL."""
    return next(int.from_bytes(body[:4], "big") for mtype, body in messages if mtype == b"R")


# ---- logins -----------------------------------------------------------------

def test_scram_role_from_the_cluster(aq_pg, scram_proxy):
    """A SCRAM verifier looked up: the client's proof checks, the server signature is right, pass-through logs in."""
    assert whoami(scram_proxy, "sam", "sam-pw") == ("sam", "app")
    assert psql_user(scram_proxy, "sam", "sam-pw") == "sam"
    assert auth_code(raw_login_ok(scram_proxy, "sam", "sam-pw")) == 10
    # The admin user and auth_user come from the file: no lookup for them.
    assert whoami(scram_proxy, "postgres", SUPER_PW)[0] == "postgres"
    assert "auth_query on the source database app" in scram_proxy.log()
    assert not re.search(r"postgres@app .*auth_query", scram_proxy.log())


def test_md5_role_from_the_cluster(aq_pg, md5_proxy):
    """An md5 hash looked up: the client's md5 response checks, and the server login uses the hash."""
    assert aq_pg.execute("SELECT passwd FROM pg_shadow WHERE usename = 'mia'")[0][0] == md5_secret("mia", "mia-pw")
    assert whoami(md5_proxy, "mia", "mia-pw") == ("mia", "app")
    assert psql_user(md5_proxy, "mia", "mia-pw") == "mia"
    assert auth_code(raw_login_ok(md5_proxy, "mia", "mia-pw")) == 5


def test_node_postgres_scram(aq_pg, scram_proxy, prerequisites, tmp_path):
    cache = node_pg_dir(prerequisites)
    script = tmp_path / "login.js"
    script.write_text("""
const { Client } = require('pg');
(async () => {
  const c = new Client({ host: '127.0.0.1', port: +process.env.PROXY_PORT, database: 'app',
                         user: 'sam', password: 'sam-pw' });
  await c.connect();
  const r = await c.query('SELECT current_user AS u');
  console.log(r.rows[0].u);
  await c.end();
})().catch((e) => { console.error(e.message); process.exit(1); });
""")
    env = {"PATH": "/usr/bin:/bin", "PROXY_PORT": str(scram_proxy.port), "NODE_PATH": str(cache / "node_modules")}
    result = subprocess.run(["node", str(script)], env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "sam"


@pytest.mark.parametrize("auth_type", ["scram-sha-256", "md5"])
def test_wrong_password_and_unknown_user(aq_pg, proxy_factory, auth_type):
    """A wrong password and a role the cluster does not have fail the same way, with 28P01."""
    proxy = make_proxy(proxy_factory, aq_pg, auth_type)
    user = "sam" if auth_type == "scram-sha-256" else "mia"
    errors = {
        user: login_error(proxy.port, user, password="wrong"),
        "nobody": login_error(proxy.port, "nobody", password="whatever"),
    }
    fields = same_message_for(errors)
    assert (fields["S"], fields["C"]) == ("FATAL", "28P01"), fields
    assert fields["M"] == 'password authentication failed for user "USER"'
    # Again, now that both answers are cached: the same.
    errors = {user: login_error(proxy.port, user, password="wrong"),
              "nobody": login_error(proxy.port, "nobody", password="whatever")}
    assert same_message_for(errors) == fields
    with pytest.raises(psycopg.OperationalError, match='password authentication failed for user "nobody"'):
        proxy.connect(user="nobody", password="whatever")
    assert whoami(proxy, user, f"{user}-pw")[0] == user
    assert re.search(r"C-\d+ nobody@app .*authentication failed: auth_query on the source found no password",
                     proxy.log())


def test_concurrent_lookups(aq_pg, proxy_factory):
    """Many logins at once, each with its own lookup (no cache): all in, none held by another."""
    proxy = make_proxy(proxy_factory, aq_pg, "scram-sha-256", auth_query_cache="0s")
    results = [None] * 20

    def login(i):
        user, password = ("sam", "sam-pw") if i % 2 else ("nobody", "whatever")
        try:
            results[i] = whoami(proxy, user, password)[0]
        except psycopg.OperationalError as e:
            results[i] = "refused" if "password authentication failed" in str(e) else str(e)

    threads = [threading.Thread(target=login, args=(i,)) for i in range(len(results))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert results == ["refused", "sam"] * (len(results) // 2)
    assert proxy.log().count("auth_query on the source database app") == len(results)


# ---- a password changed during the window -------------------------------------

def test_md5_password_changed_works_at_once(aq_pg, proxy_factory):
    """The cached hash is stale: the same md5 response is checked again against the cluster's new one."""
    proxy = make_proxy(proxy_factory, aq_pg, "md5", auth_query_cache="1h")
    role = new_role(aq_pg, "md5r", "old-pw", "md5")
    assert whoami(proxy, role, "old-pw")[0] == role  # cached now, for an hour
    set_password(aq_pg, role, "new-pw", "md5")
    assert whoami(proxy, role, "new-pw")[0] == role
    assert psql_user(proxy, role, "new-pw") == role
    error = login_error(proxy.port, role, password="old-pw")
    assert (error["C"], error["M"]) == ("28P01", f'password authentication failed for user "{role}"')


def test_scram_password_changed(aq_pg, proxy_factory):
    """SCRAM: the login that meets the stale cached verifier fails (its proof is bound to the old salt);
    the next one asks the cluster and works, and the old password no longer does."""
    proxy = make_proxy(proxy_factory, aq_pg, "scram-sha-256", auth_query_cache="1h")
    role = new_role(aq_pg, "scramr", "old-pw", "scram-sha-256")
    assert whoami(proxy, role, "old-pw")[0] == role
    set_password(aq_pg, role, "new-pw", "scram-sha-256")
    error = login_error(proxy.port, role, password="new-pw")
    assert error["C"] == "28P01", error
    assert whoami(proxy, role, "new-pw")[0] == role
    assert psql_user(proxy, role, "new-pw") == role
    error = login_error(proxy.port, role, password="old-pw")
    assert error["C"] == "28P01", error

    # Without a cache every login asks: the new password works at once.
    fresh = make_proxy(proxy_factory, aq_pg, "scram-sha-256", auth_query_cache="0s")
    assert whoami(fresh, role, "new-pw")[0] == role
    set_password(aq_pg, role, "newer-pw", "scram-sha-256")
    assert whoami(fresh, role, "newer-pw")[0] == role
    assert login_error(fresh.port, role, password="new-pw")["C"] == "28P01"


def test_reload_empties_the_cache(aq_pg, proxy_factory):
    """A reload may change auth_query: what the old one found is not used after it."""
    proxy = make_proxy(proxy_factory, aq_pg, "scram-sha-256", auth_query_cache="1h")
    assert whoami(proxy, "sam", "sam-pw")[0] == "sam"  # cached for an hour
    proxy.proxy_options["auth_query"] = AUTH_QUERY + " WHERE usename <> 'sam'"
    proxy.reload()
    proxy.wait_log("configuration reloaded")
    error = login_error(proxy.port, "sam", password="sam-pw")
    assert (error["C"], error["M"]) == ("28P01", 'password authentication failed for user "sam"'), error
    assert re.search(r"sam@app \S+: authentication failed: auth_query on the source found no password", proxy.log())


# ---- lookups that fail ----------------------------------------------------------

def test_lookup_function_dropped(aq_pg, proxy_factory):
    proxy = make_proxy(proxy_factory, aq_pg, "scram-sha-256", auth_query_cache="0s")
    assert whoami(proxy, "sam", "sam-pw")[0] == "sam"
    wrong = login_error(proxy.port, "sam", password="wrong")
    aq_pg.execute("DROP FUNCTION pghandoff_auth.lookup(text)", dbname="app")
    try:
        error = login_error(proxy.port, "sam", password="sam-pw")
        # The same answer as a wrong password.
        assert error == wrong
        reason = proxy.wait_log(r"(C-\d+ sam@app \S+): authentication failed: auth_query failed on the source: "
                                r".*does not exist")
        # Logged once, on the client's line.
        assert len(re.findall(re.escape(reason.group(1)) + r".*does not exist", proxy.log())) == 1
    finally:
        aq_pg.execute(LOOKUP_FUNCTION.split(";", 1)[1], dbname="app")  # the schema is still there
    # Failures are not cached: the next login works.
    assert whoami(proxy, "sam", "sam-pw")[0] == "sam"


def test_cluster_stopped_during_lookup(aq_pg, proxy_factory):
    """A cluster that accepts and never answers: the lookup's deadline refuses the login with 28P01 before
    client_login_timeout, the proxy answers other clients meanwhile, and logins work once it runs again."""
    proxy = make_proxy(proxy_factory, aq_pg, "scram-sha-256", auth_query_cache="0s", client_login_timeout="6s")
    wrong = login_error(proxy.port, "sam", password="wrong")
    lookups = proxy.log().count("auth_query on the source database app")
    with stopped_cluster(aq_pg):
        result = {}

        def login():
            result["error"] = login_error(proxy.port, "sam", password="sam-pw")

        runner = threading.Thread(target=login, daemon=True)
        runner.start()
        # While that lookup waits on the stopped cluster, the loop serves the admin console.
        wait_for(lambda: proxy.log().count("auth_query on the source database app") > lookups,
                 what="the lookup to start")
        _, rows = proxy.admin("SHOW VERSION", password=SUPER_PW)
        assert rows
        # A client that leaves while its lookup waits: the lookup goes with it.
        leaver = socket.create_connection(("127.0.0.1", proxy.port), timeout=20)
        leaver.sendall(startup_packet({"user": "mia", "database": "app"}))
        wait_for(lambda: re.search(r"mia@app \S+: auth_query on the source", proxy.log()), what="the second lookup")
        leaver.close()
        proxy.wait_log(r"mia@app \S+: closing: client closed the connection")
        runner.join(60)
        assert not runner.is_alive(), "the login was never answered"
    assert result["error"] == wrong
    assert re.search(r"C-\d+ sam@app .*authentication failed: the source did not answer auth_query", proxy.log())
    assert "did not log in within client_login_timeout" not in proxy.log()
    assert in_thread(lambda: whoami(proxy, "sam", "sam-pw"), 60)[0] == "sam"


def test_cluster_down_during_lookup(aq_pg, proxy_factory):
    proxy = make_proxy(proxy_factory, aq_pg, "md5", auth_query_cache="0s")
    wrong = login_error(proxy.port, "mia", password="wrong")
    aq_pg.stop()
    try:
        assert login_error(proxy.port, "mia", password="mia-pw") == wrong
        assert re.search(r"C-\d+ mia@app .*authentication failed: auth_user could not log in to the source",
                         proxy.log())
    finally:
        aq_pg.start()
    assert whoami(proxy, "mia", "mia-pw")[0] == "mia"
    assert proxy.running()


# ---- after a cutover: the target's secrets ------------------------------------------

@pytest.mark.parametrize("clusters", [(13, 17), (15, 15)], indirect=True, ids=["13to17", "15to15"])
def test_cutover_then_target_secrets(migration, clusters):
    """Before the switch the source's password logs in; after it, the target's, looked up on the target."""
    role = f"cut{next(_names)}_{clusters.source.major}"
    for cluster, password in ((clusters.source, "source-pw"), (clusters.target, "target-pw")):
        cluster.execute(f"SET password_encryption = 'scram-sha-256'; CREATE ROLE {role} LOGIN PASSWORD '{password}'")
    try:
        m = migration(prepare=lambda dsn: subprocess.run(["psql", "-XAtq", "-d", dsn, "-c",
                                                          "CREATE TABLE t (id int PRIMARY KEY)"],
                                                         check=True, capture_output=True, timeout=60),
                      auth_type="scram-sha-256", users={"postgres": "admin-pw"},
                      proxy={"auth_user": "postgres"})
        assert whoami(m.proxy, role, "source-pw", m.dbname)[0] == role
        result = m.proxy.run_cutover()
        assert result.returncode == 0, result.stdout + result.stderr
        assert whoami(m.proxy, role, "target-pw", m.dbname)[0] == role
        error = login_error(m.proxy.port, role, m.dbname, password="source-pw")
        assert error["C"] == "28P01", error
        assert "auth_query on the target database" in m.proxy.log()
    finally:
        for cluster in (clusters.source, clusters.target):
            cluster.execute(f"DROP ROLE IF EXISTS {role}")
