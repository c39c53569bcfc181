#!/bin/bash
# A workload that must fail the rehearsal: besides shop-workload.sql through
# the proxy, it writes to the source directly, around the proxy.  Once the
# cutover fences the source, those writes are refused, and the rehearsal
# stops with the error (WORKLOAD=around-the-proxy.sh).
set -u
pgbench -n -c "$CLIENTS" -j 2 -T "$WORKLOAD_SECONDS" -f shop-workload.sql &
bench=$!
while kill -0 "$bench" 2>/dev/null; do
	if ! psql -X -v ON_ERROR_STOP=1 -q -h "$SOURCE_HOST" -p "$SOURCE_PORT" \
		-c "INSERT INTO audit_log (happened_at, what) VALUES (now(), 'around the proxy')"; then
		kill "$bench"
		exit 1
	fi
	sleep 0.2
done
wait "$bench"
