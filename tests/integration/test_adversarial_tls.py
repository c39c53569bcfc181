"""Bytes that arrive together with an encryption request, on both sides of the proxy.

An SSLRequest or a GSSENCRequest must be the last thing a client writes before
it reads the answer.  After an 'S' the connection is read through TLS, so
whatever arrived with the request was never encrypted and may come from a man
in the middle (the class of PostgreSQL's CVE-2021-23214): a startup packet
slipped in before the handshake would log in whoever the attacker chose, on a
proxy with client_tls_mode = require.  The proxy must never read such bytes and
must fail the connection with 08P01, as PostgreSQL does.  The same holds for a
server whose answer to the proxy's own SSLRequest comes with bytes after it
(CVE-2021-23222): the server-side tests point the proxy at a small hostile
listener that answers that way.
"""

import socket
import ssl
import struct
import threading

import pytest

from proxyfixtures import (  # noqa: F401  (fixtures are used by name)
    CertAuthority, error_fields, login_error, module_pg_factory, need_tool, pg_login, proxy_factory,
    read_message, recv_exact, startup_packet)

SSL_REQUEST = struct.pack("!II", 8, 80877103)
GSSENC_REQUEST = struct.pack("!II", 8, 80877104)
INJECTED_USER = "mallory"

UNENCRYPTED_AFTER_SSL = "received unencrypted data after SSL request"
UNENCRYPTED_AFTER_GSS = "received unencrypted data after GSSAPI encryption request"


@pytest.fixture(scope="module")
def ca(tmp_path_factory, prerequisites):
    need_tool(prerequisites, "openssl", "apt-get install openssl")
    return CertAuthority(tmp_path_factory.mktemp("ca")).make()


@pytest.fixture(scope="module")
def cluster(module_pg_factory):
    """Trust authentication, and a role an attacker would like to be."""
    c = module_pg_factory(15)
    c.execute("CREATE DATABASE app")
    c.execute(f"CREATE ROLE {INJECTED_USER} LOGIN")
    return c


def tls_proxy(proxy_factory, cluster, ca, mode):
    return proxy_factory(cluster, proxy={
        "client_tls_mode": mode,
        "client_tls_cert_file": str(ca.server_cert),
        "client_tls_key_file": str(ca.server_key),
    })


def injected_startup():
    return startup_packet({"user": INJECTED_USER, "database": "app"})


def read_to_end(sock, timeout=20.0):
    """Messages until the proxy closes, or until a ReadyForQuery (a login went through)."""
    sock.settimeout(timeout)
    messages = []
    while True:
        try:
            msg = read_message(sock)
        except socket.timeout:
            pytest.fail(f"the proxy kept the connection open for {timeout} s; got {messages!r}")
        except OSError:  # a TLS connection closed without close_notify, or reset
            return messages
        if msg is None:
            return messages
        messages.append(msg)
        if msg[0] == b"Z":
            return messages


def sessions_of(cluster, user):
    return cluster.execute("SELECT count(*) FROM pg_stat_activity WHERE usename = %s", params=(user,))[0][0]


def assert_refused(messages, message):
    """Nothing but one FATAL 08P01 with message: no authentication, no session."""
    summary = [(kind, error_fields(body) if kind == b"E" else body) for kind, body in messages]
    assert [kind for kind, _ in messages] == [b"E"], summary
    fields = error_fields(messages[0][1])
    assert (fields["S"], fields["C"], fields["M"]) == ("FATAL", "08P01", message), fields
    assert "man-in-the-middle" in fields.get("D", ""), fields


# ---- clients ---------------------------------------------------------------

@pytest.mark.parametrize("gss_first", [False, True], ids=["ssl", "gssenc-declined-then-ssl"])
def test_startup_sent_with_sslrequest_is_not_read_through_tls(cluster, proxy_factory, ca, gss_first):
    """SSLRequest and a plaintext startup packet in one write, then a real handshake: refused
    over TLS once the handshake is done, and the injected user never reaches the server."""
    p = tls_proxy(proxy_factory, cluster, ca, "require")
    context = ssl.create_default_context(cafile=str(ca.ca_cert))
    raw = socket.create_connection(("127.0.0.1", p.port), timeout=20)
    with raw:
        if gss_first:
            # libpq's order with gssencmode=prefer: GSSENC alone, declined, then SSL.
            raw.sendall(GSSENC_REQUEST)
            assert recv_exact(raw, 1) == b"N"
        raw.sendall(SSL_REQUEST + injected_startup())
        assert recv_exact(raw, 1) == b"S"
        tls = context.wrap_socket(raw, server_hostname="localhost")
        with tls:
            try:
                # The victim's own startup packet, as a client sends it after the handshake.
                tls.sendall(startup_packet({"user": "postgres", "database": "app"}))
            except OSError:
                pass  # already refused and closed: what the messages below show
            messages = read_to_end(tls)
            assert sessions_of(cluster, INJECTED_USER) == 0
    assert_refused(messages, UNENCRYPTED_AFTER_SSL)
    p.wait_log(UNENCRYPTED_AFTER_SSL)
    assert p.running()


