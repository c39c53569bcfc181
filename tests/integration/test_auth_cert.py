"""`pghandoff proxy` with auth_type = cert: client certificates checked against client_tls_ca_file.

A test CA (proxyfixtures.CertAuthority, the openssl CLI) signs the proxy's
certificate and the clients'; a second CA signs a certificate the proxy must
refuse.  The user is the certificate's common name.  Refusals are read over a
raw socket (proxyfixtures.pg_login) for their SQLSTATE; psycopg and psql are
the clients that log in.
"""

import os
import ssl

import psycopg
import pytest

from proxyfixtures import CertAuthority, login_error, module_pg_factory, pg_login, proxy_factory  # noqa: F401


def client_cert(ca, cn, name=None):
    """A client certificate for cn signed by ca; (cert path, key path)."""
    name = name or cn
    key, csr, crt = ca.dir / f"{name}.key", ca.dir / f"{name}.csr", ca.dir / f"{name}.crt"
    ext = ca.dir / "client.ext"
    ext.write_text("basicConstraints = CA:FALSE\nkeyUsage = digitalSignature, keyEncipherment\n"
                   "extendedKeyUsage = clientAuth\n")
    ca._openssl("req", "-new", "-nodes", "-newkey", "rsa:2048", "-subj", f"/CN={cn}", "-keyout", str(key),
                "-out", str(csr))
    ca._openssl("x509", "-req", "-in", str(csr), "-CA", str(ca.ca_cert), "-CAkey", str(ca.ca_key),
                "-CAcreateserial", "-days", "2", "-extfile", str(ext), "-out", str(crt))
    os.chmod(key, 0o600)
    return crt, key


@pytest.fixture(scope="module")
def cert_pg(module_pg_factory):
    cluster = module_pg_factory(15)
    cluster.execute("CREATE DATABASE app")
    cluster.execute("CREATE ROLE alice LOGIN; CREATE ROLE bob LOGIN")
    return cluster


@pytest.fixture(scope="module")
def cas(tmp_path_factory):
    """The proxy's CA, and another one."""
    return (CertAuthority(tmp_path_factory.mktemp("ca")).make(),
            CertAuthority(tmp_path_factory.mktemp("other-ca")).make(cn="another CA"))


def cert_proxy(proxy_factory, cluster, ca, tls_mode="require", **options):
    return proxy_factory(cluster, auth_type="cert", proxy={
        "client_tls_mode": tls_mode, "client_tls_cert_file": str(ca.server_cert),
        "client_tls_key_file": str(ca.server_key), "client_tls_ca_file": str(ca.ca_cert), **options})


def tls_context(cert=None, key=None):
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    if cert:
        ctx.load_cert_chain(str(cert), str(key))
    return ctx


def with_cert(cert, key):
    return {"sslmode": "require", "sslcert": str(cert), "sslkey": str(key)}


def test_signed_certificate_logs_in(cert_pg, cas, proxy_factory):
    ca, _ = cas
    proxy = cert_proxy(proxy_factory, cert_pg, ca)
    cert, key = client_cert(ca, "alice")
    with proxy.connect(user="alice", dsn_extra=with_cert(cert, key)) as conn:
        assert conn.pgconn.ssl_in_use
        assert conn.execute("SELECT current_user").fetchone() == ("alice",)
    out = proxy.psql(["-Atc", "SELECT current_user"], user="alice", sslmode="require", sslcert=str(cert),
                     sslkey=str(key)).stdout
    assert out.strip() == "alice"
    error, sock, _ = pg_login(proxy.port, "alice", tls_context=tls_context(cert, key))
    assert error is None, error
    sock.close()


def test_certificate_of_another_user(cert_pg, cas, proxy_factory):
    ca, _ = cas
    proxy = cert_proxy(proxy_factory, cert_pg, ca)
    cert, key = client_cert(ca, "alice", name="alice-for-bob")
    error = login_error(proxy.port, "bob", tls_context=tls_context(cert, key))
    assert (error["S"], error["C"], error["M"]) == (
        "FATAL", "28000", 'certificate authentication failed for user "bob"'), error
    assert 'the certificate\'s common name "alice" is not the user' in proxy.log()
    with pytest.raises(psycopg.OperationalError, match='certificate authentication failed for user "bob"'):
        proxy.connect(user="bob", dsn_extra=with_cert(cert, key))


