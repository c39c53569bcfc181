"""Sessions and the fence against clients that do what a pool or a careless
application does: reset their session, or ask the fenced side for a
read-write transaction (13 -> 17, 15 -> 15)."""

import asyncio

import psycopg
import pytest

from cutoverfixtures import migration, psql_value, wait_for  # noqa: F401
from pgcluster import free_port
from test_metrics import parse as parse_metrics, scrape as scrape_metrics
from replfixtures import clusters, cluster_pool, replicator_factory  # noqa: F401

try:
    import asyncpg
except ImportError:
    asyncpg = None

APP = "ah_app"          # an application role
READER = "ah_reader"    # an application role with ALTER ROLE ... SET default_transaction_read_only = on


def make_roles(cluster):
    cluster.execute(f"""DO $$ BEGIN
        CREATE ROLE {APP} LOGIN;
        EXCEPTION WHEN duplicate_object THEN NULL; END $$""")
    cluster.execute(f"""DO $$ BEGIN
        CREATE ROLE {READER} LOGIN;
        EXCEPTION WHEN duplicate_object THEN NULL; END $$""")
    cluster.execute(f"ALTER ROLE {READER} SET default_transaction_read_only = on")


def grant(dsn):
    psql_value(dsn, f"GRANT ALL ON t, t_id_seq TO {APP}, {READER}")


def prepare(dsn):
    psql_value(dsn, "CREATE TABLE t (id serial PRIMARY KEY, who text)")
    grant(dsn)


def fresh_login_read_only(cluster, dbname, user):
    """default_transaction_read_only of a fresh direct login on cluster."""
    with psycopg.connect(host="127.0.0.1", port=cluster.port, dbname=dbname, user=user) as conn:
        return conn.execute("SHOW default_transaction_read_only").fetchone()[0]


def fence_settings(dsn):
    """The database-level settings a fence leaves on the database of dsn."""
    return psql_value(dsn, "SELECT coalesce(string_agg(split_part(c, '=', 1), ',' ORDER BY c), '') "
                           "FROM pg_db_role_setting s, unnest(s.setconfig) AS c "
                           "WHERE s.setrole = 0 AND s.setdatabase = "
                           "  (SELECT oid FROM pg_database WHERE datname = current_database())")


def application(migration, clusters):
    make_roles(clusters.source)
    make_roles(clusters.target)
    m = migration(prepare=prepare)
    grant(m.target_dsn())
    return m


class Sessions:
    """Sessions through the proxy, opened before a cutover and moved by it."""

    def __init__(self, m):
        self.m = m
        self.loop = asyncio.new_event_loop()
        asyncio.set_event_loop(self.loop)
        self.pool = self.loop.run_until_complete(asyncpg.create_pool(
            host="127.0.0.1", port=m.proxy.port, user=APP, database=m.dbname, ssl=False, min_size=4, max_size=4))
        self.app = m.proxy.connect(m.dbname, user=APP, autocommit=True)
        self.reader = m.proxy.connect(m.dbname, user=READER, autocommit=True)
        # The client's own startup options still win over what the proxy adds.
        self.opted = m.proxy.connect(m.dbname, user=APP, dsn_extra={"options": "-c default_transaction_read_only=on"})
        self.writes = 0

    def pool_write(self, who, count=16):
        async def one(i):
            async with self.pool.acquire() as conn:
                await conn.execute("INSERT INTO t (who) VALUES ($1)", f"{who} {i}")

        async def all_of_them():
            await asyncio.gather(*(one(i) for i in range(count)))

        self.loop.run_until_complete(all_of_them())
        self.writes += count

    def pool_after_reset(self):
        """What each pooled connection shows after RESET ALL (the pool runs it at every release too)."""
        async def show():
            conns = [await self.pool.acquire() for _ in range(4)]
            try:
                values = []
                for conn in conns:
                    await conn.execute("RESET ALL")
                    values.append(await conn.fetchval("SHOW default_transaction_read_only"))
                return values
            finally:
                for conn in conns:
                    await self.pool.release(conn)

        return self.loop.run_until_complete(show())

    def check(self, cluster, who):
        """Every session behaves as a fresh login on cluster would, resets included."""
        m = self.m
        assert self.app.execute("SELECT inet_server_port()").fetchone()[0] == cluster.port
        fresh_app = fresh_login_read_only(cluster, m.dbname, APP)
        fresh_reader = fresh_login_read_only(cluster, m.dbname, READER)
        assert (fresh_app, fresh_reader) == ("off", "on")
        self.pool_write(who)
        assert self.pool_after_reset() == [fresh_app] * 4
        self.pool_write(who + " after RESET ALL")
        self.app.execute("DISCARD ALL")
        assert self.app.execute("SHOW default_transaction_read_only").fetchone()[0] == fresh_app
        self.app.execute("INSERT INTO t (who) VALUES (%s)", (who + " after DISCARD ALL",))
        self.writes += 1
        self.reader.execute("RESET ALL")
        assert self.reader.execute("SHOW default_transaction_read_only").fetchone()[0] == fresh_reader
        with pytest.raises(psycopg.errors.ReadOnlySqlTransaction):
            self.reader.execute("INSERT INTO t (who) VALUES ('reader')")
        self.reader.execute("DISCARD ALL")
        assert self.reader.execute("SHOW default_transaction_read_only").fetchone()[0] == fresh_reader
        self.opted.execute("RESET ALL")
        assert self.opted.execute("SHOW default_transaction_read_only").fetchone()[0] == "on"
        assert self.app.execute("SELECT count(*) FROM t").fetchone()[0] == self.writes

    def close(self):
        self.loop.run_until_complete(self.pool.close())
        self.loop.close()
        asyncio.set_event_loop(None)
        self.app.close()
        self.reader.close()
        self.opted.close()


