#!/usr/bin/python3
"""Memory cost of idle clients in a proxy, for bench/proxy.sh.

Reads the proxy's VmRSS, opens --clients connections through it, runs
SELECT 1 once on each (so that a session-mode proxy really holds a server
connection for every client), waits for the proxy to settle, reads VmRSS
again and counts the backends the cluster has for the database.  Prints one
line of key=value pairs and closes everything.

Uses psycopg from Debian's python3-psycopg, so run it with /usr/bin/python3.
"""

import argparse
import resource
import sys
import time

import psycopg


def vm_rss_kib(pid):
    """The process's resident set size in KiB, from /proc/PID/status."""
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise RuntimeError(f"/proc/{pid}/status has no VmRSS line")


def client_backends(args):
    """Client backends connected to the benchmark database, counted directly."""
    with psycopg.connect(host=args.pg_host, port=args.pg_port, user=args.user,
                         dbname="postgres", sslmode="disable", autocommit=True) as conn:
        row = conn.execute(
            "SELECT count(*) FROM pg_stat_activity "
            "WHERE backend_type = 'client backend' AND datname = %s",
            (args.dbname,)).fetchone()
        return row[0]


def raise_fd_limit(needed):
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and soft < needed:
        target = needed if hard == resource.RLIM_INFINITY else min(needed, hard)
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        if target < needed:
            sys.exit(f"idle_clients.py: RLIMIT_NOFILE hard limit {hard} is below the {needed} needed")


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--pid", type=int, required=True, help="the proxy process to measure")
    parser.add_argument("--host", default="127.0.0.1", help="where the proxy listens")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--pg-host", default="127.0.0.1", help="the cluster, for counting backends")
    parser.add_argument("--pg-port", type=int, required=True)
    parser.add_argument("--user", default="postgres")
    parser.add_argument("--dbname", required=True)
    parser.add_argument("--clients", type=int, default=1000)
    parser.add_argument("--settle", type=float, default=2.0,
                        help="seconds to wait after the last SELECT 1 before reading VmRSS")
    args = parser.parse_args()

    raise_fd_limit(args.clients + 64)
    backends_before = client_backends(args)
    rss_before = vm_rss_kib(args.pid)
    conns = []
    started = time.monotonic()
    try:
        for i in range(args.clients):
            try:
                conn = psycopg.connect(host=args.host, port=args.port, user=args.user,
                                       dbname=args.dbname, sslmode="disable",
                                       autocommit=True, connect_timeout=30)
            except psycopg.Error as e:
                sys.exit(f"idle_clients.py: connection {i + 1} of {args.clients} failed: {e}")
            conns.append(conn)
            conn.execute("SELECT 1").fetchone()
        open_seconds = time.monotonic() - started
        time.sleep(args.settle)
        rss_after = vm_rss_kib(args.pid)
        backends_after = client_backends(args)
    finally:
        for conn in conns:
            conn.close()
    print(f"clients={args.clients} rss_before_kib={rss_before} rss_after_kib={rss_after} "
          f"backends_before={backends_before} backends_after={backends_after} "
          f"open_seconds={open_seconds:.1f}")


if __name__ == "__main__":
    main()
