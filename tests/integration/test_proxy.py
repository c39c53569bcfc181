"""`pghandoff proxy`: real clients through the real binary to real clusters.

psql (queries, \\copy of ~100 MB both ways, a 200 MB bytea, large objects
over FunctionCall), pgbench in the three query modes, psycopg (pipeline mode,
server-side prepared statements, COPY, cancel, LISTEN/NOTIFY), node-postgres
named prepared statements, PostgreSQL 13 and 17, Unix sockets, faults (a
killed backend, malformed packets, protocol negotiation, limits, the login
timeout, a client that stops reading) and 1000 concurrent clients.
Authentication and TLS are in test_proxy_auth.py, the admin console and
signals in test_proxy_admin.py.

Every test starts its own proxy (cheap) in front of a PostgreSQL 15 cluster
that the module shares (initdb is not); the clusters of other majors are
made per test.
"""

import asyncio
import hashlib
import json
import os
import signal
import socket
import struct
import subprocess
import threading
import time
import types

import psycopg
import pytest

from pgcluster import free_port
from proxyfixtures import (  # noqa: F401  (fixtures are used by name)
    PGBENCH, active_backends, error_fields, login_error, module_pg_factory, need_tool, node_pg_dir,
    pgbench_counts, proxy_factory, raise_nofile_limit, raw_login, read_message, read_until_closed, run_pgbench,
    startup_packet, wait_for, wait_notify)

MANY_CLIENTS = 1000


@pytest.fixture(scope="module")
def pg15(module_pg_factory):
    """PostgreSQL 15 with databases app and bench, room for 1000 proxied clients."""
    cluster = module_pg_factory(15, settings={"max_connections": MANY_CLIENTS + 100})
    cluster.execute("CREATE DATABASE app")
    cluster.execute("CREATE DATABASE bench")
    return cluster


@pytest.fixture
def proxy(pg15, proxy_factory):
    """A trust-auth proxy for app and bench on pg15."""
    return proxy_factory(pg15, databases=("app", "bench"))


def in_thread(fn):
    """Run fn in a thread; returns a join() that gives (result, exception, seconds)."""
    box = {}

    def run():
        start = time.monotonic()
        try:
            box["result"] = fn()
        except BaseException as e:  # handed to the test thread
            box["error"] = e
        box["seconds"] = time.monotonic() - start

    t = threading.Thread(target=run, daemon=True)
    t.start()

    def join(timeout=60):
        t.join(timeout)
        assert not t.is_alive(), f"thread still running after {timeout} s"
        return box.get("result"), box.get("error"), box["seconds"]

    return join


# ---- psql ------------------------------------------------------------------

def test_psql_queries(pg15, proxy):
    out = proxy.psql(["-At", "-c", "SELECT current_database(), current_user, "
                                   "current_setting('port')"]).stdout
    assert out.strip() == f"app|postgres|{pg15.port}"

    script = """
CREATE TABLE psql_q (id int PRIMARY KEY, v text);
INSERT INTO psql_q SELECT g, 'row ' || g FROM generate_series(1, 1000) g;
BEGIN;
DELETE FROM psql_q;
ROLLBACK;
SELECT count(*), sum(id) FROM psql_q;
\\set ON_ERROR_STOP 0
SELECT 1/0;
\\set ON_ERROR_STOP 1
SELECT 'still here after an error';
SELECT string_agg(v, ',' ORDER BY id) FROM psql_q WHERE id <= 3;
"""
    result = proxy.psql(["-At", "-f", "-"], input=script, check=False)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.split("\n")
    assert "1000|500500" in lines
    assert "still here after an error" in lines
    assert "row 1,row 2,row 3" in lines
    assert "division by zero" in result.stderr
    # The rows are on the server, where the proxy sent them.
    assert pg15.execute("SELECT count(*) FROM psql_q", dbname="app") == [(1000,)]


def test_startup_parameters_reach_the_server(proxy):
    with proxy.connect(dsn_extra={"application_name": "proxied-app",
                                  "options": "-c work_mem=7MB -c search_path=pg_catalog"}) as conn:
        assert conn.execute("SHOW work_mem").fetchone() == ("7MB",)
        assert conn.execute("SHOW search_path").fetchone() == ("pg_catalog",)
        assert conn.execute("SELECT application_name FROM pg_stat_activity "
                            "WHERE pid = pg_backend_pid()").fetchone() == ("proxied-app",)
        # ParameterStatus messages after login are relayed too.
        conn.execute("SET application_name = 'renamed'")
        assert conn.info.parameter_status("application_name") == "renamed"
        assert conn.info.parameter_status("server_version").startswith("15")
        assert conn.info.parameter_status("client_encoding") == "UTF8"


def test_large_objects_function_call(proxy, tmp_path):
    """psql's \\lo_import / \\lo_export run over the FunctionCall message."""
    src = tmp_path / "in.bin"
    src.write_bytes(os.urandom(3 * 1024 * 1024 + 17))
    out = proxy.psql(["-c", f"\\lo_import '{src}'"]).stdout
    oid = int(out.split()[1])
    dst = tmp_path / "out.bin"
    proxy.psql(["-c", f"\\lo_export {oid} '{dst}'", "-c", f"\\lo_unlink {oid}"])
    assert dst.read_bytes() == src.read_bytes()


