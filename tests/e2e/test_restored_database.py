"""A jobs database restored from an older copy: the jobs created since are unknown to it, but
their logs are still there, and their ids are never given again."""

from __future__ import annotations

import shutil
from pathlib import Path

from helpers import DaemonProcess, run_cli
from job_helpers import write_task


def _launch(daemon: DaemonProcess, task: Path) -> int:
    launched = run_cli(daemon.home, "jobs", "launch", str(task), "--async")
    assert launched.returncode == 0, launched.stderr
    return int(launched.stdout)


def test_launches_after_an_older_database_is_restored_get_new_ids_and_run(
    daemon: DaemonProcess, workdir: Path
) -> None:
    task = write_task(workdir, "name: t\nrun: echo job\n")
    hello = write_task(workdir, "name: hello\nrun: echo hello from the restored home\n", "h.yaml")
    first = [_launch(daemon, task) for _ in range(2)]
    daemon.stop()
    backup = workdir / "jobs.sqlite3.backup"
    shutil.copyfile(daemon.paths.database, backup)  # (stopped: no -wal to copy)
    daemon.start()
    later = [_launch(daemon, task) for _ in range(4)]
    assert first + later == [1, 2, 3, 4, 5, 6]
    for job_id in later:
        assert run_cli(daemon.home, "jobs", "logs", str(job_id)).returncode == 0
    daemon.stop()

    shutil.copyfile(backup, daemon.paths.database)
    daemon.start()
    job_id = _launch(daemon, hello)
    logs = run_cli(daemon.home, "jobs", "logs", str(job_id))

    # Above every id whose log is there (it was 3: "logs/3.log already exists").
    assert job_id == 7
    assert logs.returncode == 0, logs.stderr
    assert logs.stdout == b"hello from the restored home\n"
    queued = run_cli(daemon.home, "jobs", "queue").stdout.decode()
    assert "already exists" not in queued
    assert "the database does not know" in daemon.log_text()
    # And the next one goes on from there.
    assert _launch(daemon, hello) == 8
