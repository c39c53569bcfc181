#!/usr/bin/env bash
# The replication benchmark: `pghandoff replicate` against pgcopydb and native
# logical replication, every baseline measured in the same run on the same
# throwaway clusters, so only ratios are reported as results.
#   1. installs what is missing (Debian packages, as root) and builds a release
#      pghandoff in build-bench/ (never the sanitized build),
#   2. starts two source/target cluster pairs in a temporary directory and
#      loads both sources with pgbench -i -s $SCALE plus two secondary indexes,
#   3. initial copy into an empty target database: pghandoff, pgcopydb clone
#      and a native subscription (copy_data = true), after an uncounted
#      pgcopydb warm-up, interleaved ROUNDS times with the lead rotating,
#   4. catch-up: pghandoff (pair 1) and a native subscription (pair 2) are
#      stopped while pgbench writes to their source for CATCHUP_SECONDS, then
#      started again and timed until they have applied everything; row changes
#      per second, alternating ROUNDS times.
# It is a benchmark, not a test: it exits 0 when a target is missed, and
# non-zero only when it could not measure.  See bench/README.md.
# Environment: SCALE (50), ROUNDS (3), CATCHUP_SECONDS (30), CLIENTS (16),
# JOBS (2), COPY_JOBS (4), PG_MAJOR (15), TIMEOUT (1800 s per wait), KEEP_WORKDIR=1,
# DDL (replay: pghandoff's [replication] ddl), COPY_ROUNDS (ROUNDS; 0 leaves the
# initial copy out), SERVER_BIN (the clusters' initdb/pg_ctl/postgres, when they
# are of another major than PG_MAJOR's client programs, e.g. a PostgreSQL 13).
set -euo pipefail
export LC_ALL=C   # decimal points in awk and in $EPOCHREALTIME

cd "$(dirname "$0")/.."
root=$(pwd)

SCALE=${SCALE:-50}
ROUNDS=${ROUNDS:-3}
CATCHUP_SECONDS=${CATCHUP_SECONDS:-30}
CLIENTS=${CLIENTS:-16}
JOBS=${JOBS:-2}
COPY_JOBS=${COPY_JOBS:-4}
PG_MAJOR=${PG_MAJOR:-15}
TIMEOUT=${TIMEOUT:-1800}
PGBIN=/usr/lib/postgresql/$PG_MAJOR/bin
SERVER_BIN=${SERVER_BIN:-$PGBIN}
DDL=${DDL:-replay}
COPY_ROUNDS=${COPY_ROUNDS:-$ROUNDS}
PYTHON=/usr/bin/python3
DB=bench

for var in SCALE ROUNDS CATCHUP_SECONDS CLIENTS JOBS COPY_JOBS PG_MAJOR TIMEOUT; do
	if [[ ! ${!var} =~ ^[1-9][0-9]*$ ]]; then
		echo "replicate.sh: $var must be a positive integer, not '${!var}'" >&2
		exit 2
	fi
done
if [[ ! $COPY_ROUNDS =~ ^[0-9]+$ ]]; then
	echo "replicate.sh: COPY_ROUNDS must be a number, not '$COPY_ROUNDS'" >&2
	exit 2
fi
if [[ $DDL != replay && $DDL != stop ]]; then
	echo "replicate.sh: DDL must be replay or stop, not '$DDL'" >&2
	exit 2
fi
for prog in initdb pg_ctl postgres; do
	[[ -x $SERVER_BIN/$prog ]] || { echo "replicate.sh: no $SERVER_BIN/$prog (SERVER_BIN)" >&2; exit 2; }
done

say() { printf '%s\n' "$*"; }
die() { printf 'replicate.sh: %s\n' "$*" >&2; exit 1; }
now() { printf '%s\n' "$EPOCHREALTIME"; }
elapsed() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f\n", b - a }'; }

# ---- 1. prerequisites and the release build --------------------------------

packages=(
	build-essential meson ninja-build pkg-config
	libpq-dev libssl-dev libev-dev libinih-dev
	python3 pgcopydb "postgresql-$PG_MAJOR" "postgresql-client-$PG_MAJOR"
)
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

say "== release build in build-bench/"
if [[ ! -f build-bench/build.ninja ]]; then
	meson setup build-bench --buildtype=release -Db_sanitize=none >/dev/null
fi
# ninja does nothing when the binary is up to date; otherwise the benchmark
# measures the code as it is in the work tree.
if ! meson compile -C build-bench pghandoff >"${TMPDIR:-/tmp}/pghandoff-replbench-build.log" 2>&1; then
	tail -n 30 "${TMPDIR:-/tmp}/pghandoff-replbench-build.log"
	die "meson compile -C build-bench failed (output above)"
