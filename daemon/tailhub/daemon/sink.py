"""Where a fetcher's bytes go: the one path by which bytes and events enter a job's log.

`LocalLog` is that path: the log (or, for a job that writes its own file, the observation
of it), the time index, and the job manager, which stores events under its limits and wakes
the followers. A fetcher writes through a `Sink`: `LocalSink` (straight into the `LocalLog`),
or one a placement gives (a cluster lease holder's sends to Redis first, then commits to
the same `LocalLog`; the cluster's mirror commits there too).
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from tailhub.daemon.counts import DaemonCounts
    from tailhub.daemon.errors import NotStored
    from tailhub.daemon.live_job import Job


class CommitOwner(Protocol):
    """Who is told of what enters a log: the job manager, which persists and wakes followers."""

    def appended(self, job: Job) -> None: ...

    def record_event(self, job: Job, message: str) -> None:
        """Keeps an event at the log's end, within the job's event limits."""

    def copied_event(self, job: Job, message: str) -> None:
        """Keeps an event copied from where the job is fetched, within the same limits."""


class Sink(Protocol):
    """What a fetcher writes through."""

    @property
    def stored(self) -> int:
        """The bytes taken so far: stored, or on their way."""

    def append(self, data: bytes) -> None:
        """Takes bytes; raises NotStored (nothing of them taken) when there is no room."""

    def read(self, offset: int, length: int) -> bytes:
        """Bytes taken (stored or on their way) at `offset`."""

    def discard_after(self, offset: int) -> None:
        """Forgets the bytes taken past `offset` (a write that is not to count)."""

    def event(self, message: str) -> None: ...

    async def flushed(self) -> None:
        """Returns once what was taken is stored."""

    async def make_room(self, error: NotStored) -> bool:
        """An append was refused for `error`: waits for room and returns True when it is the
        sink's own (the fetcher waits for disk space otherwise)."""

    async def settle(self) -> None:
        """The source is done: returns once everything taken is stored. Raises FetchEnded
        when this daemon may no longer fetch the job (that is no end of the job)."""


class LocalLog:
    """The one way bytes and events enter a job's log here."""

    def __init__(self, job: Job, owner: CommitOwner) -> None:
        self._job = job
        self._owner = owner

    def append(self, data: bytes) -> None:
        log = self._job.log
        offset = log.size
        if not log.writable:
            log.observe(data)
        else:
            log.append(data)
        if data:
            self._job.times.record(offset, time.time())
        self._owner.appended(self._job)

    def event(self, message: str) -> None:
        self._owner.record_event(self._job, message)

    def copied_event(self, message: str) -> None:
        """An event of the job's log where it is fetched (a cluster's mirror copies it)."""
        self._owner.copied_event(self._job, message)


class LocalSink:
    """A fetcher's bytes straight into the job's log here (a daemon alone)."""

    def __init__(self, job: Job, log: LocalLog, counts: DaemonCounts) -> None:
        self._job = job
        self.log = log
        self._counts = counts
        # Where the log ended when `flushed` last recorded it as acknowledged.
        self._acknowledged = job.log_size

    @property
    def stored(self) -> int:
        return self._job.log_size

    def append(self, data: bytes) -> None:
        self.log.append(data)
        self._counts.bytes_fetched += len(data)

    def read(self, offset: int, length: int) -> bytes:
        return self._job.log.read(offset, length)

    def discard_after(self, offset: int) -> None:
        self._job.log.truncate(offset)

    def event(self, message: str) -> None:
        self.log.event(message)

    async def flushed(self) -> None:
        """Records the log's end as acknowledged (acked.py): the bytes are on disk. A record
        that cannot be written cuts the log back, so that nothing unacknowledged stays;
        nobody read those bytes yet (no await since the append)."""
        size = self._job.log_size
        if size == self._acknowledged:
            # Nothing new (a retry, a producer's empty first call): nothing to write, and
            # nothing to fail on a full disk.
            return
        try:
            self._job.acked.record(size)
        except BaseException:
            self.discard_after(self._acknowledged)
            raise
        self._acknowledged = size

    async def make_room(self, error: NotStored) -> bool:
        return False

    async def settle(self) -> None:
        return None
