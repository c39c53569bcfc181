"""The proxy's Prometheus endpoint (metrics_listen), scraped and parsed."""

import re
import socket
import urllib.error
import urllib.request

import pytest

from pgcluster import free_port
from proxyfixtures import module_pg_factory, proxy_factory  # noqa: F401  (fixtures are used by name)

SAMPLE = re.compile(r'^([a-z_]+)(\{[^}]*\})? (\S+)$')


def scrape(port, path="/metrics"):
    with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=10) as r:
        assert r.headers["Content-Type"].startswith("text/plain; version=0.0.4")
        return r.read().decode()


def parse(text):
    """{(name, labels): value}; every sample line must parse, every family have HELP and TYPE."""
    samples, types = {}, {}
    for line in text.splitlines():
        if line.startswith("# TYPE "):
            _, _, name, kind = line.split(" ", 3)
            types[name] = kind
            continue
        if line.startswith("#") or not line:
            continue
        m = SAMPLE.match(line)
        assert m, f"not a Prometheus sample: {line!r}"
        labels = tuple(sorted(re.findall(r'(\w+)="([^"]*)"', m.group(2) or "")))
        samples[(m.group(1), labels)] = float(m.group(3))
        family = re.sub(r"_(bucket|sum|count)$", "", m.group(1))
        assert family in types or m.group(1) in types, f"no # TYPE for {m.group(1)}"
    return samples, types


@pytest.fixture(scope="module")
def pg(module_pg_factory):
    cluster = module_pg_factory(15)
    cluster.execute("CREATE DATABASE app")
    return cluster


def test_metrics_count_what_went_through(pg, proxy_factory):
    port = free_port()
    proxy = proxy_factory(pg, proxy={"metrics_listen": f"127.0.0.1:{port}"})
    with proxy.connect("app") as conn:
        for _ in range(5):
            conn.execute("SELECT 1")
        with conn.transaction():
            conn.execute("SELECT 2")
        samples, types = parse(scrape(port))
        db = (("database", "app"),)
        assert samples[("pghandoff_client_connections", db + (("state", "active"),))] == 1
        assert samples[("pghandoff_server_connections", (("cluster", "source"),) + db)] == 1
        assert samples[("pghandoff_server_connections", (("cluster", "target"),) + db)] == 0
    assert types["pghandoff_queries_total"] == "counter"
    assert types["pghandoff_query_duration_seconds"] == "histogram"
    assert samples[("pghandoff_queries_total", db)] >= 8  # 5 + BEGIN, SELECT, COMMIT
    assert samples[("pghandoff_transactions_total", db)] >= 6
    # The histogram is cumulative and ends with every observation.
    buckets = sorted((float("inf") if dict(k[1])["le"] == "+Inf" else float(dict(k[1])["le"]), v)
                     for k, v in samples.items() if k[0] == "pghandoff_query_duration_seconds_bucket")
    counts = [v for _, v in buckets]
    assert counts == sorted(counts)
    assert counts[-1] == samples[("pghandoff_query_duration_seconds_count", db)] == samples[("pghandoff_queries_total", db)]
    assert samples[("pghandoff_received_bytes_total", db)] > 0 and samples[("pghandoff_sent_bytes_total", db)] > 0
    assert samples[("pghandoff_serving_target", ())] == 0
    assert samples[("pghandoff_cutover_running", ())] == 0


def test_metrics_other_paths_and_garbage(pg, proxy_factory):
    port = free_port()
    proxy_factory(pg, proxy={"metrics_listen": f"127.0.0.1:{port}"})
    with pytest.raises(urllib.error.HTTPError) as e:
        scrape(port, "/nothing")
    assert e.value.code == 404
    # A client that sends garbage and hangs up does not hurt the next scrape.
    with socket.create_connection(("127.0.0.1", port)) as s:
        s.sendall(b"\x00\xff" * 5000)
    assert "pghandoff_queries_total" in scrape(port)


def test_metrics_listen_refused(pg, proxy_factory):
    """A metrics port that is taken stops the proxy at start with a clear error."""
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        proxy = proxy_factory(pg, start=False, proxy={"metrics_listen": f"127.0.0.1:{port}"})
        with pytest.raises(AssertionError) as failed:
            proxy.start(timeout=10)
        assert "could not listen on 127.0.0.1:%d" % port in str(failed.value)
        assert proxy.proc.returncode != 0
        proxy.check_log()
        proxy.proc = None  # its exit was the point
