"""``python -m bench`` (``make bench``): the fan-out benchmark, run after run.

For each connection count, first the floor (:mod:`bench.floor`: what a bare
write to as many clients costs on the server's CPU); then each server at that
count (this project's broadcaster, then the how-to's design, so that the two
share the machine's state of the moment): start the server on its own CPU
with the real PostgreSQL, Redis and relay; open the connections (at most
``BENCH_CONCURRENCY`` in flight) with tokens minted here; read the server's
memory; publish a paced phase then a saturated one through the admin's
publishing path; wait, within bounds, for every delivery; report. Every
phase has a deadline, so a run ends by itself whatever the server does.
"""

from __future__ import annotations

import contextlib
import datetime
import heapq
import os
import secrets
import shutil
import signal
import sys
import tempfile
import time
from array import array
from collections import Counter
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import django

from tests.servers import PostgresServer, RedisServer

from . import audiences, floor, plots, report, stack, tokens
from .config import ROOT, Config
from .loadgen import (
    ConnectOrder,
    ConnectReport,
    Generators,
    Progress,
    WindowReport,
    uvloop_available,
)
from .report import Record, percentile

if TYPE_CHECKING:
    from .population import Population

#: Seconds a token stays valid in the bench: connecting 10,000 clients takes
#: longer than the project's 30 s. Validation costs the same either way.
TOKEN_MAX_AGE = 3600
#: Seconds between two looks at the generators' counts while waiting.
POLL_SECONDS = 0.05
#: The broadcaster's metrics read around each delivery phase.
DELAYS = "broadcaster_event_delay_seconds"
WRITES = "broadcaster_writes_total"


