"""One daemon per state directory: an exclusive lock held for the daemon's whole life.

Binding a `unix:` address silently unlinks an existing socket, so a second daemon would steal
the first one's socket: the lock, not the bind, must decide who serves.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from pathlib import Path

from tailhub.daemon.errors import AlreadyRunning
from tailhub.daemon.paths import shown
from tailhub.daemon.statedir import open_state_file, read_state_file, write_state_file


class StateLock:
    def __init__(self, lock_path: Path, pid_path: Path) -> None:
        self._lock_path = lock_path
        self._pid_path = pid_path
        self._fd = -1

    def acquire(self) -> None:
        fd = open_state_file(self._lock_path, os.O_RDWR)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise AlreadyRunning(
                Path(shown(self._lock_path.parent)), read_pid(self._pid_path)
            ) from None
        try:
            write_state_file(self._pid_path, f"{os.getpid()}\n")
        except BaseException:
            os.close(fd)
            raise
        self._fd = fd

    def release(self) -> None:
        if self._fd < 0:
            return
        with contextlib.suppress(FileNotFoundError):
            self._pid_path.unlink()
        os.close(self._fd)
        self._fd = -1


def is_held(lock_path: Path) -> bool:
    """True while some daemon holds the lock (a daemon is starting or serving)."""
    try:
        fd = open_state_file(lock_path, os.O_RDONLY, create=False)
    except FileNotFoundError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)
    return False


def read_pid(pid_path: Path) -> str:
    try:
        return read_state_file(pid_path).strip()
    except FileNotFoundError:
        return ""
