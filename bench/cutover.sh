#!/usr/bin/env bash
# The cutover benchmark: what a client running pgbench sees while
# `pghandoff cutover` moves it from a source cluster to a target cluster, next
# to the same switch done by hand with PgBouncer and a native logical
# subscription, all measured in the same run.
#   1. installs what is missing (Debian packages, as root) and builds
#      build/pghandoff if it is missing,
#   2. the reference: a fresh source/target pair with `pghandoff replicate`
#      streaming and pgbench straight to the source, no proxy and no switch,
#      the longest transaction the machine itself gives under that load,
#   3. pghandoff, CLIENTS clients: a fresh source/target pair, pgbench -i on
#      the source, `pghandoff replicate` and `pghandoff proxy` in front, pgbench
#      through the proxy for DURATION seconds and `pghandoff cutover --json` at
#      CUTOVER_AT seconds,
#   4. PgBouncer, CLIENTS clients (the baseline): a fresh pair with a native
#      subscription, PgBouncer in transaction mode in front, and at CUTOVER_AT
#      seconds a switch script: PAUSE, wait for the subscription to reach the
#      source's WAL position, setval the sequences, point [databases] at the
#      target, RELOAD, RESUME,
#   5. pghandoff, RATE_CLIENTS clients at RATE transactions per second,
#   6. a table: the longest transaction (from pgbench's per-transaction logs),
#      the pause, failed transactions, aborted clients and lost transactions
#      (committed by pgbench but missing on the target), each against its
#      target, and pghandoff's longest transaction over PgBouncer's.
# It is a benchmark, not a test: it exits 0 when a target is missed or the
# cutover fails, and non-zero only when it could not measure.  See
# bench/README.md.
# Environment: SOURCE_VERSION (13 if installed, else 15), TARGET_VERSION (17 if
# installed, else 15), SCALE (10), DURATION (20), CUTOVER_AT (10), CLIENTS (16),
# JOBS (2), RATE_CLIENTS (500), RATE (200: what 2 cores sustain at scale 10), TIMEOUT (300 s per wait),
# PGHANDOFF_BIN (build/pghandoff), KEEP_WORKDIR=1, SCENARIOS ("dir hnd bnc hndr": the reference,
# pghandoff with CLIENTS, PgBouncer with CLIENTS, pghandoff with RATE_CLIENTS; a subset runs only those).
set -euo pipefail
export LC_ALL=C   # decimal points in awk and in $EPOCHREALTIME

cd "$(dirname "$0")/.."
root=$(pwd)

SCALE=${SCALE:-10}
DURATION=${DURATION:-20}
CUTOVER_AT=${CUTOVER_AT:-10}
CLIENTS=${CLIENTS:-16}
JOBS=${JOBS:-2}
SCENARIOS=${SCENARIOS:-dir hnd bnc hndr}
RATE_CLIENTS=${RATE_CLIENTS:-500}
RATE=${RATE:-200}
TIMEOUT=${TIMEOUT:-300}
PGHANDOFF_BIN=${PGHANDOFF_BIN:-build/pghandoff}
PYTHON=/usr/bin/python3   # Debian's, which has python3-psycopg
DB=bench
# Targets for the longest transaction, in ms.
TARGET_LONGEST=100
TARGET_LONGEST_RATE=250

say() { printf '%s\n' "$*"; }
die() { printf 'cutover.sh: %s\n' "$*" >&2; exit 1; }
now() { printf '%s\n' "$EPOCHREALTIME"; }
elapsed() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f\n", b - a }'; }

for var in SCALE DURATION CUTOVER_AT CLIENTS JOBS RATE_CLIENTS RATE TIMEOUT; do
	if [[ ! ${!var} =~ ^[1-9][0-9]*$ ]]; then
		echo "cutover.sh: $var must be a positive integer, not '${!var}'" >&2
		exit 2
	fi
done
if ((CUTOVER_AT < 2 || CUTOVER_AT >= DURATION)); then
	echo "cutover.sh: CUTOVER_AT ($CUTOVER_AT) must be at least 2 and less than DURATION ($DURATION)" >&2
	exit 2
fi

# server_bin MAJOR: the directory with initdb, pg_ctl and postgres of that
# major: Debian's, else the one tests/install-postgres.sh installed.
server_bin() {
	local d
	for d in "/usr/lib/postgresql/$1/bin" "${PGHANDOFF_PG_CACHE:-$root/.cache/postgres}/$1/bin" \
		"/var/cache/pghandoff/postgres/$1/bin"; do
		if [[ -x $d/postgres && -x $d/initdb && -x $d/pg_ctl ]]; then
			printf '%s\n' "$d"
			return 0
		fi
	done
	return 1
}

if [[ -z ${SOURCE_VERSION:-} ]]; then
	if server_bin 13 >/dev/null; then SOURCE_VERSION=13; else SOURCE_VERSION=15; fi
fi
if [[ -z ${TARGET_VERSION:-} ]]; then
	if server_bin 17 >/dev/null; then TARGET_VERSION=17; else TARGET_VERSION=15; fi
fi
for var in SOURCE_VERSION TARGET_VERSION; do
	[[ ${!var} =~ ^1[0-9]$ ]] || die "$var must be a PostgreSQL major version such as 15, not '${!var}'"
done
((TARGET_VERSION >= SOURCE_VERSION)) ||
	die "TARGET_VERSION ($TARGET_VERSION) must be at least SOURCE_VERSION ($SOURCE_VERSION)"

# ---- 1. prerequisites and the binary ---------------------------------------

# The client tools (psql, pgbench, pg_dump) are Debian's 15: pg_dump must be
# at least the source's version.
packages=(python3 python3-psycopg pgbouncer postgresql-15 postgresql-client-15)
missing=()
for p in "${packages[@]}"; do
	dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
	if [[ $(id -u) -ne 0 ]]; then
		die "missing Debian packages: ${missing[*]} (run as root to install them)"
	fi
	say "== installing ${missing[*]}"
	apt-get update -qq
	DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

