"""`tailhub jobs cancel`: SIGTERM, SIGKILL after the grace period, pending jobs, `--all`."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

from helpers import DaemonProcess, run_cli, start_cli, wait_until
from job_helpers import Gate, is_alive, jobs, queue, submitted_id, write_task

from tailhub.client import JobState

GRACE = 1.0


def launch_async(daemon: DaemonProcess, task: Path, *args: str) -> int:
    launched = run_cli(daemon.home, "jobs", "launch", str(task), "--async", *args)
    assert launched.returncode == 0, launched.stderr
    return int(launched.stdout)


def wait_for_output(daemon: DaemonProcess, job_id: int, size: int, subscribers: int) -> None:
    """Waits until the job has written `size` bytes and has `subscribers` followers."""
    wait_until(
        lambda: (job := jobs(daemon)[job_id]).log_size == size and job.subscribers == subscribers,
        20,
        f"job {job_id} to print {size} bytes with {subscribers} followers",
    )


def test_cancel_kills_a_job_that_ignores_sigterm_after_the_grace_period(
    start_daemon: Callable[..., DaemonProcess], workdir: Path
) -> None:
    daemon = start_daemon("--cancel-grace", str(GRACE))
    pids = workdir / "pids"
    task = write_task(
        workdir,
        f"""\
        run: |
          trap '' TERM
          sleep 60 &
          echo "$$ $!" > {pids}
          echo ready
          wait
          echo "SIGTERM ended the job"
        """,
    )
    job_id = launch_async(daemon, task)
    follower = start_cli(daemon.home, "jobs", "logs", "--follow", str(job_id))
    try:
        wait_for_output(daemon, job_id, len(b"ready\n"), subscribers=1)
        shell_pid, sleep_pid = map(int, pids.read_text().split())

        started = time.monotonic()
        cancelled = run_cli(daemon.home, "jobs", "cancel", str(job_id))
        elapsed = time.monotonic() - started
        assert cancelled.returncode == 0, cancelled.stderr
        assert f"job {job_id}: CANCELLED" in cancelled.stderr.decode()
        # It ignored SIGTERM: only SIGKILL, sent after the grace period, could end it.
        assert elapsed >= GRACE
        stdout, stderr = follower.communicate(timeout=30)
    finally:
        if follower.poll() is None:
            follower.kill()
            follower.wait()
    assert follower.returncode == 103, stderr
    assert stdout == b"ready\n"
    job = queue(daemon.home)[job_id]
    assert job["state"] == "CANCELLED"
    # The whole process group is gone, not only the job's shell.
    wait_until(lambda: not is_alive(shell_pid) and not is_alive(sleep_pid), 10, "the job to die")


def test_cancel_ends_a_job_with_sigterm_and_its_launcher_exits_103(
    start_daemon: Callable[..., DaemonProcess], workdir: Path
) -> None:
    # A grace period far longer than the test: SIGTERM alone must end the job.
    daemon = start_daemon("--cancel-grace", "60")
    task = write_task(
        workdir,
        """\
        run: |
          echo started
          sleep 60
        """,
    )
    launcher = start_cli(daemon.home, "jobs", "launch", str(task))
    try:
        wait_until(lambda: len(jobs(daemon)) == 1, 20, "the launch")
        (job_id,) = jobs(daemon)
        wait_for_output(daemon, job_id, len(b"started\n"), subscribers=1)
        cancelled = run_cli(daemon.home, "jobs", "cancel", str(job_id), timeout=30)
        assert cancelled.returncode == 0, cancelled.stderr
        stdout, stderr = launcher.communicate(timeout=30)
    finally:
        if launcher.poll() is None:
            launcher.kill()
            launcher.wait()
    assert launcher.returncode == 103, stderr
    assert submitted_id(stderr) == job_id
    # The job's output, then the notice of the shell that ran its script (as in a terminal).
    assert stdout == b"started\nTerminated\n"
    job = queue(daemon.home)[job_id]
    assert job["state"] == "CANCELLED"
    assert job["sealed"]


def test_cancel_of_a_pending_job_ends_it_before_it_ever_runs(
    start_daemon: Callable[..., DaemonProcess], workdir: Path, gate: Callable[[str], Gate]
) -> None:
    daemon = start_daemon("--max-running-jobs", "1", "--cancel-grace", str(GRACE))
    release = gate("gate")
    task = write_task(
        workdir,
        f"""\
        run: |
          echo "job $TAILHUB_JOB_ID ran"
          touch {workdir}/ran-$TAILHUB_JOB_ID
          flock --shared {release.path} true
        """,
    )
    first, second, third = (launch_async(daemon, task) for _ in range(3))
    wait_until(
        lambda: (
            [jobs(daemon)[job_id].state for job_id in (first, second, third)]
            == [JobState.RUNNING, JobState.PENDING, JobState.PENDING]
        ),
        20,
        "one job running, two pending",
    )

    cancelled = run_cli(daemon.home, "jobs", "cancel", str(second))
    assert cancelled.returncode == 0, cancelled.stderr
    assert f"job {second}: CANCELLED" in cancelled.stderr.decode()
    follower = run_cli(daemon.home, "jobs", "logs", str(second))
    assert follower.returncode == 103, follower.stderr
    assert follower.stdout == b""

    release.open()
    wait_until(
        lambda: jobs(daemon)[third].state is JobState.SUCCEEDED, 20, "the third job to succeed"
    )
    final = queue(daemon.home)
    assert final[first]["state"] == "SUCCEEDED"
    assert final[second]["state"] == "CANCELLED"
    assert final[second]["exit_code"] is None
    assert final[second]["upstream_connections"] == 0
    assert final[third]["state"] == "SUCCEEDED"
    assert not (workdir / f"ran-{second}").exists()
    assert (workdir / f"ran-{third}").exists()


def test_cancel_all_ends_every_job_not_ended_and_leaves_the_rest(
    start_daemon: Callable[..., DaemonProcess], workdir: Path
) -> None:
    daemon = start_daemon("--max-running-jobs", "1", "--cancel-grace", str(GRACE))
    quick = write_task(workdir, "run: echo quick\n", name="quick.yaml")
    slow = write_task(workdir, "run: |\n  echo slow\n  sleep 60\n", name="slow.yaml")
    done = run_cli(daemon.home, "jobs", "launch", str(quick))
    assert done.returncode == 0, done.stderr
    finished = submitted_id(done.stderr)
    running, pending = launch_async(daemon, slow), launch_async(daemon, slow)
    wait_until(lambda: jobs(daemon)[running].log_size == len(b"slow\n"), 20, "the slow job to run")
    assert jobs(daemon)[pending].state is JobState.PENDING

    cancelled = run_cli(daemon.home, "jobs", "cancel", "--all", timeout=30)
    assert cancelled.returncode == 0, cancelled.stderr
    assert cancelled.stderr.decode().splitlines() == [
        f"tailhub: job {running}: CANCELLED",
        f"tailhub: job {pending}: CANCELLED",
    ]
    final = queue(daemon.home)
    assert final[finished]["state"] == "SUCCEEDED"
    assert final[running]["state"] == "CANCELLED"
    assert final[pending]["state"] == "CANCELLED"

    again = run_cli(daemon.home, "jobs", "cancel", "--all")
    assert again.returncode == 0, again.stderr
    assert b"no job to cancel" in again.stderr
