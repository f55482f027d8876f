"""Local jobs outlive their daemon: a restarted daemon adopts the jobs still running, records
the result of those that ended while it was away, and followers resume without loss."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from helpers import DaemonProcess, run_cli, start_cli, wait_until
from job_helpers import Gate, is_alive, jobs, queue, submitted_id, write_task

from tailhub.client import JobState

# Prints `first`, then `second` once gate g1 opens, then `third` once g2 opens.
TWO_GATES = """\
run: |
  echo $$ > {workdir}/pid
  echo first
  flock --shared {workdir}/g1 true
  echo second
  flock --shared {workdir}/g2 true
  echo third
  exit "$CODE"
"""
FIRST, SECOND, THIRD = b"first\n", b"second\n", b"third\n"


def launch_async(daemon: DaemonProcess, task: Path, *args: str) -> int:
    launched = run_cli(daemon.home, "jobs", "launch", str(task), "--async", *args)
    assert launched.returncode == 0, launched.stderr
    return int(launched.stdout)


def wait_for_log(daemon: DaemonProcess, job_id: int, expected: bytes) -> None:
    """Waits until the job itself (not the daemon) has written `expected` to its log file."""
    log = daemon.paths.job_log(job_id)
    wait_until(lambda: log.read_bytes() == expected, 20, f"job {job_id} to write {expected!r}")


def wait_followed(daemon: DaemonProcess, job_id: int, size: int) -> None:
    wait_until(
        lambda: (job := jobs(daemon)[job_id]).log_size == size and job.subscribers == 1,
        20,
        f"job {job_id} to have {size} bytes and its follower",
    )


def take_down(daemon: DaemonProcess, how: str) -> None:
    if how == "kill":
        daemon.kill()
    else:
        daemon.stop()


@pytest.mark.parametrize("how", ["kill", "stop"])
def test_running_job_and_its_follower_survive_a_daemon_restart(
    start_daemon: Callable[..., DaemonProcess],
    workdir: Path,
    gate: Callable[[str], Gate],
    how: str,
) -> None:
    daemon = start_daemon()
    g1, g2 = gate("g1"), gate("g2")
    task = write_task(workdir, TWO_GATES.format(workdir=workdir))
    job_id = launch_async(daemon, task, "--env", "CODE=3")
    follower = start_cli(daemon.home, "jobs", "logs", "--follow", str(job_id))
    try:
        wait_followed(daemon, job_id, len(FIRST))
        take_down(daemon, how)
        # The job goes on without its daemon, and keeps writing its log.
        assert is_alive(int((workdir / "pid").read_text()))
        g1.open()
        wait_for_log(daemon, job_id, FIRST + SECOND)

        daemon.start()
        # Adopted: still running, and the follower has come back by itself.
        wait_followed(daemon, job_id, len(FIRST + SECOND))
        assert jobs(daemon)[job_id].state is JobState.RUNNING
        g2.open()
        stdout, stderr = follower.communicate(timeout=30)
    finally:
        if follower.poll() is None:
            follower.kill()
            follower.wait()
    assert follower.returncode == 100, stderr
    assert stdout == FIRST + SECOND + THIRD
    job = queue(daemon.home)[job_id]
    assert job["state"] == "FAILED"
    assert job["exit_code"] == 3
    assert job["sealed"]
    # One fetch per daemon life: the restarted daemon opened exactly one more.
    assert job["upstream_connections"] == 2


@pytest.mark.parametrize(("code", "state", "cli_code"), [(0, "SUCCEEDED", 0), (5, "FAILED", 100)])
def test_result_of_a_job_that_ended_while_the_daemon_was_down_is_recorded(
    start_daemon: Callable[..., DaemonProcess],
    workdir: Path,
    gate: Callable[[str], Gate],
    code: int,
    state: str,
    cli_code: int,
) -> None:
    daemon = start_daemon()
    g1, g2 = gate("g1"), gate("g2")
    task = write_task(workdir, TWO_GATES.format(workdir=workdir))
    job_id = launch_async(daemon, task, "--env", f"CODE={code}")
    follower = start_cli(daemon.home, "jobs", "logs", "--follow", str(job_id))
    try:
        wait_followed(daemon, job_id, len(FIRST))
        daemon.kill()
        g1.open()
        g2.open()
        pid = int((workdir / "pid").read_text())
        wait_until(lambda: not is_alive(pid), 20, "the job to end")
        wait_for_log(daemon, job_id, FIRST + SECOND + THIRD)

        daemon.start()
        stdout, stderr = follower.communicate(timeout=30)
    finally:
        if follower.poll() is None:
            follower.kill()
            follower.wait()
    assert follower.returncode == cli_code, stderr
    assert stdout == FIRST + SECOND + THIRD
    job = queue(daemon.home)[job_id]
    assert job["state"] == state
    assert job["exit_code"] == code
    assert job["reason"] == f"run exited with {code}"
    assert job["sealed"]
    again = run_cli(daemon.home, "jobs", "logs", str(job_id))
    assert again.returncode == cli_code
    assert again.stdout == FIRST + SECOND + THIRD


@pytest.mark.parametrize(("code", "cli_code"), [(0, 0), (4, 100)])
def test_sync_launch_outlives_a_killed_daemon_and_exits_with_the_jobs_code(
    start_daemon: Callable[..., DaemonProcess],
    workdir: Path,
    gate: Callable[[str], Gate],
    code: int,
    cli_code: int,
) -> None:
    daemon = start_daemon()
    g1, g2 = gate("g1"), gate("g2")
    task = write_task(workdir, TWO_GATES.format(workdir=workdir))
    launcher = start_cli(daemon.home, "jobs", "launch", str(task), "--env", f"CODE={code}")
    try:
        wait_until(lambda: len(jobs(daemon)) == 1, 20, "the launch")
        (job_id,) = jobs(daemon)
        wait_followed(daemon, job_id, len(FIRST))
        daemon.kill()
        g1.open()
        wait_for_log(daemon, job_id, FIRST + SECOND)
        daemon.start()
        wait_followed(daemon, job_id, len(FIRST + SECOND))
        g2.open()
        stdout, stderr = launcher.communicate(timeout=30)
    finally:
        if launcher.poll() is None:
            launcher.kill()
            launcher.wait()
    assert launcher.returncode == cli_code, stderr
    assert submitted_id(stderr) == job_id
    assert stdout == FIRST + SECOND + THIRD
    job = queue(daemon.home)[job_id]
    assert job["exit_code"] == code


def test_pending_job_waits_across_a_restart_and_runs_when_a_slot_frees(
    start_daemon: Callable[..., DaemonProcess], workdir: Path, gate: Callable[[str], Gate]
) -> None:
    daemon = start_daemon("--max-running-jobs", "1")
    g1, g2 = gate("g1"), gate("g2")
    task = write_task(workdir, TWO_GATES.format(workdir=workdir))
    running = launch_async(daemon, task, "--env", "CODE=0")
    pending = launch_async(daemon, task, "--env", "CODE=0")
    wait_until(lambda: jobs(daemon)[running].log_size == len(FIRST), 20, "the first job")
    daemon.kill()
    daemon.start()
    listed = jobs(daemon)
    assert listed[running].state is JobState.RUNNING
    assert listed[pending].state is JobState.PENDING
    g1.open()
    g2.open()
    wait_until(
        lambda: all(job.state is JobState.SUCCEEDED for job in jobs(daemon).values()),
        20,
        "both jobs to succeed",
    )
    logs = run_cli(daemon.home, "jobs", "logs", str(pending))
    assert logs.returncode == 0
    assert logs.stdout == FIRST + SECOND + THIRD
