"""Figures out of raw counts: percentiles, the tables on stdout, the JSON lines."""

from __future__ import annotations

import datetime
import json
import math
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

Record = dict[str, Any]


def percentile(ordered: Sequence[float], p: float) -> float | None:
    """The nearest-rank ``p``-th percentile of sorted ``ordered``; ``None`` if empty."""
    if not ordered:
        return None
    return ordered[min(len(ordered) - 1, max(0, math.ceil(p / 100 * len(ordered)) - 1))]


def bucket_percentile(
    before: Sequence[tuple[float, float]], after: Sequence[tuple[float, float]], p: float
) -> float | None:
    """The ``p``-th percentile of what a Prometheus histogram counted between two
    readings, as the upper bound of its bucket (an "at most"); ``None`` if nothing."""
    earlier = dict(before)
    counts = [(bound, n - earlier.get(bound, 0)) for bound, n in after]
    total = counts[-1][1] if counts else 0
    if total <= 0:
        return None
    return next(bound for bound, n in counts if n >= p / 100 * total)


def append(directory: Path, records: Iterable[Record]) -> Path:
    """Append ``records`` to ``directory/<UTC date>.jsonl``; return its path."""
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"{datetime.datetime.now(datetime.UTC):%Y-%m-%d}.jsonl"
    with path.open("a") as file:
        for record in records:
            file.write(json.dumps(record, sort_keys=True) + "\n")
    return path


def load(paths: Iterable[Path]) -> list[Record]:
    records = []
    for path in paths:
        for line in path.read_text().splitlines():
            if line.strip():
                records.append(json.loads(line))
    return records


# Tables, in Markdown: readable on a terminal, pasted as they are in docs.


def _number(value: float | None, digits: int = 0) -> str:
    if value is None:
        return "—"
    return f"{value:,.{digits}f}"


def _ms(seconds: float | None) -> str:
    if seconds is None:
        return "—"
    milliseconds = seconds * 1000
    return f"{milliseconds:,.0f}" if milliseconds >= 100 else f"{milliseconds:.1f}"


def _share(value: float | None) -> str:
    return "—" if value is None else f"{value:.0%}"


def _table(header: Sequence[str], rows: Iterable[Sequence[str]]) -> str:
    rows = [list(row) for row in rows]
    widths = [max(len(cell) for cell in column) for column in zip(header, *rows, strict=True)]

    def line(cells: Sequence[str]) -> str:
        return (
            "| " + " | ".join(cell.ljust(w) for cell, w in zip(cells, widths, strict=True)) + " |"
        )

    return "\n".join(
        [line(header), "| " + " | ".join("-" * w for w in widths) + " |", *map(line, rows)]
    )


def connections_table(records: Sequence[Record]) -> str:
    return _table(
        [
            "server",
            "clients",
            "accepted",
            "refused",
            "failed",
            "connect+auth /s",
            "server CPU ms / connection",
            "KiB / connection",
            "peak RSS MiB",
        ],
        (
            [
                r["server"],
                _number(r["connections"]),
                _number(r["accepted"]),
                _number(r["refused"]),
                _number(sum(r["failures"].values())),
                _number(r["connect_per_second"]),
                _number(r["connect_cpu_ms_per_connection"], 2),
                _number(r["rss_per_connection_kib"], 1),
                _number(r["rss_peak_kib"] / 1024),
            ]
            for r in records
        ),
    )


def storm_table(records: Sequence[Record]) -> str:
    """The reconnect storm: every client back at once, its user known from before."""
    rows = []
    for r in records:
        storm = r.get("storm")
        if storm is None:
            continue
        rows.append(
            [
                r["server"],
                _number(r["connections"]),
                _number(storm["concurrency"]),
                _number(storm["accepted"]),
                _number(storm["refused"]),
                _number(sum(storm["failures"].values())),
                f"{storm['seconds']:.1f}",
                _number(storm["per_second"]),
                _number(storm["cpu_ms_per_connection"], 2),
                _number(r["rss_after_kib"] / 1024),
                _number(storm["rss_after_kib"] / 1024),
            ]
        )
    return _table(
        [
            "server",
            "clients",
            "at once",
            "accepted",
            "refused",
            "failed",
            "seconds",
            "reconnect+auth /s",
            "server CPU ms / connection",
            "RSS MiB before",
            "RSS MiB after",
        ],
        rows,
    )


PHASES = ("paced", "saturated")
#: The first columns of a table with a row per phase: which run, which phase.
PHASE_HEADER = ("server", "clients", "phase", "events")


def _phases(records: Sequence[Record]) -> Iterator[tuple[Record, Record, list[str]]]:
    """Each phase of each record, with its cells under :data:`PHASE_HEADER`."""
    for r in records:
        for name in PHASES:
            phase = r.get(name)
            if phase is None:
                continue
            events = f"{_number(phase['events'])} at {_number(phase['published_per_second'])}/s"
            yield r, phase, [r["server"], _number(r["connections"]), name, events]


