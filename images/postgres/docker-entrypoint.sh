#!/bin/sh
# Entrypoint of local/postgres:15-bookworm: the part of the upstream postgres
# image's entrypoint that the stack uses. Runs as user postgres (uid 999).
set -eu

# `docker run IMAGE -c name=value` -> postgres -c name=value
case "${1:-}" in
	-*) set -- postgres "$@" ;;
esac

if [ "${1:-}" = postgres ] && [ ! -s "$PGDATA/PG_VERSION" ]; then
	if [ -z "${POSTGRES_PASSWORD:-}" ]; then
		echo >&2 "error: database is uninitialized and POSTGRES_PASSWORD is not set."
		echo >&2 "       Set POSTGRES_PASSWORD to a non-empty password for the superuser."
		exit 1
	fi
	POSTGRES_USER="${POSTGRES_USER:-postgres}"
	POSTGRES_DB="${POSTGRES_DB:-$POSTGRES_USER}"

	mkdir -p "$PGDATA"
	pwfile="$(mktemp)"
	printf '%s\n' "$POSTGRES_PASSWORD" >"$pwfile"
	# Unix-socket connections inside the container: trust (as upstream);
	# TCP connections, loopback included: scram-sha-256 password.
	# shellcheck disable=SC2086  # POSTGRES_INITDB_ARGS is a list of words
	initdb --pgdata="$PGDATA" --username="$POSTGRES_USER" --pwfile="$pwfile" \
		--auth-local=trust --auth-host=scram-sha-256 ${POSTGRES_INITDB_ARGS:-}
	rm -f "$pwfile"
	printf '\n# docker-entrypoint.sh: password login over TCP from any address\nhost all all all scram-sha-256\n' \
		>>"$PGDATA/pg_hba.conf"

	# Temporary server on the Unix socket only, for POSTGRES_DB and init scripts.
	pg_ctl --pgdata="$PGDATA" --wait --options="-c listen_addresses=''" start
	export PGUSER="$POSTGRES_USER"
	if [ "$POSTGRES_DB" != postgres ]; then
		psql -v ON_ERROR_STOP=1 --no-psqlrc --dbname=postgres --set db="$POSTGRES_DB" <<-'EOSQL'
			CREATE DATABASE :"db" ;
		EOSQL
	fi
	for f in /docker-entrypoint-initdb.d/*; do
		case "$f" in
			*.sql) echo "running $f"; psql -v ON_ERROR_STOP=1 --no-psqlrc --dbname="$POSTGRES_DB" -f "$f" ;;
			*.sh)
				echo "running $f"
				# shellcheck disable=SC1090  # init scripts are the user's
				if [ -x "$f" ]; then "$f"; else . "$f"; fi
				;;
			*) if [ -e "$f" ]; then echo "ignoring $f"; fi ;;
		esac
	done
	unset PGUSER
	pg_ctl --pgdata="$PGDATA" --wait --mode=fast stop
	echo "PostgreSQL init process complete; ready for start up."
fi

exec "$@"
