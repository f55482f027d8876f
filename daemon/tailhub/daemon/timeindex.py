"""When a job's bytes reached the daemon: a per-job index of (offset, time) marks on disk.

A mark says "the bytes from this offset on, up to the next mark, reached the daemon at this
time". One is recorded per append, but at most one per `RESOLUTION` seconds: a flood of tiny
appends adds at most ten marks a second (160 bytes on disk), and a byte's time is that of the
first append of its tenth of a second, never later than when it arrived.

The file (`logs/N.times`) is append-only, fixed-size records of a little-endian u64 offset and
f64 Unix time. A daemon killed mid-write leaves a torn last record: it is ignored when read and
cut off before the next append. After the log is cut back (a crash's partial write, see
`JobLog.truncate`) marks at or past the new bytes' offset are superseded by the later ones.
"""

from __future__ import annotations

import bisect
import logging
import os
import struct
from array import array
from pathlib import Path

from tailhub.daemon.errors import TimesUnreadable, UntrustedState
from tailhub.daemon.faults import is_disk_full
from tailhub.daemon.paths import shown
from tailhub.daemon.statedir import open_state_file

# Seconds within which appends share one mark.
RESOLUTION = 0.1
_RECORD = struct.Struct("<Qd")
_SCAN_BLOCK = 64 * 1024

logger = logging.getLogger(__name__)


class TimeIndex:
    """The marks of one job; written as bytes arrive, read (once, lazily) by subscribers."""

    def __init__(self, path: Path) -> None:
        self.path = path
        # The file's size is known to be whole records (checked once, after a crash's tear).
        self._aligned = False
        # Loaded on the first question; kept up to date by `record` from then on.
        self._offsets: array[int] | None = None
        self._times: array[float] | None = None
        self._last_offset = -1
        self._last_time = float("-inf")
        self._warned = False

    def record(self, offset: int, now: float) -> None:
        """Notes that bytes from `offset` on reached the daemon at `now` (Unix seconds)."""
        if offset > self._last_offset and now - self._last_time < RESOLUTION:
            return
        # Set even when the write fails: a full disk is tried at most once per RESOLUTION.
        self._last_offset, self._last_time = offset, now
        try:
            self._write(offset, now)
        except OSError as error:
            # The log matters more than its times: the job goes on, those bytes take the
            # time of the mark before them.
            if not self._warned:
                self._warned = True
                what = "disk full" if is_disk_full(error) else str(error)
                logger.warning(
                    "%s: times not recorded (%s); the bytes take the last recorded time "
                    "(said once)",
                    self.path,
                    what,
                )
            return
        if self._offsets is not None and self._times is not None:
            _add(self._offsets, self._times, offset, now)

    def _write(self, offset: int, now: float) -> None:
        # Opened per mark (at most ten a second), not held: a waiting job keeps only the
        # descriptors of its log and its upstream, and thousands of them fit in 1024.
        fd = open_state_file(self.path, os.O_WRONLY | os.O_APPEND)
        try:
            if not self._aligned:
                size = os.fstat(fd).st_size
                if size % _RECORD.size:  # a torn record from a crash: never build on it
                    os.ftruncate(fd, size - size % _RECORD.size)
                self._aligned = True
            record = _RECORD.pack(offset, now)
            try:
                written = os.write(fd, record)
            except BaseException:
                self._aligned = False  # part of it may be there
                raise
            if written != len(record):
                self._aligned = False
                raise OSError(f"short write of a time mark to {shown(self.path)}")
        finally:
            os.close(fd)

    def _load(self) -> tuple[array[int], array[float]]:
        if self._offsets is None or self._times is None:
            offsets: array[int] = array("Q")
            times: array[float] = array("d")
            try:
                fd = open_state_file(self.path, os.O_RDONLY, create=False)
            except FileNotFoundError:
                data = b""
            except UntrustedState as error:
                # Planted in the home (a symlink, a FIFO): the asker is told why, as for any
                # refused state file, and the job and its other followers go on.
                logger.warning("%s", error)
                raise TimesUnreadable(f"no times for this job: {error}") from None
            else:
                with os.fdopen(fd, "rb") as file:
                    data = file.read()
            for offset, when in _RECORD.iter_unpack(data[: len(data) - len(data) % _RECORD.size]):
                _add(offsets, times, offset, when)
            self._offsets, self._times = offsets, times
        return self._offsets, self._times

    def time_at(self, offset: int) -> float | None:
        """When the byte at `offset` reached the daemon; None before the first mark."""
        offsets, times = self._load()
        index = bisect.bisect_right(offsets, offset) - 1
        return times[index] if index >= 0 else None

    def marks_in(self, start: int, end: int) -> list[tuple[int, float]]:
        """The mark in effect at `start` (moved to `start`), then those in (start, end)."""
        offsets, times = self._load()
        first = bisect.bisect_right(offsets, start) - 1
        marks = [(start, times[first])] if first >= 0 else []
        index = first + 1
        while index < len(offsets) and offsets[index] < end:
            marks.append((offsets[index], times[index]))
            index += 1
        return marks

    def first_offset_since(self, since: float) -> int | None:
        """The offset of the first mark at or after `since`; None if no byte came since.

        Times are the daemon's wall clock: they only go up unless the clock was set back.
        """
        offsets, times = self._load()
        index = bisect.bisect_left(times, since)
        return offsets[index] if index < len(offsets) else None

    def release(self) -> None:
        """Forgets the loaded marks (a job nobody reads or writes any more)."""
        self._offsets = self._times = None


def _add(offsets: array[int], times: array[float], offset: int, when: float) -> None:
    # A mark at or before the last one follows a cut-back log: it supersedes those after it.
    while offsets and offsets[-1] >= offset:
        offsets.pop()
        times.pop()
    offsets.append(offset)
    times.append(when)


def line_start_from(fd: int, offset: int, end: int) -> int:
    """The first line start at or after `offset` in the file's first `end` bytes.

    A line counts by when its first byte arrived, so a line already begun at `offset` is
    skipped. One still being written (no newline yet before `end`) is kept whole: its start.
    """
    if offset <= 0 or offset >= end:
        return max(0, min(offset, end))
    if os.pread(fd, 1, offset - 1) == b"\n":
        return offset
    position = offset
    while position < end:
        block = os.pread(fd, min(_SCAN_BLOCK, end - position), position)
        if not block:
            break
        index = block.find(b"\n")
        if index >= 0:
            return position + index + 1
        position += len(block)
    position = offset
    while position > 0:
        start = max(0, position - _SCAN_BLOCK)
        block = os.pread(fd, position - start, start)
        index = block.rfind(b"\n")
        if index >= 0:
            return start + index + 1
        position = start
    return 0
