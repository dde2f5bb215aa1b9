#!/bin/sh
# Starts Django under gunicorn; exec, so that gunicorn receives the signals.
# Migrations and collectstatic are separate steps, run once per release
# (see the README), not by every replica as it starts.
set -eu
cd "$(dirname "$0")/.."
exec gunicorn --config python:web.gunicorn_conf web.wsgi
