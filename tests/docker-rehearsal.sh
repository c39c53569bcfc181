#!/usr/bin/env bash
# The migration rehearsal in Docker, as a CI pipeline runs it (docker/compose.yaml):
#   1. installs docker.io, docker-compose and mmdebstrap if missing,
#   2. starts a dockerd of its own that leaves the host's network alone
#      (--bridge=none --iptables=false --ip-forward=false: every container uses
#      the host's network), after recording the host's iptables rules,
#      ip_forward and links,
#   3. makes the base images from Debian's archive (mmdebstrap; kept in
#      .cache/docker between runs), the PostgreSQL images (13 from bullseye,
#      17 from trixie), the pghandoff image and the rehearsal image,
#   4. rehearses 13 -> 17 with docker/examples/shop.sql, its workload run by
#      pgbench 17 in a client container of another image (the PostgreSQL 17
#      image, WORKLOAD_IMAGE and WORKLOAD_COMMAND): must pass, committed
#      equal to arrived,
#   5. starts the pghandoff image as a service: must become healthy,
#   6. rehearses with a workload that writes around the proxy: must fail, with
#      the fenced source's refusal as the reason,
#   7. runs the CI examples as written (tests/ci-examples.py: the GitHub
#      workflow's steps and the GitLab job's script, the registry's images
#      replaced by ours): each rehearses 13 -> 17 with shop.sql and its
#      workload in the default workload container, and must pass,
#   8. stops its dockerd and puts back what it changed on the host, also after
#      a failure or an interrupt, and checks that the host is as it was.
# Needs root.  Where Docker cannot run it skips, or fails when CI is set.
# Environment: PGHANDOFF_DOCKER_ROOT (/var/lib/pghandoff-docker), DEBIAN_MIRROR,
# PGHANDOFF_DOCKER_CACHE (.cache/docker), REHEARSAL_OUT (build-docker-rehearsal).
set -euo pipefail

cd "$(dirname "$0")/.."
root=$(pwd)
DOCKER=/usr/bin/docker # another docker client may come first on PATH
COMPOSE=/usr/bin/docker-compose
data_root=${PGHANDOFF_DOCKER_ROOT:-/var/lib/pghandoff-docker}
exec_root=/run/pghandoff-docker
cache=${PGHANDOFF_DOCKER_CACHE:-$root/.cache/docker}
out=${REHEARSAL_OUT:-$root/build-docker-rehearsal}
export DOCKER_HOST=unix://$exec_root/docker.sock
export COMPOSE_PROJECT_NAME=pghandoff-rehearsal
compose=("$COMPOSE" -f "$root/docker/compose.yaml")
started_at=$SECONDS

say() { printf '\n== %s (%ds)\n' "$*" $((SECONDS - started_at)); }
die() {
	echo "docker-rehearsal: $*" >&2
	exit 1
}
# Docker cannot run here: a skip, except in CI.
cannot() {
	if [[ -n ${CI:-} ]]; then die "Docker cannot run: $*"; fi
	echo "docker-rehearsal: SKIPPED, Docker cannot run: $*"
	exit 0
}

[[ $(id -u) -eq 0 ]] || cannot "it needs root (to install packages and start dockerd)"

missing=()
for p in docker.io docker-compose mmdebstrap iptables; do
	dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
	say "installing ${missing[*]}"
	# docker.io would start Debian's docker service, whose dockerd adds a
	# bridge and firewall rules to the host: a policy-rc.d keeps it stopped.
	policy=
	if [[ ! -e /usr/sbin/policy-rc.d ]]; then
		printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d
		chmod +x /usr/sbin/policy-rc.d
		policy=/usr/sbin/policy-rc.d
	fi
	rc=0
	apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
		"${missing[@]}" >/dev/null || rc=$?
	[[ -z $policy ]] || rm -f "$policy"
	((rc == 0)) || cannot "apt-get could not install ${missing[*]}"
fi

# ---- the host's state, before ---------------------------------------------------

host=$(mktemp -d "${TMPDIR:-/tmp}/pghandoff-docker-host.XXXXXX")
# Rules and policies without the packet counters, which move on their own.
rules() { "$1" 2>/dev/null | sed -e '/^#/d' -e 's/\[[0-9]*:[0-9]*\]$//'; }
record() { # DIR
	mkdir -p "$1"
	rules iptables-save >"$1/iptables"
	rules ip6tables-save >"$1/ip6tables"
	cat /proc/sys/net/ipv4/ip_forward >"$1/ip_forward"
	cat /proc/sys/net/ipv6/conf/all/forwarding >"$1/ip6_forward" 2>/dev/null || true
	ip -o link show | awk -F': ' '{ sub(/@.*/, "", $2); print $2 }' | sort >"$1/links"
	# dockerd's mounts (the host's network namespace, overlays) under its own directories.
	awk -v a="$data_root/" -v b="$exec_root/" 'index($2, a) == 1 || index($2, b) == 1 { print $2 }' /proc/mounts |
		sort >"$1/mounts"
}
record "$host/before"
iptables-save >"$host/iptables.save" 2>/dev/null || true
ip6tables-save >"$host/ip6tables.save" 2>/dev/null || true

