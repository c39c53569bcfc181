# The setup bench/proxy.sh and bench/pool.sh share, sourced from the
# repository root: the Debian packages both need (plus bench_packages), a
# release build in build-bench/, the work directory with its cleanup on exit,
# and how to run what refuses to run as root.  The script sets bench_name
# ("proxy", "pool") and bench_packages first; it defines say, die, stop_pid,
# as_pg and bouncer_user, and work, pg_started, bouncer_pid and handoff_pid,
# which cleanup reads when the script exits; and start_bouncer, start_handoff
# and check_handoff, which start the proxies from $work's files; and
# run_pgbench, one measured pgbench run, with the tables it fills.
# shellcheck shell=bash
say() { printf '%s\n' "$*"; }
die() { printf '%s.sh: %s\n' "$bench_name" "$*" >&2; exit 1; }

# ---- 1. prerequisites and the release build --------------------------------

packages=(
	build-essential meson ninja-build pkg-config
	libpq-dev libssl-dev libev-dev libinih-dev
	python3 "${bench_packages[@]}"
	pgbouncer "postgresql-$PG_MAJOR" "postgresql-client-$PG_MAJOR"
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
else
	# A build-bench/ made some other way is put back to a plain release build.
	meson configure build-bench -Dbuildtype=release -Db_sanitize=none >/dev/null
fi
if ! meson compile -C build-bench pghandoff >"${TMPDIR:-/tmp}/pghandoff-$bench_name-build.log" 2>&1; then
	tail -n 30 "${TMPDIR:-/tmp}/pghandoff-$bench_name-build.log"
	die "meson compile -C build-bench failed (output above)"
fi
rm -f "${TMPDIR:-/tmp}/pghandoff-$bench_name-build.log"

# ---- the work directory and its cleanup ------------------------------------

work=$(mktemp -d "${TMPDIR:-/tmp}/pghandoff-$bench_name.XXXXXX")
pg_started=0
bouncer_pid=
handoff_pid=

# Stops one of our background processes by its pid: SIG first, SIGKILL after 10 s.
stop_pid() {
	local pid=$1 sig=$2 i
	[[ -n $pid ]] || return 0
	kill -"$sig" "$pid" 2>/dev/null || return 0
	for ((i = 0; i < 100; i++)); do
		kill -0 "$pid" 2>/dev/null || break
		sleep 0.1
	done
	kill -KILL "$pid" 2>/dev/null || true
	wait "$pid" 2>/dev/null || true
}

cleanup() {
	set +e
	stop_pid "$handoff_pid" INT      # pghandoff: SIGINT closes everything at once
	stop_pid "$bouncer_pid" TERM     # PgBouncer: SIGTERM is its immediate shutdown
	if ((pg_started)); then
		as_pg "$PGBIN/pg_ctl" -D "$work/data" -m immediate -w stop >/dev/null 2>&1
	fi
	if [[ -n ${KEEP_WORKDIR:-} ]]; then
		say "work directory kept: $work"
	else
		rm -rf "$work"
	fi
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# initdb, postgres and PgBouncer refuse to run as root: as root they run as
# the 'postgres' OS user; everything else runs as we are.
if [[ $(id -u) -eq 0 ]]; then
	id postgres >/dev/null 2>&1 || die "running as root and there is no 'postgres' OS user"
	chown postgres: "$work"
	as_pg() { runuser -u postgres -- "$@"; }
	bouncer_user=(-u postgres)
else
	as_pg() { "$@"; }
	bouncer_user=()
fi
chmod 755 "$work"

# Each proxy runs in a session of its own (bench/README.md says why).  setsid
# runs in place here (a background job of a script leads no process group),
# so $! stays the proxy's pid.
start_bouncer() {
	setsid pgbouncer "${bouncer_user[@]}" "$work/pgbouncer.ini" >>"$work/pgbouncer.out" 2>&1 &
	bouncer_pid=$!
	wait_for_port "$bouncer_port" "$bouncer_pid" ||
		{ tail -n 20 "$work/pgbouncer.log" "$work/pgbouncer.out"; die "PgBouncer did not start"; }
	# Its RSS and CPU time are read by this pid: it must be PgBouncer itself, not a wrapper.
	[[ $(cat "/proc/$bouncer_pid/comm" 2>/dev/null) == pgbouncer ]] ||
		die "pid $bouncer_pid is not PgBouncer"
}

start_handoff() {
	setsid "$work/pghandoff" proxy -c "$work/pghandoff.ini" >>"$work/pghandoff.log" 2>&1 &
	handoff_pid=$!
	wait_for_port "$handoff_port" "$handoff_pid" ||
		{ tail -n 20 "$work/pghandoff.log"; die "pghandoff did not start"; }
}

# Says so, with its last log lines, when pghandoff has died, and starts it
# again so that the rest of the benchmark still runs.  Returns 1 if it had died.
check_handoff() {
	local status
	if kill -0 "$handoff_pid" 2>/dev/null; then
		return 0
	fi
	status=0
	wait "$handoff_pid" 2>/dev/null || status=$?
	if ((status > 128)); then
		say "!! pghandoff died: signal $((status - 128)) ($(kill -l "$((status - 128))" 2>/dev/null || echo '?'))"
	else
		say "!! pghandoff exited with status $status"
	fi
	say "!! last lines of its log:"
	tail -n 40 "$work/pghandoff.log" | sed 's/^/!!   /'
	handoff_crashes=$((handoff_crashes + 1))
	say "!! restarting pghandoff"
	start_handoff
	return 1
}
handoff_crashes=0

declare -A tps_runs=()   # "workload target" -> TPS of each successful run
declare -A failed_runs=()

declare -A cpu_runs=() proxy_cpu_runs=()   # "workload target" -> CPU us per transaction of each run
declare -A pid_of=()
tick_us=$((1000000 / $(getconf CLK_TCK)))
# The CPU time the machine has spent busy (user, nice, system, irq, softirq),
# in clock ticks, and that of one process (user and system).
machine_ticks() { awk '/^cpu / { print $2 + $3 + $4 + $7 + $8 }' /proc/stat; }
process_ticks() { awk '{ print $14 + $15 }' "/proc/$1/stat" 2>/dev/null || echo 0; }

# One pgbench run; prints the TPS without the initial connection time, the
# machine's CPU time per transaction and the proxy's (us, connections
# included), or returns 1 with pgbench's output shown.  wl_args (and
# wl_clients, else CLIENTS) say how; port_of and pid_of where to and whom.
run_pgbench() {
	local wl=$1 target=$2 out="$work/pgbench.out" tps n m0 m1 p0=0 p1=0 pid
	pid=${pid_of[$target]:-}
	m0=$(machine_ticks)
	[[ -z $pid ]] || p0=$(process_ticks "$pid")
	# shellcheck disable=SC2086  # wl_args holds several words on purpose
	if pgbench -n -p "${port_of[$target]}" -c "${wl_clients[$wl]:-$CLIENTS}" -j "$JOBS" -T "$SECONDS_PER_RUN" \
		${wl_args[$wl]} "$DB" >"$out" 2>&1; then
		m1=$(machine_ticks)
		[[ -z $pid ]] || p1=$(process_ticks "$pid")
		# -C: the time of every login counts (pgbench says "including reconnection times").
		tps=$(sed -n 's/^tps = \([0-9.]*\) (\(without initial connection time\|including reconnection times\))$/\1/p' "$out")
		n=$(sed -n 's/^number of transactions actually processed: \([0-9]*\).*/\1/p' "$out")
		if [[ -n $tps && ${n:-0} -gt 0 ]]; then
			printf '%s %s %s\n' "$tps" $(((m1 - m0) * tick_us / n)).$(((m1 - m0) * tick_us * 10 / n % 10)) \
				$(((p1 - p0) * tick_us / n)).$(((p1 - p0) * tick_us * 10 / n % 10))
			return 0
		fi
	fi
	{
		say "!! pgbench against $target failed; its last lines:"
		tail -n 15 "$out" | sed 's/^/!!   /'
	} >&2
	return 1
}
