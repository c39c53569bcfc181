"""The way back after a cutover: `pghandoff replicate --reverse` against real clusters.

After a cutover clients write to the target, the source is fenced read-only,
and two followers run at once: the forward one (source -> target, still
streaming) and the reverse one (target -> source, from a slot made by
`replicate --reverse --prepare` while both sides held the same data).  Each
must skip what the other applied, or a change would come back where it was
made.  The tests stand in for the cutover: they fence the source and copy
the sequences themselves.

Same clusters and pairs as test_replicate.py (13 -> 17, 15 -> 15), and 14 -> 14
for the loop check, where both walsenders send empty transactions.
"""

import re
import time

import pytest

from replfixtures import (  # noqa: F401  (fixtures are used by name)
    emit_marker,
    wait_origin,
    run_sql,
    in_transaction,
    cluster_pool,
    clusters,
    connect,
    lsn_int,
    make_database,
    origin_progress,
    query,
    replicator_factory,
    table_digest,
    user_tables,
    wait_caught_up,
    wait_for,
)

ONLY_15 = pytest.mark.parametrize("clusters", [(15, 15)], indirect=True, ids=["15to15"])
WITH_14 = pytest.mark.parametrize("clusters", [(13, 17), (15, 15), (14, 14)], indirect=True,
                                  ids=["13to17", "15to15", "14to14"])

# Housekeeping (sequences, slot size) every second, so a sequence copied the
# wrong way would show within the test.
FAST_HOUSEKEEPING = {"sequence_sync_interval": "1s"}


def fence(cluster, db, on=True):
    """What the cutover does to the source: read-only for new sessions (or no longer)."""
    cluster.execute(f"ALTER DATABASE {db} SET default_transaction_read_only = {'on' if on else 'off'}")


def copy_sequences(pair, db):
    """What the cutover does before clients move: the target's sequences take the source's values.

    Not those of the schema pghandoff, the capture of schema changes, which is each side's own.
    """
    rows = query(pair.source, db, "SELECT format('%I.%I', schemaname, sequencename), last_value "
                                  "FROM pg_sequences WHERE last_value IS NOT NULL AND schemaname <> 'pghandoff'")
    for name, value in rows:
        pair.target.execute("SELECT setval(%s, %s)", dbname=db, params=(name, value))


def digests(cluster, db):
    return {t: table_digest(cluster, db, t) for t in user_tables(cluster, db)}


def wait_same_rows(pair, db, replicator, what):
    """Poll until every table has the same rows on both sides; fail early if the replicator logs an error."""
    def same():
        errors = replicator.errors()
        if errors:
            pytest.fail(f"{what}: the replicator logged an error:\n" + "\n".join(errors)
                        + "\n---- log tail ----\n" + replicator.log_tail(30), pytrace=False)
        return digests(pair.source, db) == digests(pair.target, db)

    wait_for(same, 120, what=f"{what}: the same rows on both sides", interval=0.1,
             on_timeout=lambda: f"source {digests(pair.source, db)}\ntarget {digests(pair.target, db)}\n"
                                + replicator.log_tail())


def reverse_applied_end(source, reverse_origin):
    """The end LSN, on the source, of the last transaction the reverse follower committed there."""
    rows = source.execute("SELECT local_lsn::text FROM pg_replication_origin_status WHERE external_id = %s",
                          params=(reverse_origin,))
    return lsn_int(rows[0][0]) if rows and rows[0][0] else 0


def cut_over(pair, db, replicator_factory, **options):
    """A forward follower caught up, the source fenced, sequences copied, the way back prepared.

    Returns (forward, reverse), the reverse follower streaming.
    """
    fwd = replicator_factory(pair, db, **options)
    fwd.wait_streaming()
    wait_caught_up(pair, db, fwd.origin, fwd)
    fence(pair.source, db)
    wait_origin(pair.target, fwd.origin, emit_marker(pair.source, db), fwd, "the cutover's marker")
    copy_sequences(pair, db)
    result = fwd.reverse_prepare()
    assert result.returncode == 0, result.stderr
    assert "way back prepared" in result.stderr, result.stderr
    rev = replicator_factory(pair, db, reverse=True, **options)
    rev.wait_streaming()
    return fwd, rev


