"""Which sessions the cutover reads, and which it knows without reading (13 -> 17, 15 -> 15).

A session whose client only ever sent statements that leave the session
alone has the state of a fresh login: the cutover does not read it.  That
holds only while nothing runs behind those statements: in a database with a
trigger or a view that changes session state, every session is read.
"""

import threading

import pytest

from cutoverfixtures import migration, psql_value  # noqa: F401
from replfixtures import clusters, cluster_pool, replicator_factory  # noqa: F401


def test_untouched_sessions_are_known_without_reading(migration):
    m = migration(prepare=lambda dsn: psql_value(dsn, "CREATE TABLE t (id int PRIMARY KEY, v text); "
                                                      "INSERT INTO t VALUES (1, 'one')"))
    plain = m.proxy.connect(m.dbname, autocommit=True)
    plain.execute("INSERT INTO t VALUES (2, 'two')")
    assert plain.execute("SELECT count(*) FROM t").fetchone()[0] == 2
    # Protocol-level named statements: the proxy re-Parses them, nothing to read.
    named = m.proxy.connect(m.dbname, autocommit=True)
    for _ in range(3):
        assert named.execute("SELECT v FROM t WHERE id = %s", (1,), prepare=True).fetchone()[0] == "one"
    # A setting made through a function call: the statement is not one that leaves the session alone.
    touched = m.proxy.connect(m.dbname, autocommit=True)
    touched.execute("SELECT set_config('work_mem', '11MB', false)")
    touched.execute("SELECT count(*) FROM t")

    result = m.proxy.run_cutover()
    assert result.returncode == 0, result.stdout + result.stderr + m.proxy.log_tail()
    report = m.proxy.report()
    assert report["clients_moved"] == 3
    assert report["sessions_known_unread"] == 2, report

    for conn in (plain, named, touched):
        assert conn.execute("SELECT inet_server_port()").fetchone()[0] == m.pair.target.port
    assert plain.execute("SELECT count(*) FROM t").fetchone()[0] == 2
    assert named.execute("SELECT v FROM t WHERE id = %s", (1,), prepare=True).fetchone()[0] == "one"
    assert touched.execute("SHOW work_mem").fetchone()[0] == "11MB"
    for conn in (plain, named, touched):
        conn.close()


HIDDEN = {
    "trigger": "CREATE FUNCTION remember_tenant() RETURNS trigger LANGUAGE plpgsql AS $$ "
               "BEGIN PERFORM set_config('work_mem', NEW.v, false); RETURN NEW; END $$; "
               "CREATE TRIGGER remember_tenant BEFORE INSERT ON t FOR EACH ROW EXECUTE FUNCTION remember_tenant()",
    "view": "CREATE VIEW tenant AS SELECT set_config('work_mem', '13MB', false) AS v",
}
# A statement that leaves the session alone by its text, and sets work_mem to 13MB behind it.
RUN = {
    "trigger": "INSERT INTO t VALUES (2, '13MB')",
    "view": "SELECT v FROM tenant",
}


@pytest.mark.parametrize("hidden", sorted(HIDDEN))
def test_code_behind_statements_gets_every_session_read(migration, hidden):
    m = migration(prepare=lambda dsn: psql_value(dsn, "CREATE TABLE t (id int PRIMARY KEY, v text); " + HIDDEN[hidden]))
    conn = m.proxy.connect(m.dbname, autocommit=True)
    conn.execute(RUN[hidden])
    assert conn.execute("SHOW work_mem").fetchone()[0] == "13MB"

    result = m.proxy.run_cutover()
    assert result.returncode == 0, result.stdout + result.stderr + m.proxy.log_tail()
    report = m.proxy.report()
    assert report["clients_moved"] == 1
    assert report["sessions_known_unread"] == 0, report
    assert "runs code its clients do not name" in m.proxy.log_tail(400)
    assert conn.execute("SELECT inet_server_port()").fetchone()[0] == m.pair.target.port
    assert conn.execute("SHOW work_mem").fetchone()[0] == "13MB"
    conn.close()


