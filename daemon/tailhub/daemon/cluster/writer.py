"""The lease holder's side of a job: what its fetcher gets goes to Redis first, then here.

The fetcher of a job whose lease this daemon holds writes through a `RedisFirst` sink
(sink.py). Its source appends as always, but the bytes wait in the job's `LogWriter` until
Redis has stored them (one Lua script that checks the lease and the log's size), and only
then enter the local log, through the same `LocalSink` as a daemon alone's, and reach the
followers here. Bytes, events, record saves and the job's end go to Redis in the
order they happened, so every daemon sees the same log, with events at the same offsets.

Redis restored from an older copy (an RDB, or an AOF that lost its last second) holds fewer
bytes of a log than it acknowledged. The holder notices (its append expects more, or the
node's check finds Redis behind) and writes the lost bytes back from its own copy, exactly,
under its lease, before it sends anything new: retrying the append as it was would be
refused again and again, and a fetch stopped for it would be restarted for ever.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from redis.exceptions import RedisError

from tailhub.daemon.cluster.lua import LOST, MISMATCH, STALE
from tailhub.daemon.cluster.placed import placed
from tailhub.daemon.cluster.records import record_to_json
from tailhub.daemon.cluster.redis_store import RedisStore
from tailhub.daemon.errors import BrokenJobKeys, FetchEnded, NotFetchedYet, NotStored, RedisBehind
from tailhub.daemon.faults import BEFORE_CLUSTER_END, BEFORE_CLUSTER_SAVE, crash_at

if TYPE_CHECKING:
    from tailhub.daemon.live_job import Job
    from tailhub.daemon.sink import LocalSink

logger = logging.getLogger(__name__)

# One Redis entry holds at most this much (consecutive appends are joined up to it).
MAX_ENTRY_BYTES = 256 * 1024
# Bytes a fetcher may get ahead of Redis; past it, the fetch pauses (memory stays bounded).
MAX_PENDING_BYTES = 16 * 1024 * 1024


@dataclass
class HeldLease:
    """A fetch lease this daemon holds: its token, and until when it is surely still ours."""

    job_id: int
    token: str
    # time.monotonic() past which the lease may have expired in Redis (renewals move it).
    valid_until: float
    lost: bool = False

    @property
    def epoch(self) -> int:
        return int(self.token.rsplit(" ", 1)[1])


@dataclass(frozen=True)
class _End:
    end: dict[str, Any]
    record: dict[str, Any]


@dataclass(frozen=True)
class _Record:
    record: dict[str, Any]


@dataclass(frozen=True)
class _Event:
    message: str


class WriterOwner(Protocol):
    """What a writer reports to (the cluster node)."""

    def lease_lost(self, job: Job, reason: str, *, stale_append: bool) -> None: ...

    def job_ended(self, job: Job) -> None: ...

    def redis_failed(self, error: Exception) -> None: ...

    def redis_ok(self) -> None: ...

    def data_lost(self) -> None:
        """Redis no longer holds the cluster's data (it restarted empty, or was flushed)."""

    def cannot_restore(self, job: Job, reason: str) -> None:
        """Redis went back in time and this node's copy cannot bring the log back."""


