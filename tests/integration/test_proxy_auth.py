"""`pghandoff proxy`: client authentication (scram-sha-256, md5, trust) and TLS.

SCRAM pass-through is the interesting case: the auth file holds only the
user's SCRAM verifier (copied from the source's pg_authid), the source's
pg_hba demands scram-sha-256, and the proxy must log in with the ClientKey
that the client's own proof reveals.  Failed logins are checked over a raw
socket (proxyfixtures.pg_login), because libpq hides the SQLSTATE of a
failed login; that client also checks the proxy's SCRAM server signature.

TLS uses a CA and a server certificate made with the openssl CLI: clients
to the proxy (client_tls_mode), and the proxy to the source (sslmode).
"""

import hashlib
import os
import shutil
import ssl
import threading
import time

import psycopg
import pytest

from pgcluster import SERVER_OS_USER
from proxyfixtures import (  # noqa: F401  (fixtures are used by name)
    CertAuthority, active_backends, login_error, module_pg_factory, need_tool, pg_login, proxy_factory,
    wait_for)

SUPER_PW = "super-pw"


def md5_secret(user, password):
    return "md5" + hashlib.md5((password + user).encode()).hexdigest()


def same_message_for(errors):
    """Every error dict, with its user's name replaced, is the same one."""
    normalised = [{k: v.replace(f'"{user}"', '"USER"') for k, v in fields.items()}
                  for user, fields in errors.items()]
    first = normalised[0]
    for user, other in zip(errors, normalised):
        assert other == first, f"{user}: {other} differs from {first}"
    return first


# ---- SCRAM -----------------------------------------------------------------

@pytest.fixture(scope="module", params=[13, 15, 17], ids=lambda m: f"pg{m}")
def scram_pg(request, module_pg_factory):
    """A cluster whose pg_hba demands scram-sha-256, with roles alice and bob."""
    cluster = module_pg_factory(request.param, hba="scram-sha-256", password=SUPER_PW)
    cluster.execute("CREATE DATABASE app")
    cluster.execute("SET password_encryption = 'scram-sha-256'; "
                    "CREATE ROLE alice LOGIN PASSWORD 'alice-pw'; CREATE ROLE bob LOGIN PASSWORD 'bob-pw'; "
                    "CREATE ROLE carol LOGIN PASSWORD 'carol-pw'")
    return cluster


def verifier_of(cluster, role):
    secret = cluster.execute("SELECT rolpassword FROM pg_authid WHERE rolname = %s", params=(role,))[0][0]
    assert secret.startswith("SCRAM-SHA-256$"), secret
    return secret


@pytest.fixture
def scram_proxy(scram_pg, proxy_factory):
    return proxy_factory(scram_pg, auth_type="scram-sha-256", users={
        "postgres": SUPER_PW,
        "alice": verifier_of(scram_pg, "alice"),  # pass-through: the proxy never sees her password
        "bob": "bob-pw",  # plaintext
        "carol": md5_secret("carol", "carol-pw"),  # md5 hash: cannot do SCRAM
    })


def whoami(proxy, user, password):
    with proxy.connect(user=user, password=password) as conn:
        return conn.execute("SELECT current_user, current_database(), "
                            "(SELECT count(*) FROM pg_stat_activity WHERE usename = current_user)").fetchone()


def test_scram_plaintext_secret(scram_proxy):
    assert whoami(scram_proxy, "bob", "bob-pw") == ("bob", "app", 1)
    # Our own SCRAM client checks the proxy's server signature too.
    error, sock, _ = pg_login(scram_proxy.port, "bob", "app", "bob-pw")
    assert error is None
    sock.close()
    out = scram_proxy.psql(["-Atc", "SELECT current_user"], user="bob", password="bob-pw").stdout
    assert out.strip() == "bob"


def test_scram_verifier_passthrough(scram_pg, scram_proxy):
    assert whoami(scram_proxy, "alice", "alice-pw") == ("alice", "app", 1)
    error, sock, _ = pg_login(scram_proxy.port, "alice", "app", "alice-pw")
    assert error is None
    sock.close()
    # Several in a row, and psql: each login makes a fresh SCRAM exchange with the server.
    for _ in range(3):
        out = scram_proxy.psql(["-Atc", "SELECT current_user"], user="alice", password="alice-pw").stdout
        assert out.strip() == "alice"


def test_scram_wrong_password_and_unknown_user(scram_proxy):
    errors = {
        "alice": login_error(scram_proxy.port, "alice", password="wrong"),
        "bob": login_error(scram_proxy.port, "bob", password="wrong"),
        "carol": login_error(scram_proxy.port, "carol", password="carol-pw"),
        "mallory": login_error(scram_proxy.port, "mallory", password="whatever"),
    }
    fields = same_message_for(errors)
    assert fields["S"] == "FATAL"
    assert fields["C"] == "28P01"
    assert fields["M"] == 'password authentication failed for user "USER"'
    with pytest.raises(psycopg.OperationalError, match='password authentication failed for user "alice"'):
        scram_proxy.connect(user="alice", password="wrong")
    # Good logins still work afterwards.
    assert whoami(scram_proxy, "alice", "alice-pw")[0] == "alice"


