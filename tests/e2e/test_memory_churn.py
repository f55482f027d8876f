"""The daemon's memory under churn (issue 16, item 20): what an ended job leaves is bounded as
jobs end, the encoded-chunk cache is bounded in memory, and the daemon says where its memory
goes when asked (TAILHUB_TRACEMALLOC, SIGUSR2). The soak itself is bench/churn.py."""

from __future__ import annotations

import asyncio
import os
import re
import signal
from collections.abc import Callable
from pathlib import Path

import grpc
import pytest
from helpers import DaemonProcess, wait_until

from tailhub.daemon.config import DaemonConfig
from tailhub.daemon.domain import LocalSpec
from tailhub.daemon.paths import StatePaths
from tailhub.daemon.server import Daemon
from tailhub.daemon.store import JobStore
from tailhub.daemon.wire import ENTRY_OVERHEAD, EncodedChunkCache
from tailhub.v1 import tailhub_pb2 as pb
from tailhub.v1 import tailhub_pb2_grpc as pb_grpc


def test_ended_jobs_past_the_cap_are_removed_as_jobs_end_not_an_hour_later(
    start_daemon: Callable[..., DaemonProcess],
) -> None:
    daemon = start_daemon("--max-ended-jobs", "10")
    with daemon.client() as client:
        # One after another, so that they end in the order of their ids (the cap removes the
        # jobs that ended first).
        launched = []
        for _ in range(40):
            job_id = client.launch("echo hi").id
            launched.append(job_id)
            wait_until(lambda: client.get(job_id).state.terminal, 60, "the job to end")  # noqa: B023
        # The pass runs once a job has ended past the cap (a tenth of a cap of 10: one job).
        wait_until(lambda: len(client.list()) <= 11, 20, "the oldest ended jobs to go")
        kept = [job.id for job in client.list()]
    assert set(launched[-10:]) <= set(kept), kept  # the newest stay


async def _followed_push_job(stub: pb_grpc.TailhubServiceAsyncStub, number: int) -> int:
    """A push job with one line, ended and followed to its end; returns its id."""
    job = (await stub.AttachJob(pb.AttachJobRequest(push=pb.PushSource()))).job
    line = b"line %d\n" % number
    await stub.Publish(pb.PublishRequest(job_id=job.id, data=line))
    await stub.FinishJob(pb.FinishJobRequest(job_id=job.id, exit_code=0))
    data = b""
    async for response in stub.Subscribe(pb.SubscribeRequest(job_id=job.id, follow=True)):
        data += response.chunk.data
    assert data == line
    return job.id


def test_jobs_removed_past_the_cap_leave_no_encoded_chunk_behind(tmp_path: Path) -> None:
    # In-process, to look into the daemon's cache (its file watcher runs ldconfig at start:
    # not a unit test). Each of these chunks stayed until 16 MiB of others came after it:
    # under churn, ~40,000 short jobs' chunks, RSS growing ~350 B a launch long after the
    # cap was reached.
    kept_at_most = 3

    async def scenario() -> None:
        config = DaemonConfig(paths=StatePaths(tmp_path / "home"), max_ended_jobs=kept_at_most)
        async with (
            Daemon(config) as daemon,
            grpc.aio.insecure_channel(f"unix:{config.paths.socket}") as channel,
        ):
            stub = pb_grpc.TailhubServiceStub(channel)
            followed = [await _followed_push_job(stub, number) for number in range(30)]
            # (With a cap of 3, every job sealed past it makes a pass remove the oldest.)
            kept = {job.id for job in (await stub.ListJobs(pb.ListJobsRequest())).jobs}
            assert len(kept) <= kept_at_most + 1, kept
            assert kept < set(followed)
            cached = daemon._servicer._chunks.job_ids()  # type: ignore[union-attr]
            assert cached, "the chunks followed are cached"
            assert cached <= kept, f"removed jobs' chunks still cached: {sorted(cached - kept)}"

    asyncio.run(asyncio.wait_for(scenario(), 60))