fi
rm -f "${TMPDIR:-/tmp}/pghandoff-replbench-build.log"

# ---- the work directory and its cleanup ------------------------------------

work=$(mktemp -d "${TMPDIR:-/tmp}/pghandoff-replbench.XXXXXX")
clusters_started=()   # data directories of running clusters
handoff_pid=

# Stops one of our background processes by its pid: SIG first, SIGKILL after 30 s.
stop_pid() {
	local pid=$1 sig=$2 i
	[[ -n $pid ]] || return 0
	kill -"$sig" "$pid" 2>/dev/null || return 0
	for ((i = 0; i < 300; i++)); do
		kill -0 "$pid" 2>/dev/null || break
		sleep 0.1
	done
	kill -KILL "$pid" 2>/dev/null || true
	wait "$pid" 2>/dev/null || true
}

cleanup() {
	set +e
	stop_pid "$handoff_pid" TERM
	local d
	for d in "${clusters_started[@]}"; do
		as_pg "$SERVER_BIN/pg_ctl" -D "$d" -m immediate -w stop >/dev/null 2>&1
	done
	if [[ -n ${KEEP_WORKDIR:-} ]]; then
		say "work directory kept: $work"
	else
		rm -rf "$work"
	fi
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# initdb, postgres and pgcopydb refuse to (or should not) run as root: as root
# they run as the 'postgres' OS user; everything else runs as we are.
if [[ $(id -u) -eq 0 ]]; then
	id postgres >/dev/null 2>&1 || die "running as root and there is no 'postgres' OS user"
	chown postgres: "$work"
	as_pg() { runuser -u postgres -- "$@"; }
else
	as_pg() { "$@"; }
fi
chmod 755 "$work"

# The binary is copied so that a rebuild during the run cannot change it.
cp build-bench/pghandoff "$work/pghandoff"
# pghandoff, pgcopydb and our own pg_dump must all use the same major version.
export PATH="$PGBIN:$PATH"
export PGSSLMODE=disable PGUSER=postgres
# Our own psql sessions need not tell us that an object did not exist yet.
export PGOPTIONS="-c client_min_messages=warning"

read -r src1_port tgt1_port src2_port tgt2_port < <("$PYTHON" -c '
import socket
socks = [socket.socket() for _ in range(4)]
for s in socks:
    s.bind(("127.0.0.1", 0))
print(*(s.getsockname()[1] for s in socks))
')

# ---- 2. the clusters -------------------------------------------------------

# start_cluster NAME PORT ROLE: initdb and start one cluster in $work/NAME.
start_cluster() {
	local name=$1 port=$2 role=$3 dir=$work/$1
	as_pg "$SERVER_BIN/initdb" -D "$dir" -U postgres -A trust -E UTF8 --no-sync >"$work/initdb-$name.log" 2>&1 ||
		{ cat "$work/initdb-$name.log"; die "initdb of $name failed"; }
	cat >>"$dir/postgresql.conf" <<EOF
# ---- bench/replicate.sh ----
listen_addresses = '127.0.0.1'
port = $port
unix_socket_directories = '$work'
wal_level = logical
max_wal_senders = 10
max_replication_slots = 10
shared_buffers = 256MB
synchronous_commit = on
checkpoint_timeout = 15min
max_wal_size = 4GB
EOF
	if [[ $role == target ]]; then
		# The launcher waits this long before starting a subscription's worker
		# again; the default 5 s would be counted in every native run.
		echo "wal_retrieve_retry_interval = '100ms'" >>"$dir/postgresql.conf"
	fi
	as_pg "$SERVER_BIN/pg_ctl" -D "$dir" -l "$work/$name.log" -w -t 60 start >/dev/null ||
		{ tail -n 30 "$work/$name.log"; die "cluster $name did not start"; }
	clusters_started+=("$dir")
}

# q PORT DB SQL...: runs statements over the Unix socket, prints bare values.
q() {
	local port=$1 db=$2
	shift 2
	local args=()
	for s in "$@"; do args+=(-c "$s"); done
	psql -X -q -A -t -v ON_ERROR_STOP=1 -h "$work" -p "$port" -d "$db" "${args[@]}"
}

# load_source PORT: pgbench data, the two secondary indexes, and what
# replication needs.
load_source() {
	local port=$1
	q "$port" postgres "CREATE DATABASE $DB"
	pgbench -i -q -s "$SCALE" -h "$work" -p "$port" "$DB" >"$work/pgbench-init-$port.log" 2>&1 ||
		{ cat "$work/pgbench-init-$port.log"; die "pgbench -i failed"; }
	# pgbench_history has no primary key: logical replication cannot publish
	# UPDATE/DELETE on it and pghandoff's preflight refuses it.  pgbench only
	# INSERTs into it, and REPLICA IDENTITY FULL costs inserts nothing.
	# bench_mark is the marker table: see mark_source.
	q "$port" "$DB" \
		"CREATE INDEX ON pgbench_accounts (bid)" \
		"CREATE INDEX ON pgbench_accounts (abalance)" \
		"ALTER TABLE pgbench_history REPLICA IDENTITY FULL" \
		"CREATE TABLE bench_mark (id int PRIMARY KEY, at timestamptz)" \
		"INSERT INTO bench_mark VALUES (1, now())" \
		"CREATE PUBLICATION native FOR ALL TABLES" \
		"VACUUM ANALYZE" "CHECKPOINT" >/dev/null
}

say "== clusters: PostgreSQL $("$SERVER_BIN/postgres" --version | awk '{print $3}'), pair 1 on ports $src1_port -> $tgt1_port, pair 2 on $src2_port -> $tgt2_port"
start_cluster src1 "$src1_port" source
start_cluster tgt1 "$tgt1_port" target
start_cluster src2 "$src2_port" source
start_cluster tgt2 "$tgt2_port" target
say "== pgbench -i -s $SCALE on both sources, plus indexes on pgbench_accounts (bid) and (abalance)"
load_source "$src1_port"
load_source "$src2_port"
accounts=$((SCALE * 100000))
src_size=$(q "$src1_port" postgres "SELECT pg_size_pretty(pg_database_size('$DB'))")

cat >"$work/pghandoff.ini" <<EOF
[source]
host = 127.0.0.1
port = $src1_port
user = postgres
sslmode = disable

[target]
host = 127.0.0.1
port = $tgt1_port
user = postgres
sslmode = disable

[databases]
$DB =

[replication]
schema = copy
copy_jobs = $COPY_JOBS
pg_bindir = $PGBIN
ddl = $DDL

[log]
level = info
EOF
"$work/pghandoff" config -c "$work/pghandoff.ini" >/dev/null || die "pghandoff rejects its configuration"

# ---- helpers ---------------------------------------------------------------

# poll_until PORT DB SQL INTERVAL [PID]: runs SQL, which answers t or f, on one
# connection (a psql coprocess, so each poll costs a query, not a new backend)
# every INTERVAL seconds until it answers t.  Returns 1 after TIMEOUT seconds,
# 2 if process PID has exited, 3 if the query failed (the error in $poll_error).
poll_until() {
	local port=$1 db=$2 sql=$3 interval=$4 pid=${5:-} answer rc=0 deadline in out
	deadline=$((SECONDS + TIMEOUT))
	poll_error=
	coproc POLL { exec psql -X -q -A -t -h "$work" -p "$port" -d "$db" 2>&1; }
	in=${POLL[1]} out=${POLL[0]}
	while :; do
		if ! printf '%s;\n' "$sql" 2>/dev/null 1>&"$in" || ! read -r -t 60 answer <&"$out"; then
			poll_error="psql exited or did not answer"
			rc=3
			break
		fi
		if [[ $answer == t ]]; then
			break
		elif [[ $answer != f ]]; then
			poll_error=$answer
			rc=3
			break
		fi
		if [[ -n $pid ]] && ! kill -0 "$pid" 2>/dev/null; then
			rc=2
			break
		fi
		if ((SECONDS >= deadline)); then
			rc=1
			break
		fi
		sleep "$interval"
	done
	exec {in}>&-
	wait "$POLL_PID" 2>/dev/null || true
	return "$rc"
}

# mark_source PORT: prints an LSN that the follower has caught up with once its
# progress is >= it.  Progress (a replication origin) moves only when a source
# transaction is applied, and the source writes WAL of its own (autovacuum,
# checkpoints) after the last pgbench commit, so pg_current_wal_lsn() alone may
# never be reached.  A one-row update committed right after it is: applying it
# moves the progress past the LSN, and it can only be applied after every
# earlier commit.  It adds one row change to each side's work, not counted.
mark_source() {
	q "$1" "$DB" "SELECT pg_current_wal_lsn()" "UPDATE bench_mark SET at = now() WHERE id = 1" | head -n 1
}

# origin_reached ORIGIN LSN: the query that says whether an origin on the
# target has applied everything up to LSN.  The origin may not exist yet.
# flush = true: only what is durable on the target counts, for both followers.
origin_reached() {
	printf "SELECT coalesce((SELECT pg_replication_origin_progress(roname, true) FROM pg_replication_origin \
WHERE roname = '%s'), '0/0') >= '%s'::pg_lsn" "$1" "$2"
}

# fresh_target PORT: the target database dropped and created empty, and both
# clusters checkpointed so that no run pays for the previous one's dirty pages.
fresh_target() {
	q "$1" postgres "DROP DATABASE IF EXISTS $DB WITH (FORCE)" "CREATE DATABASE $DB" "CHECKPOINT" >/dev/null
	q "$src1_port" postgres "CHECKPOINT" >/dev/null
}

# check_copy PORT: says what is missing when the target database is not a
# complete copy (all pgbench_accounts rows and its three indexes).
check_copy() {
	local rows idx
	rows=$(q "$1" "$DB" "SELECT count(*) FROM pgbench_accounts" 2>&1) || rows="?"
	idx=$(q "$1" "$DB" "SELECT count(*) FROM pg_index WHERE indrelid = 'pgbench_accounts'::regclass AND indisvalid" 2>&1) ||
		idx="?"
	if [[ $rows != "$accounts" || $idx != 3 ]]; then
		say "!! incomplete copy: pgbench_accounts has $rows rows (expected $accounts) and $idx valid indexes (expected 3)"
	fi
}

handoff_log=$work/pghandoff.log
handoff_failures=0

start_handoff() {
	# The same timestamp format as pghandoff's own log lines: see handoff_phases.
	printf '%s\n' "---- started $(date -u '+%F %T.%3N UTC')" >>"$handoff_log"
	"$work/pghandoff" replicate -c "$work/pghandoff.ini" >>"$handoff_log" 2>&1 &
	handoff_pid=$!
}

# stop_handoff: SIGTERM, which commits what was applied; says so unless it exited 0.
stop_handoff() {
	local status=0 i
	[[ -n $handoff_pid ]] || return 0
	kill -TERM "$handoff_pid" 2>/dev/null || true
	for ((i = 0; i < 600; i++)); do
		kill -0 "$handoff_pid" 2>/dev/null || break
		sleep 0.05
	done
	if kill -0 "$handoff_pid" 2>/dev/null; then
		say "!! pghandoff still running 30 s after SIGTERM: killed"
		kill -KILL "$handoff_pid" 2>/dev/null || true
	fi
	wait "$handoff_pid" 2>/dev/null || status=$?
	handoff_pid=
	if ((status != 0)); then
		say "!! pghandoff exited with status $status after SIGTERM"
		handoff_failed
	fi
}

# handoff_phases: where pghandoff's last run spent its time, from its log:
# seconds from its start to each of the milestones it logs.  The awk keeps
# the log from the last "---- started" line on.
handoff_phases() {
	awk '/^---- started/ { n = 0 } { line[++n] = $0 } END { for (i = 1; i <= n; i++) print line[i] }' "$handoff_log" |
		while IFS= read -r l; do
			case $l in
			"---- started "*) printf 'start %s\n' "$(date -d "${l#---- started }" +%s.%N)" ;;
			*"pre-data restored"*) printf 'pre-data %s\n' "$(date -d "${l%% UTC *} UTC" +%s.%N)" ;;
			*"initial copy done"*) printf 'data %s\n' "$(date -d "${l%% UTC *} UTC" +%s.%N)" ;;
			*"post-data restored"*) printf 'post-data %s\n' "$(date -d "${l%% UTC *} UTC" +%s.%N)" ;;
			*"streaming from"*) printf 'streaming %s\n' "$(date -d "${l%% UTC *} UTC" +%s.%N)" ;;
			esac
		done | awk '
			$1 == "start" { t0 = $2; next }
			!($1 in seen) { seen[$1] = 1; out = out sprintf("%s%s at %.1f s", out == "" ? "" : ", ", $1, $2 - t0) }
			END { print out }'
}

