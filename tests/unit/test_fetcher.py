"""The one fetch per job (fetcher.py), driven by a scripted source: a double of the `sources`
protocol whose connections do what the test says. Bytes go through the real sink into the
real log; reconnect delays are a few milliseconds."""

from __future__ import annotations

import asyncio
import errno
import os
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar

import pytest

from tailhub.daemon.config import DaemonConfig
from tailhub.daemon.counts import DaemonCounts
from tailhub.daemon.domain import CommandSpec, JobRecord, JobState, LocalSpec, SourceSpec
from tailhub.daemon.errors import StorageFull, UpstreamFailed
from tailhub.daemon.fetcher import Fetcher
from tailhub.daemon.live_job import Job
from tailhub.daemon.paths import StatePaths
from tailhub.daemon.reconnects import ReconnectPolicy
from tailhub.daemon.sink import LocalLog, LocalSink
from tailhub.daemon.sources import Outcome, Upstream

# One connection of the scripted source: what it delivers, then how it ends.
Connection = Callable[[Upstream], Awaitable[Outcome | None]]


@dataclass
class ScriptedSource:
    """An upstream that replays `output` from its start on each connection (as `ssh tail -n
    +1 -f` does) and skips what the log already holds; `ends` says how each connection ends:
    after how many bytes, and with what."""

    output: bytes
    ends: list[tuple[int, UpstreamFailed | Outcome | None]]
    counts_connections: ClassVar[bool] = True
    connections: int = 0
    offsets: list[int] = field(default_factory=list)

    async def fetch(self, upstream: Upstream) -> Outcome | None:
        until, end = self.ends[self.connections]
        self.connections += 1
        self.offsets.append(upstream.stored)
        position = upstream.stored  # the replay's first bytes are already stored: skipped
        while position < until:
            piece = self.output[position : min(until, position + 7)]
            upstream.append(piece)
            position += len(piece)
            await asyncio.sleep(0)
        if isinstance(end, UpstreamFailed):
            raise end
        return end


class Owner:
    """The job manager's side, as the fetcher and the log see it."""

    def __init__(self) -> None:
        self.events: list[str] = []
        self.saves = 0
        self.appends = 0
        # Saves of the record that fail as on a full disk (the database cannot grow).
        self.full_disk_saves = 0
        self.deferred_saves = 0

    def save_or_raise(self, job: Job) -> None:
        if self.full_disk_saves:
            self.full_disk_saves -= 1
            raise StorageFull("disk full: cannot write jobs.sqlite3 (database or disk is full)")
        self.saves += 1

    def save_or_defer(self, job: Job) -> None:
        self.deferred_saves += 1

    def appended(self, job: Job) -> None:
        self.appends += 1
        job.changed.notify()

    def record_event(self, job: Job, message: str) -> None:
        self.events.append(message)

    def copied_event(self, job: Job, message: str) -> None:
        self.events.append(message)


@dataclass
class Fetch:
    job: Job
    owner: Owner
    counts: DaemonCounts
    fetcher: Fetcher
    source: ScriptedSource


def make_fetch(
    directory: Path,
    source: ScriptedSource,
    *,
    give_up_after: float | None = 5.0,
    disk_full_retry: float = 0.01,
    spec: SourceSpec | None = None,
) -> Fetch:
    record = JobRecord(id=3, name="", spec=spec or CommandSpec(("ssh", "far", "tail")))
    record.state = JobState.RUNNING
    job = Job(record, directory / "3.log", 64 * 1024, directory / "3.times", directory / "3.acked")
    owner = Owner()
    counts = DaemonCounts()
    config = DaemonConfig(
        paths=StatePaths(directory),
        reconnect_policy=ReconnectPolicy(0.001, 0.004, give_up_after=give_up_after),
        disk_full_retry=disk_full_retry,
    )
    sink = LocalSink(job, LocalLog(job, owner), counts)
    return Fetch(job, owner, counts, Fetcher(job, source, sink, owner, config, counts), source)


