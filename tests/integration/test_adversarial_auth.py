"""`pghandoff proxy` attacked at login and at the admin console.

- SCRAM for a user the auth file does not list (or lists only with an md5
  hash) must look like SCRAM for a listed one: the same salt length and
  iteration count, the same salt on every attempt, a salt no one can compute
  without the proxy's secret, and the same FATAL at the end.  No login
  derives a key (PBKDF2) on any path, so the work per login is the same too:
  the unit tests (tests/unit/test_scram.c) count the derivations.
- An empty password is a failed login (28P01), never an internal error.
- A user or database name with a newline or control character cannot forge
  a line of the proxy's log.
- The admin console answers messages it does not support (FunctionCall,
  the extended protocol, unknown types) instead of leaving the client waiting.

Everything speaks the wire protocol over raw sockets with a deadline on each
read, because libpq neither sends empty passwords nor shows the SCRAM
messages, and hides the SQLSTATE of a failed login.
"""

import base64
import hashlib
import hmac
import os
import socket
import struct

import psycopg
import pytest

from proxyfixtures import (  # noqa: F401  (fixtures are used by name)
    error_fields, module_pg_factory, proxy_factory, read_message, startup_packet)

SUPER_PW = "super-pw"
READ_DEADLINE = 20  # seconds; a bound on correctness: every answer normally takes milliseconds


def md5_secret(user, password):
    return "md5" + hashlib.md5((password + user).encode()).hexdigest()


def send_message(sock, mtype, payload=b""):
    sock.sendall(mtype + struct.pack("!I", len(payload) + 4) + payload)


def next_message(sock):
    """The next backend message; fails the test on EOF."""
    msg = read_message(sock)
    assert msg is not None, "the proxy closed the connection"
    return msg


def connect_startup(port, user, database="app"):
    sock = socket.create_connection(("127.0.0.1", port), timeout=READ_DEADLINE)
    sock.sendall(startup_packet({"user": user, "database": database}))
    return sock


def auth_request(sock):
    """(code, data) of the next AuthenticationRequest; fails on anything else."""
    mtype, body = next_message(sock)
    assert mtype == b"R", f"expected an authentication request, got {mtype!r}: {error_fields(body)}"
    return struct.unpack("!I", body[:4])[0], body[4:]


def final_error(sock):
    """The ErrorResponse that ends a login, then EOF; fails if anything else comes."""
    mtype, body = next_message(sock)
    assert mtype == b"E", f"expected an ErrorResponse, got {mtype!r} {body!r}"
    assert read_message(sock) is None, "the proxy kept the connection open after a FATAL"
    sock.close()
    return error_fields(body)


# ---- SCRAM -----------------------------------------------------------------

def scram_start(port, user):
    """Start a SCRAM exchange: (sock, client_first_bare, server_first, {attr: value})."""
    sock = connect_startup(port, user)
    code, data = auth_request(sock)
    assert code == 10 and b"SCRAM-SHA-256\0" in data, (code, data)
    nonce = base64.b64encode(os.urandom(18)).decode()
    first_bare = f"n=,r={nonce}"
    first = ("n,," + first_bare).encode()
    send_message(sock, b"p", b"SCRAM-SHA-256\0" + struct.pack("!I", len(first)) + first)
    code, data = auth_request(sock)
    assert code == 11, code
    server_first = data.decode()
    attrs = dict(part.split("=", 1) for part in server_first.split(","))
    assert attrs["r"].startswith(nonce) and len(attrs["r"]) > len(nonce), server_first
    return sock, first_bare, server_first, attrs


def scram_shape(port, user):
    """(salt, iteration count) the proxy advertises to user; the exchange is dropped there."""
    sock, _, _, attrs = scram_start(port, user)
    sock.close()
    return base64.b64decode(attrs["s"]), int(attrs["i"])


def scram_fail(port, user, password):
    """A whole SCRAM exchange with password (which must be wrong): the final error's fields."""
    sock, first_bare, server_first, attrs = scram_start(port, user)
    salted = hashlib.pbkdf2_hmac("sha256", password.encode(), base64.b64decode(attrs["s"]), int(attrs["i"]))
    client_key = hmac.new(salted, b"Client Key", "sha256").digest()
    without_proof = f"c=biws,r={attrs['r']}"
    auth_message = f"{first_bare},{server_first},{without_proof}".encode()
    signature = hmac.new(hashlib.sha256(client_key).digest(), auth_message, "sha256").digest()
    proof = bytes(a ^ b for a, b in zip(client_key, signature))
    send_message(sock, b"p", f"{without_proof},p={base64.b64encode(proof).decode()}".encode())
    return final_error(sock)


