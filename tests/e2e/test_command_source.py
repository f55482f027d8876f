from __future__ import annotations

import functools
import random
import shlex
import sys
from collections.abc import Callable
from pathlib import Path

import grpc
from helpers import BackgroundCli, DaemonProcess, run_cli, wait_until

from tailhub.client import JobInfo
from tailhub.v1 import tailhub_pb2 as pb
from tailhub.v1 import tailhub_pb2_grpc as rpc

REPLAY = Path(__file__).parent.parent / "replay_upstream.py"


def _attach(daemon: DaemonProcess, argv: list[str], *extra: str) -> int:
    attached = run_cli(daemon.home, "jobs", "attach", "--command", shlex.join(argv), *extra)
    assert attached.returncode == 0, attached.stderr
    return int(attached.stdout)


def _job(daemon: DaemonProcess, job_id: int) -> JobInfo:
    with daemon.client() as client:
        return client.get(job_id)


def _wait_ended(daemon: DaemonProcess, job_id: int) -> JobInfo:
    wait_until(lambda: _job(daemon, job_id).sealed, what=f"job {job_id} to end")
    return _job(daemon, job_id)


def _has_size(daemon: DaemonProcess, job_id: int, size: int) -> bool:
    return _job(daemon, job_id).log_size == size


def _events(daemon: DaemonProcess, job_id: int) -> list[pb.SourceEvent]:
    with grpc.insecure_channel(daemon.paths.address) as channel:
        response = rpc.TailhubServiceStub(channel).GetJob(pb.GetJobRequest(job_id=job_id))
    return list(response.events)


def test_command_killed_mid_stream_reconnects_and_followers_get_every_byte_once(
    daemon: DaemonProcess, workdir: Path, background_cli: Callable[..., BackgroundCli]
) -> None:
    upstream = workdir / "upstream.log"
    state = workdir / "state"
    state.mkdir()
    # Binary, with cuts in the middle of 4093-byte writes: nothing lines up conveniently.
    first = random.Random(7).randbytes(300_000)
    upstream.write_bytes(first)
    cuts = [70_001, 150_003]
    job_id = _attach(
        daemon, [sys.executable, str(REPLAY), str(upstream), str(state), *map(str, cuts)]
    )
    follower = background_cli("jobs", "logs", str(job_id), "--follow")

    for number, cut in enumerate(cuts, start=1):
        # The connection is mid-stream: `cut` bytes sent, the rest of the file not yet.
        wait_until(
            functools.partial(_has_size, daemon, job_id, cut),
            what=f"connection {number} to deliver {cut} bytes",
        )
        assert _job(daemon, job_id).upstream_connections == number
        follower.wait_for_stdout(first[:cut])
        (state / f"drop-{number}").touch()

    wait_until(lambda: _job(daemon, job_id).log_size == len(first), what="the replayed file")
    more = b"appended after the last reconnect\n" * 1000
    with upstream.open("ab") as handle:
        handle.write(more)
    follower.wait_for_stdout(first + more)
    assert follower.process.poll() is None, "the follower ended while the job was running"
    (state / "done").touch()

    assert follower.wait() == 0, follower.stderr
    assert follower.stdout == first + more
    job = _wait_ended(daemon, job_id)
    assert (job.state.value, job.exit_code) == ("SUCCEEDED", 0)
    connections = int((state / "connections").read_text())
    assert connections == 3
    assert job.upstream_connections == connections
    lost = [event for event in _events(daemon, job_id) if "connection lost" in event.message]
    assert [event.offset for event in lost] == cuts
    assert follower.stderr.count("upstream connection lost (command exited with 255)") == 2
    assert "Traceback" not in follower.stderr
    again = run_cli(daemon.home, "jobs", "logs", str(job_id))
    assert again.returncode == 0
    assert again.stdout == first + more


def test_command_exiting_zero_succeeds(daemon: DaemonProcess) -> None:
    job_id = _attach(daemon, ["sh", "-c", "printf 'one\\ntwo\\n'; exit 0"])

    logs = run_cli(daemon.home, "jobs", "logs", str(job_id))

    assert logs.returncode == 0, logs.stderr
    assert logs.stdout == b"one\ntwo\n"
    job = _wait_ended(daemon, job_id)
    assert (job.state.value, job.exit_code, job.upstream_connections) == ("SUCCEEDED", 0, 1)


def test_command_exiting_three_fails_the_job(daemon: DaemonProcess) -> None:
    job_id = _attach(daemon, ["sh", "-c", "echo broken >&2; exit 3"])

    logs = run_cli(daemon.home, "jobs", "logs", str(job_id))

    assert logs.returncode == 100
    assert logs.stdout == b"broken\n"  # stderr is merged into the log
    assert "command exited with 3" in logs.stderr.decode()
    job = _wait_ended(daemon, job_id)
    assert (job.state.value, job.exit_code, job.upstream_connections) == ("FAILED", 3, 1)


