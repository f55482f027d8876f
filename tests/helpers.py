"""Shared test helpers: a real daemon process on a real socket, the real CLI, and waiting
for conditions with a deadline (never a bare sleep)."""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from harness import daemon_process, waiting

# Written once, for the benchmarks too (harness/): the daemon a test starts, and waiting.
DaemonProcess = daemon_process.DaemonProcess
wait_until = waiting.wait_until


def one_line(stderr: bytes, prefix: str) -> str:
    """The single line a refusal prints (no traceback, no log noise), starting with `prefix`."""
    text = stderr.decode(errors="replace")
    assert "Traceback" not in text, text
    lines = text.strip().splitlines()
    assert len(lines) == 1, text
    assert lines[0].startswith(prefix), text
    return lines[0]


def cli_env(home: Path) -> dict[str, str]:
    env = dict(os.environ)
    env["TAILHUB_HOME"] = str(home)
    return env


def run_cli(
    home: Path,
    *args: str,
    timeout: float = 120.0,
    input: bytes | None = None,
    cwd: Path | None = None,
) -> subprocess.CompletedProcess[bytes]:
    """Runs `tailhub ARGS` as a user would and returns what it printed and its exit code."""
    return subprocess.run(
        [sys.executable, "-m", "tailhub.client", *args],
        env=cli_env(home),
        capture_output=True,
        timeout=timeout,
        input=input,
        cwd=cwd,
    )


def start_cli(home: Path, *args: str, cwd: Path | None = None) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "tailhub.client", *args],
        env=cli_env(home),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        cwd=cwd,
    )


@dataclass
class BackgroundCli:
    """`tailhub ARGS` running in the background with its output going to files, so a test can
    watch what it has printed so far (a pipe nobody reads would only show it at the end)."""

    process: subprocess.Popen[bytes]
    stdout_path: Path
    stderr_path: Path

    @property
    def stdout(self) -> bytes:
        return self.stdout_path.read_bytes()

    @property
    def stderr(self) -> str:
        return self.stderr_path.read_text(errors="replace")

    def wait_for_stdout(self, expected: bytes, timeout: float = 20.0) -> None:
        """Waits until it has printed as much as `expected`; then it must be exactly that."""
        wait_until(
            lambda: len(self.stdout) >= len(expected) or self.process.poll() is not None,
            timeout,
            f"{len(expected)} bytes on stdout (have {len(self.stdout)})",
        )
        assert self.stdout == expected, f"stdout differs; stderr: {self.stderr}"

    def wait(self, timeout: float = 60.0) -> int:
        return self.process.wait(timeout)

    def stop(self) -> None:
        """Kills it if it still runs (a failed test must not leave it behind)."""
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait(30)


def start_background_cli(home: Path, directory: Path, *args: str) -> BackgroundCli:
    directory.mkdir(parents=True, exist_ok=True)
    index = len(list(directory.glob("cli-*.out")))
    stdout_path = directory / f"cli-{index}.out"
    stderr_path = directory / f"cli-{index}.err"
    with open(stdout_path, "wb") as stdout, open(stderr_path, "wb") as stderr:
        process = subprocess.Popen(
            [sys.executable, "-m", "tailhub.client", *args],
            env=cli_env(home),
            stdin=subprocess.DEVNULL,
            stdout=stdout,
            stderr=stderr,
        )
    return BackgroundCli(process, stdout_path, stderr_path)
