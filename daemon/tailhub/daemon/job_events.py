"""A job's events as the daemon keeps them: within their limits (events.py), stored, told.

Every event of a job enters here, whoever reports it (its fetcher, a backend, the job
manager, or a cluster node's mirror of a job fetched elsewhere): so they are limited and
stored the same way everywhere. The rate is limited where an event is born; one copied from
the daemon fetching the job is held to the same count and size.
"""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING

from tailhub.daemon.domain import SourceEvent
from tailhub.daemon.errors import StorageFull
from tailhub.daemon.events import EventLimiter, EventLimits, clip

if TYPE_CHECKING:
    from tailhub.daemon.live_job import Job
    from tailhub.daemon.store import JobStore

logger = logging.getLogger(__name__)


class JobEvents:
    """Keeps the events of every job of the daemon."""

    def __init__(self, store: JobStore) -> None:
        self._store = store
        self._limits = EventLimits()
        # Per job, created with its first event: how many more it may keep, and how fast.
        self._limiters: dict[int, EventLimiter] = {}

    def record_event(self, job: Job, message: str) -> None:
        """An event at the log's end, kept if the job's limits allow (else counted)."""
        limiter = self._limiters.get(job.id)
        if limiter is None:
            limiter = EventLimiter(self._limits, kept=len(job.events))
            self._limiters[job.id] = limiter
        for kept in limiter.offer(message):
            self._keep(job, kept)

    def copied(self, job: Job, message: str) -> None:
        """An event copied from where the job is fetched (the rate was limited where it was
        born): kept within the job's count and size limits, as one born here is."""
        limits = self._limits
        if len(job.events) < limits.max_events:
            self._keep(job, clip(message, limits.max_message_bytes))

    def tell_followers(self, job: Job, message: str) -> None:
        """An event for this daemon's followers only, never stored (what this daemon sees
        of the job's place: a cluster's state, as seen here)."""
        job.events.append(SourceEvent(job.log_size, message, time.time()))
        job.changed.notify()

    def report_dropped(self, job: Job, *, final: bool) -> None:
        """Tells followers how many events were dropped, once the limits allow (or at the end)."""
        limiter = self._limiters.get(job.id)
        message = None if limiter is None else limiter.flush(final=final)
        if message is not None:
            self._keep(job, message)
        if final:
            self._limiters.pop(job.id, None)

    def report_all_dropped(self, jobs: dict[int, Job]) -> None:
        """At a heartbeat: the dropped counts the limits allow telling now."""
        for job_id in [*self._limiters]:
            if job_id in jobs:  # (a removed job has nothing left to report)
                self.report_dropped(jobs[job_id], final=False)

    def _keep(self, job: Job, message: str) -> None:
        event = SourceEvent(job.log_size, message, time.time())
        job.events.append(event)
        logger.info("job %d: %s", job.id, message)
        job.changed.notify()
        try:
            self._store.add_event(job.id, event)
        except StorageFull as error:
            # Followers have it; only a restarted daemon will not show it again.
            logger.warning("job %d: event not stored: %s", job.id, error)
