#!/usr/bin/env bash
# Make sure the stack's base images can be had. For each one that is neither
# present nor pullable (a machine without a registry), build the Debian-based
# stand-ins (images/) and record them in .env, so the choice sticks: a stack
# started on a stand-in keeps it (its PostgreSQL data is of that version).
#
#   scripts/choose-base-images.sh [ENV_FILE]
set -euo pipefail
cd "$(dirname "$0")/.."
env_file=${1:-.env}

# variable  stand-in tag (the upstream default is read from compose.yaml)
standins=(
  "PYTHON_IMAGE local/python:3.11-bookworm"
  "POSTGRES_IMAGE local/postgres:15-bookworm"
  "REDIS_IMAGE local/redis:7-bookworm"
  "HAPROXY_IMAGE local/haproxy:2.6-bookworm"
)

upstream_default() {  # the default in compose.yaml's ${VAR:-default}
  sed -n "s/.*\${$1:-\([^}]*\)}.*/\1/p" compose.yaml | head -n 1
}

available() {
  docker image inspect "$1" >/dev/null 2>&1 || docker pull --quiet "$1" >/dev/null 2>&1
}

missing=()
for entry in "${standins[@]}"; do
  read -r variable standin <<<"$entry"
  chosen=${!variable:-}
  if [[ -z $chosen ]] && [[ -f $env_file ]]; then
    chosen=$(sed -n "s/^$variable=//p" "$env_file" | tail -n 1)
  fi
  if [[ -n $chosen ]]; then
    if [[ $chosen == "$standin" ]] && ! docker image inspect "$chosen" >/dev/null 2>&1; then
      missing+=("$variable=$standin")  # recorded earlier, since removed: rebuild
    fi
    continue
  fi
  image=$(upstream_default "$variable")
  [[ -n $image ]] || { echo "no default for $variable in compose.yaml" >&2; exit 1; }
  if ! available "$image"; then
    echo "$image can't be pulled: using $standin, built from Debian packages."
    missing+=("$variable=$standin")
    echo "$variable=$standin" >>"$env_file"
  fi
done

if ((${#missing[@]})); then
  if ! command -v mmdebstrap >/dev/null && ((EUID == 0)) && command -v apt-get >/dev/null; then
    echo "Installing Debian's mmdebstrap to build them."
    apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends mmdebstrap
  fi
  images/build-local-bases.sh
fi
