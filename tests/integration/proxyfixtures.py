"""Fixtures and helpers for the proxy's integration tests (test_proxy*.py).

`pghandoff proxy` runs as a subprocess on a free port, with a generated
config and auth file, in front of real clusters.  Test modules import the
fixtures they use by name:

    from proxyfixtures import proxy_factory, module_pg_factory  # noqa: F401

- proxy_factory(cluster, **options) -> ProxyProcess, started and accepting
  connections; at teardown it is stopped with SIGINT and its log is checked
  for sanitizer reports (the suite also runs against an ASan/UBSan build).
- module_pg_factory(major, **Cluster kwargs) -> Cluster, like pg_factory but
  shared by the tests of one module, for clusters the tests do not disturb.

The rest are plain helpers: raw wire-protocol sockets, psql/pgbench runners,
a test certificate authority made with the openssl CLI, and polling.
"""

import os
import re
import resource
import select
import shutil
import signal
import socket
import struct
import subprocess
import time
from pathlib import Path

import pytest

from pgcluster import REPO_ROOT, SYSTEM_PSQL, Cluster, conninfo, free_port

# Text that a sanitized build prints when it finds a bug.
SANITIZER_MARKERS = ("AddressSanitizer", "LeakSanitizer", "runtime error", "ThreadSanitizer")

PGBENCH = "/usr/bin/pgbench"


# ---- polling ---------------------------------------------------------------

def wait_for(condition, timeout=30.0, what="condition", interval=0.02):
    """Poll condition() until it returns something truthy; return that, or fail after timeout.

    The timeout is a bound on correctness (the thing never happened), not a
    performance threshold: every caller's condition normally holds in
    milliseconds.
    """
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout} s waiting for {what}")
        time.sleep(interval)


