"""Subscribers: cursors into a job's log. Nothing is queued or copied per subscriber.

A subscriber reads everything past its offset, up to a size cap, when it is ready to send,
then waits on the job's change signal. A slow one only falls behind and reads from disk.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import AsyncGenerator, Callable, Hashable
from concurrent.futures import Executor, ThreadPoolExecutor
from dataclasses import dataclass

from tailhub.daemon.budget import SendBudget
from tailhub.daemon.domain import SourceEvent
from tailhub.daemon.errors import DaemonStopping, InvalidRequest, OutOfRange
from tailhub.daemon.items import Ended, Heartbeat, TimeMark
from tailhub.daemon.line_filter import LineFilter, Piece, joined
from tailhub.daemon.live_job import Job
from tailhub.daemon.timeindex import line_start_from


@dataclass(frozen=True)
class ChunkRange:
    """Bytes [offset, end) of the log, ready to be read and sent.

    At the live edge a chunk is everything new, so each new append costs one message per
    follower. Behind it, chunks end on multiples of the size cap: followers that are behind,
    wherever they started, soon ask for the same ranges, and share one encoding of each.
    """

    offset: int
    end: int


@dataclass(frozen=True)
class LineRun:
    """Whole lines a follower's line filter passed: the log's bytes from `offset` on (a line
    over 64 KiB may come in several runs, one after the other)."""

    offset: int
    data: bytes


LogItem = ChunkRange | Heartbeat | SourceEvent | Ended | TimeMark
FilteredItem = LineRun | Heartbeat | SourceEvent | Ended | TimeMark

# The bytes a line filter judges in one turn of the event loop: a chunk of short lines and 32
# patterns takes ~25 ms to judge whole (about 2 us a line), which would hold every other
# follower that long; a slice of this size holds them about 3 ms.
FILTER_SLICE = 32 * 1024


@dataclass(frozen=True)
class ReadFrom:
    """Where a subscription begins: an offset, the last `tail_lines` lines, or the first line
    that reached the daemon at or after `since_time`."""

    offset: int = 0
    tail_lines: int | None = None
    since_time: float | None = None

    @property
    def offset_from_end(self) -> bool:
        """Found from the log's end (or times), not given."""
        return self.tail_lines is not None or self.since_time is not None

    async def resolve(self, job: Job, scans: Executor | None = None) -> int:
        return max(await self._resolve(job, scans), job.placed.first_offset)

    async def _resolve(self, job: Job, scans: Executor | None) -> int:
        if self.tail_lines is not None:
            # An empty log has no lines to scan (and a job without a log has nothing to open).
            if job.log_size == 0:
                return 0
            return await job.log.tail_offset(self.tail_lines, scans)
        if self.since_time is not None:
            return await _since_offset(job, self.since_time, scans)
        placed = job.placed
        missing = placed.first_offset or (
            placed.kept_from if job.log_size <= self.offset < placed.kept_from else 0
        )
        if self.offset < missing:
            raise trimmed(job, missing)
        # (Where it is fetched elsewhere, the log there may be ahead of this daemon's.)
        if self.offset > max(job.log_size, placed.size):
            raise InvalidRequest(
                f"offset {self.offset} is past the end of job {job.id}'s log ({job.log_size} bytes)"
            )
        return self.offset


def trimmed(job: Job, first: int) -> OutOfRange:
    return OutOfRange(
        f"bytes before offset {first} of job {job.id} are no longer kept (trimmed from the "
        f"cluster's copy before this daemon read them): resume at {first}, or follow through "
        "the daemon that fetched them",
        first_offset=first,
    )


async def stream_log(
    job: Job,
    start: ReadFrom,
    *,
    follow: bool,
    max_chunk: int,
    stopping: Callable[[], bool],
    budget: SendBudget,
    scans: Executor | None = None,
    timestamps: bool = False,
    share: Hashable = None,
) -> AsyncGenerator[LogItem, None]:
    """Yields the log from `start`; with `follow`, until the job ends and its log is sealed.

    Each chunk's bytes are taken from `budget` before it is yielded and given back when the
    consumer asks for the next item (it has handed the chunk to gRPC by then) or leaves.

    `share` names the client in the budget (budget.py: a token's name; None for the owner):
    one client's streams that stop reading hold its share, never another's.

    With `timestamps`, each chunk comes after the time marks that fall in it (the first one
    after the mark in effect where it begins).

    A job that is terminal but not yet drained is waited for even without `follow`: its
    remaining bytes are moments away, and "not finished" would be the wrong answer.
    """
    job.subscribers += 1
    try:
        offset = await start.resolve(job, scans)
        next_event = _first_event_at(job.events, offset)
        tick = job.heartbeat_tick
        # The time of the last mark sent: the mark in effect where a chunk begins is sent again
        # only if it says something new (live chunks often share one mark).
        marked: float | None = None
        while True:
            if stopping():
                raise DaemonStopping
            while next_event < len(job.events) and job.events[next_event].offset <= offset:
                yield job.events[next_event]
                next_event += 1
            size = job.log_size
            if offset < job.placed.first_offset:  # (a hole: trimmed there meanwhile)
                raise trimmed(job, job.placed.first_offset)
            if offset < size:
                grant = await budget.acquire(
                    min(size - offset, max_chunk),
                    share,
                    live=size - offset < max_chunk,
                    # What it came to be owed while it waited goes in the same message (not
                    # beyond a chunk: coalesced into 1 MiB messages, 1000 followers took the
                    # daemon from 115 to 211 MB, in gRPC's buffers past the budget).
                    owed=lambda: min(job.log_size - offset, max_chunk),  # noqa: B023
                )
                try:
                    # The log may have grown while waiting for budget: never past the grant.
                    end = _chunk_end(offset, job.log_size, grant.size, max_chunk, budget.min_grant)
                    budget.shrink(grant, end - offset)
                    if timestamps:
                        for mark_offset, mark_time in job.times.marks_in(offset, end):
                            if mark_time != marked:
                                marked = mark_time
                                yield TimeMark(mark_offset, mark_time)
                    yield ChunkRange(offset, end)
                finally:
                    budget.release(grant)
                offset = end
                continue
            record = job.record
            if job.sealed or (not follow and not record.state.terminal):
                yield Ended(record.state, record.exit_code, record.reason, size, job.sealed)
                return
            if job.heartbeat_tick != tick:
                tick = job.heartbeat_tick
                yield Heartbeat(size, record.state)
                continue
            await job.changed.wait()
    finally:
        job.subscribers -= 1
        job.release_log_if_idle()


