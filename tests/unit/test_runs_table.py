"""`python -m bench.runs_table`: several full runs side by side, as docs/performance.md holds
them. Each run's figure lands in its own column; a quick run is refused."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from bench.runs_table import load_run, runs_table, targets_table


def result(commit: str, load: float, figure: str, passed: bool, quick: bool = False) -> Any:
    return {
        "meta": {
            "quick": quick,
            "commit": commit,
            "started": "2026-12-07T15:00:37+0000",
            "wall_s": 900.0,
            "loadavg_start": [load, 0, 0],
            "loadavg_end": [load + 1, 0, 0],
        },
        "scenarios": {
            "fanout": {
                "status": "ok",
                "machine": {"capacity_cpu_s": 200.0, "other_cpu_s": 50.0},
            },
        },
        "targets": [{"target": "p99 <= 2 s", "figure": figure, "passed": passed}],
    }


def test_each_runs_figures_are_in_its_own_column() -> None:
    runs = [result("aaa1111", 2.5, "1,800 ms", True), result("bbb2222", 9.0, "15 s", False)]
    lines = runs_table(runs) + targets_table(runs)
    assert "| commit | `aaa1111` | `bbb2222` |" in lines
    assert "| load average (1 min), start → end | 2.5 → 3.5 | 9.0 → 10.0 |" in lines
    assert "| other processes' CPU during `fanout` | 25% | 25% |" in lines
    assert "| p99 <= 2 s | PASS: 1,800 ms | MISS: 15 s |" in lines


def test_a_quick_run_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "quick.json"
    path.write_text(json.dumps(result("aaa1111", 1.0, "1 s", True, quick=True)))
    with pytest.raises(SystemExit, match="a --quick run"):
        load_run(path)