def run(fetch: Fetch) -> Outcome | None:
    return asyncio.run(asyncio.wait_for(fetch.fetcher.run(), 10))


OUTPUT = b"".join(b"line %03d\n" % number for number in range(100))


def test_what_the_source_sends_is_the_log_byte_for_byte(tmp_path: Path) -> None:
    fetch = make_fetch(tmp_path, ScriptedSource(OUTPUT, [(len(OUTPUT), Outcome(0))]))
    assert run(fetch) == Outcome(0)
    assert fetch.job.log.read(0, 10_000) == OUTPUT
    assert (tmp_path / "3.log").read_bytes() == OUTPUT
    assert fetch.job.record.upstream_connections == 1
    assert fetch.counts.bytes_fetched == len(OUTPUT)
    assert not fetch.job.upstream_open


def test_a_broken_connection_is_reopened_and_the_replay_resumes_without_loss_or_repeat(
    tmp_path: Path,
) -> None:
    lost = UpstreamFailed("connection reset", 255)
    source = ScriptedSource(OUTPUT, [(300, lost), (650, lost), (len(OUTPUT), Outcome(0))])
    fetch = make_fetch(tmp_path, source)
    assert run(fetch) == Outcome(0)
    assert fetch.job.log.read(0, 10_000) == OUTPUT
    assert source.offsets == [0, 300, 650]  # each connection told where the log ends
    assert fetch.job.record.upstream_connections == 3
    assert fetch.counts.reconnects == 2
    assert fetch.owner.events[0].startswith("upstream connection lost (connection reset);")


def test_one_fetch_at_a_time_however_many_reconnects(tmp_path: Path) -> None:
    """Invariant 1: a second connection opens only after the first failed."""
    open_now: list[int] = []

    class Counting(ScriptedSource):
        async def fetch(self, upstream: Upstream) -> Outcome | None:
            open_now.append(1)
            assert len(open_now) == 1, "two upstream connections at once"
            try:
                return await super().fetch(upstream)
            finally:
                open_now.pop()

    lost = UpstreamFailed("eof", 1)
    source = Counting(OUTPUT, [(100, lost)] * 5 + [(len(OUTPUT), Outcome(0))])
    assert run(make_fetch(tmp_path, source)) == Outcome(0)
    assert source.connections == 6


def test_an_upstream_failing_past_the_limit_fails_the_job_with_the_reason(
    tmp_path: Path,
) -> None:
    lost = UpstreamFailed("ssh: Could not resolve hostname far", 255)
    fetch = make_fetch(tmp_path, ScriptedSource(b"", [(0, lost)] * 10_000), give_up_after=0.05)
    outcome = run(fetch)
    assert outcome is not None
    assert outcome.exit_code == 255
    assert "upstream failed" in outcome.reason
    assert outcome.reason.endswith("last: ssh: Could not resolve hostname far")
    assert fetch.job.log_size == 0