def test_certificate_not_signed_by_the_ca(cert_pg, cas, proxy_factory):
    ca, other = cas
    proxy = cert_proxy(proxy_factory, cert_pg, ca)
    cert, key = client_cert(other, "alice", name="alice-other")
    error = login_error(proxy.port, "alice", tls_context=tls_context(cert, key))
    assert (error["S"], error["C"], error["M"]) == (
        "FATAL", "28000", 'certificate authentication failed for user "alice"'), error
    assert "client certificate not accepted" in proxy.log()
    with pytest.raises(psycopg.OperationalError, match='certificate authentication failed for user "alice"'):
        proxy.connect(user="alice", dsn_extra=with_cert(cert, key))
    # A certificate signed by itself is no better.
    selfsigned, selfkey = other.ca_cert, other.ca_key
    os.chmod(selfkey, 0o600)
    error = login_error(proxy.port, "another CA", tls_context=tls_context(selfsigned, selfkey))
    assert error["C"] == "28000", error


def test_no_certificate(cert_pg, cas, proxy_factory):
    ca, _ = cas
    proxy = cert_proxy(proxy_factory, cert_pg, ca)
    error = login_error(proxy.port, "alice", tls_context=tls_context())
    assert (error["C"], error["M"]) == ("28000", "connection requires a valid client certificate"), error
    with pytest.raises(psycopg.OperationalError, match="connection requires a valid client certificate"):
        proxy.connect(user="alice", dsn_extra={"sslmode": "require"})


def test_without_tls(cert_pg, cas, proxy_factory):
    """client_tls_mode = allow lets a client in without TLS; auth_type = cert still refuses it."""
    ca, _ = cas
    proxy = cert_proxy(proxy_factory, cert_pg, ca, tls_mode="allow")
    error = login_error(proxy.port, "alice")
    assert (error["C"], error["M"]) == ("28000", "connection requires a valid client certificate"), error
    cert, key = client_cert(ca, "alice", name="alice-allow")
    with proxy.connect(user="alice", dsn_extra=with_cert(cert, key)) as conn:
        assert conn.execute("SELECT current_user").fetchone() == ("alice",)


@pytest.mark.parametrize("options, message", [
    ({"client_tls_ca_file": ""}, "auth_type = cert needs client_tls_ca_file"),
    ({"client_tls_mode": "disable"}, "auth_type = cert needs TLS"),
])
def test_config_needs_tls_and_a_ca(cert_pg, cas, proxy_factory, options, message):
    ca, _ = cas
    proxy = proxy_factory(cert_pg, start=False, auth_type="cert", proxy={
        "client_tls_mode": "require", "client_tls_cert_file": str(ca.server_cert),
        "client_tls_key_file": str(ca.server_key), "client_tls_ca_file": str(ca.ca_cert), **options})
    with pytest.raises(AssertionError, match=r"pghandoff\.ini:\d+: " + message):
        proxy.start()
    assert proxy.proc.returncode == 2
    proxy.check_log()
    proxy.proc = None  # its exit was the point


def test_ca_file_unreadable(cert_pg, cas, proxy_factory, tmp_path):
    ca, _ = cas
    bogus = tmp_path / "not-a-ca.pem"
    bogus.write_text("not a certificate\n")
    proxy = proxy_factory(cert_pg, start=False, auth_type="cert", proxy={
        "client_tls_mode": "require", "client_tls_cert_file": str(ca.server_cert),
        "client_tls_key_file": str(ca.server_key), "client_tls_ca_file": str(bogus)})
    with pytest.raises(AssertionError, match="could not load client_tls_ca_file"):
        proxy.start()
    assert proxy.proc.returncode != 0
    proxy.check_log()
    proxy.proc = None  # its exit was the point