def raise_nofile_limit(wanted=8192):
    """Raise this process's open-file soft limit towards wanted (never lowers it)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
    if soft != resource.RLIM_INFINITY and soft < target:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    if os.geteuid() == 0 and hard != resource.RLIM_INFINITY and hard < wanted:
        # Root may raise the hard limit too.
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, wanted))
        except (ValueError, OSError):
            pass
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def _proxy_preexec():
    # Runs in the child before exec: enough descriptors for 1000 clients and
    # their 1000 server connections.
    raise_nofile_limit(8192)


# ---- the proxy process -----------------------------------------------------

def render_auth_file(users):
    """users: {name: secret} -> auth_file text, quotes doubled as the format says."""
    lines = []
    for name, secret in users.items():
        lines.append('"%s" "%s"' % (name.replace('"', '""'), secret.replace('"', '""')))
    return "\n".join(lines) + "\n"


class ProxyProcess:
    """One `pghandoff proxy` subprocess and the files it was started with."""

    command = "proxy"  # `pghandoff run` for a proxy with its follower as a child

    def __init__(self, pghandoff, workdir, source, *, databases=("app",), auth_type="trust",
                 users=None, proxy=None, source_extra=None, admin_users="postgres"):
        self.pghandoff = pghandoff
        self.workdir = Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.source = source
        self.databases = {name: "" for name in databases} if not isinstance(databases, dict) \
            else dict(databases)
        self.auth_type = auth_type
        self.users = dict(users or {})
        self.proxy_options = dict(proxy or {})
        self.source_extra = dict(source_extra or {})
        self.admin_users = admin_users
        self.port = None
        self.proc = None
        self.config_path = self.workdir / "pghandoff.ini"
        self.auth_path = self.workdir / "userlist.txt"
        self.log_path = self.workdir / "proxy.stderr"
        self._log_file = None
        self.stopped_checked = False

    # ---- files -------------------------------------------------------------

    def config_sections(self):
        source = {"host": "127.0.0.1", "port": self.source.port, "user": self.source.superuser}
        if self.source.password is not None:
            source["password"] = self.source.password
        source.update(self.source_extra)
        proxy = {
            "listen_addr": "127.0.0.1",
            "listen_port": self.port,
            "auth_type": self.auth_type,
            "auth_file": str(self.auth_path),
            "admin_users": self.admin_users,
            "state_file": str(self.workdir / "pghandoff.state"),
        }
        proxy.update(self.proxy_options)
        return {
            "source": source,
            # The proxy relays to the source only; the target must be valid config.
            "target": {"host": "127.0.0.1", "port": self.source.port, "user": self.source.superuser},
            "databases": self.databases,
            "proxy": proxy,
        }

    def write_files(self):
        self.auth_path.write_text(render_auth_file(self.users))
        self.pghandoff.write_config(self.workdir, self.config_sections(), name="pghandoff.ini")

    # ---- lifecycle ---------------------------------------------------------

    def start(self, timeout=30):
        """Start on a free port and wait until it accepts connections."""
        for attempt in range(3):
            self.port = self.proxy_options.get("listen_port") or free_port()
            self.write_files()
            self._log_file = open(self.log_path, "ab")
            self.proc = subprocess.Popen(
                [str(self.pghandoff.bin), self.command, "-c", str(self.config_path)],
                stdin=subprocess.DEVNULL, stdout=self._log_file, stderr=self._log_file,
                preexec_fn=_proxy_preexec, cwd=self.workdir)
            deadline = time.monotonic() + timeout
            while True:
                if self.proc.poll() is not None:
                    break
                if self.accepts():
                    return self
                if time.monotonic() > deadline:
                    self.proc.kill()
                    self.proc.wait()
                    raise AssertionError(f"proxy did not accept connections within {timeout} s:\n"
                                         + self.log())
                time.sleep(0.02)
            self._log_file.close()
            if "could not listen" in self.log() and attempt < 2 \
                    and "listen_port" not in self.proxy_options:
                continue
            raise AssertionError(f"proxy exited with status {self.proc.returncode} at start:\n"
                                 + self.log())
        raise AssertionError("unreachable")

    def accepts(self):
        """True when the TCP listener (and the Unix socket, if configured) accept connections."""
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=1):
                pass
        except OSError:
            return False
        sockdir = self.proxy_options.get("unix_socket_dir")
        if sockdir:
            # The TCP socket accepts from listen() on, maybe before the Unix one exists.
            try:
                with socket.socket(socket.AF_UNIX) as s:
                    s.settimeout(1)
                    s.connect(str(Path(sockdir) / f".s.PGSQL.{self.port}"))
            except OSError:
                return False
        return True

    def running(self):
        return self.proc is not None and self.proc.poll() is None

    def signal(self, signum):
        self.proc.send_signal(signum)

    def reload(self):
        """Rewrite the config and auth file from the current attributes, then SIGHUP."""
        self.write_files()
        self.signal(signal.SIGHUP)

    def wait_exit(self, timeout=15):
        """Wait for the process to end (a bound on correctness); return its status."""
        try:
            return self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            pytest.fail(f"proxy still running {timeout} s later; log:\n{self.log_tail()}")

    def stop(self):
        """SIGINT (close everything at once), wait, and check the exit and the log."""
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
                raise AssertionError("proxy ignored SIGINT for 60 s:\n" + self.log_tail())
        if self._log_file is not None:
            self._log_file.close()
            self._log_file = None
        self.check_log()
        assert self.proc.returncode == 0, \
            f"proxy exited with status {self.proc.returncode}:\n{self.log_tail()}"

    def check_log(self):
        text = self.log()
        found = [m for m in SANITIZER_MARKERS if m in text]
        assert not found, f"sanitizer report in the proxy's stderr ({found}):\n{text[-20000:]}"

    def log(self):
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""

    def log_tail(self, lines=60):
        return "\n".join(self.log().splitlines()[-lines:])

    def wait_log(self, pattern, timeout=30):
        """Poll the log until the regex pattern occurs; return the match."""
        return wait_for(lambda: re.search(pattern, self.log()), timeout,
                        what=f"{pattern!r} in the proxy log")

    # ---- clients -----------------------------------------------------------

    def dsn(self, dbname="app", user="postgres", password=None, **extra):
        params = {"host": "127.0.0.1", "port": self.port, "dbname": dbname, "user": user,
                  "password": password}
        params.setdefault("sslmode", "disable")
        params.update(extra)
        return conninfo(**params)

    def connect(self, dbname="app", user="postgres", password=None, *, dsn_extra=None, **kw):
        import psycopg

        kw.setdefault("autocommit", True)
        kw.setdefault("connect_timeout", 10)
        return psycopg.connect(self.dsn(dbname, user, password, **(dsn_extra or {})), **kw)

    def admin(self, sql, user="postgres", password=None):
        """One admin-console command over a fresh connection: (column names, rows)."""
        with self.connect("pghandoff", user, password) as conn:
            cur = conn.execute(sql)
            if cur.description is None:
                return None, cur.statusmessage
            return [c.name for c in cur.description], cur.fetchall()

    def admin_dicts(self, sql, **kw):
        cols, rows = self.admin(sql, **kw)
        return [dict(zip(cols, row)) for row in rows]

    def psql(self, args, dbname="app", user="postgres", password=None, check=True, input=None,
             timeout=300, **dsn_extra):
        """Run psql through the proxy; ON_ERROR_STOP, no psqlrc."""
        if not os.access(SYSTEM_PSQL, os.X_OK):
            reason = f"{SYSTEM_PSQL} not found (apt-get install postgresql-client)"
            if os.environ.get("PGHANDOFF_REQUIRE_ALL") == "1":
                pytest.fail(f"missing prerequisite (PGHANDOFF_REQUIRE_ALL=1): {reason}", pytrace=False)
            pytest.skip(reason)
        cmd = [SYSTEM_PSQL, "-X", "-v", "ON_ERROR_STOP=1",
               "-d", self.dsn(dbname, user, password, **dsn_extra), *args]
        result = subprocess.run(cmd, input=input, capture_output=True, text=True, timeout=timeout)
        if check and result.returncode != 0:
            raise AssertionError(f"psql {args} failed ({result.returncode}):\n{result.stderr}\n"
                                 f"---- proxy log ----\n{self.log_tail()}")
        return result


def _stop_all(proxies, request):
    failed = getattr(getattr(request.node, "rep_call", None), "failed", False)
    errors = []
    for p in proxies:
        if failed:
            print(f"---- proxy on port {p.port}: last lines of {p.log_path} ----")
            print(p.log_tail(80))
        try:
            p.stop()
        except AssertionError as e:
            errors.append(str(e))
    if errors:
        pytest.fail("proxy teardown:\n" + "\n\n".join(errors), pytrace=False)


@pytest.fixture
def proxy_factory(pghandoff, tmp_path, request):
    """proxy_factory(source_cluster, **ProxyProcess options) -> a started ProxyProcess.

    Options: databases (names, or {name: target_name}), auth_type, users
    ({name: secret} for the auth file), proxy ({key: value} for [proxy]),
    source_extra ({key: value} added to [source]), admin_users.  Pass
    start=False to get it unstarted (call .start()).  At teardown each is
    stopped with SIGINT and its stderr must hold no sanitizer report.
    """
    proxies = []

    def make(source, start=True, **options):
        workdir = tmp_path / f"proxy{len(proxies)}"
        p = ProxyProcess(pghandoff, workdir, source, **options)
        proxies.append(p)
        if start:
            p.start()
        return p

    yield make
    _stop_all(proxies, request)


@pytest.fixture(scope="module")
def module_pg_factory(prerequisites):
    """module_pg_factory(major=15, **Cluster kwargs) -> a started Cluster shared by a module."""
    clusters = []

    def make(major=15, *, start=True, **kwargs):
        with prerequisites.check():
            cluster = Cluster(major, **kwargs)
        clusters.append(cluster)
        cluster.init()
        if start:
            cluster.start()
        return cluster

    yield make
    for cluster in clusters:
        try:
            cluster.destroy()
        except Exception as e:  # keep destroying the others
            print(f"could not destroy {cluster!r}: {e}")


# ---- psycopg helpers -------------------------------------------------------

def wait_notify(conn, timeout=10.0):
    """The next NOTIFY received on conn, waiting at most timeout s (psycopg 3.1 has no timeout)."""
    pgconn = conn.pgconn
    deadline = time.monotonic() + timeout
    while True:
        n = pgconn.notifies()
        if n is not None:
            return n.relname.decode(), n.extra.decode(), n.be_pid
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            pytest.fail(f"no notification within {timeout} s")
        select.select([pgconn.socket], [], [], remaining)
        pgconn.consume_input()


def active_backends(cluster, dbname, query_like=None):
    """pids of client backends in dbname running a query (other than our own; not autovacuum)."""
    sql = ("SELECT pid FROM pg_stat_activity WHERE datname = %s AND state = 'active' "
           "AND backend_type = 'client backend' AND pid <> pg_backend_pid()")
    params = [dbname]
    if query_like is not None:
        sql += " AND query LIKE %s"
        params.append(query_like)
    return [r[0] for r in cluster.execute(sql, params=params)]


# ---- raw wire protocol -----------------------------------------------------

PROTOCOL_3_0 = 3 << 16


def startup_packet(params, code=PROTOCOL_3_0):
    body = struct.pack("!I", code)
    for k, v in params.items():
        body += k.encode() + b"\0" + v.encode() + b"\0"
    body += b"\0"
    return struct.pack("!I", len(body) + 4) + body


def recv_exact(sock, n):
    data = b""
    while len(data) < n:
        chunk = sock.recv(n - len(data))
        if not chunk:
            return None
        data += chunk
    return data


def read_message(sock):
    """(type byte, body) of the next backend message, or None at EOF / reset."""
    try:
        header = recv_exact(sock, 5)
        if header is None:
            return None
        mtype, length = header[:1], struct.unpack("!I", header[1:])[0]
        body = recv_exact(sock, length - 4)
    except (ConnectionResetError, BrokenPipeError):
        return None
    if body is None:
        return None
    return mtype, body


def error_fields(body):
    """ErrorResponse / NoticeResponse body -> {field letter: text}."""
    fields = {}
    for part in body.split(b"\0"):
        if part:
            fields[chr(part[0])] = part[1:].decode(errors="replace")
    return fields


def read_until_closed(sock, timeout=20.0):
    """Read messages until the peer closes; return them.  Fails if it stays open."""
    sock.settimeout(timeout)
    messages = []
    try:
        while True:
            msg = read_message(sock)
            if msg is None:
                return messages
            messages.append(msg)
    except socket.timeout:
        pytest.fail(f"the proxy kept the connection open for {timeout} s; got {messages!r}")


def raw_login(port, user="postgres", database="app"):
    """A raw socket logged in with trust auth (ReadyForQuery seen)."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=20)
    sock.sendall(startup_packet({"user": user, "database": database}))
    while True:
        msg = read_message(sock)
        assert msg is not None, "proxy closed the connection during login"
        mtype, body = msg
        assert mtype != b"E", f"login failed: {error_fields(body)}"
        if mtype == b"R":
            assert struct.unpack("!I", body[:4])[0] == 0, "expected trust auth (AuthenticationOk)"
        if mtype == b"Z":
            return sock


