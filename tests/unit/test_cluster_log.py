"""A job's log across a cluster, against a real redis-server: the lease holder's `LogWriter`
(cluster/writer.py) sends bytes, events and the end to Redis first and commits them here only
once stored; another node's `Mirror` (cluster/mirror.py) copies them into its own log, at the
same offsets, through the same commit path. No daemon: two jobs in two directories stand for
the two nodes."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path

import redis.asyncio

from harness.redis_server import RedisServer
from tailhub.daemon.cluster.mirror import Mirror
from tailhub.daemon.cluster.placed import placed
from tailhub.daemon.cluster.records import record_to_json
from tailhub.daemon.cluster.redis_store import RedisStore
from tailhub.daemon.cluster.writer import HeldLease, LogWriter
from tailhub.daemon.counts import DaemonCounts
from tailhub.daemon.domain import JobRecord, JobState, PushSpec
from tailhub.daemon.live_job import Job
from tailhub.daemon.sink import LocalLog, LocalSink

JOB_ID = 5
LEASE_MS = 30_000


@dataclass
class Node:
    """What a writer, a mirror and a log report to on one node (the node and job manager)."""

    events: list[str] = field(default_factory=list)
    lost: list[tuple[str, bool]] = field(default_factory=list)
    ended: list[int] = field(default_factory=list)
    remote_ends: list[int] = field(default_factory=list)
    first_offsets: list[int] = field(default_factory=list)

    # CommitOwner (sink.py)
    def appended(self, job: Job) -> None:
        job.changed.notify()

    def record_event(self, job: Job, message: str) -> None:
        self.events.append(message)

    def copied_event(self, job: Job, message: str) -> None:
        self.events.append(message)

    # WriterOwner
    def lease_lost(self, job: Job, reason: str, *, stale_append: bool) -> None:
        self.lost.append((reason, stale_append))

    def job_ended(self, job: Job) -> None:
        self.ended.append(job.id)

    def redis_failed(self, error: Exception) -> None:
        raise AssertionError(f"Redis failed: {error}")

    def redis_ok(self) -> None:
        pass

    def data_lost(self) -> None:
        raise AssertionError("data lost")

    def cannot_restore(self, job: Job, reason: str) -> None:
        raise AssertionError(reason)

    # MirrorOwner
    def local_log(self, job: Job) -> LocalLog:
        return LocalLog(job, self)

    def starts_at(self, job: Job, offset: int) -> None:
        placed(job).first_offset = offset
        self.first_offsets.append(offset)

    def ended_remotely(self, job: Job) -> None:
        self.remote_ends.append(job.id)


def make_job(directory: Path, *, mirrored: bool) -> Job:
    directory.mkdir()
    record = JobRecord(id=JOB_ID, name="", spec=PushSpec(), state=JobState.RUNNING)
    job = Job(record, directory / "5.log", 1 << 20, directory / "5.times", directory / "5.acked")
    placed(job).mirrored = mirrored
    return job


@dataclass
class Cluster:
    store: RedisStore
    holder: Job
    holder_node: Node
    writer: LogWriter
    follower: Job
    follower_node: Node
    mirror: Mirror


@asynccontextmanager
async def cluster(
    server: RedisServer, directory: Path, retention: int = 0
) -> AsyncIterator[Cluster]:
    async with redis.asyncio.Redis(host="127.0.0.1", port=server.port) as client:
        store = RedisStore(client)
        await store.ensure_cluster_id()
        holder = make_job(directory / "n1", mirrored=False)
        token = await store.create(JOB_ID, record_to_json(holder.record, "n1"), "n1", LEASE_MS)
        assert token is not None
        holder_node = Node()
        lease = HeldLease(JOB_ID, token, time.monotonic() + LEASE_MS / 1000)
        writer = LogWriter(holder, lease, store, holder_node, home="n1", retention=retention)
        local = LocalSink(holder, LocalLog(holder, holder_node), DaemonCounts())
        writer.committed = local.append
        writer.event_committed = local.event
        follower = make_job(directory / "n2", mirrored=True)
        follower_node = Node()
        mirror = Mirror(store, follower_node)
        tasks = [asyncio.create_task(writer.run()), asyncio.create_task(mirror.run())]
        try:
            yield Cluster(store, holder, holder_node, writer, follower, follower_node, mirror)
        finally:
            mirror.closing = True
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            holder.close()
            follower.close()


def run(scenario: Callable[[], Awaitable[None]]) -> None:
    asyncio.run(asyncio.wait_for(scenario(), 30))


async def until(condition: Callable[[], bool], what: str) -> None:
    for _ in range(2000):
        if condition():
            return
        await asyncio.sleep(0.005)
    raise AssertionError(f"timed out waiting for {what}")


CHUNKS = [b"line %d\n" % number for number in range(50)]


def test_the_holders_bytes_enter_its_log_only_once_redis_stored_them(
    redis_server: RedisServer, tmp_path: Path
) -> None:
    async def scenario() -> None:
        async with cluster(redis_server, tmp_path) as made:
            for chunk in CHUNKS:
                made.writer.append(chunk)
            assert made.holder.log_size == 0  # nothing here before Redis has it
            assert made.writer.pending_bytes == len(b"".join(CHUNKS))
            await asyncio.wait_for(made.writer.drained.wait(), 10)
            assert made.holder.log.read(0, 10_000) == b"".join(CHUNKS)
            assert await made.store.size(JOB_ID) == len(b"".join(CHUNKS))
            assert made.writer.pending_bytes == 0
            # Each stream entry's id is the offset where its bytes end.
            entries = await made.store.read_range(JOB_ID, b"0-0", 1000)
            assert b"".join(entry.data or b"" for entry in entries) == b"".join(CHUNKS)
            for entry in entries:
                assert entry.entry_id == b"%d-0" % (entry.offset + len(entry.data or b""))

    run(scenario)


def test_another_node_copies_bytes_events_and_the_end_at_the_same_offsets(
    redis_server: RedisServer, tmp_path: Path
) -> None:
    async def scenario() -> None:
        async with cluster(redis_server, tmp_path) as made:
            made.mirror.want(made.follower)
            for chunk in CHUNKS[:20]:
                made.writer.append(chunk)
            made.writer.event("upstream reconnected")
            for chunk in CHUNKS[20:]:
                made.writer.append(chunk)
            made.holder.record.state = JobState.SUCCEEDED
            made.holder.record.exit_code = 0
            made.writer.end()
            # (The holder hears that Redis took its end once Redis answers: the follower may
            # copy the end first.)
            await until(
                lambda: made.follower_node.remote_ends != [] and made.holder_node.ended != [],
                "the end to be copied and acknowledged",
            )
            assert made.follower.log.read(0, 10_000) == made.holder.log.read(0, 10_000)
            assert made.holder_node.events == ["upstream reconnected"]
            assert made.follower_node.events == ["upstream reconnected"]
            assert made.follower.record.state is JobState.SUCCEEDED
            assert made.follower.record.exit_code == 0
            assert made.holder_node.ended == [JOB_ID]

    run(scenario)


def test_a_holder_whose_lease_was_taken_over_can_never_write_again(
    redis_server: RedisServer, tmp_path: Path
) -> None:
    async def scenario() -> None:
        async with cluster(redis_server, tmp_path) as made:
            made.writer.append(b"before\n")
            await asyncio.wait_for(made.writer.drained.wait(), 10)
            # The lease expired (a stalled holder) and another node took the job.
            await made.store.client.delete(f"tailhub:lease:{JOB_ID}")
            assert await made.store.acquire(JOB_ID, "n2", LEASE_MS) is not None
            made.writer.append(b"stale\n")
            await until(lambda: made.holder_node.lost != [], "the lease to be found lost")
            assert made.holder_node.lost[0][1]  # a stale append, refused by Redis
            assert await made.store.size(JOB_ID) == len(b"before\n")
            assert made.holder.log.read(0, 100) == b"before\n"  # never committed here

    run(scenario)


def test_a_node_that_reads_after_redis_trimmed_the_start_serves_from_after_a_hole(
    redis_server: RedisServer, tmp_path: Path
) -> None:
    async def scenario() -> None:
        async with cluster(redis_server, tmp_path, retention=100) as made:
            for chunk in CHUNKS:  # one entry each
                made.writer.append(chunk)
                await asyncio.wait_for(made.writer.drained.wait(), 10)
            size = made.holder.log_size
            made.mirror.want(made.follower)
            await until(lambda: made.follower.log_size == size, "the copy to catch up")
            first = made.follower_node.first_offsets[0]
            assert 0 < first <= size - 100 + 1 + len(CHUNKS[0])
            assert made.follower.log.read(first, 10_000) == made.holder.log.read(first, 10_000)
            assert made.follower_node.events == [
                f"bytes before offset {first} were trimmed from the cluster's copy before this "
                "daemon read them"
            ]

    run(scenario)


def test_a_mirror_skips_bytes_its_copy_already_holds(
    redis_server: RedisServer, tmp_path: Path
) -> None:
    async def scenario() -> None:
        async with cluster(redis_server, tmp_path) as made:
            for chunk in CHUNKS:
                made.writer.append(chunk)
            await asyncio.wait_for(made.writer.drained.wait(), 10)
            entries = await made.store.read_range(JOB_ID, b"0-0", 1000)
            for entry in entries + entries:  # everything twice
                made.mirror.apply(made.follower, entry)
            assert made.follower.log.read(0, 10_000) == b"".join(CHUNKS)

    run(scenario)