class LogWriter:
    """Sends one job's bytes, events, records and end to Redis, in order, under its lease."""

    def __init__(
        self,
        job: Job,
        lease: HeldLease,
        store: RedisStore,
        owner: WriterOwner,
        *,
        home: str,
        retention: int,
    ) -> None:
        self._job = job
        self.lease = lease
        self._store = store
        self._owner = owner
        self._home = home
        self._retention = retention
        self._ops: collections.deque[bytes | _Event | _Record | _End] = collections.deque()
        self.pending_bytes = 0
        self._wake = asyncio.Event()
        # Called with bytes once Redis stored them (the fetcher's local append).
        self.committed: Callable[[bytes], None] = lambda data: None
        self.event_committed: Callable[[str], None] = lambda message: None
        self.drained = asyncio.Event()
        self.drained.set()
        # The bytes of an append sent but not answered (a timeout): sent again exactly, so
        # that Redis's answer to the retry tells whether the first one was stored.
        self._in_flight: bytes | None = None
        self._ended = False
        # Whether Redis may hold fewer bytes than it acknowledged, checked (and the lost
        # ones written back) before anything else is sent: at the start of a lease (the
        # node may have taken back a job Redis forgot part of), and when told.
        self._check_end = True
        self._checked_after_mismatch = False
        # Where the job's end goes when Redis went back in time past what this copy holds
        # (the job failed for it): at Redis's end, not this copy's.
        self._end_at: int | None = None
        # Redis refuses this job's keys (BrokenJobKeys): the job failed, nothing more goes to
        # its stream, only its record and its end (which seals the record).
        self._broken = False
        self.drained.clear()

    # -- what the job's side queues ------------------------------------------------------------
    def append(self, data: bytes) -> None:
        if self._broken:
            return  # (the job failed: its fetch is being stopped)
        if self.pending_bytes + len(data) > MAX_PENDING_BYTES:
            raise RedisBehind(
                f"Redis has not stored the last {self.pending_bytes} bytes yet; "
                "the fetch waits for it"
            )
        self._ops.append(data)
        self.pending_bytes += len(data)
        self._kick()

    def pending(self) -> bytes:
        return b"".join(op for op in self._ops if isinstance(op, bytes))

    def discard_pending(self) -> None:
        self._in_flight = None
        self._ops = collections.deque(op for op in self._ops if not isinstance(op, bytes))
        self.pending_bytes = 0

    def event(self, message: str) -> None:
        if self._broken:
            self.event_committed(message)  # (the followers here get it; the stream cannot)
            return
        self._ops.append(_Event(message))
        self._kick()

    def save(self) -> None:
        record = record_to_json(self._job.record, self._home)
        # Only the newest record matters: one already waiting is replaced in place.
        if self._ops and isinstance(self._ops[-1], _Record):
            self._ops[-1] = _Record(record)
        else:
            self._ops.append(_Record(record))
        self._kick()

    def end(self) -> None:
        """The job is sealed here: its end follows its last byte into Redis."""
        record = self._job.record
        end = {"state": record.state.value, "exit_code": record.exit_code, "reason": record.reason}
        self._ops.append(_End(end, record_to_json(record, self._home)))
        self._kick()

    def check_end(self) -> None:
        """Redis may have gone back in time: compare its end with this copy's first."""
        self._check_end = True
        self._kick()

    def fail_at(self, size: int, reason: str) -> None:
        """The job fails with `reason`, its end at `size`, Redis's end, whatever this copy
        holds (one Redis will not bring to that size)."""
        self._check_end = False
        self._end_at = size
        self._owner.cannot_restore(self._job, reason)

    def _kick(self) -> None:
        if not self._ended:  # (once it has ended, nothing more is sent: nobody must wait)
            self.drained.clear()
        self._wake.set()

    # -- the task sending it ---------------------------------------------------------------------
    async def run(self) -> None:
        """Sends until the job's end is stored or the lease is lost."""
        try:
            await self._send_all()
        finally:
            # Whoever waits for the sending is told it ended (then the lease says how).
            self._ended = True
            self.drained.set()

    async def _send_all(self) -> None:
        failures = 0
        while True:
            if not self._ops and not self._check_end:
                self.drained.set()
                self._wake.clear()
                await self._wake.wait()
                continue
            if self.lease.lost:
                return
            try:
                if self._check_end:
                    finished = await self._restore_lost_bytes()
                else:
                    finished = await self._send_next()
            except RedisError as error:
                failures += 1
                self._owner.redis_failed(error)
                if time.monotonic() > self.lease.valid_until:
                    self._owner.lease_lost(
                        self._job, f"Redis unreachable ({error})", stale_append=False
                    )
                    return
                await asyncio.sleep(min(0.05 * 2**failures, 0.5))
                continue
            except BrokenJobKeys as error:
                if self._keys_broken(str(error)):
                    return
                continue
            if failures:
                failures = 0
                self._owner.redis_ok()
            if finished:
                return

    async def _send_next(self) -> bool:
        """Sends the first op (consecutive bytes together); True once the job is over here."""
        op = self._ops[0]
        if isinstance(op, bytes):
            return await self._send_bytes()
        job_id, token = self._job.id, self.lease.token
        if isinstance(op, _Event):
            status = await self._store.event(job_id, token, op.message)
        elif isinstance(op, _Record):
            crash_at(self._job.crash_points, BEFORE_CLUSTER_SAVE)
            status = await self._store.save(job_id, token, op.record)
        else:
            crash_at(self._job.crash_points, BEFORE_CLUSTER_END)
            size = self._job.log_size if self._end_at is None else self._end_at
            status = await self._store.end(job_id, token, size, op.end, op.record)
        if status == MISMATCH and isinstance(op, _End) and not self._checked_after_mismatch:
            return self._recheck()
        if status != 0:
            return self._refused(status, "the log in Redis does not end where it ends here")
        self._checked_after_mismatch = False
        if self._ops and self._ops[0] is op:  # (a newer record may have replaced it)
            self._ops.popleft()
        if isinstance(op, _Event):
            self.event_committed(op.message)
        elif isinstance(op, _End):
            self._owner.job_ended(self._job)
            return True
        return False

    async def _send_bytes(self) -> bool:
        data = self._in_flight = self._in_flight or self._take_bytes()
        expected = self._job.log_size
        status, size = await self._store.append(
            self._job.id, self.lease.token, expected, data, self._retention
        )
        # A retry of an append whose answer was lost finds it already stored.
        self._in_flight = None
        if status == 0 or (status == MISMATCH and size == expected + len(data)):
            self._checked_after_mismatch = False
            self._pop_bytes(len(data))
            self.committed(data)
            return False
        if status == MISMATCH and 0 <= size < expected and not self._checked_after_mismatch:
            return self._recheck()
        return self._refused(status, f"the log in Redis is {size} bytes, not {expected}")

    def _keys_broken(self, reason: str) -> bool:
        """Redis refuses this job's keys (someone planted a key of another type, or entries
        past its record): no failure of Redis's, so the node stays reachable. The job fails
        with the reason, once; its end still seals its record. True: the writer stops."""
        if self._broken:
            # Even its record or its end is refused: the fetch stops here.
            self._owner.lease_lost(self._job, reason, stale_append=False)
            return True
        self._broken = True
        logger.error("job %d: %s; the job fails", self._job.id, reason)
        for op in self._ops:
            if isinstance(op, _Event):
                self.event_committed(op.message)  # (to the followers here)
        self._ops = collections.deque(op for op in self._ops if isinstance(op, _Record | _End))
        self.discard_pending()
        self._check_end = False
        # Queues the job's end (failed, with the reason), which is sent next.
        self._owner.cannot_restore(self._job, reason)
        return False

    def _recheck(self) -> bool:
        """Redis holds fewer bytes than this copy: look again (once per mismatch; a second
        one in a row is no lost copy but someone else writing, and ends the fetch)."""
        self._checked_after_mismatch = True
        self._check_end = True
        return False

    async def _restore_lost_bytes(self) -> bool:
        """Compares Redis's end of the log with this copy's; where Redis holds fewer bytes
        (restored from an older copy), writes the ones it lost back from this copy, in
        order, under the lease. True when the fetch is over here."""
        job = self._job
        local = job.log_size
        held = await self._store.size(job.id)
        if held >= local:
            self._check_end = False
            # Equal: nothing lost. More: Redis holds bytes this node never stored, which
            # its next append finds (and then ends its fetch, as before).
            return False
        first = placed(job).first_offset
        if first > held:
            self._check_end = False
            message = (
                f"the cluster's Redis went back in time (restored from an older copy): it "
                f"holds {held} bytes of this log, not {local}, and this node's copy starts "
                f"at offset {first}, so bytes {held}-{first} are lost"
            )
            logger.error("job %d: %s", job.id, message)
            self.discard_pending()
            self._end_at = held
            # It fails the job: its end is queued here, and sent next.
            self._owner.cannot_restore(job, message)
            return False
        logger.warning(
            "job %d: the log in Redis is %d bytes, not %d (Redis restored from an older "
            "copy?): writing the lost bytes back from this node's copy",
            job.id,
            held,
            local,
        )
        offset = held
        while offset < local:
            data = job.log.read(offset, min(MAX_ENTRY_BYTES, local - offset))
            status, size = await self._store.append(
                job.id, self.lease.token, offset, data, self._retention
            )
            if status == MISMATCH and size == offset + len(data):
                status = 0  # (stored, its answer lost: this is the retry)
            if status != 0:
                return self._refused(status, f"the log in Redis is {size} bytes, not {offset}")
            offset += len(data)
        self._check_end = False
        node = self.lease.token.rsplit(" ", 1)[0]
        # Into the stream, after the bytes: every node's followers get it once, where it
        # happened (a node whose copy was longer than Redis's reads on from its own end).
        self._ops.appendleft(
            _Event(
                f"the cluster's Redis went back in time (restored from an older copy): it had "
                f"lost bytes {held}-{local} of this log; node {node} wrote them "
                "back from its copy"
            )
        )
        return False

    def _take_bytes(self) -> bytes:
        parts: list[bytes] = []
        size = 0
        for op in self._ops:
            if not isinstance(op, bytes) or (parts and size + len(op) > MAX_ENTRY_BYTES):
                break
            parts.append(op)
            size += len(op)
        return b"".join(parts)

    def _pop_bytes(self, size: int) -> None:
        while size:
            op = self._ops.popleft()
            assert isinstance(op, bytes)
            size -= len(op)
            self.pending_bytes -= len(op)

    def _refused(self, status: int, mismatch: str) -> bool:
        if status == LOST:
            self._owner.data_lost()
            return True
        if status == STALE:
            reason = "its lease was taken over (a write under it was refused)"
        else:
            reason = mismatch
            logger.error("job %d: %s; stopping its fetch here", self._job.id, mismatch)
        self._owner.lease_lost(self._job, reason, stale_append=status == STALE)
        return True