@pytest.mark.parametrize("case", ["gssenc", "ssl-declined", "gssenc-declined-then-ssl-declined"])
def test_startup_sent_with_a_declined_request_is_refused(cluster, proxy_factory, ca, case):
    """The same with an 'N' answer: the bytes that came with the request fail the connection
    in plaintext, right after the answer."""
    if case == "gssenc":
        p = tls_proxy(proxy_factory, cluster, ca, "allow")
        first, request, expected = b"", GSSENC_REQUEST, UNENCRYPTED_AFTER_GSS
    elif case == "ssl-declined":
        p = proxy_factory(cluster)  # no TLS: SSLRequest is answered 'N'
        first, request, expected = b"", SSL_REQUEST, UNENCRYPTED_AFTER_SSL
    else:
        p = proxy_factory(cluster)
        first, request, expected = GSSENC_REQUEST, SSL_REQUEST, UNENCRYPTED_AFTER_SSL
    with socket.create_connection(("127.0.0.1", p.port), timeout=20) as s:
        if first:
            s.sendall(first)
            assert recv_exact(s, 1) == b"N"
        s.sendall(request + injected_startup())
        assert recv_exact(s, 1) == b"N"
        messages = read_to_end(s)
        assert sessions_of(cluster, INJECTED_USER) == 0
    assert_refused(messages, expected)
    assert p.running()


def test_negotiation_done_properly_still_logs_in(cluster, proxy_factory, ca):
    """The control: each request alone, then the startup packet, in every order libpq uses."""
    p = tls_proxy(proxy_factory, cluster, ca, "require")
    context = ssl.create_default_context(cafile=str(ca.ca_cert))
    error, sock, _ = pg_login(p.port, user=INJECTED_USER, tls_context=context, server_hostname="localhost")
    assert error is None, error
    assert sessions_of(cluster, INJECTED_USER) == 1
    sock.close()

    with socket.create_connection(("127.0.0.1", p.port), timeout=20) as raw:
        raw.sendall(GSSENC_REQUEST)
        assert recv_exact(raw, 1) == b"N"
        raw.sendall(SSL_REQUEST)
        assert recv_exact(raw, 1) == b"S"
        with context.wrap_socket(raw, server_hostname="localhost") as tls:
            tls.sendall(startup_packet({"user": "postgres", "database": "app"}))
            kinds = [kind for kind, _ in read_to_end(tls)]
            assert kinds[0] == b"R" and kinds[-1] == b"Z", kinds

    with p.connect(dsn_extra={"sslmode": "require", "gssencmode": "prefer"}) as conn:
        assert conn.pgconn.ssl_in_use
        assert conn.execute("SELECT current_user").fetchone() == ("postgres",)
    out = p.psql(["-Atc", "SELECT 'over tls'"], sslmode="verify-full", sslrootcert=str(ca.ca_cert),
                 host="localhost", hostaddr="127.0.0.1").stdout
    assert out.strip() == "over tls"


def test_a_second_sslrequest_is_a_protocol_violation(cluster, proxy_factory, ca):
    """Encryption is negotiated once: an SSLRequest inside TLS, or after an 'N', is refused."""
    p = tls_proxy(proxy_factory, cluster, ca, "require")
    context = ssl.create_default_context(cafile=str(ca.ca_cert))
    with socket.create_connection(("127.0.0.1", p.port), timeout=20) as raw:
        raw.sendall(SSL_REQUEST)
        assert recv_exact(raw, 1) == b"S"
        with context.wrap_socket(raw, server_hostname="localhost") as tls:
            tls.sendall(SSL_REQUEST)
            messages = read_to_end(tls)
    assert [kind for kind, _ in messages] == [b"E"], messages
    fields = error_fields(messages[0][1])
    assert (fields["S"], fields["C"], fields["M"]) == ("FATAL", "08P01", "unexpected SSL request"), fields

    plain = proxy_factory(cluster)
    with socket.create_connection(("127.0.0.1", plain.port), timeout=20) as s:
        s.sendall(SSL_REQUEST)
        assert recv_exact(s, 1) == b"N"
        s.sendall(SSL_REQUEST)
        messages = read_to_end(s)
    assert [kind for kind, _ in messages] == [b"E"], messages
    assert error_fields(messages[0][1])["C"] == "08P01"


# ---- servers ---------------------------------------------------------------

class HostileServer:
    """A listener standing where the source cluster should be: it reads the proxy's SSLRequest,
    answers with `answer` in one write, then records whatever the proxy sends until it closes."""

    superuser = "postgres"
    password = None

    def __init__(self, answer):
        self.answer = answer
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.request = None
        self.after_answer = b""
        self.error = None
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self):
        try:
            self.listener.settimeout(60)
            conn, _ = self.listener.accept()
            with conn:
                conn.settimeout(30)
                self.request = recv_exact(conn, 8)
                conn.sendall(self.answer)
                while True:
                    try:
                        chunk = conn.recv(4096)
                    except ConnectionResetError:
                        break
                    if not chunk:
                        break
                    self.after_answer += chunk
        except Exception as e:  # reported by finish()
            self.error = e

    def finish(self):
        self.thread.join(60)
        assert not self.thread.is_alive(), "the proxy kept its connection to the hostile server open"
        self.listener.close()
        assert self.error is None, self.error


AUTH_OK = b"R" + struct.pack("!II", 8, 0)
READY = b"Z" + struct.pack("!I", 5) + b"I"


@pytest.mark.parametrize("answer,sslmode", [
    (b"S" + AUTH_OK + READY, "require"),
    (b"N" + AUTH_OK + READY, "prefer"),
], ids=["tls-answer", "plaintext-answer"])
def test_server_answer_with_bytes_after_it(proxy_factory, answer, sslmode):
    """Bytes after the server's 'S' (or 'N') are refused: no handshake, no startup packet, and
    the client hears why."""
    server = HostileServer(answer)
    p = proxy_factory(server, source_extra={"sslmode": sslmode})
    error = login_error(p.port)
    server.finish()
    assert server.request == SSL_REQUEST
    assert server.after_answer == b"", f"the proxy went on after the answer: {server.after_answer[:64]!r}"
    assert error["S"] == "FATAL" and error["C"] == "08P01", error
    assert "received unencrypted data after SSL response" in error["M"], error
    p.wait_log(r"received unencrypted data after SSL response \(source cluster\)")
    assert p.running()
