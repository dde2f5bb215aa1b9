"""Counters and gauges, rendered in the Prometheus text format for the metrics port."""

from __future__ import annotations

import collections
import dataclasses
from collections.abc import Mapping

from live_notifications.shared import prometheus
from live_notifications.shared.prometheus import Family, Histogram

#: Upper bounds of ``broadcaster_event_delay_seconds``: fine around the
#: 100 ms a notification should take, coarse past a second.
DELAY_BOUNDS = (
    0.005,
    0.01,
    0.025,
    0.05,
    0.075,
    0.1,
    0.15,
    0.2,
    0.3,
    0.5,
    0.75,
    1.0,
    2.5,
    5.0,
    10.0,
)


@dataclasses.dataclass
class Metrics:
    """What happened since the process started. Only the event loop mutates it."""

    connections_opened: int = 0
    events_received: int = 0
    events_invalid: int = 0
    messages_sent: int = 0
    writes: int = 0
    slow_clients_dropped: int = 0
    redis_reconnects: int = 0
    connections_refused: int = 0
    events_replayed: int = 0
    access_revoked: int = 0
    access_recomputes: int = 0
    access_users_recomputed: int = 0
    clients_sending: int = 0
    positions_sent: int = 0
    resumes: collections.Counter[str] = dataclasses.field(default_factory=collections.Counter)
    auth_failures: collections.Counter[str] = dataclasses.field(default_factory=collections.Counter)
    #: Live events, from their place in the log to the end of their write to every recipient.
    event_delays: Histogram = dataclasses.field(default_factory=lambda: Histogram(DELAY_BOUNDS))

    def render(
        self, *, connections: int, pending: int, ready: bool, max_connections: int, waiting: int
    ) -> str:
        """Return the exposition text, with the current gauges."""
        auth_failures: dict[str, float] = {
            f'{{reason="{reason}"}}': count for reason, count in sorted(self.auth_failures.items())
        } or {'{reason="invalid"}': 0}
        resumes: dict[str, float] = {
            f'{{outcome="{outcome}"}}': self.resumes[outcome]
            for outcome in ("recovered", "not_recovered")
        }
        families: list[tuple[str, str, str, Mapping[str, float]]] = [
            ("connections", "gauge", "Authenticated connections open now.", {"": connections}),
            ("pending_connections", "gauge", "Connections waiting for their token.", {"": pending}),
            (
                "events_waiting",
                "gauge",
                "Events read and not written yet: waiting for BROADCASTER_WRITE_INTERVAL.",
                {"": waiting},
            ),
            (
                "ready",
                "gauge",
                "1 when reading the event log, not draining and not full.",
                {"": int(ready)},
            ),
            (
                "max_connections",
                "gauge",
                "Connections, pending and authenticated, at which new ones are refused.",
                {"": max_connections},
            ),
            (
                "connections_opened_total",
                "counter",
                "Connections that authenticated.",
                {"": self.connections_opened},
            ),
            (
                "connections_refused_total",
                "counter",
                "Connections refused before the handshake (full, limit, not loaded, draining).",
                {"": self.connections_refused},
            ),
            (
                "auth_failures_total",
                "counter",
                "Connections closed before authenticating, by reason.",
                auth_failures,
            ),
            (
                "events_received_total",
                "counter",
                "Events read from the log.",
                {"": self.events_received},
            ),
            (
                "events_invalid_total",
                "counter",
                "Entries of the log that were not events (skipped).",
                {"": self.events_invalid},
            ),
            (
                "messages_sent_total",
                "counter",
                "Live event messages written to client connections.",
                {"": self.messages_sent},
            ),
            (
                "writes_total",
                "counter",
                "Writes of live events to clients: messages_sent_total / this is events per write.",
                {"": self.writes},
            ),
            (
                "event_delay_seconds",
                "histogram",
                "Live events, from their place in the log (the relay's clock) to the end"
                " of their write to every recipient (this process's clock).",
                self.event_delays.samples(),
            ),
            (
                "resumes_total",
                "counter",
                "Clients that sent a last id, by whether everything after it could be sent.",
                resumes,
            ),
            (
                "events_replayed_total",
                "counter",
                "Missed events sent to resuming clients.",
                {"": self.events_replayed},
            ),
            (
                "positions_sent_total",
                "counter",
                "Position messages sent to resuming clients.",
                {"": self.positions_sent},
            ),
            (
                "access_revoked_total",
                "counter",
                "Connections closed because their user's access was revoked.",
                {"": self.access_revoked},
            ),
            (
                "access_recomputes_total",
                "counter",
                "Batches of users whose permissions were read again (3 queries each).",
                {"": self.access_recomputes},
            ),
            (
                "access_users_recomputed_total",
                "counter",
                "Users whose permissions were read again after an access change.",
                {"": self.access_users_recomputed},
            ),
            (
                "clients_sending_total",
                "counter",
                "Clients closed for sending messages after their first one.",
                {"": self.clients_sending},
            ),
            (
                "slow_clients_dropped_total",
                "counter",
                "Clients disconnected because they could not keep up.",
                {"": self.slow_clients_dropped},
            ),
            (
                "redis_reconnects_total",
                "counter",
                "Times the connection to the event log in Redis was lost and retried.",
                {"": self.redis_reconnects},
            ),
        ]
        return prometheus.render(
            Family(f"broadcaster_{name}", kind, help, samples)
            for name, kind, help, samples in families
        )
