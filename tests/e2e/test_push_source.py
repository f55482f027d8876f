from __future__ import annotations

import random
from collections.abc import Callable

from helpers import BackgroundCli, DaemonProcess, run_cli


def _attach_push(daemon: DaemonProcess) -> int:
    attached = run_cli(daemon.home, "jobs", "attach", "--push", "--name", "pushed")
    assert attached.returncode == 0, attached.stderr
    return int(attached.stdout)


def _publish(daemon: DaemonProcess, job_id: int, data: bytes) -> None:
    published = run_cli(daemon.home, "jobs", "publish", str(job_id), input=data)
    assert published.returncode == 0, published.stderr
    assert published.stderr == b""


def test_published_bytes_reach_every_follower_and_finish_ends_them(
    daemon: DaemonProcess, background_cli: Callable[..., BackgroundCli]
) -> None:
    job_id = _attach_push(daemon)
    followers = [background_cli("jobs", "logs", str(job_id), "--follow") for _ in range(2)]
    # Binary and larger than one read of stdin (1 MiB): sent as several Publish calls.
    first = random.Random(1).randbytes(2 * 1024 * 1024 + 17) + b"\r\n\x00\xff"
    _publish(daemon, job_id, first)
    for follower in followers:
        follower.wait_for_stdout(first)
    second = b"second batch\n"
    _publish(daemon, job_id, second)
    for follower in followers:
        follower.wait_for_stdout(first + second)
        assert follower.process.poll() is None, "a follower of a running job ended early"

    finished = run_cli(daemon.home, "jobs", "finish", str(job_id), "--exit-code", "0")
    assert finished.returncode == 0, finished.stderr

    for follower in followers:
        assert follower.wait() == 0, follower.stderr
        assert follower.stdout == first + second
        assert "Traceback" not in follower.stderr
    late = run_cli(daemon.home, "jobs", "logs", str(job_id))
    assert late.returncode == 0
    assert late.stdout == first + second


def test_push_job_finished_with_failure_fails_its_followers(
    daemon: DaemonProcess, background_cli: Callable[..., BackgroundCli]
) -> None:
    job_id = _attach_push(daemon)
    follower = background_cli("jobs", "logs", str(job_id))
    _publish(daemon, job_id, b"about to fail\n")
    follower.wait_for_stdout(b"about to fail\n")

    finished = run_cli(daemon.home, "jobs", "finish", str(job_id), "--exit-code", "4")
    assert finished.returncode == 0, finished.stderr

    assert follower.wait() == 100, follower.stderr
    assert follower.stdout == b"about to fail\n"
    with daemon.client() as client:
        job = client.get(job_id)
    assert (job.state.value, job.exit_code, job.sealed) == ("FAILED", 4, True)


def test_publishing_to_a_finished_push_job_is_refused(daemon: DaemonProcess) -> None:
    job_id = _attach_push(daemon)
    _publish(daemon, job_id, b"kept\n")
    assert run_cli(daemon.home, "jobs", "finish", str(job_id)).returncode == 0

    refused = run_cli(daemon.home, "jobs", "publish", str(job_id), input=b"too late\n")

    assert refused.returncode == 1
    message = refused.stderr.decode()
    assert message.count("\n") == 1, message
    assert f"job {job_id} has ended" in message
    assert "Traceback" not in message
    logs = run_cli(daemon.home, "jobs", "logs", str(job_id))
    assert logs.stdout == b"kept\n"
