"""The cluster's Redis: a real `redis-server` on a free loopback port, with its own directory."""

from __future__ import annotations

import contextlib
import shutil
import socket
import subprocess
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

import redis

from bench.measure import cpu_times, peak_rss_bytes, rss_bytes, wait_until

START_TIMEOUT = 30.0
STOP_TIMEOUT = 10.0
INSTALL_HINT = "apt-get install redis-server"


def available() -> bool:
    return shutil.which("redis-server") is not None


@dataclass(frozen=True)
class RedisReading:
    """Redis's own view of its memory, and the process's, at one moment."""

    used_memory_bytes: int  # INFO memory used_memory: what Redis allocated for data
    rss_bytes: int
    peak_rss_bytes: int
    cpu_s: float  # CPU seconds of the server process since it started


class RedisServer:
    """`redis-server` with AOF on (`appendfsync everysec`, its default), as the README advises
    for a cluster; `start()` returns once it answers PING."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.port = 0
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    @property
    def pid(self) -> int:
        if self._process is None:
            raise RuntimeError("redis-server is not started")
        return self._process.pid

    def start(self) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            self.port = probe.getsockname()[1]
        with open(self.directory / "redis.log", "ab") as log:
            self._process = subprocess.Popen(
                [
                    "redis-server",
                    *("--port", str(self.port), "--bind", "127.0.0.1"),
                    *("--dir", str(self.directory), "--appendonly", "yes", "--save", ""),
                    *("--daemonize", "no", "--protected-mode", "yes"),
                ],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        process = self._process
        try:
            wait_until(
                lambda: self._answers() or process.poll() is not None,
                START_TIMEOUT,
                "redis-server to answer PING",
            )
        except BaseException:
            self.stop()
            raise
        if process.poll() is not None:
            raise RuntimeError(
                f"redis-server exited with {process.returncode}; see {self.directory}/redis.log"
            )

    def _answers(self) -> bool:
        try:
            with redis.Redis(port=self.port, socket_timeout=1.0) as client:
                return bool(client.ping())
        except redis.RedisError:
            return False

    def reading(self) -> RedisReading:
        with redis.Redis(port=self.port, socket_timeout=5.0) as client:
            info = client.info("memory")
        return RedisReading(
            used_memory_bytes=int(info["used_memory"]),
            rss_bytes=rss_bytes(self.pid),
            peak_rss_bytes=peak_rss_bytes(self.pid),
            cpu_s=cpu_times(self.pid).own,
        )

    def stop(self) -> None:
        process = self._process
        if process is None or process.poll() is not None:
            return
        process.terminate()
        try:
            process.wait(STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()

    def __enter__(self) -> RedisServer:
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