def test_setting_made_in_the_last_transaction_moves(migration):
    """A session is read once its client is quiet: what its last transaction set moves too."""
    m = migration(prepare=lambda dsn: psql_value(dsn, "CREATE TABLE t (id int PRIMARY KEY)"),
                  cutover={"drain_timeout": "60s"})
    conn = m.proxy.connect(m.dbname, autocommit=False)
    conn.execute("INSERT INTO t VALUES (1)")  # open: the pause waits for it
    cutover = threading.Thread(target=lambda: results.append(m.proxy.run_cutover()))
    results = []
    cutover.start()
    m.proxy.wait_log(r"pausing", timeout=60)
    conn.execute("SET work_mem = '5MB'")
    conn.commit()
    cutover.join(timeout=120)
    assert results and results[0].returncode == 0, (results[0].stdout + results[0].stderr if results else "") + \
        m.proxy.log_tail()
    assert m.proxy.report()["sessions_known_unread"] == 0
    assert conn.execute("SHOW work_mem").fetchone()[0] == "5MB"
    assert conn.execute("SELECT inet_server_port()").fetchone()[0] == m.pair.target.port
    conn.close()


def test_custom_settings_move(migration):
    """Custom settings (never in pg_settings) move: set by the client, and by a trigger function by name."""
    m = migration(prepare=lambda dsn: psql_value(
        dsn, "CREATE TABLE t (id int PRIMARY KEY, v text); "
             "CREATE FUNCTION remember() RETURNS trigger LANGUAGE plpgsql AS $$ "
             "BEGIN PERFORM set_config('app.from_trigger', NEW.v, false); RETURN NEW; END $$; "
             "CREATE TRIGGER remember BEFORE INSERT ON t FOR EACH ROW EXECUTE FUNCTION remember()"))
    conn = m.proxy.connect(m.dbname, autocommit=True)
    conn.execute("SET app.tenant = 'acme'")
    conn.execute("SELECT set_config('App.User', '7', false)")
    conn.execute("INSERT INTO t VALUES (1, 'zed')")
    other = m.proxy.connect(m.dbname, autocommit=True)
    other.execute("SET myapp.role TO reader")

    result = m.proxy.run_cutover()
    assert result.returncode == 0, result.stdout + result.stderr + m.proxy.log_tail()
    assert conn.execute("SELECT inet_server_port()").fetchone()[0] == m.pair.target.port
    values = conn.execute("SELECT current_setting('app.tenant'), current_setting('app.user'), "
                          "current_setting('app.from_trigger'), current_setting('myapp.role', true)").fetchone()
    assert values == ("acme", "7", "zed", None)
    assert other.execute("SELECT current_setting('myapp.role'), current_setting('app.tenant', true)").fetchone() == \
        ("reader", None)
    conn.close()
    other.close()


def test_many_open_transactions_reach_the_drain_timeout(migration):
    """More clients in open transactions than the pause may read: the cutover still pauses, then aborts."""
    m = migration(prepare=lambda dsn: psql_value(dsn, "CREATE TABLE t (id int PRIMARY KEY)"),
                  cutover={"drain_timeout": "300ms", "on_drain_timeout": "abort"})
    busy = []
    for i in range(20):
        conn = m.proxy.connect(m.dbname, autocommit=False)
        conn.execute("INSERT INTO t VALUES (%s)", (i,))  # left open
        busy.append(conn)
    result = m.proxy.run_cutover(timeout=120)
    assert result.returncode == 1, result.stdout + result.stderr + m.proxy.log_tail()
    assert "transactions still open after drain_timeout" in result.stderr
    for conn in busy:
        conn.commit()
        conn.close()
    assert psql_value(m.source_dsn(), "SELECT count(*) FROM t") == "20"