def test_reverse_follower(clusters, replicator_factory):
    """Writes on the target reach the fenced source, once; neither follower sends them back.

    Inserts (serial keys), updates (a counter incremented on the target),
    deletes, a keyless table, and a truncate; then `--reverse --drop` leaves
    no slot on the target and no origin on the source.
    """
    pair = clusters
    db = make_database(pair, "rev")
    run_sql(pair.source, db,
            "CREATE TABLE t (id serial PRIMARY KEY, v text, n int NOT NULL DEFAULT 0)",
            "CREATE TABLE gone (id int PRIMARY KEY, v text)",
            "CREATE TABLE keyless (a int, b text)",
            "ALTER TABLE keyless REPLICA IDENTITY FULL",
            "INSERT INTO t (v) SELECT 'copied ' || g FROM generate_series(1, 50) g",
            "INSERT INTO gone SELECT g, 'to be truncated' FROM generate_series(1, 20) g",
            "INSERT INTO keyless VALUES (1, 'a'), (1, 'a'), (2, 'b')")
    fwd, rev = cut_over(pair, db, replicator_factory, replication=FAST_HOUSEKEEPING)
    assert pair.target.execute("SELECT slot_name, database, plugin FROM pg_replication_slots "
                               "WHERE slot_name = %s", params=(fwd.reverse_slot,)) == \
        [(fwd.reverse_slot, db, "pgoutput")]
    assert query(pair.target, db, "SELECT pubname, puballtables FROM pg_publication") == \
        [(fwd.reverse_publication, True)]
    # The forward follower no longer copies sequences: the target's advance now.
    fwd.wait_log(r"sequences are no longer copied to the target", since_start=False)

    # Clients on the target.
    run_sql(pair.target, db,
            "INSERT INTO t (v) SELECT 'on the target ' || g FROM generate_series(1, 30) g",
            "UPDATE t SET v = 'updated on the target' WHERE id BETWEEN 10 AND 20",
            "DELETE FROM t WHERE id BETWEEN 40 AND 45",
            "TRUNCATE gone",
            "DELETE FROM keyless WHERE a = 2",
            "INSERT INTO keyless VALUES (3, 'c')")
    in_transaction(pair.target, db,
                   "INSERT INTO t (v) VALUES ('in one transaction')",
                   "UPDATE t SET n = n + 1 WHERE id <= 5",
                   "INSERT INTO gone VALUES (1, 'after the truncate')")
    for _ in range(5):
        run_sql(pair.target, db, "UPDATE t SET n = n + 1 WHERE id = 1")
    wait_same_rows(pair, db, rev, "after writes on the target")
    assert query(pair.source, db, "SELECT n FROM t WHERE id = 1") == [(6,)]
    assert query(pair.source, db, "SELECT count(*) FROM t") == [(50 + 30 + 1 - 6,)]

    # The forward follower sees the source's copies of those writes and must
    # skip them, moving its origin past the last one all the same.
    applied_end = reverse_applied_end(pair.source, fwd.reverse_origin)
    assert applied_end > 0
    wait_origin(pair.target, fwd.origin, applied_end, fwd, "the reverse follower's last commit on the source")
    # And after a marker on the fenced source, every earlier change has reached it.
    wait_origin(pair.target, fwd.origin, emit_marker(pair.source, db), fwd, "a marker after the writes")
    # Nothing came back: the counter moved 6 times, serial keys inserted once
    # (a second insert would have failed on the key), and the sides agree.
    assert query(pair.target, db, "SELECT n FROM t WHERE id = 1") == [(6,)]
    assert digests(pair.source, db) == digests(pair.target, db)
    assert re.search(rf"skipping a transaction of origin {fwd.reverse_origin}\b", fwd.log())
    assert not fwd.errors() and not rev.errors()
    # New serial keys on the target follow on, the sequence was not set back.
    run_sql(pair.target, db, "INSERT INTO t (v) VALUES ('later')")
    wait_same_rows(pair, db, rev, "after one more insert")

    rev.stop()
    assert "stopping:" in rev.log(since_start=True)
    result = fwd.reverse_drop()
    assert result.returncode == 0, result.stderr
    assert pair.target.execute("SELECT slot_name FROM pg_replication_slots WHERE slot_name = %s",
                               params=(fwd.reverse_slot,)) == []
    assert query(pair.target, db, "SELECT pubname FROM pg_publication") == []
    assert pair.source.execute("SELECT roname FROM pg_replication_origin WHERE roname = %s",
                               params=(fwd.reverse_origin,)) == []
    # Again: nothing left to drop is no error.
    again = fwd.reverse_drop()
    assert again.returncode == 0, again.stderr
    # A migration done: the forward objects go too, from a source still fenced.
    fwd.stop()
    result = fwd.drop()
    assert result.returncode == 0, result.stderr
    assert pair.source.execute("SELECT slot_name FROM pg_replication_slots WHERE slot_name = %s",
                               params=(fwd.slot,)) == []
    assert query(pair.source, db, "SELECT pubname FROM pg_publication") == []
    fence(pair.source, db, on=False)


