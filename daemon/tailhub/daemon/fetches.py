"""The one fetch per job: each running job's fetcher and the task that runs it.

A job's fetch starts when it runs here (launch, attach, resume at start, or a cluster node
taking it over), and ends with its upstream (its outcome goes to whoever concluded it) or
when it is stopped (the daemon stops, the job is cancelled, another daemon fetches it now).
A push job's bytes enter through its fetcher too.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

from tailhub.daemon.domain import SourceKind
from tailhub.daemon.errors import (
    FetchEnded,
    InvalidRequest,
    NotStored,
    OffsetMismatch,
    StorageFull,
)
from tailhub.daemon.sources import Outcome, UpstreamUnusable

if TYPE_CHECKING:
    from tailhub.daemon.fetcher import Fetcher
    from tailhub.daemon.live_job import Job
    from tailhub.daemon.tasks import TaskSet

logger = logging.getLogger(__name__)


class Fetches:
    """Runs each job's one fetcher under `supervised`; tells `conclude` how it ended."""

    def __init__(
        self,
        supervised: TaskSet,
        make: Callable[[Job], Fetcher],
        conclude: Callable[[Job, Outcome | None], None],
        event: Callable[[Job, str], None],
        *,
        wait_to_fetch: Callable[[Job], Awaitable[None]],
    ) -> None:
        self._supervised = supervised
        self._make = make
        self._conclude = conclude
        self._event = event
        # Waits a little for this daemon to take a job back (placement.py).
        self._wait_to_fetch = wait_to_fetch
        self._fetchers: dict[int, Fetcher] = {}
        self._tasks: dict[int, asyncio.Task[None]] = {}

    def start(self, job: Job, *, finishing: bool) -> None:
        fetcher = self._make(job)
        if finishing:
            fetcher.request_finish()
        self._fetchers[job.id] = fetcher
        self._tasks[job.id] = self._supervised.spawn(
            self._run(job, fetcher),
            name=f"fetch-{job.id}",
            on_crash=lambda error: self.conclude(job, Outcome(1, f"fetching failed: {error}")),
        )

    def stop(self, job: Job) -> None:
        """Stops the job's fetch; nobody concludes it (the job does not end for it)."""
        self._fetchers.pop(job.id, None)
        task = self._tasks.pop(job.id, None)
        if task is not None:
            task.cancel()

    def cancel(self, job: Job) -> None:
        """Cancels the task of the job's fetch (the job has been ended)."""
        task = self._tasks.get(job.id)
        if task is not None:
            task.cancel()

    def request_finish(self, job: Job) -> None:
        fetcher = self._fetchers.get(job.id)
        if fetcher is not None:
            fetcher.request_finish()

    def clear(self) -> None:
        """The tasks were cancelled (the daemon stops)."""
        self._tasks.clear()

    def conclude(self, job: Job, outcome: Outcome | None) -> None:
        self._fetchers.pop(job.id, None)
        self._tasks.pop(job.id, None)
        self._conclude(job, outcome)

    async def publish(self, job: Job, data: bytes, expected_offset: int | None) -> int:
        """Appends a producer's bytes through the push job's fetcher; returns the log's size.

        With `expected_offset`, a call is idempotent: a retry of one already applied (the
        same bytes at the same offset) appends nothing, any other mismatch is refused.
        """
        if job.record.spec.kind is not SourceKind.PUSH:
            raise InvalidRequest(f"job {job.id} is not a push job; only push jobs take bytes")
        if job.state.terminal:
            raise InvalidRequest(
                f"job {job.id} has ended ({job.state.value}); it takes no more bytes"
            )
        # Through the job's fetcher, which stores the bytes (in cluster mode, Redis first).
        fetcher = self._fetchers.get(job.id)
        if fetcher is None:
            # A node restarted just now takes its push jobs back (once their old lease has
            # expired): its publishers' retries wait for it, or are told to try again.
            await self._wait_to_fetch(job)
            fetcher = self._fetchers.get(job.id)
        if fetcher is None:
            raise InvalidRequest(
                f"job {job.id} takes bytes on the daemon that attached it"
                f"{f' ({job.placed.home})' if job.placed.home else ''}, not here"
            )
        # What it has taken, stored or on its way (to Redis, in cluster mode): a retry while
        # the first is on its way is recognised, never appended twice.
        size = fetcher.stored
        if expected_offset is not None and expected_offset != size:
            if (
                expected_offset + len(data) <= size
                and fetcher.read(expected_offset, len(data)) == data
            ):
                await fetcher.flushed()
                return size
            raise OffsetMismatch(
                f"job {job.id}'s log is {size} bytes long, not {expected_offset}: "
                "publish at the current size",
                size,
            )
        try:
            fetcher.append(data)
        except StorageFull as error:
            self._event(job, f"disk full at offset {size}: a publish was refused ({error})")
            raise
        await fetcher.flushed()
        if job.log_size < size + len(data):
            # Flushed means sent or given up on: Redis refused the job's log (the job fails
            # for it), and the producer must not take its bytes as stored.
            why = job.record.reason or "its fetch ended"
            raise NotStored(f"job {job.id}: these bytes were not stored: {why}")
        return job.log_size

    def cut_unacknowledged(self, job: Job) -> None:
        """Cuts a push log back to the end its publishers were last told (acked.py): what
        lies past it is a piece of a Publish the daemon died writing, never answered, and
        would block its retry. Before anyone is served (start, before the socket)."""
        acknowledged = job.acked.read()
        if acknowledged is None or job.log_size <= acknowledged:
            return
        torn = job.log_size - acknowledged
        job.log.truncate(acknowledged)
        self._event(
            job,
            f"{torn} bytes of a publish never acknowledged (the daemon stopped while writing "
            f"it) were cut off; the log ends at offset {acknowledged}, where its publisher "
            "resumes",
        )

    async def _run(self, job: Job, fetcher: Fetcher) -> None:
        try:
            outcome: Outcome | None = await fetcher.run()
        except UpstreamUnusable as error:
            outcome = Outcome(error.exit_code, str(error))
        except FetchEnded as error:  # (not the job's end: another daemon fetches it now)
            logger.info("%s", error)
            return
        except asyncio.CancelledError:
            raise
        except Exception as error:  # a bug or an I/O error: fail the job, keep the daemon
            logger.exception("fetcher of job %d failed", job.id)
            outcome = Outcome(1, f"fetching failed: {error}")
        finally:
            if self._fetchers.get(job.id) is fetcher:  # (not a newer fetch's)
                del self._fetchers[job.id]
                self._tasks.pop(job.id, None)
        self.conclude(job, outcome)
