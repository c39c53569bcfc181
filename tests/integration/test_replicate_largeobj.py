"""Large objects: copied at the initial sync, kept in step while streaming, diffed in the cutover's pause.

Logical replication does not carry them (pg_largeobject is a catalog): the
follower diffs them beside the stream (replicator/largeobj.c).  Every test
compares both sides exactly: the same OIDs, owners, grants, and contents
(md5 of lo_get).
"""

import os
import threading

import pytest

from cutoverfixtures import migration, psql_value, wait_for  # noqa: F401
from pgcluster import free_port
from test_metrics import parse as parse_metrics, scrape as scrape_metrics
from replfixtures import (clusters, cluster_pool, replicator_factory, make_database,  # noqa: F401
                          connect, run_sql, in_transaction, wait_caught_up, query)

# The advisory lock rounds of the diff take turns on (LO_LOCK_KEY in replicator/largeobj.c).
LO_LOCK_KEY = 110442207694927
ROLE = f"lo_owner_{os.getpid()}"
READER = f"lo_reader_{os.getpid()}"


def large_objects(cluster, dbname):
    """[(oid, owner, grants, md5 of the contents)] in OID order."""
    return query(cluster, dbname,
                 "SELECT m.oid::bigint, pg_get_userbyid(m.lomowner), "
                 "  (SELECT string_agg(g, ',' ORDER BY g) FROM (SELECT format('%s:%s:%s', "
                 "     pg_get_userbyid(a.grantee), a.privilege_type, a.is_grantable) AS g "
                 "     FROM aclexplode(m.lomacl) a) acl), "
                 "  md5(lo_get(m.oid)) "
                 "FROM pg_largeobject_metadata m ORDER BY 1")


def wait_equal(pair, dbname, replicator=None, timeout=120, source=None, target=None, what="large objects"):
    """Poll until the target's large objects are the source's (or target's and source's, given)."""
    a, b = source or pair.source, target or pair.target

    def equal():
        return large_objects(a, dbname) == large_objects(b, dbname)
    wait_for(equal, timeout, what=f"{what} equal on both sides", interval=0.1,
             on_timeout=lambda: (f"{a!r}: {large_objects(a, dbname)}\n{b!r}: {large_objects(b, dbname)}\n"
                                 + (replicator.log_tail() if replicator else "")))
    return large_objects(a, dbname)


def make_roles(pair):
    """Two roles on both clusters (roles = none copies none): an owner and a grantee."""
    for cluster in (pair.source, pair.target):
        for role in (ROLE, READER):
            cluster.execute(f"DO $$ BEGIN CREATE ROLE {role}; EXCEPTION WHEN duplicate_object THEN NULL; END $$")


def fill(dsn_cluster, dbname):
    """Objects of every shape: empty, one page, many pages, sparse, another owner, with grants."""
    run_sql(dsn_cluster, dbname,
            "SELECT lo_from_bytea(20001, '')",
            "SELECT lo_from_bytea(20002, 'small')",
            "SELECT lo_from_bytea(20003, decode(repeat(md5('x'), 3000), 'hex'))",  # 48 kB, 24 pages
            "SELECT lo_create(20004)",
            "SELECT lo_put(20004, 100000, 'far out')",  # a hole before it
            "SELECT lo_put(20004, 10, 'near')",
            "SELECT lo_from_bytea(20005, 'owned by someone else')",
            f"ALTER LARGE OBJECT 20005 OWNER TO {ROLE}",
            "SELECT lo_from_bytea(20006, 'granted')",
            f"GRANT SELECT ON LARGE OBJECT 20006 TO {READER}",
            f"GRANT SELECT, UPDATE ON LARGE OBJECT 20006 TO PUBLIC")


