"""Source events are capped per job: a flood of them costs the daemon little, GetJob still
answers, and followers learn how many were dropped."""

from __future__ import annotations

import re
import shlex
import sys
from pathlib import Path

import grpc
from helpers import DaemonProcess, run_cli, wait_until

from tailhub.client import JobState
from tailhub.v1 import tailhub_pb2 as pb
from tailhub.v1 import tailhub_pb2_grpc as rpc

FLOOD_LINES = 200_000
MAX_EVENTS = 1000
MAX_MESSAGE_BYTES = 1024
MIB = 1024 * 1024
# A line of 3000 two-byte characters: the stderr line cap (1000 characters) alone lets 2000
# bytes through; the event cap must cut it to 1 KiB.
WIDE = "é" * 3000

_FLOOD = f"""\
import sys
sys.stdout.write("starting\\n")
sys.stdout.flush()
sys.stderr.write({WIDE!r} + "\\n")
for n in range({FLOOD_LINES}):
    sys.stderr.write(f"warning {{n}}: the disk is almost full, the disk is almost full\\n")
sys.stderr.flush()
sys.stdout.write("done\\n")
"""
_DROPPED = re.compile(r"(\d+) events? dropped \(rate or count limit\)")


def _peak_rss(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmHWM")


def _database_bytes(daemon: DaemonProcess) -> int:
    database = daemon.paths.database
    return sum(
        path.stat().st_size
        for path in database.parent.glob(database.name + "*")  # with its -wal and -shm
    )


def test_a_stderr_flood_in_events_mode_is_capped_and_the_drops_are_reported(
    daemon: DaemonProcess,
) -> None:
    command = f"{shlex.quote(sys.executable)} -c {shlex.quote(_FLOOD)}"
    attached = run_cli(
        daemon.home, "jobs", "attach", "--command", command, "--stderr", "events", "-n", "flood"
    )
    assert attached.returncode == 0, attached.stderr
    job_id = int(attached.stdout)

    follower = run_cli(daemon.home, "jobs", "logs", str(job_id), timeout=120)
    assert follower.returncode == 0, follower.stderr
    assert follower.stdout == b"starting\ndone\n"
    with daemon.client() as client:
        job = client.get(job_id)
    assert job.state is JobState.SUCCEEDED
    assert job.sealed

    # GetJob answers within gRPC's default message limit (4 MiB), as any client has it.
    with grpc.insecure_channel(daemon.paths.address) as channel:
        response = rpc.TailhubServiceStub(channel).GetJob(
            pb.GetJobRequest(job_id=job_id), timeout=30
        )
    assert response.ByteSize() < 2 * MIB
    messages = [event.message for event in response.events]
    assert 100 <= len(messages) <= MAX_EVENTS
    assert all(len(message.encode()) <= MAX_MESSAGE_BYTES for message in messages)
    assert messages[0].startswith("stderr: éé")
    assert messages[0].endswith("…")

    # Every line is either kept or counted: nothing disappears without a word.
    dropped = sum(int(found.group(1)) for found in map(_DROPPED.fullmatch, messages) if found)
    kept = sum(message.startswith("stderr: warning ") for message in messages)
    assert dropped > 0
    assert kept + dropped == FLOOD_LINES
    assert _DROPPED.fullmatch(messages[-1]), messages[-1]

    # A follower sees the same events, the dropped counts among them.
    follower_events = [
        line.removeprefix(f"tailhub: job {job_id}: ")
        for line in follower.stderr.decode().splitlines()
        if line.startswith(f"tailhub: job {job_id}: ")
    ]
    assert follower_events == messages

    assert _peak_rss(daemon.pid) < 150 * MIB
    assert _database_bytes(daemon) < 5 * MIB


def test_dropped_count_arrives_while_the_job_still_runs(daemon: DaemonProcess) -> None:
    """A burst then silence: the count comes with the next heartbeat, not at the job's end."""
    burst = 'for n in $(seq 1 500); do echo "retry $n" >&2; done; echo burst-over; sleep 600'
    with daemon.client() as client:
        job = client.attach_command([burst], shell=True, stderr_events=True)
        try:
            wait_until(lambda: client.get(job.id).log_size == len(b"burst-over\n"), 20, "burst")
            counted: list[int] = []

            def dropped_reported() -> bool:
                with grpc.insecure_channel(daemon.paths.address) as channel:
                    events = (
                        rpc.TailhubServiceStub(channel)
                        .GetJob(pb.GetJobRequest(job_id=job.id), timeout=10)
                        .events
                    )
                counted[:] = [
                    int(found.group(1))
                    for found in (_DROPPED.fullmatch(event.message) for event in events)
                    if found
                ]
                kept = sum(event.message.startswith("stderr: retry ") for event in events)
                return sum(counted) + kept == 500

            wait_until(dropped_reported, 10, "the dropped count while the job runs")
            assert sum(counted) > 0
            assert client.get(job.id).state is JobState.RUNNING
        finally:
            client.cancel([job.id])


def test_the_same_message_twice_at_one_offset_is_shown_twice(daemon: DaemonProcess) -> None:
    """Events are told apart by position, not by text: ssh can say the same thing twice."""
    script = "echo 'Connection reset by peer' >&2; echo 'Connection reset by peer' >&2; echo up"
    with daemon.client() as client:
        job = client.attach_command([script], shell=True, stderr_events=True)
    follower = run_cli(daemon.home, "jobs", "logs", str(job.id))
    assert follower.returncode == 0, follower.stderr
    assert follower.stdout == b"up\n"
    said = f"tailhub: job {job.id}: stderr: Connection reset by peer"
    assert follower.stderr.decode().splitlines().count(said) == 2, follower.stderr
