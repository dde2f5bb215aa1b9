#!/usr/bin/env bash
# The compose stack, as the end-to-end suite drives a stack (the verbs are
# described in tests/e2e/stack.py): the Makefile's own targets where there is
# one, so the suite checks them too; compose and docker for the rest.
# k8s/scripts/local-cluster.sh answers the same verbs for a cluster.
#
#   tests/e2e/compose-stack.sh up | down | token USER | superuser | scale N
#   tests/e2e/compose-stack.sh broadcasters | metrics ID | restart ID | logs
#
# Environment: COMPOSE_PROJECT_NAME, SITE_PORT, WEBSOCKET_PORT, BROADCASTERS,
# TAIL, as for make.
set -euo pipefail
cd "$(dirname "$0")/../.."

# As the Makefile chooses it: `docker compose` (v2) if installed, else docker-compose.
COMPOSE=${COMPOSE:-$(docker compose version >/dev/null 2>&1 && echo "docker compose" || echo docker-compose)}

make() { command make --no-print-directory "$@"; }
compose() { $COMPOSE "$@"; } # two words for v2: split on purpose
usage() {
  echo "usage: $0 up | down | token USER | superuser | scale N | broadcasters | metrics ID | restart ID | logs" >&2
  exit 2
}
case ${1:-}/$# in
  up/1 | down/1 | superuser/1 | broadcasters/1 | logs/1 | token/2 | scale/2 | metrics/2 | restart/2) ;;
  *) usage ;;
esac

# The metrics port isn't published: read it from inside the replica.
READ_METRICS="import urllib.request; print(urllib.request.urlopen('http://127.0.0.1:8888/metrics', timeout=10).read().decode())"

case $1 in
  up) make up ;;
  down) compose down --volumes --remove-orphans ;;
  token) make token USER="$2" ;;
  superuser) make superuser ;;
  scale) make scale BROADCASTERS="$2" ;;
  broadcasters) compose ps -q broadcaster ;;
  metrics) docker exec "$2" python -c "$READ_METRICS" ;;
  restart)
    docker restart "$2" >/dev/null
    scripts/wait-healthy.sh "$COMPOSE"
    ;;
  logs) make logs TAIL="${TAIL:-200}" ;;
esac
