"""Faults leave a clear state: a full disk, a damaged database, a FIFO, a long newline-free log.

The full disk is real: the state directory is a small tmpfs mounted for the test (we run as
root, here and in CI).
"""

from __future__ import annotations

import os
import struct
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from disk_helpers import Follower, fill_disk
from helpers import DaemonProcess, run_cli, wait_until
from job_helpers import Gate
from markers import measures

from tailhub.client import Client, InvalidRequestError, JobState, LogChunk, LogEvent
from tailhub.client._errors import DiskFullError


def test_file_job_pauses_on_a_full_disk_and_resumes_when_space_is_freed(
    small_disk_home: Path, workdir: Path
) -> None:
    daemon = DaemonProcess(small_disk_home, args=["--heartbeat-interval", "0.5"])
    daemon.start()
    source = workdir / "app.log"
    source.write_bytes(b"before the disk filled\n")
    try:
        with daemon.client() as client:
            job = client.attach_file(str(source))
            follower = Follower(daemon, job.id)
            wait_until(lambda: len(follower.data) == source.stat().st_size, what="first line")

            filler = fill_disk(small_disk_home)
            more = b"".join(b"line %06d while the disk is full\n" % i for i in range(20000))
            with source.open("ab") as out:
                out.write(more)
            wait_until(
                lambda: any("disk full at offset" in event for event in follower.events),
                what="a 'disk full' event",
            )
            assert client.get(job.id).state is JobState.RUNNING
            assert daemon.process is not None
            assert daemon.process.poll() is None

            filler.unlink()
            expected = source.read_bytes()
            wait_until(lambda: len(follower.data) >= len(expected), what="the rest after freeing")
            assert bytes(follower.data) == expected
            # New jobs work again, without a restart.
            push = client.attach_push()
            assert client.publish(push.id, b"after\n") == len(b"after\n")

            client.finish(job.id)
            follower.join()
        assert follower.end is not None
        assert follower.end.state is JobState.SUCCEEDED
        assert bytes(follower.data) == expected
        assert "never retrieved" not in daemon.log_text()
    finally:
        daemon.stop()


def test_a_local_job_ending_on_a_full_disk_is_sealed_and_the_next_starts_once_freed(
    small_disk_home: Path, workdir: Path
) -> None:
    daemon = DaemonProcess(
        small_disk_home, args=["--heartbeat-interval", "0.5", "--max-running-jobs", "1"]
    )
    daemon.start()
    gate = Gate.closed(workdir / "gate")
    try:
        with daemon.client() as client:
            first = client.launch(f"flock --shared {gate.path} true")
            second = client.launch("echo second ran")
            wait_until(lambda: client.get(first.id).state is JobState.RUNNING, what="job 1")
            follower = Follower(daemon, first.id)
            filler = fill_disk(small_disk_home)
            gate.open()
            # Its end cannot be saved: followers get it all the same, and its slot is free.
            follower.join()
            assert follower.end is not None
            assert client.get(first.id).sealed
            wait_until(
                lambda: any("disk full" in event for event in client_events(client, second.id)),
                what="job 2 to say it waits for space",
            )
            assert client.get(second.id).state is JobState.PENDING
            filler.unlink()
            wait_until(lambda: client.get(second.id).sealed, what="job 2 to run once freed")
            assert client.get(second.id).state is JobState.SUCCEEDED
            received = b"".join(
                item.data for item in client.follow(second.id) if isinstance(item, LogChunk)
            )
            assert received == b"second ran\n"
        assert "never retrieved" not in daemon.log_text()
    finally:
        gate.open()
        daemon.stop()


def client_events(client: Client, job_id: int) -> list[str]:
    return [
        item.message for item in client.follow(job_id, follow=False) if isinstance(item, LogEvent)
    ]


def test_a_publish_that_failed_on_a_full_disk_leaves_no_byte_behind(
    small_disk_home: Path,
) -> None:
    daemon = DaemonProcess(small_disk_home, args=["--heartbeat-interval", "0.5"])
    daemon.start()
    try:
        with daemon.client() as client:
            job = client.attach_push()
            client.publish(job.id, b"acknowledged 1\n")
            filler = fill_disk(small_disk_home)
            # Room for part of the next publish only: a partial write.
            with filler.open("r+b") as out:
                out.truncate(filler.stat().st_size - 256 * 1024)
            with pytest.raises(DiskFullError, match="disk full"):
                client.publish(job.id, b"x" * (1400 * 1024))
            filler.unlink()
            client.publish(job.id, b"acknowledged 2\n")
            client.finish(job.id)
        daemon.stop()
        # Read back from disk by a new daemon: only what was acknowledged, at its offsets.
        daemon.start()
        with daemon.client() as client:
            received = b"".join(
                item.data for item in client.follow(job.id) if isinstance(item, LogChunk)
            )
        assert received == b"acknowledged 1\nacknowledged 2\n"
    finally:
        daemon.stop()


