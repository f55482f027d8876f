"""Ctrl-C during a synchronous launch stops following, not the job."""

from __future__ import annotations

import signal
from collections.abc import Callable
from pathlib import Path

from helpers import BackgroundCli, DaemonProcess, run_cli, wait_until
from job_helpers import Gate, jobs, write_task


def test_ctrl_c_stops_following_and_the_job_goes_on(
    daemon: DaemonProcess, workdir: Path, background_cli: Callable[..., BackgroundCli]
) -> None:
    gate = Gate.closed(workdir / "gate")
    task = write_task(
        workdir,
        f"""\
        run: |
          echo started
          flock --shared {gate.path} true
          echo finished
        """,
    )
    try:
        _interrupt_and_resume(daemon, task, gate, background_cli)
    finally:
        gate.open()


def _interrupt_and_resume(
    daemon: DaemonProcess,
    task: Path,
    gate: Gate,
    background_cli: Callable[..., BackgroundCli],
) -> None:
    launch = background_cli("jobs", "launch", str(task))
    launch.wait_for_stdout(b"started\n")

    launch.process.send_signal(signal.SIGINT)
    assert launch.wait() == 130
    job_id = next(iter(jobs(daemon)))
    assert f"stopped following job {job_id}; it goes on" in launch.stderr
    assert f"tailhub jobs logs {job_id}" in launch.stderr
    assert f"tailhub jobs cancel {job_id}" in launch.stderr
    assert "Traceback" not in launch.stderr
    assert jobs(daemon)[job_id].state.value == "RUNNING"

    gate.open()
    wait_until(lambda: jobs(daemon)[job_id].sealed, what="the job to end")
    logs = run_cli(daemon.home, "jobs", "logs", str(job_id))
    assert logs.returncode == 0
    assert logs.stdout == b"started\nfinished\n"
