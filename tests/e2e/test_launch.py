"""`tailhub jobs launch`: synchronous and `--async` launches, many at once, and the limit on
local jobs running at once. Real daemon, real CLI processes, real jobs."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from helpers import DaemonProcess, run_cli, start_cli, wait_until
from job_helpers import Gate, jobs, queue, submitted_id, write_task

from tailhub.client import JobState

# Each job prints a first line, waits for the gate (so that every job and every follower is
# live at once), then prints lines unique to it, a binary line, and exits with $CODE.
GATED_TASK = """\
name: echoer
run: |
  echo "job $TAILHUB_JOB_ID tag $TAG line 0"
  flock --shared "$GATE" true
  for i in 1 2 3 4; do
    echo "job $TAILHUB_JOB_ID tag $TAG line $i"
    sleep 0.05
  done
  printf 'bin \\377\\000 %s\\n' "$TAG"
  exit "$CODE"
"""


def expected_output(job_id: int, tag: str) -> bytes:
    lines = b"".join(f"job {job_id} tag {tag} line {i}\n".encode() for i in range(5))
    return lines + b"bin \xff\x00 " + tag.encode() + b"\n"


def test_concurrent_sync_launches_each_print_their_own_job(
    daemon: DaemonProcess, workdir: Path
) -> None:
    task = write_task(workdir, GATED_TASK)
    codes = {f"t{i}": 3 if i % 3 == 0 else 0 for i in range(30)}
    gate = Gate.closed(workdir / "gate")
    launches = {
        tag: start_cli(
            daemon.home,
            "jobs",
            "launch",
            str(task),
            "--env",
            f"TAG={tag}",
            "--env",
            f"CODE={code}",
            "--env",
            f"GATE={gate.path}",
        )
        for tag, code in codes.items()
    }
    try:
        # Every job running and followed by its launcher before any of them goes on.
        wait_until(
            lambda: (
                len(listed := jobs(daemon)) == 30
                and all(
                    job.state is JobState.RUNNING and job.subscribers == 1 and job.log_size > 0
                    for job in listed.values()
                )
            ),
            60,
            "30 running jobs, each with its follower",
        )
        gate.open()
        results = {tag: process.communicate(timeout=60) for tag, process in launches.items()}
    finally:
        gate.open()
        for process in launches.values():
            if process.poll() is None:
                process.kill()
                process.wait()

    final = queue(daemon.home)
    assert len(final) == 30
    for tag, (stdout, stderr) in results.items():
        job_id = submitted_id(stderr)
        assert stdout == expected_output(job_id, tag), stderr
        expected_code = 100 if codes[tag] else 0
        assert launches[tag].returncode == expected_code, stderr
        job = final[job_id]
        assert job["state"] == ("FAILED" if codes[tag] else "SUCCEEDED")
        assert job["exit_code"] == codes[tag]
        assert job["upstream_connections"] == 1
    # 30 launches, 30 different jobs.
    assert len({submitted_id(stderr) for _, stderr in results.values()}) == 30


def test_async_launches_print_only_the_id_and_return_before_the_job_ends(
    daemon: DaemonProcess, workdir: Path
) -> None:
    task = write_task(workdir, GATED_TASK)
    gate = Gate.closed(workdir / "gate")
    ids = []
    try:
        for i in range(30):
            launched = run_cli(
                daemon.home,
                "jobs",
                "launch",
                str(task),
                "--async",
                "--env",
                f"TAG=a{i}",
                "--env",
                "CODE=0",
                "--env",
                f"GATE={gate.path}",
            )
            assert launched.returncode == 0, launched.stderr
            assert launched.stdout.strip().isdigit(), launched.stdout
            assert launched.stdout == launched.stdout.strip() + b"\n"
            ids.append(int(launched.stdout))
        assert len(set(ids)) == 30
        # No job can end before the gate opens: each launch returned without waiting for its job.
        assert not any(job.state.terminal for job in jobs(daemon).values())
    finally:
        gate.open()
    wait_until(
        lambda: all(job.state is JobState.SUCCEEDED for job in jobs(daemon).values()),
        60,
        "all 30 jobs to succeed",
    )
    final = queue(daemon.home)
    assert sorted(final) == sorted(ids)
    for job in final.values():
        assert job["state"] == "SUCCEEDED"
        assert job["exit_code"] == 0
        assert job["upstream_connections"] == 1
    logs = run_cli(daemon.home, "jobs", "logs", str(ids[7]))
    assert logs.returncode == 0, logs.stderr
    assert logs.stdout == expected_output(ids[7], "a7")


def test_running_jobs_never_exceed_the_limit_and_start_in_submission_order(
    start_daemon: Callable[..., DaemonProcess], workdir: Path
) -> None:
    daemon = start_daemon("--max-running-jobs", "2")
    events = workdir / "events"
    gate = Gate.closed(workdir / "gate")
    task = write_task(
        workdir,
        f"""\
        run: |
          echo "start $TAILHUB_JOB_ID" >> {events}
          flock --shared {gate.path} true
          sleep "$NAP"
          echo "end $TAILHUB_JOB_ID" >> {events}
        """,
    )
    # Varied durations, so that jobs end in another order than they started.
    naps = ["0.4", "0.1", "0.3", "0", "0.2", "0.1", "0", "0.3"]
    ids = []
    try:
        for nap in naps:
            launched = run_cli(
                daemon.home, "jobs", "launch", str(task), "--async", "--env", f"NAP={nap}"
            )
            assert launched.returncode == 0, launched.stderr
            ids.append(int(launched.stdout))
        wait_until(
            lambda: (
                [jobs(daemon)[job_id].state for job_id in ids]
                == [JobState.RUNNING] * 2 + [JobState.PENDING] * 6
            ),
            20,
            "the first two jobs running, the other six pending",
        )
    finally:
        gate.open()

    def all_ended() -> bool:
        listed = jobs(daemon)
        states = [listed[job_id].state for job_id in ids]
        assert states.count(JobState.RUNNING) <= 2, states
        # A job starts only once every job submitted before it has started.
        started = [state is not JobState.PENDING for state in states]
        assert started == sorted(started, reverse=True), states
        return all(state is JobState.SUCCEEDED for state in states)

    wait_until(all_ended, 60, "all jobs to succeed")

    final = queue(daemon.home)
    started_at = [final[job_id]["started_at"] for job_id in ids]
    assert started_at == sorted(started_at)
    # What the jobs themselves saw: never more than two between their start and their end.
    running: set[str] = set()
    most = 0
    for line in events.read_text().splitlines():
        what, job_id = line.split()
        if what == "start":
            running.add(job_id)
        else:
            running.remove(job_id)
        most = max(most, len(running))
    assert most == 2
    assert not running