def test_scram_over_tls(scram_pg, proxy_factory, ca):
    """libpq over TLS sends the GS2 flag "y" (it could bind the channel; the proxy offers no -PLUS)."""
    p = proxy_factory(scram_pg, auth_type="scram-sha-256", users={
        "alice": verifier_of(scram_pg, "alice"), "bob": "bob-pw"},
        proxy={"client_tls_mode": "require", "client_tls_cert_file": str(ca.server_cert),
               "client_tls_key_file": str(ca.server_key)})
    for user in ("alice", "bob"):
        with p.connect(user=user, password=f"{user}-pw", dsn_extra={"sslmode": "require"}) as conn:
            assert conn.pgconn.ssl_in_use
            assert conn.execute("SELECT current_user").fetchone() == (user,)
    with pytest.raises(psycopg.OperationalError, match="password authentication failed"):
        p.connect(user="bob", password="wrong", dsn_extra={"sslmode": "require"})


def test_trust_proxy_without_a_secret_for_the_server(scram_pg, proxy_factory):
    """auth_type = trust, but the server wants a password the auth file does not have."""
    p = proxy_factory(scram_pg, auth_type="trust", users={"bob": "bob-pw"})
    assert whoami(p, "bob", None) == ("bob", "app", 1)
    error = login_error(p.port, "alice")
    assert (error["S"], error["C"]) == ("FATAL", "28000"), error
    assert "alice" in error["M"]


def test_scram_no_password(scram_proxy):
    with pytest.raises(psycopg.OperationalError, match="no password supplied"):
        scram_proxy.connect(user="bob")


# ---- md5 -------------------------------------------------------------------

@pytest.fixture(scope="module")
def md5_pg(module_pg_factory):
    """A cluster whose pg_hba demands md5, its passwords stored as md5 hashes."""
    cluster = module_pg_factory(15, hba="md5", password=SUPER_PW)
    cluster.execute("CREATE DATABASE app")
    cluster.execute("SET password_encryption = 'md5'; "
                    "CREATE ROLE dave LOGIN PASSWORD 'dave-pw'; CREATE ROLE erin LOGIN PASSWORD 'erin-pw'")
    stored = cluster.execute("SELECT rolpassword FROM pg_authid WHERE rolname = 'erin'")[0][0]
    assert stored == md5_secret("erin", "erin-pw")
    return cluster


@pytest.fixture
def md5_proxy(md5_pg, proxy_factory):
    return proxy_factory(md5_pg, auth_type="md5", users={
        "postgres": SUPER_PW,
        "dave": "dave-pw",  # plaintext
        "erin": md5_secret("erin", "erin-pw"),  # md5 hash
    })


def test_md5_plaintext_and_hash(md5_proxy):
    assert whoami(md5_proxy, "dave", "dave-pw") == ("dave", "app", 1)
    assert whoami(md5_proxy, "erin", "erin-pw") == ("erin", "app", 1)
    for user, password in (("dave", "dave-pw"), ("erin", "erin-pw")):
        error, sock, messages = pg_login(md5_proxy.port, user, "app", password)
        assert error is None
        sock.close()
        # The proxy asked for md5 (AuthenticationMD5Password = 5).
        assert any(m[0] == b"R" and m[1][:4] == b"\0\0\0\x05" for m in messages)


def test_md5_wrong_password_and_unknown_user(md5_proxy):
    errors = {
        "dave": login_error(md5_proxy.port, "dave", password="wrong"),
        "erin": login_error(md5_proxy.port, "erin", password="wrong"),
        "mallory": login_error(md5_proxy.port, "mallory", password="whatever"),
    }
    fields = same_message_for(errors)
    assert (fields["S"], fields["C"]) == ("FATAL", "28P01")
    assert fields["M"] == 'password authentication failed for user "USER"'
    assert whoami(md5_proxy, "dave", "dave-pw")[0] == "dave"


# ---- trust -----------------------------------------------------------------

@pytest.fixture(scope="module")
def trust_pg(module_pg_factory):
    cluster = module_pg_factory(15)
    cluster.execute("CREATE DATABASE app")
    cluster.execute("CREATE ROLE frank LOGIN")
    return cluster


