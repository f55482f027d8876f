"""A job's log: an append-only file on disk plus a window of its most recent bytes in memory.

Offsets are byte positions from the start of the job's output. Readers never get a copy of
their own: they read a range (from the window when it lies inside it, else from disk) when
they are ready to send it, so memory does not depend on how far behind anyone is.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable
from concurrent.futures import Executor
from pathlib import Path

from tailhub.daemon.errors import JobNotFound, LogDamaged, StorageFull
from tailhub.daemon.faults import MID_LOG_APPEND, crash_at, is_disk_full
from tailhub.daemon.paths import shown
from tailhub.daemon.statedir import open_state_file

_TAIL_SCAN_BLOCK = 64 * 1024
_TAIL_SCAN_MAX_BLOCK = 256 * 1024


class JobLog:
    """The bytes of one job.

    A *writable* log stores what the fetcher appends. A log that is not writable belongs to a
    job that writes its own file (the local runner): the fetcher only *observes* new bytes, so
    the bytes exist once, on disk.
    """

    def __init__(
        self,
        path: Path,
        window_bytes: int,
        *,
        writable: bool,
        size: int,
        job_id: int = 0,
        crash_points: frozenset[str] = frozenset(),
        idle_closed: bool = False,
    ) -> None:
        self.path = path
        # Descriptors are held between appends and reads, or (`idle_closed`: a push job's log,
        # written only when a producer calls) opened for each and closed after it: thousands
        # of idle push jobs then hold no descriptor at all (a token holder attaching them must
        # not run the daemon out of descriptors).
        self._writable = writable
        self._idle_closed = idle_closed
        self._job_id = job_id
        # Fault injection for tests (see faults.py).
        self._crash_points = crash_points
        self._window_bytes = window_bytes
        self._append_fd: int | None = (
            open_state_file(path, os.O_WRONLY | os.O_APPEND) if writable else None
        )
        if not writable:
            # Checked (never a planted link or FIFO) and created now, read later.
            os.close(open_state_file(path, os.O_RDONLY))
        # Opened on the first read from disk: followers at the live edge read from the
        # window, so thousands of waiting jobs hold one descriptor each, not two.
        self._read_fd = -1
        self._release_idle()
        # Given, not read from the file: a job writing its own log may be ahead of what the
        # fetcher has observed, and only observed bytes are served.
        self.size = size
        # The window holds bytes [_window_start, size).
        self._window = bytearray()
        self._window_start = self.size

    @property
    def writable(self) -> bool:
        return self._writable

    def close(self) -> None:
        if self._append_fd is not None:
            os.close(self._append_fd)
            self._append_fd = None
        if self._read_fd >= 0:
            os.close(self._read_fd)
            self._read_fd = -1
        self._window = bytearray()

    def append(self, data: bytes) -> None:
        """Stores bytes the fetcher received: all of them, or none (then it raises)."""
        self._hold_writer()
        try:
            self._append(data)
        finally:
            self._release_idle()

    def _append(self, data: bytes) -> None:
        """Stores bytes the fetcher received: all of them, or none (then it raises).

        A failed or partial write (a full disk) is cut off again before the error goes up,
        so bytes nobody was told were stored never appear at an offset later served.
        """
        if self._append_fd is None:
            raise RuntimeError(f"log {shown(self.path)} is written by its job, not the daemon")
        view = memoryview(data)
        try:
            if MID_LOG_APPEND in self._crash_points and len(view) > 1:
                os.write(self._append_fd, view[: len(view) // 2])
                crash_at(self._crash_points, MID_LOG_APPEND)
            while view:
                written = os.write(self._append_fd, view)
                view = view[written:]
        except BaseException as error:
            os.ftruncate(self._append_fd, self.size)
            if is_disk_full(error):
                raise StorageFull(
                    f"disk full at offset {self.size} of {shown(self.path)}: "
                    f"{getattr(error, 'strerror', error)}"
                ) from error
            raise
        self._remember(data)

    def truncate(self, size: int) -> None:
        """Cuts off bytes past `size` that no follower was served (a crash's partial write)."""
        self._hold_writer()
        if self._append_fd is None or size > self.size:
            raise RuntimeError(f"log {shown(self.path)} cannot be cut to {size} bytes")
        os.ftruncate(self._append_fd, size)
        self.size = size
        self._window = bytearray()
        self._window_start = size
        self._release_idle()

    def skip_to(self, offset: int) -> None:
        """Cluster mode: the bytes up to `offset` are gone from the cluster's copy before this
        daemon read them. The file gets a hole there (never served: see Job.first_offset)."""
        self._hold_writer()
        if self._append_fd is None or offset < self.size:
            raise RuntimeError(f"log {shown(self.path)} cannot skip to {offset}")
        os.ftruncate(self._append_fd, offset)
        self.size = offset
        self._window = bytearray()
        self._window_start = offset
        self._release_idle()

    def observe(self, data: bytes) -> None:
        """Takes note of bytes the job itself already wrote to the log file."""
        self._remember(data)

    def _remember(self, data: bytes) -> None:
        self._window += data
        self.size += len(data)
        # Trim in batches: deleting from a bytearray's front is cheap, but not free.
        if len(self._window) > self._window_bytes + self._window_bytes // 2:
            excess = len(self._window) - self._window_bytes
            del self._window[:excess]
            self._window_start += excess

    def read(self, offset: int, limit: int) -> bytes:
        """Up to `limit` bytes from `offset`, never past the stored size."""
        end = min(self.size, offset + limit)
        if offset >= end:
            return b""
        if offset >= self._window_start:
            start = offset - self._window_start
            return bytes(self._window[start : start + (end - offset)])
        fd = self._reader()
        parts = []
        position = offset
        while position < end:
            part = os.pread(fd, end - position, position)
            if not part:
                raise LogDamaged(f"log {shown(self.path)} is shorter than its recorded size")
            parts.append(part)
            position += len(part)
        self._release_idle()
        return b"".join(parts)

    async def tail_offset(self, lines: int, scans: Executor | None = None) -> int:
        """The offset where the last `lines` lines begin; reads backwards, never the whole log.

        The scan runs on a thread of `scans` (else the default pool) with its own descriptor:
        a long log without a newline is read to its start, and that must not stall the
        event loop, nor the worker threads that file sources read with.
        """
        if lines <= 0 or self.size == 0:
            return self.size
        return await self.scan(scans, scan_tail, self.size, lines)

    async def scan(
        self, scans: Executor | None, function: Callable[[int, int, int], int], *args: int
    ) -> int:
        """`function(fd, *args)` on a thread of `scans`, with a duplicate of the checked read
        descriptor (never the path again: it may be a planted link by now, or removed)."""
        fd = os.dup(self._reader())
        self._release_idle()
        loop = asyncio.get_running_loop()
        # Shielded: once submitted the scan runs (and closes its descriptor) even if the
        # subscriber leaves first.
        return await asyncio.shield(loop.run_in_executor(scans, _closing, fd, function, *args))

    def _hold_writer(self) -> None:
        """Opens the append descriptor of a writable log that let it go while idle."""
        if self._writable and self._append_fd is None:
            self._append_fd = open_state_file(self.path, os.O_WRONLY | os.O_APPEND, create=False)

    def _release_idle(self) -> None:
        """Closes the descriptors of an `idle_closed` log (its window and size stay)."""
        if not self._idle_closed:
            return
        if self._append_fd is not None:
            os.close(self._append_fd)
            self._append_fd = None
        if self._read_fd >= 0:
            os.close(self._read_fd)
            self._read_fd = -1

    def _reader(self) -> int:
        if self._read_fd < 0:
            try:
                self._read_fd = open_state_file(self.path, os.O_RDONLY, create=False)
            except FileNotFoundError:  # removed (jobs rm) while a subscriber was starting
                raise JobNotFound(self._job_id) from None
        return self._read_fd


def _closing(fd: int, function: Callable[[int, int, int], int], *args: int) -> int:
    try:
        return function(fd, *args)
    finally:
        os.close(fd)


def scan_tail(fd: int, end: int, lines: int) -> int:
    """The offset where the last `lines` lines of the file's first `end` bytes begin."""
    if lines <= 0 or end == 0:
        return end
    # A final newline ends the last line; it does not start another one.
    wanted = lines + 1 if os.pread(fd, 1, end - 1) == b"\n" else lines
    position = end
    block_size = _TAIL_SCAN_BLOCK
    while position > 0:
        start = max(0, position - block_size)
        # Growing blocks: few lines are near the end, and a long scan makes few trips
        # between the GIL and the kernel (each one may wait for the GIL).
        block_size = min(block_size * 2, _TAIL_SCAN_MAX_BLOCK)
        block = os.pread(fd, position - start, start)
        if len(block) != position - start:
            raise LogDamaged("the log is shorter than its recorded size")
        index = len(block)
        while True:
            index = block.rfind(b"\n", 0, index)
            if index < 0:
                break
            wanted -= 1
            if wanted == 0:
                return start + index + 1
        position = start
    return 0
