#!/usr/bin/env bash
# The proxy benchmark: pghandoff against the same PostgreSQL reached directly
# and through PgBouncer (session mode), all three measured in the same run on
# the same throwaway cluster, so only ratios are reported as results.
#   1. installs what is missing (Debian packages, as root) and builds a release
#      pghandoff in build-bench/ (never the sanitized build),
#   2. starts a cluster in a temporary directory, pgbench -i -s $SCALE,
#   3. starts PgBouncer and pghandoff, both reaching the cluster over TCP
#      loopback like the direct runs,
#   4. throughput: per workload, direct / PgBouncer / pghandoff interleaved
#      ROUNDS times, median TPS of each and the ratios against the targets,
#      and the CPU time per transaction of the machine and of each proxy,
#   5. memory: RSS per idle client with IDLE_CLIENTS clients through each
#      proxy, each holding its own server connection.
# It is a benchmark, not a test: it exits 0 when a target is missed, and
# non-zero only when it could not measure.  See bench/README.md.
# Environment: ROUNDS (3), SECONDS_PER_RUN (10), CLIENTS (16), JOBS (2),
# SCALE (10), IDLE_CLIENTS (1000), PG_MAJOR (15), KEEP_WORKDIR=1.
set -euo pipefail

cd "$(dirname "$0")/.."
root=$(pwd)

ROUNDS=${ROUNDS:-3}
SECONDS_PER_RUN=${SECONDS_PER_RUN:-10}
CLIENTS=${CLIENTS:-16}
JOBS=${JOBS:-2}
SCALE=${SCALE:-10}
IDLE_CLIENTS=${IDLE_CLIENTS:-1000}
PG_MAJOR=${PG_MAJOR:-15}
PGBIN=/usr/lib/postgresql/$PG_MAJOR/bin
PYTHON=/usr/bin/python3   # Debian's, which has python3-psycopg
DB=bench

for var in ROUNDS SECONDS_PER_RUN CLIENTS JOBS SCALE IDLE_CLIENTS PG_MAJOR; do
	if [[ ! ${!var} =~ ^[1-9][0-9]*$ ]]; then
		echo "proxy.sh: $var must be a positive integer, not '${!var}'" >&2
		exit 2
	fi
done

bench_name=proxy
bench_packages=(python3-psycopg)
# shellcheck source=bench/setup-proxies.sh
. bench/setup-proxies.sh

# The proxies and the idle clients need thousands of descriptors.
want_fds=$((IDLE_CLIENTS * 3 + 1024))
if (($(ulimit -n) < want_fds)); then
	ulimit -n "$want_fds" 2>/dev/null || ulimit -n "$(ulimit -Hn)"
fi

# The binary is copied so that a rebuild during the run cannot change it.
cp build-bench/pghandoff "$work/pghandoff"

