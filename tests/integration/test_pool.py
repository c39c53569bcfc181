"""Server connection pools in session mode: reuse, reset, limits, timeouts, SHOW POOLS.

A client that leaves gives its server connection back; the next login of the
same user, database and startup parameters gets the same backend, reset to
what a fresh login sees.
"""

import asyncio
import json
import os
import subprocess
import threading

import psycopg
import pytest

from proxyfixtures import (  # noqa: F401  (fixtures are used by name)
    PGBENCH, module_pg_factory, pgbench_counts, proxy_factory, run_pgbench, wait_for)


@pytest.fixture(scope="module")
def pg15(module_pg_factory):
    cluster = module_pg_factory(15, settings={"max_connections": 300})
    cluster.execute("CREATE DATABASE app")
    cluster.execute("CREATE DATABASE bench")
    return cluster


@pytest.fixture
def db(pg15, request):
    """A database of the test's own, so the backends counted are its proxy's."""
    name = "t_" + request.node.name.split("[")[0][5:40]
    pg15.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
    pg15.execute(f"CREATE DATABASE {name}")
    return name


def backend_pid(conn):
    return conn.execute("SELECT pg_backend_pid()").fetchone()[0]


def backends(cluster, dbname="app"):
    """Client backends of dbname on the cluster, seen from outside the proxy."""
    rows = cluster.execute(
        f"SELECT pid FROM pg_stat_activity WHERE datname = '{dbname}' AND backend_type = 'client backend' "
        "AND pid <> pg_backend_pid()")
    return sorted(r[0] for r in rows)


def pools(proxy):
    return {(r["database"], r["user"]): r for r in proxy.admin_dicts("SHOW POOLS")}


def test_login_after_disconnect_reuses_the_backend_reset(pg15, db, proxy_factory):
    p = proxy_factory(pg15, databases=(db,))
    with p.connect(db, prepare_threshold=0) as conn:
        first = backend_pid(conn)
        conn.execute("SET work_mem = '7MB'")
        conn.execute("CREATE TEMP TABLE scratch (x int)")
        conn.execute("PREPARE sqlprep AS SELECT 1")
        conn.execute("LISTEN some_channel")
        conn.execute("SELECT %s::int", (1,), prepare=True)  # a protocol-level named statement
        assert conn.execute("SELECT count(*) FROM pg_prepared_statements").fetchone()[0] >= 2
    # The connection is reset, then parked: SHOW POOLS sees it idle.
    wait_for(lambda: pools(p)[(db, "postgres")]["sv_idle"] == "1", 20, "the connection to be parked")
    with p.connect(db) as conn:
        assert backend_pid(conn) == first
        assert conn.execute("SHOW work_mem").fetchone()[0] == "4MB"
        assert conn.execute("SELECT count(*) FROM pg_class "
                            "WHERE relnamespace = pg_my_temp_schema()").fetchone()[0] == 0
        assert conn.execute("SELECT count(*) FROM pg_prepared_statements").fetchone()[0] == 0
        assert conn.execute("SELECT count(*) FROM pg_listening_channels()").fetchone()[0] == 0
        row = pools(p)[(db, "postgres")]
        assert (row["cl_active"], row["sv_active"], row["sv_idle"], row["pool_mode"]) == \
            ("1", "1", "0", "session"), row
    assert backends(pg15, db) == [first]


def test_other_startup_parameters_get_their_own_connection(pg15, proxy_factory):
    p = proxy_factory(pg15)
    with p.connect(application_name="one") as conn:
        one = backend_pid(conn)
    wait_for(lambda: pools(p)[("app", "postgres")]["sv_idle"] == "1", 20, "the connection to be parked")
    with p.connect(application_name="two") as conn:
        assert backend_pid(conn) != one
        assert conn.execute("SHOW application_name").fetchone()[0] == "two"
    with p.connect(application_name="one") as conn:
        assert backend_pid(conn) == one
        assert conn.execute("SHOW application_name").fetchone()[0] == "one"


def test_client_leaving_inside_a_transaction_closes_its_server(pg15, db, proxy_factory):
    p = proxy_factory(pg15, databases=(db,))
    with p.connect(db) as conn:
        conn.execute("CREATE TABLE left_open (x int)")
    conn = p.connect(db, autocommit=False)
    pid = backend_pid(conn)
    conn.execute("INSERT INTO left_open VALUES (1)")
    conn.pgconn.finish()  # gone with its transaction open
    wait_for(lambda: pid not in backends(pg15, db), 20, "the backend of the unclean connection to end")
    with p.connect(db) as conn:
        assert backend_pid(conn) != pid
        assert conn.execute("SELECT count(*) FROM left_open").fetchone()[0] == 0