def main() -> None:
    from live_notifications.shared.environment import ConfigurationError

    try:
        config = Config.from_env()
    except ConfigurationError as exc:
        sys.exit(f"bench: configuration error: {exc}")
    for program in ("initdb", "pg_ctl", "redis-server"):
        if stack.program(program) is None:
            sys.exit(
                f"bench: {program} not found: install Debian's postgresql and redis-server "
                "packages (.ci/run does it)"
            )
    if config.uvloop == "true" and not uvloop_available():
        sys.exit("bench: BENCH_UVLOOP=true, but uvloop is not installed")
    use_uvloop = config.uvloop == "true" or (config.uvloop == "auto" and uvloop_available())

    # SIGTERM (a timeout, CI) ends the run as Ctrl-C does: every server is stopped.
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))
    cpus = stack.Cpus.split()
    # The server holds every connection: it inherits this limit, as the generators do.
    file_limit = stack.raise_file_limit(max(config.connections))
    if cpus.others is not None:
        os.sched_setaffinity(0, cpus.others)  # PostgreSQL, Redis, the relay inherit it
    setting = {
        "share": config.share,
        "rate": config.rate,
        "paced_events": config.paced_events,
        "saturated_deliveries": config.saturated_deliveries,
        "batch": config.batch,
        "concurrency": config.concurrency,
        "generators": config.generators,
        "loop": "uvloop" if use_uvloop else "asyncio",
        "pinning": cpus.describe(),
    }
    machine = stack.machine()
    context = {
        "session": f"{datetime.datetime.now(datetime.UTC):%Y-%m-%dT%H:%M:%SZ}",
        "machine": machine,
        **stack.revision(config.revision),
        "settings": setting,
    }
    print(
        f"bench: {machine['cores']} cores ({machine['cpu_model']}), kernel {machine['kernel']}, "
        f"Python {machine['python']}, websockets {machine['websockets']}, "
        f"redis-py {machine['redis_py']}; revision {context['revision']}"
        f"{' (with uncommitted changes)' if context['dirty'] else ''}"
    )
    print(
        f"bench: {cpus.describe()}; {config.generators} load generator process(es) on "
        f"{setting['loop']}; file descriptor limit {file_limit}"
    )
    if file_limit < max(config.connections) + 100:
        print(f"bench: warning: {file_limit} file descriptors may be too few", file=sys.stderr)

    records: list[Record] = []
    with contextlib.ExitStack() as cleanup:
        tree = ROOT
        if config.revision:
            directory = Path(tempfile.mkdtemp(prefix="bench-revision-"))
            cleanup.callback(shutil.rmtree, directory, ignore_errors=True)
            tree = stack.checkout(config.revision, directory)
            print(f"bench: servers and relay from revision {config.revision}, in {directory}")
        postgres = PostgresServer()
        cleanup.callback(postgres.remove)
        postgres.start()
        redis_server = RedisServer()
        cleanup.callback(redis_server.stop)
        redis_server.start()
        env = {
            "DJANGO_SETTINGS_MODULE": "web.settings.production",
            "DJANGO_SECRET_KEY": secrets.token_urlsafe(32),
            "DATABASE_URL": postgres.url("postgres"),
            "REDIS_URL": redis_server.url,
            "SESAME_MAX_AGE": str(TOKEN_MAX_AGE),
        }
        os.environ.update(env)
        django.setup()
        from . import population

        started = time.monotonic()
        people = population.prepare(max(config.connections), config.share)
        print(f"bench: {len(people.users)} users ready in {time.monotonic() - started:.1f} s")
        relay = stack.start_relay(env, tree=tree)
        cleanup.callback(relay.remove)

        sequence = 0
        for count in config.connections:
            recipients = sum(people.allowed[:count])
            bare = None
            if recipients:
                bare = floor.measure(recipients, cpus)
                print(_floor_line(bare))
            for server in config.servers:
                print(f"\n--- {server}, {count:,} clients")
                run = Run(
                    server,
                    count,
                    config=config,
                    cpus=cpus,
                    env=env,
                    people=people,
                    tree=tree,
                    relay=relay,
                )
                record = run.measure(sequence, use_uvloop=use_uvloop)
                sequence = run.sequence
                record.update(context, floor=bare)
                records.append(record)
                print(report.connections_table([record]))
                print(report.deliveries_table([record]))
                print(report.relay_table([record]))
                print(report.latency_table([record]))
                if server.startswith("broadcaster"):
                    print(report.writes_table([record]))
                if "storm" in record:
                    print(report.storm_table([record]))
                # Written at once: an interrupted bench keeps what it measured.
                path = report.append(config.results_dir, [record])
        site: list[Record] = []
        if config.tokens:
            print(f"\n--- web, {config.tokens:,} token requests")
            site.append(tokens.measure(config, env, cpus, people, tree=tree))
            site[0].update(context)
            print(report.tokens_table(site))
            path = report.append(config.results_dir, site)

    print("\n=== connections\n" + report.connections_table(records))
    print("\n=== deliveries\n" + report.deliveries_table(records))
    print("\n=== relay (the same events, PostgreSQL to Redis)\n" + report.relay_table(records))
    print("\n=== latency p99 by part, ms\n" + report.latency_table(records))
    if "broadcaster" in config.servers:
        print("\n=== the broadcaster's writes, against the floor\n" + report.writes_table(records))
    if any("storm" in record for record in records):
        print("\n=== reconnect storm\n" + report.storm_table(records))
    if site:
        print(
            "\n=== web: GET /api/token/, one logged-in session each\n" + report.tokens_table(site)
        )
    if {"broadcaster", "broadcaster-mixed"} <= set(config.servers):
        print("\n=== mixed audiences (bench.audiences) against admin changes only")
        print(report.mixed_table(records))
    if {"broadcaster", "baseline"} <= set(config.servers):
        print("\n=== ratios (> 1: the broadcaster does better than the how-to's design)")
        print(report.ratios_table(records, subject="broadcaster", reference="baseline"))
    print(f"\nbench: results appended to {path}")
    written = plots.write(config.results_dir, config.plots_dir)
    for svg in written:
        print(f"bench: plot {svg}")