dockerd_pid=
pids=()
# Long steps run in the background and are waited for: a signal then reaches
# the traps at once instead of after the step.
child=
step() {
	local rc=0
	"$@" &
	child=$!
	wait "$child" || rc=$?
	child=
	return "$rc"
}
restore_host() {
	set +e
	local f link mount
	record "$host/after"
	if ! cmp -s "$host/before/iptables" "$host/after/iptables"; then
		echo "docker-rehearsal: iptables changed; restoring the rules saved before:"
		diff "$host/before/iptables" "$host/after/iptables" | sed 's/^/  /'
		iptables-restore <"$host/iptables.save"
	fi
	if ! cmp -s "$host/before/ip6tables" "$host/after/ip6tables"; then
		echo "docker-rehearsal: ip6tables changed; restoring the rules saved before"
		ip6tables-restore <"$host/ip6tables.save"
	fi
	cmp -s "$host/before/ip_forward" "$host/after/ip_forward" ||
		cat "$host/before/ip_forward" >/proc/sys/net/ipv4/ip_forward
	[[ ! -f $host/before/ip6_forward ]] || cmp -s "$host/before/ip6_forward" "$host/after/ip6_forward" ||
		cat "$host/before/ip6_forward" >/proc/sys/net/ipv6/conf/all/forwarding
	comm -13 "$host/before/mounts" "$host/after/mounts" | sort -r | while read -r mount; do
		umount "$mount" && echo "docker-rehearsal: unmounted $mount"
	done
	# Its state directory goes too, once nothing is mounted there.
	grep -q " $exec_root/" /proc/mounts || rm -rf --one-file-system "$exec_root"
	# Only the links Docker makes, and only those that were not there before.
	comm -13 "$host/before/links" "$host/after/links" | while read -r link; do
		case "$link" in docker0 | br-* | veth*) ip link delete "$link" && echo "docker-rehearsal: deleted link $link" ;; esac
	done
	record "$host/restored"
	for f in iptables ip6tables ip_forward ip6_forward links mounts; do
		[[ ! -f $host/before/$f ]] && continue
		if ! cmp -s "$host/before/$f" "$host/restored/$f"; then
			echo "docker-rehearsal: the host's $f is not as it was:" >&2
			diff "$host/before/$f" "$host/restored/$f" >&2
			return 1
		fi
	done
	echo "docker-rehearsal: host state as before (iptables, ip6tables, ip_forward, links, mounts)"
}

stop_dockerd() {
	[[ -n $dockerd_pid ]] || return 0
	kill -TERM "$dockerd_pid" 2>/dev/null
	timeout 60 tail --pid="$dockerd_pid" -f /dev/null || kill -KILL "$dockerd_pid" 2>/dev/null
	wait "$dockerd_pid" 2>/dev/null
	dockerd_pid=
}

cleanup() {
	local rc=$? restored=0
	set +e
	# A signal may arrive inside a step whose output goes to a file: what
	# follows goes where the script's own output goes.
	exec 1>&3 2>&4
	[[ -z $child ]] || kill -TERM "$child" 2>/dev/null
	for pid in "${pids[@]}"; do kill -TERM "$pid" 2>/dev/null; done
	if [[ -n $dockerd_pid ]]; then
		timeout 120 "${compose[@]}" --profile proxy down -v --remove-orphans -t 5 >/dev/null 2>&1
		stop_dockerd
	fi
	restore_host || restored=1
	rm -rf "$host"
	((rc != 0 || restored == 0)) || rc=1
	exit "$rc"
}
exec 3>&1 4>&2
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# ---- dockerd -------------------------------------------------------------------------

say "starting dockerd (data in $data_root, socket $exec_root/docker.sock)"
if [[ -S $exec_root/docker.sock ]] && "$DOCKER" version >/dev/null 2>&1; then
	die "a dockerd already answers on $exec_root/docker.sock: stop it first"
fi
mkdir -p "$data_root" "$exec_root" "$out"
# No bridge, no NAT, no firewall rules and no forwarding: the containers use
# the host's network, so the host's network stays as it is.
/usr/sbin/dockerd --data-root "$data_root" --exec-root "$exec_root" --pidfile "$exec_root/dockerd.pid" \
	-H "$DOCKER_HOST" --bridge=none --iptables=false --ip6tables=false --ip-forward=false --ip-masq=false \
	>"$out/dockerd.log" 2>&1 &
