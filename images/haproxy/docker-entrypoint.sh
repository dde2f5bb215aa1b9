#!/bin/sh
# Entrypoint of local/haproxy:2.6-bookworm, same logic as upstream's:
# runs haproxy in master-worker mode (-W, reload with SIGUSR2) in the
# foreground (-db). Runs as user haproxy (uid 99).
set -eu

# `docker run IMAGE -f cfg` -> haproxy -f cfg
case "${1:-}" in
	-*) set -- haproxy "$@" ;;
esac

if [ "${1:-}" = haproxy ]; then
	shift
	set -- haproxy -W -db "$@"
fi

exec "$@"