def test_missing_program_fails_the_job_with_a_clear_reason(daemon: DaemonProcess) -> None:
    job_id = _attach(daemon, ["/nonexistent/tailhub-test-program", "--flag"])

    logs = run_cli(daemon.home, "jobs", "logs", str(job_id))

    assert logs.returncode == 100
    job = _wait_ended(daemon, job_id)
    assert job.state.value == "FAILED"
    assert job.exit_code == 127
    assert "/nonexistent/tailhub-test-program" in job.reason
    assert "No such file or directory" in job.reason
    stderr = logs.stderr.decode()
    assert job.reason in stderr
    assert "Traceback" not in stderr


def test_custom_transport_exit_codes_replace_the_default(
    daemon: DaemonProcess, workdir: Path
) -> None:
    # First connection: prints a line and exits 7; the next replays that line and finishes.
    marker = workdir / "connected-once"
    flaky = (
        f"echo first line; if [ -e {marker} ]; then echo second line; exit 0; fi; "
        f"touch {marker}; exit 7"
    )
    job_id = _attach(daemon, ["sh", "-c", flaky], "--transport-exit-code", "7")

    logs = run_cli(daemon.home, "jobs", "logs", str(job_id))

    assert logs.returncode == 0, logs.stderr
    assert logs.stdout == b"first line\nsecond line\n"
    job = _wait_ended(daemon, job_id)
    assert (job.state.value, job.exit_code, job.upstream_connections) == ("SUCCEEDED", 0, 2)

    # With its own set, 255 is an ordinary failure: no reconnect.
    failing = _attach(daemon, ["sh", "-c", "echo gone; exit 255"], "--transport-exit-code", "7")
    logs = run_cli(daemon.home, "jobs", "logs", str(failing))
    assert logs.returncode == 100
    assert logs.stdout == b"gone\n"
    job = _wait_ended(daemon, failing)
    assert (job.state.value, job.exit_code, job.upstream_connections) == ("FAILED", 255, 1)


def _flaky_upstream(marker: Path) -> list[str]:
    """Fails its first connection the way ssh does (a message on stderr, exit 255)."""
    script = (
        f"if [ ! -e {shlex.quote(str(marker))} ]; then touch {shlex.quote(str(marker))}; "
        "echo 'kex_exchange_identification: Connection reset by peer' >&2; exit 255; fi; "
        "printf 'abcdefghijklmnopqrstuvwxyz\\n'"
    )
    return ["bash", "-c", script]


def test_stderr_of_a_failed_connection_does_not_shift_the_replay(
    daemon: DaemonProcess, workdir: Path
) -> None:
    job_id = _attach(daemon, _flaky_upstream(workdir / "once"))
    job = _wait_ended(daemon, job_id)
    assert job.state.value == "SUCCEEDED"
    assert job.upstream_connections == 2
    logs = run_cli(daemon.home, "jobs", "logs", str(job_id))
    assert logs.returncode == 0, logs.stderr
    # Merged: ssh's message where it happened, then every byte of the upstream, none skipped.
    assert logs.stdout == (
        b"kex_exchange_identification: Connection reset by peer\nabcdefghijklmnopqrstuvwxyz\n"
    )


def test_stderr_as_events_keeps_the_log_to_the_upstream_bytes(
    daemon: DaemonProcess, workdir: Path
) -> None:
    job_id = _attach(daemon, _flaky_upstream(workdir / "once"), "--stderr", "events")
    job = _wait_ended(daemon, job_id)
    assert job.state.value == "SUCCEEDED"
    logs = run_cli(daemon.home, "jobs", "logs", str(job_id))
    assert logs.returncode == 0, logs.stderr
    assert logs.stdout == b"abcdefghijklmnopqrstuvwxyz\n"
    assert b"stderr: kex_exchange_identification: Connection reset by peer" in logs.stderr
    messages = [event.message for event in _events(daemon, job_id)]
    assert "stderr: kex_exchange_identification: Connection reset by peer" in messages


def test_a_huge_stderr_line_as_events_does_not_break_the_fetch(daemon: DaemonProcess) -> None:
    script = "head -c 200000 /dev/zero | tr '\\0' x >&2; printf 'out\\n'"
    job_id = _attach(daemon, ["bash", "-c", script], "--stderr", "events")
    job = _wait_ended(daemon, job_id)
    assert job.state.value == "SUCCEEDED"
    assert job.log_size == 4
    messages = [event.message for event in _events(daemon, job_id)]
    assert messages
    assert all(message.startswith("stderr: xxx") for message in messages)
    assert all(len(message) <= len("stderr: ") + 1000 for message in messages)
