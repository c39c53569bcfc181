#!/bin/bash
# The rehearsal image's workload (WORKLOAD_COMMAND's default,
# `pghandoff-workload`), run by docker/workload-driver.sh in /rehearsal/input
# with PGHOST/PGPORT pointing at the proxy.  WORKLOAD says what it is:
#   pgbench    pgbench's TPC-B-like script, CLIENTS clients
#   NAME.sql   a pgbench script in the input directory
#   NAME       a script in the input directory, run by bash
#   anything else: a command, run by bash
# WORKLOAD_SECONDS long; pgbench's summary (or a line "committed: N") says
# what it committed.
set -euo pipefail

WORKLOAD=${WORKLOAD:-pgbench} CLIENTS=${CLIENTS:-4}
seconds=${WORKLOAD_SECONDS:?the workload driver sets WORKLOAD_SECONDS}
if [[ $WORKLOAD == pgbench ]]; then
	exec pgbench -n -c "$CLIENTS" -j 2 -T "$seconds"
elif [[ -f $WORKLOAD && $WORKLOAD == *.sql ]]; then
	exec pgbench -n -c "$CLIENTS" -j 2 -T "$seconds" -f "$WORKLOAD"
elif [[ -f $WORKLOAD ]]; then
	exec bash "$WORKLOAD"
else
	exec bash -c "$WORKLOAD"
fi