@pytest.fixture(scope="module")
def scram_pg(module_pg_factory):
    cluster = module_pg_factory(15, hba="scram-sha-256", password=SUPER_PW)
    cluster.execute("CREATE DATABASE app")
    cluster.execute("SET password_encryption = 'scram-sha-256'; "
                    "CREATE ROLE alice LOGIN PASSWORD 'alice-pw'; CREATE ROLE bob LOGIN PASSWORD 'bob-pw'")
    return cluster


def scram_users(cluster):
    alice = cluster.execute("SELECT rolpassword FROM pg_authid WHERE rolname = 'alice'")[0][0]
    assert alice.startswith("SCRAM-SHA-256$4096:"), alice
    return {
        "postgres": SUPER_PW,
        "alice": alice,  # a SCRAM verifier, as PostgreSQL makes it
        "bob": "bob-pw",  # plaintext
        "carol": md5_secret("carol", "carol-pw"),  # md5: cannot do SCRAM, so a mock exchange
        "nopw": "",  # an empty plaintext password: can never log in
    }


@pytest.fixture
def scram_proxy(scram_pg, proxy_factory):
    return proxy_factory(scram_pg, auth_type="scram-sha-256", users=scram_users(scram_pg))


def test_scram_unknown_user_looks_like_a_known_one(scram_proxy):
    alice_salt, alice_iterations = scram_shape(scram_proxy.port, "alice")
    assert (len(alice_salt), alice_iterations) == (16, 4096)
    shapes = {}
    for user in ("alice", "bob", "carol", "nopw", "mallory", "trudy"):
        first = scram_shape(scram_proxy.port, user)
        again = scram_shape(scram_proxy.port, user)
        # A real user's salt is the same on every attempt: so is everyone's.
        assert first == again, f"{user}: the salt changed between two attempts"
        salt, iterations = first
        assert len(salt) == len(alice_salt), f"{user}: salt of {len(salt)} bytes"
        assert iterations == alice_iterations, f"{user}: {iterations} iterations"
        shapes[user] = salt
    # Every name has a salt of its own.
    assert len(set(shapes.values())) == len(shapes), shapes
    # A reload keeps them: the secret is the process's, drawn once.
    scram_proxy.reload()
    scram_proxy.wait_log("configuration reloaded")
    for user in ("bob", "mallory"):
        assert scram_shape(scram_proxy.port, user)[0] == shapes[user], user


def test_scram_mock_salt_needs_the_proxy_secret(scram_pg, proxy_factory):
    """Two proxies: the real verifier's salt stays, an unknown user's is another; a restart keeps both.

    A salt derived from the name alone (or with a secret every installation
    shares) would let anyone compute it offline and so tell unknown users
    from real ones.
    """
    users = scram_users(scram_pg)
    first = proxy_factory(scram_pg, auth_type="scram-sha-256", users=users)
    second = proxy_factory(scram_pg, auth_type="scram-sha-256", users=users)
    assert scram_shape(first.port, "alice") == scram_shape(second.port, "alice")
    assert scram_shape(first.port, "mallory")[0] != scram_shape(second.port, "mallory")[0]
    # A restart keeps the secret (beside the state file, owner-only): unknown and
    # plaintext users keep their salts, as a verifier's salt stays.
    before = {user: scram_shape(first.port, user) for user in ("mallory", "bob")}
    first.stop()
    first.start()
    assert {user: scram_shape(first.port, user) for user in ("mallory", "bob")} == before
    secret = first.workdir / "pghandoff.state-secret"
    assert secret.stat().st_mode & 0o777 == 0o600
    for user in ("mallory", "trudy"):
        salt = scram_shape(first.port, user)[0]
        for secret in (b"", b"pghandoff"):
            assert salt != hashlib.sha256(user.encode() + secret).digest()[:16]


