#!/usr/bin/env bash
# The transaction-mode benchmark: pghandoff and PgBouncer, both with
# pool_mode = transaction and a pool of POOL_SIZE server connections, serving
# CLIENTS pgbench clients on the same throwaway cluster in the same run, so
# only ratios are reported as results.
#   1. installs what is missing (Debian packages, as root) and builds a release
#      pghandoff in build-bench/ (never the sanitized build),
#   2. starts a cluster in a temporary directory, pgbench -i -s $SCALE,
#   3. starts PgBouncer and pghandoff in transaction mode, both reaching the
#      cluster over TCP loopback like the direct runs,
#   4. throughput: -S, -S -M extended and TPC-B with CLIENTS clients through
#      each proxy; -S -M prepared (which Debian's PgBouncer 1.18 cannot serve
#      in transaction mode) with PREPARED_CLIENTS clients through pghandoff
#      and directly; runs interleaved ROUNDS times, median TPS of each and
#      the ratios, and the CPU time per transaction of the machine and of
#      each proxy.
# It is a benchmark, not a test: it exits 0 when a target is missed, and
# non-zero only when it could not measure.  See bench/README.md.
# Environment: ROUNDS (3), SECONDS_PER_RUN (10), CLIENTS (200), POOL_SIZE (20),
# PREPARED_CLIENTS (20), JOBS (2), SCALE (10), PG_MAJOR (15), KEEP_WORKDIR=1.
set -euo pipefail

cd "$(dirname "$0")/.."
root=$(pwd)

ROUNDS=${ROUNDS:-3}
SECONDS_PER_RUN=${SECONDS_PER_RUN:-10}
CLIENTS=${CLIENTS:-200}
POOL_SIZE=${POOL_SIZE:-20}
PREPARED_CLIENTS=${PREPARED_CLIENTS:-20}
JOBS=${JOBS:-2}
SCALE=${SCALE:-10}
PG_MAJOR=${PG_MAJOR:-15}
PGBIN=/usr/lib/postgresql/$PG_MAJOR/bin
PYTHON=/usr/bin/python3
DB=bench

for var in ROUNDS SECONDS_PER_RUN CLIENTS POOL_SIZE PREPARED_CLIENTS JOBS SCALE PG_MAJOR; do
	if [[ ! ${!var} =~ ^[1-9][0-9]*$ ]]; then
		echo "pool.sh: $var must be a positive integer, not '${!var}'" >&2
		exit 2
	fi
done

bench_name=pool
bench_packages=()
# shellcheck source=bench/setup-proxies.sh
. bench/setup-proxies.sh

# Each proxy holds a socket per client and per server connection, pgbench one
# per client; the proxies inherit this limit.
want_fds=$((CLIENTS * 3 + 1024))
if (($(ulimit -n) < want_fds)); then
	ulimit -n "$want_fds" 2>/dev/null || ulimit -n "$(ulimit -Hn)"
fi
(($(ulimit -n) >= CLIENTS * 2 + 64)) || die "the open-files limit $(ulimit -n) is too low for $CLIENTS clients"

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

# Each proxy holds at most POOL_SIZE server connections (no reserve pool), the
# direct prepared runs PREPARED_CLIENTS; the rest is room for this script's
# psql and anything a proxy opens besides its pool.  What each proxy holds is
# printed after the runs.
max_connections=$((2 * POOL_SIZE + PREPARED_CLIENTS + 20))
say "== cluster: PostgreSQL $PG_MAJOR on 127.0.0.1:$pg_port, pgbench -i -s $SCALE, max_connections $max_connections"
as_pg "$PGBIN/initdb" -D "$work/data" -U postgres -A trust -E UTF8 --no-sync >"$work/initdb.log" 2>&1 ||
	{ cat "$work/initdb.log"; die "initdb failed"; }
cat >>"$work/data/postgresql.conf" <<EOF
# ---- bench/pool.sh ----
listen_addresses = '127.0.0.1'
port = $pg_port
unix_socket_directories = '$work'
max_connections = $max_connections
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

