#!/bin/sh
# Entrypoint of local/redis:7-bookworm. Runs as user redis (uid 999).
set -eu

# `docker run IMAGE --appendonly yes` or `IMAGE /path/redis.conf` -> redis-server ...
case "${1:-}" in
	-* | *.conf) set -- redis-server "$@" ;;
esac

if [ "${1:-}" = redis-server ]; then
	# Upstream's redis is built with protected-mode off by default; Debian's
	# is not. Turn it off unless the command line or the config file given as
	# first argument sets it.
	case " $* " in
		*protected-mode*) ;;
		*)
			if [ $# -ge 2 ] && [ -f "$2" ] && grep -qiE '^[[:space:]]*protected-mode[[:space:]]' "$2"; then
				:
			else
				set -- "$@" --protected-mode no
			fi
			;;
	esac
	# as upstream: files redis writes are private unless a umask was set
	if [ "$(umask)" = 0022 ]; then
		umask 0077
	fi
fi

exec "$@"