def test_psycopg_copy(pg15, proxy):
    with proxy.connect() as conn:
        conn.execute("CREATE TABLE pcopy (id int, v text)")
        with conn.cursor().copy("COPY pcopy FROM STDIN") as copy:
            for i in range(50_000):
                copy.write_row((i, f"value {i}"))
        # A COPY the client abandons (CopyFail): nothing is written, the session goes on.
        with pytest.raises(psycopg.errors.QueryCanceled):
            with conn.cursor().copy("COPY pcopy FROM STDIN") as copy:
                copy.write_row((-1, "never"))
                raise psycopg.errors.QueryCanceled("client gave up")
        # A COPY the server rejects half way.
        with pytest.raises(psycopg.errors.InvalidTextRepresentation):
            with conn.cursor().copy("COPY pcopy FROM STDIN") as copy:
                copy.write(b"1\tok\nnot-a-number\tbad\n" + b"2\tok\n" * 10000)
        assert conn.execute("SELECT count(*), sum(id) FROM pcopy").fetchone() == (50_000, sum(range(50_000)))
        # Binary COPY out.
        with conn.cursor().copy("COPY (SELECT id, v FROM pcopy ORDER BY id) TO STDOUT (FORMAT binary)") as copy:
            copy.set_types(["int4", "text"])
            rows = list(copy.rows())
        assert rows[:2] == [(0, "value 0"), (1, "value 1")] and len(rows) == 50_000
        row = [c for c in proxy.admin_dicts("SHOW CLIENTS") if c["database"] == "app"][0]
        assert (row["tx"], row["pending"]) == ("I", "0"), row


def test_simple_queries_sent_together(proxy):
    """Several Query messages in one write: one answer each, in order."""
    with raw_login(proxy.port) as s:
        s.sendall(b"".join(b"Q" + struct.pack("!I", 4 + len(q) + 1) + q + b"\0"
                           for q in (b"SELECT 1", b"SELECT 1/0", b"", b"SELECT 'three'")))
        kinds = []
        while kinds.count(b"Z") < 4:
            msg = read_message(s)
            assert msg is not None, kinds
            kinds.append(msg[0])
        # SELECT 1: T D C Z; the error: E Z; the empty query: I Z; the last: T D C Z.
        assert kinds == [b"T", b"D", b"C", b"Z", b"E", b"Z", b"I", b"Z", b"T", b"D", b"C", b"Z"], kinds


def table_digest(cluster, table, dbname="app"):
    """(row count, md5 of every row in key order), computed on the server."""
    return cluster.execute(f"SELECT count(*), md5(string_agg(md5(t::text), '' ORDER BY id)) "
                           f"FROM {table} t", dbname=dbname)[0]


def test_copy_100mb_both_ways(pg15, proxy, tmp_path):
    rows = 210_000  # about 520 bytes of COPY text each
    pg15.execute("CREATE TABLE copy_src (id int, payload text)", dbname="app")
    pg15.execute("INSERT INTO copy_src SELECT g, repeat(md5(g::text), 16) "
                 "FROM generate_series(1, %s) g", dbname="app", params=(rows,))
    pg15.execute("CREATE TABLE copy_dst (LIKE copy_src)", dbname="app")
    dump = tmp_path / "copy_src.tsv"

    out = proxy.psql(["-c", f"\\copy copy_src TO '{dump}'"]).stdout
    assert out.strip() == f"COPY {rows}"
    assert dump.stat().st_size > 100 * 1024 * 1024
    out = proxy.psql(["-c", f"\\copy copy_dst FROM '{dump}'"]).stdout
    assert out.strip() == f"COPY {rows}"

    src = table_digest(pg15, "copy_src")
    assert src[0] == rows
    assert table_digest(pg15, "copy_dst") == src
    # The session is usable after both COPYs.
    assert proxy.psql(["-Atc", "SELECT count(*) FROM copy_dst"]).stdout.strip() == str(rows)


def test_bytea_200mb_roundtrip(pg15, proxy, tmp_path):
    size = 200 * 1024 * 1024
    data = os.urandom(size)
    local_md5 = hashlib.md5(data).hexdigest()
    pg15.execute("CREATE TABLE blobs (id int PRIMARY KEY, data bytea)", dbname="app")
    hexfile = tmp_path / "blob.hex"
    with open(hexfile, "w") as f:
        f.write("\\x")
        f.write(data.hex())
    del data
    # psql reads the value into a variable and sends it quoted: one Query
    # message of about 400 MB, far larger than any proxy buffer.
    script = f"\\set blob `cat {hexfile}`\nINSERT INTO blobs VALUES (1, :'blob');\n"
    out = proxy.psql(["-f", "-"], input=script).stdout
    assert out.strip() == "INSERT 0 1"
    hexfile.unlink()

    assert pg15.execute("SELECT length(data), md5(data) FROM blobs WHERE id = 1",
                        dbname="app") == [(size, local_md5)]
    # And back through the proxy, as one 200 MB DataRow.
    with proxy.connect() as conn:
        value = conn.cursor(binary=True).execute("SELECT data FROM blobs WHERE id = 1").fetchone()[0]
        assert len(value) == size
        assert hashlib.md5(value).hexdigest() == local_md5
        del value
        assert conn.execute("SELECT 1").fetchone() == (1,)


