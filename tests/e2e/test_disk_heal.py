"""A full disk heals with the project's own tools (issue 16, item 12).

The home fills while a job runs; `jobs prune` and `jobs rm` then free space although the
database cannot grow, and the next launch works. Retention keeps ended jobs' logs within a
byte budget (`--retain-logs`), oldest first, and says what it removed.

The full disk is real: the state directory is a small tmpfs mounted for the test.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

from disk_helpers import fill_disk
from helpers import DaemonProcess, run_cli, wait_until

from tailhub.client import Client, JobState, exit_codes


def _free(path: Path) -> int:
    usage = os.statvfs(path)
    return usage.f_bavail * usage.f_frsize


def _fill_with_a_job(daemon: DaemonProcess) -> int:
    """A job that writes until the home is full, then ends FAILED; its id."""
    with daemon.client() as client:
        job = client.launch("cat /dev/zero")
        wait_until(lambda: client.get(job.id).sealed, 60, "the job to end on the full disk")
        assert client.get(job.id).state is JobState.FAILED
    return job.id


def test_prune_frees_a_full_disk_and_the_next_launch_works(
    small_disk_home: Path,  # noqa: F811 (the fixture imported above)
) -> None:
    daemon = DaemonProcess(small_disk_home, args=["--heartbeat-interval", "0.5"])
    daemon.start()
    try:
        job_id = _fill_with_a_job(daemon)
        # Whatever room the job's end left, none is left now.
        fill_disk(small_disk_home)
        assert _free(small_disk_home) < 64 * 1024

        pruned = run_cli(small_disk_home, "jobs", "prune", "--older-than", "0s")
        assert pruned.returncode == 0, pruned.stderr
        assert pruned.stderr.decode().startswith("tailhub: removed 1 job ("), pruned.stderr
        assert not (small_disk_home / "logs" / f"{job_id}.log").exists()
        assert _free(small_disk_home) > 1024 * 1024

        _next_launch_works(small_disk_home)
    finally:
        daemon.stop()


def test_rm_frees_a_full_disk_and_the_next_launch_works(
    small_disk_home: Path,  # noqa: F811 (the fixture imported above)
) -> None:
    daemon = DaemonProcess(small_disk_home, args=["--heartbeat-interval", "0.5"])
    daemon.start()
    try:
        job_id = _fill_with_a_job(daemon)
        fill_disk(small_disk_home)
        assert _free(small_disk_home) < 64 * 1024

        removed = run_cli(small_disk_home, "jobs", "rm", str(job_id))
        assert removed.returncode == 0, removed.stderr
        assert not (small_disk_home / "logs" / f"{job_id}.log").exists()
        assert _free(small_disk_home) > 1024 * 1024
        # The record went too: the job is gone, also for a restarted daemon.
        daemon.restart()
        shown = run_cli(small_disk_home, "jobs", "logs", str(job_id), "--no-follow")
        assert shown.returncode == exit_codes.NOT_FOUND, shown.stderr

        _next_launch_works(small_disk_home)
    finally:
        daemon.stop()


def _next_launch_works(home: Path) -> None:
    task = home.parent / "after.yaml"
    task.write_text("run: echo after\n")
    launched = run_cli(home, "jobs", "launch", str(task))
    assert launched.returncode == 0, launched.stderr
    assert launched.stdout == b"after\n"


def _ended_push_job(client: Client, size: int) -> int:
    job_id = client.attach_push(f"{size} bytes").id
    client.publish(job_id, b"x" * (size - 1) + b"\n")
    client.finish(job_id, 0)
    wait_until(lambda: client.get(job_id).sealed, what=f"job {job_id} to end")
    return job_id


def test_a_log_budget_removes_the_oldest_ended_jobs_first_and_says_so(
    start_daemon: Callable[..., DaemonProcess],
) -> None:
    # --retain-age is --retention by the name the issue gave it.
    daemon = start_daemon("--retain-logs", "10K", "--retain-age", "30d")
    with daemon.client() as client:
        oldest = _ended_push_job(client, 6 * 1024)
        assert client.status().retention_removed_jobs == 0
        newer = _ended_push_job(client, 6 * 1024)
        # 12 KiB of ended logs: the oldest job goes, soon after the newer one ended.
        wait_until(
            lambda: oldest not in {job.id for job in client.list()},
            what="the oldest job to be removed",
        )
        assert not (daemon.home / "logs" / f"{oldest}.log").exists()
        assert (daemon.home / "logs" / f"{newer}.log").stat().st_size == 6 * 1024
        status = client.status()
        assert (status.retention_removed_jobs, status.retention_removed_bytes) == (1, 6 * 1024)

        # 9 KiB: within the budget, nothing more goes; at 12 KiB the oldest left goes.
        newest = _ended_push_job(client, 3 * 1024)
        running = client.attach_push("running").id
        client.publish(running, b"y" * 20 * 1024)  # a job not ended never counts
        last = _ended_push_job(client, 3 * 1024)
        wait_until(
            lambda: newer not in {job.id for job in client.list()},
            what="the oldest job left to be removed",
        )
        assert {job.id for job in client.list()} == {newest, running, last}
        status = client.status()
        assert (status.retention_removed_jobs, status.retention_removed_bytes) == (2, 12 * 1024)
    lines = [line for line in daemon.log_text().splitlines() if "retention: removed" in line]
    # (What follows the logger's name, which is the retention module's own.)
    assert [line[line.index("retention: removed") + len("retention: ") :] for line in lines] == [
        f"removed 1 ended job (6.0KiB of logs; 1 beyond --retain-logs 10.0KiB): {oldest}",
        f"removed 1 ended job (6.0KiB of logs; 1 beyond --retain-logs 10.0KiB): {newer}",
    ]
    shown = run_cli(daemon.home, "daemon", "status")
    assert "retention removed:    2 ended jobs (12.0KiB of logs)" in shown.stdout.decode()