CLIENTBIN=
for ((v = (SOURCE_VERSION > 15 ? SOURCE_VERSION : 15); v <= 18; v++)); do
	if [[ -x /usr/lib/postgresql/$v/bin/pg_dump && -x /usr/lib/postgresql/$v/bin/pgbench ]]; then
		CLIENTBIN=/usr/lib/postgresql/$v/bin
		break
	fi
done
[[ -n $CLIENTBIN ]] ||
	die "no pg_dump and pgbench of version $SOURCE_VERSION or later in /usr/lib/postgresql (install postgresql-client-$SOURCE_VERSION)"
SRC_BIN=$(server_bin "$SOURCE_VERSION") ||
	die "no PostgreSQL $SOURCE_VERSION server: run tests/install-postgres.sh $SOURCE_VERSION"
TGT_BIN=$(server_bin "$TARGET_VERSION") ||
	die "no PostgreSQL $TARGET_VERSION server: run tests/install-postgres.sh $TARGET_VERSION"

if [[ ! -x $PGHANDOFF_BIN ]]; then
	[[ $PGHANDOFF_BIN == build/pghandoff ]] || die "$PGHANDOFF_BIN is not an executable"
	say "== meson compile -C build"
	if ! meson compile -C build >"${TMPDIR:-/tmp}/pghandoff-cutbench-build.log" 2>&1; then
		tail -n 30 "${TMPDIR:-/tmp}/pghandoff-cutbench-build.log"
		die "meson compile -C build failed (output above)"
	fi
	rm -f "${TMPDIR:-/tmp}/pghandoff-cutbench-build.log"
	[[ -x $PGHANDOFF_BIN ]] || die "meson compile -C build made no $PGHANDOFF_BIN"
fi

# ---- the work directory and its cleanup ------------------------------------

# initdb, postgres and PgBouncer refuse to run as root: as root they run as
# the 'postgres' OS user; everything else runs as we are.
if [[ $(id -u) -eq 0 ]]; then
	id postgres >/dev/null 2>&1 || die "running as root and there is no 'postgres' OS user"
	as_pg() { runuser -u postgres -- "$@"; }
	bouncer_user=(-u postgres)
else
	as_pg() { "$@"; }
	bouncer_user=()
fi
for d in "$SRC_BIN" "$TGT_BIN"; do
	as_pg test -x "$d/postgres" || die "$d/postgres cannot be run by the user that runs the servers"
done

work=$(mktemp -d "${TMPDIR:-/tmp}/pghandoff-cutbench.XXXXXX")
declare -A cluster_bin=()   # data directory of a running cluster -> its bin directory
pgbench_pid=
proxy_pid=
repl_pid=
bouncer_pid=

# Stops one of our background processes by its pid: SIG first, SIGKILL after 10 s.
stop_pid() {
	local pid=$1 sig=$2 i
	[[ -n $pid ]] || return 0
	kill -"$sig" "$pid" 2>/dev/null || { wait "$pid" 2>/dev/null || true; return 0; }
	for ((i = 0; i < 100; i++)); do
		kill -0 "$pid" 2>/dev/null || break
		sleep 0.1
	done
	kill -KILL "$pid" 2>/dev/null || true
	wait "$pid" 2>/dev/null || true
}

# stop_all: every process and cluster of the current scenario.
stop_all() {
	local d
	stop_pid "$pgbench_pid" INT
	stop_pid "$proxy_pid" INT      # pghandoff proxy: SIGINT closes everything at once
	stop_pid "$repl_pid" TERM      # pghandoff replicate: SIGTERM commits what it applied and exits
	stop_pid "$bouncer_pid" TERM   # PgBouncer: SIGTERM is its immediate shutdown
	pgbench_pid='' proxy_pid='' repl_pid='' bouncer_pid=''
	for d in "${!cluster_bin[@]}"; do
		as_pg "${cluster_bin[$d]}/pg_ctl" -D "$d" -m immediate -w stop >/dev/null 2>&1
		unset "cluster_bin[$d]"
	done
}

