#!/bin/bash
# A migration rehearsal, run by docker/compose.yaml's `rehearsal` service
# against its `source` and `target` services:
#   1. SEED is loaded into the source,
#   2. pghandoff check,
#   3. pghandoff run: the proxy, the copy and the stream, under a first run of
#      the workload (through the proxy) that ends once the target streams,
#   4. a second run of the workload, WORKLOAD_SECONDS long, under which run:
#      verify, a dry run, a cutover, a rollback and a second cutover,
#   5. the committed-equals-arrived check: every transaction the second run
#      says it committed is on the target, and nothing else arrived.
# Any failure ends the rehearsal with a non-zero status and a line
# "rehearsal: FAILED: <reason>"; the reports and logs land in /rehearsal/out.
#
# Inputs (environment; docker/compose.yaml sets the defaults):
#   SOURCE_HOST/SOURCE_PORT, TARGET_HOST/TARGET_PORT  the clusters
#   POSTGRES_PASSWORD    the password of the postgres user on both
#   DB                   the database migrated (app)
#   SEED                 pgbench: pgbench -i -s SCALE; NAME.sql: psql -f; NAME.sh: run
#                        (files are looked up in /rehearsal/input)
#   WORKLOAD_IMAGE, WORKLOAD_COMMAND   the workload: a command (sh -c) run in a
#                        container of its own (the `workload` service, any image
#                        with a POSIX sh; docker/workload-driver.sh runs it when
#                        told to through the control volume), in /rehearsal/input,
#                        pointed at the proxy by PGHOST/PGPORT/PGUSER/PGDATABASE/
#                        PGPASSWORD, WORKLOAD_SECONDS long; it exits 0 and prints
#                        "committed: N" (or pgbench's summary).  By default the
#                        rehearsal image and `pghandoff-workload`, which runs WORKLOAD:
#   WORKLOAD             pgbench: pgbench's TPC-B-like script, CLIENTS clients;
#                        NAME.sql: a pgbench script; NAME (a script) or anything
#                        else (a command): run by bash
#   ARRIVED_SQL          counts on the target what the workload adds, one row
#                        per committed transaction (pgbench: pgbench_history)
#   CUTOVER_MAX_LAG, CUTOVER_DRAIN_TIMEOUT, CUTOVER_ON_DRAIN_TIMEOUT, CUTOVER_VERIFY
#   PROXY_PORT, METRICS_PORT, TIMEOUT (seconds any one step may take)
set -euo pipefail

input=/rehearsal/input
out=/rehearsal/out
SOURCE_HOST=${SOURCE_HOST:-source} SOURCE_PORT=${SOURCE_PORT:-5432}
TARGET_HOST=${TARGET_HOST:-target} TARGET_PORT=${TARGET_PORT:-5432}
PROXY_PORT=${PROXY_PORT:-6432} METRICS_PORT=${METRICS_PORT:-9187}
DB=${DB:-app} SEED=${SEED:-pgbench} SCALE=${SCALE:-5}
WORKLOAD=${WORKLOAD:-pgbench} WORKLOAD_IMAGE=${WORKLOAD_IMAGE:-pghandoff-rehearsal}
WORKLOAD_COMMAND=${WORKLOAD_COMMAND:-pghandoff-workload} WORKLOAD_SECONDS=${WORKLOAD_SECONDS:-40} CLIENTS=${CLIENTS:-4}
TIMEOUT=${TIMEOUT:-300}
export PGPASSWORD=${POSTGRES_PASSWORD:-}
export PGCONNECT_TIMEOUT=10

mkdir -p "$out"
work=$(mktemp -d)
started_at=$SECONDS
run_pid=
step="starting"

say() { printf '\n== %s (%ds)\n' "$*" $((SECONDS - started_at)); }
fail() {
	echo "rehearsal: FAILED: $*" | tee "$out/verdict" >&2
	exit 1
}

# ---- the workload: its own container (docker/workload-driver.sh) ----------------
# It runs WORKLOAD_COMMAND in WORKLOAD_IMAGE when told to, through the control
# volume; a run's output and exit status come back the same way.
control=/rehearsal/control
token=
workload_name=

# A session of our own; a past rehearsal's files are left alone.
open_session() {
	token=$(date +%s)-$$-$RANDOM
	mkdir -p "$control/$token"
	# Whatever user the workload's image runs as may write its files here.
	chmod 0777 "$control/$token"
	printf '%s %s\n' "$token" "$(date +%s)" >"$control/session.tmp"
	mv -f "$control/session.tmp" "$control/session"
	local deadline=$((SECONDS + TIMEOUT))
	until [[ -s $control/$token/ready ]]; do
		((SECONDS < deadline)) ||
			fail "the workload container ($WORKLOAD_IMAGE) did not answer within ${TIMEOUT}s (see its log: docker-compose logs workload)"
		sleep 0.2
	done
	echo "the workload container answers (host and uid: $(cat "$control/$token/ready"))"
}