def test_scram_failures_are_identical(scram_proxy):
    errors = {user: scram_fail(scram_proxy.port, user, "wrong-pw")
              for user in ("alice", "bob", "carol", "nopw", "mallory")}
    # carol's real password cannot get her in over SCRAM: the auth file has only its md5 hash.
    errors["carol-right"] = scram_fail(scram_proxy.port, "carol", "carol-pw")
    for user, fields in errors.items():
        name = user.split("-")[0]
        assert fields == {"S": "FATAL", "V": "FATAL", "C": "28P01",
                          "M": f'password authentication failed for user "{name}"'}, user
    # And the real users still log in.
    with scram_proxy.connect(user="alice", password="alice-pw") as conn:
        assert conn.execute("SELECT current_user").fetchone() == ("alice",)
    with scram_proxy.connect(user="bob", password="bob-pw") as conn:
        assert conn.execute("SELECT current_user").fetchone() == ("bob",)


# ---- empty passwords -------------------------------------------------------

@pytest.mark.parametrize("user", ["bob", "nopw", "mallory"])
def test_scram_empty_password(scram_proxy, user):
    # A client that computes its proof from an empty password.
    assert scram_fail(scram_proxy.port, user, "")["C"] == "28P01"
    # An empty PasswordMessage instead of SASLInitialResponse, and instead of the client-final-message.
    for payload in (b"", b"\0"):
        sock = connect_startup(scram_proxy.port, user)
        assert auth_request(sock)[0] == 10
        send_message(sock, b"p", payload)
        fields = final_error(sock)
        assert (fields["S"], fields["C"]) == ("FATAL", "28P01"), fields
        assert fields["M"] == f'password authentication failed for user "{user}"'

        sock = scram_start(scram_proxy.port, user)[0]
        send_message(sock, b"p", payload)
        fields = final_error(sock)
        assert (fields["S"], fields["C"]) == ("FATAL", "28P01"), fields
    # libpq never sends an empty password: it gives up on its own side.
    with pytest.raises(psycopg.OperationalError, match="no password supplied"):
        scram_proxy.connect(user=user, password="")
    result = scram_proxy.psql(["-w", "-c", "SELECT 1"], user=user, password="", check=False)
    assert result.returncode != 0
    assert "XX000" not in result.stderr and "could not start" not in result.stderr, result.stderr


@pytest.fixture(scope="module")
def md5_pg(module_pg_factory):
    cluster = module_pg_factory(15, hba="md5", password=SUPER_PW)
    cluster.execute("CREATE DATABASE app")
    cluster.execute("SET password_encryption = 'md5'; CREATE ROLE dave LOGIN PASSWORD 'dave-pw'")
    return cluster


@pytest.fixture
def md5_proxy(md5_pg, proxy_factory):
    return proxy_factory(md5_pg, auth_type="md5", users={
        "postgres": SUPER_PW,
        "dave": "dave-pw",
        "erin": md5_secret("erin", "erin-pw"),
        "nopw": "",
        "alice": "SCRAM-SHA-256$4096:" + base64.b64encode(b"s" * 16).decode() + "$"
                 + base64.b64encode(b"k" * 32).decode() + ":" + base64.b64encode(b"K" * 32).decode(),
    })


@pytest.mark.parametrize("user", ["dave", "erin", "nopw", "alice", "mallory"])
def test_md5_empty_and_wrong_passwords(md5_proxy, user):
    for payload in (b"", b"\0", None, "wrong"):
        sock = connect_startup(md5_proxy.port, user)
        code, salt = auth_request(sock)
        assert code == 5
        if payload is None or isinstance(payload, str):
            # The md5 response a client computes from an empty (or a wrong) password.
            password = payload or ""
            inner = hashlib.md5((password + user).encode()).hexdigest()
            payload = b"md5" + hashlib.md5(inner.encode() + salt).hexdigest().encode() + b"\0"
        send_message(sock, b"p", payload)
        fields = final_error(sock)
        assert fields == {"S": "FATAL", "V": "FATAL", "C": "28P01",
                          "M": f'password authentication failed for user "{user}"'}, (user, payload)
    with pytest.raises(psycopg.OperationalError, match="no password supplied"):
        md5_proxy.connect(user=user, password="")
    with md5_proxy.connect(user="dave", password="dave-pw") as conn:
        assert conn.execute("SELECT current_user").fetchone() == ("dave",)


# ---- log lines -------------------------------------------------------------

