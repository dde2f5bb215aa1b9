#!/bin/sh
# Starts the relay; exec, so that it receives SIGTERM.
set -eu
cd "$(dirname "$0")/.."
exec python -m relay
