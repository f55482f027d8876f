"""Subscribers as cursors into a job's log (fanout.py): where a subscription starts
(`ReadFrom`) and what `stream_log` yields from there, on one event loop, with no daemon."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator, Awaitable, Callable
from pathlib import Path

import pytest

from tailhub.daemon.budget import SendBudget
from tailhub.daemon.domain import FileSpec, JobRecord, JobState, SourceEvent
from tailhub.daemon.errors import DaemonStopping, InvalidRequest
from tailhub.daemon.fanout import ChunkRange, LogItem, ReadFrom, stream_log
from tailhub.daemon.items import Ended, Heartbeat, TimeMark
from tailhub.daemon.live_job import Job

KIB = 1024


def run(scenario: Callable[[], Awaitable[None]]) -> None:
    asyncio.run(asyncio.wait_for(scenario(), 10))


def make_job(directory: Path, data: bytes = b"") -> Job:
    """A running file job whose log holds `data` (appended as a fetcher would)."""
    record = JobRecord(id=7, name="", spec=FileSpec("/var/log/app.log"), state=JobState.RUNNING)
    job = Job(
        record,
        directory / "7.log",
        64 * KIB,
        directory / "7.times",
        directory / "7.acked",
    )
    if data:
        append(job, data)
    return job


def append(job: Job, data: bytes) -> None:
    job.log.append(data)
    job.changed.notify()


def finish(job: Job, state: JobState = JobState.SUCCEEDED, exit_code: int = 0) -> None:
    job.record.state = state
    job.record.exit_code = exit_code
    job.record.sealed = True
    job.changed.notify()


def stream(
    job: Job,
    start: ReadFrom = ReadFrom(),
    *,
    follow: bool = False,
    max_chunk: int = 64 * KIB,
    budget: SendBudget | None = None,
    stopping: Callable[[], bool] = lambda: False,
    timestamps: bool = False,
) -> AsyncGenerator[LogItem, None]:
    return stream_log(
        job,
        start,
        follow=follow,
        max_chunk=max_chunk,
        stopping=stopping,
        budget=budget or SendBudget(1024 * KIB, 4 * KIB, floor=KIB),
        timestamps=timestamps,
    )


async def collect(items: AsyncGenerator[LogItem, None]) -> list[LogItem]:
    return [item async for item in items]


def bytes_of(job: Job, items: list[LogItem]) -> bytes:
    return b"".join(
        job.log.read(i.offset, i.end - i.offset) for i in items if isinstance(i, ChunkRange)
    )


def test_a_reader_of_a_running_job_gets_the_log_so_far_then_not_finished(tmp_path: Path) -> None:
    async def scenario() -> None:
        job = make_job(tmp_path, b"one\ntwo\n")
        items = await collect(stream(job))
        assert items == [
            ChunkRange(0, 8),
            Ended(JobState.RUNNING, None, "", log_size=8, finished=False),
        ]

    run(scenario)


def test_a_follower_gets_every_byte_contiguously_and_ends_with_the_jobs_result(
    tmp_path: Path,
) -> None:
    async def scenario() -> None:
        job = make_job(tmp_path, b"first\n")
        follower = asyncio.create_task(collect(stream(job, follow=True)))
        for number in range(5):
            await asyncio.sleep(0.005)
            append(job, b"line %d\n" % number)
        finish(job, JobState.FAILED, exit_code=3)
        items = await follower
        chunks = [item for item in items if isinstance(item, ChunkRange)]
        assert chunks[0].offset == 0
        assert all(a.end == b.offset for a, b in zip(chunks, chunks[1:]))
        assert bytes_of(job, items) == b"first\n" + b"".join(b"line %d\n" % n for n in range(5))
        assert items[-1] == Ended(JobState.FAILED, 3, "", log_size=job.log_size, finished=True)
        assert job.subscribers == 0

    run(scenario)


def test_a_follower_resuming_at_an_offset_gets_exactly_the_bytes_after_it(
    tmp_path: Path,
) -> None:
    async def scenario() -> None:
        job = make_job(tmp_path, b"0123456789")
        finish(job)
        items = await collect(stream(job, ReadFrom(offset=4), follow=True))
        assert bytes_of(job, items) == b"456789"
        assert isinstance(items[-1], Ended)
        assert items[-1].finished

    run(scenario)


def test_an_offset_past_the_end_of_the_log_is_refused(tmp_path: Path) -> None:
    async def scenario() -> None:
        job = make_job(tmp_path, b"short")
        with pytest.raises(InvalidRequest, match="offset 6 is past the end of job 7's log"):
            await ReadFrom(offset=6).resolve(job)
        assert await ReadFrom(offset=5).resolve(job) == 5  # the end itself: wait for more

    run(scenario)


@pytest.mark.parametrize(
    ("lines", "expected"),
    [(1, b"c\n"), (2, b"b\nc\n"), (5, b"a\nb\nc\n"), (0, b"")],
)
def test_a_tail_starts_at_the_last_lines(tmp_path: Path, lines: int, expected: bytes) -> None:
    async def scenario() -> None:
        job = make_job(tmp_path, b"a\nb\nc\n")
        start = ReadFrom(tail_lines=lines)
        assert start.offset_from_end
        assert bytes_of(job, await collect(stream(job, start))) == expected

    run(scenario)


def test_a_tail_of_an_empty_log_starts_at_zero(tmp_path: Path) -> None:
    async def scenario() -> None:
        assert await ReadFrom(tail_lines=10).resolve(make_job(tmp_path)) == 0

    run(scenario)


def test_since_a_time_starts_at_the_first_line_that_came_at_or_after_it(tmp_path: Path) -> None:
    async def scenario() -> None:
        job = make_job(tmp_path)
        job.times.record(0, 1000.0)
        append(job, b"old line\npart of a ")
        job.times.record(19, 2000.0)
        append(job, b"line\nnew line\n")
        # The line begun before 2000 counts from its first byte: it is left out.
        items = await collect(stream(job, ReadFrom(since_time=1500.0)))
        assert bytes_of(job, items) == b"new line\n"
        assert await ReadFrom(since_time=3000.0).resolve(job) == job.log_size
        assert await ReadFrom(since_time=0.0).resolve(job) == 0

    run(scenario)


def test_events_come_in_their_place_among_the_bytes(tmp_path: Path) -> None:
    async def scenario() -> None:
        job = make_job(tmp_path, b"before\n")
        event = SourceEvent(offset=7, message="upstream reconnected", time=1.0)
        job.events.append(event)
        append(job, b"after\n")
        items = await collect(stream(job, max_chunk=7, budget=SendBudget(1024, 4, floor=1)))
        assert items == [ChunkRange(0, 7), event, ChunkRange(7, 13), Ended(*RUNNING_AT_13)]
        # A reader starting past an event does not get it again.
        assert event not in await collect(stream(job, ReadFrom(offset=8)))

    run(scenario)


RUNNING_AT_13 = (JobState.RUNNING, None, "", 13, False)


def test_readers_behind_the_live_edge_get_chunks_on_the_same_boundaries(tmp_path: Path) -> None:
    """Followers behind share encodings: their chunks end on multiples of the size cap."""

    async def scenario() -> None:
        job = make_job(tmp_path, bytes(10 * KIB))
        first = await collect(stream(job, ReadFrom(offset=100), max_chunk=4 * KIB))
        second = await collect(stream(job, ReadFrom(offset=3000), max_chunk=4 * KIB))
        assert first[:3] == [ChunkRange(100, 4096), ChunkRange(4096, 8192), ChunkRange(8192, 10240)]
        assert second[:3] == [
            ChunkRange(3000, 4096),
            ChunkRange(4096, 8192),
            ChunkRange(8192, 10240),
        ]

    run(scenario)


def test_a_tight_budget_makes_a_follower_wait_for_whole_chunks_never_bytes_lost(
    tmp_path: Path,
) -> None:
    """Under pressure fewer, larger messages: no piece of what happened to be free, and
    what the follower came to be owed while it waited goes out in the same chunk."""

    async def scenario() -> None:
        data = bytes(range(256)) * 64
        job = make_job(tmp_path, data[: 3 * KIB])
        budget = SendBudget(8 * KIB, 2 * KIB, floor=KIB)
        held = await budget.acquire(6 * KIB)  # other subscribers hold most of it
        follower = asyncio.create_task(
            collect(stream(job, follow=True, max_chunk=8 * KIB, budget=budget))
        )
        await asyncio.sleep(0.01)
        append(job, data[3 * KIB :])  # more came while it waited
        budget.release(held)
        finish(job)
        items = await follower
        chunks = [item for item in items if isinstance(item, ChunkRange)]
        assert [chunk.end - chunk.offset for chunk in chunks] == [8 * KIB, 8 * KIB]
        assert bytes_of(job, items) == data
        assert budget.in_flight == 0  # every chunk's bytes were given back

    run(scenario)


def test_a_follower_at_the_live_edge_waits_and_never_ends_early(tmp_path: Path) -> None:
    async def scenario() -> None:
        job = make_job(tmp_path, b"x")
        items: list[LogItem] = []

        async def follow() -> None:
            async for item in stream(job, follow=True):
                items.append(item)

        follower = asyncio.create_task(follow())
        await asyncio.sleep(0.05)
        assert items == [ChunkRange(0, 1)]
        assert not follower.done()
        assert job.subscribers == 1
        follower.cancel()
        with pytest.raises(asyncio.CancelledError):
            await follower
        assert job.subscribers == 0

    run(scenario)


def test_an_idle_follower_gets_heartbeats_with_the_logs_size_and_state(tmp_path: Path) -> None:
    async def scenario() -> None:
        job = make_job(tmp_path, b"abc")
        items = stream(job, follow=True)
        assert await anext(items) == ChunkRange(0, 3)
        beat = asyncio.ensure_future(anext(items))
        await asyncio.sleep(0.01)
        job.heartbeat_tick += 1
        job.changed.notify()
        assert await beat == Heartbeat(3, JobState.RUNNING)
        await items.aclose()

    run(scenario)


def test_a_stopping_daemon_ends_its_streams_for_clients_to_resume(tmp_path: Path) -> None:
    async def scenario() -> None:
        job = make_job(tmp_path, b"abc")
        stopping = False
        items = stream(job, follow=True, stopping=lambda: stopping)
        assert await anext(items) == ChunkRange(0, 3)
        waiting = asyncio.ensure_future(anext(items))
        await asyncio.sleep(0.01)
        stopping = True
        job.changed.notify()
        with pytest.raises(DaemonStopping):
            await waiting
        assert job.subscribers == 0

    run(scenario)


def test_with_timestamps_each_chunk_comes_after_the_times_its_bytes_came(tmp_path: Path) -> None:
    async def scenario() -> None:
        job = make_job(tmp_path)
        job.times.record(0, 1000.0)
        append(job, b"one\n")
        job.times.record(4, 1001.0)
        append(job, b"two\n")
        items = await collect(stream(job, timestamps=True))
        assert items[:3] == [TimeMark(0, 1000.0), TimeMark(4, 1001.0), ChunkRange(0, 8)]
        # Without asking, no marks.
        assert not any(isinstance(item, TimeMark) for item in await collect(stream(job)))

    run(scenario)