@pytest.fixture(scope="module")
def trust_pg(module_pg_factory):
    cluster = module_pg_factory(15)
    cluster.execute("CREATE DATABASE app")
    return cluster


FORGED = "LOG: forged"


def test_names_cannot_forge_log_lines(trust_pg, proxy_factory):
    proxy = proxy_factory(trust_pg, proxy={"auth_type": "trust"})
    names = [("x\n" + FORGED, "app"), ("x\r" + FORGED, "app"), ("postgres", "app\n" + FORGED),
             ("y\x01\x1b[2J\x7f", "app")]
    for user, database in names:
        fields = final_error(connect_startup(proxy.port, user, database))
        assert fields["S"] == "FATAL", fields
    # Through libpq too: keyword parameters carry the newline as it is.
    with pytest.raises(psycopg.OperationalError):
        proxy.connect(user="z\n" + FORGED)
    proxy.wait_log(r"z\\n" + FORGED)

    text = proxy.log()
    assert "x\\n" + FORGED in text, text  # the attempts were logged, escaped
    assert "x\\r" + FORGED in text, text
    assert "app\\n" + FORGED in text, text
    assert "y\\x01\\x1b[2J\\x7f" in text, text
    for line in text.split("\n"):
        assert not line.startswith(FORGED), f"forged log line: {line!r}"
        assert not any(c in line for c in "\r\x01\x1b\x7f"), f"raw control character: {line!r}"


# ---- the admin console -----------------------------------------------------

def admin_login(port):
    sock = connect_startup(port, "postgres", "pghandoff")
    while True:
        mtype, body = next_message(sock)
        assert mtype != b"E", error_fields(body)
        if mtype == b"Z":
            return sock


def admin_answer(sock):
    """Messages up to and including the next ReadyForQuery."""
    messages = []
    while True:
        msg = next_message(sock)
        messages.append(msg)
        if msg[0] == b"Z":
            return messages


def assert_refused(messages, sqlstates=("0A000", "08P01")):
    assert [m[0] for m in messages] == [b"E", b"Z"], messages
    fields = error_fields(messages[0][1])
    assert fields["S"] == "ERROR" and fields["C"] in sqlstates, fields
    return fields


def assert_alive(sock):
    send_message(sock, b"Q", b"SHOW VERSION\0")
    answer = admin_answer(sock)
    assert [m[0] for m in answer] == [b"T", b"D", b"C", b"Z"], answer


def test_admin_console_answers_what_it_does_not_support(trust_pg, proxy_factory):
    proxy = proxy_factory(trust_pg)
    sock = admin_login(proxy.port)

    # FunctionCall: function OID, no argument formats, no arguments, text result.
    send_message(sock, b"F", struct.pack("!Ihhh", 1598, 0, 0, 0))
    assert_refused(admin_answer(sock))
    assert_alive(sock)

    # The extended protocol: the error comes at once (a Flush must not wait for a Sync)...
    send_message(sock, b"P", b"\0SHOW VERSION\0\0\0")
    send_message(sock, b"H")
    mtype, body = next_message(sock)
    assert mtype == b"E" and error_fields(body)["C"] == "0A000", (mtype, body)
    # ...the rest up to the Sync is skipped, and the Sync ends it with ReadyForQuery alone.
    send_message(sock, b"B", b"\0\0" + struct.pack("!hhh", 0, 0, 0))
    send_message(sock, b"E", b"\0" + struct.pack("!I", 0))
    send_message(sock, b"S")
    assert [m[0] for m in admin_answer(sock)] == [b"Z"]
    assert_alive(sock)

    # A lone Sync: ReadyForQuery, as a server answers it.
    send_message(sock, b"S")
    assert [m[0] for m in admin_answer(sock)] == [b"Z"]
    assert_alive(sock)

    # A type no frontend sends: a protocol violation, and the session ends.
    send_message(sock, b"?", b"junk")
    fields = final_error(sock)
    assert (fields["S"], fields["C"]) == ("FATAL", "08P01"), fields

    # psycopg's prepared statements still get their FeatureNotSupported.
    with proxy.connect("pghandoff") as admin:
        with pytest.raises(psycopg.errors.FeatureNotSupported):
            admin.execute("SHOW VERSION", prepare=True)
        assert admin.execute("SHOW VERSION").fetchone()[0].startswith("pghandoff ")
