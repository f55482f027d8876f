"""The one fetch per job: moves bytes from a source into the log, reconnecting with backoff."""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any, Protocol

from tailhub.daemon.config import DaemonConfig
from tailhub.daemon.counts import DaemonCounts
from tailhub.daemon.job import Job
from tailhub.daemon.model import StorageFull
from tailhub.daemon.reconnects import GiveUp, Reconnects
from tailhub.daemon.signal import Stop
from tailhub.daemon.sources import Outcome, Source, UpstreamFailed
from tailhub.daemon.statedir import UntrustedState

logger = logging.getLogger(__name__)


class FetchOwner(Protocol):
    """What a fetcher reports to: the job manager, which persists and wakes followers."""

    def appended(self, job: Job) -> None: ...

    def save(self, job: Job) -> None: ...

    def event(self, job: Job, message: str) -> None: ...


class Fetcher:
    """Runs one source for one job. Implements the `Upstream` the source writes to."""

    def __init__(
        self,
        job: Job,
        source: Source,
        owner: FetchOwner,
        config: DaemonConfig,
        counts: DaemonCounts,
    ) -> None:
        self._job = job
        self._source = source
        self._owner = owner
        self._config = config
        self._counts = counts
        self._finished = Stop()
        # The log offset where a full disk paused the fetch; None while it flows.
        self._paused_at: int | None = None
        # Set by an append of the upstream's own output: the connection works.
        self._progressed = False
        # Where the log ended when `flushed` last recorded it as acknowledged.
        self._acknowledged = job.log_size

    # -- Upstream -------------------------------------------------------------------------
    @property
    def stored(self) -> int:
        return self._job.log_size

    @property
    def state(self) -> dict[str, Any]:
        return self._job.record.source_state

    def append(self, data: bytes, *, progress: bool = True) -> None:
        if data and progress:
            self._progressed = True
        self._store(data)

    def _store(self, data: bytes) -> None:
        """Where appended bytes go: the job's log (a cluster lease holder's go to Redis first)."""
        log = self._job.log
        offset = log.size
        if not log.writable:
            log.observe(data)
        else:
            log.append(data)
        if data:
            self._job.times.record(offset, time.time())
        self._counts.bytes_fetched += len(data)
        if self._paused_at is not None:
            self._paused_at = None
            self._owner.event(
                self._job, f"disk space available again; resuming at offset {log.size - len(data)}"
            )
        self._owner.appended(self._job)

    def read(self, offset: int, length: int) -> bytes:
        return self._job.log.read(offset, length)

    def save_state(self) -> None:
        self._owner.save(self._job)

    def discard_after(self, offset: int) -> None:
        self._job.log.truncate(offset)

    def event(self, message: str) -> None:
        self._owner.event(self._job, message)

    @property
    def finished(self) -> Stop:
        return self._finished

    async def flushed(self) -> None:
        """Returns once what was appended is stored, and its end recorded as acknowledged
        (acked.py): at once here, the bytes are on disk. A record that cannot be written
        cuts the log back, so that nothing unacknowledged stays; nobody read those bytes yet
        (no await since the append)."""
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

    # -- driving ---------------------------------------------------------------------------
    def request_finish(self) -> None:
        """The job's final state is set: the source drains what it has and returns."""
        self._finished.set()

    async def run(self) -> Outcome | None:
        """Fetches until the upstream ends (an Outcome) or is finished (None)."""
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
                    self._owner.save(self._job)
                return await self._source.fetch(self)
            except StorageFull as error:
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

    async def _wait_for_space(self, error: StorageFull) -> None:
        size = self._job.log_size
        if self._paused_at != size:
            self._paused_at = size
            self.event(f"disk full at offset {size}, waiting for space ({error})")
        await asyncio.sleep(self._config.disk_full_retry)
