"""The relay's counters and gauges, in the Prometheus text format."""

from __future__ import annotations

import dataclasses

from live_notifications.shared import prometheus
from live_notifications.shared.prometheus import Family


@dataclasses.dataclass
class Metrics:
    """What happened since the process started. Only the relay's thread mutates it."""

    events_relayed: int = 0
    refills: int = 0
    rows_trimmed: int = 0
    errors: int = 0
    #: Seconds from the commit of the last event relayed to its arrival in Redis.
    lag_seconds: float = 0.0

    def render(self, *, ready: bool, leader: bool) -> str:
        """Return the exposition text, with the current gauges."""
        return prometheus.render(
            [
                Family("relay_ready", "gauge", "1 while PostgreSQL and Redis answer.", {"": ready}),
                Family(
                    "relay_leader", "gauge", "1 while this relay is the one relaying.", {"": leader}
                ),
                Family(
                    "relay_events_relayed_total",
                    "counter",
                    "Events appended to the Redis event log.",
                    {"": self.events_relayed},
                ),
                Family(
                    "relay_lag_seconds",
                    "gauge",
                    "Seconds from the commit of the last event relayed to its arrival in Redis.",
                    {"": self.lag_seconds},
                ),
                Family(
                    "relay_refills_total",
                    "counter",
                    "Times Redis had lost the log and it was rebuilt from PostgreSQL.",
                    {"": self.refills},
                ),
                Family(
                    "relay_rows_trimmed_total",
                    "counter",
                    "Outbox rows deleted once older than the history.",
                    {"": self.rows_trimmed},
                ),
                Family(
                    "relay_errors_total",
                    "counter",
                    "Times PostgreSQL or Redis failed and the relay started over.",
                    {"": self.errors},
                ),
            ]
        )
