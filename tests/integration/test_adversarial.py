"""pghandoff attacked as a hostile client, a careless operator and an odd schema would.

Each test keeps a case that held up when tried by hand as a regression test:
floods of malformed startup packets, slowloris logins, clients that vanish in
the middle of a COPY or a transaction, many login cycles with flat memory,
hostile table names and types replicated exactly, and two cutovers asked for
at once.
"""

import random
import socket
import struct
import subprocess
import threading
import time

import psycopg
import pytest

from cutoverfixtures import migration, psql_value  # noqa: F401
from proxyfixtures import (  # noqa: F401  (fixtures are used by name)
    module_pg_factory, proxy_factory, raw_login, read_message, read_until_closed, startup_packet, wait_for)
from replfixtures import (  # noqa: F401
    assert_tables_equal, cluster_pool, clusters, make_database, replicator_factory, wait_caught_up)


@pytest.fixture(scope="module")
def pg15(module_pg_factory):
    cluster = module_pg_factory(15, settings={"max_connections": 300})
    cluster.execute("CREATE DATABASE app")
    return cluster


def proxy_rss_kb(proxy):
    for line in open(f"/proc/{proxy.proc.pid}/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


def still_serving(proxy):
    assert proxy.running(), "the proxy died:\n" + proxy.log_tail()
    with proxy.connect() as conn:
        assert conn.execute("SELECT 42").fetchone() == (42,)


def app_backends(cluster, like):
    """Backends of database app (other than the asking one) whose query matches like."""
    return cluster.execute("SELECT count(*) FROM pg_stat_activity WHERE datname = 'app' AND query LIKE %s "
                           "AND pid <> pg_backend_pid()", dbname="app", params=(like,))[0][0]


# ---- hostile clients -------------------------------------------------------

def garbage_startup(rng):
    """One malformed or random startup-phase byte string."""
    shape = rng.randrange(6)
    if shape == 0:  # pure noise
        return rng.randbytes(rng.randrange(1, 300))
    if shape == 1:  # a random length word, then noise
        return struct.pack("!I", rng.getrandbits(32)) + rng.randbytes(rng.randrange(0, 64))
    if shape == 2:  # a plausible length, a random code
        body = rng.randbytes(rng.randrange(0, 64))
        return struct.pack("!II", 8 + len(body), rng.getrandbits(32)) + body
    if shape == 3:  # protocol 3.0, parameters cut or unterminated
        params = b"user\0postgres\0database\0app\0\0"
        cut = params[:rng.randrange(len(params))]
        return struct.pack("!II", 8 + len(params), 3 << 16) + cut
    if shape == 4:  # protocol 3.0 with random parameter bytes
        body = rng.randbytes(rng.randrange(1, 200))
        return struct.pack("!II", 8 + len(body), 3 << 16) + body
    # a special request (SSL, GSSENC, cancel) with a wrong length or trailing noise
    code = rng.choice([80877103, 80877104, 80877102])
    return struct.pack("!II", rng.choice([8, 12, 16, 7, 100]), code) + rng.randbytes(rng.randrange(0, 16))


def test_malformed_startup_flood(pg15, proxy_factory):
    """2000 malformed startup packets, one connection each: the proxy stays up and forgets them all."""
    p = proxy_factory(pg15, proxy={"client_login_timeout": "5s"})
    rng = random.Random(20261208)
    for i in range(2000):
        with socket.create_connection(("127.0.0.1", p.port), timeout=10) as s:
            try:
                s.sendall(garbage_startup(rng))
            except OSError:
                pass  # the proxy may close first
        if i % 500 == 499:
            still_serving(p)
    still_serving(p)
    # Every one of them is gone from the proxy, none reached the server as a session: what is left
    # there is the pooled connection the checks in between used, idle.
    wait_for(lambda: len(p.admin_dicts("SHOW CLIENTS")) <= 1, 30, "the garbage connections to close")
    wait_for(lambda: app_backends(pg15, "%") == len([r for r in p.admin_dicts("SHOW SERVERS") if r["state"] == "idle"]),
             30, "no session left on the server but the pool's idle ones")


def test_slowloris_does_not_starve_logins(pg15, proxy_factory):
    """Clients dribbling their startup packet a byte at a time neither starve others nor stay."""
    p = proxy_factory(pg15, proxy={"client_login_timeout": "3s"})
    packet = startup_packet({"user": "postgres", "database": "app"})
    slow = [socket.create_connection(("127.0.0.1", p.port), timeout=10) for _ in range(100)]
    stop = threading.Event()

    def dribble():
        # The attack itself: one byte every 200 ms, never a whole packet.
        for i in range(len(packet) - 1):
            if stop.is_set():
                return
            for s in slow:
                try:
                    s.send(packet[i:i + 1])
                except OSError:
                    pass
            time.sleep(0.2)

    t = threading.Thread(target=dribble, daemon=True)
    t.start()
    try:
        # A normal client is served while they dribble.
        for _ in range(5):
            still_serving(p)

        # Each slow client is dropped by the login timeout.
        def all_closed():
            for s in slow:
                s.settimeout(0.05)
                try:
                    if s.recv(4096) != b"":
                        continue  # an ErrorResponse first; the close follows
                except socket.timeout:
                    return False
                except OSError:
                    pass
            return True
        wait_for(all_closed, 60, "the slow logins to be closed by client_login_timeout")
    finally:
        stop.set()
        t.join(10)
        for s in slow:
            s.close()
    still_serving(p)


def send_query(sock, sql):
    q = sql.encode() + b"\0"
    sock.sendall(b"Q" + struct.pack("!I", 4 + len(q)) + q)


def test_disconnect_mid_copy(pg15, proxy_factory):
    """A client that vanishes inside COPY FROM STDIN leaves no rows, no backend and no lock."""
    pg15.execute("CREATE TABLE IF NOT EXISTS copied (id int)", dbname="app")
    pg15.execute("TRUNCATE copied", dbname="app")
    p = proxy_factory(pg15)
    s = raw_login(p.port)
    send_query(s, "COPY copied FROM STDIN")
    kind, _ = read_message(s)
    assert kind == b"G", kind  # CopyInResponse
    data = b"".join(b"%d\n" % i for i in range(1000))
    s.sendall(b"d" + struct.pack("!I", 4 + len(data)) + data)
    s.close()
    wait_for(lambda: app_backends(pg15, "COPY copied%") == 0, 30, "the COPY's backend to go")
    assert pg15.execute("SELECT count(*) FROM copied", dbname="app") == [(0,)]
    pg15.execute("BEGIN; LOCK TABLE copied NOWAIT; COMMIT", dbname="app")
    still_serving(p)


def test_disconnect_mid_transaction(pg15, proxy_factory):
    """A client that vanishes inside a transaction: its writes and locks are rolled back at once."""
    pg15.execute("CREATE TABLE IF NOT EXISTS written (id int)", dbname="app")
    pg15.execute("TRUNCATE written", dbname="app")
    p = proxy_factory(pg15)
    s = raw_login(p.port)
    send_query(s, "BEGIN; INSERT INTO written SELECT generate_series(1, 100); LOCK TABLE written")
    while read_message(s)[0] != b"Z":
        pass
    s.close()
    wait_for(lambda: app_backends(pg15, "%LOCK TABLE written%") == 0, 30, "the transaction's backend to go")
    assert pg15.execute("SELECT count(*) FROM written", dbname="app") == [(0,)]
    pg15.execute("BEGIN; LOCK TABLE written NOWAIT; COMMIT", dbname="app")
    still_serving(p)


def test_login_cycles_keep_memory_flat(pg15, proxy_factory, monkeypatch):
    """1500 login/query/logout cycles: the proxy's memory after the first 500 stays flat."""
    # A sanitized build keeps freed memory in quarantine; keep it small so
    # what is measured is what the proxy holds (leaks are LeakSanitizer's).
    monkeypatch.setenv("ASAN_OPTIONS", "detect_leaks=1:abort_on_error=1:quarantine_size_mb=1")
    p = proxy_factory(pg15)
    for i in range(1500):
        with p.connect() as conn:
            conn.execute("SELECT 1")
        if i == 499:
            after_warm_up = proxy_rss_kb(p)
    grown_kb = proxy_rss_kb(p) - after_warm_up
    # 1000 cycles: a leak of 8 kB each would show as 8 MB.
    assert grown_kb < 8 * 1024, f"the proxy grew by {grown_kb} kB over 1000 login cycles"
    wait_for(lambda: len(p.admin_dicts("SHOW CLIENTS")) <= 1, 30, "every client gone")
    still_serving(p)


# ---- hostile schemas -------------------------------------------------------

HOSTILE_SCHEMA = r'''
CREATE SCHEMA "Sch.ema ""quoted""";
CREATE TYPE "Sch.ema ""quoted"""."mood; DROP" AS ENUM ('it''s', 'with space', 'ünï', '');
CREATE DOMAIN "Sch.ema ""quoted""".posint AS int CHECK (VALUE > 0);
CREATE TYPE "Sch.ema ""quoted""".pair AS (a text, "b c" int[]);
CREATE TABLE "Sch.ema ""quoted"""."Ta""ble; DROP TABLE x; --" (
    "select" int PRIMARY KEY,
    "Col ""Q""" text,
    "ünïcødé 表" "Sch.ema ""quoted"""."mood; DROP",
    d "Sch.ema ""quoted""".posint,
    p "Sch.ema ""quoted""".pair,
    ps "Sch.ema ""quoted""".pair[],
    j jsonb,
    b bytea,
    n numeric,
    f float8,
    ts timestamptz,
    r int4range,
    tv tsvector,
    arr text[][]
);
CREATE TABLE public."with space" ("a b" text, id bigint PRIMARY KEY);
CREATE TABLE public."UPPER" (id int PRIMARY KEY, "UPPER" text);
CREATE TABLE public."upper" (id int PRIMARY KEY, "upper" text);
'''

HOSTILE_TABLE = '"Sch.ema ""quoted"""."Ta""ble; DROP TABLE x; --"'


def hostile_rows(base):
    values = []
    for i in range(base, base + 20):
        values.append(
            f"({i}, E'line\\nbreak\\ttab\\\\back ''quote'' {i}', "
            f"(ARRAY['it''s', 'with space', 'ünï', ''])[{i % 4 + 1}]::\"Sch.ema \"\"quoted\"\"\".\"mood; DROP\", "
            f"{i + 1}, ROW(E'\\\\x{i}', ARRAY[{i}, NULL])::\"Sch.ema \"\"quoted\"\"\".pair, "
            f"ARRAY[ROW('a,b', NULL), ROW(NULL, '{{}}')]::\"Sch.ema \"\"quoted\"\"\".pair[], "
            f"'{{\"k\\\\u0000\": \"\\\\u00e9\", \"n\": [{i}, null, 1e400]}}'::text::jsonb, "
            f"'\\x00ff{i:04x}00'::bytea, "
            f"(ARRAY['NaN', '-0', '1e-1000', '123456789012345678901234567890.123'])[{i % 4 + 1}]::numeric, "
            f"(ARRAY['Infinity', '-Infinity', 'NaN', '-0'])[{i % 4 + 1}]::float8, "
            f"(ARRAY['infinity', '-infinity', '2000-02-29 23:59:59.999999+14', 'epoch'])[{i % 4 + 1}]::timestamptz, "
            f"'[{i},{i + 10})'::int4range, "
            f"to_tsvector('simple', 'a:1 ''b c'' {i}'), "
            f"ARRAY[ARRAY['NULL', NULL], ARRAY['\"', '\\\\']])")
    return (f"INSERT INTO {HOSTILE_TABLE} VALUES " + ", ".join(values) + ";\n"
            f"INSERT INTO public.\"with space\" SELECT 'v' || g, g FROM generate_series({base}, {base + 19}) g;\n"
            f"INSERT INTO public.\"UPPER\" SELECT g, 'U' FROM generate_series({base}, {base + 19}) g;\n"
            f"INSERT INTO public.\"upper\" SELECT g, 'l' FROM generate_series({base}, {base + 19}) g;\n")


def run_script(cluster, dbname, sql):
    out = subprocess.run(["psql", "-XAtq", "-v", "ON_ERROR_STOP=1", "-d", cluster.dsn(dbname)],
                         input=sql, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr


def test_hostile_names_and_types_replicate_exactly(clusters, replicator_factory):
    """Names made of quotes, dots, spaces, keywords and unicode; values at every type's edge."""
    db = make_database(clusters, prefix="hostile")
    run_script(clusters.source, db, HOSTILE_SCHEMA + hostile_rows(1))
    r = replicator_factory(clusters, db)
    r.wait_streaming()
    # Streamed: inserts, updates of the key and of every column, deletes.
    run_script(clusters.source, db, hostile_rows(100) + f'''
UPDATE {HOSTILE_TABLE} SET "select" = "select" + 1000 WHERE "select" % 3 = 0;
UPDATE {HOSTILE_TABLE} SET "Col ""Q""" = NULL, p = NULL, j = '{{"x": "\\u2028"}}' WHERE "select" % 5 = 0;
DELETE FROM {HOSTILE_TABLE} WHERE "select" % 7 = 0;
DELETE FROM public."UPPER" WHERE id % 2 = 0;
''')
    wait_caught_up(clusters, db, r.origin, r)
    tables = assert_tables_equal(clusters, db)
    assert len(tables) == 4, tables
    assert clusters.target.execute(f"SELECT count(*) FROM {HOSTILE_TABLE}", dbname=db)[0][0] > 20


# ---- careless operators ----------------------------------------------------

def test_two_cutovers_at_once(migration):
    """Two `pghandoff cutover` at the same moment: one moves the clients, the other is refused."""
    m = migration(prepare=lambda dsn: psql_value(dsn, "CREATE TABLE t (id serial PRIMARY KEY)"))
    conn = m.proxy.connect(m.dbname)
    conn.execute("INSERT INTO t DEFAULT VALUES")
    cmd = [str(m.proxy.pghandoff.bin), "cutover", "-c", str(m.proxy.config_path)]
    runs = [subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(2)]
    results = [(proc.wait(timeout=180), *proc.communicate()) for proc in runs]
    codes = sorted(code for code, _, _ in results)
    assert codes[0] == 0 and codes[1] != 0, results
    refused = [out + err for code, out, err in results if code != 0][0]
    assert "already running" in refused or "already served by the target" in refused, refused
    # The clients moved once; the session goes on, on the target.
    assert conn.execute("SELECT inet_server_port()").fetchone()[0] == m.pair.target.port
    conn.execute("INSERT INTO t DEFAULT VALUES")
    assert m.proxy.report()["result"] == "completed"
    conn.close()
