"""gunicorn settings, from the environment (docs/reference/environment.md lists them)."""

from __future__ import annotations

import os

from live_notifications import metrics
from live_notifications.shared import environment, metricsserver

bind = f"0.0.0.0:{environment.integer('WEB_PORT', 8000, minimum=1)}"
#: Where the master serves /metrics, for all workers at once (not a gunicorn setting).
metrics_port = environment.integer("WEB_METRICS_PORT", 9000, minimum=1)
# gunicorn's advice is 2 x cores + 1; capped, since a container often sees
# more cores than its CPU limit grants. Scale out with replicas instead.
workers = environment.integer(
    "WEB_CONCURRENCY", min(2 * len(os.sched_getaffinity(0)) + 1, 8), minimum=1
)
# Threads let a worker serve a slow client without blocking the others.
worker_class = "gthread"
threads = environment.integer("WEB_THREADS", 4, minimum=1)
timeout = 30
graceful_timeout = 20
# Heartbeat files in memory: works with a read-only root filesystem.
worker_tmp_dir = "/dev/shm"  # noqa: S108
accesslog = "-"
# gunicorn's control socket would go to $HOME, which the image's user doesn't
# have (and the root filesystem is read-only); nothing here uses it.
control_socket_disable = True
# Only the edge proxy can reach web (compose networks, NetworkPolicy), so its
# X-Forwarded-* headers are trusted. Narrow this when that isn't the case.
forwarded_allow_ips = environment.string("FORWARDED_ALLOW_IPS", "*")


def on_starting(server: object) -> None:
    # In the master, before any worker forks: they all inherit the one count.
    metrics.share_between_workers()


def when_ready(server: object) -> None:
    # The master's thread: workers come and go, the count and its port stay.
    metricsserver.serve(metrics.exposition, port=metrics_port)
