#!/bin/bash
# Starts PostgreSQL as the official image does: on an empty PGDATA, initdb
# with POSTGRES_USER (postgres) and POSTGRES_PASSWORD, password logins from
# anywhere (POSTGRES_HOST_AUTH_METHOD: scram-sha-256, md5 before 14, or trust)
# for databases and replication, and POSTGRES_DB made; then the server runs
# with the arguments given (`postgres -c wal_level=logical ...`).
set -euo pipefail

if [[ ${1:-} == -* ]]; then
	set -- postgres "$@"
fi
if [[ ${1:-} != postgres ]]; then
	exec "$@"
fi

if [[ $(id -u) -eq 0 ]]; then
	mkdir -p "$PGDATA"
	chown postgres:postgres "$PGDATA"
	chmod 700 "$PGDATA"
	exec setpriv --reuid=postgres --regid=postgres --init-groups "$0" "$@"
fi

if [[ ! -s $PGDATA/PG_VERSION ]]; then
	user=${POSTGRES_USER:-postgres}
	db=${POSTGRES_DB:-$user}
	if ((PG_MAJOR >= 14)); then method=scram-sha-256; else method=md5; fi
	method=${POSTGRES_HOST_AUTH_METHOD:-$method}
	if [[ -z ${POSTGRES_PASSWORD:-} && $method != trust ]]; then
		echo "docker-entrypoint: POSTGRES_PASSWORD is not set (or POSTGRES_HOST_AUTH_METHOD=trust)" >&2
		exit 1
	fi
	pwfile=$(mktemp)
	printf '%s\n' "${POSTGRES_PASSWORD:-}" >"$pwfile"
	args=(-D "$PGDATA" -U "$user" -E UTF8 --locale=C --auth-local=trust --auth-host="$method")
	[[ -n ${POSTGRES_PASSWORD:-} ]] && args+=(--pwfile="$pwfile")
	initdb "${args[@]}" >/dev/null
	rm -f "$pwfile"
	if [[ $method == scram-sha-256 ]]; then
		echo "password_encryption = 'scram-sha-256'" >>"$PGDATA/postgresql.conf"
	fi
	echo "listen_addresses = '*'" >>"$PGDATA/postgresql.conf"
	printf 'host all all all %s\nhost replication all all %s\n' "$method" "$method" >>"$PGDATA/pg_hba.conf"
	if [[ $db != postgres ]]; then
		# Single-user mode: no server to start and stop before the real one.
		printf 'CREATE DATABASE "%s"\n' "${db//\"/\"\"}" | postgres --single -D "$PGDATA" -j postgres >/dev/null
	fi
	echo "docker-entrypoint: PostgreSQL $PG_MAJOR initialised in $PGDATA (user $user, database $db, $method)"
fi
exec "$@"