def _send_password_message(sock, payload):
    sock.sendall(b"p" + struct.pack("!I", len(payload) + 4) + payload)


def pg_login(port, user="postgres", database="app", password=None, tls_context=None,
             server_hostname=None, host="127.0.0.1", before_auth=None):
    """Log in over a raw socket, speaking trust, cleartext, md5 and SCRAM-SHA-256 ourselves.

    libpq hides the SQLSTATE of a failed login; this does not.  Returns
    (error, sock, messages): error is the ErrorResponse's {field: text} (and
    sock is None) or None on success (sock is logged in, ReadyForQuery seen).
    With tls_context (an ssl.SSLContext), an SSLRequest comes first.
    before_auth(), if given, is called once the proxy has asked for a password.
    """
    import base64
    import hashlib
    import hmac

    sock = socket.create_connection((host, port), timeout=20)
    if tls_context is not None:
        sock.sendall(struct.pack("!II", 8, 80877103))
        answer = recv_exact(sock, 1)
        assert answer == b"S", f"the proxy refused TLS: {answer!r}"
        sock = tls_context.wrap_socket(sock, server_hostname=server_hostname)
    sock.sendall(startup_packet({"user": user, "database": database}))
    messages = []
    scram = {}
    while True:
        msg = read_message(sock)
        if msg is None:
            sock.close()
            return {"closed": "without an ErrorResponse"}, None, messages
        messages.append(msg)
        mtype, body = msg
        if mtype == b"E":
            sock.close()
            return error_fields(body), None, messages
        if mtype == b"Z":
            return None, sock, messages
        if mtype != b"R":
            continue
        code = struct.unpack("!I", body[:4])[0]
        if code == 0:
            continue
        assert password is not None, f"the proxy asks for a password (auth request {code})"
        if before_auth is not None:
            before_auth()
            before_auth = None
        if code == 3:
            _send_password_message(sock, password.encode() + b"\0")
        elif code == 5:
            inner = hashlib.md5((password + user).encode()).hexdigest()
            outer = hashlib.md5(inner.encode() + body[4:8]).hexdigest()
            _send_password_message(sock, b"md5" + outer.encode() + b"\0")
        elif code == 10:
            assert b"SCRAM-SHA-256\0" in body[4:], body
            nonce = base64.b64encode(os.urandom(18)).decode()
            scram["first_bare"] = f"n=,r={nonce}"
            scram["nonce"] = nonce
            first = ("n,," + scram["first_bare"]).encode()
            _send_password_message(sock, b"SCRAM-SHA-256\0" + struct.pack("!I", len(first)) + first)
        elif code == 11:
            server_first = body[4:].decode()
            attrs = dict(part.split("=", 1) for part in server_first.split(","))
            assert attrs["r"].startswith(scram["nonce"]), server_first
            salted = hashlib.pbkdf2_hmac("sha256", password.encode(), base64.b64decode(attrs["s"]),
                                         int(attrs["i"]))
            client_key = hmac.new(salted, b"Client Key", "sha256").digest()
            stored_key = hashlib.sha256(client_key).digest()
            without_proof = f"c=biws,r={attrs['r']}"
            auth_message = f"{scram['first_bare']},{server_first},{without_proof}".encode()
            signature = hmac.new(stored_key, auth_message, "sha256").digest()
            proof = bytes(a ^ b for a, b in zip(client_key, signature))
            server_key = hmac.new(salted, b"Server Key", "sha256").digest()
            scram["server_signature"] = base64.b64encode(
                hmac.new(server_key, auth_message, "sha256").digest()).decode()
            _send_password_message(sock, f"{without_proof},p={base64.b64encode(proof).decode()}".encode())
        elif code == 12:
            final = body[4:].decode()
            assert final == f"v={scram['server_signature']}", \
                f"the proxy's SCRAM server signature is wrong: {final!r}"
        else:
            raise AssertionError(f"unexpected authentication request {code}")


