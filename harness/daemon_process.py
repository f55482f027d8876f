"""A real `tailhubd` of one's own (tests and benchmarks): `python -m tailhub.daemon --home
HOME` in a process group of its own, ready once it accepts connections on its socket."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from harness import readings
from harness.processes import REPO, Owned, exited, kill_group, python_module
from harness.waiting import wait_until
from tailhub.client import Client, StatePaths
from tailhub.client._daemon import is_listening

START_TIMEOUT = 30.0
STOP_TIMEOUT = 30.0


class DaemonExited(RuntimeError):
    """The daemon exited before it listened; the message holds its code and its log."""


@dataclass
class DaemonProcess(Owned):
    """One tailhubd, started by `start()` (or `with`) once it listens; `close()` (the end of
    the `with`) stops it and kills whatever is left of its process group.

    With a `prefix`, it runs under that command: one that execs it (`prlimit ...`, `ip netns
    exec NS`) or one it runs as a child of (`py-spy record ... --`). `pid` is then the
    daemon's own (from its pid file), and `stop()` signals the daemon, letting the prefix end.
    Every start writes a log of its own beside HOME (`HOME-daemon-N.log`).
    """

    home: Path
    args: Sequence[str] = ()
    # Added to this process's environment for the daemon (fault injection, TAILHUB_CONFIG...).
    env: Mapping[str, str] | None = None
    prefix: Sequence[str] = ()
    process: subprocess.Popen[bytes] | None = None
    log_files: list[Path] = field(default_factory=list)
    _pid: int | None = None

    @property
    def paths(self) -> StatePaths:
        return StatePaths(self.home)

    @property
    def address(self) -> str:
        return self.paths.address

    @property
    def log_path(self) -> Path:
        """The log of the latest start."""
        if not self.log_files:
            raise RuntimeError("the daemon is not started")
        return self.log_files[-1]

    @property
    def pid(self) -> int:
        """The daemon's own process id (under a prefix, not the prefix's)."""
        if self.process is None:
            raise RuntimeError("the daemon is not started")
        return self._pid or self.process.pid

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def start(self) -> None:
        """Starts it; returns once it listens. DaemonExited when it exits first; TimeoutError
        (and it is killed) when it neither listens nor exits in time."""
        process = self._launch()
        if exited(process):
            code = kill_group(process)
            raise DaemonExited(
                f"tailhubd exited with {code} before it listened:\n{self.log_text()}"
            )

    def start_as_service(self, mendable: Sequence[int] = (6,), timeout: float = 60.0) -> int:
        """Starts it as its service manager would (examples/systemd: Restart=on-failure):
        started again after an exit that a restart can mend (6: the cluster's Redis did
        not answer in time), until it serves; any other exit fails. Returns how many
        starts it took."""
        deadline = time.monotonic() + timeout
        starts = 1
        while exited(process := self._launch()):
            code = kill_group(process)
            why = f"daemon exited {code} after {starts} starts: {self.log_text()}"
            assert code in mendable, why
            assert time.monotonic() < deadline, why
            starts += 1
        return starts

    def _launch(self) -> subprocess.Popen[bytes]:
        """Starts the process; returns once it listens or has exited (left unreaped)."""
        self.home.parent.mkdir(parents=True, exist_ok=True)
        log_path = self.home.parent / f"{self.home.name}-daemon-{len(self.log_files)}.log"
        self.log_files.append(log_path)
        self._pid = None
        with open(log_path, "wb") as log:
            self.process = process = subprocess.Popen(
                [
                    *self.prefix,
                    *python_module("tailhub.daemon", "--home", str(self.home), *self.args),
                ],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=REPO,
                env={**os.environ, **(self.env or {})},
                start_new_session=True,
            )
        try:
            wait_until(
                lambda: is_listening(self.paths) or exited(process),
                START_TIMEOUT,
                "the daemon to listen",
            )
        except BaseException:
            kill_group(process)
            raise
        if self.prefix and not exited(process):
            self._pid = int(self.paths.pid.read_text().split()[0])
        return process

    def stop(self, timeout: float = STOP_TIMEOUT) -> int:
        """SIGTERM, then wait: the clean stop a user gets from `tailhub daemon stop`; returns
        its exit code. One that does not stop in time is killed (never left behind) and
        TimeoutError raised. Whatever it left in its process group is killed."""
        process = self._started()
        if not exited(process):
            self._signal(signal.SIGTERM)
        try:
            wait_until(lambda: exited(process), timeout, "the daemon to stop")
        finally:
            code = kill_group(process)
        return code

    def kill(self) -> None:
        """kill -9 of the daemon alone, as a crash ends it: no chance to clean up."""
        process = self._started()
        if not exited(process):
            self._signal(signal.SIGKILL)
        process.wait(STOP_TIMEOUT)

    def restart(self) -> None:
        self.stop()
        self.start()

    def close(self) -> None:
        """The end, whatever happened: stopped if it runs (killed if it does not stop)."""
        if self.process is not None:
            with contextlib.suppress(TimeoutError):  # (then it was killed)
                self.stop()

    def client(self) -> Client:
        return Client.connect(self.paths, autostart=False)

    def log_text(self) -> str:
        """What every start of it wrote to its logs."""
        return "\n".join(
            path.read_text(errors="replace") for path in self.log_files if path.exists()
        )

    def cpu(self) -> readings.CpuTimes:
        return readings.cpu_times(self.pid)

    def rss_bytes(self) -> int:
        return readings.rss_bytes(self.pid)

    def peak_rss(self) -> int:
        return readings.peak_rss_bytes(self.pid)

    def open_fds(self) -> int:
        return readings.open_fds(self.pid)

    def _signal(self, signum: int) -> None:
        """To the daemon itself (under a prefix, it may have ended before the prefix)."""
        with contextlib.suppress(ProcessLookupError):
            os.kill(self.pid, signum)

    def _started(self) -> subprocess.Popen[bytes]:
        if self.process is None:
            raise RuntimeError("the daemon is not started")
        return self.process
