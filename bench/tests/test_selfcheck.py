"""``python -m bench`` in miniature: 20 clients, each server, every count checked.

A real run (PostgreSQL, Redis, relay, the servers, the load generator), small
enough for the unit suite: it guards that what the bench counts is what the
servers send, not how fast they are.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from bench import audiences, floor

ROOT = Path(__file__).resolve().parents[2]
CLIENTS = 20
#: Token requests to the site: each user's session twice.
TOKENS = 2 * CLIENTS


def test_every_client_receives_every_event_it_may_see_once(tmp_path: Path) -> None:
    env = {
        **os.environ,
        "PYTHONPATH": str(ROOT / "services"),
        "BENCH_CONNECTIONS": str(CLIENTS),
        "BENCH_SERVERS": "broadcaster,broadcaster-mixed,baseline",
        "BENCH_RATE": "20",
        "BENCH_SECONDS": "1",
        "BENCH_SATURATED_DELIVERIES": "200",
        "BENCH_IDLE_SECONDS": "0",
        "BENCH_PHASE_TIMEOUT": "60",
        "BENCH_TOKENS": str(TOKENS),
        "BENCH_TOKEN_CONCURRENCY": "5",
        "BENCH_WEB_WORKERS": "2",
        "BENCH_RESULTS_DIR": str(tmp_path),
        "BENCH_PLOTS_DIR": str(tmp_path),
    }
    result = subprocess.run(
        [sys.executable, "-m", "bench"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    (results,) = tmp_path.glob("*.jsonl")
    *records, site = [json.loads(line) for line in results.read_text().splitlines()]
    assert [r["server"] for r in records] == ["broadcaster", "broadcaster-mixed", "baseline"]
    phases = {"paced": 20, "saturated": 20}
    for record in records:
        server = record["server"]
        assert (record["accepted"], record["refused"], record["failures"]) == (CLIENTS, 0, {})
        # The baseline keeps websockets' default compression; the broadcaster turns it off.
        assert record["compressed"] == (CLIENTS if server == "baseline" else 0)
        for name, events in phases.items():
            phase = record[name]
            if server == "broadcaster-mixed":
                # 4 published for 3 due to each allowed client: 1 in 4 for one user.
                assert phase["events"] == round(events * 4 / 3), (server, name)
                common, personal = audiences.due(
                    phase["first"], phase["first"] + phase["events"], CLIENTS // 2
                )
                assert phase["expected"] == common * CLIENTS // 2 + sum(personal.values())
                assert sum(personal.values()) >= 6, personal
            else:
                assert phase["events"] == events, (server, name)
                assert phase["expected"] == events * CLIENTS // 2, (server, name)
            assert phase["received"] == phase["expected"], (server, name, phase)
            assert (phase["missing"], phase["duplicates"], phase["unexpected"]) == (0, 0, 0)
            assert phase["dropped"] == {}
            assert 0 < phase["latency"]["p50"] <= phase["latency"]["max"] < 60
            # The relay's part of it: every event was given its place after its
            # commit (within the millisecond the position is rounded down to).
            assert -0.001 < phase["latency"]["to_log_p50"] <= phase["latency"]["to_log_p99"]
            assert phase["latency"]["to_log_p99"] <= phase["latency"]["max"]
            # The broadcaster's histogram counted each event once, from the log to its write.
            if server.startswith("broadcaster"):
                assert phase["latency"]["written_events"] == phase["events"], phase["latency"]
                assert 0 < phase["latency"]["written_p50"] <= phase["latency"]["written_p99"]
                # Its writes: each recipient got one at least, and each carried an event or more.
                assert CLIENTS // 2 <= phase["writes"] <= phase["received"], phase
                assert phase["cpu_us_per_write"] >= 0
            else:
                assert phase["latency"]["written_p99"] is None
                assert phase["writes"] is None
        # The floor wrote to as many clients as the broadcaster's recipients, and
        # every byte of it was read on the other side.
        bare = record["floor"]
        assert bare["connections"] == CLIENTS // 2
        assert bare["writes"] == bare["connections"] * floor.ROUNDS
        assert bare["received_bytes"] == bare["writes"] * floor.WRITE_BYTES
        assert bare["short_writes"] == 0
        assert bare["cpu_us_per_write"] > 0
        assert 0 < record["relay_rss_kib"] <= record["relay_rss_peak_kib"]
        storm = record["storm"]  # every client dropped, and back with a fresh token
        assert storm["dropped"] == CLIENTS, (server, storm)
        assert (storm["accepted"], storm["refused"], storm["failures"]) == (CLIENTS, 0, {})
    # The relay moved every one of these events (each was received): it spent
    # CPU on them, counted in ticks of 10 ms, so over all phases together.
    assert sum(r[name]["relay_cpu_ms_per_event"] for r in records for name in phases) > 0
    # Every session got a token, and it is its own user's.
    assert (site["kind"], site["workers"], site["requests"]) == ("tokens", 2, TOKENS)
    assert (site["statuses"], site["failures"], site["wrong"]) == ({"200": TOKENS}, {}, 0)
    assert site["workers_replaced"] == 0
    assert site["cpu_ms_per_token"] > 0
    assert 0 < site["rss_idle_kib"] <= site["rss_peak_kib"]
    assert 0 < site["latency"]["p50"] <= site["latency"]["max"] < 60
    assert "=== web: GET /api/token/" in result.stdout
    assert "| broadcaster | 20" in result.stdout
    assert "=== reconnect storm" in result.stdout
    assert "=== relay" in result.stdout
    assert "=== latency p99 by part" in result.stdout
    assert "=== the broadcaster's writes, against the floor" in result.stdout
    assert "=== mixed audiences (bench.audiences) against admin changes only" in result.stdout
    assert {p.name for p in tmp_path.glob("*.svg")} == {
        "performance-latency.svg",
        "performance-throughput.svg",
    }