def login_error(port, user="postgres", database="app", password=None, **kw):
    """The ErrorResponse fields of a login that must fail."""
    error, sock, messages = pg_login(port, user, database, password, **kw)
    if sock is not None:
        sock.close()
        pytest.fail(f"login as {user} to {database} succeeded; it should have failed")
    return error


# ---- external tools --------------------------------------------------------

def need_tool(prerequisites, path_or_name, hint):
    found = path_or_name if os.path.isabs(path_or_name) and os.access(path_or_name, os.X_OK) \
        else shutil.which(path_or_name)
    if not found:
        prerequisites.missing(f"{path_or_name} not found ({hint})")
    return found


def run_pgbench(proxy, args, dbname="bench", timeout=300):
    env = dict(os.environ, PGHOST="127.0.0.1", PGPORT=str(proxy.port), PGUSER="postgres",
               PGSSLMODE="disable", LC_ALL="C")
    return subprocess.run([PGBENCH, *args, dbname], env=env, capture_output=True, text=True,
                          timeout=timeout)


def pgbench_counts(output):
    """(processed, failed) from pgbench's report; failed is 0 when pgbench (< 15) does not say."""
    m = re.search(r"number of transactions actually processed: (\d+)", output)
    assert m, f"no transaction count in pgbench output:\n{output}"
    f = re.search(r"number of failed transactions: (\d+)", output)
    return int(m.group(1)), int(f.group(1)) if f else 0


