#!/bin/sh
# The pghandoff image's entrypoint.  The configuration is the file at
# PGHANDOFF_CONFIG (mount one there); when there is none, it is written from
# the environment, one variable per key: PGHANDOFF__SECTION__KEY=value, e.g.
#   PGHANDOFF__SOURCE__HOST=db-old  PGHANDOFF__DATABASES__APP=
#   PGHANDOFF__PROXY__LISTEN_ADDR=0.0.0.0
# A command that takes a configuration gets `-c FILE` unless it has one.
set -eu

config=${PGHANDOFF_CONFIG:-/etc/pghandoff/pghandoff.ini}
if [ ! -e "$config" ] && env | grep -q '^PGHANDOFF__'; then
	generated=${PGHANDOFF_GENERATED_CONFIG:-/var/lib/pghandoff/pghandoff.ini}
	# Written aside and renamed: the healthcheck runs this entrypoint too, and
	# a reload must never read half a file.
	env | sed -n 's/^PGHANDOFF__\([A-Za-z0-9]*\)__\([A-Za-z0-9_]*\)=\(.*\)$/\1 \2 \3/p' | sort |
		awk '{
			section = tolower($1); key = tolower($2)
			value = $0; sub(/^[^ ]* [^ ]* ?/, "", value)
			if (section != last) { printf "%s[%s]\n", (NR > 1 ? "\n" : ""), section; last = section }
			printf "%s = %s\n", key, value
		}' >"$generated.tmp"
	mv -f "$generated.tmp" "$generated"
	config=$generated
fi

case "${1:-}" in
config | check | proxy | replicate | status | verify | cutover | rollback | run)
	has_config=no
	for arg in "$@"; do
		case "$arg" in -c | --config | --config=*) has_config=yes ;; esac
	done
	if [ "$has_config" = no ]; then
		command=$1
		shift
		set -- "$command" -c "$config" "$@"
	fi
	;;
esac
exec pghandoff "$@"