def test_the_encoded_chunk_cache_counts_what_each_entry_costs() -> None:
    cache = EncodedChunkCache(max_bytes=40 * (100 + ENTRY_OVERHEAD))
    for offset in range(1000):
        cache.put((1, offset * 100, offset * 100 + 100), b"x" * 100)
    # 1,000 chunks of 100 bytes: 100 KB of bytes, but ~400 KB of memory; 40 fit.
    held = [offset for offset in range(1000) if cache.get((1, offset * 100, offset * 100 + 100))]
    assert held == list(range(960, 1000))


# The runner leaves each job's process detached on purpose (jobs outlive their daemon): in-process,
# Popen's destructor says so.
@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
def test_an_ended_local_job_keeps_its_launching_environment_on_disk_only(tmp_path: Path) -> None:
    # ~7 KB of a shell's environment was most of what each of 10,000 kept jobs held in memory.
    environment = {"PATH": os.environ["PATH"], "MARK": "m" * 1000}

    async def scenario() -> None:
        config = DaemonConfig(paths=StatePaths(tmp_path / "home"))
        async with (
            Daemon(config) as daemon,
            grpc.aio.insecure_channel(f"unix:{config.paths.socket}") as channel,
        ):
            stub = pb_grpc.TailhubServiceStub(channel)
            request = pb.LaunchJobRequest(run='echo "${#MARK}"', environment=environment)
            job_id = (await stub.LaunchJob(request)).job.id
            data = b""
            async for response in stub.Subscribe(pb.SubscribeRequest(job_id=job_id, follow=True)):
                data += response.chunk.data
                if response.HasField("end"):
                    assert response.end.exit_code == 0
            assert data == b"1000\n"  # it ran with it
            held = daemon._manager.get(job_id).record.spec  # type: ignore[union-attr]
            assert isinstance(held, LocalSpec)
            assert held.environment == ()
        store = JobStore(config.paths.database)
        try:
            (stored,) = store.load_all()
        finally:
            store.close()
        assert isinstance(stored.spec, LocalSpec)
        assert dict(stored.spec.environment) == environment

    asyncio.run(asyncio.wait_for(scenario(), 60))


def test_a_forgotten_job_gives_its_share_of_the_cache_back() -> None:
    cache = EncodedChunkCache(max_bytes=10 * (100 + ENTRY_OVERHEAD))
    for job_id in (1, 2):
        for offset in range(0, 500, 100):
            cache.put((job_id, offset, offset + 100), b"x" * 100)
    cache.forget([1])
    assert cache.job_ids() == {2}
    for offset in range(0, 500, 100):
        cache.put((3, offset, offset + 100), b"y" * 100)
    # Job 1's five went with it: job 3's five fit beside job 2's, which stay.
    assert cache.job_ids() == {2, 3}
    assert all(cache.get((2, offset, offset + 100)) for offset in range(0, 500, 100))


def test_the_daemon_says_where_its_memory_grew_when_asked(home: Path) -> None:
    daemon = DaemonProcess(home, env={"TAILHUB_TRACEMALLOC": "4"})
    daemon.start()
    try:
        assert "tracing memory allocations" in daemon.log_text()
        os.kill(daemon.pid, signal.SIGUSR2)
        wait_until(lambda: "memory report 1:" in daemon.log_text(), 30, "the first report")
        with daemon.client() as client:
            for _ in range(5):
                client.launch("echo hi")
        os.kill(daemon.pid, signal.SIGUSR2)
        wait_until(lambda: "memory report 2:" in daemon.log_text(), 30, "the second report")
    finally:
        daemon.stop()
    report = daemon.log_text().split("memory report 2:", 1)[1]
    assert re.search(r"grew [+-][\d,]+ bytes since the first report; top sites:", report)
    assert re.search(r"\n    [+-][\d,]+ B [+-][\d,]+ blocks \(now [\d,]+ B\): \S+:\d+", report)
    assert "objects by type: " in report