# Both in transaction mode with the same pool and room for every client.
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
pool_mode = transaction
default_pool_size = $POOL_SIZE
max_client_conn = $((CLIENTS + 100))
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
max_client_conn = $((CLIENTS + 100))
pool_mode = transaction
default_pool_size = $POOL_SIZE
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
say "PgBouncer:  $(pgbouncer --version | head -n 1 | awk '{print $2}')"
say "pools:      pool_mode = transaction, default_pool_size = $POOL_SIZE, max_client_conn = $((CLIENTS + 100)) (both proxies)"
say "PostgreSQL: $("$PGBIN/postgres" --version | awk '{print $3}'), synchronous_commit=off, shared_buffers=128MB"
say "load:       $(cut -d' ' -f1-3 /proc/loadavg) (1, 5, 15 min) before the runs"
say "pgbench:    -j $JOBS -T $SECONDS_PER_RUN, scale $SCALE, $ROUNDS rounds, every connection over TCP 127.0.0.1"

# ---- 4. throughput ---------------------------------------------------------

workloads=(select extended tpcb prepared)
declare -A wl_args=([select]="-S" [extended]="-S -M extended" [tpcb]="" [prepared]="-S -M prepared")
declare -A wl_clients=([select]=$CLIENTS [extended]=$CLIENTS [tpcb]=$CLIENTS [prepared]=$PREPARED_CLIENTS)
declare -A wl_label=([select]="select-only (-S)" [extended]="select-only, extended (-S -M extended)"
	[tpcb]="TPC-B (default)" [prepared]="select-only, prepared (-S -M prepared)")
# PgBouncer 1.18 has no max_prepared_statements: in transaction mode a
# prepared statement is not found on the next transaction's server
# connection.  -M prepared is therefore compared with direct connections,
# as many as the pool holds, and reported without a target.
declare -A wl_targets=([select]="pgbouncer pghandoff" [extended]="pgbouncer pghandoff"
	[tpcb]="pgbouncer pghandoff" [prepared]="direct pghandoff")
declare -A wl_target=([select]=1.00 [extended]=1.00 [tpcb]=1.00 [prepared]=-)
declare -A port_of=([direct]=$pg_port [pgbouncer]=$bouncer_port [pghandoff]=$handoff_port)
# run_pgbench and the tables of its runs: bench/setup-proxies.sh.

say
say "== throughput (TPS; runs interleaved, the order of the two targets swapped every round)"
for wl in "${workloads[@]}"; do
	say "-- ${wl_label[$wl]}, -c ${wl_clients[$wl]}"
	psql -X -q -p "$pg_port" -d "$DB" -c "VACUUM ANALYZE" -c "CHECKPOINT" >/dev/null
	read -r -a order <<<"${wl_targets[$wl]}"
	for ((round = 1; round <= ROUNDS; round++)); do
		line="   round $round:"
		for target in "${order[@]}"; do
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
		# Neither target always runs first, after the other's checkpoint debt.
		order=("${order[1]}" "${order[0]}")
	done
done

# What each proxy holds on the cluster after the runs: its pool, no more.
say
say "== server connections to $DB after the runs (SHOW POOLS, sv_active + sv_idle + sv_used + sv_tested + sv_login)"
for name in pgbouncer pghandoff; do
	port=${port_of[$name]}
	admin_db=$name
	held=$(psql -X -A -p "$port" -d "$admin_db" -c "SHOW POOLS" 2>/dev/null | awk -F '|' -v db="$DB" -v pool="$POOL_SIZE" '
		NR == 1 { for (i = 1; i <= NF; i++) col[$i] = i; next }
		$col["database"] == db {
			n += $col["sv_active"] + $col["sv_idle"] + $col["sv_used"] + $col["sv_tested"] + $col["sv_login"]
			mode = $col["pool_mode"]
		}
		END { printf "%d (pool size %s, pool_mode %s)\n", n, pool, mode == "" ? "?" : mode }') || held=-
	say "$(printf '%-10s %s' "$name" "$held")"
done
say "cluster:   $(psql -X -At -p "$pg_port" -d postgres -c \
	"SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'client backend' AND datname = '$DB'") backends on $DB"

# shellcheck source=bench/stats.sh
. bench/stats.sh	# the scripts run from the repository root

verdict() {   # verdict VALUE MIN: PASS when VALUE >= MIN, "-" without a target
	awk -v v="$1" -v t="$2" 'BEGIN {
		if (t == "-") print "-"
		else if (v == "-") print "MISS"
		else print (v + 0 >= t + 0) ? "PASS" : "MISS"
	}'
}

