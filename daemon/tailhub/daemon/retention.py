"""Removing ended jobs: asked for (`jobs rm`), or by the retention policy (--retain-age,
--max-ended-jobs and --retain-logs) applied by passes, hourly and soon after jobs end
(removal.py chooses and deletes).

--max-ended-jobs is shared between creators (the owner, and each token by its name): a pass
removes the oldest ended job of whoever has the most, one at a time, and the owner's only while
it has more than half the cap. A write token that ends 10,000 push jobs in half a minute thus
removes its own, not the owner's history (before, the oldest ended jobs went first, whoever
made them).
"""

from __future__ import annotations

import asyncio
import collections
import heapq
import logging
from collections.abc import Callable, Iterable, Mapping
from typing import TYPE_CHECKING

from tailhub.daemon import removal
from tailhub.daemon.removal import RemoveResult

if TYPE_CHECKING:
    from tailhub.daemon.config import DaemonConfig
    from tailhub.daemon.counts import DaemonCounts
    from tailhub.daemon.live_job import Job
    from tailhub.daemon.store import JobStore

# How many jobs may end past --max-ended-jobs before a pass removes the oldest.
_CAP_SLACK = 100
# Seconds from a job's end to the pass that keeps ended logs within --retain-logs (jobs
# ending meanwhile share it).
_BUDGET_PASS_DELAY = 1.0

logger = logging.getLogger(__name__)


class Retention:
    """Applies the retention policy to the daemon's jobs (`jobs`: the manager's, by id)."""

    def __init__(
        self,
        config: DaemonConfig,
        store: JobStore,
        jobs: dict[int, Job],
        counts: DaemonCounts,
        allowed: Callable[[], bool],
        clock: Callable[[], float],
    ) -> None:
        self._config = config
        self._store = store
        self._jobs = jobs
        self._counts = counts
        # Whether jobs may be deleted here at all (the placement says).
        self._allowed = allowed
        self._clock = clock
        # Told the ids of the jobs removed: what others keep per job (the service's encoded
        # chunks) goes with the job, not when something else pushes it out.
        self.listeners: list[Callable[[list[int]], None]] = []
        # Jobs ended since the last pass that kept --max-ended-jobs.
        self._ended_since_cap_pass = 0
        # The pass that keeps --retain-logs, when one is due.
        self._budget_pass: asyncio.TimerHandle | None = None

    def apply(self, now: float) -> RemoveResult:
        """Applies the retention policy once."""
        config = self._config
        if not self._allowed():
            return RemoveResult()
        by_count = []
        if config.max_ended_jobs is not None:
            by_count = beyond_cap(self._jobs.values(), config.max_ended_jobs, self._store.owners())
        counted = {job.id for job in by_count}
        doomed = removal.expired(
            (job for job in self._jobs.values() if job.id not in counted),
            now,
            config.retention_seconds,
            None,
            config.retain_log_bytes,
        )
        doomed.by_count = by_count
        result = removal.RemoveResult()
        removal.delete(doomed.jobs, self._jobs, self._store, config.paths, result)
        if result.removed:
            self._removed(result.removed)
            self._counts.retention_removed_jobs += len(result.removed)
            self._counts.retention_removed_bytes += result.bytes_freed
            logger.info("retention: %s", removal.summary(doomed, config))
        return result

    def remove(self, job_ids: list[int], ended_before: float | None) -> RemoveResult:
        """Deletes the ended jobs asked for (`jobs rm`)."""
        doomed, result = removal.choose(self._jobs, job_ids, ended_before)
        removal.delete(doomed, self._jobs, self._store, self._config.paths, result)
        self._removed(result.removed)
        return result

    def _removed(self, job_ids: list[int]) -> None:
        if job_ids:
            for listener in self.listeners:
                listener(job_ids)

    def job_ended(self) -> None:
        """A job was sealed: the limits on ended jobs and their logs are kept soon."""
        self._keep_ended_within_cap()
        self._keep_logs_within_budget()

    def close(self) -> None:
        if self._budget_pass is not None:
            self._budget_pass.cancel()

    def _keep_logs_within_budget(self) -> None:
        """--retain-logs as jobs end (ended logs grow only then): a disk filling with logs
        would not wait for the hourly pass. At most one pass a second, whatever the rate."""
        if self._config.retain_log_bytes is None or self._budget_pass is not None:
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:  # no loop (a test of the manager alone): now
            self._apply_now()
            return

        def apply() -> None:
            self._budget_pass = None
            self._apply_now()

        self._budget_pass = loop.call_later(_BUDGET_PASS_DELAY, apply)

    def _keep_ended_within_cap(self) -> None:
        """--max-ended-jobs as jobs end, not only at the hourly pass: at hundreds of launches
        a minute, an hour's ended jobs (records, specs, signals, paths: 3-10 KB each) were
        the daemon's memory growing without bound in sight (issue 16, item 20). A pass sorts
        every job: it runs once per `_CAP_SLACK` jobs ended past the cap."""
        cap = self._config.max_ended_jobs
        if cap is None or len(self._jobs) <= cap:
            return
        self._ended_since_cap_pass += 1
        if self._ended_since_cap_pass >= min(_CAP_SLACK, max(cap // 10, 1)):
            self._ended_since_cap_pass = 0
            try:  # soon, not under the feet of whoever is sealing a job now
                asyncio.get_running_loop().call_soon(self._apply_now)
            except RuntimeError:  # no loop (a test of the manager alone): now
                self._apply_now()

    def _apply_now(self) -> None:
        try:
            self.apply(self._clock())
        except Exception:  # the hourly pass tries again
            logger.exception("applying the retention policy failed")


def beyond_cap(jobs: Iterable[Job], cap: int, creators: Mapping[int, str]) -> list[Job]:
    """The ended jobs past `cap`: each the oldest ended job of the creator (`creators`: the
    token each job made with one belongs to; the others are the owner's) that has the most
    left at the time, so that no creator's churn removes another's jobs while it has more.
    The owner keeps half of `cap` in any case: its jobs go only while it has more."""
    ended = sorted(
        (job for job in jobs if job.sealed), key=lambda job: (job.record.ended_at, job.id)
    )
    excess = len(ended) - cap
    if excess <= 0:
        return []
    groups: dict[str | None, collections.deque[Job]] = {}
    for job in ended:
        groups.setdefault(creators.get(job.id), collections.deque()).append(job)

    def rank(creator: str | None, group: collections.deque[Job]) -> tuple[int, float, int]:
        """The creator with the most first; between equals, the one whose oldest ended
        first; the owner within its half last (never, as the others then hold the excess)."""
        held = len(group) if creator is not None or len(group) > cap // 2 else len(group) - cap
        return (-held, group[0].record.ended_at, group[0].id)

    heap = [(*rank(creator, group), creator) for creator, group in groups.items()]
    heapq.heapify(heap)
    chosen = []
    for _ in range(excess):
        _, _, _, creator = heapq.heappop(heap)
        group = groups[creator]
        chosen.append(group.popleft())
        if group:
            heapq.heappush(heap, (*rank(creator, group), creator))
    return chosen