dockerd_pid=$!
deadline=$((SECONDS + 60))
until "$DOCKER" version >/dev/null 2>&1; do
	kill -0 "$dockerd_pid" 2>/dev/null || { tail -n 20 "$out/dockerd.log" >&2; dockerd_pid=; cannot "dockerd exited"; }
	((SECONDS < deadline)) || { tail -n 20 "$out/dockerd.log" >&2; cannot "dockerd did not answer within 60 s"; }
	sleep 0.5
done

# ---- images --------------------------------------------------------------------------

mirror=${DEBIAN_MIRROR:-$(sed -n -e 's/^URIs: *\(http[^ ]*\/debian\/*\)$/\1/p' -e 's/^deb \(\[[^]]*\] \)\?\(http[^ ]*\/debian\/*\) .*/\2/p' \
	/etc/apt/sources.list.d/*.sources /etc/apt/sources.list 2>/dev/null | head -n 1 || true)}
mirror=${mirror:-http://deb.debian.org/debian}
base_image() { # SUITE: pghandoff-base:SUITE, from the cache or made now
	local suite=$1 tar=$cache/base-$1.tar
	"$DOCKER" image inspect "pghandoff-base:$suite" >/dev/null 2>&1 && return 0
	mkdir -p "$cache"
	if [[ ! -s $tar ]]; then
		say "making the $suite base image from $mirror (mmdebstrap)"
		# Without manuals, documentation and translations, as Debian's slim
		# images; the setting stays in the image for what is installed later.
		# shellcheck disable=SC2016 # the hook's $1 is mmdebstrap's
		mmdebstrap --quiet --variant=minbase --format=tar \
			--dpkgopt='path-exclude=/usr/share/man/*' --dpkgopt='path-exclude=/usr/share/doc/*' \
			--dpkgopt='path-include=/usr/share/doc/*/copyright' --dpkgopt='path-exclude=/usr/share/locale/*' \
			--dpkgopt='path-exclude=/usr/share/info/*' \
			--customize-hook='rm -rf "$1"/var/lib/apt/lists/* "$1"/var/cache/apt/*' \
			"$suite" "$tar.tmp" "$mirror" >"$out/mmdebstrap-$suite.log" 2>&1 ||
			{ tail -n 20 "$out/mmdebstrap-$suite.log" >&2; return 1; }
		mv "$tar.tmp" "$tar"
	fi
	"$DOCKER" import "$tar" "pghandoff-base:$suite" >/dev/null
}
say "base images"
# In parallel: mostly downloads.
pids=()
for suite in bookworm bullseye trixie; do
	base_image "$suite" &
	pids+=($!)
done
for pid in "${pids[@]}"; do
	wait "$pid" || die "a base image could not be made (see $out/mmdebstrap-*.log)"
done
pids=()

build() { # LOG ARGS...
	local log=$out/$1
	shift
	"$@" >"$log" 2>&1 || { tail -n 40 "$log" >&2; die "failed: $* (see $log)"; }
}
say "images: PostgreSQL 13 (bullseye) and 17 (trixie), pghandoff, the rehearsal"
export BASE_IMAGE=pghandoff-base:bookworm
# The PostgreSQL images (downloads) while pghandoff compiles.
build build-postgres-13.log "$DOCKER" build --network host -f docker/postgres/Dockerfile \
	--build-arg BASE_IMAGE=pghandoff-base:bullseye --build-arg PG_MAJOR=13 -t pghandoff-postgres:13 docker/postgres &
pids=($!)
build build-postgres-17.log "$DOCKER" build --network host -f docker/postgres/Dockerfile \
	--build-arg BASE_IMAGE=pghandoff-base:trixie --build-arg PG_MAJOR=17 -t pghandoff-postgres:17 docker/postgres &
pids+=($!)
build build-pghandoff.log "$DOCKER" build --network host -f docker/Dockerfile --target runtime \
	--build-arg BASE_IMAGE="$BASE_IMAGE" -t pghandoff:latest . &
pids+=($!)
for pid in "${pids[@]}"; do
	wait "$pid" || die "an image did not build"
done
pids=()
# docker build, as for the other images (the CI examples' `docker compose
# build rehearsal` then finds every layer cached).
build build-rehearsal.log "$DOCKER" build --network host -f docker/Dockerfile --target rehearsal \
	--build-arg BASE_IMAGE="$BASE_IMAGE" -t pghandoff-rehearsal:latest .
"$DOCKER" image ls --format '{{.Repository}}:{{.Tag}} {{.Size}}' | grep -E '^pghandoff' | sort | tee "$out/image-sizes.txt"

# ---- the rehearsals --------------------------------------------------------------------

free_port() {
	python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}
export SOURCE_PORT TARGET_PORT PROXY_PORT METRICS_PORT
SOURCE_PORT=$(free_port) TARGET_PORT=$(free_port) PROXY_PORT=$(free_port) METRICS_PORT=$(free_port)
export REHEARSAL_INPUT_DIR=$root/docker/examples

# rehearse NAME [VAR=value...]: one rehearsal on fresh clusters; its output,
# report and every container's log in $out/NAME.
rehearse() {
	local name=$1 rc=0
	shift
	rm -rf "${out:?}/$name"
	mkdir -p "$out/$name"
	step env "$@" REHEARSAL_OUT_DIR="$out/$name" timeout 900 "${compose[@]}" run -T --rm rehearsal \
		>"$out/$name/rehearsal.txt" 2>&1 || rc=$?
	"${compose[@]}" logs --no-color >"$out/$name/containers.log" 2>&1
	"$DOCKER" inspect --format '{{.Config.Image}}' "$("${compose[@]}" ps -q workload)" >"$out/$name/workload-image" 2>&1
	timeout 120 "${compose[@]}" down -v -t 5 >/dev/null 2>&1
	return "$rc"
}

say "rehearsal 13 -> 17: shop.sql, its workload in a client container of another image (pgbench 17)"
# The command is the workload container's (sh -c): its $WORKLOAD_SECONDS is the
# driver's, not expanded here.
# shellcheck disable=SC2016
rehearse client-container SEED=shop.sql WORKLOAD_IMAGE=pghandoff-postgres:17 \
	WORKLOAD_COMMAND='pgbench -n -c 4 -j 2 -T "$WORKLOAD_SECONDS" -f shop-workload.sql' \
	WORKLOAD_SECONDS=30 ARRIVED_SQL="SELECT count(*) FROM orders" ||
	{ cat "$out/client-container/rehearsal.txt"; die "the rehearsal failed (output, report and container logs in $out/client-container)"; }
cat "$out/client-container/rehearsal.txt"
grep -q '^rehearsal: PASSED' "$out/client-container/rehearsal.txt" || die "the rehearsal did not say PASSED"
[[ $(cat "$out/client-container/workload-image") == pghandoff-postgres:17 ]] ||
	die "the workload ran in $(cat "$out/client-container/workload-image"), not pghandoff-postgres:17"
# The rehearsal image has pgbench 15: this output is the other image's.
grep -q '^pgbench (17' "$out/client-container/rehearsal.txt" || die "the workload's output is not pgbench 17's"
grep -E '^the workload committed ([0-9]+) transactions; \1 arrived' "$out/client-container/rehearsal.txt" ||
	die "no committed-equals-arrived line for the client container's workload"

say "the pghandoff image as a service: healthy once its admin console answers"
"${compose[@]}" --profile proxy up -d pghandoff >"$out/service.txt" 2>&1 ||
	{ cat "$out/service.txt"; die "the pghandoff service did not start"; }
health=starting
deadline=$((SECONDS + 90))
while [[ $health != healthy ]] && ((SECONDS < deadline)); do
	sleep 1
	health=$("$DOCKER" inspect --format '{{.State.Health.Status}}' "$("${compose[@]}" ps -q pghandoff)" 2>/dev/null || echo gone)
done
"${compose[@]}" --profile proxy logs --no-color >>"$out/service.txt" 2>&1
timeout 120 "${compose[@]}" --profile proxy down -v -t 5 >/dev/null 2>&1
[[ $health == healthy ]] || { cat "$out/service.txt"; die "the pghandoff service is $health, not healthy"; }
echo "the pghandoff service is healthy"

say "rehearsal with a workload writing around the proxy: must fail"
if rehearse around-the-proxy SEED=shop.sql WORKLOAD=around-the-proxy.sh ARRIVED_SQL="SELECT count(*) FROM orders"; then
	cat "$out/around-the-proxy/rehearsal.txt"
	die "a rehearsal whose workload writes around the proxy passed"
fi
grep '^rehearsal: FAILED' "$out/around-the-proxy/rehearsal.txt" || die "the failing rehearsal gave no reason"
grep -q 'read-only transaction' "$out/around-the-proxy/rehearsal.txt" ||
	{ cat "$out/around-the-proxy/rehearsal.txt"; die "the failing rehearsal's reason is not the fenced source's refusal"; }
[[ -s $out/around-the-proxy/containers.log ]] || die "no container logs collected for the failing rehearsal"
echo "the rehearsal failed as it must, for the reason it must"

say "the CI examples, as written: the GitHub workflow and the GitLab job (tests/ci-examples.py)"
step /usr/bin/python3 tests/ci-examples.py "$out/ci" >"$out/ci-examples.txt" 2>&1 ||
	{ cat "$out/ci-examples.txt"; die "a CI example failed (its logs in $out/ci)"; }
cat "$out/ci-examples.txt"

say "Docker rehearsals done"