def test_a_full_disk_pauses_the_fetch_and_it_resumes_where_it_stopped(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    log_path = str(tmp_path / "3.log")
    real_write = os.write
    log_writes = 0

    def write(fd: int, data: bytes) -> int:
        """The disk fills after 20 appends to the log, and is freed 3 tries later."""
        nonlocal log_writes
        if os.readlink(f"/proc/self/fd/{fd}") == log_path:
            log_writes += 1
            if 20 < log_writes <= 23:
                raise OSError(errno.ENOSPC, "No space left on device")
        return real_write(fd, data)

    monkeypatch.setattr(os, "write", write)
    source = ScriptedSource(OUTPUT, [(len(OUTPUT), Outcome(0))] * 4)
    fetch = make_fetch(tmp_path, source)
    assert run(fetch) == Outcome(0)
    monkeypatch.undo()
    assert (tmp_path / "3.log").read_bytes() == OUTPUT
    assert source.offsets == [0, 140, 140, 140]  # 20 appends of 7 bytes, then resumed there
    paused = [event for event in fetch.owner.events if event.startswith("disk full at")]
    assert len(paused) == 1  # said once per pause, not per retry
    assert paused[0].startswith("disk full at offset 140, waiting for space")
    assert "disk space available again; resuming at offset 140" in fetch.owner.events


class Adopting(ScriptedSource):
    """Saves resume state when it connects, as the file tailer does on a file's first open."""

    async def fetch(self, upstream: Upstream) -> Outcome | None:
        upstream.state["inode"] = 1
        upstream.save_state()
        return await super().fetch(upstream)


def test_a_record_not_saved_on_a_full_disk_pauses_the_fetch_of_a_log_the_daemon_writes(
    tmp_path: Path,
) -> None:
    fetch = make_fetch(tmp_path, Adopting(OUTPUT, [(len(OUTPUT), Outcome(0))] * 4))
    fetch.owner.full_disk_saves = 2  # the disk has room again after two tries
    assert run(fetch) == Outcome(0)
    assert fetch.job.log.read(0, 10_000) == OUTPUT
    assert fetch.source.offsets == [0]  # nothing was fetched before the state was saved
    paused = [event for event in fetch.owner.events if event.startswith("disk full at")]
    assert len(paused) == 1
    assert paused[0].startswith("disk full at offset 0, waiting for space")
    assert fetch.owner.deferred_saves == 0


def test_a_job_that_writes_its_own_log_ends_although_the_disk_is_too_full_to_save_its_record(
    tmp_path: Path,
) -> None:
    """A local job's own output can fill the disk before its fetch starts. Its fetch goes on
    to see the job end (a pause would wait for room that only the job's end can free), and
    its record is saved later (issue: test_disk_heal's job that never ended)."""
    ended = Outcome(1, "run exited with 1")
    fetch = make_fetch(
        tmp_path, Adopting(OUTPUT, [(len(OUTPUT), ended)]), spec=LocalSpec("cat /dev/zero")
    )
    (tmp_path / "3.log").write_bytes(OUTPUT)  # written by the job itself
    fetch.owner.full_disk_saves = 1_000_000
    assert run(fetch) == ended
    assert fetch.job.log.read(0, 10_000) == OUTPUT
    assert fetch.source.connections == 1
    assert fetch.owner.deferred_saves == 2  # the connection count, then the state
    assert not [event for event in fetch.owner.events if event.startswith("disk full at")]


def test_a_job_asked_to_finish_drains_and_ends_without_an_outcome(tmp_path: Path) -> None:
    class Draining(ScriptedSource):
        async def fetch(self, upstream: Upstream) -> Outcome | None:
            upstream.append(b"before the end\n")
            await asyncio.wait_for(finished_wait(upstream), 5)
            upstream.append(b"drained\n")
            return None

    async def finished_wait(upstream: Upstream) -> None:
        done = asyncio.Event()
        upstream.finished.on_set(done.set)
        await done.wait()

    fetch = make_fetch(tmp_path, Draining(b"", []))

    async def scenario() -> Outcome | None:
        task = asyncio.create_task(fetch.fetcher.run())
        await asyncio.sleep(0.01)
        assert fetch.job.log_size == len(b"before the end\n")
        fetch.fetcher.request_finish()
        return await asyncio.wait_for(task, 5)

    assert asyncio.run(scenario()) is None
    assert fetch.job.log.read(0, 100) == b"before the end\ndrained\n"


def test_a_planted_symlink_in_the_logs_place_fails_the_job_and_opens_no_upstream(
    tmp_path: Path,
) -> None:
    (tmp_path / "3.log").symlink_to(tmp_path / "elsewhere")
    source = ScriptedSource(OUTPUT, [(len(OUTPUT), Outcome(0))])
    outcome = run(make_fetch(tmp_path, source))
    assert outcome is not None
    assert outcome.exit_code == 1
    assert "symbolic link" in outcome.reason
    assert source.connections == 0
    assert not (tmp_path / "elsewhere").exists()
