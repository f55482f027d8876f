"""New jobs' creation in Redis, which a kill -9 may interrupt.

A node records a new job in its own database first (its id comes from the cluster's
counter), then creates it in Redis: its record, the index and the first lease, in one script.
Killed between the two, it used to leave the job in its database only. Nobody ran or fetched
it, since only what Redis holds is taken over, and a launch called again with its key got the
job back and waited for it for ever.

So each creation is marked in the node's database until Redis has the job. At its next start,
the node creates in Redis every job still marked that Redis does not hold (the id is the job's:
the counter gave it to this node), and resumes it as the start of any job it fetches.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Awaitable, Callable, Iterator
from typing import TYPE_CHECKING

from tailhub.daemon import faults
from tailhub.daemon.cluster.records import record_to_json
from tailhub.daemon.cluster.redis_store import RedisStore
from tailhub.daemon.errors import ClusterUnavailable, JobNotFound
from tailhub.daemon.store import JobStore

if TYPE_CHECKING:
    from tailhub.daemon.live_job import Job
    from tailhub.daemon.placement import JobsPort

logger = logging.getLogger(__name__)

_MARK = "creating:"


class Creations:
    """The creations in Redis this node began and has not seen through, in its database."""

    def __init__(self, store: JobStore, redis: RedisStore) -> None:
        self._store = store
        self._redis = redis

    async def create(self, job: Job, home: str, node: str, lease_ms: int) -> str | None:
        """Creates `job` in Redis, with `node` holding its first lease: that lease's token, or
        None when Redis holds a job at its id already (never written over)."""
        with self._marked(job.id):
            faults.crash_at(job.crash_points, faults.BEFORE_CLUSTER_CREATE)
            return await self._redis.create(
                job.id, record_to_json(job.record, home), node, lease_ms
            )

    @contextlib.contextmanager
    def _marked(self, job_id: int) -> Iterator[None]:
        """Marked while the body runs; a kill -9 in it leaves the mark for the next start."""
        self._store.set_meta(_MARK + str(job_id), "")
        try:
            yield
        finally:
            self._store.delete_meta(_MARK + str(job_id))

    async def finish(self, jobs: JobsPort, claim: Callable[[Job], Awaitable[None]]) -> None:
        """Creates in Redis (with `claim`) each marked job Redis lacks, and resumes it."""
        marks = self._store.meta_keys(_MARK)
        if not marks:  # (every start but one after a kill -9 in the window)
            return
        in_redis = set(await self._redis.job_ids())
        for key in marks:
            self._store.delete_meta(key)
            try:
                job = jobs.get(int(key.removeprefix(_MARK)))
            except (ValueError, JobNotFound):
                continue
            if job.sealed or job.id in in_redis:
                continue
            try:
                await claim(job)
            except ClusterUnavailable as error:
                jobs.fail_start(job, error)
                continue
            logger.warning(
                "job %d: this node was stopped (kill -9) before the job reached Redis; "
                "created there now",
                job.id,
            )
            jobs.resume(job)