def test_full_pool_makes_clients_wait_then_serves_them(pg15, db, proxy_factory):
    p = proxy_factory(pg15, databases=(db,), proxy={"default_pool_size": 2})
    held = [p.connect(db), p.connect(db)]
    pids = [backend_pid(c) for c in held]
    got = {}

    def third():
        with p.connect(db) as conn:
            got["pid"] = backend_pid(conn)

    t = threading.Thread(target=third)
    t.start()
    wait_for(lambda: pools(p)[(db, "postgres")]["cl_waiting"] == "1", 20, "the third client to wait")
    assert len(backends(pg15, db)) == 2
    held.pop().close()
    t.join(30)
    assert not t.is_alive()
    assert got["pid"] == pids[1]
    held[0].close()
    assert len(backends(pg15, db)) <= 2


def test_query_wait_timeout(pg15, proxy_factory):
    p = proxy_factory(pg15, proxy={"default_pool_size": 1, "query_wait_timeout": "1s"})
    with p.connect():
        with pytest.raises(psycopg.OperationalError, match="query_wait_timeout"):
            p.connect(connect_timeout=30)
    # The pool works again once its connection is back.
    with p.connect() as conn:
        assert conn.execute("SELECT 1").fetchone() == (1,)


def test_reserve_pool_opens_after_reserve_pool_timeout(pg15, db, proxy_factory):
    p = proxy_factory(pg15, databases=(db,), proxy={"default_pool_size": 1, "reserve_pool_size": 1,
                                   "reserve_pool_timeout": "1s"})
    with p.connect(db) as first:
        with p.connect(db) as second:  # waited reserve_pool_timeout, then got the reserve
            assert backend_pid(second) != backend_pid(first)
            assert len(backends(pg15, db)) == 2


def test_server_idle_timeout_and_lifetime_close_connections(pg15, db, proxy_factory):
    p = proxy_factory(pg15, databases=(db,), proxy={"server_idle_timeout": "1s"})
    with p.connect(db) as conn:
        pid = backend_pid(conn)
    wait_for(lambda: pid not in backends(pg15, db), 20, "server_idle_timeout to close the idle connection")
    assert p.admin_dicts("SHOW SERVERS") == []

    q = proxy_factory(pg15, databases=(db,), proxy={"server_lifetime": "1s"})
    with q.connect(db) as conn:
        pid = backend_pid(conn)
    wait_for(lambda: pid not in backends(pg15, db), 20, "server_lifetime to close the connection")
    with q.connect(db) as conn:
        assert backend_pid(conn) != pid


def test_min_pool_size_opens_connections_ahead(pg15, db, proxy_factory):
    p = proxy_factory(pg15, databases=(db,), proxy={"min_pool_size": 3})
    with p.connect(db) as conn:
        conn.execute("SELECT 1")
    wait_for(lambda: len(backends(pg15, db)) == 3, 20, "min_pool_size connections")
    wait_for(lambda: pools(p)[(db, "postgres")]["sv_idle"] == "3", 20, "three idle connections")


def test_check_query_replaces_a_dead_connection(pg15, db, proxy_factory):
    p = proxy_factory(pg15, databases=(db,), proxy={"server_check_delay": "0s"})
    with p.connect(db) as conn:
        pid = backend_pid(conn)
    wait_for(lambda: pools(p)[(db, "postgres")]["sv_used"] == "1", 20, "the connection to be parked")
    pg15.execute(f"SELECT pg_terminate_backend({pid})")
    with p.connect(db) as conn:
        assert backend_pid(conn) != pid
        assert conn.execute("SELECT 1").fetchone() == (1,)


def test_database_line_overrides_pool_settings(pg15, proxy_factory):
    p = proxy_factory(pg15, databases={"app": "dbname=app pool_size=1 pool_mode=session"},
                      proxy={"query_wait_timeout": "1s"})
    with p.connect():
        with pytest.raises(psycopg.OperationalError, match="query_wait_timeout"):
            p.connect()
    config = {(r["section"], r["key"]): r["value"] for r in p.admin_dicts("SHOW CONFIG")}
    assert config[("databases", "app")] == "dbname=app pool_mode=session pool_size=1"


