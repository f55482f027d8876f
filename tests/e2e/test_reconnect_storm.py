"""An upstream that fails at once, again and again (ssh to a host that does not resolve):
a handful of reconnects with growing delays, a few events, and the job given up on with
the last error, never a tight loop."""

from __future__ import annotations

import re
import shlex
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import grpc
from helpers import DaemonProcess, run_cli
from markers import measures

from tailhub.v1 import tailhub_pb2 as pb
from tailhub.v1 import tailhub_pb2_grpc as rpc

SAID = "ssh: Could not resolve hostname ctl: Name or service not known"
# What ssh does with a host that does not resolve: a line on stderr, exit 255 (transport).
DEAD_HOST = f"echo {shlex.quote(SAID)} >&2; exit 255"


def _events(daemon: DaemonProcess, job_id: int) -> list[str]:
    with grpc.insecure_channel(daemon.paths.address) as channel:
        response = rpc.TailhubServiceStub(channel).GetJob(pb.GetJobRequest(job_id=job_id))
    return [event.message for event in response.events]


@measures
def test_a_command_failing_at_once_backs_off_and_is_given_up_with_its_last_error(
    start_daemon: Callable[..., DaemonProcess],
) -> None:
    daemon = start_daemon("--give-up-after", "4s")
    # Before the attach: its first connection may fail before the CLI returns.
    started = time.monotonic()
    attached = run_cli(
        daemon.home, "jobs", "attach", "--command", f"sh -c {shlex.quote(DEAD_HOST)}"
    )
    assert attached.returncode == 0, attached.stderr
    job_id = int(attached.stdout)

    # A follower sees the job end FAILED with the reason (it would wait forever before).
    follow = run_cli(daemon.home, "jobs", "logs", str(job_id), "--follow", timeout=60)
    took = time.monotonic() - started

    assert follow.returncode == 100, follow.stderr
    with daemon.client() as client:
        job = client.get(job_id)
    assert (job.state.value, job.exit_code) == ("FAILED", 255)
    assert f"last: command exited with 255: {SAID}" in job.reason
    assert f"{job.upstream_connections} times in a row" in job.reason
    assert job.reason in follow.stderr.decode()
    # Given up at the deadline: 4 s of retrying, not one connection per stderr line forever.
    assert 4.0 <= took < 15, took
    # Delays 0.1-0.2 s doubling (0.2, 0.4, 0.8, 1.6 s...), the last cut to the deadline: at
    # most 7 connections in 4 s (it was about 6 a second, each printing a line of log).
    assert 4 <= job.upstream_connections <= 7, job.upstream_connections
    assert follow.stdout == (SAID + "\n").encode() * job.upstream_connections

    lost = [message for message in _events(daemon, job_id) if "connection lost" in message]
    # One event for the error, then one at the 2nd and 4th time with the count.
    assert lost[0] == (
        f"upstream connection lost (command exited with 255: {SAID}); "
        + lost[0].rpartition("; ")[2]
    )
    assert [re.findall(r"\) (\d+) times in a row", message) for message in lost[1:]] == [
        ["2"],
        ["4"],
    ], lost
    delays = [float(re.findall(r"reconnecting in ([0-9.]+)s$", message)[0]) for message in lost]
    assert delays == sorted(delays), delays
    assert delays[-1] >= 0.4, delays


def test_output_between_failures_resets_the_delay(
    start_daemon: Callable[..., DaemonProcess], workdir: Path
) -> None:
    # Each connection delivers a new line of output, then fails: the upstream works, so it
    # is reconnected at once (the initial delay) every time and never given up on.
    daemon = start_daemon("--give-up-after", "1s")
    counter = shlex.quote(str(workdir / "connections"))
    script = (
        f"n=$(cat {counter} 2>/dev/null || echo 0); n=$((n+1)); echo $n > {counter}; "
        'i=0; while [ $i -lt $n ]; do echo "line $i"; i=$((i+1)); done; '
        f'[ $n -ge 12 ] && exit 0; echo "dropped" >&2; exit 255'
    )
    attached = run_cli(
        daemon.home,
        "jobs",
        "attach",
        "--stderr",
        "events",
        "--command",
        f"sh -c {shlex.quote(script)}",
    )
    assert attached.returncode == 0, attached.stderr
    job_id = int(attached.stdout)

    follow = run_cli(daemon.home, "jobs", "logs", str(job_id), "--follow", timeout=60)

    assert follow.returncode == 0, follow.stderr
    assert follow.stdout == b"".join(f"line {i}\n".encode() for i in range(12))
    with daemon.client() as client:
        job = client.get(job_id)
    assert (job.state.value, job.upstream_connections) == ("SUCCEEDED", 12)
    lost = [message for message in _events(daemon, job_id) if "connection lost" in message]
    # Each failure followed output: told each time, at the initial delay (0.1-0.2 s).
    assert len(lost) == 11, lost
    assert all(float(re.findall(r"reconnecting in ([0-9.]+)s$", m)[0]) <= 0.2 for m in lost), lost


def test_give_up_after_is_checked_as_a_duration(home: Path) -> None:
    bad = subprocess.run(
        [sys.executable, "-m", "tailhub.daemon", "--home", str(home), "--give-up-after", "soon"],
        capture_output=True,
        timeout=60,
    )
    assert bad.returncode == 2
    assert "--give-up-after" in bad.stderr.decode()
    assert "not a duration" in bad.stderr.decode()