# start_workload NAME SECONDS: one run of the workload, through the proxy.
start_workload() {
	workload_name=$1
	[[ -n $token ]] || open_session
	echo "$2" >"$control/$token/$1.go.tmp"
	mv -f "$control/$token/$1.go.tmp" "$control/$token/$1.go"
}

# workload_ended: the current run has ended (its exit status written).
workload_ended() { [[ -s $control/$token/$workload_name.status ]]; }
workload_status() { cat "$control/$token/$workload_name.status"; }
# The run's output, here too.
keep_workload_output() {
	cp -f "$control/$token/$workload_name.out" "$work/$workload_name.out" 2>/dev/null || true
	cp -f "$control/$token/$workload_name.err" "$work/$workload_name.err" 2>/dev/null || true
}

stop_workload() {
	[[ -n $workload_name ]] || return 0
	local deadline=$((SECONDS + 60))
	if ! workload_ended; then
		touch "$control/$token/$workload_name.stop"
		until workload_ended || ((SECONDS >= deadline)); do sleep 0.2; done
		workload_ended || echo "rehearsal: the workload run $workload_name did not stop within 60s" >&2
	fi
	keep_workload_output
	workload_name=
}

# A workload that ended on its own before it should have is a failure, and
# its output says why.
workload_alive() {
	[[ -n $workload_name ]] || return 0
	workload_ended || return 0
	local rc name=$workload_name
	rc=$(workload_status)
	keep_workload_output
	workload_name=
	tail -n 20 "$work/$name.err" "$work/$name.out" >&2 2>/dev/null
	fail "the workload ($WORKLOAD_COMMAND in $WORKLOAD_IMAGE) ended early with status $rc during: $step: $(grep -m1 -h -E 'ERROR|FATAL|error' "$work/$name.err" "$work/$name.out" 2>/dev/null || echo 'see its output above')"
}

finish() {
	local rc=$?
	set +e
	stop_workload
	[[ -z $token ]] || touch "$control/$token/end"
	if [[ -n $run_pid ]]; then
		kill -INT "$run_pid" 2>/dev/null
		timeout 60 tail --pid="$run_pid" -f /dev/null || kill -KILL "$run_pid" 2>/dev/null
		wait "$run_pid" 2>/dev/null
	fi
	cp -f "$work"/*.log "$work"/*.out "$work"/*.err "$work"/*.txt "$out"/ 2>/dev/null
	[[ -f $work/pghandoff.ini ]] && pghandoff config -c "$work/pghandoff.ini" >"$out/pghandoff-config.txt" 2>&1
	if ((rc == 0)); then
		echo "rehearsal: PASSED" | tee "$out/verdict"
	else
		[[ -s $out/verdict ]] || echo "rehearsal: FAILED: exit $rc during: $step" | tee "$out/verdict" >&2
		echo "--- the last lines of pghandoff's log ($out/pghandoff.log)" >&2
		tail -n 30 "$work/pghandoff.log" >&2 2>/dev/null
	fi
	rm -rf "$work"
	exit "$rc"
}
trap finish EXIT
trap 'fail "interrupted during: $step"' INT TERM

# A file input is looked up in the input directory.
input_file() { [[ -f $input/$1 ]] && printf '%s\n' "$input/$1"; }

psql_on() { # host port sql
	psql -X -v ON_ERROR_STOP=1 -Atq -h "$1" -p "$2" -U postgres -d "$DB" -c "$3"
}
psql_proxy() { psql -X -v ON_ERROR_STOP=1 -Atq -h 127.0.0.1 -p "$PROXY_PORT" -U postgres -d "$1" -c "$2"; }

# wait_for WHAT COMMAND...: polls until COMMAND succeeds, at most TIMEOUT seconds.
wait_for() {
	local what=$1 deadline=$((SECONDS + TIMEOUT))
	shift
	until "$@" >/dev/null 2>&1; do
		((SECONDS < deadline)) || fail "timed out after ${TIMEOUT}s waiting for $what"
		workload_alive
		sleep 0.5
	done
}

# committed_count FILE: what the workload says it committed.
committed_count() {
	sed -n -e 's/^number of transactions actually processed: \([0-9]*\).*/\1/p' \
		-e 's/^committed: \([0-9]*\)$/\1/p' "$1" | tail -n 1
}