read -r pg_port bouncer_port handoff_port < <("$PYTHON" -c '
import socket
socks = [socket.socket() for _ in range(3)]
for s in socks:
    s.bind(("127.0.0.1", 0))
print(*(s.getsockname()[1] for s in socks))
')

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

# ---- 2. the cluster --------------------------------------------------------

say "== cluster: PostgreSQL $PG_MAJOR on 127.0.0.1:$pg_port, pgbench -i -s $SCALE"
as_pg "$PGBIN/initdb" -D "$work/data" -U postgres -A trust -E UTF8 --no-sync >"$work/initdb.log" 2>&1 ||
	{ cat "$work/initdb.log"; die "initdb failed"; }
cat >>"$work/data/postgresql.conf" <<EOF
# ---- bench/proxy.sh ----
listen_addresses = '127.0.0.1'
port = $pg_port
unix_socket_directories = '$work'
max_connections = $((IDLE_CLIENTS + 200))
shared_buffers = 128MB
synchronous_commit = off
EOF
as_pg "$PGBIN/pg_ctl" -D "$work/data" -l "$work/postgres.log" -w -t 60 start >/dev/null ||
	{ tail -n 30 "$work/postgres.log"; die "the cluster did not start"; }
pg_started=1

export PGSSLMODE=disable PGUSER=postgres PGHOST=127.0.0.1
psql -X -q -p "$pg_port" -d postgres -c "CREATE DATABASE $DB" >/dev/null
pgbench -i -q -s "$SCALE" -p "$pg_port" "$DB" >"$work/pgbench-init.log" 2>&1 ||
	{ cat "$work/pgbench-init.log"; die "pgbench -i failed"; }

# ---- 3. the proxies --------------------------------------------------------

printf '"postgres" ""\n' >"$work/pgbouncer.users"
cat >"$work/pgbouncer.ini" <<EOF
[databases]
$DB = host=127.0.0.1 port=$pg_port dbname=$DB user=postgres

[pgbouncer]
listen_addr = 127.0.0.1
listen_port = $bouncer_port
unix_socket_dir =
auth_type = trust
auth_file = $work/pgbouncer.users
admin_users = postgres
pool_mode = session
default_pool_size = $((IDLE_CLIENTS + 100))
max_client_conn = $((IDLE_CLIENTS * 2))
logfile = $work/pgbouncer.log
log_connections = 0
log_disconnections = 0
ignore_startup_parameters = extra_float_digits
EOF

cat >"$work/pghandoff.ini" <<EOF
[source]
host = 127.0.0.1
port = $pg_port
user = postgres
sslmode = disable

[target]
host = 127.0.0.1
port = $pg_port
user = postgres
sslmode = disable

[databases]
$DB =

[proxy]
listen_addr = 127.0.0.1
listen_port = $handoff_port
auth_type = trust
max_client_conn = $((IDLE_CLIENTS * 2))
default_pool_size = $((IDLE_CLIENTS + 100))
state_file = $work/pghandoff.state

[log]
level = warning
EOF
chown -R --reference="$work" "$work"/pgbouncer.* "$work"/pghandoff.ini

# start_bouncer, start_handoff and check_handoff: bench/setup-proxies.sh.

start_bouncer
start_handoff

for port in "$bouncer_port" "$handoff_port"; do
	psql -X -q -p "$port" -d "$DB" -c "SELECT 1" >/dev/null 2>"$work/smoke.err" ||
		{ cat "$work/smoke.err"; check_handoff || true; die "SELECT 1 through 127.0.0.1:$port failed"; }
done

commit=$(git -C "$root" rev-parse --short HEAD 2>/dev/null || echo unknown)
if [[ -n $(git -C "$root" status --porcelain -- '*.c' '*.h' meson.build 2>/dev/null) ]]; then
	commit+=" + uncommitted changes"
fi
say "== setup"
say "machine:    $(nproc) cores, $(awk '/MemTotal/ {printf "%.0f GiB", $2 / 1048576}' /proc/meminfo), $(uname -r)"
say "pghandoff:  $("$work/pghandoff" --version 2>/dev/null | head -n 1) (commit $commit, build-bench release)"
say "PgBouncer:  $(pgbouncer --version | head -n 1 | awk '{print $2}') (session mode)"
say "PostgreSQL: $("$PGBIN/postgres" --version | awk '{print $3}'), synchronous_commit=off, shared_buffers=128MB"
say "load:       $(cut -d' ' -f1-3 /proc/loadavg) (1, 5, 15 min) before the runs"
say "pgbench:    -c $CLIENTS -j $JOBS -T $SECONDS_PER_RUN, scale $SCALE, $ROUNDS rounds, every connection over TCP 127.0.0.1"

# ---- 4. throughput ---------------------------------------------------------

workloads=(select prepared tpcb connect)
declare -A wl_args=([select]="-S" [prepared]="-S -M prepared" [tpcb]="" [connect]="-S -C")
declare -A wl_label=([select]="select-only (-S)" [prepared]="select-only, prepared (-S -M prepared)" [tpcb]="TPC-B (default)"
	[connect]="select-only, a login per transaction (-S -C)")
declare -A wl_target=([select]=1.10 [prepared]=1.00 [tpcb]=1.00 [connect]=1.00)
declare -A wl_clients=()   # every workload with CLIENTS clients
targets=(direct pgbouncer pghandoff)
declare -A port_of=([direct]=$pg_port [pgbouncer]=$bouncer_port [pghandoff]=$handoff_port)
# run_pgbench and the tables of its runs: bench/setup-proxies.sh.

say
say "== throughput (TPS; runs interleaved direct, pgbouncer, pghandoff)"
for wl in "${workloads[@]}"; do
	say "-- ${wl_label[$wl]}"
	psql -X -q -p "$pg_port" -d "$DB" -c "VACUUM ANALYZE" -c "CHECKPOINT" >/dev/null
	for ((round = 1; round <= ROUNDS; round++)); do
		line="   round $round:"
		for target in "${targets[@]}"; do
			if [[ $wl == tpcb ]]; then
				# What pgbench does before a TPC-B run unless -n, done directly
				# so that every run starts alike and the proxies relay only the run.
				psql -X -q -p "$pg_port" -d "$DB" -c "VACUUM pgbench_branches" \
					-c "VACUUM pgbench_tellers" -c "TRUNCATE pgbench_history" >/dev/null
			fi
			pid_of=([pgbouncer]=$bouncer_pid [pghandoff]=$handoff_pid)
			if read -r tps cpu proxy_cpu < <(run_pgbench "$wl" "$target" 2>"$work/run.err") && [[ -n $tps ]]; then
				tps_runs["$wl $target"]+="$tps "
				cpu_runs["$wl $target"]+="$cpu "
				proxy_cpu_runs["$wl $target"]+="$proxy_cpu "
				line+=$(printf '  %s %10.1f' "$target" "$tps")
			else
				failed_runs["$wl $target"]=$((${failed_runs["$wl $target"]:-0} + 1))
				line+=$(printf '  %s %10s' "$target" "FAILED")
			fi
			if [[ $target == pghandoff ]]; then
				check_handoff >>"$work/run.err" || true
			fi
			if [[ -s $work/run.err ]]; then
				say "$line"
				cat "$work/run.err"
				: >"$work/run.err"
				line="   round $round (cont.):"
			fi
		done
		say "$line"
	done
done

# shellcheck source=bench/stats.sh
. bench/stats.sh	# the scripts run from the repository root

verdict() {   # verdict VALUE MIN: PASS when VALUE >= MIN
	awk -v v="$1" -v t="$2" 'BEGIN { if (v == "-") print "MISS"; else print (v + 0 >= t + 0) ? "PASS" : "MISS" }'
}

say
say "== throughput: median TPS of $ROUNDS run(s) of ${SECONDS_PER_RUN}s each; ratios of the medians"
fmt='%-40s %10s %10s %10s  %9s %9s %9s  %6s  %-7s %s\n'
# shellcheck disable=SC2059
printf "$fmt" workload direct pgbouncer pghandoff "hnd/bnc" "hnd/dir" "bnc/dir" spread target result
# shellcheck disable=SC2059
printf "$fmt" "$(printf '%.0s-' {1..40})" ---------- ---------- ---------- --------- --------- --------- ------ ------- ------
for wl in "${workloads[@]}"; do
	declare -A med=()
	worst=-
	for target in "${targets[@]}"; do
		# shellcheck disable=SC2086
		m=$(median ${tps_runs["$wl $target"]:-})
		[[ $m == - ]] || m=$(printf '%.1f' "$m")
		med[$target]=$m
		# shellcheck disable=SC2086
		sp=$(spread ${tps_runs["$wl $target"]:-})
		if [[ $sp != - && ($worst == - || ${sp%\%} -gt ${worst%\%}) ]]; then
			worst=$sp
		fi
	done
	hb=$(ratio "${med[pghandoff]}" "${med[pgbouncer]}")
	hd=$(ratio "${med[pghandoff]}" "${med[direct]}")
	bd=$(ratio "${med[pgbouncer]}" "${med[direct]}")
	result=$(verdict "$hb" "${wl_target[$wl]}")
	note=
	for target in "${targets[@]}"; do
		if [[ -n ${failed_runs["$wl $target"]:-} ]]; then
			note+=" ($target: ${failed_runs["$wl $target"]} run(s) failed)"
		fi
	done
	# shellcheck disable=SC2059
	printf "$fmt" "${wl_label[$wl]}" "${med[direct]}" "${med[pgbouncer]}" "${med[pghandoff]}" \
		"$hb" "$hd" "$bd" "$worst" ">=${wl_target[$wl]}" "$result$note"
	unset med
done
say "hnd = pghandoff, bnc = PgBouncer, dir = direct; target: pghandoff/PgBouncer (hnd/bnc) at least this"
say "spread: the largest (max - min) / median over the three targets' runs; ratios within it are noise"

say
say "== CPU per transaction: medians in us, read from /proc (the whole machine busy, and the proxy's own process)"
fmt='%-40s %10s %10s %10s %10s %10s  %9s %9s\n'
# shellcheck disable=SC2059
printf "$fmt" workload direct pgbouncer "(its own)" pghandoff "(its own)" "hnd/bnc" ceiling
# shellcheck disable=SC2059
printf "$fmt" "$(printf '%.0s-' {1..40})" ---------- ---------- ---------- ---------- ---------- --------- ---------
for wl in "${workloads[@]}"; do
	declare -A cpu=() own=()
	for target in "${targets[@]}"; do
		# shellcheck disable=SC2086
		cpu[$target]=$(median ${cpu_runs["$wl $target"]:-})
		# shellcheck disable=SC2086
		own[$target]=$(median ${proxy_cpu_runs["$wl $target"]:-})
	done
	# The hnd/bnc ratio a proxy that used no CPU of its own would reach: the
	# machine's time per transaction with PgBouncer, less PgBouncer's own.
	ceiling=$(awk -v m="${cpu[pgbouncer]}" -v o="${own[pgbouncer]}" \
		'BEGIN { if (m == "-" || o == "-" || m - o <= 0) print "-"; else printf "%.2f\n", m / (m - o) }')
	# shellcheck disable=SC2059
	printf "$fmt" "${wl_label[$wl]}" "${cpu[direct]}" "${cpu[pgbouncer]}" "${own[pgbouncer]}" "${cpu[pghandoff]}" \
		"${own[pghandoff]}" "$(ratio "${own[pghandoff]}" "${own[pgbouncer]}")" "$ceiling"
	unset cpu own
done
say "(its own): the proxy process's user + system time, its socket calls included; hnd/bnc: pghandoff's own over"
say "  PgBouncer's; ceiling: the TPS ratio over PgBouncer that a proxy costing no CPU at all would reach, the machine's"
say "  time per transaction with PgBouncer over that time less PgBouncer's own (both proxies make the same four socket"
say "  calls per query, a receive and a send each way, which most of their own time is spent in)"

# ---- 5. memory per idle client ---------------------------------------------

# Waits until the cluster has at most $1 client backends on the database.
wait_for_backends() {
	local most=$1 i n
	for ((i = 0; i < 300; i++)); do
		n=$(psql -X -At -p "$pg_port" -d postgres -c \
			"SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'client backend' AND datname = '$DB'")
		((n <= most)) && return 0
		sleep 0.1
	done
	say "!! $n backends still connected to $DB after 30 s"
}

declare -A mem=()
measure_idle() {
	local name=$1 pid=$2 port=$3 out
	if ! out=$("$PYTHON" "$root/bench/idle_clients.py" --pid "$pid" --port "$port" \
		--pg-port "$pg_port" --dbname "$DB" --clients "$IDLE_CLIENTS" 2>&1); then
		say "!! $name: $out"
		return 1
	fi
	mem[$name]=$out
}

say
say "== memory: $IDLE_CLIENTS idle clients through each proxy, each after one SELECT 1"
# PgBouncer keeps its server connections after the clients leave, so it is
# measured first and then stopped, leaving the cluster's connections free.
measure_idle pgbouncer "$bouncer_pid" "$bouncer_port" || true
stop_pid "$bouncer_pid" TERM
bouncer_pid=
# pghandoff's pools keep theirs too (server_idle_timeout): it starts again
# empty, so both are measured from no server connection at all.
stop_pid "$handoff_pid" INT
wait_for_backends 0
start_handoff
if check_handoff; then
	measure_idle pghandoff "$handoff_pid" "$handoff_port" || true
	check_handoff || true
fi

kv() {   # kv KEY "k=v k=v ...": the value of KEY
	local pair
	for pair in $2; do
		[[ ${pair%%=*} == "$1" ]] && { printf '%s\n' "${pair#*=}"; return 0; }
	done
	printf -- '-\n'
}

fmt='%-10s %14s %14s %16s %14s %14s\n'
# shellcheck disable=SC2059
printf "$fmt" proxy "RSS before KiB" "RSS after KiB" "server backends" "connect time" "KiB/client"
# shellcheck disable=SC2059
printf "$fmt" ---------- -------------- -------------- ---------------- -------------- --------------
declare -A per_client=()
for name in pgbouncer pghandoff; do
	r=${mem[$name]:-}
	if [[ -z $r ]]; then
		per_client[$name]=-
		# shellcheck disable=SC2059
		printf "$fmt" "$name" - - - - "FAILED"
		continue
	fi
	before=$(kv rss_before_kib "$r")
	after=$(kv rss_after_kib "$r")
	per_client[$name]=$(awk -v a="$after" -v b="$before" -v n="$IDLE_CLIENTS" 'BEGIN { printf "%.2f", (a - b) / n }')
	# shellcheck disable=SC2059
	printf "$fmt" "$name" "$before" "$after" \
		"$(kv backends_before "$r") -> $(kv backends_after "$r")" "$(kv open_seconds "$r") s" "${per_client[$name]}"
done
mr=$(ratio "${per_client[pghandoff]}" "${per_client[pgbouncer]}")
if [[ ${per_client[pghandoff]} == - || ${per_client[pgbouncer]} == - ]]; then
	mresult=MISS
else
	mresult=$(awk -v h="${per_client[pghandoff]}" -v b="${per_client[pgbouncer]}" \
		'BEGIN { print (h + 0 <= b + 0) ? "PASS" : "MISS" }')
fi
say "KiB per idle client, pghandoff/PgBouncer: $mr   target: pghandoff <= PgBouncer   $mresult"

say
say "load:       $(cut -d' ' -f1-3 /proc/loadavg) (1, 5, 15 min) at the end"
if ((handoff_crashes)); then
	say "== done; pghandoff died $handoff_crashes time(s) during the run (details above)"
else
	say "== done"
fi