# handoff_failed: the last lines of pghandoff's log, for the report.
handoff_failed() {
	handoff_failures=$((handoff_failures + 1))
	say "!! last lines of pghandoff's log:"
	tail -n 40 "$handoff_log" | sed 's/^/!!   /'
}

# handoff_poll_failed RC: explains a poll_until failure while pghandoff ran.
handoff_poll_failed() {
	local rc=$1 status=0
	case $rc in
	1) say "!! pghandoff did not get there within $TIMEOUT s" ;;
	2)
		wait "$handoff_pid" 2>/dev/null || status=$?
		handoff_pid=
		say "!! pghandoff exited with status $status"
		;;
	*) say "!! polling the target failed: $poll_error" ;;
	esac
	handoff_failed
}

# shellcheck source=bench/stats.sh
. bench/stats.sh	# the scripts run from the repository root

# verdict VALUE OP LIMIT: PASS or MISS, OP being <= or >=.
verdict() {
	awk -v v="$1" -v op="$2" -v t="$3" 'BEGIN {
		if (v == "-") print "MISS"
		else if (op == "<=") print (v + 0 <= t + 0) ? "PASS" : "MISS"
		else print (v + 0 >= t + 0) ? "PASS" : "MISS"
	}'
}

commit=$(git -C "$root" rev-parse --short HEAD 2>/dev/null || echo unknown)
if [[ -n $(git -C "$root" status --porcelain -- '*.c' '*.h' meson.build 2>/dev/null) ]]; then
	commit+=" + uncommitted changes"
