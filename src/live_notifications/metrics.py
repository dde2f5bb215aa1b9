"""web's Prometheus metrics: ``web_events_published_total``, one count per server.

Under gunicorn, the master calls :func:`share_between_workers` before it forks
any worker: every worker then adds to the same count, in shared memory, and
the master serves it on WEB_METRICS_PORT (see ``web/gunicorn_conf.py``). The
count survives a worker's death, since the master holds it. Elsewhere
(manage.py, the tests, the relay and the broadcaster, which load Django's
settings) the count is the process's own, and nothing serves it.

This module doesn't import Django: gunicorn's master, which doesn't load the
application, imports it.
"""

from __future__ import annotations

from live_notifications.shared import prometheus
from live_notifications.shared.prometheus import Family

from .counters import Counter, LocalCounter, SharedCounter

_published: Counter = LocalCounter()


def share_between_workers() -> None:
    """Keep the count in memory shared with the processes forked from now on.

    Call it once, in gunicorn's master, before workers start. Counts made
    before the call are not carried over (in the master, there are none).
    """
    global _published
    _published = SharedCounter("web-metrics")


def count_published(count: int) -> None:
    """Count log entries committed to the outbox."""
    _published.add(count)


def published() -> int:
    """Log entries committed to the outbox: by this server's workers, or this process."""
    return _published.value()


def exposition() -> str:
    """The metrics in Prometheus's text format."""
    return prometheus.render(
        [
            Family(
                "web_events_published_total",
                "counter",
                "Log entries (events and access changes) committed to the outbox"
                " by this server's workers.",
                {"": published()},
            ),
        ]
    )
