"""A daemon killed while it writes a Publish's chunk: the restarted daemon's log holds exactly
the bytes its publisher was told were stored, nobody is served the piece it left, and the
publisher's retry of the chunk at the same offset is taken."""

from __future__ import annotations

import random
import threading
from collections.abc import Callable
from dataclasses import dataclass, field

import grpc
import pytest
from helpers import BackgroundCli, DaemonProcess, run_cli, wait_until

from tailhub.v1 import tailhub_pb2 as pb
from tailhub.v1 import tailhub_pb2_grpc as rpc


def _publish(daemon: DaemonProcess, job_id: int, data: bytes, offset: int) -> int:
    with grpc.insecure_channel(daemon.paths.address) as channel:
        stub = rpc.TailhubServiceStub(channel)
        request = pb.PublishRequest(job_id=job_id, data=data, expected_offset=offset)
        return int(stub.Publish(request, timeout=30).log_size)


def _job(daemon: DaemonProcess, job_id: int) -> pb.GetJobResponse:
    with grpc.insecure_channel(daemon.paths.address) as channel:
        stub = rpc.TailhubServiceStub(channel)
        response: pb.GetJobResponse = stub.GetJob(pb.GetJobRequest(job_id=job_id), timeout=30)
        return response


def _log(daemon: DaemonProcess, job_id: int) -> bytes:
    """The whole log as a new follower reads it (not following)."""
    logs = run_cli(daemon.home, "jobs", "logs", str(job_id), "--no-follow")
    assert logs.returncode == 101, logs.stderr  # (101: the job has not finished)
    return logs.stdout


def _attach_push(daemon: DaemonProcess) -> int:
    attached = run_cli(daemon.home, "jobs", "attach", "--push")
    assert attached.returncode == 0, attached.stderr
    return int(attached.stdout)


def test_a_publish_torn_by_a_crash_is_cut_off_and_its_retry_is_taken(
    daemon: DaemonProcess, background_cli: Callable[..., BackgroundCli]
) -> None:
    rng = random.Random(14)
    job_id = _attach_push(daemon)
    acknowledged = b""
    for size in (100_000, 300_000):
        chunk = rng.randbytes(size)
        assert _publish(daemon, job_id, chunk, len(acknowledged)) == len(acknowledged) + size
        acknowledged += chunk
    # Follows across the crash and the restart (the client resumes at its offset).
    follower = background_cli("jobs", "logs", str(job_id), "--follow")
    follower.wait_for_stdout(acknowledged)

    daemon.stop()
    daemon.env = {"TAILHUB_CRASH_AT": "mid-log-append"}
    daemon.start()
    torn = rng.randbytes(300_000)
    with pytest.raises(grpc.RpcError) as raised:
        _publish(daemon, job_id, torn, len(acknowledged))
    assert raised.value.code() == grpc.StatusCode.UNAVAILABLE, raised.value
    assert daemon.process is not None
    assert daemon.process.wait(30) == -9
    # What the crash left: half of the chunk in the file, never acknowledged.
    log_file = daemon.paths.home / "logs" / f"{job_id}.log"
    assert log_file.stat().st_size == len(acknowledged) + len(torn) // 2

    daemon.env = None
    daemon.start()
    assert _job(daemon, job_id).job.log_size == len(acknowledged)
    assert _log(daemon, job_id) == acknowledged
    events = [event.message for event in _job(daemon, job_id).events]
    assert (
        f"{len(torn) // 2} bytes of a publish never acknowledged (the daemon stopped while "
        f"writing it) were cut off; the log ends at offset {len(acknowledged)}, where its "
        "publisher resumes" in events
    )
    # The publisher's retry: the same bytes at the same offset, taken.
    assert _publish(daemon, job_id, torn, len(acknowledged)) == len(acknowledged) + len(torn)
    acknowledged += torn
    assert _log(daemon, job_id) == acknowledged

    finished = run_cli(daemon.home, "jobs", "finish", str(job_id))
    assert finished.returncode == 0, finished.stderr
    assert follower.wait() == 0, follower.stderr
    # The follower that was there all along never saw the torn piece.
    assert follower.stdout == acknowledged


@dataclass
class _Publisher:
    """Publishes random chunks (1 to 300,000 bytes) with expected offsets until it fails."""

    daemon: DaemonProcess
    job_id: int
    rng: random.Random
    acknowledged: bytearray
    in_flight: bytes = b""
    failure: grpc.RpcError | None = None
    thread: threading.Thread = field(init=False)

    def __post_init__(self) -> None:
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        with grpc.insecure_channel(self.daemon.paths.address) as channel:
            stub = rpc.TailhubServiceStub(channel)
            while True:
                self.in_flight = self.rng.randbytes(self.rng.randint(1, 300_000))
                request = pb.PublishRequest(
                    job_id=self.job_id,
                    data=self.in_flight,
                    expected_offset=len(self.acknowledged),
                )
                try:
                    size = stub.Publish(request, timeout=30).log_size
                except grpc.RpcError as error:
                    self.failure = error
                    return
                self.acknowledged += self.in_flight
                assert size == len(self.acknowledged)


def test_publishers_killed_at_random_moments_never_leave_a_torn_chunk(
    daemon: DaemonProcess,
) -> None:
    rng = random.Random()
    job_id = _attach_push(daemon)
    acknowledged = bytearray()
    for _kill in range(6):
        publisher = _Publisher(daemon, job_id, random.Random(rng.random()), acknowledged)
        # Killed once it has had some bytes acknowledged, in the middle of its stream of calls.
        target = len(acknowledged) + rng.randint(1, 3_000_000)
        wait_until(
            lambda: len(acknowledged) >= target or publisher.failure is not None,
            what="acknowledged bytes",
        )
        assert publisher.failure is None, publisher.failure
        daemon.kill()
        publisher.thread.join(30)
        assert not publisher.thread.is_alive()
        in_flight = publisher.in_flight
        daemon.start()

        size = _job(daemon, job_id).job.log_size
        # Exactly what was acknowledged; or the chunk in flight too, whole, when the daemon
        # had recorded it as acknowledged and died before its answer reached the publisher.
        assert size in (len(acknowledged), len(acknowledged) + len(in_flight)), (
            size,
            len(acknowledged),
            len(in_flight),
        )
        # The retry of the unanswered chunk at its offset is taken either way.
        assert _publish(daemon, job_id, in_flight, len(acknowledged)) == len(acknowledged) + len(
            in_flight
        )
        acknowledged += in_flight
    assert _log(daemon, job_id) == bytes(acknowledged)
