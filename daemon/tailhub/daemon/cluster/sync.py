"""Job records from Redis into this daemon: every node lists every job, as the cluster has it.

Changes are announced on a pub/sub channel and applied as they come; every record is also read
again now and then, since pub/sub forgets what it sent while a node was away. What Redis holds
is checked like any input: a record that cannot be used is reported (once) and left out, and
never stops the others from being applied.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import TYPE_CHECKING, Protocol

from redis.exceptions import RedisError

from tailhub.daemon.cluster.mirror import Mirror
from tailhub.daemon.cluster.placed import ClusterJob, placed
from tailhub.daemon.cluster.records import record_from_json
from tailhub.daemon.cluster.redis_store import CHANGES, JobMeta, RedisStore
from tailhub.daemon.cluster.writer import HeldLease
from tailhub.daemon.domain import SourceKind
from tailhub.daemon.errors import BadRecord, JobNotFound

if TYPE_CHECKING:
    from tailhub.daemon.live_job import Job
    from tailhub.daemon.placement import JobsPort
    from tailhub.daemon.store import JobStore

logger = logging.getLogger(__name__)

# Every record is read again this often.
RESYNC_SECONDS = 10.0
# Records read from Redis per round trip.
_BATCH = 500
# Bad records remembered as reported, so that each is logged once.
MAX_REPORTED = 10_000


class SyncOwner(Protocol):
    """What the record sync needs of its node."""

    name: str
    lost_data: bool
    closing: bool

    @property
    def held(self) -> dict[int, HeldLease]: ...

    def redis_failed(self, error: Exception) -> None: ...

    def request_local_cancel(self, job: Job) -> None: ...


def first_offset_key(job_id: int) -> str:
    """Where the local database remembers the first offset a mirrored log has here."""
    return f"first_offset:{job_id}"


class RecordSync:
    """Applies the records Redis has to this daemon's jobs."""

    def __init__(
        self,
        redis: RedisStore,
        manager: JobsPort,
        store: JobStore,
        mirror: Mirror,
        owner: SyncOwner,
        *,
        retry_seconds: float,
    ) -> None:
        self._redis = redis
        self._manager = manager
        self._store = store
        self._mirror = mirror
        self._owner = owner
        self._retry_seconds = retry_seconds
        # Jobs whose record was reported unusable (reported once each, within MAX_REPORTED).
        self._reported: set[int] = set()

    async def listen(self) -> None:
        """Applies announced changes as they come, and every record now and then."""
        while not self._owner.closing:
            pubsub = self._redis.client.pubsub()
            try:
                await pubsub.subscribe(CHANGES)
                await self.sync_all()
                resync_at = time.monotonic() + RESYNC_SECONDS
                while not self._owner.closing:
                    changed = await _announced(pubsub)
                    if changed:
                        await self.sync(sorted(changed))
                    if time.monotonic() > resync_at:
                        await self.sync_all()
                        resync_at = time.monotonic() + RESYNC_SECONDS
            except (RedisError, OSError) as error:
                self._owner.redis_failed(error)
                await asyncio.sleep(self._retry_seconds)
            finally:
                await pubsub.aclose()  # type: ignore[no-untyped-call]

    async def sync_all(self) -> None:
        await self.sync(await self._redis.job_ids())

    async def sync(self, job_ids: list[int]) -> None:
        # Read after the ids: a daemon takes a job's id from the counter (INCR) before it
        # writes the record, so a record whose id is above the counter now was written by
        # someone else (and adopting it would also raise every later id past it).
        counter = await self._redis.highest_job_id()
        ahead = [job_id for job_id in job_ids if job_id > counter]
        if ahead:
            self._report_ahead(ahead, counter)
            job_ids = [job_id for job_id in job_ids if job_id <= counter]
        for start in range(0, len(job_ids), _BATCH):
            metas = await self._redis.metas(job_ids[start : start + _BATCH])
            for job_id, meta in metas.items():
                try:
                    if isinstance(meta, BadRecord):
                        raise meta
                    self._apply(job_id, meta)
                except Exception as error:
                    # Whoever can write to Redis wrote it: one bad record is left out (said
                    # once), never the end of the sync, of the other jobs, or of a start.
                    if _first_time(self._reported, job_id):
                        logger.warning("cluster: job %d left out: %r", job_id, error)

    def _report_ahead(self, ahead: list[int], counter: int) -> None:
        """One line for the records at ids the counter never gave that were not reported
        yet, however many there are."""
        new = [job_id for job_id in ahead if _first_time(self._reported, job_id)]
        if new:
            shown = ", ".join(str(job_id) for job_id in new[:3])
            more = f" and {len(new) - 3} more" if len(new) > 3 else ""
            logger.warning(
                "cluster: left out %d job record(s) at ids the cluster's counter (%d) never "
                "gave: %s%s (written into Redis by someone else)",
                len(new),
                counter,
                shown,
                more,
            )

    async def refresh_running(self) -> None:
        """Sizes and holders of the running jobs fetched elsewhere, as `jobs queue` shows."""
        held = self._owner.held
        running = [
            job.id for job in self._manager.all_jobs() if not job.sealed and job.id not in held
        ]
        for start in range(0, len(running), _BATCH):
            found = await self._redis.sizes(running[start : start + _BATCH])
            for job_id, (size, holder, first) in found.items():
                view = placed(self._manager.get(job_id))
                view.size, view.holder, view.kept_from = size, holder, first

    def _apply(self, job_id: int, meta: JobMeta) -> None:
        if self._owner.lost_data:
            return
        try:
            job = self._manager.get(job_id)
        except JobNotFound:
            record, home = record_from_json(job_id, meta.record)
            if home == self._owner.name:
                # Every job pinned to this node (local, file, push) is in its own database
                # since it created it: one it does not have was written into Redis by someone
                # else, and adopting it would run the task, or read the file, the record names.
                raise BadRecord(
                    f"a {record.spec.kind.value} job of node {home} that this node never "
                    "launched or attached"
                ) from None
            # Sealed here once this node's copy holds the whole log (below, or the mirror):
            # a job that ended before this node saw it has none of its bytes here yet, and
            # sealed now its followers here got an empty log with its exit status.
            record.sealed = False
            job = self._manager.adopt(record, ClusterJob(home=home, mirrored=True))
        if job.id in self._owner.held:
            if meta.cancel and not job.state.terminal and not job.record.cancel_requested:
                self._owner.request_local_cancel(job)
            return
        self.apply_record(job, meta)
        if meta.sealed and not job.sealed:
            if job.log_size >= meta.size and job.state.terminal:
                self._manager.ended_elsewhere(job)
            elif job.subscribers:
                self._mirror.want(job)

    def apply_record(self, job: Job, meta: JobMeta) -> None:
        """Takes the record Redis has of a job this node does not fetch."""
        record, home = record_from_json(job.id, meta.record)
        # Filled from Redis here, unless it is a local job of this node (which writes its
        # own log file, and only this node can fetch).
        view = placed(job)
        view.mirrored = not (record.spec.kind is SourceKind.LOCAL and home == self._owner.name)
        if view.mirrored and not view.first_offset and job.log_size:
            view.first_offset = int(self._store.meta(first_offset_key(job.id)) or 0)
        view.size = meta.size
        view.sealed = meta.sealed
        # (A copy shorter than Redis's is not whole: never its end, or each round would try.)
        view.end_unstored = job.sealed and not meta.sealed and job.log_size >= meta.size
        view.home = home
        view.holder = meta.holder
        mine = job.record
        if job.sealed or (mine.state.terminal and not record.state.terminal):
            # (Ended here, not yet in Redis: the node that ended it was killed before its
            # record got there. An older record never brings a job back to life.)
            return
        changed = mine.state != record.state
        mine.state = record.state
        mine.exit_code = record.exit_code
        mine.reason = record.reason
        mine.started_at = record.started_at
        mine.ended_at = record.ended_at
        mine.upstream_connections = record.upstream_connections
        # The process handle of a command fetched elsewhere names a process of another host.
        if record.spec.kind is not SourceKind.LOCAL:
            mine.source_state = record.source_state
        mine.cancel_requested = record.cancel_requested
        self._manager.save_or_defer(job)
        if changed:
            job.changed.notify()


def _first_time(reported: set[int], job_id: int) -> bool:
    """Whether `job_id` is reported now: not yet, and the set of those reported is bounded
    (when full it starts again, so a flood of bad ids costs a line per MAX_REPORTED)."""
    if job_id in reported:
        return False
    if len(reported) >= MAX_REPORTED:
        reported.clear()
    reported.add(job_id)
    return True


async def _announced(pubsub: object) -> set[int]:
    """The job ids announced within a second (a burst is taken whole); anything else on the
    channel (a hostile publisher) is ignored."""
    changed: set[int] = set()
    message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=1.0)  # type: ignore[attr-defined]
    while message is not None:
        data = message.get("data")
        if isinstance(data, bytes) and data.isdigit() and len(data) < 20:
            changed.add(int(data))
        message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=0)  # type: ignore[attr-defined]
    return changed