def test_jobs_publish_waits_out_a_full_disk(small_disk_home: Path, workdir: Path) -> None:
    daemon = DaemonProcess(small_disk_home, args=["--heartbeat-interval", "0.5"])
    daemon.start()
    errors = workdir / "publish.err"
    try:
        with daemon.client() as client:
            job = client.attach_push()
        filler = fill_disk(small_disk_home)
        with errors.open("wb") as stderr:
            producer = subprocess.Popen(
                [sys.executable, "-m", "tailhub.client", "jobs", "publish", str(job.id)],
                env={**os.environ, "TAILHUB_HOME": str(small_disk_home)},
                stdin=subprocess.PIPE,
                stderr=stderr,
            )
        data = b"".join(b"line %05d of a producer\n" % i for i in range(4000))
        assert producer.stdin is not None
        producer.stdin.write(data)
        producer.stdin.close()
        wait_until(lambda: "disk full" in errors.read_text(), what="the producer to say why")
        assert producer.poll() is None
        filler.unlink()
        assert producer.wait(60) == 0, errors.read_text()
        with daemon.client() as client:
            client.finish(job.id)
            received = b"".join(
                item.data for item in client.follow(job.id) if isinstance(item, LogChunk)
            )
        assert received == data
    finally:
        daemon.stop()


def test_publish_with_an_expected_offset_is_idempotent(daemon: DaemonProcess) -> None:
    with daemon.client() as client:
        job = client.attach_push()
        assert client.publish(job.id, b"one\n", expected_offset=0) == 4
        # A retry of a call that was applied (its answer lost): nothing appended.
        assert client.publish(job.id, b"one\n", expected_offset=0) == 4
        assert client.publish(job.id, b"two\n", expected_offset=4) == 8
        with pytest.raises(InvalidRequestError, match="8 bytes long"):
            client.publish(job.id, b"three\n", expected_offset=2)
        with pytest.raises(InvalidRequestError, match="8 bytes long"):
            client.publish(job.id, b"TWO\n", expected_offset=4)
        client.finish(job.id)
        received = b"".join(
            item.data for item in client.follow(job.id) if isinstance(item, LogChunk)
        )
    assert received == b"one\ntwo\n"


def test_jobs_publish_survives_daemon_restarts_mid_stream(
    daemon: DaemonProcess, home: Path
) -> None:
    with daemon.client() as client:
        job = client.attach_push()
    errors = home.parent / "publish.err"
    with errors.open("wb") as stderr:
        producer = subprocess.Popen(
            [sys.executable, "-m", "tailhub.client", "jobs", "publish", str(job.id)],
            env={**os.environ, "TAILHUB_HOME": str(home)},
            stdin=subprocess.PIPE,
            stderr=stderr,
        )
    assert producer.stdin is not None
    sent = bytearray()
    try:
        for restart in range(3):
            for i in range(300):
                line = b"restart %d line %04d %s\n" % (restart, i, b"." * 200)
                try:
                    producer.stdin.write(line)
                    producer.stdin.flush()
                except BrokenPipeError:
                    raise AssertionError(errors.read_text()) from None
                sent += line
            # Stopped or killed while the producer is still sending: a publish is in flight.
            if restart == 1:
                daemon.restart()
            else:
                daemon.kill()
                daemon.start()
        producer.stdin.close()
        assert producer.wait(120) == 0, errors.read_text()
    finally:
        if producer.poll() is None:
            producer.kill()
            producer.wait()
    with daemon.client() as client:
        client.finish(job.id)
        received = b"".join(
            item.data for item in client.follow(job.id) if isinstance(item, LogChunk)
        )
    assert received == bytes(sent)


def _run_daemon(home: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "tailhub.daemon", "--home", str(home)],
        capture_output=True,
        text=True,
        timeout=60,
    )


def _damage(database: Path, how: str) -> None:
    if how == "truncated":
        with database.open("r+b") as out:
            out.truncate(100)
    elif how == "garbage":
        database.write_bytes(os.urandom(8192))
    else:
        database.write_bytes(b"")


@pytest.mark.parametrize("how", ["truncated", "garbage", "empty"])
def test_a_damaged_database_stops_the_daemon_and_keeps_the_old_logs(
    daemon: DaemonProcess, home: Path, how: str
) -> None:
    with daemon.client() as client:
        for text in (b"old job 1\n", b"old job 2\n"):
            job = client.attach_push()
            client.publish(job.id, text)
            client.finish(job.id)
    daemon.stop()
    logs = {path.name: path.read_bytes() for path in (home / "logs").glob("*.log")}
    database = home / "jobs.sqlite3"
    _damage(database, how)

    result = _run_daemon(home)

    output = result.stdout + result.stderr
    assert result.returncode == 1, output
    assert "Traceback" not in output
    assert len(output.strip().splitlines()) == 1, output
    assert str(database) in output
    assert "move" in output
    assert {path.name: path.read_bytes() for path in (home / "logs").glob("*.log")} == logs


