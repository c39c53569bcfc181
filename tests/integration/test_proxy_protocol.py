"""Protocol versions through the proxy, on a raw socket.

3.2 differs from 3.0 only in the length of the cancel key, which the proxy
issues itself: a 3.2 client gets a 32-byte key (and no
NegotiateProtocolVersion), a newer minor is negotiated down to 3.2, and
_pq_ options are declined by name.  The long key must cancel a running query.
"""

import struct
import threading
import time

from proxyfixtures import (  # noqa: F401
    module_pg_factory, proxy_factory, read_message, startup_packet, wait_for, error_fields)


def login(port, code, extra=None):
    import socket

    sock = socket.create_connection(("127.0.0.1", port), timeout=20)
    params = {"user": "postgres", "database": "app"}
    params.update(extra or {})
    sock.sendall(startup_packet(params, code=code))
    messages = []
    while True:
        msg = read_message(sock)
        assert msg is not None, f"closed during login after {messages!r}"
        messages.append(msg)
        assert msg[0] != b"E", error_fields(msg[1])
        if msg[0] == b"Z":
            return sock, messages


def query(sock, sql):
    payload = sql.encode() + b"\0"
    sock.sendall(b"Q" + struct.pack("!I", len(payload) + 4) + payload)
    out = []
    while True:
        msg = read_message(sock)
        assert msg is not None
        out.append(msg)
        if msg[0] == b"Z":
            return out


def test_protocol_versions(module_pg_factory, proxy_factory):
    source = module_pg_factory(15)
    source.execute("CREATE DATABASE app")
    proxy = proxy_factory(source)

    sock30, msgs = login(proxy.port, 3 << 16)
    keys = [body for t, body in msgs if t == b"K"]
    assert [len(k) for k in keys] == [8]          # pid + 4-byte key
    assert not [m for m in msgs if m[0] == b"v"]

    sock32, msgs = login(proxy.port, (3 << 16) | 2)
    keys = [body for t, body in msgs if t == b"K"]
    assert [len(k) for k in keys] == [4 + 32]     # pid + 32-byte key
    assert not [m for m in msgs if m[0] == b"v"]
    rows = [body for t, body in query(sock32, "SELECT 41 + 1") if t == b"D"]
    assert rows and rows[0].endswith(b"42")

    sock39, msgs = login(proxy.port, (3 << 16) | 9, {"_pq_.made_up": "1"})
    nego = [body for t, body in msgs if t == b"v"]
    assert len(nego) == 1
    newest, count = struct.unpack("!II", nego[0][:8])
    assert newest == (3 << 16) | 2 and count == 1
    assert nego[0][8:].rstrip(b"\0") == b"_pq_.made_up"
    for s in (sock30, sock32, sock39):
        s.close()


def test_cancel_with_a_3_2_key(module_pg_factory, proxy_factory):
    import socket

    source = module_pg_factory(15)
    source.execute("CREATE DATABASE app")
    proxy = proxy_factory(source)
    sock, msgs = login(proxy.port, (3 << 16) | 2)
    key = [body for t, body in msgs if t == b"K"][0]
    pid, secret = struct.unpack("!I", key[:4])[0], key[4:]

    result = {}

    def run():
        started = time.monotonic()
        result["messages"] = query(sock, "SELECT pg_sleep(30)")
        result["seconds"] = time.monotonic() - started

    worker = threading.Thread(target=run)
    worker.start()
    wait_for(lambda: source.execute(
        "SELECT count(*) FROM pg_stat_activity WHERE query = 'SELECT pg_sleep(30)' AND state = 'active'",
        dbname="app")[0][0] == 1, what="the query to run")

    # A wrong key of the right length is ignored...
    wrong = bytes(b ^ 0xFF for b in secret)
    with socket.create_connection(("127.0.0.1", proxy.port)) as c:
        c.sendall(struct.pack("!III", 12 + len(wrong), 80877102, pid) + wrong)
        assert c.recv(1) == b""
    # ...and the right one cancels.
    with socket.create_connection(("127.0.0.1", proxy.port)) as c:
        c.sendall(struct.pack("!III", 12 + len(secret), 80877102, pid) + secret)
        assert c.recv(1) == b""
    worker.join(20)
    assert not worker.is_alive()
    errors = [error_fields(body) for t, body in result["messages"] if t == b"E"]
    assert [e["C"] for e in errors] == ["57014"]
    assert result["seconds"] < 20
    sock.close()
