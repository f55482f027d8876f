"""The `tailhub` command line as a user runs it, timed: wall clock and CPU of each run."""

from __future__ import annotations

import os
import resource
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from harness.processes import REPO


def tailhub(*args: str) -> list[str]:
    """argv of the installed `tailhub` script (what users type), else `python -m`."""
    script = Path(sys.executable).parent / "tailhub"
    if script.exists():
        return [str(script), *args]
    return [sys.executable, "-m", "tailhub.client", *args]


@dataclass(frozen=True)
class Timed:
    wall_s: float
    cpu_s: float  # user + system CPU of the process
    returncode: int
    stdout: bytes
    stderr: bytes


def timed_run(argv: list[str], home: Path | None = None, timeout: float = 60.0) -> Timed:
    """Runs `argv` to completion; its CPU is read from this process's reaped-children usage."""
    env = dict(os.environ)
    if home is not None:
        env["TAILHUB_HOME"] = str(home)
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    done = subprocess.run(
        argv, env=env, capture_output=True, timeout=timeout, cwd=REPO, check=False
    )
    wall = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return Timed(wall, cpu, done.returncode, done.stdout, done.stderr)
