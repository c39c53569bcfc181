"""Server connection pools seen from outside: the metrics per pool and `pghandoff status`.

Both count what SHOW POOLS counts (one function in proxy/poolstats.c), so
each check here compares them with SHOW POOLS as well as with what the test
did: a connection parked idle, a client waiting on a full pool, active ones.
"""

import json
import re
import threading
import urllib.request

import pytest

from pgcluster import free_port
from proxyfixtures import module_pg_factory, proxy_factory, wait_for  # noqa: F401  (fixtures are used by name)

# name{labels} value, label values in the text format's escaping (\\, \", \n).
SAMPLE = re.compile(r'^([a-z_]+)(?:\{((?:[a-z_]+="(?:[^"\\]|\\.)*",?)*)\})? (\S+)$')
LABEL = re.compile(r'([a-z_]+)="((?:[^"\\]|\\.)*)"')
STATES = ("active", "idle", "used", "tested", "login")


def unescape(value):
    return re.sub(r"\\(.)", lambda m: "\n" if m.group(1) == "n" else m.group(1), value)


def scrape(port):
    """{(name, ((label, value), ...)): float}; every line must parse, every family have a TYPE."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as r:
        text = r.read().decode()
    samples, types = {}, set()
    for line in text.splitlines():
        if line.startswith("# TYPE "):
            types.add(line.split(" ")[2])
        if line.startswith("#") or not line:
            continue
        m = SAMPLE.match(line)
        assert m, f"not a Prometheus sample: {line!r}"
        assert re.sub(r"_(bucket|sum|count)$", "", m.group(1)) in types or m.group(1) in types, line
        labels = tuple(sorted((k, unescape(v)) for k, v in LABEL.findall(m.group(2) or "")))
        samples[(m.group(1), labels)] = float(m.group(3))
    return samples


def pool_metrics(port, db, user="postgres"):
    """The pool's samples, keyed as SHOW POOLS names its columns; None before the pool exists."""
    samples = scrape(port)
    key = (("database", db), ("user", user))

    def get(name, label=None, value=None):
        labels = tuple(sorted(key + (((label, value),) if label else ())))
        return samples.get((name, labels))

    if get("pghandoff_pool_clients", "state", "active") is None:
        return None
    row = {"cl_active": get("pghandoff_pool_clients", "state", "active"),
           "cl_waiting": get("pghandoff_pool_clients", "state", "waiting"),
           "maxwait": get("pghandoff_pool_maxwait_seconds"),
           "session": get("pghandoff_pool_mode", "mode", "session"),
           "transaction": get("pghandoff_pool_mode", "mode", "transaction")}
    for state in STATES:
        row["sv_" + state] = get("pghandoff_pool_server_connections", "state", state)
    assert None not in row.values(), row
    return row


def show_pools(proxy, db, user="postgres"):
    return {r["user"]: r for r in proxy.admin_dicts("SHOW POOLS") if r["database"] == db}.get(user)


def status(proxy, *flags):
    out = proxy.pghandoff.run(["status", "-c", str(proxy.config_path), *flags], timeout=60)
    assert out.returncode == 0, out.stdout + out.stderr
    return out.stdout


def status_pool(proxy, db, user="postgres"):
    pools = [p for p in json.loads(status(proxy, "--json"))["pools"] if (p["database"], p["user"]) == (db, user)]
    assert len(pools) <= 1, pools
    return pools[0] if pools else None


def counts(row):
    """The integer columns of a SHOW POOLS row, a status pool or a metrics row, comparable."""
    return {k: int(float(row[k])) for k in ("cl_active", "cl_waiting", *("sv_" + s for s in STATES))}


@pytest.fixture(scope="module")
def pg15(module_pg_factory):
    cluster = module_pg_factory(15)
    cluster.execute("CREATE DATABASE app")
    return cluster


@pytest.fixture
def db(pg15, request):
    """A database of the test's own, so its pool holds only what the test did."""
    name = "m_" + request.node.name.split("[")[0][5:40]
    pg15.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
    pg15.execute(f"CREATE DATABASE {name}")
    return name