# ---- pgbench ---------------------------------------------------------------

@pytest.mark.parametrize("mode", ["simple", "extended", "prepared"])
def test_pgbench(pg15, proxy, prerequisites, mode):
    need_tool(prerequisites, PGBENCH, "apt-get install postgresql-contrib")
    init = run_pgbench(proxy, ["-i", "-q", "-s", "1"])
    assert init.returncode == 0, init.stderr + proxy.log_tail()
    clients, per_client = 4, 150
    result = run_pgbench(proxy, ["-M", mode, "-c", str(clients), "-j", "2", "-t", str(per_client)])
    assert result.returncode == 0, result.stdout + result.stderr + proxy.log_tail()
    processed, failed = pgbench_counts(result.stdout)
    assert failed == 0, result.stdout
    assert processed == clients * per_client, result.stdout
    # pgbench truncates the history before its run: one row per committed transaction.
    assert pg15.execute("SELECT count(*) FROM pgbench_history", dbname="bench") == [(processed,)]
    stats = {r["database"]: r for r in proxy.admin_dicts("SHOW STATS")}
    assert int(stats["bench"]["total_xact_count"]) >= processed
    balance = pg15.execute("SELECT (SELECT sum(abalance) FROM pgbench_accounts) = "
                           "(SELECT sum(delta) FROM pgbench_history)", dbname="bench")
    assert balance == [(True,)]


# ---- psycopg ---------------------------------------------------------------

def test_psycopg_pipeline(proxy):
    with proxy.connect() as conn:
        conn.execute("CREATE TABLE pipe (id int PRIMARY KEY, v text)")
        with conn.pipeline():
            for i in range(500):
                conn.execute("INSERT INTO pipe VALUES (%s, %s)", (i, f"v{i}"))
            conn.cursor().executemany("INSERT INTO pipe VALUES (%s, %s)",
                                      [(i, f"w{i}") for i in range(500, 1000)])
            selects = [conn.execute("SELECT %s::int * 2, current_database()", (i,)) for i in range(300)]
            count = conn.execute("SELECT count(*), sum(id) FROM pipe")
        assert [c.fetchone() for c in selects] == [(i * 2, "app") for i in range(300)]
        assert count.fetchone() == (1000, sum(range(1000)))

        # An error inside a pipeline aborts the rest up to the Sync; the session recovers.
        with pytest.raises(psycopg.errors.DivisionByZero):
            with conn.pipeline():
                conn.execute("SELECT 1")
                conn.execute("SELECT 1/0")
                conn.execute("INSERT INTO pipe VALUES (-1, 'never')")
        with conn.pipeline():
            after = conn.execute("SELECT count(*) FROM pipe WHERE id = -1")
        assert after.fetchone() == (0,)

        # A transaction in pipeline mode.
        conn.autocommit = False
        with conn.pipeline():
            for i in range(100):
                conn.execute("UPDATE pipe SET v = %s WHERE id = %s", (f"u{i}", i))
            conn.commit()
        conn.autocommit = True
        assert conn.execute("SELECT count(*) FROM pipe WHERE v LIKE 'u%'").fetchone() == (100,)

    # What the proxy tracks (and PAUSE relies on) is back at a transaction boundary.
    with proxy.connect() as conn:
        with conn.pipeline():
            for i in range(50):
                conn.execute("SELECT %s::int", (i,))
        with pytest.raises(psycopg.errors.DivisionByZero):
            with conn.pipeline():
                conn.execute("SELECT 1/0")
                conn.execute("SELECT 2")
        row = [c for c in proxy.admin_dicts("SHOW CLIENTS") if c["database"] == "app"][0]
        assert (row["state"], row["tx"], row["pending"]) == ("active", "I", "0"), row


def test_psycopg_prepared(proxy):
    with proxy.connect(prepare_threshold=0) as conn:
        conn.execute("CREATE TABLE prep (id int PRIMARY KEY, v text)")
        for i in range(200):
            conn.execute("INSERT INTO prep VALUES (%s, %s)", (i, f"v{i}"))
        for i in range(0, 200, 7):
            assert conn.execute("SELECT v FROM prep WHERE id = %s", (i,)).fetchone() == (f"v{i}",)
        # Binary results through a prepared statement too.
        cur = conn.cursor(binary=True)
        assert cur.execute("SELECT id, v FROM prep WHERE id = %s", (42,)).fetchone() == (42, "v42")
        names = [r[0] for r in conn.execute(
            "SELECT name FROM pg_prepared_statements WHERE name LIKE '\\_pg3\\_%%'").fetchall()]
        assert len(names) >= 3, names  # the INSERT, the two SELECTs (and this one)
        count_sql = "SELECT count(*) FROM pg_prepared_statements"
        conn.execute(count_sql)  # prepared now, so counting does not change the count
        row = [c for c in proxy.admin_dicts("SHOW CLIENTS") if c["database"] == "app"][0]
        assert int(row["prepared"]) == conn.execute(count_sql).fetchone()[0], row
        # An error in a prepared statement leaves the others working.
        with pytest.raises(psycopg.errors.UniqueViolation):
            conn.execute("INSERT INTO prep VALUES (%s, %s)", (1, "dup"))
        assert conn.execute("SELECT v FROM prep WHERE id = %s", (5,)).fetchone() == ("v5",)


