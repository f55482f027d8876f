"""The benchmark suite runs end to end in its quick configuration (figures are not judged)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
SCENARIOS = {"fanout", "ceiling", "catchup", "ssh", "cli_latency"}


def test_quick_benchmark_runs_every_scenario_and_writes_json(tmp_path: Path) -> None:
    out = tmp_path / "bench.json"
    done = subprocess.run(
        [sys.executable, "-m", "bench", "--quick", "--json", str(out)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert done.returncode == 0, done.stderr
    assert "targets" in done.stdout

    results = json.loads(out.read_text())
    assert set(results["scenarios"]) == SCENARIOS
    statuses = {name: result["status"] for name, result in results["scenarios"].items()}
    assert statuses["ssh"].startswith("skipped:")
    assert all(statuses[name] == "ok" for name in SCENARIOS - {"ssh"}), statuses
    assert results["meta"]["quick"] is True
    assert results["targets"]
    assert all(verdict["passed"] in (True, False, None) for verdict in results["targets"])