def test_idle_pooled_connection(pg15, db, proxy_factory):
    port = free_port()
    p = proxy_factory(pg15, databases=(db,), proxy={"metrics_listen": f"127.0.0.1:{port}"})
    assert pool_metrics(port, db) is None  # no login yet, no pool
    assert status_pool(p, db) is None
    with p.connect(db) as conn:
        conn.execute("SELECT 1")
        m = pool_metrics(port, db)
        assert counts(m) == {"cl_active": 1, "cl_waiting": 0, "sv_active": 1, "sv_idle": 0, "sv_used": 0,
                             "sv_tested": 0, "sv_login": 0}, m
        assert (m["maxwait"], m["session"], m["transaction"]) == (0, 1, 0)
    # Given back and reset, then parked: idle in the metrics, in SHOW POOLS and in status.
    m = wait_for(lambda: (pool_metrics(port, db) or {}).get("sv_idle") == 1 and pool_metrics(port, db), 20,
                 "the connection to be parked")
    expected = {"cl_active": 0, "cl_waiting": 0, "sv_active": 0, "sv_idle": 1, "sv_used": 0, "sv_tested": 0,
                "sv_login": 0}
    assert counts(m) == expected, m
    assert counts(show_pools(p, db)) == expected
    st = status_pool(p, db)
    assert counts(st) == expected and st["pool_mode"] == "session" and st["maxwait"] == 0, st
    text = status(p)
    assert re.search(rf"^pool\s+user\s+mode\s+cl_active\s+cl_waiting\s+sv_active\s+sv_idle\s", text, re.M), text
    assert re.search(rf"^{db}\s+postgres\s+session\s+0\s+0\s+0\s+1\s+0\s+0\s+0\s+0\.000 s$", text, re.M), text


def test_waiting_client_and_active_ones(pg15, db, proxy_factory):
    port = free_port()
    p = proxy_factory(pg15, databases=(db,),
                      proxy={"metrics_listen": f"127.0.0.1:{port}", "default_pool_size": 1})
    first = p.connect(db)
    got = {}

    def second():
        with p.connect(db, connect_timeout=60) as conn:
            got["one"] = conn.execute("SELECT 1").fetchone()[0]

    t = threading.Thread(target=second)
    t.start()
    try:
        # The second client waits for the pool's only connection, and its wait grows.
        m = wait_for(lambda: (pool_metrics(port, db) or {}).get("cl_waiting") == 1 and pool_metrics(port, db), 20,
                     "the second client to wait")
        assert (m["cl_active"], m["sv_active"], m["sv_idle"]) == (1, 1, 0), m
        m = wait_for(lambda: (lambda r: r["cl_waiting"] == 1 and r["maxwait"] > 0 and r)(pool_metrics(port, db)),
                     20, "the wait to be measured")
        assert m["cl_waiting"] == 1, m
        st = wait_for(lambda: (lambda r: r["maxwait"] > 0 and r)(status_pool(p, db)), 20,
                      "status to show the wait")
        assert (st["cl_active"], st["cl_waiting"], st["sv_active"]) == (1, 1, 1), st
        assert st["maxwait"] >= m["maxwait"]  # the same wait, read later
        row = show_pools(p, db)
        assert (row["cl_active"], row["cl_waiting"], row["sv_active"]) == ("1", "1", "1"), row
        text = status(p)
        assert re.search(rf"^{db}\s+postgres\s+session\s+1\s+1\s+1\s", text, re.M), text
    finally:
        first.close()
        t.join(60)
    assert not t.is_alive() and got["one"] == 1
    # Served and gone: nobody waits, the wait is over.
    m = wait_for(lambda: (pool_metrics(port, db) or {}).get("sv_idle") == 1 and pool_metrics(port, db), 20,
                 "the connection to be parked")
    assert (m["cl_active"], m["cl_waiting"], m["sv_active"], m["maxwait"]) == (0, 0, 0, 0), m


def test_transaction_mode_and_a_user_name_to_escape(pg15, proxy_factory):
    """pool_mode shows per pool; a user name with a quote, a backslash and a newline keeps the scrape valid."""
    user = 'we"ird\\one\nline'
    quoted = '"' + user.replace('"', '""') + '"'
    pg15.execute(f"DROP ROLE IF EXISTS {quoted}")
    pg15.execute(f"CREATE ROLE {quoted} LOGIN SUPERUSER")
    port = free_port()
    p = proxy_factory(pg15, proxy={"metrics_listen": f"127.0.0.1:{port}", "pool_mode": "transaction"})
    with p.connect("app", user=user) as conn:
        assert conn.execute("SELECT current_user").fetchone()[0] == user
        m = pool_metrics(port, "app", user)
        assert m is not None, scrape(port)
        assert (m["transaction"], m["session"]) == (1, 0), m
        assert status_pool(p, "app", user)["pool_mode"] == "transaction"