NODE_SCRIPT = r"""
const { Client } = require('pg');
(async () => {
  const c = new Client({ host: '127.0.0.1', port: Number(process.env.PROXY_PORT),
                         user: 'postgres', database: 'app' });
  await c.connect();
  const sums = [];
  for (let i = 0; i < 8; i++) {
    const r = await c.query({ name: 'q1', text: 'SELECT $1::int + $2::int AS s', values: [i, 100] });
    sums.push(r.rows[0].s);
  }
  // Queued concurrently: node-postgres sends them one after another on one connection.
  const many = await Promise.all([...Array(20).keys()].map(i =>
    c.query({ name: 'q2', text: 'SELECT $1::text || current_database() AS t', values: ['n' + i] })));
  const prepared = await c.query({ name: 'q3',
    text: "SELECT name FROM pg_prepared_statements WHERE name = ANY($1) ORDER BY name",
    values: [['q1', 'q2', 'q3']] });
  let error = null;
  try {
    await c.query({ name: 'q4', text: 'SELECT 1 / $1::int', values: [0] });
  } catch (e) { error = e.code; }
  const again = await c.query({ name: 'q1', text: 'SELECT $1::int + $2::int AS s', values: [1, 1] });
  await c.end();
  console.log(JSON.stringify({ sums, many: many.map(r => r.rows[0].t),
                               prepared: prepared.rows.map(r => r.name), error,
                               again: again.rows[0].s }));
})().catch(e => { console.error(e); process.exit(1); });
"""


