"""`scripts/check`, the script CI runs: a failing step stops the run with a non-zero exit.

Each tool is replaced by a stand-in first on PATH that records how it was called and fails when
told to, so the script's own control flow is what is tested (in milliseconds, touching nothing).
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
TOOLS = ("ruff", "mypy", "buf", "pytest")
# Every step of the script, in its order, as the stand-ins see it called.
STEPS = (
    "ruff format",
    "ruff check",
    "mypy -p",
    "mypy tests",
    "buf lint",
    "buf breaking",
    "pytest",
)

STAND_IN = """#!/bin/sh
line="$(basename "$0") $*"
echo "$line" >> "$CHECK_LOG"
if [ -n "$FAIL_ON" ]; then
    case "$line" in "$FAIL_ON"*) exit 3 ;; esac
fi
exit 0
"""


def run_check(tmp_path: Path, fail_on: str) -> tuple[int, list[str]]:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    for tool in TOOLS:
        stand_in = bin_dir / tool
        stand_in.write_text(STAND_IN)
        stand_in.chmod(0o755)
    log = tmp_path / "calls.log"
    log.unlink(missing_ok=True)
    env = {k: v for k, v in os.environ.items() if k != "BUF"}
    env.update(PATH=f"{bin_dir}:{env['PATH']}", CHECK_LOG=str(log), FAIL_ON=fail_on)
    result = subprocess.run(
        ["bash", str(ROOT / "scripts" / "check")], env=env, capture_output=True, timeout=60
    )
    calls = log.read_text().splitlines() if log.exists() else []
    return result.returncode, calls


def test_check_runs_every_step_in_order_and_passes_when_all_pass(tmp_path: Path) -> None:
    code, calls = run_check(tmp_path, fail_on="")
    assert code == 0
    assert [next(s for s in STEPS if c.startswith(s)) for c in calls] == list(STEPS)


@pytest.mark.parametrize("failing", STEPS)
def test_check_stops_with_non_zero_exit_when_one_step_fails(tmp_path: Path, failing: str) -> None:
    code, calls = run_check(tmp_path, fail_on=failing)
    assert code == 3, f"scripts/check exited {code} although `{failing}` failed"
    # Nothing after the failing step ran: the failure stopped the run where it happened.
    assert calls[-1].startswith(failing)
    assert len(calls) == STEPS.index(failing) + 1
