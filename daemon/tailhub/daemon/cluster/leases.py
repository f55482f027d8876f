"""The fetch leases a node holds: each with its writer and its deadline, renewed together.

A lease is surely the node's until a share of its length after its renewal was sent; at
that moment its fetch stops (here, in the watchdog thread, and in the node's fence, which
kills its command), before anyone else can take it. Every lease is renewed in one round trip
to Redis, and the fence told of every new moment in one message. What a lost lease means for
the job is the node's to say (`LeaseOwner.lease_expired`).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from typing import TYPE_CHECKING, Protocol

from redis.exceptions import RedisError

from tailhub.daemon.cluster.redis_store import RedisStore
from tailhub.daemon.cluster.watchdog import LeaseWatchdog
from tailhub.daemon.cluster.writer import HeldLease, LogWriter, WriterOwner
from tailhub.daemon.runner import RunHandle

if TYPE_CHECKING:
    from tailhub.daemon.config import ClusterSettings
    from tailhub.daemon.live_job import Job
    from tailhub.daemon.placement import JobsPort
    from tailhub.daemon.process.fences import NodeFence
    from tailhub.daemon.tasks import TaskSet

# A lease is surely ours until this share of its length after a renewal was sent (the rest
# covers the trip to Redis and clocks that drift): the fetch stops here at that moment.
_SAFE_SHARE = 0.6


class LeaseOwner(WriterOwner, Protocol):
    """The node the leases are held for."""

    def lease_expired(self, job_id: int, reason: str) -> None:
        """The job's lease may have expired: its fetch here stops."""


class Leases:
    """The leases a node holds, by job id."""

    def __init__(
        self,
        redis: RedisStore,
        settings: ClusterSettings,
        fence: NodeFence,
        tasks: TaskSet,
        owner: LeaseOwner,
    ) -> None:
        self._redis = redis
        self._settings = settings
        # The fence around this node's upstream commands, told of every renewal.
        self._fence = fence
        self._tasks = tasks
        self._owner = owner
        self.held: dict[int, HeldLease] = {}
        self.writers: dict[int, LogWriter] = {}
        self._deadlines: dict[int, asyncio.TimerHandle] = {}
        # Set (and replaced) whenever this node takes a lease.
        self.took = asyncio.Event()
        self.watchdog = LeaseWatchdog()

    @property
    def _lease_s(self) -> float:
        return self._settings.lease_ms / 1000

    def hold(self, job: Job, token: str, sent_at: float, *, home: str) -> LogWriter:
        """This node fetches the job now, under the lease `token` acquired at `sent_at`;
        returns the writer its fetcher's bytes go through."""
        lease = HeldLease(job.id, token, sent_at + self._lease_s * _SAFE_SHARE)
        self.held[job.id] = lease
        # Publishes waiting for this node to take a job back look again.
        self.took.set()
        self.took = asyncio.Event()
        writer = LogWriter(
            job,
            lease,
            self._redis,
            self._owner,
            home=home,
            retention=self._settings.retention_bytes,
        )
        self.writers[job.id] = writer
        self._tasks.spawn(writer.run(), name=f"cluster-writer-{job.id}")
        self._arm_deadline(lease)
        self.watchdog.guard(lease, lambda: RunHandle.from_json(job.record.source_state))
        return writer

    def drop(self, job_id: int) -> HeldLease | None:
        """Forgets the job's lease (lost, or its job ended); returns it if it was held."""
        self.watchdog.forget(job_id)
        self._fence.drop(job_id)
        self.writers.pop(job_id, None)
        handle = self._deadlines.pop(job_id, None)
        if handle is not None:
            handle.cancel()
        return self.held.pop(job_id, None)

    async def renew(self, sent: float) -> None:
        """Renews every lease held (the renewals sent at `sent`), in one round trip."""
        for lease in list(self.held.values()):
            if lease.lost:  # the watchdog stopped its upstream
                self._expire(lease)
        asked = {job_id: lease for job_id, lease in self.held.items() if not lease.lost}
        renewed = await self._redis.renew_all(
            {job_id: lease.token for job_id, lease in asked.items()}, self._settings.lease_ms
        )
        if renewed is None:
            self._owner.data_lost()
            return
        extended: dict[int, float] = {}
        for job_id, lease in asked.items():
            if self.held.get(job_id) is not lease:
                continue  # (dropped while Redis answered)
            if renewed[job_id]:
                lease.valid_until = sent + self._lease_s * _SAFE_SHARE
                self._arm_deadline(lease, tell_fence=False)
                extended[job_id] = lease.valid_until
            else:
                self._owner.lease_expired(job_id, "its lease expired")
        self._fence.extend(extended)

    async def check_ends(self, jobs: JobsPort) -> None:
        """Whether Redis went back in time (restored from an older copy) under a job held
        here: it then holds fewer bytes than it acknowledged, which only the holder's own
        copy can give back (its writer does, before anything new)."""
        before = {job_id: jobs.get(job_id).log_size for job_id in self.held}
        if not before:
            return
        # (Sizes here taken first: they grow only once Redis stored the bytes, so Redis
        # holding fewer than that is Redis having lost them, never a race with an append.)
        found = await self._redis.sizes(list(before))
        for job_id, (size, _, _) in found.items():
            writer = self.writers.get(job_id)
            if writer is not None and size < before[job_id]:
                writer.check_end()

    async def give_back(self, lease: HeldLease) -> None:
        with contextlib.suppress(RedisError):
            await self._redis.release(lease.job_id, lease.token)

    def stop(self) -> None:
        """The daemon stops: every writer ends, and every fence kills its command."""
        for lease in self.held.values():
            lease.lost = True  # (its writer ends)

    def close(self) -> None:
        self.watchdog.close()
        self._fence.close()
        for handle in self._deadlines.values():
            handle.cancel()

    async def release_all(self) -> None:
        """Gives every lease back (another node takes over at once). RedisError when it
        cannot (they expire on their own)."""
        for job_id, lease in list(self.held.items()):
            await self._redis.release(job_id, lease.token)

    def _arm_deadline(self, lease: HeldLease, *, tell_fence: bool = True) -> None:
        """Stops the fetch when the lease may have expired: before anyone else can take it
        (here, in the watchdog thread, and in the node's fence)."""
        if tell_fence:
            self._fence.extend({lease.job_id: lease.valid_until})
        old = self._deadlines.pop(lease.job_id, None)
        if old is not None:
            old.cancel()
        loop = asyncio.get_running_loop()
        delay = lease.valid_until - time.monotonic()
        self._deadlines[lease.job_id] = loop.call_later(max(0.0, delay), self._expire, lease)

    def _expire(self, lease: HeldLease) -> None:
        if self.held.get(lease.job_id) is lease and (
            lease.lost or time.monotonic() >= lease.valid_until
        ):
            self._owner.lease_expired(lease.job_id, "its lease could not be renewed in time")