def test_trust(trust_pg, proxy_factory):
    p = proxy_factory(trust_pg, auth_type="trust")
    assert whoami(p, "frank", None) == ("frank", "app", 1)
    # No password is asked for: AuthenticationOk straight away.
    error, sock, messages = pg_login(p.port, "frank", "app")
    assert error is None
    sock.close()
    assert [m for m in messages if m[0] == b"R"] == [(b"R", b"\0\0\0\0")]
    # A role the server does not know: the server's own FATAL, passed on.
    error = login_error(p.port, "nobody_here")
    assert error["S"] == "FATAL"
    assert error["C"] == "28000"
    assert 'role "nobody_here" does not exist' in error["M"]


# ---- TLS -------------------------------------------------------------------

@pytest.fixture(scope="module")
def ca(tmp_path_factory, prerequisites):
    need_tool(prerequisites, "openssl", "apt-get install openssl")
    return CertAuthority(tmp_path_factory.mktemp("ca")).make()


@pytest.fixture(scope="module")
def other_ca(tmp_path_factory, prerequisites):
    need_tool(prerequisites, "openssl", "apt-get install openssl")
    return CertAuthority(tmp_path_factory.mktemp("other-ca")).make(cn="some other CA")


def tls_proxy(proxy_factory, cluster, ca, mode):
    return proxy_factory(cluster, proxy={
        "client_tls_mode": mode,
        "client_tls_cert_file": str(ca.server_cert),
        "client_tls_key_file": str(ca.server_key),
    })


def ssl_in_use(conn):
    return conn.pgconn.ssl_in_use


def test_client_tls_require(trust_pg, proxy_factory, ca, other_ca):
    p = tls_proxy(proxy_factory, trust_pg, ca, "require")
    # Plaintext is refused with 28000.
    error = login_error(p.port)
    assert (error["S"], error["C"]) == ("FATAL", "28000"), error
    with pytest.raises(psycopg.OperationalError):
        p.connect(dsn_extra={"sslmode": "disable"})

    with p.connect(dsn_extra={"sslmode": "require"}) as conn:
        assert ssl_in_use(conn)
        assert conn.execute("SELECT current_database()").fetchone() == ("app",)

    full = {"sslmode": "verify-full", "sslrootcert": str(ca.ca_cert), "host": "localhost",
            "hostaddr": "127.0.0.1"}
    with p.connect(dsn_extra=full) as conn:
        assert ssl_in_use(conn)
        assert conn.execute("SELECT 1").fetchone() == (1,)
    out = p.psql(["-Atc", "SELECT 'over tls'"], **full).stdout
    assert out.strip() == "over tls"

    # The certificate is checked for real: the wrong host name, or the wrong CA, fail.
    with pytest.raises(psycopg.OperationalError, match="does not match host name"):
        p.connect(dsn_extra=dict(full, host="not-the-proxy.example"))
    with pytest.raises(psycopg.OperationalError, match="certificate verify failed"):
        p.connect(dsn_extra=dict(full, sslrootcert=str(other_ca.ca_cert)))

    # A CancelRequest comes in plaintext (libpq never encrypts it), and must still work.
    with p.connect(dsn_extra={"sslmode": "require"}) as conn:
        t0 = time.monotonic()
        box = {}
        th = threading.Thread(target=lambda: box.update(r=_run_catch(conn, "SELECT pg_sleep(30)")), daemon=True)
        th.start()
        wait_for(lambda: active_backends(trust_pg, "app", "SELECT pg_sleep(30)%"), 20, "pg_sleep")
        conn.cancel()
        th.join(40)
        assert isinstance(box.get("r"), psycopg.errors.QueryCanceled), box
        assert time.monotonic() - t0 < 10

    # A raw client over TLS, too (SSLRequest, then the handshake, then trust).
    context = ssl.create_default_context(cafile=str(ca.ca_cert))
    error, sock, _ = pg_login(p.port, tls_context=context, server_hostname="localhost")
    assert error is None
    sock.close()


def test_client_tls_allow(trust_pg, proxy_factory, ca):
    p = tls_proxy(proxy_factory, trust_pg, ca, "allow")
    with p.connect(dsn_extra={"sslmode": "disable"}) as conn:
        assert not ssl_in_use(conn)
        assert conn.execute("SELECT 1").fetchone() == (1,)
    with p.connect(dsn_extra={"sslmode": "require"}) as conn:
        assert ssl_in_use(conn)
        assert conn.execute("SELECT 1").fetchone() == (1,)


def test_client_tls_disable(trust_pg, proxy_factory):
    p = proxy_factory(trust_pg)
    with pytest.raises(psycopg.OperationalError, match="does not support SSL"):
        p.connect(dsn_extra={"sslmode": "require"})
    with p.connect(dsn_extra={"sslmode": "prefer"}) as conn:
        assert not ssl_in_use(conn)


