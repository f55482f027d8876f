"""The one fetch per job: moves bytes from a source into the log, reconnecting with backoff."""

from __future__ import annotations

import asyncio
import logging
from typing import Any, Protocol

from tailhub.daemon.config import DaemonConfig
from tailhub.daemon.counts import DaemonCounts
from tailhub.daemon.errors import NotStored, UntrustedState, UpstreamFailed
from tailhub.daemon.live_job import Job
from tailhub.daemon.reconnects import GiveUp, Reconnects
from tailhub.daemon.sink import CommitOwner, Sink
from tailhub.daemon.sources import Outcome, Source
from tailhub.daemon.wakeups import StopFlag

logger = logging.getLogger(__name__)


class FetchOwner(CommitOwner, Protocol):
    """What a fetcher reports to: the job manager, which persists and wakes followers."""

    def save_or_raise(self, job: Job) -> None: ...

    def save_or_defer(self, job: Job) -> None:
        """Saves the job's record; a full disk only delays it (saved again at heartbeats)."""


class Fetcher:
    """Runs one source for one job. Implements the `Upstream` the source writes to, and
    writes what it gets through its sink (sink.py)."""

    def __init__(
        self,
        job: Job,
        source: Source,
        sink: Sink,
        owner: FetchOwner,
        config: DaemonConfig,
        counts: DaemonCounts,
    ) -> None:
        self._job = job
        self._source = source
        self._sink = sink
        self._owner = owner
        self._config = config
        self._counts = counts
        self._finished = StopFlag()
        # The log offset where a full disk paused the fetch; None while it flows.
        self._paused_at: int | None = None
        # Set by an append of the upstream's own output: the connection works.
        self._progressed = False

    # -- Upstream -------------------------------------------------------------------------
    @property
    def stored(self) -> int:
        return self._sink.stored

    @property
    def state(self) -> dict[str, Any]:
        return self._job.record.source_state

    def append(self, data: bytes, *, progress: bool = True) -> None:
        if data and progress:
            self._progressed = True
        self._sink.append(data)
        if self._paused_at is not None:
            self._paused_at = None
            self.event(f"disk space available again; resuming at offset {self.stored - len(data)}")

    def read(self, offset: int, length: int) -> bytes:
        return self._sink.read(offset, length)

    def save_state(self) -> None:
        self._save()

    def discard_after(self, offset: int) -> None:
        self._sink.discard_after(offset)

    def event(self, message: str) -> None:
        self._sink.event(message)

    @property
    def finished(self) -> StopFlag:
        return self._finished

    async def flushed(self) -> None:
        """Returns once what was appended is stored (and, here, its end recorded as
        acknowledged: acked.py)."""
        await self._sink.flushed()

    # -- driving ---------------------------------------------------------------------------
    def request_finish(self) -> None:
        """The job's final state is set: the source drains what it has and returns."""
        self._finished.set()

    async def run(self) -> Outcome | None:
        """Fetches until the upstream ends (an Outcome) or is finished (None), and what it
        got is stored. Raises FetchEnded when this daemon may no longer fetch the job."""
        outcome = await self._fetch()
        # The job ends (and is sealed here) only once every byte fetched is stored: a
        # follower must not see the end before the last byte.
        await self._sink.settle()
        return outcome

    async def _fetch(self) -> Outcome | None:
        try:
            # Open the log before the upstream: a planted symlink or FIFO in its place fails
            # the job with the reason, and no connection is opened for nothing.
            _ = self._job.log
        except UntrustedState as error:
            return Outcome(1, str(error))
        reconnects = Reconnects(self._config.reconnect_policy)
        while True:
            self._job.upstream_open = self._source.counts_connections
            try:
                if self._source.counts_connections:
                    self._job.record.upstream_connections += 1
                    self._counts.upstream_connections_opened += 1
                    if self._job.record.upstream_connections > 1:
                        self._counts.reconnects += 1
                    self._save()
                return await self._source.fetch(self)
            except NotStored as error:  # (a full disk, or Redis behind: the sink says)
                self._job.upstream_open = False
                # Nothing of the failed write is stored (the log cuts it off); the source
                # resumes at the stored size, as after a reconnect, once there is room.
                await self._wait_for_space(error)
                continue
            except UpstreamFailed as error:
                self._job.upstream_open = False
                # Only the upstream's output resets the schedule (see reconnects.py).
                if self._progressed:
                    reconnects.progressed()
                self._progressed = False
                decision = reconnects.failed(str(error), error.exit_code, healthy=error.healthy)
                if isinstance(decision, GiveUp):
                    return Outcome(error.exit_code, reason=decision.reason)
                if decision.event is not None:
                    self.event(decision.event)
                await asyncio.sleep(decision.delay)
            finally:
                self._job.upstream_open = False

    def _save(self) -> None:
        """Saves the job's record (its connection count, the source's resume state).

        Where the daemon stores the bytes, a full disk pauses the fetch (NotStored): the bytes
        would not be stored either. A job that writes its own log (a local one) goes on
        writing whatever the daemon does, and its end is seen only by its fetch: a pause would
        wait for room that nothing frees while the job's end goes unseen (its own output can
        fill the disk before its fetch starts). Its record is saved later instead.
        """
        if self._job.log.writable:
            self._owner.save_or_raise(self._job)
        else:
            self._owner.save_or_defer(self._job)

    async def _wait_for_space(self, error: NotStored) -> None:
        if await self._sink.make_room(error):
            return
        size = self._job.log_size
        if self._paused_at != size:
            self._paused_at = size
            self.event(f"disk full at offset {size}, waiting for space ({error})")
        await asyncio.sleep(self._config.disk_full_retry)