def change(cluster, dbname, base=30000):
    """New, changed (lo_put, lowrite, truncate), re-owned and unlinked objects."""
    run_sql(cluster, dbname,
            f"SELECT lo_from_bytea({base + 1}, decode(repeat(md5('new'), 1000), 'hex'))",
            "SELECT lo_put(20002, 2, 'ALL')",
            "SELECT lo_put(20003, 30000, 'middle of page 14')",
            "SELECT lo_truncate(lo_open(20004, 131072), 50)",  # INV_WRITE
            f"ALTER LARGE OBJECT 20002 OWNER TO {ROLE}",
            f"REVOKE UPDATE ON LARGE OBJECT 20006 FROM PUBLIC",
            "SELECT lo_unlink(20001)")
    # lowrite through a descriptor, in a transaction of its own.
    in_transaction(cluster, dbname,
                   "SELECT lowrite(lo_open(20005, 131072), 'written with lowrite')",
                   f"SELECT lo_from_bytea({base + 2}, 'in the same transaction')")
    # Owner and grants of an object the other side has not got yet: schema changes the follower must
    # not replay (the diff carries them with the object).
    in_transaction(cluster, dbname,
                   f"SELECT lo_from_bytea({base + 3}, 'owned and granted at birth')",
                   f"ALTER LARGE OBJECT {base + 3} OWNER TO {ROLE}",
                   f"GRANT SELECT ON LARGE OBJECT {base + 3} TO {READER}")


def test_initial_copy_and_streaming(clusters, replicator_factory):
    """Copied with the tables, then every kind of change while streaming arrives exactly."""
    make_roles(clusters)
    db = make_database(clusters, prefix="lo")
    fill(clusters.source, db)
    r = replicator_factory(clusters, db, replication={"large_object_sync_interval": "200ms"})
    r.wait_streaming()
    # The copy was in the slot's snapshot: equal before any round of the diff.
    r.wait_log(r"copied 6 large object\(s\)", since_start=False)
    copied = wait_equal(clusters, db, r)
    assert [row[0] for row in copied] == [20001, 20002, 20003, 20004, 20005, 20006]
    assert copied[4][1] == ROLE
    assert f"{READER}:SELECT:f" in copied[5][2]

    change(clusters.source, db)
    after = wait_equal(clusters, db, r)
    assert 20001 not in [row[0] for row in after] and 30001 in [row[0] for row in after]
    assert dict((row[0], row[1]) for row in after)[20002] == ROLE
    # The record of what is in step is unlogged: a crash of the target's server empties it.  The next
    # rounds compare instead of copying, and copy only what differs.
    # Both before the next round: rounds take turns on an advisory lock on the target (largeobj.c).
    with connect(clusters.target, db) as holder:
        holder.execute(f"SELECT pg_advisory_lock({LO_LOCK_KEY})")
        run_sql(clusters.target, db, "TRUNCATE pghandoff_lo.synced")
        run_sql(clusters.source, db, "SELECT lo_put(20003, 1, 'after the record was lost')")
    m = r.wait_log(r"large objects: 1 copied \(\d+ kB\), 0 unlinked, ([1-9]\d*) found equal; "
                   r"(\d+) of (\d+) in step")
    assert int(m.group(1)) == len(after) - 1 and m.group(2) == m.group(3) == str(len(after)), m.group(0)
    wait_equal(clusters, db, r)
    # Nothing else went wrong meanwhile, and the tables stream as before.
    wait_caught_up(clusters, db, r.origin, r)
    assert not r.errors()
    # --drop removes the record of what is in step, with the slot and the origin.
    assert query(clusters.target, db, "SELECT count(*) FROM pg_namespace WHERE nspname = 'pghandoff_lo'") == [(1,)]
    r.stop()
    dropped = r.drop()
    assert dropped.returncode == 0, dropped.stderr
    assert query(clusters.target, db, "SELECT count(*) FROM pg_namespace WHERE nspname = 'pghandoff_lo'") == [(0,)]


