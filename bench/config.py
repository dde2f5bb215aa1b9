"""The bench's settings, read once from ``BENCH_*`` variables (docs/performance.md lists them)."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from pathlib import Path

from live_notifications.shared import environment
from live_notifications.shared.environment import ConfigurationError

ROOT = Path(__file__).resolve().parent.parent

#: The servers the bench knows: this project's, the same with events of mixed
#: audiences (bench.audiences), the how-to's, and the how-to's without compression.
SERVERS = ("broadcaster", "broadcaster-mixed", "baseline", "baseline-plain")


@dataclasses.dataclass(frozen=True, kw_only=True)
class Config:
    #: Connection counts, one run per server at each.
    connections: tuple[int, ...] = (1000, 10_000)
    servers: tuple[str, ...] = ("broadcaster", "broadcaster-mixed", "baseline")
    #: Share of the users allowed to see the events (``auth.view_group``).
    share: float = 0.5
    #: Events a second in the paced phase, and its length in seconds.
    rate: float = 50.0
    seconds: float = 5.0
    #: Deliveries aimed at in the saturated phase (events = this / recipients,
    #: within 20 and 10,000), published back to back, ``batch`` per transaction.
    saturated_deliveries: int = 500_000
    batch: int = 10
    #: Connections in flight (opening or authenticating) at once.
    concurrency: int = 100
    #: The reconnect storm, last: every client drops its connection and comes
    #: back with a fresh token, this many in flight at once; 0: no storm.
    storm_concurrency: int = 2000
    #: The site's share of a storm: this many token requests (one logged-in
    #: session each), this many in flight, to gunicorn with this many workers; 0: none.
    tokens: int = 10_000
    token_concurrency: int = 100
    web_workers: int = 3
    #: Load generator processes, and whether they use uvloop ("auto": if installed).
    generators: int = 1
    uvloop: str = "auto"
    #: Seconds each phase may last: connecting, and waiting for deliveries.
    phase_timeout: float = 180.0
    #: A phase also ends when nothing more arrives for this many seconds.
    stall_seconds: float = 20.0
    #: Seconds of quiet before reading the server's memory.
    idle_seconds: float = 2.0
    #: A git revision whose src/ and services/ to run (the broadcaster, the relay, the
    #: Django project the servers load) instead of the working tree's; "": the tree's.
    revision: str = ""
    #: Where results (JSON lines) and plots (SVG) are written.
    results_dir: Path = ROOT / "bench" / "results"
    plots_dir: Path = ROOT / "docs"

    @property
    def paced_events(self) -> int:
        return max(1, round(self.rate * self.seconds))

    def saturated_events(self, recipients: int) -> int:
        return min(10_000, max(20, math.ceil(self.saturated_deliveries / max(1, recipients))))

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Config:
        connections = tuple(
            _positive("BENCH_CONNECTIONS", item)
            for item in environment.string_list("BENCH_CONNECTIONS", "1000,10000", env=env)
        )
        servers = tuple(environment.string_list("BENCH_SERVERS", ",".join(cls.servers), env=env))
        for server in servers:
            if server not in SERVERS:
                raise ConfigurationError(
                    f"BENCH_SERVERS: unknown server {server!r}; known: {', '.join(SERVERS)}"
                )
        share = environment.number("BENCH_SHARE", cls.share, minimum=0.0, env=env)
        if not 0 < share <= 1:
            raise ConfigurationError(f"BENCH_SHARE must be in (0, 1], got {share}")
        uvloop = environment.string("BENCH_UVLOOP", cls.uvloop, env=env).lower()
        if uvloop not in ("auto", "true", "false"):
            raise ConfigurationError(f"BENCH_UVLOOP must be auto, true or false, got {uvloop!r}")
        if not connections or not servers:
            raise ConfigurationError("BENCH_CONNECTIONS and BENCH_SERVERS must name something")
        return cls(
            connections=connections,
            servers=servers,
            share=share,
            rate=environment.number("BENCH_RATE", cls.rate, minimum=0.1, env=env),
            seconds=environment.number("BENCH_SECONDS", cls.seconds, minimum=0.1, env=env),
            saturated_deliveries=environment.integer(
                "BENCH_SATURATED_DELIVERIES", cls.saturated_deliveries, minimum=1, env=env
            ),
            batch=environment.integer("BENCH_BATCH", cls.batch, minimum=1, env=env),
            concurrency=environment.integer(
                "BENCH_CONCURRENCY", cls.concurrency, minimum=1, env=env
            ),
            storm_concurrency=environment.integer(
                "BENCH_STORM_CONCURRENCY", cls.storm_concurrency, minimum=0, env=env
            ),
            tokens=environment.integer("BENCH_TOKENS", cls.tokens, minimum=0, env=env),
            token_concurrency=environment.integer(
                "BENCH_TOKEN_CONCURRENCY", cls.token_concurrency, minimum=1, env=env
            ),
            web_workers=environment.integer(
                "BENCH_WEB_WORKERS", cls.web_workers, minimum=1, env=env
            ),
            generators=environment.integer("BENCH_GENERATORS", cls.generators, minimum=1, env=env),
            uvloop=uvloop,
            phase_timeout=environment.number(
                "BENCH_PHASE_TIMEOUT", cls.phase_timeout, minimum=1, env=env
            ),
            stall_seconds=environment.number(
                "BENCH_STALL_SECONDS", cls.stall_seconds, minimum=1, env=env
            ),
            idle_seconds=environment.number(
                "BENCH_IDLE_SECONDS", cls.idle_seconds, minimum=0, env=env
            ),
            revision=environment.string("BENCH_REVISION", cls.revision, env=env),
            results_dir=Path(
                environment.string("BENCH_RESULTS_DIR", str(cls.results_dir), env=env)
            ),
            plots_dir=Path(environment.string("BENCH_PLOTS_DIR", str(cls.plots_dir), env=env)),
        )


def _positive(name: str, text: str) -> int:
    try:
        value = int(text.replace("_", ""))
    except ValueError:
        raise ConfigurationError(f"{name} must list integers, got {text!r}") from None
    if value < 1:
        raise ConfigurationError(f"{name} must list counts of at least 1, got {value}")
    return value
