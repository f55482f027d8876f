"""Processes a scenario starts, owned so that every one of them is gone when it ends."""

from __future__ import annotations

import contextlib
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType
from typing import IO, Any

# The repository root: `python -m bench.X` works from here, and so does the daemon's runner.
REPO = Path(__file__).resolve().parent.parent


def python_module(module: str, *args: str) -> list[str]:
    """The argv that runs `python -m module args` with this interpreter."""
    return [sys.executable, "-m", module, *args]


class ProcessSet:
    """Starts processes and, on close, stops those still running: SIGTERM, then SIGKILL."""

    def __init__(self) -> None:
        self._processes: list[subprocess.Popen[bytes]] = []

    def spawn(
        self,
        argv: Sequence[str],
        *,
        stdout: IO[Any] | int | None = subprocess.DEVNULL,
        stderr: IO[Any] | int | None = None,
        **kwargs: Any,
    ) -> subprocess.Popen[bytes]:
        kwargs.setdefault("cwd", REPO)
        process = subprocess.Popen(
            list(argv), stdin=subprocess.DEVNULL, stdout=stdout, stderr=stderr, **kwargs
        )
        self._processes.append(process)
        return process

    def wait_all(self, timeout: float) -> list[int | None]:
        """Waits for every process; those still running after `timeout` s are killed."""
        deadline = time.monotonic() + timeout
        for process in self._processes:
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.wait(max(0.0, deadline - time.monotonic()))
        self.close()
        return [process.returncode for process in self._processes]

    def close(self, grace: float = 5.0) -> None:
        running = [process for process in self._processes if process.poll() is None]
        for process in running:
            process.terminate()
        deadline = time.monotonic() + grace
        for process in running:
            try:
                process.wait(max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()

    def __enter__(self) -> ProcessSet:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()