class CertAuthority:
    """A throwaway certificate authority and a server certificate for 127.0.0.1 / localhost."""

    def __init__(self, directory):
        self.dir = Path(directory)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.ca_cert = self.dir / "ca.crt"
        self.ca_key = self.dir / "ca.key"
        self.server_cert = self.dir / "server.crt"
        self.server_key = self.dir / "server.key"

    def _openssl(self, *args):
        subprocess.run(["openssl", *args], cwd=self.dir, check=True, capture_output=True, timeout=60)

    def make(self, cn="pghandoff test CA"):
        self._openssl("req", "-x509", "-new", "-nodes", "-newkey", "rsa:2048", "-days", "2",
                      "-subj", f"/CN={cn}", "-keyout", str(self.ca_key), "-out", str(self.ca_cert),
                      "-addext", "basicConstraints=critical,CA:TRUE",
                      "-addext", "keyUsage=critical,keyCertSign,cRLSign")
        csr = self.dir / "server.csr"
        self._openssl("req", "-new", "-nodes", "-newkey", "rsa:2048", "-subj", "/CN=localhost",
                      "-keyout", str(self.server_key), "-out", str(csr))
        ext = self.dir / "server.ext"
        ext.write_text("subjectAltName = DNS:localhost, IP:127.0.0.1\n"
                       "basicConstraints = CA:FALSE\n"
                       "keyUsage = digitalSignature, keyEncipherment\n"
                       "extendedKeyUsage = serverAuth\n")
        self._openssl("x509", "-req", "-in", str(csr), "-CA", str(self.ca_cert), "-CAkey", str(self.ca_key),
                      "-CAcreateserial", "-days", "2", "-extfile", str(ext), "-out", str(self.server_cert))
        os.chmod(self.server_key, 0o600)
        return self


def node_pg_dir(prerequisites):
    """A directory whose node_modules holds the npm package pg, installed on first use."""
    need_tool(prerequisites, "node", "apt-get install nodejs")
    need_tool(prerequisites, "npm", "apt-get install npm")
    cache = Path(os.environ.get("PGHANDOFF_NODE_CACHE") or REPO_ROOT / ".cache" / "node")
    if not (cache / "node_modules" / "pg" / "package.json").is_file():
        cache.mkdir(parents=True, exist_ok=True)
        result = subprocess.run(["npm", "install", "--no-save", "--no-audit", "--no-fund",
                                 "--prefix", str(cache), "pg"],
                                capture_output=True, text=True, timeout=300)
        if result.returncode != 0:
            prerequisites.missing(f"npm install pg failed: {result.stderr[-2000:]}")
    return cache