def test_bad_database_option_is_refused_with_its_line(pg15, proxy_factory, pghandoff):
    p = proxy_factory(pg15, databases={"app": "dbname=app pool_sise=3"}, start=False)
    p.write_files()
    out = pghandoff.run(["config", "-c", p.config_path])
    assert out.returncode != 0
    assert f"{p.config_path}:" in out.stderr and 'unknown database option "pool_sise"' in out.stderr, out.stderr


def test_connection_per_transaction_reuses_backends(pg15, proxy_factory):
    """pgbench -C: every transaction a new login; the pool keeps the backends."""
    p = proxy_factory(pg15, databases=("bench",))
    init = run_pgbench(p, ["-i", "-q", "-s", "1"])
    assert init.returncode == 0, init.stderr
    out = run_pgbench(p, ["-n", "-S", "-C", "-c", "8", "-j", "2", "-t", "100"])
    assert out.returncode == 0, out.stderr
    processed, failed = pgbench_counts(out.stdout)
    assert (processed, failed) == (800, 0)
    # 800 logins started at most default_pool_size backends (server ids count every one opened).
    servers = [r for r in p.admin_dicts("SHOW SERVERS") if r["database"] == "bench"]
    assert servers and all(r["state"] == "idle" for r in servers), servers
    assert max(int(r["id"][2:]) for r in servers) <= 20, servers



# ---- transaction mode --------------------------------------------------------

def test_transaction_mode_serves_many_clients_with_few_backends(pg15, db, proxy_factory):
    p = proxy_factory(pg15, databases=(db,), proxy={"pool_mode": "transaction", "default_pool_size": 2})
    with p.connect(db) as conn:
        conn.execute("CREATE TABLE t (client int, n int)")
    conns = [p.connect(db, autocommit=False) for _ in range(8)]
    for n in range(3):
        for i, c in enumerate(conns):
            c.execute("INSERT INTO t VALUES (%s, %s)", (i, n))
            c.commit()
    # A transaction keeps its server connection to its end, whatever the others do.
    a, b = conns[0], conns[1]
    a.execute("INSERT INTO t VALUES (100, 0)")
    pid = backend_pid(a)
    b.execute("SELECT 1")
    b.commit()
    assert backend_pid(a) == pid
    a.rollback()
    for c in conns:
        c.close()
    assert len(backends(pg15, db)) <= 2
    with p.connect(db) as conn:
        assert conn.execute("SELECT count(*), count(DISTINCT client) FROM t").fetchone() == (24, 8)
    row = pools(p)[(db, "postgres")]
    assert row["pool_mode"] == "transaction"


def test_transaction_mode_pgbench_many_clients_small_pool(pg15, proxy_factory):
    p = proxy_factory(pg15, databases=("bench",), proxy={"pool_mode": "transaction", "default_pool_size": 10})
    init = run_pgbench(p, ["-i", "-q", "-s", "1"])
    assert init.returncode == 0, init.stderr
    out = run_pgbench(p, ["-n", "-c", "200", "-j", "2", "-t", "10"])
    assert out.returncode == 0, out.stdout + out.stderr
    assert pgbench_counts(out.stdout) == (2000, 0)
    servers = [r for r in p.admin_dicts("SHOW SERVERS") if r["database"] == "bench"]
    # pgbench -i ran in a pool of its own (the same one): every connection ever opened has an id <= 10.
    assert servers and max(int(r["id"][2:]) for r in servers) <= 10, servers


def test_transaction_mode_protocol_prepared_statements(pg15, db, proxy_factory):
    """psycopg names its statements _pg3_0, _pg3_1... on every connection: the same names, other texts."""
    p = proxy_factory(pg15, databases=(db,), proxy={"pool_mode": "transaction", "default_pool_size": 1})
    a = p.connect(db, prepare_threshold=0)
    b = p.connect(db, prepare_threshold=0)
    try:
        for i in range(5):
            assert a.execute("SELECT %s::int + 1", (i,)).fetchone() == (i + 1,)
            assert b.execute("SELECT %s::text || 'b'", (str(i),)).fetchone() == (f"{i}b",)
            assert a.execute("SELECT %s::int * 10", (i,)).fetchone() == (i * 10,)
        assert len(backends(pg15, db)) == 1
    finally:
        a.close()
        b.close()


