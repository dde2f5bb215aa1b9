#!/bin/sh
# Starts a broadcaster; exec, so that it receives SIGTERM and drains.
set -eu
cd "$(dirname "$0")/.."
exec python -m broadcaster