class FilterPacer:
    """Line filtering's share of the event loop, daemon-wide: one slice judged at a time, then
    the loop left to everything else as long again. Filtered followers whose lines rarely match
    never wait on their network, so without it a few of them kept the loop busy: an unfiltered
    follower's latency went from 3 ms to 260 ms (4 followers, 32 patterns, 40-byte lines)."""

    def __init__(self) -> None:
        self._turn = asyncio.Lock()
        # RE2 lets go of the GIL while it searches: judged on a thread of its own, a slow
        # slice costs that thread, never the event loop (and so never other followers).
        self._thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="line-filter")

    async def judge(self, line_filter: LineFilter, offset: int, data: bytes) -> list[Piece]:
        """The lines of `data` (at `offset`) that pass, judged a slice at a time in turns."""
        loop = asyncio.get_running_loop()
        pieces: list[Piece] = []
        for start in range(0, len(data), FILTER_SLICE):
            piece = data[start : start + FILTER_SLICE]
            async with self._turn:
                started = time.perf_counter()
                pieces += await loop.run_in_executor(
                    self._thread, line_filter.feed, offset + start, piece
                )
                await asyncio.sleep(time.perf_counter() - started)
        return pieces


async def filter_lines(
    stream: AsyncGenerator[LogItem, None],
    job: Job,
    line_filter: LineFilter,
    pacer: FilterPacer,
) -> AsyncGenerator[FilteredItem, None]:
    """`stream` (of `stream_log`) with its chunks through `line_filter`: the lines that pass,
    at their log offsets, and only the time marks that date them.

    The filter runs once per follower on the bytes the job's one fetch stored, a slice at a
    time, paced by `pacer` (shared by every filtered follower) so that filtering takes at most
    about half of the event loop. Events, heartbeats and the end pass unchanged;
    an ended job's unterminated last line is judged just before its end.
    """
    marks = _HeldMarks()
    try:
        async for item in stream:
            if isinstance(item, ChunkRange):
                data = job.log.read(item.offset, item.end - item.offset)
                pieces = await pacer.judge(line_filter, item.offset, data)
                for piece in joined(pieces):
                    for mark in marks.dating(piece):
                        yield mark
                    yield LineRun(*piece)
                marks.forget_before(line_filter.pending_from)
            elif isinstance(item, TimeMark):
                marks.add(item)
            else:
                if isinstance(item, Ended) and item.finished:
                    for piece in line_filter.flush():
                        for mark in marks.dating(piece):
                            yield mark
                        yield LineRun(*piece)
                yield item
    finally:
        await stream.aclose()


class _HeldMarks:
    """Time marks held back until a line they date passes the filter: a filtered follower is
    sent the marks of what it gets, not one per chunk of a log it mostly does not get."""

    def __init__(self) -> None:
        self._current: TimeMark | None = None  # in effect where the filter stands
        self._later: deque[TimeMark] = deque()
        self._sent: float | None = None

    def add(self, mark: TimeMark) -> None:
        self._later.append(mark)

    def dating(self, piece: Piece) -> list[TimeMark]:
        """The marks to send before `piece`: the one in effect at its start, unless the last
        sent says the same, then those inside it."""
        offset, data = piece
        self.forget_before(offset)
        out: list[TimeMark] = []
        current = self._current
        if current is not None and current.time != self._sent:
            out.append(current)
            self._sent = current.time
        later = self._later
        while later and later[0].offset < offset + len(data):
            current = self._current = later.popleft()
            if current.time != self._sent:
                out.append(current)
                self._sent = current.time
        return out

    def forget_before(self, offset: int | None) -> None:
        """No piece will start before `offset`: only the mark in effect there is kept of the
        marks before it (the held marks stay as few as the lines held)."""
        later = self._later
        while offset is not None and later and later[0].offset <= offset:
            self._current = later.popleft()


def _chunk_end(offset: int, size: int, granted: int, max_chunk: int, grid: int) -> int:
    """Where a chunk from `offset` ends, given `granted` bytes of budget.

    Everything new when it fits; else a full chunk ends on a multiple of `max_chunk`, and a
    chunk shrunk by a tight budget on a multiple of `grid`, so that followers behind share
    encodings of the same ranges.
    """
    if size - offset <= granted:
        return size
    step = max_chunk if granted >= max_chunk else grid
    end = (offset + granted) // step * step
    return end if end > offset else offset + granted


async def _since_offset(job: Job, since: float, scans: Executor | None) -> int:
    """Where the first line whose first byte reached the daemon at or after `since` begins."""
    end = job.log_size
    offset = job.times.first_offset_since(since)
    if offset is None or offset >= end:
        return end
    # Off the event loop: the line may be long, and its start far back.
    return await job.log.scan(scans, line_start_from, offset, end)


def _first_event_at(events: list[SourceEvent], offset: int) -> int:
    for index, event in enumerate(events):
        if event.offset >= offset:
            return index
    return len(events)