def deliveries_table(records: Sequence[Record]) -> str:
    rows = []
    for _, phase, cells in _phases(records):
        latency = phase["latency"]
        rows.append(
            [
                *cells,
                _number(phase["deliveries_per_second"]),
                _number(phase["cpu_ms_per_1000"], 1),
                _share(phase.get("server_busy")),
                _number(phase["missing"]),
                _number(phase["duplicates"]),
                _ms(latency["p50"]),
                _ms(latency["p95"]),
                _ms(latency["p99"]),
                _ms(latency["max"]),
                _share(phase["generator_cpu_share"]),
            ]
        )
    return _table(
        [
            *PHASE_HEADER,
            "deliveries /s",
            "server CPU ms / 1,000",
            "server busy",
            "lost",
            "dup.",
            "p50 ms",
            "p95 ms",
            "p99 ms",
            "max ms",
            "generator CPU",
        ],
        rows,
    )


def relay_table(records: Sequence[Record]) -> str:
    """The relay's share of each phase: the same events, whichever server fans them out."""
    rows = []
    for r, phase, cells in _phases(records):
        if "relay_cpu_ms_per_event" not in phase:
            continue  # a record from before the relay was measured
        rows.append(
            [
                *cells,
                _number(phase["relay_cpu_ms_per_event"], 2),
                _share(phase["relay_cpu_share"]),
                _number(r["relay_rss_kib"] / 1024),
                _number(r["relay_rss_peak_kib"] / 1024),
                _ms(phase["latency"].get("to_log_p50")),
                _ms(phase["latency"].get("to_log_p99")),
            ]
        )
    return _table(
        [
            *PHASE_HEADER,
            "relay CPU ms / event",
            "relay CPU",
            "relay RSS MiB",
            "relay peak RSS MiB",
            "commit to log p50 ms",
            "commit to log p99 ms",
        ],
        rows,
    )


def latency_table(records: Sequence[Record]) -> str:
    """Where each phase's p99 went: to the log (the relay), to the last write (the
    server's histogram, an "at most"), and to the client's receipt (all of it)."""
    rows = []
    for _, phase, cells in _phases(records):
        latency = phase["latency"]
        written = latency.get("written_p99")
        rows.append(
            [
                *cells,
                _ms(latency["to_log_p99"]),
                "—" if written is None else f"≤ {_ms(written)}",
                _ms(latency["p99"]),
            ]
        )
    return _table([*PHASE_HEADER, "commit to log", "log to written", "commit to receipt"], rows)


def writes_table(records: Sequence[Record]) -> str:
    """The broadcaster's CPU per write against the floor: a bare ``send()`` of about
    the same bytes to as many clients on the same CPU (:mod:`bench.floor`)."""
    rows = []
    for r, phase, cells in _phases(records):
        writes = phase.get("writes")
        if not writes:
            continue  # the baseline, which counts no writes, or a record from before
        floor = r.get("floor") or {}
        rows.append(
            [
                *cells,
                _number(writes),
                _number(phase["received"] / writes, 1),
                _number(phase["cpu_us_per_write"], 1),
                _number(floor.get("cpu_us_per_write"), 1),
            ]
        )
    return _table(
        [*PHASE_HEADER, "writes", "events / write", "server CPU µs / write", "floor µs / write"],
        rows,
    )


#: The site's table: each column's header, and its cell for a token record.
TOKEN_COLUMNS: tuple[tuple[str, Callable[[Record], str]], ...] = (
    ("workers", lambda r: _number(r["workers"])),
    ("requests", lambda r: _number(r["requests"])),
    ("at once", lambda r: _number(r["concurrency"])),
    ("200", lambda r: _number(r["statuses"].get("200", 0))),
    ("other status", lambda r: _number(sum(n for k, n in r["statuses"].items() if k != "200"))),
    ("failed", lambda r: _number(sum(r["failures"].values()))),
    ("wrong user", lambda r: _number(r["wrong"])),
    ("seconds", lambda r: f"{r['seconds']:.1f}"),
    ("tokens /s", lambda r: _number(r["per_second"])),
    ("CPU ms / token", lambda r: _number(r["cpu_ms_per_token"], 2)),
    ("web busy", lambda r: _share(r["server_busy"])),
    ("p50 ms", lambda r: _ms(r["latency"]["p50"])),
    ("p99 ms", lambda r: _ms(r["latency"]["p99"])),
    ("max ms", lambda r: _ms(r["latency"]["max"])),
    ("RSS MiB idle", lambda r: _number(r["rss_idle_kib"] / 1024)),
    ("RSS MiB after", lambda r: _number(r["rss_after_kib"] / 1024)),
    ("peak RSS MiB", lambda r: _number(r["rss_peak_kib"] / 1024)),
)


