"""`pghandoff proxy` at its limits, pushed there on purpose.

Open files: the proxy raises its soft limit to what max_client_conn needs,
refuses to start when the hard limit is too low, and when descriptors run
out anyway (a flood of connections) it stops accepting for a while instead
of retrying accept() in a loop, logs that once per interval, and serves
again once the flood is gone.

max_client_conn: it counts clients from accept on, so logins still
authenticating cannot slip past it (pipelined logins, silent connections);
admin console sessions do not count against it, so a full proxy still
answers its console and the command-line tools that use it.
"""

import hashlib
import os
import re
import resource
import socket
import struct
import subprocess
import threading
import time

import psycopg
import pytest

import proxyfixtures
from pgcluster import free_port
from proxyfixtures import (  # noqa: F401  (fixtures are used by name)
    error_fields, login_error, module_pg_factory, proxy_factory, raise_nofile_limit, read_message, startup_packet,
    wait_for)


@pytest.fixture(scope="module")
def pg15(module_pg_factory):
    cluster = module_pg_factory(15, settings={"max_connections": 200})
    cluster.execute("CREATE DATABASE app")
    return cluster


def nofile_limits(soft, hard):
    """A preexec_fn giving the proxy these open-file limits (instead of the fixtures' 8192)."""
    def preexec():
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
    return preexec


def proc_nofile(pid):
    """(soft, hard) open-file limits of a running process, from /proc."""
    for line in open(f"/proc/{pid}/limits"):
        if line.startswith("Max open files"):
            soft, hard = line.split()[3:5]
            return int(soft), int(hard)
    raise AssertionError("no 'Max open files' in /proc/PID/limits")