def test_logs_of_another_database_are_never_adopted(daemon: DaemonProcess, home: Path) -> None:
    with daemon.client() as client:
        job = client.attach_push()
        client.publish(job.id, b"old job 1\n")
        # A stray log where the next job's would go: the new job must not serve it.
        stray = home / "logs" / f"{job.id + 1}.log"
        stray.write_bytes(b"somebody else's bytes\n")
        refused = client.attach_push()
        assert refused.state is JobState.FAILED
        assert "already exists" in refused.reason
        # Its log is empty, whatever lies at its path: following it ends at once.
        items = list(client.follow(refused.id))
        assert [item for item in items if isinstance(item, LogChunk)] == []
        assert client.get(refused.id).log_size == 0
    assert stray.read_bytes() == b"somebody else's bytes\n"
    daemon.stop()
    # The database replaced by a new one next to the old logs: refused, not started over.
    (home / "jobs.sqlite3").unlink()
    result = _run_daemon(home)
    assert result.returncode == 1, result.stderr
    assert "Traceback" not in result.stderr
    assert "another database" in result.stderr
    assert (home / "logs" / f"{job.id}.log").read_bytes() == b"old job 1\n"


def test_a_fifo_is_refused_at_attach(daemon: DaemonProcess, workdir: Path) -> None:
    fifo = workdir / "pipe"
    os.mkfifo(fifo)
    result = run_cli(daemon.home, "jobs", "attach", "--file", str(fifo))
    assert result.returncode != 0
    assert b"not a regular file" in result.stderr


@measures
def test_a_file_replaced_by_a_fifo_fails_its_job_alone(
    daemon: DaemonProcess, workdir: Path
) -> None:
    doomed, healthy = workdir / "doomed.log", workdir / "healthy.log"
    doomed.write_bytes(b"a\n")
    healthy.write_bytes(b"b\n")
    with daemon.client() as client:
        doomed_job = client.attach_file(str(doomed))
        healthy_job = client.attach_file(str(healthy))
        wait_until(lambda: client.get(doomed_job.id).log_size == 2, what="the first line")
        fifo = workdir / "pipe"
        os.mkfifo(fifo)
        os.replace(fifo, doomed)
        wait_until(lambda: client.get(doomed_job.id).state is JobState.FAILED, what="failure")
        assert "not a regular file" in client.get(doomed_job.id).reason
        with healthy.open("ab") as out:
            out.write(b"still flowing\n")
        wait_until(lambda: client.get(healthy_job.id).log_size == 16, what="the healthy job")
    started = time.monotonic()
    daemon.stop(timeout=20)
    assert time.monotonic() - started < 15


def test_tail_scans_of_a_long_log_without_newlines_stall_nobody(
    daemon: DaemonProcess, home: Path, workdir: Path
) -> None:
    watched = workdir / "app.log"
    watched.write_bytes(b"")
    with daemon.client() as client:
        big = client.attach_push()
        client.publish(big.id, b"x")
        other = client.attach_push()
        file_job = client.attach_file(str(watched))
    daemon.stop()
    # A long log without a newline, made cheaply (sparse): `--tail` must scan all of it.
    os.truncate(home / "logs" / f"{big.id}.log", 2 * 1024**3)
    # ...all of it acknowledged, as if published (else the start cuts it back: acked.py).
    (home / "logs" / f"{big.id}.acked").write_bytes(struct.pack("<Q", 2 * 1024**3))
    daemon.start()
    push_follower = Follower(daemon, other.id)
    file_follower = Follower(daemon, file_job.id)

    ready = threading.Barrier(7)

    def scan() -> None:
        with daemon.client() as client:
            client.status()  # connected: the scans start together
            ready.wait()
            # The first chunk comes once the scan is done; the rest is not what we test.
            items = client.follow(big.id, tail_lines=1, follow=False)
            next(items)
            items.close()  # type: ignore[attr-defined]

    scans = [threading.Thread(target=scan, daemon=True) for _ in range(6)]
    try:
        for thread in scans:
            thread.start()
        ready.wait()
        with daemon.client() as client:
            started = time.monotonic()
            # The scans are under way (a daemon scanning on its event loop answers nothing
            # until they are done).
            wait_until(lambda: client.get(big.id).subscribers > 0, what="the scans to start")
            client.publish(other.id, b"ping\n")
            with watched.open("ab") as out:
                out.write(b"ping\n")
            wait_until(lambda: bytes(push_follower.data) == b"ping\n", what="the ping")
            wait_until(lambda: bytes(file_follower.data) == b"ping\n", what="the line")
            latency = time.monotonic() - started
            assert any(thread.is_alive() for thread in scans), "the scans ended before the ping"
            client.finish(other.id)
            client.finish(file_job.id)
        assert latency < 2.0, f"followers waited {latency:.1f}s behind tail scans"
    finally:
        for thread in scans:
            thread.join(120)
        push_follower.join()
        file_follower.join()