def make_tls_cluster(pg_factory, ca):
    """A cluster that accepts only TLS connections over TCP, with ca's server certificate."""
    cluster = pg_factory(15, start=False)
    for src in (ca.server_cert, ca.server_key):
        dst = cluster.base_dir / src.name
        shutil.copy(src, dst)
        if os.geteuid() == 0:
            import pwd
            entry = pwd.getpwnam(SERVER_OS_USER)
            os.chown(dst, entry.pw_uid, entry.pw_gid)
        os.chmod(dst, 0o600 if dst.name.endswith(".key") else 0o644)
    cluster.set(ssl=True, ssl_cert_file=str(cluster.base_dir / ca.server_cert.name),
                ssl_key_file=str(cluster.base_dir / ca.server_key.name))
    (cluster.datadir / "pg_hba.conf").write_text(
        "local    all  all                trust\n"
        "hostssl  all  all  127.0.0.1/32  trust\n")
    cluster.start()
    cluster.execute("CREATE DATABASE app", dbname="postgres")
    return cluster


def test_server_tls_verify_full(pg_factory, proxy_factory, ca):
    cluster = make_tls_cluster(pg_factory, ca)
    p = proxy_factory(cluster, source_extra={"host": "localhost", "sslmode": "verify-full",
                                             "sslrootcert": str(ca.ca_cert)},
                      proxy={"client_tls_mode": "allow", "client_tls_cert_file": str(ca.server_cert),
                             "client_tls_key_file": str(ca.server_key)})
    with p.connect() as conn:
        assert conn.execute("SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()").fetchone() == (True,)
        servers = p.admin_dicts("SHOW SERVERS")
        assert len(servers) == 1
        assert servers[0]["tls"] == "on"
        assert servers[0]["backend_pid"] == str(conn.execute("SELECT pg_backend_pid()").fetchone()[0])

    # TLS on both sides, with tens of megabytes each way.
    with p.connect(dsn_extra={"sslmode": "require"}) as conn:
        assert conn.pgconn.ssl_in_use
        conn.execute("CREATE TABLE tls_t AS SELECT g AS id, repeat(md5(g::text), 8) AS v "
                     "FROM generate_series(1, 100000) g")
        with conn.cursor().copy("COPY tls_t TO STDOUT") as copy:
            data = b"".join(bytes(chunk) for chunk in copy)
        assert len(data) > 25 * 1024 * 1024
        conn.execute("CREATE TABLE tls_t2 (LIKE tls_t)")
        with conn.cursor().copy("COPY tls_t2 FROM STDIN") as copy:
            for i in range(0, len(data), 1 << 20):
                copy.write(data[i:i + (1 << 20)])
        digest = "SELECT count(*), md5(string_agg(v, '' ORDER BY id)) FROM {}"
        assert conn.execute(digest.format("tls_t2")).fetchone() == conn.execute(digest.format("tls_t")).fetchone()
        value = conn.execute("SELECT repeat('y', 50000000)").fetchone()[0]
        assert len(value) == 50_000_000

    # Cancel reaches a TLS server too (the CancelRequest itself is plaintext, as libpq sends it).
    with p.connect() as conn:
        t0 = time.monotonic()
        box = {}
        th = threading.Thread(target=lambda: box.update(r=_run_catch(conn, "SELECT pg_sleep(30)")), daemon=True)
        th.start()
        wait_for(lambda: active_backends(cluster, "app", "SELECT pg_sleep(30)%"), 20, "pg_sleep")
        conn.cancel()
        th.join(40)
        assert isinstance(box.get("r"), psycopg.errors.QueryCanceled), box
        assert time.monotonic() - t0 < 10


def _run_catch(conn, sql):
    try:
        return conn.execute(sql).fetchall()
    except psycopg.Error as e:
        return e


def test_server_tls_wrong_ca(pg_factory, proxy_factory, ca, other_ca):
    cluster = make_tls_cluster(pg_factory, ca)
    p = proxy_factory(cluster, source_extra={"host": "localhost", "sslmode": "verify-full",
                                             "sslrootcert": str(other_ca.ca_cert)})
    error = login_error(p.port)
    assert error["S"] == "FATAL"
    assert error["C"].startswith("08"), error
    assert "TLS" in error["M"] or "certificate" in error["M"], error
    assert p.running()


def test_server_tls_required_but_refused(trust_pg, proxy_factory):
    # trust_pg has ssl off.
    p = proxy_factory(trust_pg, source_extra={"sslmode": "require"})
    error = login_error(p.port)
    assert error["S"] == "FATAL"
    assert error["C"].startswith("08"), error
    assert "refused TLS" in error["M"], error
    p.source_extra = {"sslmode": "prefer"}
    p.stop()
    p.start()
    with p.connect() as conn:
        assert conn.execute("SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()").fetchone() == (False,)