class RedisFirst:
    """The sink of a job whose lease this daemon holds (sink.py): bytes and events go to
    Redis first, and enter the log here (and reach the followers here) once Redis stored
    them, through the same `LocalSink` a daemon alone writes to."""

    def __init__(self, job: Job, writer: LogWriter, local: LocalSink) -> None:
        self._job = job
        self._writer = writer
        self._local = local
        writer.committed = local.append
        writer.event_committed = local.event

    @property
    def stored(self) -> int:
        return self._job.log_size + self._writer.pending_bytes

    def append(self, data: bytes) -> None:
        if data:
            self._writer.append(data)

    def read(self, offset: int, length: int) -> bytes:
        local = self._job.log_size
        head = self._job.log.read(offset, length) if offset < local else b""
        if len(head) == length:
            return head
        start = max(0, offset - local)
        return head + self._writer.pending()[start : start + length - len(head)]

    def discard_after(self, offset: int) -> None:
        if offset < self._job.log_size:
            raise RuntimeError(
                f"job {self._job.id}: bytes before {self._job.log_size} are in Redis already"
            )
        if offset != self._job.log_size:
            raise RuntimeError(f"job {self._job.id}: cannot cut pending bytes at {offset}")
        self._writer.discard_pending()

    def event(self, message: str) -> None:
        self._writer.event(message)

    async def flushed(self) -> None:
        await self._writer.drained.wait()
        if self._writer.lease.lost:
            # (It takes the job back once Redis is reachable again: a publisher retries.)
            raise NotFetchedYet(
                f"job {self._job.id}: this daemon lost the job's lease before Redis stored "
                f"the bytes; its log ends at offset {self._job.log_size}"
            )

    async def make_room(self, error: NotStored) -> bool:
        if not isinstance(error, RedisBehind):
            return False
        self._local.event(f"{error} (at offset {self._job.log_size})")
        await self._writer.drained.wait()
        return True

    async def settle(self) -> None:
        await self._writer.drained.wait()
        lease = self._writer.lease
        if lease.lost or time.monotonic() >= lease.valid_until:
            # The upstream ended because the lease was lost (the watchdog or the fence
            # killed it): that is no end of the job, and the node stops this fetch.
            raise FetchEnded(f"job {self._job.id}: this node no longer holds its lease")
