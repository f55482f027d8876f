"""Shared test helpers: a real daemon process on a real socket, the real CLI, and waiting
for conditions with a deadline (never a bare sleep)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from harness import waiting
from tailhub.client import Client, StatePaths
from tailhub.client._daemon import is_listening

DAEMON_START_TIMEOUT = 20.0
# Written once, for the benchmarks too (harness/waiting.py).
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
class DaemonProcess:
    """A tailhubd started by a test, in the foreground of a subprocess."""

    home: Path
    args: Sequence[str] = ()
    process: subprocess.Popen[bytes] | None = None
    log_files: list[Path] = field(default_factory=list)
    # Added to the test's environment (fault injection).
    env: dict[str, str] | None = None
    # Run under this command (`ip netns exec NS`).
    prefix: Sequence[str] = ()

    @property
    def paths(self) -> StatePaths:
        return StatePaths(self.home)

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def start(self) -> None:
        process = self._launch()
        assert process.poll() is None, f"daemon exited: {self.log_text()}"

    def start_as_service(self, mendable: Sequence[int] = (6,), timeout: float = 60.0) -> int:
        """Starts it as its service manager would (examples/systemd: Restart=on-failure):
        started again after an exit that a restart can mend (6: the cluster's Redis did
        not answer in time), until it serves; any other exit fails the test. Returns how
        many starts it took."""
        deadline = time.monotonic() + timeout
        starts = 1
        while (process := self._launch()).poll() is not None:
            why = f"daemon exited {process.returncode} after {starts} starts: {self.log_text()}"
            assert process.returncode in mendable, why
            assert time.monotonic() < deadline, why
            starts += 1
        return starts

    def _launch(self) -> subprocess.Popen[bytes]:
        """Starts the process; returns once it listens or has exited."""
        log_path = self.home.parent / f"{self.home.name}-daemon-{len(self.log_files)}.log"
        self.log_files.append(log_path)
        with open(log_path, "wb") as log:
            self.process = subprocess.Popen(
                [
                    *self.prefix,
                    sys.executable,
                    "-m",
                    "tailhub.daemon",
                    "--home",
                    str(self.home),
                    *self.args,
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
                env={**os.environ, **(self.env or {})},
            )
        process = self.process
        wait_until(
            lambda: is_listening(self.paths) or process.poll() is not None,
            DAEMON_START_TIMEOUT,
            "the daemon to listen",
        )
        return process

    def stop(self, timeout: float = 30.0) -> int:
        """SIGTERM, then wait: the clean stop a user gets from `tailhub daemon stop`. One that
        does not stop in time is killed (never left behind) and the test fails."""
        assert self.process is not None
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(30)
            raise

    def kill(self) -> None:
        """kill -9: no chance to clean up."""
        assert self.process is not None
        self.process.kill()
        self.process.wait(30)

    def restart(self) -> None:
        self.stop()
        self.start()

    def client(self) -> Client:
        return Client.connect(self.paths, autostart=False)

    def log_text(self) -> str:
        return "\n".join(
            path.read_text(errors="replace") for path in self.log_files if path.exists()
        )

    def rss_bytes(self) -> int:
        status = Path(f"/proc/{self.pid}/status").read_text()
        for line in status.splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
        raise AssertionError("no VmRSS")

    def open_fds(self) -> int:
        return len(os.listdir(f"/proc/{self.pid}/fd"))


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
