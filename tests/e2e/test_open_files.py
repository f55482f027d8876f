"""A daemon short of descriptors, and one that did not stop cleanly: what the user is told
(the job's reason, the daemon's log, `tailhub doctor`)."""

from __future__ import annotations

import socket
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

from helpers import DaemonProcess, run_cli, wait_until

from tailhub.daemon.paths import StatePaths

LIMIT = 64


def _lines(done: subprocess.CompletedProcess[bytes]) -> list[str]:
    assert b"Traceback" not in done.stderr, done.stderr
    return done.stdout.decode().splitlines()


def _fill(daemon: DaemonProcess) -> Iterator[socket.socket]:
    """Connections to the daemon, one at a time, each accepted (one descriptor more)
    before the next, until it holds all LIMIT of its descriptors."""
    while (held := daemon.open_fds()) < LIMIT:
        connection = socket.socket(socket.AF_UNIX)
        connection.connect(str(daemon.paths.socket))
        yield connection
        wait_until(_more_than(daemon, held), 10, "the daemon to accept it")


def _more_than(daemon: DaemonProcess, held: int) -> Callable[[], bool]:
    return lambda: daemon.open_fds() > held


def test_a_daemon_out_of_descriptors_fails_a_job_with_the_fix_and_doctor_fails(
    home: Path,
) -> None:
    daemon = DaemonProcess(home, prefix=["prlimit", f"--nofile={LIMIT}:{LIMIT}"])
    daemon.start()
    connections: list[socket.socket] = []
    try:
        with daemon.client() as client:
            client.status()  # its connection made before the daemon is full
            connections += _fill(daemon)
            job = client.launch("echo hello")
            wait_until(lambda: client.get(job.id).state.terminal, 20, "the job to end")
            ended = client.get(job.id)
        for connection in connections[:2]:  # room for the doctor's connection
            connection.close()
        doctor = run_cli(home, "doctor")
    finally:
        for connection in connections:
            connection.close()
        daemon.stop()

    assert ended.state.name == "FAILED"
    assert "Too many open files" in ended.reason
    assert f"the daemon holds all {LIMIT} descriptors it may open" in ended.reason
    assert "`ulimit -n 65536` in the shell that starts it" in ended.reason
    assert "LimitNOFILE=" in ended.reason
    lines = _lines(doctor)
    assert doctor.returncode == 1, lines
    (line,) = [line for line in lines if line.startswith("FAIL  open files:")]
    assert f"of its {LIMIT} descriptors: jobs fail to start" in line
    assert "prune" not in line
    # It said so at start, in its log.
    assert f"the open-file limit is {LIMIT} (hard limit {LIMIT})" in daemon.log_text()


def test_doctor_warns_when_the_last_daemon_did_not_stop_cleanly(home: Path) -> None:
    daemon = DaemonProcess(home)
    daemon.start()
    pid = daemon.pid
    daemon.kill()

    crashed = run_cli(home, "doctor")
    daemon.start()
    with daemon.client() as client:
        # Served: its signal handlers are installed (a SIGTERM between its bind and them
        # would end it without cleaning up either).
        client.status()
    daemon.stop()
    clean = run_cli(home, "doctor")

    lines = _lines(crashed)
    assert crashed.returncode == 0, lines  # a warning; --strict makes it exit 1
    (line,) = [line for line in lines if line.startswith("warn  last stop:")]
    assert line == (
        f"warn  last stop: the last daemon did not stop cleanly (pid {pid} is gone and left "
        f"its pid file and socket): see {StatePaths(home).daemon_log} for why; its local "
        "jobs run on, and the next daemon adopts them"
    )
    assert not [line for line in _lines(clean) if "last stop" in line]
