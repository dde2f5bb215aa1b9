"""The bench's arithmetic on records: what the tables print from the JSON lines."""

from __future__ import annotations

from bench import report


def record(server: str, **fields: object) -> report.Record:
    return {
        "server": server,
        "connections": 1000,
        "rss_per_connection_kib": 4.0,
        "connect_per_second": 100.0,
        **fields,
    }


def test_the_floor_bounds_the_paced_ratio_by_the_writes_made() -> None:
    # 2,500 deliveries in 1,000 writes at a floor of 10 µs a write: no server
    # writing as often spends less than 4 µs a delivery, so against a
    # reference at 30 µs, 7.5 times less at most; the broadcaster made 6.
    ours = record(
        "broadcaster",
        paced={"writes": 1000, "received": 2500, "cpu_ms_per_1000": 5.0},
        floor={"cpu_us_per_write": 10.0},
    )
    theirs = record("baseline", paced={"writes": None, "received": 2500, "cpu_ms_per_1000": 30.0})
    assert report.at_the_floor(ours) == 4.0
    assert report.at_the_floor(theirs) is None  # it counts no writes
    header, _, row = report.ratios_table(
        [ours, theirs], subject="broadcaster", reference="baseline"
    ).splitlines()
    cells = dict(zip(_cells(header), _cells(row), strict=True))
    assert cells["CPU / delivery, paced"] == "6.0×"  # noqa: RUF001 - a multiplication sign
    assert cells["paced, at most (floor)"] == "7.5×"  # noqa: RUF001


def test_without_a_floor_the_bound_is_not_shown() -> None:
    ours = record("broadcaster", paced={"writes": 1000, "received": 2500, "cpu_ms_per_1000": 5.0})
    theirs = record("baseline", paced={"received": 2500, "cpu_ms_per_1000": 30.0})
    header, _, row = report.ratios_table(
        [ours, theirs], subject="broadcaster", reference="baseline"
    ).splitlines()
    assert dict(zip(_cells(header), _cells(row), strict=True))["paced, at most (floor)"] == "—"


def _cells(line: str) -> list[str]:
    return [cell.strip() for cell in line.strip("|").split("|")]