def test_kill_during_a_diff(clusters, replicator_factory):
    """kill -9 of the follower in the middle of a diff (some objects committed, one waiting), then restart."""
    db = make_database(clusters, prefix="lo")
    r = replicator_factory(clusters, db, replication={"large_object_sync_interval": "200ms"})
    r.wait_streaming()
    # 100 objects of 200 kB: a transaction of the diff holds about 8 MB, so 41 commit before 40050.
    run_sql(clusters.source, db,
            "SELECT lo_from_bytea(40000 + i, decode(repeat(md5(i::text), 12800), 'hex')) "
            "FROM generate_series(0, 99) i")
    blocker = connect(clusters.target, db, autocommit=False)
    try:
        blocker.execute("SELECT lo_create(40050)")  # the diff's lo_create of it waits for this transaction

        def stuck():
            waiting = query(clusters.target, db,
                            "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' "
                            "AND query LIKE '%lo_create%' AND pid <> pg_backend_pid()")[0][0]
            committed = query(clusters.target, db,
                              "SELECT count(*) FROM pg_largeobject_metadata WHERE oid < 40050")[0][0]
            return waiting == 1 and committed > 0
        wait_for(stuck, 120, what="the diff waiting half-way", on_timeout=r.log_tail)
        partial = query(clusters.target, db, "SELECT count(*) FROM pg_largeobject_metadata")[0][0]
        assert 0 < partial < 100
        r.kill9()
    finally:
        blocker.rollback()
        blocker.close()
    run_sql(clusters.source, db, "SELECT lo_put(40001, 0, 'changed while the follower was down')",
            "SELECT lo_unlink(40099)")
    r.start()
    r.wait_streaming()
    after = wait_equal(clusters, db, r)
    assert len(after) == 99
    assert not [line for line in r.errors(since_start=True) if "large object" in line]


def test_cutover_pause_and_rollback(migration, clusters):
    """Changes the follower has not diffed yet, and changes made inside the pause, arrive at the cutover;
    those made on the target arrive back at the rollback."""
    make_roles(clusters)

    def prepare(dsn):
        psql_value(dsn, "CREATE TABLE t (id int PRIMARY KEY)")
    # One round at start only: what arrives later comes by the cutover's own diff.
    m = migration(prepare=prepare, replication={"large_object_sync_interval": "1h"},
                  cutover={"drain_timeout": "60s"})
    m.replicator.wait_log(r"large objects: first diff: 0 of 0 in step", since_start=False)
    fill(m.pair.source, m.dbname)
    # Not diffed while streaming: the dry run counts what the pause would copy.
    result = m.proxy.run_cutover("--dry-run")
    assert result.returncode == 0, result.stdout + result.stderr
    report = m.proxy.report()
    assert report["large_objects_differing"] == 6, report
    assert report["large_object_diff_estimate_ms"] >= 0

    change(m.pair.source, m.dbname)
    # A client inside a transaction when the pause begins writes large objects in it.
    conn = m.proxy.connect(m.dbname, autocommit=False)
    conn.execute("SELECT lo_put(20003, 0, 'before the pause')")
    results = []
    cutover = threading.Thread(target=lambda: results.append(m.proxy.run_cutover()))
    cutover.start()
    m.proxy.wait_log(r"pausing", timeout=60)
    conn.execute("SELECT lo_from_bytea(50001, 'inside the pause')")
    conn.execute("SELECT lo_put(20002, 0, 'x')")
    conn.execute("SELECT lo_unlink(30002)")
    conn.commit()
    cutover.join(timeout=180)
    assert results and results[0].returncode == 0, \
        (results[0].stdout + results[0].stderr if results else "") + m.proxy.log_tail()
    assert conn.execute("SELECT inet_server_port()").fetchone()[0] == m.pair.target.port
    # Right after the switch, with no round of the follower in between.
    on_target = large_objects(m.pair.target, m.dbname)
    assert on_target == large_objects(m.pair.source, m.dbname)
    assert 50001 in [row[0] for row in on_target] and 30002 not in [row[0] for row in on_target]

    # The way back: written on the target, carried to the source by the rollback's diff.
    wait_for(lambda: psql_value(m.target_dsn(), "SELECT count(*) FROM pg_replication_slots "
                                                "WHERE slot_name LIKE '%rollback' AND active") == "1",
             timeout=60, what="the reverse follower streaming")
    conn.execute("SELECT lo_from_bytea(60001, 'written on the target')")
    conn.execute("SELECT lo_put(20003, 5, 'changed on the target')")
    conn.execute(f"ALTER LARGE OBJECT 20006 OWNER TO {ROLE}")
    conn.execute("SELECT lo_unlink(20005)")
    conn.commit()
    result = m.proxy.run_rollback()
    assert result.returncode == 0, result.stdout + result.stderr + m.proxy.log_tail()
    assert conn.execute("SELECT inet_server_port()").fetchone()[0] == m.pair.source.port
    back = large_objects(m.pair.source, m.dbname)
    assert back == large_objects(m.pair.target, m.dbname)
    assert 60001 in [row[0] for row in back] and 20005 not in [row[0] for row in back]
    conn.close()


