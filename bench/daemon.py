"""The daemon under test: a real `tailhubd` subprocess on a fresh state directory."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import TracebackType

from bench.measure import CpuTimes, cpu_times, peak_rss_bytes
from bench.processes import REPO, python_module
from harness.waiting import wait_until
from tailhub.client import Client, StatePaths

START_TIMEOUT = 30.0
STOP_TIMEOUT = 30.0


class Daemon:
    """`python -m tailhub.daemon --home HOME`, started by `start()` once it accepts connections.

    With a `prefix` (`py-spy record ... --`), the daemon runs as that program's child: `pid`
    is then the daemon's own (from its pid file), and stopping it lets the prefix finish.
    """

    def __init__(
        self,
        home: Path,
        args: Sequence[str] = (),
        prefix: Sequence[str] = (),
        env: Mapping[str, str] | None = None,
    ) -> None:
        self.home = home
        # Added to this process's environment for the daemon (TAILHUB_TRACEMALLOC...).
        self.env = dict(env or {})
        self.args = tuple(args)
        self.prefix = tuple(prefix)
        self._pid: int | None = None
        self.log_path = home.parent / f"{home.name}-daemon.log"
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def paths(self) -> StatePaths:
        return StatePaths(self.home)

    @property
    def address(self) -> str:
        return self.paths.address

    @property
    def pid(self) -> int:
        if self._process is None:
            raise RuntimeError("the daemon is not started")
        if not self.prefix:
            return self._process.pid
        if self._pid is None:
            self._pid = int(self.paths.pid.read_text().split()[0])
        return self._pid

    def start(self) -> None:
        self.home.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log_path, "ab") as log:
            self._process = subprocess.Popen(
                [
                    *self.prefix,
                    *python_module("tailhub.daemon", "--home", str(self.home), *self.args),
                ],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=REPO,
                env={**os.environ, **self.env},
            )
        process = self._process
        try:
            wait_until(
                lambda: self._listening() or process.poll() is not None,
                START_TIMEOUT,
                "the daemon to listen",
            )
        except BaseException:
            self.stop()
            raise
        if process.poll() is not None:
            raise RuntimeError(f"tailhubd exited with {process.returncode}; see {self.log_path}")

    def _listening(self) -> bool:
        probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            probe.connect(os.fspath(self.paths.socket))
        except OSError:
            return False
        finally:
            probe.close()
        return True

    def cpu(self) -> CpuTimes:
        return cpu_times(self.pid)

    def peak_rss(self) -> int:
        return peak_rss_bytes(self.pid)

    def client(self) -> Client:
        return Client.connect(self.paths, autostart=False)

    def stop(self) -> None:
        """SIGTERM (a clean drain), SIGKILL if it does not exit in time."""
        process = self._process
        if process is None or process.poll() is not None:
            return
        if self.prefix:
            os.kill(self.pid, signal.SIGTERM)
        else:
            process.send_signal(signal.SIGTERM)
        try:
            process.wait(STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()

    def kill(self) -> None:
        """SIGKILL, as a crash would end it: no drain, its lease left to expire."""
        process = self._process
        if process is None or process.poll() is not None:
            return
        os.kill(self.pid, signal.SIGKILL)
        process.wait()

    def __enter__(self) -> Daemon:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        with contextlib.suppress(ProcessLookupError):
            self.stop()
