"""A disk that fills: the state directory on its own small tmpfs (mounting needs root, as
here and in CI), a way to fill it, and a follower that keeps what it received."""

from __future__ import annotations

import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from helpers import DaemonProcess

from tailhub.client import LogChunk, LogEnd, LogEvent

TMPFS_BYTES = 4 * 1024 * 1024


@pytest.fixture
def small_disk_home(home: Path) -> Iterator[Path]:
    """The state directory on its own 4 MiB tmpfs, so that the test can fill it."""
    home.mkdir(mode=0o700)
    subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={TMPFS_BYTES},mode=0700", "tmpfs", str(home)],
        check=True,
    )
    try:
        yield home
    finally:
        subprocess.run(["umount", "-l", str(home)], check=False)


def fill_disk(directory: Path) -> Path:
    """Writes a file until the disk holding `directory` is full; returns it (delete to free)."""
    filler = directory / "filler"
    block = b"\0" * 65536
    with open(filler, "wb", buffering=0) as out:
        try:
            while True:
                out.write(block)
        except OSError:
            pass
    # The last few bytes too: a write fails only when not even one byte fits.
    with open(filler, "ab", buffering=0) as out:
        try:
            while True:
                out.write(b"\0" * 512)
        except OSError:
            pass
    return filler


class Follower:
    """Follows a job in a thread and keeps what it received."""

    def __init__(self, daemon: DaemonProcess, job_id: int) -> None:
        self.data = bytearray()
        self.events: list[str] = []
        self.end: LogEnd | None = None
        self.error: BaseException | None = None
        self._client = daemon.client()
        self._thread = threading.Thread(target=self._run, args=(job_id,), daemon=True)
        self._thread.start()

    def _run(self, job_id: int) -> None:
        try:
            for item in self._client.follow(job_id):
                if isinstance(item, LogChunk):
                    self.data += item.data
                elif isinstance(item, LogEvent):
                    self.events.append(item.message)
                elif isinstance(item, LogEnd):
                    self.end = item
        except BaseException as error:  # reported by the test
            self.error = error

    def join(self, timeout: float = 30.0) -> None:
        self._thread.join(timeout)
        assert not self._thread.is_alive(), "the follower did not end"
        self._client.close()
        assert self.error is None, self.error