fi
say "== setup"
say "machine:    $(nproc) cores, $(awk '/MemTotal/ {printf "%.0f GiB", $2 / 1048576}' /proc/meminfo), $(uname -r)"
say "pghandoff:  $("$work/pghandoff" --version 2>/dev/null | head -n 1) (commit $commit, build-bench release), copy_jobs = $COPY_JOBS, ddl = $DDL"
say "pgcopydb:   $(pgcopydb --version 2>/dev/null | sed -n 's/^pgcopydb version //p' | head -n 1)"
say "PostgreSQL: $("$SERVER_BIN/postgres" --version | awk '{print $3}'), 4 clusters, shared_buffers=256MB, synchronous_commit=on"
say "data:       pgbench scale $SCALE ($accounts accounts, database $src_size with the indexes)"
say "load:       $(cut -d' ' -f1-3 /proc/loadavg) (1, 5, 15 min) before the runs"

# ---- 3. initial copy -------------------------------------------------------

declare -A copy_runs=()   # method -> seconds of each successful run

copy_pghandoff() {
	local t0 t1 rc=0
	fresh_target "$tgt1_port"
	t0=$(now)
	start_handoff
	# Progress > 0/0 is set only after the data and post-data (indexes,
	# constraints) are complete: the copy is done and streaming begins.
	poll_until "$tgt1_port" postgres "$(origin_reached pghandoff 0/1)" 0.1 "$handoff_pid" || rc=$?
	t1=$(now)
	if ((rc != 0)); then
		handoff_poll_failed "$rc"
		stop_handoff
	else
		stop_handoff
		say "   pghandoff phases: $(handoff_phases)"
		check_copy "$tgt1_port"
		secs=$(elapsed "$t0" "$t1")
	fi
	"$work/pghandoff" replicate --drop -c "$work/pghandoff.ini" >>"$handoff_log" 2>&1 ||
		say "!! pghandoff replicate --drop failed (see its log)"
	((rc == 0))
}