def test_reset_sessions_stay_as_fresh_logins_across_cutover_and_rollback(migration, clusters, prerequisites):
    """RESET ALL (an asyncpg pool's release) and DISCARD ALL after a cutover and after a rollback:
    writes go on, and the read-only default is a fresh login's on the cluster the session landed on."""
    if asyncpg is None:
        prerequisites.missing("asyncpg (Debian python3-asyncpg) is not installed")
    m = application(migration, clusters)
    sessions = Sessions(m)
    try:
        sessions.check(clusters.source, "source")
        result = m.proxy.run_cutover()
        assert result.returncode == 0, result.stdout + result.stderr + m.proxy.log_tail()
        sessions.check(clusters.target, "target")
        wait_for(lambda: psql_value(m.target_dsn(), "SELECT count(*) FROM pg_replication_slots "
                                                    "WHERE slot_name LIKE '%rollback' AND active") == "1",
                 timeout=60, what="the reverse follower streaming")
        # The source is fenced: a fresh login there is read-only until the rollback is done.
        assert fresh_login_read_only(clusters.source, m.dbname, APP) == "on"
        assert fence_settings(m.source_dsn()) == "default_transaction_read_only,pghandoff.fenced_at"
        result = m.proxy.run_rollback()
        assert result.returncode == 0, result.stdout + result.stderr + m.proxy.log_tail()
        sessions.check(clusters.source, "source after the rollback")
        # The rollback lifted the source's fence, all of it, and fenced the target.
        assert fence_settings(m.source_dsn()) == ""
        assert fence_settings(m.target_dsn()) == "default_transaction_read_only,pghandoff.fenced_at"
    finally:
        sessions.close()


def replication_row(m):
    cols, rows = m.proxy.admin("SHOW REPLICATION")
    return dict(zip(cols, rows[0]))


def test_write_on_the_fenced_source_never_reaches_the_target(migration, clusters):
    """After a cutover, an application role asks the fenced source for BEGIN READ WRITE and commits:
    the follower refuses to carry that transaction to the target, stops, and says so."""
    metrics_port = free_port()
    make_roles(clusters.source)
    make_roles(clusters.target)
    m = migration(prepare=prepare, run=True, proxy={"metrics_listen": f"127.0.0.1:{metrics_port}"})
    grant(m.target_dsn())
    conn = m.proxy.connect(m.dbname, user=APP)
    conn.execute("INSERT INTO t (who) VALUES ('before the cutover')")
    wait_for(lambda: psql_value(m.target_dsn(), "SELECT count(*) FROM t") == "1", timeout=120,
             what="the follower streaming")
    result = m.proxy.run_cutover()
    assert result.returncode == 0, result.stdout + result.stderr + m.proxy.log_tail()
    conn.execute("INSERT INTO t (who) VALUES ('on the target')")
    with psycopg.connect(host="127.0.0.1", port=clusters.source.port, dbname=m.dbname, user=APP,
                         autocommit=True) as rogue:
        assert rogue.execute("SHOW default_transaction_read_only").fetchone()[0] == "on"
        with pytest.raises(psycopg.errors.ReadOnlySqlTransaction):
            rogue.execute("INSERT INTO t (who) VALUES ('refused by the database')")
        rogue.execute("BEGIN READ WRITE")
        xid = rogue.execute("SELECT txid_current() % 4294967296").fetchone()[0]
        rogue.execute("INSERT INTO t (who) VALUES ('rogue')")
        rogue.execute("COMMIT")
        written = rogue.execute("SELECT pg_current_wal_lsn()").fetchone()[0]
    # The follower reaches that transaction, and refuses it.
    wait_for(lambda: replication_row(m)["phase"] == "source written after fence", timeout=60,
             what="the follower reporting the write after the fence")
    found = m.proxy.wait_log(rf"source written after fence: transaction {xid} committed at ([0-9A-F]+/[0-9A-F]+), "
                             r"fenced at ([0-9A-F]+/[0-9A-F]+)")

    def lsn(text):
        hi, lo = text.split("/")
        return (int(hi, 16) << 32) | int(lo, 16)

    assert lsn(found.group(2)) < lsn(found.group(1)) < lsn(str(written))
    samples, _ = parse_metrics(scrape_metrics(metrics_port))
    assert samples[("pghandoff_replication_fence_violation", (("database", m.dbname),))] == 1
    # Never applied: the target has the clients' rows only, and they go on writing there.
    assert [r[0] for r in conn.execute("SELECT who FROM t ORDER BY id")] == ["before the cutover", "on the target"]
    conn.execute("INSERT INTO t (who) VALUES ('still on the target')")
    assert psql_value(m.target_dsn(), "SELECT count(*) FROM t WHERE who = 'rogue'") == "0"
    conn.close()
