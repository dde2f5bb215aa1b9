#!/usr/bin/env bash
# The compose stack, as the end-to-end suite drives a stack (the verbs are
# described in tests/e2e/stack.py): the Makefile's own targets where there is
# one, so the suite checks them too; compose and docker for the rest.
# k8s/scripts/local-cluster.sh answers the same verbs for a cluster.
#
#   tests/e2e/compose-stack.sh up | down | token USER | superuser | scale N
#   tests/e2e/compose-stack.sh broadcasters | metrics ID | restart ID | kill ID
#   tests/e2e/compose-stack.sh redis restart|kill | relay-metrics | web-metrics | logs
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
  echo "usage: $0 up | down | token USER | superuser | scale N | broadcasters | metrics ID" \
    "| restart ID | kill ID | redis restart|kill | relay-metrics | web-metrics | logs" >&2
  exit 2
}
case ${1:-}/$# in
  up/1 | down/1 | superuser/1 | broadcasters/1 | relay-metrics/1 | web-metrics/1 | logs/1) ;;
  token/2 | scale/2 | metrics/2 | restart/2 | kill/2) ;;
  redis/2) [[ $2 == restart || $2 == kill ]] || usage ;;
  *) usage ;;
esac

# The metrics ports (9000, every app service) aren't published, and the edge
# doesn't route to them: read them from inside the container.
read_metrics() {
  docker exec "$1" python -c "import urllib.request; print(urllib.request.urlopen('http://127.0.0.1:9000/metrics', timeout=10).read().decode())"
}

# The one container of a service (redis, relay).
container() {
  local id
  id=$(compose ps -q "$1")
  [[ -n $id && $id != *$'\n'* ]] || { echo "not one $1 container: ${id:-none}" >&2; exit 1; }
  echo "$id"
}

case $1 in
  up) make up ;;
  down) compose down --volumes --remove-orphans ;;
  token) make token USER="$2" ;;
  superuser) make superuser ;;
  scale) make scale BROADCASTERS="$2" ;;
  broadcasters)
    # Running ones only: a killed container is listed until it is started again.
    for id in $(compose ps -q broadcaster); do
      docker inspect --format '{{if .State.Running}}{{.Id}}{{end}}' "$id"
    done
    ;;
  metrics) read_metrics "$2" ;;
  restart)
    docker restart "$2" >/dev/null
    scripts/wait-healthy.sh "$COMPOSE"
    ;;
  kill)
    # SIGKILL. Docker counts `docker kill` as a manual stop: the restart
    # policy (unless-stopped) leaves the container down, where it would
    # restart one that crashed. Start it again, as the policy would.
    docker kill "$2" >/dev/null
    docker start "$2" >/dev/null
    ;;
  redis)
    id=$(container redis)
    if [[ $2 == restart ]]; then
      docker restart "$id" >/dev/null
    else
      docker kill "$id" >/dev/null
      docker start "$id" >/dev/null
    fi
    deadline=$((SECONDS + 60))
    until docker exec "$id" redis-cli ping 2>/dev/null | grep -qx PONG; do
      ((SECONDS < deadline)) || { echo "redis doesn't answer 60 s after its $2" >&2; exit 1; }
      sleep 0.2
    done
    ;;
  relay-metrics)
    read_metrics "$(container relay)"
    ;;
  web-metrics)
    # One series for all of gunicorn's workers: ask any web container.
    read_metrics "$(compose ps -q web | head -n 1)"
    ;;
  logs) make logs TAIL="${TAIL:-200}" ;;
esac
