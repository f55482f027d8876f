"""`jobs logs --since/--timestamps`: where to start in time, and lines stamped with arrival."""

from __future__ import annotations

import time
from collections import deque
from datetime import datetime, timezone
from typing import BinaryIO

import click

from tailhub.daemon.durations import parse_duration

# A line longer than this is written in pieces (stamped once, at its start): memory stays
# bounded whatever the job prints.
MAX_LINE_BYTES = 1024 * 1024
# What a line whose arrival is unknown (bytes older than the index) is stamped with.
_UNKNOWN = b"-".ljust(len("2026-01-01T00:00:00.000000Z"))


def parse_since(text: str, now: float) -> float:
    """The Unix time `--since` names: a duration back from `now` (`10m`, `2h`, `1d`, `30s`)
    or an RFC 3339 / ISO 8601 time (`2026-11-29T08:00:00Z`; without an offset, local time).
    Raises ValueError with a message fit for a user."""
    try:
        return now - parse_duration(text)
    except ValueError:
        pass
    written = text.strip()
    if written[-1:] in ("Z", "z"):  # RFC 3339's UTC; Python 3.10 takes only +00:00
        written = written[:-1] + "+00:00"
    try:
        moment = datetime.fromisoformat(written)
    except ValueError:
        raise ValueError(
            f"{text!r} is neither a duration (10m, 2h, 1d) nor a time "
            "(2026-11-29T08:00:00Z, 2026-11-29 08:00)"
        ) from None
    # A naive time is the user's local time, as `datetime.timestamp` takes it.
    try:
        return moment.timestamp()
    except (ValueError, OverflowError, OSError) as error:  # 0001-01-01 in a zone east of UTC
        raise ValueError(f"{text!r} is not a time this machine can represent ({error})") from None


def since_option(since: str | None, tail: int | None) -> float | None:
    """The Unix time of `jobs logs --since` (None without it); usage errors as click's."""
    if since is None:
        return None
    if tail is not None:
        raise click.UsageError("--since and --tail both say where to start; give one")
    try:
        return parse_since(since, time.time())
    except ValueError as error:
        raise click.BadParameter(str(error), param_hint="--since") from None


def stamp(when: float | None) -> bytes:
    """`when` as RFC 3339 in UTC with microseconds (`2026-11-29T08:00:00.123456Z`)."""
    if when is None:
        return _UNKNOWN
    return datetime.fromtimestamp(when, timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ").encode()


class TimeMarks:
    """A stream's time marks (TimeMark: the bytes from `offset` on reached the daemon at
    `when`), asked in log order for the time of the byte at an offset."""

    def __init__(self) -> None:
        self._marks: deque[tuple[int, float]] = deque()
        self._time: float | None = None

    def add(self, offset: int, when: float) -> None:
        self._marks.append((offset, when))

    def time_at(self, offset: int) -> float | None:
        """When the byte at `offset` came (None before any mark); offsets only grow."""
        marks = self._marks
        while marks and marks[0][0] <= offset:
            self._time = marks.popleft()[1]
        return self._time


class LineStamper:
    """Writes whole lines, each after the time its first byte reached the daemon."""

    def __init__(self, out: BinaryIO) -> None:
        self._out = out
        self._marks = TimeMarks()
        # A line begun but not ended yet, and when its first byte came.
        self._line = bytearray()
        self._line_time: float | None = None
        # Part of the current line was written already (it was longer than MAX_LINE_BYTES).
        self._continued = False
        # Lines of one mark share a time: formatted once.
        self._stamped: tuple[float | None, bytes] = (None, _UNKNOWN + b" ")

    def _stamp(self, when: float | None) -> bytes:
        if self._stamped[0] != when:
            self._stamped = (when, stamp(when) + b" ")
        return self._stamped[1]

    def mark(self, offset: int, when: float) -> None:
        self._marks.add(offset, when)

    def write(self, offset: int, data: bytes) -> None:
        position = 0
        parts: list[bytes] = []
        while position < len(data):
            if not self._line and not self._continued:
                self._line_time = self._marks.time_at(offset + position)
            newline = data.find(b"\n", position)
            if newline < 0:
                self._line += data[position:]
                if len(self._line) >= MAX_LINE_BYTES:
                    parts += (self._prefix(), bytes(self._line))
                    self._line.clear()
                    self._continued = True
                break
            parts += (self._prefix(), bytes(self._line), data[position : newline + 1])
            self._line.clear()
            self._continued = False
            position = newline + 1
        if parts:
            self._out.write(b"".join(parts))
            self._out.flush()

    def _prefix(self) -> bytes:
        """The stamp of the current line, or nothing if its start was written already."""
        return b"" if self._continued else self._stamp(self._line_time)

    def finish(self) -> None:
        """The stream ended: a last line without a newline is written as it is."""
        if self._line:
            self._out.write(self._prefix() + bytes(self._line))
            self._line.clear()
            self._continued = False
            self._out.flush()