# The follower's state (SHOW REPLICATION's third column): the phase (second)
# says "rolled back" after a rollback while the follower streams again.
follower() { psql_proxy pghandoff "SHOW REPLICATION" | awk -F'|' -v db="$DB" '$1 == db { print $3 }'; }
streaming() { [[ $(follower) == streaming ]]; }
serving_port() { psql_proxy "$DB" "SELECT inet_server_port()"; }
reverse_slot() { # active|gone
	local n
	if [[ $1 == active ]]; then
		n=$(psql_on "$TARGET_HOST" "$TARGET_PORT" "SELECT count(*) FROM pg_replication_slots WHERE slot_name LIKE '%rollback' AND active")
		[[ $n == 1 ]]
	else
		n=$(psql_on "$TARGET_HOST" "$TARGET_PORT" "SELECT count(*) FROM pg_replication_slots WHERE slot_name LIKE '%rollback'")
		[[ $n == 0 ]]
	fi
}

# pghandoff_step NAME ARGS...: one pghandoff command, its output shown and kept.
pghandoff_step() {
	local name=$1 rc=0
	shift
	timeout "$TIMEOUT" pghandoff "$@" -c "$work/pghandoff.ini" >"$work/$name.txt" 2>&1 || rc=$?
	cat "$work/$name.txt"
	return "$rc"
}

# ---- 1. the clusters and the seed -------------------------------------------

step="waiting for the clusters"
say "source $SOURCE_HOST:$SOURCE_PORT, target $TARGET_HOST:$TARGET_PORT, database $DB"
wait_for "the source" pg_isready -h "$SOURCE_HOST" -p "$SOURCE_PORT" -U postgres -d "$DB"
wait_for "the target" pg_isready -h "$TARGET_HOST" -p "$TARGET_PORT" -U postgres -d "$DB"
echo "source: $(psql_on "$SOURCE_HOST" "$SOURCE_PORT" "SELECT version()")"
echo "target: $(psql_on "$TARGET_HOST" "$TARGET_PORT" "SELECT version()")"

step="loading the seed ($SEED)"
say "$step into the source"
if [[ $SEED == pgbench ]]; then
	pgbench -i -q -s "$SCALE" -h "$SOURCE_HOST" -p "$SOURCE_PORT" -U postgres "$DB" 2>&1 | tail -n 1
	# pgbench_history has no key: published, it needs a replica identity.
	psql_on "$SOURCE_HOST" "$SOURCE_PORT" "ALTER TABLE pgbench_history REPLICA IDENTITY FULL"
	ARRIVED_SQL=${ARRIVED_SQL:-SELECT count(*) FROM pgbench_history}
elif seed=$(input_file "$SEED") && [[ $SEED == *.sql ]]; then
	psql -X -v ON_ERROR_STOP=1 -q -h "$SOURCE_HOST" -p "$SOURCE_PORT" -U postgres -d "$DB" -f "$seed" ||
		fail "the seed $SEED did not load"
elif seed=$(input_file "$SEED"); then
	(cd "$input" && PGHOST=$SOURCE_HOST PGPORT=$SOURCE_PORT PGUSER=postgres PGDATABASE=$DB bash "$seed") ||
		fail "the seed script $SEED failed"
else
	fail "SEED=$SEED: neither pgbench nor a file in the input directory"
fi
[[ $WORKLOAD != pgbench || -n ${ARRIVED_SQL:-} ]] || ARRIVED_SQL="SELECT count(*) FROM pgbench_history"
[[ -n ${ARRIVED_SQL:-} ]] || fail "ARRIVED_SQL is not set: the query counting what the workload adds"

cat >"$work/pghandoff.ini" <<EOF
[source]
host = $SOURCE_HOST
port = $SOURCE_PORT
user = postgres
password = $PGPASSWORD

[target]
host = $TARGET_HOST
port = $TARGET_PORT
user = postgres
password = $PGPASSWORD

[databases]
$DB =

[proxy]
listen_addr = 127.0.0.1
listen_port = $PROXY_PORT
auth_type = trust
admin_users = postgres
metrics_listen = 127.0.0.1:$METRICS_PORT
state_file = $work/pghandoff.state

[cutover]
max_lag = ${CUTOVER_MAX_LAG:-16MB}
drain_timeout = ${CUTOVER_DRAIN_TIMEOUT:-5s}
on_drain_timeout = ${CUTOVER_ON_DRAIN_TIMEOUT:-abort}
verify = ${CUTOVER_VERIFY:-counts}
rollback = on

[log]
file = $work/pghandoff.log
EOF

# ---- 2. check ----------------------------------------------------------------

step="pghandoff check"
say "$step"
pghandoff_step check check || fail "pghandoff check found a problem (see above)"

