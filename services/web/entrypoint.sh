#!/bin/sh
# Starts Django under gunicorn; exec, so that gunicorn receives the signals.
# Not here: migrations (`django-admin migrate_when_ready`, compose's migrate
# service and the pods' init container) and static files (collected when the
# image is built).
set -eu
cd "$(dirname "$0")/.."
exec gunicorn --config python:web.gunicorn_conf web.wsgi