def cpu_ticks(pid):
    """utime + stime of a process, in clock ticks (/proc/PID/stat fields 14 and 15)."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])


# ---- open files --------------------------------------------------------------

def test_open_files_limit_raised_for_max_client_conn(pg15, proxy_factory, monkeypatch):
    """Started with a soft limit of 64 (and room under the hard limit), the proxy raises it to what
    max_client_conn needs, and as many clients as it allows are all served, each with its server."""
    max_client_conn = 40
    monkeypatch.setattr(proxyfixtures, "_proxy_preexec", nofile_limits(64, 1024))
    p = proxy_factory(pg15, proxy={"max_client_conn": max_client_conn, "default_pool_size": max_client_conn})
    soft, hard = proc_nofile(p.proc.pid)
    assert hard == 1024
    # Each client holds its own socket and its server's; a cutover adds one more.
    assert 2 * max_client_conn < soft <= hard, (soft, p.log_tail(10))
    assert re.search(r"open files limit raised from 64 to \d+ for max_client_conn = 40", p.log())

    conns = []
    try:
        for _ in range(max_client_conn):
            conns.append(p.connect())
        for c in conns:
            assert c.execute("SELECT 1").fetchone() == (1,)
    finally:
        for c in conns:
            c.close()


def test_hard_open_files_limit_too_low_refuses_to_start(pg15, proxy_factory):
    """A hard limit below what max_client_conn needs: the proxy refuses to start and says which
    limit and by how much, rather than failing under load."""
    p = proxy_factory(pg15, start=False, proxy={"max_client_conn": 100})
    p.port = free_port()
    p.write_files()
    proc = subprocess.Popen([str(p.pghandoff.bin), "proxy", "-c", str(p.config_path)],
                            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, preexec_fn=nofile_limits(128, 128), cwd=p.workdir)
    try:
        out, _ = proc.communicate(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, _ = proc.communicate()
        pytest.fail(f"the proxy started with a hard open files limit of 128 for max_client_conn = 100:\n{out}")
    assert proc.returncode != 0, out
    m = re.search(r"max_client_conn = 100 needs (\d+) open files, but the hard limit on open files "
                  r"\(RLIMIT_NOFILE\) is 128", out)
    assert m, out
    assert int(m.group(1)) > 2 * 100
    assert not any(marker in out for marker in proxyfixtures.SANITIZER_MARKERS), out


def test_reload_beyond_the_hard_open_files_limit_is_refused(pg15, proxy_factory, monkeypatch):
    """A reload that raises max_client_conn past what the hard limit allows is refused, and the
    running configuration stays."""
    monkeypatch.setattr(proxyfixtures, "_proxy_preexec", nofile_limits(256, 256))
    p = proxy_factory(pg15, proxy={"max_client_conn": 40})
    p.proxy_options["max_client_conn"] = 100
    p.write_files()
    with p.connect("pghandoff") as admin:
        with pytest.raises(psycopg.Error) as info:
            admin.execute("RELOAD")
        assert info.value.sqlstate == "F0000", info.value
        config = {(r[0], r[1]): r[2] for r in admin.execute("SHOW CONFIG").fetchall()}
    assert config[("proxy", "max_client_conn")] == "40"
    assert re.search(r"max_client_conn = 100 needs \d+ open files, but the hard limit on open files "
                     r"\(RLIMIT_NOFILE\) is 256", p.log()), p.log_tail(5)


def accept_lines(text):
    return [line for line in text.splitlines() if "accept" in line.lower()]


def test_descriptor_exhaustion_does_not_spin(pg15, proxy_factory, monkeypatch):
    """More connections than the proxy has descriptors for: it stops accepting for a while
    instead of retrying accept() at once (which took 100% CPU and wrote millions of log lines),
    and serves new clients once the connections are gone."""
    limit = 256
    raise_nofile_limit(4 * limit)  # for this process's sockets
    monkeypatch.setattr(proxyfixtures, "_proxy_preexec", nofile_limits(limit, limit))
    # 40 clients fit the limit (3 descriptors each, and a margin); connections still logging in beyond
    # max_client_conn are accepted to read their startup packet, and those are what run out.
    p = proxy_factory(pg15, proxy={"max_client_conn": 40})
    pid = p.proc.pid
    flood = []
    try:
        started = time.monotonic()
        for _ in range(2 * limit):
            flood.append(socket.create_connection(("127.0.0.1", p.port), timeout=20))
        p.wait_log(r"accept.*Too many open files")

        # Watch it for a while: the listen queue still holds hundreds of connections.
        clk_tck = os.sysconf("SC_CLK_TCK")
        cpu_before, wall_before = cpu_ticks(pid), time.monotonic()
        time.sleep(3)
        cpu_used = cpu_ticks(pid) - cpu_before
        wall_ticks = (time.monotonic() - wall_before) * clk_tck
        assert cpu_used * 10 < wall_ticks, \
            f"the proxy busy-looped: {cpu_used} ticks of CPU in {wall_ticks:.0f} ticks of wall time"
        # One line per log interval (10 s), and one when it accepts again.
        bound = 2 * (int((time.monotonic() - started) / 10) + 1)
        lines = accept_lines(p.log())
        assert len(lines) <= bound, f"{len(lines)} log lines about accept; the first: {lines[:3]}"
        assert re.search(r"open files limit 256; accept attempts failed since the last message: \d+", lines[0]), \
            lines[0]
    finally:
        for s in flood:
            s.close()

    def serves():
        try:
            with p.connect(connect_timeout=5) as c:
                return c.execute("SELECT 1").fetchone() == (1,)
        except psycopg.OperationalError:
            return False
    wait_for(serves, 60, "the proxy to serve a client again after the flood")
    p.wait_log(r"accepting connections again")
    assert p.running()


def open_fds(pid):
    return len(os.listdir(f"/proc/{pid}/fd"))


def test_metrics_scrape_without_descriptors_does_not_spin(pg15, proxy_factory, monkeypatch):
    """Idle connections hold every descriptor the proxy may open, nothing else is queued, and a
    Prometheus scrape arrives: the metrics endpoint stops accepting for a while too, rather than
    retrying accept() at once; the scrape is answered once a connection has gone."""
    limit = 128
    monkeypatch.setattr(proxyfixtures, "_proxy_preexec", nofile_limits(limit, limit))
    metrics_port = free_port()
    p = proxy_factory(pg15, proxy={"max_client_conn": 10, "metrics_listen": f"127.0.0.1:{metrics_port}"})
    pid = p.proc.pid
    p.wait_log(r"C-1 .*closing")  # the start's probe connection is gone
    idle = []
    try:
        # One at a time, each seen accepted, up to the last descriptor: the listen queue stays empty.
        while open_fds(pid) < limit:
            before = open_fds(pid)
            idle.append(socket.create_connection(("127.0.0.1", p.port), timeout=20))
            wait_for(lambda: open_fds(pid) > before, 30, "the proxy to accept a connection")
        assert open_fds(pid) == limit
        scrape = socket.create_connection(("127.0.0.1", metrics_port), timeout=20)
        idle.append(scrape)
        scrape.sendall(b"GET /metrics HTTP/1.0\r\n\r\n")

        clk_tck = os.sysconf("SC_CLK_TCK")
        cpu_before, wall_before = cpu_ticks(pid), time.monotonic()
        time.sleep(3)
        cpu_used = cpu_ticks(pid) - cpu_before
        wall_ticks = (time.monotonic() - wall_before) * clk_tck
        assert cpu_used * 10 < wall_ticks, \
            f"the proxy busy-looped: {cpu_used} ticks of CPU in {wall_ticks:.0f} ticks of wall time"
        assert len(accept_lines(p.log())) == 1, accept_lines(p.log())
        assert "Too many open files" in accept_lines(p.log())[0]
        idle.pop(0).close()
        scrape.settimeout(30)
        answer = b""
        while chunk := scrape.recv(65536):
            answer += chunk
        assert answer.startswith(b"HTTP/1.") and b"pghandoff_" in answer, answer[:200]
    finally:
        for s in idle:
            s.close()


# ---- max_client_conn ---------------------------------------------------------

def md5_password(user, password, salt):
    inner = hashlib.md5((password + user).encode()).hexdigest()
    return "md5" + hashlib.md5(inner.encode() + salt).hexdigest()


def read_until(sock, kinds):
    """Messages up to and including the first whose type is in kinds (or EOF)."""
    messages = []
    while True:
        msg = read_message(sock)
        if msg is None:
            return messages
        messages.append(msg)
        if msg[0] in kinds:
            return messages


def backends(cluster, application_name):
    return cluster.execute("SELECT count(*) FROM pg_stat_activity WHERE application_name = %s",
                           params=[application_name])[0][0]


class BackendWatch:
    """Polls pg_stat_activity in a thread: the most backends with application_name ever seen."""

    def __init__(self, cluster, application_name):
        self.cluster, self.name = cluster, application_name
        self.most = 0
        self.polls = 0
        self.error = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        try:
            with self.cluster.connect() as conn:
                while not self._stop.is_set():
                    n = conn.execute("SELECT count(*) FROM pg_stat_activity WHERE application_name = %s",
                                     [self.name]).fetchone()[0]
                    self.most = max(self.most, n)
                    self.polls += 1
                    self._stop.wait(0.005)
        except Exception as e:  # reported by stop()
            self.error = e

    def __enter__(self):
        self._thread.start()
        wait_for(lambda: self.polls > 0 or self.error, 30, "the first pg_stat_activity poll")
        return self

    def stop(self):
        self._stop.set()
        self._thread.join(30)
        assert self.error is None, f"pg_stat_activity poller failed: {self.error!r}"
        return self.most

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join(30)


def no_app_clients(p, **admin):
    """Nobody connected but admin sessions (a client still logging in shows without a database)."""
    return not [r for r in p.admin_dicts("SHOW CLIENTS", **admin) if r["database"] != "pghandoff"]


def test_pipelined_logins_cannot_exceed_max_client_conn(pg15, proxy_factory):
    """45 logins sent together with max_client_conn = 20: a client that is still authenticating
    holds its place, so no more than 20 ever reach the server and the others hear 53300; the
    full proxy still answers its admin console and `pghandoff status`."""
    limit, total = 20, 45
    p = proxy_factory(pg15, auth_type="md5", users={"postgres": "pw"}, proxy={"max_client_conn": limit})
    wait_for(lambda: no_app_clients(p, password="pw"), 30, "no clients but the admin console")
    socks = [socket.create_connection(("127.0.0.1", p.port), timeout=30) for _ in range(total)]
    try:
        with BackendWatch(pg15, "burst") as watch:
            # Every startup packet first, then every password: all logins are in progress at once.
            for s in socks:
                s.sendall(startup_packet({"user": "postgres", "database": "app", "application_name": "burst"}))
            outcome = {}
            for i, s in enumerate(socks):
                mtype, body = read_until(s, {b"R", b"E"})[-1]
                if mtype == b"E":
                    outcome[i] = error_fields(body)
                else:
                    assert struct.unpack("!I", body[:4])[0] == 5, body  # md5
                    outcome[i] = body[4:8]
            for i, s in enumerate(socks):
                if isinstance(outcome[i], bytes):
                    payload = md5_password("postgres", "pw", outcome[i]).encode() + b"\0"
                    s.sendall(b"p" + struct.pack("!I", len(payload) + 4) + payload)
            for i, s in enumerate(socks):
                if isinstance(outcome[i], bytes):
                    mtype, body = read_until(s, {b"Z", b"E"})[-1]
                    outcome[i] = "ok" if mtype == b"Z" else error_fields(body)
            logged_in = [i for i, o in outcome.items() if o == "ok"]
            refused = [o for o in outcome.values() if o != "ok"]
            assert len(logged_in) == limit, (len(logged_in), refused[:3])
            assert all(e.get("C") == "53300" and "too many clients" in e.get("M", "") for e in refused), refused
            # Polled while the logins ran, and now that they are done.
            wait_for(lambda: backends(pg15, "burst") == limit, 30, f"{limit} backends")
            most = watch.stop()
        assert most <= limit, f"{most} server backends were seen at once with max_client_conn = {limit}"

        # Full: one more client is refused...
        error = login_error(p.port, password="pw")
        assert error.get("C") == "53300", error
        # ...but the console answers, and the tools that use it reach it.
        clients = [r for r in p.admin_dicts("SHOW CLIENTS", password="pw") if r["database"] == "app"]
        assert len(clients) == limit, clients
        status = p.pghandoff.run(["status", "-c", p.config_path], timeout=60)
        assert status.returncode == 0 and f"clients: {limit}" in status.stdout, (status.stdout, status.stderr)
        # The logged-in twenty still work.
        for i in logged_in[:3]:
            q = b"SELECT 1"
            socks[i].sendall(b"Q" + struct.pack("!I", 4 + len(q) + 1) + q + b"\0")
            kinds = [m[0] for m in read_until(socks[i], {b"Z"})]
            assert b"E" not in kinds and kinds[-1] == b"Z", kinds
    finally:
        for s in socks:
            s.close()


def test_silent_connections_hold_their_places(pg15, proxy_factory):
    """Connections that have sent nothing yet count against max_client_conn from accept on: a
    login behind them is refused with 53300 instead of going past the limit, and an admin still
    gets in."""
    p = proxy_factory(pg15, proxy={"max_client_conn": 5})
    wait_for(lambda: no_app_clients(p), 30, "no clients but the admin console")
    silent = [socket.create_connection(("127.0.0.1", p.port), timeout=30) for _ in range(5)]
    try:
        wait_for(lambda: len(p.admin_dicts("SHOW CLIENTS")) >= 6, 30, "the five connections to be accepted")
        error = login_error(p.port)
        assert (error.get("C"), error.get("M")) == ("53300", "sorry, too many clients already (max_client_conn = 5)"), \
            error
        assert not [r for r in p.admin_dicts("SHOW SERVERS")], p.admin_dicts("SHOW SERVERS")
    finally:
        for s in silent:
            s.close()
    # Their places come back when they go.
    wait_for(lambda: login_ok(p), 30, "a place to free up")


def login_ok(p):
    try:
        with p.connect() as c:
            return c.execute("SELECT 1").fetchone() == (1,)
    except psycopg.OperationalError as e:
        assert "too many clients" in str(e)
        return False


def test_full_proxy_answers_its_console(pg15, proxy_factory):
    """With max_client_conn taken by clients, the admin console still answers SHOW CLIENTS, and
    `pghandoff status` and `pghandoff cutover` still reach it (admin sessions do not take clients'
    places)."""
    p = proxy_factory(pg15, proxy={"max_client_conn": 5})
    clients = []
    try:
        for _ in range(5):
            clients.append(p.connect())
        error = login_error(p.port)
        assert error.get("C") == "53300" and "max_client_conn = 5" in error.get("M", ""), error
        rows = p.admin_dicts("SHOW CLIENTS")
        assert len([r for r in rows if r["database"] == "app"]) == 5, rows
        status = p.pghandoff.run(["status", "-c", p.config_path], timeout=120)
        assert status.returncode == 0 and "clients: 5" in status.stdout, (status.stdout, status.stderr)
        # No replication here, so the dry run reports "not ready": from the console.
        dry = p.pghandoff.run(["cutover", "-c", p.config_path, "--dry-run"], timeout=120)
        assert "cutover dry run" in dry.stdout and "replication is not streaming" in dry.stdout, \
            (dry.stdout, dry.stderr)
        for c in clients:
            assert c.execute("SELECT 1").fetchone() == (1,)
    finally:
        for c in clients:
            c.close()


def test_admin_reserved_conn_limits_admin_sessions(pg15, proxy_factory):
    """Admin sessions have places of their own, admin_reserved_conn of them: five clients fill
    max_client_conn = 5 with three admin sessions open, and a fourth admin session is refused
    until one of the three ends."""
    p = proxy_factory(pg15, proxy={"max_client_conn": 5, "admin_reserved_conn": 3})
    admins, clients = [], []
    try:
        for _ in range(3):
            admins.append(p.connect("pghandoff"))
        error = login_error(p.port, database="pghandoff")
        assert (error.get("C"), error.get("M")) == \
            ("53300", "sorry, too many admin console sessions already (admin_reserved_conn = 3)"), error
        for _ in range(5):
            clients.append(p.connect())
        error = login_error(p.port)
        assert error.get("C") == "53300" and "max_client_conn = 5" in error.get("M", ""), error
        rows = admins[0].execute("SHOW CLIENTS").fetchall()
        assert len(rows) == 5 + 3, rows
        admins.pop().close()
        wait_for(lambda: admin_ok(p), 30, "an admin place to free up")
    finally:
        for c in admins + clients:
            c.close()


def admin_ok(p):
    try:
        return bool(p.admin("SHOW VERSION"))
    except psycopg.OperationalError as e:
        assert "too many admin console sessions" in str(e)
        return False