copy_pgcopydb() {
	local t0 t1 dir=$work/pgcopydb.$1 src tgt
	fresh_target "$tgt1_port"
	src="postgres://postgres@127.0.0.1:$src1_port/$DB?sslmode=disable"
	tgt="postgres://postgres@127.0.0.1:$tgt1_port/$DB?sslmode=disable"
	t0=$(now)
	if ! as_pg env PATH="$PATH" pgcopydb clone --source "$src" --target "$tgt" \
		--table-jobs "$COPY_JOBS" --index-jobs "$COPY_JOBS" --dir "$dir" >"$work/pgcopydb.$1.log" 2>&1; then
		say "!! pgcopydb clone failed; its last lines:"
		tail -n 20 "$work/pgcopydb.$1.log" | sed 's/^/!!   /'
		return 1
	fi
	t1=$(now)
	check_copy "$tgt1_port"
	secs=$(elapsed "$t0" "$t1")
}

# The subscription's progress lives in origin pg_<subscription oid>.
create_subscription() {
	local port=$1 src_port=$2
	q "$port" "$DB" "CREATE SUBSCRIPTION native CONNECTION 'host=127.0.0.1 port=$src_port dbname=$DB user=postgres \
sslmode=disable' PUBLICATION native WITH (copy_data = true)" >/dev/null
}

# Every table of the subscription has finished its initial sync.
sql_subscription_ready="SELECT count(*) > 0 AND bool_and(r.srsubstate = 'r') FROM pg_subscription_rel r \
JOIN pg_subscription s ON s.oid = r.srsubid WHERE s.subname = 'native'"