def test_transaction_mode_pgbench_prepared(pg15, proxy_factory):
    p = proxy_factory(pg15, databases=("bench",), proxy={"pool_mode": "transaction", "default_pool_size": 4})
    init = run_pgbench(p, ["-i", "-q", "-s", "1"])
    assert init.returncode == 0, init.stderr
    out = run_pgbench(p, ["-n", "-S", "-M", "prepared", "-c", "16", "-j", "2", "-t", "50"], timeout=120)
    assert out.returncode == 0, out.stdout + out.stderr
    assert pgbench_counts(out.stdout) == (800, 0)


def test_transaction_mode_session_state_is_reported_and_reset(pg15, db, proxy_factory):
    p = proxy_factory(pg15, databases=(db,), proxy={"pool_mode": "transaction", "default_pool_size": 1})
    a = p.connect(db)
    b = p.connect(db)
    notices = []
    a.add_notice_handler(lambda d: notices.append((d.severity, d.message_primary)))
    try:
        a.execute("SET work_mem = '7MB'")
        a.execute("SELECT pg_advisory_lock(42)")
        # The first such statement is reported, once; its effects do not reach the next client.
        assert b.execute("SHOW work_mem").fetchone()[0] == "4MB"
        assert b.execute("SELECT pg_try_advisory_lock(42)").fetchone()[0] is True
        b.execute("SELECT pg_advisory_unlock_all()")
        a.execute("SELECT 1")
        assert notices == [("WARNING", "pool_mode = transaction: session state set outside a transaction "
                                       "does not stay with this connection")], notices
        # SET LOCAL in a transaction is what transaction mode is for: no warning, nothing to reset.
        with a.transaction():
            a.execute("SET LOCAL work_mem = '8MB'")
            assert a.execute("SHOW work_mem").fetchone()[0] == "8MB"
        assert len(notices) == 1
    finally:
        a.close()
        b.close()


def test_transaction_mode_asyncpg_statement_cache(pg15, db, proxy_factory):
    """asyncpg prepares every query under names of its own (__asyncpg_stmt_N__), the same on each connection."""
    asyncpg = pytest.importorskip("asyncpg")
    p = proxy_factory(pg15, databases=(db,), proxy={"pool_mode": "transaction", "default_pool_size": 1})

    async def run():
        a = await asyncpg.connect(host="127.0.0.1", port=p.port, user="postgres", database=db)
        b = await asyncpg.connect(host="127.0.0.1", port=p.port, user="postgres", database=db)
        try:
            for i in range(5):
                assert await a.fetchval("SELECT $1::int + 1", i) == i + 1
                assert await b.fetchval("SELECT $1::text || 'b'", str(i)) == f"{i}b"
                assert await a.fetchval("SELECT $1::int * 10", i) == i * 10
                async with a.transaction():
                    assert await a.fetchval("SELECT $1::int - 1", i) == i - 1
                    assert await a.fetchval("SELECT $1::int + 1", i) == i + 1
        finally:
            await a.close()
            await b.close()

    asyncio.run(run())
    assert len(backends(pg15, db)) <= 1


NODE_TXN_SCRIPT = r"""
const { Client } = require('pg');
async function main() {
  const cfg = { host: '127.0.0.1', port: +process.env.PROXY_PORT, user: 'postgres', database: process.env.DBNAME };
  const a = new Client(cfg), b = new Client(cfg);
  await a.connect(); await b.connect();
  const out = [];
  for (let i = 0; i < 5; i++) {
    out.push((await a.query({ name: 'q', text: 'SELECT $1::int + 1 AS v', values: [i] })).rows[0].v);
    out.push((await b.query({ name: 'q', text: "SELECT $1::text || 'b' AS v", values: [String(i)] })).rows[0].v);
  }
  await a.end(); await b.end();
  console.log(JSON.stringify(out));
}
main().catch((e) => { console.error(e); process.exit(1); });
"""


def test_transaction_mode_node_postgres_named_queries(pg15, db, proxy_factory, prerequisites, tmp_path):
    """node-postgres named queries: both clients call theirs "q", with other texts, over one connection."""
    from proxyfixtures import node_pg_dir

    cache = node_pg_dir(prerequisites)
    p = proxy_factory(pg15, databases=(db,), proxy={"pool_mode": "transaction", "default_pool_size": 1})
    script = tmp_path / "txn.js"
    script.write_text(NODE_TXN_SCRIPT)
    env = dict(os.environ, PROXY_PORT=str(p.port), DBNAME=db, NODE_PATH=str(cache / "node_modules"))
    out = subprocess.run(["node", str(script)], env=env, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout) == [x for i in range(5) for x in (i + 1, f"{i}b")]