class Run:
    """One server at one connection count."""

    def __init__(
        self,
        server: str,
        count: int,
        *,
        config: Config,
        cpus: stack.Cpus,
        env: dict[str, str],
        people: Population,
        tree: Path,
        relay: stack.Program,
    ) -> None:
        self.server, self.count, self.config, self.cpus, self.env = server, count, config, cpus, env
        #: This project's broadcaster (with mixed audiences or not), or the how-to's.
        self.ours = server.startswith("broadcaster")
        self.mixed = server == "broadcaster-mixed"
        #: The allowed users of the run, in rank order (bench.audiences).
        self.allowed_users: list[Any] = []
        self.people = people
        self.tree = tree
        #: The relay, shared by every run: its CPU per event and memory are recorded.
        self.relay = relay
        self.process: stack.Program | None = None
        self.generators: Generators | None = None
        #: Connected clients allowed to see the events.
        self.recipients = 0
        #: The next event's sequence number.
        self.sequence = 0

    def measure(self, first_sequence: int, *, use_uvloop: bool) -> Record:
        from . import population

        config = self.config
        users = self.people.users[: self.count]
        hellos = population.hellos(users, resuming=self.ours)
        allowed = self.people.allowed[: self.count]
        self.allowed_users = [user for user, ok in zip(users, allowed, strict=True) if ok]
        try:
            self.process = process = stack.start_server(
                "broadcaster" if self.ours else self.server, self.env, self.cpus, tree=self.tree
            )
            pid = process.pid
            time.sleep(config.idle_seconds)
            rss_before = stack.memory_kib(pid)
            self.generators = Generators(
                config.generators, cpus=self.cpus.others, use_uvloop=use_uvloop
            )
            connected = self.connect(hellos, allowed, concurrency=config.concurrency)
            accepted = connected["accepted"]
            time.sleep(config.idle_seconds)
            rss_after = stack.memory_kib(pid)
            record: Record = {
                "time": f"{datetime.datetime.now(datetime.UTC):%Y-%m-%dT%H:%M:%SZ}",
                "server": self.server,
                "connections": self.count,
                "allowed": sum(allowed),
                "accepted": accepted,
                "refused": connected["refused"],
                "failures": connected["failures"],
                "compressed": connected["compressed"],
                "connect_seconds": connected["seconds"],
                "connect_per_second": connected["per_second"],
                "connect_cpu_ms_per_connection": connected["cpu_ms_per_connection"],
                "rss_before_kib": rss_before,
                "rss_after_kib": rss_after,
                "rss_per_connection_kib": (rss_after - rss_before) / accepted if accepted else None,
            }
            print(_connect_line("connected", connected, self.count))
            self.sequence = first_sequence
            # Mixed, a client is due 3 events in 4: published 4 for 3, each client is
            # due as many a second as in the admin changes' run, so that its writes
            # carry as many and CPU per delivery compares the routing, not the mix.
            scale = 1 / audiences.SHARED if self.mixed else 1
            for phase, events, rate, batch in (
                ("paced", round(config.paced_events * scale), config.rate * scale, 1),
                (
                    "saturated",
                    round(config.saturated_events(self.recipients) * scale),
                    None,
                    config.batch,
                ),
            ):
                record[phase] = self.deliver(self.sequence, events, rate=rate, batch=batch)
                self.sequence += events
                print(_phase_line(phase, record[phase]))
            if config.storm_concurrency:
                record["storm"] = self.storm(users, allowed)
                print(_connect_line("storm: reconnected", record["storm"], self.count))
            record["rss_peak_kib"] = stack.memory_kib(pid, "VmHWM")
            record["relay_rss_kib"] = stack.memory_kib(self.relay.pid)
            record["relay_rss_peak_kib"] = stack.memory_kib(self.relay.pid, "VmHWM")
            if process.process.poll() is not None:
                record["server_exit"] = process.process.returncode
            return record
        except Exception:  # a crash, not an interruption: show what the server said
            if self.process is not None:
                print(f"--- {self.server} log (last lines)\n{self.process.output()[-4000:]}")
            raise
        finally:
            if self.generators is not None:
                self.generators.close()
            if self.process is not None:
                self.process.remove()

    def connect(self, hellos: list[str], allowed: list[bool], *, concurrency: int) -> Record:
        """Open a connection per hello, ``concurrency`` in flight; the counts and rates."""
        assert self.process is not None and self.generators is not None
        config, process, generators = self.config, self.process, self.generators
        cpu_before = stack.cpu_seconds(process.pid)
        orders = [
            ConnectOrder(
                host="127.0.0.1",
                port=process.port,
                hellos=part_hellos,
                allowed=part_allowed,
                indices=part_indices,
                ranks=part_ranks,
                mixed=len(self.allowed_users) if self.mixed else 0,
                concurrency=max(1, concurrency // config.generators),
                timeout=config.phase_timeout,
            )
            for part_hellos, part_allowed, part_indices, part_ranks in zip(
                generators.split(hellos),
                generators.split(allowed),
                generators.split(range(len(hellos))),
                generators.split(ranks(allowed)),
                strict=True,
            )
        ]
        connected: list[ConnectReport] = generators.ask(
            "connect", orders, timeout=config.phase_timeout + 60
        )
        cpu = stack.cpu_seconds(process.pid) - cpu_before
        self.recipients = sum(r.recipients for r in connected)
        accepted = sum(r.accepted for r in connected)
        failures: Counter[str] = Counter()
        for part in connected:
            failures.update(part.failures)
        seconds = max(r.last_authenticated for r in connected) - min(r.started for r in connected)
        return {
            "accepted": accepted,
            "refused": sum(r.refused for r in connected),
            "failures": dict(failures),
            "compressed": sum(r.compressed for r in connected),
            "concurrency": concurrency,
            "seconds": seconds,
            "per_second": accepted / seconds if accepted and seconds > 0 else None,
            "cpu_ms_per_connection": cpu * 1000 / accepted if accepted else None,
        }

    def storm(self, users: list[Any], allowed: list[bool]) -> Record:
        """Every client drops its connection, then all come back at once with fresh tokens.

        As when a replica dies and its clients reconnect elsewhere: the
        users are known to the server from the first connections.
        """
        from . import population

        assert self.process is not None and self.generators is not None
        pid = self.process.pid
        dropped = sum(self.generators.ask("drop"))
        time.sleep(self.config.idle_seconds)  # the server sees them go
        rss_before = stack.memory_kib(pid)
        hellos = population.hellos(users, resuming=self.ours)
        record = self.connect(hellos, allowed, concurrency=self.config.storm_concurrency)
        time.sleep(self.config.idle_seconds)
        record.update(
            dropped=dropped, rss_dropped_kib=rss_before, rss_after_kib=stack.memory_kib(pid)
        )
        return record

    def deliver(self, first: int, events: int, *, rate: float | None, batch: int) -> dict[str, Any]:
        """Publish ``events`` (``rate`` a second, or as fast as possible, ``batch`` per
        transaction), wait within the phase's bounds for their deliveries, count."""
        from . import population

        assert self.process is not None and self.generators is not None
        config, generators, pid = self.config, self.generators, self.process.pid
        generators.ask("window", [(first, first + events)] * len(generators.pipes))
        counted_before = self.counted()
        delays_before = stack.histogram(counted_before, DELAYS)
        cpu_before = stack.cpu_seconds(pid)
        relay_cpu_before = stack.cpu_seconds(self.relay.pid)
        generator_cpu_before = [stack.cpu_seconds(p) for p in generators.pids]
        machine_before = stack.cpu_times()
        started = time.monotonic()
        deadline = started + config.phase_timeout
        commits: list[float] = []
        for index in range(0, events, batch):
            if rate is not None:
                delay = started + index / rate - time.monotonic()
                if delay > 0:
                    time.sleep(delay)
            size = min(batch, events - index)
            committed = population.publish_events(
                first + index, size, self.people, mixed=self.allowed_users if self.mixed else None
            )
            commits.extend([committed] * size)
            if time.monotonic() > deadline:
                break
        published_in = commits[-1] - started
        if self.mixed:  # all the allowed users are connected: each user event has its one
            common, personal = audiences.due(first, first + len(commits), len(self.allowed_users))
            expected = common * self.recipients + sum(personal.values())
        else:
            expected = len(commits) * self.recipients
        ended, received, changed_at = "complete", -1, time.monotonic()
        while True:
            progress: list[Progress] = generators.ask("progress")
            now = time.monotonic()
            total = sum(p.received for p in progress)
            if total >= expected:
                break
            if total != received:
                received, changed_at = total, now
            elif now - changed_at > config.stall_seconds:
                ended = "stalled"
                break
            if now > deadline:
                ended = "deadline"
                break
            time.sleep(POLL_SECONDS)
        finished = time.monotonic()
        machine_busy = stack.busy_shares(machine_before, stack.cpu_times())
        counted = self.counted()
        delays = stack.histogram(counted, DELAYS)
        writes = counted.get(WRITES, 0) - counted_before.get(WRITES, 0) if counted else None
        cpu = stack.cpu_seconds(pid) - cpu_before
        relay_cpu = stack.cpu_seconds(self.relay.pid) - relay_cpu_before
        generator_cpu = [
            stack.cpu_seconds(p) - before
            for p, before in zip(generators.pids, generator_cpu_before, strict=True)
        ]
        parts: list[WindowReport] = generators.ask(
            "report", [commits] * len(generators.pipes), timeout=300
        )
        latencies = list(heapq.merge(*(array("d", part.latencies) for part in parts)))
        # The relay's part of the latency: from commit to a place in the log.
        wall = time.time() - time.monotonic()
        logged = population.log_times(first, first + len(commits))
        to_log = sorted(
            logged[first + i] - (committed + wall)
            for i, committed in enumerate(commits)
            if first + i in logged
        )
        delivered = sum(part.received for part in parts)
        last_receipt = max(part.last_receipt for part in parts)
        first_receipt = min((p.first_receipt for p in parts if p.received), default=0.0)
        dropped: Counter[int] = Counter()
        for part in parts:
            dropped.update(part.dropped)
        # From the first delivery to the last: what the server sustained once
        # events reached it, without the publishing path's latency.
        span = last_receipt - first_receipt if delivered else 0.0
        return {
            "first": first,
            "events": len(commits),
            "rate": rate,
            "batch": batch,
            "published_per_second": len(commits) / published_in if published_in > 0 else None,
            "expected": sum(part.expected for part in parts),
            "received": delivered,
            "missing": sum(part.missing for part in parts),
            "duplicates": sum(part.duplicates for part in parts),
            "unexpected": sum(part.unexpected for part in parts),
            "late": sum(part.late for part in parts),
            "dropped": {str(code): n for code, n in dropped.items()},
            "ended": ended,
            "seconds": finished - started,
            "deliveries_per_second": delivered / span if span > 0 else None,
            "cpu_seconds": cpu,
            "cpu_ms_per_1000": cpu * 1e6 / delivered if delivered else None,
            # The broadcaster's writes (a write carries each client all it is
            # due at once), to set against the floor (bench.floor).
            "writes": writes,
            "cpu_us_per_write": cpu * 1e6 / writes if writes else None,
            "delivery_seconds": span,
            "server_cpu_share": cpu / (finished - started),
            # Over the deliveries' span: near 1.0, the server was the bottleneck.
            "server_busy": min(1.0, cpu / span) if span > 0 else None,
            "generator_cpu_share": max(generator_cpu) / (finished - started),
            # The relay moved these events from the outbox to the event log,
            # within the same span (it idles once they are in Redis).
            "relay_cpu_ms_per_event": relay_cpu * 1000 / len(commits),
            "relay_cpu_share": relay_cpu / (finished - started),
            # Whoever used them (the server's is its own): a CPU near 1.0 is a bottleneck.
            "cpu_busy": machine_busy,
            "latency": {
                "p50": percentile(latencies, 50),
                "p95": percentile(latencies, 95),
                "p99": percentile(latencies, 99),
                "max": latencies[-1] if latencies else None,
                # Growing from the first events to the last: a backlog, not keeping up.
                "p50_first_tenth": median(part.first_tenth_p50 for part in parts),
                "p50_last_tenth": median(part.last_tenth_p50 for part in parts),
                # Commit to the relay's write, to the millisecond: what is left
                # of the latency is the server's and the generator's.
                "to_log_p50": percentile(to_log, 50),
                "to_log_p99": percentile(to_log, 99),
                # The broadcaster's own (its histogram: the bucket's upper bound),
                # from the log to the end of the write to every recipient.
                "written_p50": report.bucket_percentile(delays_before, delays, 50),
                "written_p99": report.bucket_percentile(delays_before, delays, 99),
                "written_events": (delays[-1][1] - delays_before[-1][1]) if delays else None,
            },
        }

    def counted(self) -> dict[str, float]:
        """The broadcaster's metrics now (its delays and writes); the baseline has none."""
        if not self.ours or self.process is None:
            return {}
        return stack.metrics(self.process)


def ranks(allowed: list[bool]) -> list[int]:
    """Each client's rank among the allowed ones (bench.audiences); -1 if not allowed."""
    found, rank = [], 0
    for ok in allowed:
        found.append(rank if ok else -1)
        rank += ok
    return found


def median(values: Iterable[float | None]) -> float | None:
    present = sorted(value for value in values if value is not None)
    return percentile(present, 50)


def _floor_line(bare: Record) -> str:
    return (
        f"\n--- floor: a bare send() of {bare['write_bytes']} bytes to each of "
        f"{bare['connections']:,} clients, {bare['writes']:,} writes: "
        f"{bare['cpu_us_per_write']:.1f} µs of CPU each ({bare['short_writes']} short)"
    )


def _connect_line(what: str, connected: Record, count: int) -> str:
    return (
        f"{what} {connected['accepted']:,} of {count:,} in {connected['seconds']:.1f} s, "
        f"{connected['concurrency']:,} at once "
        f"(refused {connected['refused']:,}, failed {sum(connected['failures'].values()):,})"
    )


def _phase_line(name: str, phase: dict[str, Any]) -> str:
    latency = phase["latency"]

    def ms(seconds: float | None) -> str:
        return "—" if seconds is None else f"{seconds * 1000:.1f} ms"

    busy = ", ".join(f"{cpu} {share:.0%}" for cpu, share in phase["cpu_busy"].items())
    return (
        f"{name}: {phase['events']} events, {phase['received']:,} of {phase['expected']:,} "
        f"deliveries ({phase['ended']}, {phase['seconds']:.1f} s), p99 {ms(latency['p99'])} "
        f"(p50 {ms(latency['p50_first_tenth'])} for the first tenth of events, "
        f"{ms(latency['p50_last_tenth'])} for the last); server CPU "
        f"{phase['server_cpu_share']:.0%}, generator CPU {phase['generator_cpu_share']:.0%}, "
        f"CPUs busy: {busy}"
    )