say
say "== throughput: median TPS of $ROUNDS run(s) of ${SECONDS_PER_RUN}s each; ratios of the medians"
fmt='%-40s %8s %10s %10s %10s  %9s %9s  %6s  %-7s %s\n'
# shellcheck disable=SC2059
printf "$fmt" workload clients direct pgbouncer pghandoff "hnd/bnc" "hnd/dir" spread target result
# shellcheck disable=SC2059
printf "$fmt" "$(printf '%.0s-' {1..40})" -------- ---------- ---------- ---------- --------- --------- ------ ------- ------
for wl in "${workloads[@]}"; do
	declare -A med=([direct]=- [pgbouncer]=- [pghandoff]=-)
	worst=-
	for target in ${wl_targets[$wl]}; do
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
	if [[ ${wl_target[$wl]} == - ]]; then
		shown_target=-
		result=reported
	else
		shown_target=">=${wl_target[$wl]}"
		result=$(verdict "$hb" "${wl_target[$wl]}")
	fi
	note=
	for target in ${wl_targets[$wl]}; do
		if [[ -n ${failed_runs["$wl $target"]:-} ]]; then
			note+=" ($target: ${failed_runs["$wl $target"]} run(s) failed)"
		fi
	done
	# shellcheck disable=SC2059
	printf "$fmt" "${wl_label[$wl]}" "${wl_clients[$wl]}" "${med[direct]}" "${med[pgbouncer]}" "${med[pghandoff]}" \
		"$hb" "$hd" "$worst" "$shown_target" "$result$note"
	unset med
done
say "hnd = pghandoff, bnc = PgBouncer, dir = direct (as many clients as the pool holds); both proxies in"
say "  transaction mode with a pool of $POOL_SIZE; target: pghandoff/PgBouncer (hnd/bnc) at least this"
say "spread: the largest (max - min) / median over the targets' runs; ratios within it are noise"

say
say "== CPU per transaction: medians in us, read from /proc (the whole machine busy, and the proxy's own process)"
fmt='%-40s %10s %10s %10s %10s %10s  %9s %9s\n'
# shellcheck disable=SC2059
printf "$fmt" workload direct pgbouncer "(its own)" pghandoff "(its own)" "hnd/bnc" ceiling
# shellcheck disable=SC2059
printf "$fmt" "$(printf '%.0s-' {1..40})" ---------- ---------- ---------- ---------- ---------- --------- ---------
for wl in "${workloads[@]}"; do
	declare -A cpu=([direct]=- [pgbouncer]=- [pghandoff]=-) own=([pgbouncer]=- [pghandoff]=-)
	for target in ${wl_targets[$wl]}; do
		# shellcheck disable=SC2086
		cpu[$target]=$(median ${cpu_runs["$wl $target"]:-})
		if [[ $target != direct ]]; then
			# shellcheck disable=SC2086
			own[$target]=$(median ${proxy_cpu_runs["$wl $target"]:-})
		fi
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
say "  time per transaction with PgBouncer over that time less PgBouncer's own"

say
say "load:       $(cut -d' ' -f1-3 /proc/loadavg) (1, 5, 15 min) at the end"
if ((handoff_crashes)); then
	say "== done; pghandoff died $handoff_crashes time(s) during the run (details above)"
else
	say "== done"
fi