def test_after_the_cutover_objects_flow_back(migration, clusters):
    """After the switch the forward diff stands down and the reverse follower's diff carries the target's
    writes to the source, so a rollback finds them there without its own diff having to."""
    make_roles(clusters)
    metrics_port = free_port()
    # `pghandoff run`: the follower a child of the proxy, whose metrics read its progress.
    m = migration(prepare=lambda dsn: psql_value(dsn, "CREATE TABLE t (id int PRIMARY KEY)"), run=True,
                  replication={"large_object_sync_interval": "200ms"},
                  proxy={"metrics_listen": f"127.0.0.1:{metrics_port}"})
    fill(m.pair.source, m.dbname)
    wait_equal(m.pair, m.dbname)

    def counted():
        samples, _ = parse_metrics(scrape_metrics(metrics_port))
        key = (("database", m.dbname),)
        return (samples.get(("pghandoff_replication_large_objects", key)),
                samples.get(("pghandoff_replication_large_objects_in_step", key))) == (6, 6)
    wait_for(counted, 60, what="the metrics counting 6 large objects in step")
    result = m.proxy.run_cutover()
    assert result.returncode == 0, result.stdout + result.stderr + m.proxy.log_tail()
    m.proxy.wait_log(r"large objects: (the source is fenced|the way back from the target is prepared): "
                     r"the diff stands down", timeout=60)
    stood_down_at = len(m.proxy.log())
    # The reverse follower's first diff finds the six objects equal on both sides: compared, not copied.
    m.proxy.wait_log(r"reverse replicator \S+ large objects: 0 copied \(0 kB\), 0 unlinked, 6 found equal; "
                     r"6 of 6 in step", timeout=60)
    conn = m.proxy.connect(m.dbname)
    assert conn.execute("SELECT inet_server_port()").fetchone()[0] == m.pair.target.port
    conn.execute("SELECT lo_from_bytea(80001, 'written on the target')")
    conn.execute("SELECT lo_put(20003, 7, 'changed on the target')")
    conn.execute("SELECT lo_unlink(20002)")
    # No rollback: the reverse follower's periodic diff brings them to the (fenced) source.
    back = wait_equal(m.pair, m.dbname, source=m.pair.target, target=m.pair.source, what="target's objects")
    assert 80001 in [row[0] for row in back] and 20002 not in [row[0] for row in back]
    # The forward diff copied nothing over the target's writes since it stood down.
    forward = [line for line in m.proxy.log()[stood_down_at:].splitlines() if "reverse" not in line]
    assert not [line for line in forward if " copied (" in line], forward
    conn.close()


def test_the_pause_diff_has_a_deadline(migration, clusters):
    """A last diff that cannot finish within catchup_timeout aborts the cutover: clients stay on the source."""
    m = migration(prepare=lambda dsn: psql_value(dsn, "CREATE TABLE t (id int PRIMARY KEY)"),
                  replication={"large_object_sync_interval": "1h"},
                  cutover={"catchup_timeout": "2s", "rollback": "off"})
    m.replicator.wait_log(r"large objects: first diff: 0 of 0 in step", since_start=False)
    run_sql(m.pair.source, m.dbname, "SELECT lo_from_bytea(70001, 'held up')")
    blocker = connect(m.pair.target, m.dbname, autocommit=False)
    try:
        blocker.execute("SELECT lo_create(70001)")  # the pause's lo_create of it waits for this transaction
        result = m.proxy.run_cutover()
    finally:
        blocker.rollback()
        blocker.close()
    assert result.returncode == 1, result.stdout + result.stderr
    report = m.proxy.report()
    assert report["result"] == "aborted"
    assert "large objects" in report["reason"] and "catchup_timeout" in report["reason"], report
    conn = m.proxy.connect(m.dbname)
    assert conn.execute("SELECT inet_server_port()").fetchone()[0] == m.pair.source.port
    conn.execute("INSERT INTO t VALUES (1)")  # unfenced
    # Held up no more: the next cutover's diff copies it.
    result = m.proxy.run_cutover()
    assert result.returncode == 0, result.stdout + result.stderr + m.proxy.log_tail()
    assert large_objects(m.pair.target, m.dbname) == large_objects(m.pair.source, m.dbname)
    assert [row[0] for row in large_objects(m.pair.target, m.dbname)] == [70001]
    conn.close()