@WITH_14
def test_no_loop_between_followers(clusters, replicator_factory):
    """Once both followers have passed each other's last commit, neither origin moves again.

    Each follower commits, for the transactions it skips, a transaction of
    its own that moves its origin; were such commits passed on, the two would
    bounce one between the clusters for ever.  The origins' progress shows
    each bounce.  Also on 14 -> 14, whose walsenders still send transactions
    none of whose changes are published.
    """
    pair = clusters
    db = make_database(pair, "loop")
    run_sql(pair.source, db, "CREATE TABLE t (id int PRIMARY KEY, n int NOT NULL)",
            "INSERT INTO t VALUES (1, 0)")
    fwd, rev = cut_over(pair, db, replicator_factory)
    for _ in range(10):
        run_sql(pair.target, db, "UPDATE t SET n = n + 1 WHERE id = 1")
    wait_same_rows(pair, db, rev, "after updates on the target")
    wait_origin(pair.target, fwd.origin, reverse_applied_end(pair.source, fwd.reverse_origin), fwd,
                "the reverse follower's last commit")
    # A marker each way passes whatever either follower committed before it.
    wait_origin(pair.source, fwd.reverse_origin, emit_marker(pair.target, db), rev, "a marker on the target")
    wait_origin(pair.target, fwd.origin, emit_marker(pair.source, db), fwd, "a marker on the source")
    wait_origin(pair.source, fwd.reverse_origin, emit_marker(pair.target, db), rev, "a second marker on the target")
    settled = (origin_progress(pair.target, fwd.origin), origin_progress(pair.source, fwd.reverse_origin))
    # A bounce takes a few milliseconds; three seconds would see hundreds.
    deadline = time.monotonic() + 3
    while time.monotonic() < deadline:
        now = (origin_progress(pair.target, fwd.origin), origin_progress(pair.source, fwd.reverse_origin))
        assert now == settled, \
            (f"the origins keep moving with nothing written: forward {settled[0]:#x} -> {now[0]:#x}, "
             f"reverse {settled[1]:#x} -> {now[1]:#x}\n{fwd.log_tail(20)}\n{rev.log_tail(20)}")
        time.sleep(0.2)
    assert query(pair.source, db, "SELECT n FROM t") == [(10,)]
    assert query(pair.target, db, "SELECT n FROM t") == [(10,)]
    assert not fwd.errors() and not rev.errors()
    fence(pair.source, db, on=False)


@ONLY_15
def test_reverse_needs_prepare(clusters, replicator_factory):
    """`--reverse` without a prepared way back stops at once and says how to prepare it; bad options are
    usage errors; `--prepare` twice makes the objects afresh."""
    pair = clusters
    db = make_database(pair, "revprep")
    run_sql(pair.source, db, "CREATE TABLE t (id int PRIMARY KEY)")
    fwd = replicator_factory(pair, db)
    fwd.wait_streaming()
    wait_caught_up(pair, db, fwd.origin, fwd)
    rev = replicator_factory(pair, db, reverse=True)
    assert rev.wait_exit() == 1
    assert re.search(r"ERROR .*the way back is not prepared: slot \S+ does not exist on the target.*"
                     r"--reverse --prepare", rev.log()), rev.log_tail()
    for args in (["--prepare"], ["--reverse", "--prepare", "--drop"]):
        result = fwd.pghandoff.run(["replicate", "-c", fwd.config_path, *args])
        assert result.returncode == 2, (args, result.stderr)
        assert "--prepare goes with --reverse" in result.stderr

    first = fwd.reverse_prepare()
    assert first.returncode == 0, first.stderr
    slot_lsn = pair.target.execute("SELECT confirmed_flush_lsn::text FROM pg_replication_slots "
                                   "WHERE slot_name = %s", params=(fwd.reverse_slot,))[0][0]
    # The origin starts where the slot does.
    assert origin_progress(pair.source, fwd.reverse_origin) == lsn_int(slot_lsn)
    run_sql(pair.target, db, "INSERT INTO t VALUES (1)")
    second = fwd.reverse_prepare()
    assert second.returncode == 0, second.stderr
    assert "dropped replication slot" in second.stderr
    # Made again: the write in between is behind the new slot, not in it.
    again_lsn = pair.target.execute("SELECT confirmed_flush_lsn::text FROM pg_replication_slots "
                                    "WHERE slot_name = %s", params=(fwd.reverse_slot,))[0][0]
    assert lsn_int(again_lsn) > lsn_int(slot_lsn)
    assert origin_progress(pair.source, fwd.reverse_origin) == lsn_int(again_lsn)
