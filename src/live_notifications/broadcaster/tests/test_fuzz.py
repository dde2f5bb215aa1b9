"""A bounded run of each fuzz target (:mod:`.fuzz`); ``make fuzz`` runs them longer."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.servers import PYTHONPATH, ROOT

#: Inputs per target: enough for the seeds and a few thousand mutations of
#: them, in seconds. A count, not a time: the same work on any machine.
RUNS = {"request": 20_000, "frames": 3_000}


@pytest.mark.parametrize("target", sorted(RUNS))
def test_fuzz_target_finds_nothing(target: str, tmp_path: Path) -> None:
    runs = RUNS[target]
    flags = [f"-runs={runs}", "-seed=1", f"-artifact_prefix={tmp_path}/"]
    result = subprocess.run(
        [sys.executable, "-m", "live_notifications.broadcaster.tests.fuzz", target, *flags],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": PYTHONPATH},
        capture_output=True,
        text=True,
        check=False,
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-5000:]
    assert f"Done {runs} runs" in output, output[-5000:]