def tokens_table(records: Sequence[Record]) -> str:
    """The site's share of a storm: one token request per logged-in session."""
    return _table(
        [header for header, _ in TOKEN_COLUMNS],
        ([cell(r) for _, cell in TOKEN_COLUMNS] for r in records),
    )


def at_the_floor(record: Record) -> float | None:
    """µs per paced delivery of a server that spends only the floor on each of
    ``record``'s writes: the least any server writing as often could spend."""
    paced: Record = record.get("paced") or {}
    floor = (record.get("floor") or {}).get("cpu_us_per_write")
    if not floor or not paced.get("writes") or not paced.get("received"):
        return None
    return float(floor * paced["writes"] / paced["received"])


def ratios_table(records: Sequence[Record], *, subject: str, reference: str) -> str:
    """``reference`` / ``subject`` for each figure, at each connection count both ran."""
    by_key = {(r["server"], r["connections"]): r for r in records}
    rows = []
    for connections in sorted({r["connections"] for r in records}):
        ours, theirs = by_key.get((subject, connections)), by_key.get((reference, connections))
        if ours is None or theirs is None:
            continue

        def ratio(value: float | None, other: float | None) -> str:
            if not value or not other:
                return "—"
            return f"{value / other:.1f}×"  # noqa: RUF001 - a multiplication sign

        def phase(record: Record, name: str, key: str) -> float | None:
            figures: Record = record.get(name) or {}
            value = figures.get("latency", {}).get(key) if key == "p99" else figures.get(key)
            return None if value is None else float(value)

        rows.append(
            [
                _number(connections),
                ratio(
                    phase(theirs, "saturated", "cpu_ms_per_1000"),
                    phase(ours, "saturated", "cpu_ms_per_1000"),
                ),
                ratio(
                    phase(theirs, "paced", "cpu_ms_per_1000"),
                    phase(ours, "paced", "cpu_ms_per_1000"),
                ),
                ratio(phase(theirs, "paced", "cpu_ms_per_1000"), at_the_floor(ours)),
                ratio(theirs["rss_per_connection_kib"], ours["rss_per_connection_kib"]),
                ratio(ours["connect_per_second"], theirs["connect_per_second"]),
                ratio(
                    phase(ours, "saturated", "deliveries_per_second"),
                    phase(theirs, "saturated", "deliveries_per_second"),
                ),
                ratio(phase(theirs, "paced", "p99"), phase(ours, "paced", "p99")),
                ratio(phase(ours, "storm", "per_second"), phase(theirs, "storm", "per_second")),
            ]
        )
    return _table(
        [
            "clients",
            "CPU / delivery, saturated",
            "CPU / delivery, paced",
            "paced, at most (floor)",
            "memory / connection",
            "connect+auth rate",
            "deliveries /s, saturated",
            "p99 latency, paced",
            "reconnect storm rate",
        ],
        rows,
    )


def mixed_table(records: Sequence[Record]) -> str:
    """The mixed-audience run against the admin changes' run, at each count both ran:
    CPU per delivery and memory per connection, and the difference in percent."""
    by_key = {(r["server"], r["connections"]): r for r in records}
    rows = []
    for connections in sorted({r["connections"] for r in records}):
        plain, mixed = (
            by_key.get(("broadcaster", connections)),
            by_key.get(("broadcaster-mixed", connections)),
        )
        if plain is None or mixed is None:
            continue

        def compare(first: float | None, second: float | None, unit: str) -> str:
            if first is None or second is None or not first:
                return "—"
            return f"{first:.2f} → {second:.2f} {unit} ({(second / first - 1) * 100:+.0f} %)"

        def per_delivery(record: Record, phase: str) -> float | None:
            value = (record.get(phase) or {}).get("cpu_ms_per_1000")
            return None if value is None else float(value)  # ms per 1,000 = µs per delivery

        faults = sum(
            (mixed.get(phase) or {}).get(key, 0)
            for phase in ("paced", "saturated")
            for key in ("missing", "duplicates", "unexpected")
        )
        rows.append(
            [
                _number(connections),
                compare(per_delivery(plain, "saturated"), per_delivery(mixed, "saturated"), "µs"),
                compare(per_delivery(plain, "paced"), per_delivery(mixed, "paced"), "µs"),
                compare(plain["rss_per_connection_kib"], mixed["rss_per_connection_kib"], "KiB"),
                _number(faults),
            ]
        )
    return _table(
        [
            "clients",
            "CPU / delivery, saturated",
            "CPU / delivery, paced",
            "memory / connection",
            "mixed: lost + duplicated + outside the audience",
        ],
        rows,
    )
