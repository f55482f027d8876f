"""Takeover: this node takes the lease of each job nobody fetches that it may fetch.

A job nobody fetches is one whose holder died, was cut off from Redis, or stopped. Command
and SkyPilot jobs can be fetched by any node; local, file and push jobs only by their home
node (which takes them back when it restarts). Before the lease, the node reads the job's
stream up to its end (the lease's clock runs from then), after it the last few bytes; then
the fetch resumes where the cluster's copy ends, as after a reconnect.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from typing import TYPE_CHECKING, Protocol

from redis.exceptions import RedisError

from tailhub.daemon.cluster.mirror import Mirror
from tailhub.daemon.cluster.placed import placed
from tailhub.daemon.cluster.redis_store import JobMeta, RedisStore
from tailhub.daemon.cluster.sync import RecordSync
from tailhub.daemon.cluster.writer import HeldLease, LogWriter
from tailhub.daemon.domain import SourceKind
from tailhub.daemon.errors import BadRecord, BrokenJobKeys
from tailhub.daemon.runner import RUN_HANDLE_KEYS

if TYPE_CHECKING:
    from tailhub.daemon.live_job import Job
    from tailhub.daemon.placement import JobsPort

logger = logging.getLogger(__name__)

# Kinds any node can fetch; the others run or are read on the node that started them.
FETCHED_ANYWHERE = (SourceKind.COMMAND, SourceKind.SKYPILOT)


class TakeoverOwner(Protocol):
    """What a takeover needs of its node."""

    name: str
    connected: bool
    lost_data: bool
    closing: bool

    @property
    def held(self) -> dict[int, HeldLease]: ...

    @property
    def lease_ms(self) -> int: ...

    def hold(self, job: Job, token: str, sent_at: float) -> LogWriter: ...

    def redis_failed(self, error: Exception) -> None: ...


class Takeover:
    """The node's take-over loop."""

    def __init__(
        self,
        redis: RedisStore,
        manager: JobsPort,
        mirror: Mirror,
        records: RecordSync,
        owner: TakeoverOwner,
    ) -> None:
        self._redis = redis
        self._manager = manager
        self._mirror = mirror
        self._records = records
        self._owner = owner
        # Jobs whose stream was found short of their record here, said once each.
        self._short: set[int] = set()

    async def run(self) -> None:
        owner = self._owner
        while not owner.closing:
            pause = min(0.5, owner.lease_ms / 6000)
            await asyncio.sleep(pause * random.uniform(0.8, 1.2))
            if not owner.connected or owner.lost_data:
                continue
            try:
                await self._records.refresh_running()
                await self._round()
            except RedisError as error:
                owner.redis_failed(error)
            except Exception:  # a bug: reported, and the loop goes on (no job left behind)
                logger.exception("cluster: the take-over round failed")

    def may_take(self, job: Job) -> bool:
        if job.record.spec.kind in FETCHED_ANYWHERE:
            return True
        return placed(job).home == self._owner.name

    async def _round(self) -> None:
        held = self._owner.held
        candidates = [
            job
            for job in self._manager.all_jobs()
            if job.id not in held and self._candidate(job) and not self._mirror.refused(job.id)
        ]
        if not candidates:
            return
        holders = await self._redis.leases([job.id for job in candidates], self._owner.lease_ms)
        random.shuffle(candidates)
        for job in candidates:
            holder = holders.get(job.id, "")
            view = placed(job)
            view.holder = holder.rsplit(" ", 1)[0]
            if holder or job.id in held:
                continue
            # Most of the way before the lease: its clock runs from `sent`.
            if view.mirrored and not job.sealed and not await self._caught_up(job, view.size):
                continue
            sent = time.monotonic()
            token = await self._redis.acquire(job.id, self._owner.name, self._owner.lease_ms)
            if token is not None:
                await self._take(job, token, sent)

    def _candidate(self, job: Job) -> bool:
        """A job whose fetch this node may take, or whose end it may store."""
        view = placed(job)
        if view.sealed:  # (sealed in Redis, maybe not yet here: ended, nothing to take)
            return False
        if job.sealed:
            return view.end_unstored
        return self.may_take(job)

    async def _caught_up(self, job: Job, size: int) -> bool:
        """Reads a mirrored job's stream up to `size` before its lease; False when it cannot
        be taken over from here (said once), and the round goes on with the next job."""
        try:
            await self._mirror.catch_up(job, size)
        except BrokenJobKeys as error:
            # Its stream in Redis is not a log (a key planted there): said once, and never
            # taken over here (it failed the whole round, every round).
            self._mirror.refuse(error)
            return False
        except BadRecord as error:  # (its record says more than its stream holds)
            # It used to end the round, and 40 such records planted in Redis made a take-over
            # after a kill take 7-14 s instead of 3 (the candidates come in random order).
            # Tried again next round: the node holding the longest copy may repair it.
            if job.id not in self._short:
                self._short.add(job.id)
                logger.warning("%s; it is not taken over from this node", error)
            return False
        return True

    async def _take(self, job: Job, token: str, sent: float) -> None:
        meta = (await self._redis.metas([job.id])).get(job.id)
        if not isinstance(meta, JobMeta) or meta.sealed:
            await self._redis.release(job.id, token)
            return
        if job.sealed:
            # Its whole log and its end are here: the end goes to Redis (after any bytes Redis
            # lost, written back first), and nothing is fetched again.
            logger.warning("job %d: it ended here, but its end is not in Redis: storing it", job.id)
            self._owner.hold(job, token, sent).end()
            return
        try:
            if job.log.writable:
                try:
                    await self._mirror.catch_up(job, meta.size)
                except BadRecord as error:
                    # Its stream can never bring a copy to what its record says (an entry no
                    # node reads, or a size it never had: planted). The job fails with that,
                    # once, at Redis's end: a take-over refused every round fetched nothing.
                    logger.error("%s; the job fails", error)
                    self._owner.hold(job, token, sent).fail_at(meta.size, str(error))
                    return
            elif job.log_size > meta.size:
                job.observe_from(meta.size)
            elif job.log_size < meta.size:
                raise RuntimeError(
                    f"its log here holds {job.log_size} bytes, Redis {meta.size}: it is not "
                    "the same log"
                )
            # A record Redis holds wrongly (BadRecord) is not taken over either.
            self._records.apply_record(job, meta)
        except Exception as error:
            logger.error("job %d: cannot take over its fetch: %s", job.id, error)
            await self._redis.release(job.id, token)
            return
        if job.record.spec.kind in FETCHED_ANYWHERE:
            # The previous holder's command ran on its host (and died with it, or was
            # stopped there): never a process of this one. (A local job's process is this
            # node's own, and is adopted again.)
            for key in RUN_HANDLE_KEYS:
                job.record.source_state.pop(key, None)
        writer = self._owner.hold(job, token, sent)
        logger.info("job %d: this node fetches it now (lease %s)", job.id, token)
        self._manager.resume(job)
        # Into the log's stream, after the fetcher exists: followers everywhere see it.
        writer.event(f"node {self._owner.name} fetches this job now")
