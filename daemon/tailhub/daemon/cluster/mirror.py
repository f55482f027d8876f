"""The followers' side of jobs fetched elsewhere: their logs, read from Redis into this daemon.

One read loop per daemon: a single blocking XREAD covers every job whose followers here
need bytes, and appends what it gets to the job's local log, from which the followers here
are served as always (cursors, no copy per follower). Redis sees one reader per daemon per
job, however many followers there are.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import TYPE_CHECKING, Protocol

from redis.exceptions import RedisError
from redis.exceptions import TimeoutError as RedisTimeoutError

from tailhub.daemon.cluster.placed import placed
from tailhub.daemon.cluster.redis_store import LogEntry, RedisStore
from tailhub.daemon.domain import JobState
from tailhub.daemon.errors import BadRecord, BrokenJobKeys
from tailhub.daemon.limits import MAX_REASON_BYTES

if TYPE_CHECKING:
    from tailhub.daemon.live_job import Job
    from tailhub.daemon.sink import LocalLog

logger = logging.getLogger(__name__)

# How long one XREAD waits for new entries: the longest a newly wanted job waits to join.
BLOCK_MS = 250
# Entries per stream and call (each at most a few hundred KiB).
READ_COUNT = 16
# A mirrored job nobody here follows is still read this long (a follower reconnecting).
LINGER_SECONDS = 30.0


class MirrorOwner(Protocol):
    def local_log(self, job: Job) -> LocalLog: ...

    def ended_remotely(self, job: Job) -> None: ...

    def starts_at(self, job: Job, offset: int) -> None: ...

    def redis_failed(self, error: Exception) -> None: ...

    def redis_ok(self) -> None: ...


class Mirror:
    """Fills the local logs of mirrored jobs from their streams."""

    def __init__(self, store: RedisStore, owner: MirrorOwner) -> None:
        self._store = store
        self._owner = owner
        # Watched jobs, with the id of the last entry applied and when last wanted.
        self._jobs: dict[int, Job] = {}
        self._after: dict[int, bytes] = {}
        self._wanted_at: dict[int, float] = {}
        # Jobs whose stream Redis refuses to read (BrokenJobKeys): not read again here.
        self._refused: set[int] = set()
        self._wake = asyncio.Event()
        # Set when the daemon stops (see ClusterNode.close).
        self.closing = False

    def want(self, job: Job) -> None:
        if job.id in self._refused:
            self._end_if_ended(job)  # (its end may have come after its stream was refused)
            return
        if job.sealed or not placed(job).mirrored:
            return
        if job.id not in self._jobs:
            self._jobs[job.id] = job
            self._after[job.id] = f"{job.log_size}-0".encode()
        self._wanted_at[job.id] = time.monotonic()
        self._wake.set()

    def forget(self, job_id: int) -> None:
        self._jobs.pop(job_id, None)
        self._after.pop(job_id, None)
        self._wanted_at.pop(job_id, None)

    def wanted(self) -> int:
        return len(self._jobs)

    async def run(self) -> None:
        failures = 0
        while not self.closing:
            after = self._interest()
            if not after:
                self._wake.clear()
                await self._wake.wait()
                continue
            # Seen sealed in Redis before the read: their whole stream, end included, was
            # there when it began (lua.END stores the end and the seal at once).
            sealed = [job_id for job_id in after if placed(self._jobs[job_id]).sealed]
            try:
                found = await self._store.read(after, count=READ_COUNT)
            except RedisError as error:
                failures += 1
                self._owner.redis_failed(error)
                await asyncio.sleep(min(0.1 * 2**failures, 2.0))
                continue
            except BrokenJobKeys as error:  # one job's stream, not Redis: the others go on
                self.refuse(error)
                continue
            if failures:
                failures = 0
                self._owner.redis_ok()
            for job_id in sealed:
                if job_id not in found and job_id in self._jobs:
                    self._short(self._jobs[job_id])
            if not found:
                await self._wait_for_entries(after)
                continue
            for job_id, entries in found.items():
                self._apply_read(job_id, entries)

    def _apply_read(self, job_id: int, entries: list[LogEntry]) -> None:
        job = self._jobs.get(job_id)
        if job is None or not placed(job).mirrored:
            return  # fetched here now: its own fetcher fills the log
        try:
            for entry in entries:
                # (A catch-up may have applied it meanwhile, from the same place.)
                if _order(entry.entry_id) <= _order(self._after.get(job_id, b"0-0")):
                    continue
                self.apply(job, entry)
                self._after[job_id] = entry.entry_id
        except Exception:  # one job's fault (a full disk) must not stop the others'
            logger.exception("job %d: its log cannot be read from Redis here", job_id)
            self.forget(job_id)

    async def _wait_for_entries(self, after: dict[int, bytes]) -> None:
        """Until a watched stream has a new entry (or BLOCK_MS). A timeout here is no fault
        of Redis's by itself: the entry that woke the wait may be one too large to read in
        time (planted), which the next `read` skips in Redis. If Redis is away, that read
        fails too, and says so."""
        try:
            await self._store.wait_for_entries(after, block_ms=BLOCK_MS)
        except RedisTimeoutError:
            pass
        except (RedisError, BrokenJobKeys):
            # Said by the next read, which meets the same fault; a pause, never a hot loop.
            await asyncio.sleep(BLOCK_MS / 1000)

    def _short(self, job: Job) -> None:
        """A job sealed in Redis whose stream ended before its end was read here (planted so,
        or the stream lost): it ends here with what it has, saying what is missing, instead of
        its followers waiting forever."""
        size = placed(job).size
        logger.warning(
            "job %d: its stream in Redis ends at byte %d of %d, without its end; it ends here "
            "with what it has",
            job.id,
            job.log_size,
            size,
        )
        self._owner.local_log(job).event(
            f"the cluster's copy of this log ends at byte {job.log_size} of {size}, without the "
            "job's end: the rest is not in Redis"
        )
        self.forget(job.id)
        self._owner.ended_remotely(job)

    def refused(self, job_id: int) -> bool:
        """Whether Redis refused this job's stream here (it is neither read nor taken over)."""
        return job_id in self._refused

    def refuse(self, error: BrokenJobKeys) -> None:
        """Stops reading the jobs whose stream Redis refuses, saying so once, here."""
        for job_id in error.job_ids:
            job = self._jobs.get(job_id)
            self.forget(job_id)
            if job is None or job_id in self._refused:
                continue
            self._refused.add(job_id)
            logger.error("job %d: %s; it is no longer read here", job_id, error)
            self._owner.local_log(job).event(f"{error}; this daemon no longer reads it")
            self._end_if_ended(job)

    def _end_if_ended(self, job: Job) -> None:
        """A job whose stream cannot be read here that ended where it ran ends here too, with
        what this copy has: its followers here waited for bytes that could never come."""
        if job.state.terminal and not job.sealed:
            self._owner.ended_remotely(job)

    def _interest(self) -> dict[int, bytes]:
        now = time.monotonic()
        for job_id, job in list(self._jobs.items()):
            idle = job.subscribers == 0 and now - self._wanted_at[job_id] > LINGER_SECONDS
            if job.sealed or job.removed or idle:
                self.forget(job_id)
        return {
            job_id: self._after[job_id]
            for job_id, job in self._jobs.items()
            if placed(job).mirrored
        }

    async def catch_up(self, job: Job, size: int) -> None:
        """Reads the job's stream until the local log holds `size` bytes (before this daemon
        takes over its fetch, so that it appends where the cluster's log ends)."""
        # Followed here: from the last entry the followers here got, events included (past
        # them, the read loop would never give them the events read here). Else from the
        # local end, bytes only.
        followed_from = self._after.get(job.id)
        after = followed_from if followed_from is not None else f"{job.log_size}-0".encode()
        while job.log_size < size:
            entries = await self._store.read_range(job.id, after, READ_COUNT)
            if not entries:
                # (Its record says more than its stream holds: planted so, or Redis restored
                # from an older copy. This node cannot catch up on it from Redis.)
                raise BadRecord(
                    f"job {job.id}: Redis holds {size} bytes but its stream ends at {job.log_size}"
                )
            for entry in entries:
                # (The end is the old holder's to apply, through the read loop.)
                if entry.data is not None or (
                    followed_from is not None and entry.event is not None
                ):
                    self.apply(job, entry)
                after = entry.entry_id
        if job.id in self._after:  # (followed here meanwhile: read on from there)
            self._after[job.id] = after

    def apply(self, job: Job, entry: LogEntry) -> None:
        """Adds one entry to the local copy (bytes already there are skipped), through the
        path a fetcher's bytes and events take here (sink.py): stored and limited alike."""
        size = job.log_size
        log = self._owner.local_log(job)
        if entry.data is not None:
            end = entry.offset + len(entry.data)
            if end <= size:
                return
            if entry.offset > size:
                # Trimmed from Redis before this daemon read them: this daemon's copy starts
                # after a hole, which is never served (Placed.first_offset).
                logger.info(
                    "job %d: bytes %d-%d were trimmed from Redis before this daemon read them",
                    job.id,
                    size,
                    entry.offset,
                )
                job.log.skip_to(entry.offset)
                self._owner.starts_at(job, entry.offset)
                log.event(
                    f"bytes before offset {entry.offset} were trimmed from the cluster's "
                    "copy before this daemon read them"
                )
                size = entry.offset
            log.append(entry.data[size - entry.offset :])
        elif entry.event is not None:
            log.copied_event(entry.event)
        elif entry.end is not None and entry.offset == size:
            _apply_end(job, entry.end)
            self.forget(job.id)
            self._owner.ended_remotely(job)


def _order(entry_id: bytes) -> tuple[int, int]:
    """A stream entry id as Redis orders them (one that is not an id sorts first)."""
    offset, _, sequence = entry_id.partition(b"-")
    try:
        return int(offset), int(sequence or 0)
    except ValueError:
        return -1, -1


def _apply_end(job: Job, end: dict[str, object]) -> None:
    record = job.record
    try:
        record.state = JobState.read(str(end["state"]))
        code = end.get("exit_code")
        record.exit_code = code if isinstance(code, int) else None
        record.reason = str(end.get("reason", ""))[:MAX_REASON_BYTES]
    except (KeyError, TypeError, ValueError):
        record.state, record.exit_code = JobState.FAILED, None
        record.reason = "the job ended, but its end in Redis cannot be read"
    if not record.ended_at:
        record.ended_at = time.time()