# ---- 3. run: copy and stream ----------------------------------------------------

step="pghandoff run (copy and stream)"
say "$step, with the workload running through the proxy"
pghandoff run -c "$work/pghandoff.ini" >"$work/pghandoff-run.out" 2>&1 &
run_pid=$!
wait_for "the proxy's admin console" psql_proxy pghandoff "SHOW VERSION"
start_workload workload-copy 3600
wait_for "the follower to stream" streaming
pghandoff status -c "$work/pghandoff.ini" || true
workload_alive
# That run ends here (its transactions in flight roll back); the next one,
# whose every committed transaction is counted, runs through the cutovers.
stop_workload
arrived_before=$(psql_proxy "$DB" "$ARRIVED_SQL")

# ---- 4. under load: verify, dry run, cutover, rollback, cutover ---------------

say "the workload again, ${WORKLOAD_SECONDS}s; everything below happens under it"
start_workload workload "$WORKLOAD_SECONDS"
sleep 2
workload_alive

step="verify under load"
say "$step"
pghandoff_step verify verify || fail "pghandoff verify found differences (see above)"
workload_alive

step="the dry run"
say "$step"
pghandoff_step dry-run cutover --dry-run || fail "the dry run refused (see above)"
workload_alive

step="the cutover under load"
say "$step"
pghandoff_step cutover-1 cutover || fail "the cutover failed (see above)"
workload_alive
[[ $(serving_port) == "$TARGET_PORT" ]] || fail "after the cutover a new client does not reach the target"

step="the rollback under load"
say "$step"
wait_for "the reverse follower to stream" reverse_slot active
pghandoff_step rollback rollback || fail "the rollback failed (see above)"
workload_alive
[[ $(serving_port) == "$SOURCE_PORT" ]] || fail "after the rollback a new client does not reach the source"

step="the second cutover under load"
say "$step"
wait_for "the reverse slot to go" reverse_slot gone
wait_for "the follower to stream" streaming
pghandoff_step cutover-2 cutover || fail "the second cutover failed (see above)"
[[ $(serving_port) == "$TARGET_PORT" ]] || fail "after the second cutover a new client does not reach the target"
workload_alive
[[ -n $workload_name ]] ||
	fail "the workload ended before the second cutover: raise WORKLOAD_SECONDS ($WORKLOAD_SECONDS)"

# ---- 5. committed equals arrived ------------------------------------------------

step="waiting for the workload to end"
say "$step"
deadline=$((SECONDS + WORKLOAD_SECONDS + TIMEOUT))
until workload_ended; do
	((SECONDS < deadline)) || fail "the workload did not end within WORKLOAD_SECONDS + TIMEOUT ($((WORKLOAD_SECONDS + TIMEOUT))s)"
	sleep 0.5
done
rc=$(workload_status)
keep_workload_output
workload_name=
cat "$work/workload.out"
((rc == 0)) || {
	tail -n 20 "$work/workload.err" >&2
	fail "the workload failed with status $rc: $(grep -m1 -E 'ERROR|FATAL|error' "$work/workload.err" "$work/workload.out" || echo 'see its output above')"
}
step="the committed-equals-arrived check"
committed=$(committed_count "$work/workload.out")
[[ -n $committed ]] || fail "the workload printed no committed count (\"committed: N\" or pgbench's summary)"
arrived_after=$(psql_on "$TARGET_HOST" "$TARGET_PORT" "$ARRIVED_SQL")
arrived=$((arrived_after - arrived_before))
echo "the workload committed $committed transactions; $arrived arrived on the target ($ARRIVED_SQL)"
((arrived == committed)) || fail "committed is not arrived: $committed committed, $arrived on the target"

# Large objects travel outside logical replication (copied and diffed by the
# follower, a last diff in each cutover's pause): the same on both sides.
step="the large objects on both sides"
lo_sql="SELECT count(*) || ' ' || coalesce(md5(string_agg(oid || ':' || md5(lo_get(oid)), ',' ORDER BY oid)), '-')
	FROM pg_largeobject_metadata"
lo_source=$(psql_on "$SOURCE_HOST" "$SOURCE_PORT" "$lo_sql")
lo_target=$(psql_on "$TARGET_HOST" "$TARGET_PORT" "$lo_sql")
echo "large objects: source $lo_source, target $lo_target"
[[ $lo_source == "$lo_target" ]] || fail "the large objects differ: source $lo_source, target $lo_target"

say "the cutover reports"
for r in cutover-1 rollback cutover-2; do
	echo "--- $r"
	cat "$work/$r.txt"
done
say "status"
pghandoff status -c "$work/pghandoff.ini" || true
step="done"
