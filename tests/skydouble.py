"""Driving the SkyPilot contract double (tests/sky_double/sky) from tests: its state
directory, its environment, its faults and the `sky` processes it counted."""

from __future__ import annotations

import json
import os
import re
import subprocess
from pathlib import Path
from typing import Any

SKY_DOUBLE_DIR = Path(__file__).parent / "sky_double"
SKY = SKY_DOUBLE_DIR / "sky"

# What a backend parses out of `sky jobs launch` (see docs/skypilot-contract.md).
ANSI = re.compile(r"\x1b\[[0-9;]*m")
MANAGED_JOB_ID = re.compile(r"^Managed Job ID: (\d+)$", re.MULTILINE)
JOBS_SUBMITTED = re.compile(r"^Jobs submitted with IDs: ([0-9,\s-]+)\.$", re.MULTILINE)


class SkyDouble:
    """One double's state directory; `env()` puts its `sky` first on PATH."""

    def __init__(self, home: Path) -> None:
        self.home = home

    def env(self, **extra: str) -> dict[str, str]:
        env = dict(os.environ)
        env["SKY_DOUBLE_HOME"] = str(self.home)
        env["PATH"] = f"{SKY_DOUBLE_DIR}{os.pathsep}{env.get('PATH', '')}"
        env.update(extra)
        return env

    def run(self, *args: str, **extra: str) -> subprocess.CompletedProcess[str]:
        """Runs `sky ARGS` to completion (stdin closed, as for a daemon's child); `extra` are
        environment variables for this run only (SKY_DOUBLE_FAIL_LAUNCH="nocloud")."""
        return subprocess.run(
            [str(SKY), *args],
            env=self.env(**extra),
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=30.0,
        )

    def start(self, *args: str, **extra: str) -> subprocess.Popen[str]:
        return subprocess.Popen(
            [str(SKY), *args],
            env=self.env(**extra),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )

    def set_faults(self, **faults: str) -> None:
        """Faults read by every later `sky` run, whoever started it: DROP_AFTER="3", ..."""
        self.home.mkdir(parents=True, exist_ok=True)
        lines = [f"SKY_DOUBLE_{key}={value}" for key, value in faults.items()]
        (self.home / "faults.env").write_text("\n".join(lines) + "\n")

    def invocations(self) -> list[list[str]]:
        """The argv of every `sky` process started so far, in order."""
        path = self.home / "invocations.log"
        if not path.exists():
            return []
        return [json.loads(line)["argv"] for line in path.read_text().splitlines()]

    def usage(self) -> list[dict[str, Any]]:
        """What each `sky` run that ended reported: argv, cpu_s, wall_s, round_trips."""
        path = self.home / "usage.log"
        if not path.exists():
            return []
        return [json.loads(line) for line in path.read_text().splitlines()]

    def launch(self, task: Path, *args: str, **extra: str) -> int:
        """`sky jobs launch -d -y ARGS TASK`; returns the managed job id it printed."""
        done = self.run("jobs", "launch", "-d", "-y", *args, str(task), **extra)
        assert done.returncode == 0, done.stderr
        found = MANAGED_JOB_ID.search(ANSI.sub("", done.stdout))
        assert found is not None, done.stdout
        return int(found.group(1))

    def queue(self) -> dict[int, dict[str, Any]]:
        listed = self.run("jobs", "queue", "-o", "json")
        assert listed.returncode == 0, listed.stderr
        return {job["job_id"]: job for job in json.loads(listed.stdout)}
