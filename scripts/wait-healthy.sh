#!/usr/bin/env bash
# Wait until every running container of the compose project is healthy (and
# every one-off container exited 0), or fail after a timeout, showing why.
#
#   scripts/wait-healthy.sh COMPOSE_COMMAND [TIMEOUT_SECONDS]
set -euo pipefail
compose=$1
timeout=${2:-300}
deadline=$((SECONDS + timeout))

while :; do
  pending=()
  for id in $($compose ps -q); do
    read -r name status health exit_code < <(docker inspect --format \
      '{{.Name}} {{.State.Status}} {{if .State.Health}}{{.State.Health.Status}}{{else}}none{{end}} {{.State.ExitCode}}' "$id")
    name=${name#/}
    case "$status/$health" in
      running/healthy) ;;
      exited/none) [[ $exit_code == 0 ]] || { echo "$name exited with $exit_code:" >&2; docker logs --tail 50 "$id" >&2; exit 1; } ;;
      *) pending+=("$name:$status/$health") ;;
    esac
  done
  ((${#pending[@]} == 0)) && exit 0
  if ((SECONDS > deadline)); then
    echo "not healthy after ${timeout}s: ${pending[*]}" >&2
    exit 1
  fi
  sleep 1
done
