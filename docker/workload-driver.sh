#!/bin/sh
# The rehearsal's workload container (docker/compose.yaml's `workload`
# service): runs WORKLOAD_COMMAND in any image that has a POSIX sh, when the
# rehearsal says so, and tells it how each run ended.  They talk through the
# `control` volume, mounted at /rehearsal/control in both:
#   session           "TOKEN EPOCH", written by the rehearsal when it starts;
#                     a session older than this driver is a past rehearsal's
#   TOKEN/ready       written here once the session is taken up
#   TOKEN/NAME.go     run the command once, WORKLOAD_SECONDS (the file's content) long
#   TOKEN/NAME.stop   stop that run (TERM to its process group)
#   TOKEN/NAME.out, NAME.err   its output, written as it runs
#   TOKEN/NAME.status its exit status, written when it has ended
#   TOKEN/end         the rehearsal is over: this driver exits
# The command runs in /rehearsal/input with PGHOST/PGPORT/PGUSER/PGDATABASE/
# PGPASSWORD pointing at the proxy; what it says it committed is read from its
# output ("committed: N" or pgbench's summary) by the rehearsal.
# WORKLOAD_IDLE_TIMEOUT (3600 s): how long it waits for the rehearsal's next word.
set -u

control=/rehearsal/control
idle=${WORKLOAD_IDLE_TIMEOUT:-3600}
command=${WORKLOAD_COMMAND:-pghandoff-workload}
started=$(date +%s)

pid=
group=
log() { echo "workload-driver: $*"; }
# As PID 1 a TERM would be ignored: docker stop ends the run and the driver at once.
trap '[ -z "$pid" ] || kill -TERM "$group$pid" 2>/dev/null; exit 143' TERM INT

# The session this driver serves, if the rehearsal has started one since.
session_token() {
	[ -f "$control/session" ] || return 1
	read -r token epoch <"$control/session" || return 1
	[ -n "$token" ] && [ "${epoch:-0}" -ge "$started" ] && printf '%s\n' "$token"
}

# still_current TOKEN: the session is still the rehearsal's (a rehearsal that
# ended without a word is replaced by the next one's session).
still_current() { [ "$(session_token 2>/dev/null)" = "$1" ] && [ ! -e "$control/$1/end" ]; }

# run_once DIR NAME SECONDS: the command once; its status in DIR/NAME.status.
run_once() {
	dir=$1 name=$2 seconds=$3
	log "run $name: $command (WORKLOAD_SECONDS=$seconds)"
	# A process group of its own where setsid exists, so that a stop reaches
	# whatever the command started.
	if command -v setsid >/dev/null 2>&1; then
		WORKLOAD_SECONDS=$seconds WORKLOAD_RUN=$name setsid sh -c "$command" \
			>"$dir/$name.out" 2>"$dir/$name.err" &
		group=-
	else
		WORKLOAD_SECONDS=$seconds WORKLOAD_RUN=$name sh -c "$command" \
			>"$dir/$name.out" 2>"$dir/$name.err" &
		group=
	fi
	pid=$!
	while kill -0 "$pid" 2>/dev/null; do
		if [ -e "$dir/$name.stop" ] || ! still_current "$token"; then
			log "run $name: stopping it"
			kill -TERM "$group$pid" 2>/dev/null
			break
		fi
		sleep 0.2
	done
	wait "$pid"
	status=$?
	log "run $name ended with status $status; its output:"
	cat "$dir/$name.out" "$dir/$name.err"
	pid=
	echo "$status" >"$dir/$name.status.tmp" && mv -f "$dir/$name.status.tmp" "$dir/$name.status"
}

mkdir -p "$control" 2>/dev/null
log "waiting for a rehearsal (at most ${idle}s)"
deadline=$((started + idle))
token=
while :; do
	if [ -z "$token" ]; then
		token=$(session_token 2>/dev/null) || token=
		if [ -n "$token" ]; then
			log "serving rehearsal $token"
			echo "$(hostname 2>/dev/null || echo workload) $(id -u)" >"$control/$token/ready"
			deadline=$(($(date +%s) + idle))
		fi
	elif [ -e "$control/$token/end" ]; then
		log "the rehearsal is over"
		exit 0
	elif ! still_current "$token"; then
		log "rehearsal $token was replaced"
		token=
		continue
	else
		for go in "$control/$token"/*.go; do
			[ -f "$go" ] || continue
			name=$(basename "$go" .go)
			[ -e "$control/$token/$name.status" ] && continue
			run_once "$control/$token" "$name" "$(cat "$go")"
			deadline=$(($(date +%s) + idle))
		done
	fi
	if [ "$(date +%s)" -ge "$deadline" ]; then
		log "no word from the rehearsal for ${idle}s: giving up"
		exit 1
	fi
	sleep 0.2
done
