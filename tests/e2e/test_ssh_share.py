"""Command jobs that are `ssh ... HOST COMMAND` share one connection per destination (OpenSSH's
ControlMaster, sources/ssh_share.py): against a real sshd on loopback (bench/sshd.py, which
installs openssh-server when it is missing and it can)."""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from helpers import DaemonProcess, wait_until
from markers import unavailable

from bench.sshd import Sshd, SshdUnavailable
from tailhub.client import Client, JobState, LogChunk

_ACCEPTED = re.compile(r"^.*Accepted publickey", re.MULTILINE)


@pytest.fixture
def sshd(tmp_path: Path) -> Iterator[Sshd]:
    server = Sshd(tmp_path / "sshd", "100")
    try:
        server.start()
    except SshdUnavailable as error:
        unavailable(f"no sshd: {error}")
    try:
        yield server
    finally:
        server.close()


def _masters(daemon_pid: int) -> list[int]:
    """ssh processes (the masters, the clients still there) whose control sockets are in the
    daemon's directory."""
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                cmdline = Path(f"/proc/{entry}/cmdline").read_bytes()
            except OSError:
                continue
            if cmdline.startswith(b"ssh\0") and f"/proc/{daemon_pid}/fd/".encode() in cmdline:
                found.append(int(entry))
    return found


def _log(client: Client, job_id: int) -> bytes:
    return b"".join(item.data for item in client.follow(job_id) if isinstance(item, LogChunk))


def test_ssh_command_jobs_to_one_host_share_its_connections(
    sshd: Sshd, home: Path, tmp_path: Path
) -> None:
    logs = []
    for index in range(12):
        log = tmp_path / f"remote-{index}.log"
        log.write_bytes(b"".join(b"job %d line %d\n" % (index, n) for n in range(200)))
        logs.append(log)
    # Each job prints its log, then runs until the gate opens: all twelve at once.
    gate = tmp_path / "gate"
    remote = "cat {}; while [ ! -e " + str(gate) + " ]; do sleep 0.05; done"
    accepted_before = len(_ACCEPTED.findall(sshd.log_since(0)))
    with DaemonProcess(home) as daemon, daemon.client() as client:
        jobs = [client.attach_command(sshd.argv(remote.format(log))).id for log in logs]
        # One that says otherwise about sharing gets a connection of its own.
        alone = sshd.argv(remote.format(logs[0]))
        alone[1:1] = ["-o", "ControlMaster=no"]
        own = client.attach_command(alone).id
        sizes = [log.stat().st_size for log in (*logs, logs[0])]

        def printed() -> bool:
            return all(
                client.get(job).log_size == size
                for job, size in zip((*jobs, own), sizes, strict=True)
            )

        wait_until(printed, 60, "every ssh job to print its log")
        gate.touch()

        def ended() -> bool:
            return all(client.get(job).state.terminal for job in (*jobs, own))

        wait_until(ended, 60, "every ssh job to end")
        for job, log in zip(jobs, logs, strict=True):
            assert client.get(job).state is JobState.SUCCEEDED
            assert _log(client, job) == log.read_bytes()
        assert _log(client, own) == logs[0].read_bytes()
        pid = daemon.pid
        assert _masters(pid)
    # Thirteen jobs, three logins: two masters of eight sessions at most (below sshd's
    # MaxSessions of 10), and the job that asked for a connection of its own.
    accepted = len(_ACCEPTED.findall(sshd.log_since(0))) - accepted_before
    assert accepted == 3, sshd.log_since(0)
    # The daemon's stop ended the masters it had started.
    wait_until(lambda: not _masters(pid), 10, "the ssh masters to end with the daemon")