copy_native() {
	local t0 t1 rc=0
	fresh_target "$tgt1_port"
	t0=$(now)
	# The schema, indexes included, is part of what native replication needs
	# done first, so it is timed.
	if ! pg_dump --schema-only -h "$work" -p "$src1_port" "$DB" 2>"$work/native-schema.err" |
		psql -X -q -v ON_ERROR_STOP=1 -h "$work" -p "$tgt1_port" -d "$DB" >/dev/null 2>>"$work/native-schema.err"; then
		say "!! pg_dump --schema-only | psql failed:"
		sed 's/^/!!   /' "$work/native-schema.err"
		return 1
	fi
	create_subscription "$tgt1_port" "$src1_port"
	poll_until "$tgt1_port" "$DB" "$sql_subscription_ready" 0.1 || rc=$?
	t1=$(now)
	# DROP SUBSCRIPTION drops its slot on the source too.
	q "$tgt1_port" "$DB" "DROP SUBSCRIPTION native" >/dev/null
	if ((rc != 0)); then
		say "!! native initial sync did not finish (poll: rc $rc ${poll_error:-})"
		tail -n 20 "$work/tgt1.log" | sed 's/^/!!   /'
		return 1
	fi
	check_copy "$tgt1_port"
	secs=$(elapsed "$t0" "$t1")
}

copy_methods=(pghandoff pgcopydb native)
say
say "== initial copy into an empty database (seconds; runs interleaved, each round led by the next method)"
# All three copy into the same target cluster.  Whoever goes first there pays
# for what the others then find done (new WAL segments are written out; later
# runs recycle them): one pgcopydb run warms the cluster up uncounted, and the
# lead of the counted rounds rotates.
if ((COPY_ROUNDS == 0)); then
	say "   left out (COPY_ROUNDS = 0)"
elif copy_pgcopydb 0; then
	printf '   warm-up   %-9s %8.2f s (not counted)\n' pgcopydb "$secs"
else
	printf '   warm-up   %-9s   FAILED (not counted)\n' pgcopydb
