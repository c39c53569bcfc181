#!/usr/bin/env bash
# The whole test suite, from a fresh Debian 12 machine to a verdict:
#   1. installs the Debian packages the build and the tests need (as root),
#   2. installs the PostgreSQL server versions the tests start (npm packages),
#   3. builds with AddressSanitizer + UBSan and runs the unit and integration
#      tests against that build, then builds once more without sanitizers,
#   4. builds the libFuzzer targets with clang and runs each for a short while.
#   5. runs the demo (./demo.sh), the README's first command, end to end.
#   6. runs the migration rehearsal in Docker (tests/docker-rehearsal.sh, which
#      installs docker.io, docker-compose and mmdebstrap itself, without letting
#      the package start Debian's docker service), and the CI examples as
#      written (tests/ci-examples.py, python3-yaml).
# Environment: FUZZ_SECONDS (default 30), SKIP_FUZZ=1, SKIP_DEMO=1, SKIP_DOCKER=1, PG_VERSIONS.
set -euo pipefail

cd "$(dirname "$0")/.."
root=$(pwd)

packages=(
	build-essential meson ninja-build pkg-config
	libpq-dev libssl-dev libev-dev libinih-dev libcmocka-dev
	clang libclang-rt-14-dev clang-format
	python3 python3-pytest python3-psycopg python3-asyncpg python3-yaml
	postgresql-15 postgresql-client-15
	nodejs npm openssl
)

missing=()
for p in "${packages[@]}"; do
	dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
# node may come from another source than Debian's nodejs package.
if command -v node >/dev/null && command -v npm >/dev/null; then
	keep=()
	for p in "${missing[@]}"; do
		[[ "$p" == nodejs || "$p" == npm ]] || keep+=("$p")
	done
	missing=("${keep[@]+"${keep[@]}"}")
fi
if ((${#missing[@]})); then
	if [[ $(id -u) -ne 0 ]]; then
		echo "run.sh: missing Debian packages: ${missing[*]} (run as root to install them)" >&2
		exit 1
	fi
	echo "== installing ${missing[*]}"
	apt-get update -qq
	DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

echo "== PostgreSQL servers"
# shellcheck disable=SC2086
tests/install-postgres.sh ${PG_VERSIONS:-}

export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1:abort_on_error=1}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-halt_on_error=1:print_stacktrace=1}
# In CI a test that lacks a prerequisite fails instead of being skipped.
if [[ -n "${CI:-}" ]]; then
	export PGHANDOFF_REQUIRE_ALL=1
fi

echo "== build with AddressSanitizer and UBSan"
if [[ ! -d build-asan ]]; then
	meson setup build-asan -Db_sanitize=address,undefined -Db_lundef=false >/dev/null
fi
meson compile -C build-asan

echo "== tests (sanitized build)"
meson test -C build-asan --print-errorlogs --num-processes 2

echo "== build without sanitizers"
if [[ ! -d build ]]; then
	meson setup build >/dev/null
fi
meson compile -C build
meson test -C build --suite unit --print-errorlogs

if [[ -z "${SKIP_FUZZ:-}" ]]; then
	echo "== fuzz targets (clang, libFuzzer)"
	if [[ ! -d build-fuzz ]]; then
		CC=clang meson setup build-fuzz -Dfuzz=true -Dintegration_tests=false -Db_lundef=false >/dev/null
	fi
	meson compile -C build-fuzz
	for target in build-fuzz/tests/fuzz/fuzz_*; do
		[[ -f "$target" && -x "$target" ]] || continue
		name=$(basename "$target")
		corpus="$root/tests/fuzz/corpus/${name#fuzz_}"
		work=$(mktemp -d)
		cp -r "$corpus"/. "$work"/ 2>/dev/null || true
		echo "-- $name for ${FUZZ_SECONDS:-30}s"
		"$target" -max_total_time="${FUZZ_SECONDS:-30}" -print_final_stats=1 "$work" 2>&1 | tail -n 3
		rm -rf "$work"
	done
fi

if [[ -z "${SKIP_DEMO:-}" ]]; then
	# The README's first command, end to end: clusters, pghandoff run, pgbench,
	# status, verify, a cutover under load, the report.
	echo "== the demo (./demo.sh)"
	./demo.sh
fi

if [[ -z "${SKIP_DOCKER:-}" ]]; then
	echo "== the migration rehearsal in Docker (tests/docker-rehearsal.sh)"
	tests/docker-rehearsal.sh
fi

echo "== all tests passed"
