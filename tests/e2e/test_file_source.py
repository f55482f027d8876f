from __future__ import annotations

import os
import signal
import time
from collections.abc import Callable
from pathlib import Path

import grpc
from helpers import BackgroundCli, DaemonProcess, run_cli, wait_until

from tailhub.v1 import tailhub_pb2 as pb
from tailhub.v1 import tailhub_pb2_grpc as rpc

# inotify tells the tailer at once; without it the tailer would only look once a second.
PROMPT_SECONDS = 0.5


def _attach(daemon: DaemonProcess, path: Path) -> int:
    attached = run_cli(daemon.home, "jobs", "attach", "--file", str(path))
    assert attached.returncode == 0, attached.stderr
    return int(attached.stdout)


def _append(path: Path, data: bytes) -> None:
    with path.open("ab") as handle:
        handle.write(data)


def _events(daemon: DaemonProcess, job_id: int) -> list[tuple[int, str]]:
    with grpc.insecure_channel(daemon.paths.address) as channel:
        response = rpc.TailhubServiceStub(channel).GetJob(pb.GetJobRequest(job_id=job_id))
    return [(event.offset, event.message) for event in response.events]


def _finish(daemon: DaemonProcess, job_id: int) -> None:
    finished = run_cli(daemon.home, "jobs", "finish", str(job_id))
    assert finished.returncode == 0, finished.stderr


def test_truncated_file_is_followed_from_its_new_start(
    daemon: DaemonProcess, workdir: Path, background_cli: Callable[..., BackgroundCli]
) -> None:
    path = workdir / "app.log"
    before = b"".join(b"line %d before the truncation\n" % i for i in range(200))
    path.write_bytes(before)
    job_id = _attach(daemon, path)
    follower = background_cli("jobs", "logs", str(job_id), "--follow")
    follower.wait_for_stdout(before)

    os.truncate(path, 0)
    after = b"after the truncation\n"
    _append(path, after)

    follower.wait_for_stdout(before + after)
    _finish(daemon, job_id)
    assert follower.wait() == 0, follower.stderr
    assert follower.stdout == before + after
    message = f"{path} was truncated; following it from its start"
    assert f"tailhub: job {job_id}: {message}\n" in follower.stderr
    assert _events(daemon, job_id) == [(len(before), message)]
    assert run_cli(daemon.home, "jobs", "logs", str(job_id)).stdout == before + after


def test_rotated_file_is_followed_into_the_new_file(
    daemon: DaemonProcess, workdir: Path, background_cli: Callable[..., BackgroundCli]
) -> None:
    path = workdir / "app.log"
    old = b"old file\n" * 100
    path.write_bytes(old)
    job_id = _attach(daemon, path)
    follower = background_cli("jobs", "logs", str(job_id), "--follow")
    follower.wait_for_stdout(old)

    # logrotate's way: rename, the writer finishes its last line, then a new file appears.
    with path.open("ab") as writer:
        path.rename(workdir / "app.log.1")
        writer.write(b"last line of the old file\n")
    old += b"last line of the old file\n"
    follower.wait_for_stdout(old)
    new = b"first line of the new file\n"
    path.write_bytes(new)
    follower.wait_for_stdout(old + new)
    _append(path, b"and more\n")
    follower.wait_for_stdout(old + new + b"and more\n")

    _finish(daemon, job_id)
    assert follower.wait() == 0, follower.stderr
    everything = old + new + b"and more\n"
    assert follower.stdout == everything
    message = f"{path} was replaced; following the new file from its start"
    assert f"tailhub: job {job_id}: {message}\n" in follower.stderr
    assert (len(old), message) in _events(daemon, job_id)
    assert run_cli(daemon.home, "jobs", "logs", str(job_id)).stdout == everything


def test_rotation_while_the_daemon_is_not_looking_loses_nothing(
    daemon: DaemonProcess, workdir: Path, background_cli: Callable[..., BackgroundCli]
) -> None:
    path = workdir / "app.log"
    path.write_bytes(b"seen before the rotation\n")
    job_id = _attach(daemon, path)
    follower = background_cli("jobs", "logs", str(job_id), "--follow")
    follower.wait_for_stdout(b"seen before the rotation\n")

    # Frozen, the daemon finds the rotation done when it looks again: the old file's last
    # bytes come first, then the new file's.
    os.kill(daemon.pid, signal.SIGSTOP)
    try:
        with path.open("ab") as writer:
            path.rename(workdir / "app.log.1")
            writer.write(b"written to the old file after the rename\n")
        path.write_bytes(b"the new file\n")
    finally:
        os.kill(daemon.pid, signal.SIGCONT)

    everything = (
        b"seen before the rotation\nwritten to the old file after the rename\nthe new file\n"
    )
    follower.wait_for_stdout(everything)
    _finish(daemon, job_id)
    assert follower.wait() == 0, follower.stderr
    assert follower.stdout == everything
    assert f"{path} was replaced" in follower.stderr


def test_new_bytes_reach_a_follower_promptly(
    daemon: DaemonProcess, workdir: Path, background_cli: Callable[..., BackgroundCli]
) -> None:
    path = workdir / "app.log"
    path.write_bytes(b"")
    job_id = _attach(daemon, path)
    follower = background_cli("jobs", "logs", str(job_id), "--follow")
    with daemon.client() as client:
        wait_until(lambda: client.get(job_id).subscribers == 1, what="the follower")
    expected = b""
    latencies = []
    for index in range(5):
        line = b"line %d\n" % index
        began = time.monotonic()
        _append(path, line)
        expected += line
        follower.wait_for_stdout(expected)
        latencies.append(time.monotonic() - began)

    _finish(daemon, job_id)
    assert follower.wait() == 0, follower.stderr
    latencies.sort()
    assert latencies[len(latencies) // 2] < PROMPT_SECONDS, f"latencies: {latencies}"