fi
for ((round = 1; round <= COPY_ROUNDS; round++)); do
	for ((i = 0; i < ${#copy_methods[@]}; i++)); do
		m=${copy_methods[$(((i + round - 1) % ${#copy_methods[@]}))]}
		if "copy_$m" "$round"; then
			copy_runs[$m]+="${copy_runs[$m]:+ }$secs"
			printf '   round %d %-9s %8.2f s\n' "$round" "$m" "$secs"
		else
			printf '   round %d %-9s   FAILED\n' "$round" "$m"
		fi
	done
done
grep -hs "initial copy done" "$handoff_log" | tail -n 1 | sed 's/^/   pghandoff said: /' || true

# ---- 4. catch-up -----------------------------------------------------------

say
say "== catch-up: setting up the followers (pghandoff on pair 1, native on pair 2)"
fresh_target "$tgt1_port"
start_handoff
poll_until "$tgt1_port" postgres "$(origin_reached pghandoff 0/1)" 0.1 "$handoff_pid" ||
	{ handoff_poll_failed $?; die "pghandoff did not complete its initial copy"; }

q "$tgt2_port" postgres "CREATE DATABASE $DB" >/dev/null
pg_dump --schema-only -h "$work" -p "$src2_port" "$DB" |
	psql -X -q -v ON_ERROR_STOP=1 -h "$work" -p "$tgt2_port" -d "$DB" >/dev/null
create_subscription "$tgt2_port" "$src2_port"
poll_until "$tgt2_port" "$DB" "$sql_subscription_ready" 0.1 ||
	die "the native subscription did not complete its initial sync"
native_origin=pg_$(q "$tgt2_port" "$DB" "SELECT oid FROM pg_subscription WHERE subname = 'native'")

# pgbench_run PORT: one TPC-B run against a source; prints the number of
# transactions.  What pgbench does before a run unless -n (vacuum branches
# and tellers, truncate history) is done here without the TRUNCATE: it would
# be replicated, and only pgbench's own transactions should be.
pgbench_run() {
	local port=$1 out=$work/pgbench.$1.out n
	q "$port" "$DB" "VACUUM pgbench_branches" "VACUUM pgbench_tellers" "CHECKPOINT" >/dev/null
	if pgbench -n -c "$CLIENTS" -j "$JOBS" -T "$CATCHUP_SECONDS" -h "$work" -p "$port" "$DB" >"$out" 2>&1; then
		n=$(sed -n 's/^number of transactions actually processed: \([0-9]*\).*/\1/p' "$out")
		if [[ -n $n ]]; then
			printf '%s\n' "$n"
			return 0
		fi
	fi
	{
		say "!! pgbench failed; its last lines:"
		tail -n 15 "$out" | sed 's/^/!!   /'
	} >&2
	return 1
}

declare -A catchup_rate=() catchup_secs=()

# catchup_pghandoff: pghandoff is streaming; prints "transactions seconds wal_bytes".
catchup_pghandoff() {
	local lsn n t0 t1 rc=0 wal_start
	lsn=$(mark_source "$src1_port")
	poll_until "$tgt1_port" postgres "$(origin_reached pghandoff "$lsn")" 0.05 "$handoff_pid" ||
		{ handoff_poll_failed $?; return 1; }
	stop_handoff
	q "$tgt1_port" postgres "CHECKPOINT" >/dev/null
	wal_start=$(q "$src1_port" postgres "SELECT pg_current_wal_lsn()")
	n=$(pgbench_run "$src1_port") || { start_handoff; return 1; }
	lsn=$(mark_source "$src1_port")
	t0=$(now)
	start_handoff
	poll_until "$tgt1_port" postgres "$(origin_reached pghandoff "$lsn")" 0.05 "$handoff_pid" || rc=$?
	t1=$(now)
	if ((rc != 0)); then
		handoff_poll_failed "$rc"
		[[ -n $handoff_pid ]] || start_handoff
		return 1
	fi
	result="$n $(elapsed "$t0" "$t1") $(q "$src1_port" postgres "SELECT pg_wal_lsn_diff('$lsn', '$wal_start')::bigint")"
	# How much of that was starting up (preflight, connections) rather than applying.
	say "   pghandoff started up: $(handoff_phases)"
}

# catchup_native: the subscription is enabled; prints "transactions seconds wal_bytes".
catchup_native() {
	local lsn n t0 t1 rc=0 wal_start
	lsn=$(mark_source "$src2_port")
	poll_until "$tgt2_port" "$DB" "$(origin_reached "$native_origin" "$lsn")" 0.05 ||
		{ say "!! the native subscription is not caught up (rc $? ${poll_error:-})"; return 1; }
	# Stopped like pghandoff is: the apply worker gone, not just asked to go.
	q "$tgt2_port" "$DB" "ALTER SUBSCRIPTION native DISABLE" >/dev/null
	poll_until "$tgt2_port" "$DB" "SELECT count(pid) = 0 FROM pg_stat_subscription WHERE subname = 'native'" 0.05 ||
		{ say "!! the native apply worker did not stop"; return 1; }
	q "$tgt2_port" postgres "CHECKPOINT" >/dev/null
	wal_start=$(q "$src2_port" postgres "SELECT pg_current_wal_lsn()")
	n=$(pgbench_run "$src2_port") || { q "$tgt2_port" "$DB" "ALTER SUBSCRIPTION native ENABLE" >/dev/null; return 1; }
	lsn=$(mark_source "$src2_port")
	t0=$(now)
	q "$tgt2_port" "$DB" "ALTER SUBSCRIPTION native ENABLE" >/dev/null
	poll_until "$tgt2_port" "$DB" "$(origin_reached "$native_origin" "$lsn")" 0.05 || rc=$?
	t1=$(now)
	if ((rc != 0)); then
		say "!! the native subscription did not catch up (rc $rc ${poll_error:-}); the target's log:"
		tail -n 20 "$work/tgt2.log" | sed 's/^/!!   /'
		return 1
	fi
	result="$n $(elapsed "$t0" "$t1") $(q "$src2_port" postgres "SELECT pg_wal_lsn_diff('$lsn', '$wal_start')::bigint")"
}

say "== catch-up after pgbench -c $CLIENTS -j $JOBS -T $CATCHUP_SECONDS (TPC-B) on a stopped follower's source"
say "   (row changes = 4 x pgbench transactions; runs alternate pghandoff, native)"
for ((round = 1; round <= ROUNDS; round++)); do
	for m in pghandoff native; do
		if "catchup_$m" && read -r n secs wal <<<"$result" && [[ $n =~ ^[0-9]+$ && $secs =~ ^[0-9.]+$ ]]; then
			rate=$(awk -v n="$n" -v s="$secs" 'BEGIN { printf "%.0f\n", (s > 0) ? 4 * n / s : 0 }')
			catchup_rate[$m]+="${catchup_rate[$m]:+ }$rate"
			catchup_secs[$m]+="${catchup_secs[$m]:+ }$secs"
			printf '   round %d %-9s %8d transactions = %9d row changes, %6.0f MB of WAL, caught up in %7.2f s: %9d rows/s\n' \
				"$round" "$m" "$n" $((4 * n)) "$(awk -v w="$wal" 'BEGIN { print w / 1048576 }')" "$secs" "$rate"
		else
			printf '   round %d %-9s FAILED\n' "$round" "$m"
		fi
	done
done
stop_handoff
q "$tgt2_port" "$DB" "DROP SUBSCRIPTION native" >/dev/null

# ---- 5. the capture of schema changes on the source --------------------------
# pghandoff left its event triggers on src1 (ddl = replay): the source's time
# per DDL statement with them enabled and disabled, alternating, one client
# running CREATE TABLE / ALTER TABLE ADD COLUMN / DROP TABLE.

ddl_statements=300
ddl_script=$work/ddl.sql
printf '%s\n' 'CREATE TABLE ddl_bench (id int PRIMARY KEY);' 'ALTER TABLE ddl_bench ADD COLUMN v text;' \
	'DROP TABLE ddl_bench;' >"$ddl_script"
declare -A ddl_ms=()
ddl_round() {
	local state=$1 out
	q "$src1_port" "$DB" "ALTER EVENT TRIGGER pghandoff_ddl_start $state; ALTER EVENT TRIGGER pghandoff_ddl_end $state; \
		ALTER EVENT TRIGGER pghandoff_ddl_drop $state" >/dev/null
	out=$(pgbench -n -c 1 -t $((ddl_statements / 3)) -f "$ddl_script" -h "$work" -p "$src1_port" "$DB" 2>&1) ||
		die "pgbench with DDL failed: $out"
	awk '/^latency average/ { printf "%.3f\n", $4 / 3 }' <<<"$out"
}
if [[ $(q "$src1_port" "$DB" "SELECT count(*) FROM pg_event_trigger WHERE evtname LIKE 'pghandoff_ddl_%'") == 3 ]]; then
	for ((round = 1; round <= ROUNDS; round++)); do
		ddl_ms[off]+="$(ddl_round DISABLE) "
		ddl_ms[on]+="$(ddl_round ENABLE) "
	done
fi

# ---- results ---------------------------------------------------------------

say
say "== results: medians of $ROUNDS round(s); spread = (max - min) / median of one method's runs"
say "   a ratio nearer 1 than the spread is within the noise"
declare -A copy_med=() copy_spread=()
for m in "${copy_methods[@]}"; do
	# shellcheck disable=SC2086  # the runs are words on purpose
	copy_med[$m]=$(median ${copy_runs[$m]:-})
	# shellcheck disable=SC2086
	copy_spread[$m]=$(spread ${copy_runs[$m]:-})
done
say "initial copy, scale $SCALE ($src_size), seconds:"
for m in "${copy_methods[@]}"; do
	printf '   %-9s %8s s  spread %4s  runs: %s\n' "$m" "${copy_med[$m]}" "${copy_spread[$m]}" "${copy_runs[$m]:-none}"
done
r_pgcopydb=$(ratio "${copy_med[pghandoff]}" "${copy_med[pgcopydb]}")
r_native=$(ratio "${copy_med[pghandoff]}" "${copy_med[native]}")
printf '   pghandoff / pgcopydb = %s   (target <= 0.80: %s)\n' "$r_pgcopydb" "$(verdict "$r_pgcopydb" '<=' 0.80)"
printf '   pghandoff / native   = %s\n' "$r_native"

say "catch-up after ${CATCHUP_SECONDS}s of pgbench, row changes per second:"
declare -A rate_med=()
for m in pghandoff native; do
	# shellcheck disable=SC2086
	rate_med[$m]=$(median ${catchup_rate[$m]:-})
	# shellcheck disable=SC2086
	printf '   %-9s %8s rows/s  spread %4s  (median %s s)  runs: %s\n' "$m" "${rate_med[$m]}" \
		"$(spread ${catchup_rate[$m]:-})" "$(median ${catchup_secs[$m]:-})" "${catchup_rate[$m]:-none}"
done
r_catchup=$(ratio "${rate_med[pghandoff]}" "${rate_med[native]}")
printf '   pghandoff / native   = %s   (target >= 1.20: %s)\n' "$r_catchup" "$(verdict "$r_catchup" '>=' 1.20)"
if [[ -n ${ddl_ms[on]:-} ]]; then
	# shellcheck disable=SC2086
	printf 'source time per DDL statement: %s ms with the capture, %s ms without  runs: %s / %s\n' \
		"$(median ${ddl_ms[on]})" "$(median ${ddl_ms[off]})" "${ddl_ms[on]}" "${ddl_ms[off]}"
else
	say "source time per DDL statement: not measured (pghandoff's event triggers are not on the source)"
fi
say "pghandoff failures: $handoff_failures"
say "load:       $(cut -d' ' -f1-3 /proc/loadavg) (1, 5, 15 min) at the end"
exit 0
