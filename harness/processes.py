"""Processes of one's own (tests and benchmarks): each started in a process group of its own
and ended with that whole group, so that nothing it started outlives it.

A group is signalled only while its leader is not yet reaped: until then (a zombie included)
the kernel keeps the leader's number, and the group's, for it; once reaped, the number may be
another program's. So the leader is watched without being reaped (`exited`), its group killed,
and only then reaped.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
from collections.abc import Iterable, Sequence
from pathlib import Path
from types import TracebackType
from typing import IO, Any, TypeVar

from harness.waiting import wait_until

# The repository's root: `python -m bench.X` works from here, and so does the daemon's runner.
REPO = Path(__file__).resolve().parent.parent
# How long a process (or group) killed with SIGKILL may take to be gone.
KILL_TIMEOUT = 30.0

_Owned = TypeVar("_Owned", bound="Owned")


class Owned:
    """Something started by `with` and ended, whatever happened, when the block ends:
    `close()` leaves nothing of it running."""

    def start(self) -> None:
        """Nothing to start (a ProcessSet starts its processes one by one)."""

    def close(self) -> None:
        raise NotImplementedError

    def __enter__(self: _Owned) -> _Owned:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()


def python_module(module: str, *args: str) -> list[str]:
    """The argv that runs `python -m module args` with this interpreter."""
    return [sys.executable, "-m", module, *args]


def exited(process: subprocess.Popen[bytes]) -> bool:
    """True once `process` has exited, leaving it unreaped (see the module's docstring)."""
    if process.returncode is not None:
        return True
    try:
        found = os.waitid(os.P_PID, process.pid, os.WEXITED | os.WNOHANG | os.WNOWAIT)
    except ChildProcessError:  # reaped behind Popen's back: poll() says how it ended
        return process.poll() is not None
    return found is not None


def signal_group(process: subprocess.Popen[bytes], signum: int) -> None:
    """Sends `signum` to the process group `process` leads, while that group is surely its."""
    if process.returncode is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signum)


def kill_group(process: subprocess.Popen[bytes]) -> int:
    """SIGKILL to the whole group `process` leads (whatever is left of it), then reaps it."""
    signal_group(process, signal.SIGKILL)
    return process.wait(KILL_TIMEOUT)


def reap_exited(processes: Iterable[subprocess.Popen[bytes]]) -> bool:
    """Reaps each of `processes` that has exited, once what it left in its group is killed;
    True when every one is reaped. Reaped at once: a zombie would pass for alive (`tail
    --pid` on a writer that has ended)."""
    for process in processes:
        if process.returncode is None and exited(process):
            kill_group(process)
    return all(process.returncode is not None for process in processes)


def end_groups(processes: Sequence[subprocess.Popen[bytes]], grace: float) -> None:
    """SIGTERM to the group of each process still running, SIGKILL to what is left of every
    group after `grace` seconds (or as soon as its leader exits); every process reaped."""
    for process in processes:
        if not exited(process):
            signal_group(process, signal.SIGTERM)
    with contextlib.suppress(TimeoutError):
        wait_until(lambda: reap_exited(processes), grace, "processes to end")
    for process in processes:
        kill_group(process)


class ProcessSet(Owned):
    """Starts processes, each in a process group of its own, and on close ends those groups:
    SIGTERM, then SIGKILL after a grace period."""

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
        """Starts `argv` (stdin closed; from the repository's root unless `cwd` is given)."""
        kwargs.setdefault("cwd", REPO)
        process = subprocess.Popen(
            list(argv),
            stdin=subprocess.DEVNULL,
            stdout=stdout,
            stderr=stderr,
            start_new_session=True,
            **kwargs,
        )
        self._processes.append(process)
        return process

    def wait_all(self, timeout: float) -> list[int | None]:
        """Waits for every process (each reaped as it exits); those still running after
        `timeout` s are ended."""
        with contextlib.suppress(TimeoutError):
            wait_until(lambda: reap_exited(self._processes), timeout, "every process to exit")
        self.close()
        return [process.returncode for process in self._processes]

    def close(self, grace: float = 5.0) -> None:
        end_groups(self._processes, grace)