def test_node_postgres_named_prepared(proxy, prerequisites, tmp_path):
    cache = node_pg_dir(prerequisites)
    script = tmp_path / "named.js"
    script.write_text(NODE_SCRIPT)
    env = dict(os.environ, PROXY_PORT=str(proxy.port), NODE_PATH=str(cache / "node_modules"))
    result = subprocess.run(["node", str(script)], env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr + proxy.log_tail()
    out = json.loads(result.stdout)
    assert out["sums"] == [i + 100 for i in range(8)]
    assert out["many"] == [f"n{i}app" for i in range(20)]
    assert out["prepared"] == ["q1", "q2", "q3"]
    assert out["error"] == "22012"
    assert out["again"] == 2


# ---- cancel ----------------------------------------------------------------

def test_cancel_psycopg(pg15, proxy):
    with proxy.connect() as conn:
        start = time.monotonic()
        join = in_thread(lambda: conn.execute("SELECT pg_sleep(30)"))
        wait_for(lambda: active_backends(pg15, "app", "SELECT pg_sleep(30)%"), 20,
                 "pg_sleep to be active on the server")
        conn.cancel()
        _, error, _ = join(40)
        elapsed = time.monotonic() - start
        assert isinstance(error, psycopg.errors.QueryCanceled), repr(error)
        assert error.sqlstate == "57014"
        assert elapsed < 10, f"the cancel took {elapsed:.1f} s: it did not reach the server"
        # The session goes on.
        assert conn.execute("SELECT 'after cancel'").fetchone() == ("after cancel",)
    assert "cancel request for" in proxy.log()


def test_cancel_psql(pg15, proxy):
    start = time.monotonic()
    psql = subprocess.Popen(["/usr/bin/psql", "-X", "-d", proxy.dsn(), "-c", "SELECT pg_sleep(30)"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        wait_for(lambda: active_backends(pg15, "app", "SELECT pg_sleep(30)%"), 20,
                 "pg_sleep to be active on the server")
        psql.send_signal(signal.SIGINT)  # psql sends a CancelRequest
        out, err = psql.communicate(timeout=40)
    finally:
        if psql.poll() is None:
            psql.kill()
            psql.wait()
    elapsed = time.monotonic() - start
    assert psql.returncode == 1, out + err
    assert "canceling statement due to user request" in err
    assert elapsed < 10, f"the cancel took {elapsed:.1f} s"


def test_cancel_with_wrong_key_is_ignored(pg15, proxy):
    with proxy.connect() as conn:
        join = in_thread(lambda: conn.execute("SELECT pg_sleep(2), 'finished'").fetchone())
        wait_for(lambda: active_backends(pg15, "app", "SELECT pg_sleep(2)%"), 20, "pg_sleep(2)")
        # A CancelRequest with a made-up key must not cancel anybody's query.
        pid = conn.info.backend_pid
        with socket.create_connection(("127.0.0.1", proxy.port), timeout=10) as s:
            s.sendall(struct.pack("!IIII", 16, 80877102, pid, 12345))
            assert read_until_closed(s) == []
        result, error, _ = join(40)
        assert error is None, repr(error)
        assert result[1] == "finished"


# ---- LISTEN / NOTIFY -------------------------------------------------------

def test_listen_notify(proxy):
    with proxy.connect() as listener, proxy.connect() as notifier:
        listener.execute("LISTEN proxy_channel")
        notifier_pid = notifier.execute("SELECT pg_backend_pid()").fetchone()[0]
        notifier.execute("NOTIFY proxy_channel, 'hello'")
        assert wait_notify(listener) == ("proxy_channel", "hello", notifier_pid)

        # Inside a transaction: delivered at COMMIT, in order.
        with notifier.transaction():
            notifier.execute("SELECT pg_notify('proxy_channel', 'one')")
            notifier.execute("SELECT pg_notify('proxy_channel', 'two')")
        assert wait_notify(listener)[1] == "one"
        assert wait_notify(listener)[1] == "two"

        # A notification that arrives while the listener is idle, with a big payload.
        payload = "x" * 7000
        notifier.execute("SELECT pg_notify('proxy_channel', %s)", (payload,))
        assert wait_notify(listener)[1] == payload


# ---- other majors ----------------------------------------------------------

@pytest.mark.parametrize("major", [13, 17])
def test_other_majors(pg_factory, proxy_factory, prerequisites, major):
    """Queries, COPY, prepared statements, pgbench and cancel against 13 and 17."""
    cluster = pg_factory(major)
    cluster.execute("CREATE DATABASE app")
    p = proxy_factory(cluster)
    version = p.psql(["-Atc", "SHOW server_version_num"]).stdout.strip()
    assert int(version) // 10000 == major

    p.psql(["-c", "CREATE TABLE t (id int PRIMARY KEY, v text)",
            "-c", "INSERT INTO t SELECT g, md5(g::text) FROM generate_series(1, 20000) g"])
    dump = p.psql(["-Atc", "COPY t TO STDOUT"]).stdout
    p.psql(["-c", "CREATE TABLE t2 (LIKE t)", "-c", "COPY t2 FROM STDIN"], input=dump)
    assert table_digest(cluster, "t2") == table_digest(cluster, "t")

    with p.connect(prepare_threshold=0) as conn:
        for i in range(1, 50):
            assert conn.execute("SELECT v FROM t WHERE id = %s", (i,)).fetchone()[0] == \
                hashlib.md5(str(i).encode()).hexdigest()
        start = time.monotonic()
        join = in_thread(lambda: conn.execute("SELECT pg_sleep(30)"))
        wait_for(lambda: active_backends(cluster, "app", "SELECT pg_sleep(30)%"), 20, "pg_sleep")
        conn.cancel()
        _, error, _ = join(40)
        assert isinstance(error, psycopg.errors.QueryCanceled), repr(error)
        assert time.monotonic() - start < 10

    need_tool(prerequisites, PGBENCH, "apt-get install postgresql-contrib")
    assert run_pgbench(p, ["-i", "-q", "-s", "1"], dbname="app").returncode == 0
    result = run_pgbench(p, ["-M", "prepared", "-c", "4", "-j", "2", "-t", "100"], dbname="app")
    assert result.returncode == 0, result.stdout + result.stderr
    processed, failed = pgbench_counts(result.stdout)
    assert (processed, failed) == (400, 0), result.stdout
    assert cluster.execute("SELECT count(*) FROM pgbench_history", dbname="app") == [(400,)]


# ---- faults ----------------------------------------------------------------

def test_backend_terminated_mid_query(pg15, proxy):
    conn = proxy.connect()
    try:
        join = in_thread(lambda: conn.execute("SELECT pg_sleep(30)"))
        pids = wait_for(lambda: active_backends(pg15, "app", "SELECT pg_sleep(30)%"), 20, "pg_sleep")
        assert pg15.execute("SELECT pg_terminate_backend(%s)", params=(pids[0],)) == [(True,)]
        _, error, seconds = join(40)
        assert isinstance(error, psycopg.OperationalError), repr(error)
        assert error.sqlstate is None or error.sqlstate == "57P01" or error.sqlstate.startswith("08"), \
            (error.sqlstate, str(error))
        assert seconds < 10
    finally:
        conn.close()
    # The proxy lets go of that server and serves new clients.
    wait_for(lambda: all(r["backend_pid"] != str(pids[0]) for r in proxy.admin_dicts("SHOW SERVERS")),
             20, "the terminated server to leave SHOW SERVERS")
    with proxy.connect() as again:
        assert again.execute("SELECT 'alive'").fetchone() == ("alive",)


def check_still_serving(proxy, **kw):
    assert proxy.running(), "the proxy died:\n" + proxy.log_tail()
    with proxy.connect(**kw) as conn:
        assert conn.execute("SELECT 42").fetchone() == (42,)


def expect_error_or_close(messages, sqlstates=None):
    """The proxy answered with nothing but (at most) one ErrorResponse before closing."""
    assert all(m[0] == b"E" for m in messages), messages
    if messages and sqlstates is not None:
        fields = error_fields(messages[0][1])
        assert fields.get("C") in sqlstates, fields


STARTUP_GARBAGE = {
    # A startup packet announcing 3 bytes: shorter than its own header.
    "startup_length_3": struct.pack("!I", 3),
    # The same length word followed by junk.
    "startup_length_3_and_more": struct.pack("!I", 3) + b"\x00" * 32,
    # Bytes that are no protocol at all: 0x47455420 ("GET ") is a 1.2 GB length.
    "http_request": b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n",
    # A plausible length, an impossible protocol code.
    "bad_code": struct.pack("!II", 16, 0xFFFFFFFF) + b"\x01" * 8,
    # A startup packet announcing 2 GB.
    "startup_length_2gb": struct.pack("!I", 0x80000000) + b"\x00\x03\x00\x00",
    # Parameters that are not NUL-terminated.
    "unterminated_params": struct.pack("!II", 8 + 9, 3 << 16) + b"user\0post",
    # TLS ClientHello without an SSLRequest first.
    "tls_without_sslrequest": bytes.fromhex("16030100a1010000") + b"\x03\x03" + b"\x00" * 64,
}


@pytest.mark.parametrize("name", list(STARTUP_GARBAGE))
def test_malformed_startup(pg15, proxy_factory, name):
    # A long login timeout, so that a proxy waiting for bytes that never come shows as a hang.
    p = proxy_factory(pg15, proxy={"client_login_timeout": "60s"})
    with socket.create_connection(("127.0.0.1", p.port), timeout=10) as s:
        s.sendall(STARTUP_GARBAGE[name])
        expect_error_or_close(read_until_closed(s), {"08P01", "0A000"})
    check_still_serving(p)


def test_protocol_2_startup(pg15, proxy):
    with socket.create_connection(("127.0.0.1", proxy.port), timeout=10) as s:
        s.sendall(startup_packet({"user": "postgres", "database": "app"}, code=0x00020000))
        messages = read_until_closed(s)
        assert len(messages) == 1 and messages[0][0] == b"E", messages
        fields = error_fields(messages[0][1])
        assert fields["C"] == "0A000"
        assert "unsupported frontend protocol 2.0" in fields["M"]
    check_still_serving(proxy)


AFTER_LOGIN_GARBAGE = {
    # A Query announcing 2 GB: more than any message may be.
    "query_length_2gb": b"Q" + struct.pack("!I", 0x80000000) + b"SELECT 1\0",
    # A length word shorter than itself.
    "query_length_2": b"Q" + struct.pack("!I", 2),
    # An unknown message type (the server rejects it; the client must hear so).
    "unknown_type": b"\x01" + struct.pack("!I", 8) + b"abcd",
    # Garbage: type 0xfe, a length of 0xfefefefe.
    "garbage_bytes": b"\xfe" * 200,
}


@pytest.mark.parametrize("name", list(AFTER_LOGIN_GARBAGE))
def test_malformed_after_login(pg15, proxy, name):
    s = raw_login(proxy.port)
    with s:
        s.sendall(AFTER_LOGIN_GARBAGE[name])
        messages = read_until_closed(s)
        assert all(m[0] in (b"E", b"N") for m in messages), messages
    check_still_serving(proxy)
    # Its server connection is closed or back in the pool, reset: none is left serving anyone.
    wait_for(lambda: all(r["state"] == "idle" and r["client"] is None for r in proxy.admin_dicts("SHOW SERVERS")),
             20, "the server connection to close or go idle")


def test_unknown_database(proxy):
    error = login_error(proxy.port, database="no_such_db")
    assert error["C"] == "3D000", error
    assert error["S"] == "FATAL"
    assert error["M"] == 'database "no_such_db" does not exist'
    with pytest.raises(psycopg.OperationalError, match='database "no_such_db" does not exist'):
        proxy.connect("no_such_db")
    check_still_serving(proxy)


def test_database_listed_but_missing_on_server(pg15, proxy_factory):
    p = proxy_factory(pg15, databases=("app", "ghost"))
    # The server's own refusal, passed on.
    error = login_error(p.port, database="ghost")
    assert (error["S"], error["C"]) == ("FATAL", "3D000"), error
    assert error["M"] == 'database "ghost" does not exist'
    check_still_serving(p)


def test_max_client_conn(pg15, proxy_factory):
    p = proxy_factory(pg15, proxy={"max_client_conn": 5})
    conns = [p.connect() for _ in range(5)]
    try:
        for c in conns:
            assert c.execute("SELECT 1").fetchone() == (1,)
        error = login_error(p.port)
        assert error["C"] == "53300", error
        assert "too many clients" in error["M"]
        with pytest.raises(psycopg.OperationalError, match="too many clients"):
            p.connect()
        # The five are unharmed, and a freed slot can be taken again.
        for c in conns:
            assert c.execute("SELECT 2").fetchone() == (2,)
        conns.pop().close()

        def reconnect():
            try:
                conns.append(p.connect())
                return True
            except psycopg.OperationalError as e:
                assert "too many clients" in str(e)
                return False
        wait_for(reconnect, 20, "a slot to free up")
        assert conns[-1].execute("SELECT 3").fetchone() == (3,)
    finally:
        for c in conns:
            c.close()


def test_source_down(proxy_factory):
    # A source where nothing listens.
    down = types.SimpleNamespace(port=free_port(), superuser="postgres", password=None)
    p = proxy_factory(down)
    error = login_error(p.port)
    assert error["S"] == "FATAL"
    assert error["C"] == "08006", error
    assert "could not connect to the source cluster" in error["M"]
    assert p.running()


def test_replication_connection_refused(proxy):
    error, sock, _ = pg_login_params(proxy.port, {"user": "postgres", "database": "app",
                                                  "replication": "database"})
    assert sock is None
    assert error["C"] == "08P01", error
    check_still_serving(proxy)


def pg_login_params(port, params):
    with socket.create_connection(("127.0.0.1", port), timeout=20) as s:
        s.sendall(startup_packet(params))
        messages = read_until_closed(s)
        errors = [error_fields(m[1]) for m in messages if m[0] == b"E"]
        return (errors[0] if errors else None), None, messages


def test_gssenc_request_declined(proxy):
    s = socket.create_connection(("127.0.0.1", proxy.port), timeout=20)
    with s:
        s.sendall(struct.pack("!II", 8, 80877104))
        assert s.recv(1) == b"N"
        s.sendall(startup_packet({"user": "postgres", "database": "app"}))
        kinds = []
        while not kinds or kinds[-1] != b"Z":
            msg = read_message(s)
            assert msg is not None and msg[0] != b"E", msg
            kinds.append(msg[0])


@pytest.mark.parametrize("minor", [2, 9])
def test_protocol_minor_negotiation(pg15, proxy, minor):
    """A client asking for 3.<minor> and an unknown _pq_ option: NegotiateProtocolVersion, then
    a working session whose cancel key (4 bytes in 3.0, longer from 3.2 on) cancels a query."""
    with socket.create_connection(("127.0.0.1", proxy.port), timeout=20) as s:
        s.sendall(startup_packet({"user": "postgres", "database": "app", "_pq_.test_option": "x"},
                                 code=(3 << 16) | minor))
        messages = []
        while not messages or messages[-1][0] != b"Z":
            msg = read_message(s)
            assert msg is not None and msg[0] != b"E", (msg, messages)
            messages.append(msg)
        negotiate = [body for kind, body in messages if kind == b"v"]
        assert len(negotiate) == 1, messages
        newest, count = struct.unpack("!II", negotiate[0][:8])
        assert newest >> 16 == 3 and (newest & 0xFFFF) in (0, 2), hex(newest)
        assert count == 1 and negotiate[0][8:] == b"_pq_.test_option\0"
        keys = [body for kind, body in messages if kind == b"K"]
        assert len(keys) == 1
        pid, key = struct.unpack("!I", keys[0][:4])[0], keys[0][4:]
        if newest & 0xFFFF == 0:
            assert len(key) == 4
        else:
            assert 4 <= len(key) <= 256

        q = b"SELECT pg_sleep(30)"
        s.sendall(b"Q" + struct.pack("!I", 4 + len(q) + 1) + q + b"\0")
        wait_for(lambda: active_backends(pg15, "app", "SELECT pg_sleep(30)%"), 20, "pg_sleep")
        with socket.create_connection(("127.0.0.1", proxy.port), timeout=20) as c:
            c.sendall(struct.pack("!III", 12 + len(key), 80877102, pid) + key)
            assert read_until_closed(c) == []
        kinds, codes = [], []
        while not kinds or kinds[-1] != b"Z":
            mtype, body = read_message(s)
            kinds.append(mtype)
            if mtype == b"E":
                codes.append(error_fields(body)["C"])
        assert codes == ["57014"], (kinds, codes)


@pytest.mark.parametrize("name", ["no_user", "too_long"])
def test_bad_startup_contents(proxy, name):
    if name == "no_user":
        packet = startup_packet({"database": "app"})
    else:
        packet = startup_packet({"user": "postgres", "database": "app", "application_name": "x" * 20000})
    with socket.create_connection(("127.0.0.1", proxy.port), timeout=20) as s:
        try:
            s.sendall(packet)
        except (BrokenPipeError, ConnectionResetError):
            pass  # closed before it read everything: fine
        expect_error_or_close(read_until_closed(s), {"08P01", "28000"})
    check_still_serving(proxy)


def proxy_rss_kb(proxy):
    for line in open(f"/proc/{proxy.proc.pid}/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


def test_slow_client_backpressure(pg15, proxy):
    """A client that stops reading a 1 GB result must not make the proxy buffer it."""
    before = proxy_rss_kb(proxy)
    with raw_login(proxy.port) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 * 1024)
        q = b"SELECT repeat('x', 1000000) FROM generate_series(1, 1000)"
        s.sendall(b"Q" + struct.pack("!I", 4 + len(q) + 1) + q + b"\0")
        # The server blocks writing to the proxy once the proxy stops reading.
        wait_for(lambda: pg15.execute(
            "SELECT 1 FROM pg_stat_activity WHERE datname = 'app' AND wait_event = 'ClientWrite'"), 60,
            "the server to block on ClientWrite")
        grown_mb = (proxy_rss_kb(proxy) - before) / 1024
        assert grown_mb < 64, f"the proxy's memory grew by {grown_mb:.0f} MB for a client that does not read"
    check_still_serving(proxy)


def test_cancel_at_max_client_conn(pg15, proxy_factory):
    """A CancelRequest is not a client: it must get through when max_client_conn is reached,
    as PostgreSQL serves cancel requests beyond max_connections."""
    p = proxy_factory(pg15, proxy={"max_client_conn": 2})
    with p.connect() as busy, p.connect() as idle:
        assert idle.execute("SELECT 1").fetchone() == (1,)
        start = time.monotonic()
        join = in_thread(lambda: busy.execute("SELECT pg_sleep(15)"))
        wait_for(lambda: active_backends(pg15, "app", "SELECT pg_sleep(15)%"), 20, "pg_sleep")
        busy.cancel()
        _, error, _ = join(40)
        assert isinstance(error, psycopg.errors.QueryCanceled), \
            f"{error!r}: the cancel was lost at max_client_conn\n{p.log_tail(5)}"
        assert time.monotonic() - start < 10


def test_client_login_timeout(pg15, proxy_factory):
    p = proxy_factory(pg15, proxy={"client_login_timeout": "1s"})
    with socket.create_connection(("127.0.0.1", p.port), timeout=10) as s:
        packet = startup_packet({"user": "postgres", "database": "app"})
        s.sendall(packet[: len(packet) // 2])  # and then nothing
        messages = read_until_closed(s, timeout=30)
        expect_error_or_close(messages, {"08P01"})
    assert "client_login_timeout" in p.log()
    check_still_serving(p)


def test_client_login_timeout_during_auth(pg15, proxy_factory):
    """A client that stops in the middle of SCRAM is closed too."""
    p = proxy_factory(pg15, auth_type="scram-sha-256", users={"postgres": "pw"},
                      proxy={"client_login_timeout": "1s"})
    with socket.create_connection(("127.0.0.1", p.port), timeout=10) as s:
        s.sendall(startup_packet({"user": "postgres", "database": "app"}))
        mtype, body = read_message(s)
        assert mtype == b"R" and struct.unpack("!I", body[:4])[0] == 10  # SASL
        messages = read_until_closed(s, timeout=30)
        expect_error_or_close(messages, {"08P01"})
    check_still_serving(p, password="pw")


def test_unix_sockets(pg15, proxy_factory, tmp_path):
    """Clients over the proxy's Unix socket; the proxy to the source over the source's."""
    sockdir = tmp_path / "sock"
    sockdir.mkdir()
    p = proxy_factory(pg15, proxy={"unix_socket_dir": str(sockdir)},
                      source_extra={"host": str(pg15.socket_dir)})
    assert (sockdir / f".s.PGSQL.{p.port}").exists()
    out = p.psql(["-Atc", "SELECT current_database(), inet_client_addr() IS NULL"], host=str(sockdir)).stdout
    # inet_client_addr() is NULL: the proxy reached the server over its Unix socket.
    assert out.strip() == "app|t"
    p.stop()
    assert not (sockdir / f".s.PGSQL.{p.port}").exists()


# ---- many clients ----------------------------------------------------------

def test_thousand_clients(pg15, proxy_factory, prerequisites):
    limit = raise_nofile_limit(4 * MANY_CLIENTS)
    if limit < 2 * MANY_CLIENTS + 100:
        prerequisites.missing(f"open files limit {limit} is too low for {MANY_CLIENTS} connections "
                              "(ulimit -n)")
    # Each of them holds a server connection of its own (session mode): the pool must be that large.
    p = proxy_factory(pg15, proxy={"max_client_conn": MANY_CLIENTS + 50, "default_pool_size": MANY_CLIENTS + 50})
    dsn = p.dsn()

    async def one(i):
        conn = await psycopg.AsyncConnection.connect(dsn, autocommit=True, connect_timeout=120)
        cur = await conn.execute("SELECT 1, %s::int", (i,))
        return conn, await cur.fetchone()

    async def run():
        results = await asyncio.gather(*(one(i) for i in range(MANY_CLIENTS)), return_exceptions=True)
        conns = [r[0] for r in results if not isinstance(r, BaseException)]
        try:
            errors = [r for r in results if isinstance(r, BaseException)]
            assert not errors, f"{len(errors)} of {MANY_CLIENTS} failed; first: {errors[0]!r}"
            assert [r[1] for r in results] == [(1, i) for i in range(MANY_CLIENTS)]
            clients = [r for r in p.admin_dicts("SHOW CLIENTS") if r["database"] == "app"]
            assert len(clients) == MANY_CLIENTS
            assert {r["state"] for r in clients} == {"active"}
            assert len(p.admin_dicts("SHOW SERVERS")) == MANY_CLIENTS
            # Every one of them is still usable.
            rows = await asyncio.gather(*(c.execute("SELECT 2") for c in conns))
            assert len(rows) == MANY_CLIENTS
        finally:
            await asyncio.gather(*(c.close() for c in conns), return_exceptions=True)

    asyncio.run(run())
    wait_for(lambda: p.admin_dicts("SHOW DATABASES")[0]["clients"] == "0", 30,
             "every client to be gone")