# shellcheck disable=SC2317  # called by the EXIT trap
cleanup() {
	set +e
	stop_all
	if [[ -n ${KEEP_WORKDIR:-} ]]; then
		say "work directory kept: $work"
	else
		rm -rf "$work"
	fi
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

[[ $(id -u) -ne 0 ]] || chown postgres: "$work"
chmod 755 "$work"

# 500 clients through a proxy: a descriptor each towards the client, the
# source and the target, and pgbench's own.
want_fds=$((RATE_CLIENTS * 4 + 1024))
if (($(ulimit -n) < want_fds)); then
	ulimit -n "$want_fds" 2>/dev/null || ulimit -n "$(ulimit -Hn)"
fi

# The binary is copied so that a rebuild during the run cannot change it.
cp "$PGHANDOFF_BIN" "$work/pghandoff"
export PATH="$CLIENTBIN:$PATH"
export PGSSLMODE=disable PGUSER=postgres
unset PGHOST PGPORT PGDATABASE PGPASSWORD PGOPTIONS

# free_ports N: N free TCP ports on 127.0.0.1.
free_ports() {
	"$PYTHON" -c '
import socket, sys
socks = [socket.socket() for _ in range(int(sys.argv[1]))]
for s in socks:
    s.bind(("127.0.0.1", 0))
print(*(s.getsockname()[1] for s in socks))
' "$1"
}

wait_for_port() {
	local port=$1 pid=$2 i
	for ((i = 0; i < 100; i++)); do
		if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
			return 0
		fi
		if [[ -n $pid ]] && ! kill -0 "$pid" 2>/dev/null; then
			break
		fi
		sleep 0.1
	done
	return 1
}

# q PORT DB SQL...: runs statements over the Unix socket, prints bare values.
q() {
	local port=$1 db=$2 s
	shift 2
	local args=()
	for s in "$@"; do args+=(-c "$s"); done
	# Our own sessions need not be told that an object did not exist yet.
	PGOPTIONS="-c client_min_messages=warning" \
		psql -X -q -A -t -v ON_ERROR_STOP=1 -h "$work" -p "$port" -d "$db" "${args[@]}"
}

# wait_sql PORT DB SQL WHAT: runs SQL, which answers t or f, every 0.1 s until
# it answers t; dies after TIMEOUT seconds.
wait_sql() {
	local port=$1 db=$2 sql=$3 what=$4 deadline=$((SECONDS + TIMEOUT)) answer
	while :; do
		answer=$(q "$port" "$db" "$sql" 2>&1) || true
		[[ $answer == t ]] && return 0
		((SECONDS < deadline)) || die "$what: not done after $TIMEOUT s (last answer: $answer)"
		sleep 0.1
	done
}

# start_cluster DIR PORT BINDIR: initdb and start one cluster in DIR/data,
# its log in DIR.log.
start_cluster() {
	local dir=$1 port=$2 bin=$3
	as_pg "$bin/initdb" -D "$dir" -U postgres -A trust -E UTF8 --locale=C --no-sync >"$dir.initdb.log" 2>&1 ||
		{ cat "$dir.initdb.log"; die "initdb of $dir failed"; }
	cat >>"$dir/postgresql.conf" <<EOF
# ---- bench/cutover.sh ----
listen_addresses = '127.0.0.1'
port = $port
unix_socket_directories = '$work'
max_connections = $((RATE_CLIENTS + 200))
wal_level = logical
max_wal_senders = 10
max_replication_slots = 10
shared_buffers = 128MB
checkpoint_timeout = 15min
max_wal_size = 2GB
wal_retrieve_retry_interval = '100ms'
lc_messages = 'C'
log_line_prefix = '%m [%p] %q%u@%d '
EOF
	cluster_bin[$dir]=$bin
	as_pg "$bin/pg_ctl" -D "$dir" -l "$dir.log" -w -t 60 start >/dev/null ||
		{ tail -n 30 "$dir.log"; die "the cluster in $dir did not start"; }
}

# setup_pair SCENARIO: a fresh source and target, pgbench -i on the source, an
# empty database on the target.  Sets src_port, tgt_port, front_port, sdir.
setup_pair() {
	sdir=$work/$1
	mkdir -p "$sdir"
	[[ $(id -u) -ne 0 ]] || chown postgres: "$sdir"
	read -r src_port tgt_port front_port < <(free_ports 3)
	start_cluster "$sdir/source" "$src_port" "$SRC_BIN"
	start_cluster "$sdir/target" "$tgt_port" "$TGT_BIN"
	q "$src_port" postgres "CREATE DATABASE $DB"
	q "$tgt_port" postgres "CREATE DATABASE $DB"
	pgbench -i -q -s "$SCALE" -h "$work" -p "$src_port" "$DB" >"$sdir/pgbench-init.log" 2>&1 ||
		{ cat "$sdir/pgbench-init.log"; die "pgbench -i failed"; }
	# pgbench_history has no key: logical replication cannot publish an
	# UPDATE or DELETE on it, and pghandoff's preflight refuses it.  pgbench
	# only inserts into it, and REPLICA IDENTITY FULL costs inserts nothing.
	q "$src_port" "$DB" "ALTER TABLE pgbench_history REPLICA IDENTITY FULL" "VACUUM ANALYZE" "CHECKPOINT" >/dev/null
}

# teardown_pair: stops everything of the scenario, removes the data
# directories and keeps the logs.
teardown_pair() {
	stop_all
	rm -rf "$sdir/source" "$sdir/target"
}

# Lines of a log that say something went wrong, prefixed for the report.
log_problems() {
	local file=$1 what=$2 n
	n=$(grep -cE ' (ERROR|WARNING|FATAL|PANIC) ' "$file" 2>/dev/null) || true
	if ((${n:-0} > 0)); then
		say "!! $what logged $n warning/error line(s); the first 15:"
		grep -E ' (ERROR|WARNING|FATAL|PANIC) ' "$file" | head -n 15 | cut -c1-300 | sed 's/^/!!   /'
	fi
}

# proc_status PID: "running", or how it ended.
proc_status() {
	local pid=$1 status=0
	if kill -0 "$pid" 2>/dev/null; then
		echo running
		return 0
	fi
	wait "$pid" 2>/dev/null || status=$?
	if ((status > 128)); then
		echo "died of signal $((status - 128)) ($(kill -l "$((status - 128))" 2>/dev/null || echo '?'))"
	else
		echo "exited with status $status"
	fi
}

# ---- the PgBouncer switch script -------------------------------------------

# What a careful operator would script: every connection opened before the
# PAUSE, and the catch-up polled every millisecond on an open connection.
cat >"$work/switch.py" <<'EOF'
"""PgBouncer switch: PAUSE, wait for the subscription, setval, repoint, RELOAD, RESUME.

Prints one JSON object: the pause (PAUSE sent to RESUME answered) and its parts.
"""
import json
import re
import sys
import time

import psycopg

bouncer_port, src_port, tgt_port, db, sub, ini, timeout = sys.argv[1:8]
timeout = float(timeout)


def connect(port, dbname):
    return psycopg.connect(host="127.0.0.1", port=int(port), dbname=dbname, user="postgres",
                           sslmode="disable", autocommit=True, connect_timeout=10)


admin = connect(bouncer_port, "pgbouncer")
src = connect(src_port, db)
tgt = connect(tgt_port, db)
out = {"result": "aborted"}
paused = False
t0 = time.monotonic()
try:
    admin.execute(f"PAUSE {db}")
    paused = True
    t1 = time.monotonic()
    out["drain_ms"] = round((t1 - t0) * 1e3, 1)
    lsn = src.execute("SELECT pg_current_wal_lsn()::text").fetchone()[0]
    out["lsn"] = lsn
    # latest_end_lsn is the position of the last keepalive the apply worker
    # processed; it processes messages in order, so every transaction that
    # committed before it has been applied on the target.
    while not tgt.execute("SELECT coalesce(max(latest_end_lsn) >= %s::pg_lsn, false) FROM pg_stat_subscription "
                          "WHERE subname = %s AND relid IS NULL", (lsn, sub)).fetchone()[0]:
        if time.monotonic() - t1 > timeout:
            raise RuntimeError(f"the subscription did not reach {lsn} within {timeout:.0f} s")
        time.sleep(0.001)
    t2 = time.monotonic()
    out["catch_up_ms"] = round((t2 - t1) * 1e3, 1)
    seqs = src.execute("SELECT format('%I.%I', schemaname, sequencename), last_value FROM pg_sequences "
                       "WHERE last_value IS NOT NULL").fetchall()
    for name, value in seqs:
        tgt.execute("SELECT setval(%s, %s)", (name, value))
    t3 = time.monotonic()
    out["sequences"] = len(seqs)
    out["sequences_ms"] = round((t3 - t2) * 1e3, 1)
    with open(ini) as f:
        text = f.read()
    new = re.sub(rf"(?m)^({re.escape(db)} = .*\bport=){src_port}\b", rf"\g<1>{tgt_port}", text)
    if new == text:
        raise RuntimeError(f"no [databases] line for {db} with port={src_port} in {ini}")
    with open(ini, "w") as f:
        f.write(new)
    admin.execute("RELOAD")
    out["result"] = "completed"
except Exception as e:  # noqa: BLE001 -- reported, and the clients resumed
    out["reason"] = str(e)
finally:
    if paused:
        admin.execute(f"RESUME {db}")
    t4 = time.monotonic()
    out["pause_ms"] = round((t4 - t0) * 1e3, 1)
print(json.dumps(out))
sys.exit(0 if out["result"] == "completed" else 1)
EOF

# json_fields FILE: the last line of FILE, a JSON object, as "key<TAB>value" lines.
json_fields() {
	"$PYTHON" - "$1" <<'EOF'
import json, sys
try:
    lines = [l for l in open(sys.argv[1]).read().splitlines() if l.strip()]
    report = json.loads(lines[-1])
except Exception:
    sys.exit(1)
for k, v in report.items():
    print(f"{k}\t{v}")
EOF
}

# ---- one timed run ---------------------------------------------------------

# run_load PORT CLIENTS RATE SWITCH: pgbench through PORT for DURATION seconds
# with per-transaction logs in $sdir; at CUTOVER_AT seconds into the run
# (counted from pgbench's first progress report, after its connections are
# made) it runs the function SWITCH.  Sets t_cut, t_cut_end, switch_rc and
# pgbench_rc.  Returns 1 if pgbench never started its run.
run_load() {
	local port=$1 clients=$2 rate=$3 switch=$4 deadline t_first wait_s
	local args=(-n -c "$clients" -j "$JOBS" -T "$DURATION" -P 1 -l --log-prefix="$sdir/txn"
		-h 127.0.0.1 -p "$port" -U postgres)
	[[ -z $rate ]] || args+=(-R "$rate")
	t_cut='' t_cut_end='' switch_rc='' pgbench_rc=''
	rm -f "$sdir"/txn.*
	say "   pgbench ${args[*]:0:7}${rate:+ -R $rate} (per-transaction log), switch at ${CUTOVER_AT} s"
	pgbench "${args[@]}" "$DB" >"$sdir/pgbench.out" 2>"$sdir/pgbench.err" &
	pgbench_pid=$!
	deadline=$((SECONDS + TIMEOUT))
	until grep -qs '^progress: ' "$sdir/pgbench.err"; do
		if ! kill -0 "$pgbench_pid" 2>/dev/null || ((SECONDS >= deadline)); then
			say "!! pgbench did not start its run; its output:"
			tail -n 15 "$sdir/pgbench.out" "$sdir/pgbench.err" | sed 's/^/!!   /'
			stop_pid "$pgbench_pid" INT
			pgbench_pid=
			return 1
		fi
		sleep 0.02
	done
	# The first progress line comes 1 s into the run.
	t_first=$(now)
	wait_s=$(awk -v t="$t_first" -v at="$CUTOVER_AT" -v n="$(now)" 'BEGIN { d = t + at - 1 - n; printf "%.3f\n", (d > 0) ? d : 0 }')
	sleep "$wait_s"
	t_cut=$(now)
	switch_rc=0
	"$switch" || switch_rc=$?
	t_cut_end=$(now)
	deadline=$((SECONDS + DURATION + TIMEOUT))
	while kill -0 "$pgbench_pid" 2>/dev/null && ((SECONDS < deadline)); do
		sleep 0.2
	done
	if kill -0 "$pgbench_pid" 2>/dev/null; then
		say "!! pgbench still running $TIMEOUT s after its end: interrupted"
		kill -INT "$pgbench_pid" 2>/dev/null || true
		sleep 2
		kill -KILL "$pgbench_pid" 2>/dev/null || true
	fi
	pgbench_rc=0
	wait "$pgbench_pid" 2>/dev/null || pgbench_rc=$?
	pgbench_pid=
	return 0
}

# Per scenario: the figures of the table.
declare -A r_longest=() r_before=() r_after=() r_lag=() r_pause=() r_wait=() r_failed=() r_aborted=()
declare -A r_lost=() r_committed=() r_tps=() r_note=() r_switched=() r_span=()

# collect SCENARIO: pgbench's figures and the rows on the target.
collect() {
	local s=$1 committed failed aborted tps stats target_rows source_rows
	committed=$(sed -n 's/^number of transactions actually processed: \([0-9]*\).*/\1/p' "$sdir/pgbench.out")
	failed=$(sed -n 's/^number of failed transactions: \([0-9]*\).*/\1/p' "$sdir/pgbench.out")
	tps=$(sed -n 's/^tps = \([0-9]*\)\(\.[0-9]\)\{0,1\}[0-9]* (without initial connection time)$/\1\2/p' "$sdir/pgbench.out")
	aborted=$(grep -cE '^client [0-9]+ aborted' "$sdir/pgbench.err") || true
	r_committed[$s]=${committed:--}
	r_failed[$s]=${failed:-0}
	r_aborted[$s]=${aborted:-0}
	r_tps[$s]=${tps:--}
	if ((pgbench_rc != 0)); then
		say "!! pgbench exited with status $pgbench_rc; its last lines:"
		grep -v '^progress: ' "$sdir/pgbench.err" | tail -n 10 | sed 's/^/!!   /'
		r_note[$s]+=" pgbench status $pgbench_rc;"
	fi
	if ((${aborted:-0} > 0)); then
		say "!! $aborted pgbench client(s) aborted; the first errors:"
		grep -E '^client [0-9]+ aborted|ERROR|FATAL|server closed|terminat' "$sdir/pgbench.err" | head -n 8 |
			cut -c1-300 | sed 's/^/!!   /'
	fi
	# Columns of the per-transaction log: client, transaction, latency (us),
	# script, end time (s and us), then with -R the schedule lag (us).  The
	# latency includes the schedule lag, as pgbench's own average does.
	if compgen -G "$sdir/txn.*" >/dev/null; then
		stats=$(cat "$sdir"/txn.* | awk -v tc="$t_cut" -v te="$t_cut_end" '
			$3 ~ /^[0-9]+$/ {
				lat = $3 / 1000; end = $5 + $6 / 1e6; n++
				lg = (NF >= 7) ? $7 / 1000 : 0
				# When it really began: with -R the latency counts from the schedule.
				began = end - (lat - lg) / 1000
				if (lat > max) { max = lat; at = end - tc }
				if (lat - lg > maxrun) maxrun = lat - lg
				if (end < tc && lat > before) before = lat
				if (began > te && lat > after) after = lat
				if (began < te && end > tc && lat > span) span = lat
				if (lg > lag) lag = lg
			}
			END { printf "%.1f %.2f %.1f %.1f %.1f %.1f %d %.1f\n", max, at, before, after, lag, maxrun, n, span }')
		read -r "r_longest[$s]" at "r_before[$s]" "r_after[$s]" "r_lag[$s]" maxrun logged "r_span[$s]" <<<"$stats"
		say "   pgbench: ${committed:-?} transactions (${tps:-?} tps), ${failed:-0} failed, ${aborted:-0} client(s) aborted; $logged in its logs"
		say "   longest transaction ${r_longest[$s]} ms, ended at ${at} s relative to the start of the switch (${CUTOVER_AT} s into the run)"
		say "   longest that ended before the switch began: ${r_before[$s]} ms; that began after it ended: ${r_after[$s]} ms"
		say "   longest that ran while the switch ran: ${r_span[$s]} ms"
		if [[ -n ${3:-} ]]; then
			say "   largest schedule lag (-R; part of the latency): ${r_lag[$s]} ms; longest transaction without its lag: $maxrun ms"
		fi
		# pgbench's progress reports: the throughput of each second, the switch's marked.
		say "   tps each second: $(awk -v at="$CUTOVER_AT" '/^progress: / {
			t = $2 + 0; v = $4 + 0
			printf "%s%.0f%s", (t == at + 1) ? "[" : "", v, (t == at + 1) ? "] " : " " }' "$sdir/pgbench.err")"
	else
		say "!! pgbench wrote no per-transaction log"
		r_longest[$s]=- r_before[$s]=- r_after[$s]=-
	fi
	target_rows=$(q "$tgt_port" "$DB" "SELECT count(*) FROM pgbench_history" 2>&1) || target_rows=-
	source_rows=$(q "$src_port" "$DB" "SELECT count(*) FROM pgbench_history" 2>&1) || source_rows=-
	if [[ ${r_switched[$s]} == yes && $committed =~ ^[0-9]+$ && $target_rows =~ ^[0-9]+$ ]]; then
		r_lost[$s]=$((committed - (target_rows - history_before)))
	else
		r_lost[$s]=-
	fi
	say "   pgbench_history: $target_rows rows on the target (before the run: $history_before), $source_rows on the source; lost = ${r_lost[$s]}"
	if [[ ${r_lost[$s]} =~ ^-[0-9]+$ ]]; then
		say "!! the target has $(( -${r_lost[$s]} )) more rows than pgbench committed (transactions whose commit pgbench never saw)"
	fi
}

# check_route PORT: says where a new connection through the front lands.
check_route() {
	local port
	port=$(psql -X -A -t -h 127.0.0.1 -p "$1" -d "$DB" -c "SELECT inet_server_port()" 2>&1) || port="error: $port"
	if [[ $port == "$tgt_port" ]]; then
		say "   a new connection through it now reaches the target"
	elif [[ ${r_switched[$scenario]} == yes ]]; then
		say "!! after the switch, a new connection through it reaches: $port (target is $tgt_port)"
	else
		say "   a new connection through it reaches: $port (source $src_port, target $tgt_port)"
	fi
}

# ---- 2, 3 and 5. pghandoff ----------------------------------------------------

# shellcheck disable=SC2317  # called by run_load
cutover_pghandoff() {
	local rc=0
	timeout -k 5 "$TIMEOUT" "$work/pghandoff" cutover -c "$sdir/pghandoff.ini" --json \
		>"$sdir/cutover.json" 2>"$sdir/cutover.err" || rc=$?
	return "$rc"
}

# shellcheck disable=SC2317  # called by run_load
no_switch() { return 0; }

# run_pghandoff SCENARIO LABEL CLIENTS RATE: with SCENARIO dir, the reference:
# the same pair with pghandoff replicate streaming, pgbench straight to the
# source, no proxy and no switch.
run_pghandoff() {
	local s=$1 label=$2 clients=$3 rate=$4 t0 k v
	scenario=$s
	say
	say "== $label"
	setup_pair "$s"
	r_switched[$s]=no
	# auth_type = trust asks nobody for a password; the auth file is there
	# because the proxy and `pghandoff cutover` both look for it.
	printf '"postgres" "postgres"\n' >"$sdir/userlist.txt"
	cat >"$sdir/pghandoff.ini" <<EOF
[source]
host = 127.0.0.1
port = $src_port
user = postgres
sslmode = disable

[target]
host = 127.0.0.1
port = $tgt_port
user = postgres
sslmode = disable

[databases]
$DB =

[proxy]
listen_addr = 127.0.0.1
listen_port = $front_port
auth_type = trust
auth_file = $sdir/userlist.txt
admin_users = postgres
max_client_conn = $((RATE_CLIENTS * 2 > 1000 ? RATE_CLIENTS * 2 : 1000))
state_file = $sdir/pghandoff.state

[replication]
slot_name = pghandoff
publication_name = pghandoff
schema = copy
copy_jobs = 2
pg_bindir = $CLIENTBIN

[cutover]
max_lag = 16MB
drain_timeout = 5s
catchup_timeout = 30s
on_drain_timeout = abort

[log]
level = info
EOF
	"$work/pghandoff" config -c "$sdir/pghandoff.ini" >"$sdir/config.out" 2>&1 ||
		{ cat "$sdir/config.out"; die "pghandoff rejects its configuration"; }
	say "   source PostgreSQL $SOURCE_VERSION on port $src_port, target $TARGET_VERSION on $tgt_port, proxy on $front_port"
	t0=$(now)
	# Server processes run in sessions of their own (bench/README.md says why).
	# setsid runs in place here (a background job of a script leads no
	# process group): $! stays the pid.
	setsid "$work/pghandoff" replicate -c "$sdir/pghandoff.ini" >>"$sdir/replicate.log" 2>&1 &
	repl_pid=$!
	setsid "$work/pghandoff" proxy -c "$sdir/pghandoff.ini" >>"$sdir/proxy.log" 2>&1 &
	proxy_pid=$!
	wait_for_port "$front_port" "$proxy_pid" ||
		{ tail -n 20 "$sdir/proxy.log"; die "pghandoff proxy did not start ($(proc_status "$proxy_pid"))"; }
	local deadline=$((SECONDS + TIMEOUT))
	until grep -q "streaming from" "$sdir/replicate.log"; do
		if ! kill -0 "$repl_pid" 2>/dev/null || ((SECONDS >= deadline)); then
			say "!! pghandoff replicate is not streaming ($(proc_status "$repl_pid")); the last lines of its log:"
			tail -n 40 "$sdir/replicate.log" | sed 's/^/!!   /'
			die "pghandoff replicate did not reach streaming"
		fi
		sleep 0.2
	done
	say "   pghandoff replicate: streaming after $(elapsed "$t0" "$(now)") s ($(grep -m1 -o 'streaming from.*' "$sdir/replicate.log"))"
	psql -X -q -h 127.0.0.1 -p "$front_port" -d "$DB" -c "SELECT 1" >/dev/null 2>"$sdir/smoke.err" ||
		{ cat "$sdir/smoke.err"; die "SELECT 1 through the proxy failed"; }
	# What pgbench does before a run unless -n, minus TRUNCATE (history is
	# empty after -i), done directly on the source.
	q "$src_port" "$DB" "VACUUM pgbench_branches" "VACUUM pgbench_tellers" "CHECKPOINT" >/dev/null
	history_before=$(q "$tgt_port" "$DB" "SELECT count(*) FROM pgbench_history")

	if [[ $s == dir ]]; then
		if run_load "$src_port" "$clients" "$rate" no_switch; then
			collect "$s" "$clients" "$rate"
		else
			r_note[$s]+=" pgbench did not run;"
		fi
		log_problems "$sdir/replicate.log" "pghandoff replicate"
		teardown_pair
		return 0
	fi
	if ! run_load "$front_port" "$clients" "$rate" cutover_pghandoff; then
		r_note[$s]+=" pgbench did not run;"
		log_problems "$sdir/proxy.log" "pghandoff proxy"
		teardown_pair
		return 0
	fi

	declare -A rep=()
	while IFS=$'\t' read -r k v; do rep[$k]=$v; done < <(json_fields "$sdir/cutover.json" || true)
	say "   pghandoff cutover: exit status $switch_rc after $(elapsed "$t_cut" "$t_cut_end") s, result ${rep[result]:-none}${rep[reason]:+ (${rep[reason]})}"
	if [[ -s $sdir/cutover.err ]]; then
		say "   its phases (stderr):"
		head -n 30 "$sdir/cutover.err" | cut -c1-300 | sed 's/^/   | /'
	fi
	if [[ ${rep[result]:-} == completed ]]; then
		r_switched[$s]=yes
	else
		say "!! pghandoff cutover failed: exit status $switch_rc${rep[result]:+, result ${rep[result]}}${rep[reason]:+: ${rep[reason]}}"
		if [[ -z ${rep[result]:-} ]]; then
			say "!! its stdout:"
			head -n 10 "$sdir/cutover.json" | sed 's/^/!!   /'
		fi
		((switch_rc != 124)) || say "!! it did not finish within $TIMEOUT s"
		r_note[$s]+=" cutover failed;"
	fi
	if ((${#rep[@]})); then
		local line=
		for k in pause_ms paused_ms longest_wait_ms drain_ms sessions_carried_ms fence_ms catch_up_ms sequences_ms \
			verify_ms rollback_ready_ms switch_ms precheck_ms lag_bytes clients_moved clients_terminated \
			sessions_fenced_off sequences_synced; do
			[[ -z ${rep[$k]:-} ]] || line+=" $k=${rep[$k]}"
		done
		say "   report:$line"
	fi
	r_pause[$s]=${rep[pause_ms]:--}
	r_wait[$s]=${rep[longest_wait_ms]:--}
	if [[ ${r_switched[$s]} == yes && ${rep[clients_moved]:-} != "$clients" ]]; then
		say "!! clients_moved is ${rep[clients_moved]:-missing}, pgbench had $clients clients"
	fi
	unset rep

	collect "$s" "$clients" "$rate"
	check_route "$front_port"
	for p in proxy repl; do
		local pid=${p}_pid st
		st=$(proc_status "${!pid}")
		if [[ $st == "exited with status 0" ]]; then
			say "   pghandoff $p exited with status 0 during the run"
			printf -v "$pid" '%s' ""
		elif [[ $st != running ]]; then
			say "!! pghandoff $p $st after the run; the last lines of its log:"
			tail -n 30 "$sdir/${p/repl/replicate}.log" | sed 's/^/!!   /'
			r_note[$s]+=" $p $st;"
			printf -v "$pid" '%s' ""
		fi
	done
	log_problems "$sdir/proxy.log" "pghandoff proxy"
	log_problems "$sdir/replicate.log" "pghandoff replicate"
	teardown_pair
}

# ---- 4. PgBouncer and a native subscription --------------------------------

# shellcheck disable=SC2317  # called by run_load
switch_pgbouncer() {
	local rc=0
	timeout -k 5 "$TIMEOUT" "$PYTHON" "$work/switch.py" "$front_port" "$src_port" "$tgt_port" "$DB" bench_sub \
		"$sdir/pgbouncer.ini" "$TIMEOUT" >"$sdir/switch.json" 2>"$sdir/switch.err" || rc=$?
	return "$rc"
}

run_pgbouncer() {
	local s=$1 label=$2 clients=$3 t0 lsn k v
	scenario=$s
	say
	say "== $label"
	setup_pair "$s"
	r_switched[$s]=no
	say "   source PostgreSQL $SOURCE_VERSION on port $src_port, target $TARGET_VERSION on $tgt_port, PgBouncer on $front_port"
	t0=$(now)
	if ! pg_dump --schema-only -h "$work" -p "$src_port" "$DB" 2>"$sdir/schema.err" |
		psql -X -q -v ON_ERROR_STOP=1 -h "$work" -p "$tgt_port" -d "$DB" >/dev/null 2>>"$sdir/schema.err"; then
		cat "$sdir/schema.err"
		die "pg_dump --schema-only | psql failed"
	fi
	q "$src_port" "$DB" "CREATE PUBLICATION bench_pub FOR ALL TABLES" >/dev/null
	q "$tgt_port" "$DB" "CREATE SUBSCRIPTION bench_sub CONNECTION 'host=127.0.0.1 port=$src_port dbname=$DB \
user=postgres sslmode=disable' PUBLICATION bench_pub" >/dev/null
	wait_sql "$tgt_port" "$DB" "SELECT count(*) > 0 AND bool_and(r.srsubstate = 'r') FROM pg_subscription_rel r \
JOIN pg_subscription s ON s.oid = r.srsubid WHERE s.subname = 'bench_sub'" "the subscription's initial sync"
	lsn=$(q "$src_port" "$DB" "SELECT pg_current_wal_lsn()")
	wait_sql "$tgt_port" "$DB" "SELECT coalesce(max(latest_end_lsn) >= '$lsn', false) FROM pg_stat_subscription \
WHERE subname = 'bench_sub' AND relid IS NULL" "the subscription's catch-up"
	say "   native subscription: schema, initial sync and catch-up in $(elapsed "$t0" "$(now)") s"

	printf '"postgres" ""\n' >"$sdir/pgbouncer.users"
	cat >"$sdir/pgbouncer.ini" <<EOF
[databases]
$DB = host=127.0.0.1 port=$src_port dbname=$DB user=postgres

[pgbouncer]
listen_addr = 127.0.0.1
listen_port = $front_port
unix_socket_dir =
auth_type = trust
auth_file = $sdir/pgbouncer.users
admin_users = postgres
pool_mode = transaction
default_pool_size = $clients
max_client_conn = $((RATE_CLIENTS * 2 > 1000 ? RATE_CLIENTS * 2 : 1000))
logfile = $sdir/pgbouncer.log
log_connections = 0
log_disconnections = 0
ignore_startup_parameters = extra_float_digits
EOF
	chown -R --reference="$sdir" "$sdir"/pgbouncer.*
	setsid pgbouncer "${bouncer_user[@]}" "$sdir/pgbouncer.ini" >>"$sdir/pgbouncer.out" 2>&1 &
	bouncer_pid=$!
	wait_for_port "$front_port" "$bouncer_pid" ||
		{ tail -n 20 "$sdir/pgbouncer.log" "$sdir/pgbouncer.out"; die "PgBouncer did not start"; }
	psql -X -q -h 127.0.0.1 -p "$front_port" -d "$DB" -c "SELECT 1" >/dev/null 2>"$sdir/smoke.err" ||
		{ cat "$sdir/smoke.err"; die "SELECT 1 through PgBouncer failed"; }
	q "$src_port" "$DB" "VACUUM pgbench_branches" "VACUUM pgbench_tellers" "CHECKPOINT" >/dev/null
	history_before=$(q "$tgt_port" "$DB" "SELECT count(*) FROM pgbench_history")

	if ! run_load "$front_port" "$clients" "" switch_pgbouncer; then
		r_note[$s]+=" pgbench did not run;"
		teardown_pair
		return 0
	fi
	declare -A rep=()
	while IFS=$'\t' read -r k v; do rep[$k]=$v; done < <(json_fields "$sdir/switch.json" || true)
	say "   switch script: exit status $switch_rc after $(elapsed "$t_cut" "$t_cut_end") s, result ${rep[result]:-none}${rep[reason]:+ (${rep[reason]})}"
	say "   pause (PAUSE sent to RESUME answered) ${rep[pause_ms]:--} ms: PAUSE returned after ${rep[drain_ms]:--} ms, catch-up to ${rep[lsn]:--} ${rep[catch_up_ms]:--} ms, ${rep[sequences]:-?} sequence(s) ${rep[sequences_ms]:--} ms"
	if [[ -s $sdir/switch.err ]]; then
		say "!! its stderr:"
		tail -n 10 "$sdir/switch.err" | sed 's/^/!!   /'
	fi
	if [[ ${rep[result]:-} == completed ]]; then
		r_switched[$s]=yes
	else
		r_note[$s]+=" switch failed;"
	fi
	r_pause[$s]=${rep[pause_ms]:--}
	r_wait[$s]=-
	unset rep
	collect "$s" "$clients" ""
	check_route "$front_port"
	teardown_pair
}

# ---- the run ---------------------------------------------------------------

commit=$(git -C "$root" rev-parse --short HEAD 2>/dev/null || echo unknown)
if [[ -n $(git -C "$root" status --porcelain -- '*.c' '*.h' meson.build 2>/dev/null) ]]; then
	commit+=" + uncommitted changes"
fi
buildtype=$(sed -n 's/.*"name": "buildtype", "value": "\([a-z]*\)".*/\1/p' "$(dirname "$PGHANDOFF_BIN")/meson-info/intro-buildoptions.json" 2>/dev/null || true)
say "== setup"
say "machine:    $(nproc) cores, $(awk '/MemTotal/ {printf "%.0f GiB", $2 / 1048576}' /proc/meminfo), $(uname -r)"
say "pghandoff:  $("$work/pghandoff" --version 2>/dev/null | head -n 1) (commit $commit, $PGHANDOFF_BIN${buildtype:+, $buildtype})"
if ! "$work/pghandoff" cutover --help >/dev/null 2>&1; then
	say "!! pghandoff has no working cutover command ('pghandoff cutover --help' fails); the runs will say so"
fi
say "PgBouncer:  $(pgbouncer --version | head -n 1 | awk '{print $2}') (transaction mode)"
say "PostgreSQL: source $("$SRC_BIN/postgres" --version | awk '{print $3}') ($SRC_BIN), target $("$TGT_BIN/postgres" --version | awk '{print $3}') ($TGT_BIN)"
say "            client tools $CLIENTBIN, synchronous_commit=on, shared_buffers=128MB, max_connections=$((RATE_CLIENTS + 200))"
say "pgbench:    scale $SCALE, $DURATION s per run, the switch at $CUTOVER_AT s; every connection over TCP 127.0.0.1"
say "load:       $(cut -d' ' -f1-3 /proc/loadavg) (1, 5, 15 min) before the runs"

# PgBouncer runs between the two pghandoff runs, next to the one it is compared with.
wanted() { [[ " $SCENARIOS " == *" $1 "* ]]; }
if wanted dir; then
	run_pghandoff dir "reference, $CLIENTS clients: pgbench straight to the source while pghandoff replicates; no proxy, no switch" "$CLIENTS" ""
fi
if wanted hnd; then
	run_pghandoff hnd "pghandoff, $CLIENTS clients: pgbench through pghandoff proxy, pghandoff cutover" "$CLIENTS" ""
fi
if wanted bnc; then
	run_pgbouncer bnc "PgBouncer, $CLIENTS clients (baseline): native subscription, PAUSE / repoint / RELOAD / RESUME" "$CLIENTS"
fi
if wanted hndr; then
	run_pghandoff hndr "pghandoff, $RATE_CLIENTS clients at $RATE transactions/s: pghandoff cutover" "$RATE_CLIENTS" "$RATE"
fi

# ---- results ---------------------------------------------------------------

# result S LIMIT: PASS, or MISS and what missed.
result() {
	local s=$1 limit=$2 miss=()
	if [[ ${r_longest[$s]:--} == - ]] || awk -v v="${r_longest[$s]}" -v l="$limit" 'BEGIN { exit !(v + 0 > l + 0) }'; then
		miss+=(longest)
	fi
	[[ ${r_failed[$s]:--} == 0 ]] || miss+=(failed)
	[[ ${r_aborted[$s]:--} == 0 ]] || miss+=(aborted)
	[[ ${r_lost[$s]:--} == 0 ]] || miss+=(lost)
	if ((${#miss[@]})); then
		local IFS=,
		echo "MISS (${miss[*]})"
	else
		echo PASS
	fi
}

say
say "== results: one run each; the switch at ${CUTOVER_AT} s of ${DURATION} s"
fmt='%-30s %11s %11s %11s %9s %10s %7s %8s %6s %10s %8s  %-20s %s\n'
# shellcheck disable=SC2059
printf "$fmt" scenario "longest ms" "before ms" "switch ms" "pause ms" "wait ms" failed aborted lost committed tps target result
# shellcheck disable=SC2059
printf "$fmt" ------------------------------ ----------- ----------- ----------- --------- ---------- ------- -------- ------ \
	---------- -------- -------------------- ------
declare -A label=([dir]="direct, $CLIENTS clients, no switch" [hnd]="pghandoff, $CLIENTS clients" \
	[bnc]="PgBouncer, $CLIENTS clients" [hndr]="pghandoff, $RATE_CLIENTS clients, $RATE/s")
for s in dir hnd hndr bnc; do
	case $s in
	dir) tgt="reference" res=- r_span[dir]=- ;;
	hnd) tgt="<=$TARGET_LONGEST ms, 0 fail/lost" res=$(result hnd "$TARGET_LONGEST") ;;
	hndr) tgt="<=$TARGET_LONGEST_RATE ms, 0 fail/lost" res=$(result hndr "$TARGET_LONGEST_RATE") ;;
	bnc) tgt="baseline" res=- ;;
	esac
	# shellcheck disable=SC2059
	printf "$fmt" "${label[$s]}" "${r_longest[$s]:--}" "${r_before[$s]:--}" "${r_span[$s]:--}" "${r_pause[$s]:--}" "${r_wait[$s]:--}" \
		"${r_failed[$s]:--}" "${r_aborted[$s]:--}" "${r_lost[$s]:--}" "${r_committed[$s]:--}" "${r_tps[$s]:--}" \
		"$tgt" "$res${r_note[$s]:+ --${r_note[$s]%;}}"
done
say "longest: the longest transaction pgbench logged (with -R it includes the schedule lag); before: the longest"
say "  that ended before the switch began; switch: the longest that ran while the switch (the whole cutover command"
say "  or script) ran; direct: pgbench straight to the source, the machine's own longest under the same load;"
say "  pause: pghandoff's pause_ms, PgBouncer's PAUSE"
say "  to RESUME; wait: pghandoff's longest_wait_ms; lost: committed by pgbench but not in the target's pgbench_history"
say "  (- when the switch did not complete); aborted: pgbench clients that stopped on an error"
# shellcheck source=bench/stats.sh
. bench/stats.sh	# the scripts run from the repository root
say "longest transaction, pghandoff / PgBouncer ($CLIENTS clients): $(ratio "${r_longest[hnd]:--}" "${r_longest[bnc]:--}")   (pghandoff ${r_longest[hnd]:--} ms, PgBouncer ${r_longest[bnc]:--} ms)"
say "longest transaction, pghandoff / direct    ($CLIENTS clients): $(ratio "${r_longest[hnd]:--}" "${r_longest[dir]:--}")   (pghandoff ${r_longest[hnd]:--} ms, direct ${r_longest[dir]:--} ms)"
say "pause,               pghandoff / PgBouncer ($CLIENTS clients): $(ratio "${r_pause[hnd]:--}" "${r_pause[bnc]:--}")   (pghandoff ${r_pause[hnd]:--} ms, PgBouncer ${r_pause[bnc]:--} ms)"
say "load:       $(cut -d' ' -f1-3 /proc/loadavg) (1, 5, 15 min) at the end"
say "== done"
exit 0
