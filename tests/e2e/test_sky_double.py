"""The SkyPilot contract double behaves as SkyPilot's CLI does for the managed-jobs contract a
backend relies on: ids in launch output, whole-log replays, exit codes, drops and faults."""

from __future__ import annotations

import json
import os
import re
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from helpers import wait_until
from job_helpers import Gate, is_alive, write_task
from skydouble import ANSI, JOBS_SUBMITTED, SKY, SkyDouble

TASK_LINE = re.compile(r"^\((?P<name>[^,()]+), pid=(?P<pid>\d+)\) (?P<text>.*)$")


@pytest.fixture
def sky(home: Path) -> Iterator[SkyDouble]:
    double = SkyDouble(home.parent / "sky")
    try:
        yield double
    finally:
        # No job outlives its test.
        double.set_faults()
        double.run("jobs", "cancel", "-a", "-y")


def task_lines(stdout: str) -> list[str]:
    """The job's own output lines, without SkyPilot's framing or colours."""
    found = [TASK_LINE.match(line) for line in ANSI.sub("", stdout).splitlines()]
    return [match.group("text") for match in found if match]


def test_launch_prints_the_managed_job_id_and_logs_replays_the_whole_log(
    sky: SkyDouble, workdir: Path
) -> None:
    task = write_task(
        workdir,
        """\
        name: train
        envs:
          GREETING: "hello from yaml"
          OTHER: kept
        run: |
          echo "$GREETING $OTHER"
          echo "second line"
        """,
    )
    job_id = sky.launch(task, "--env", "GREETING=hello from cli")
    wait_until(lambda: sky.queue()[job_id]["status"] == "SUCCEEDED")
    logs = sky.run("jobs", "logs", "--tail", "0", str(job_id))
    assert logs.returncode == 0, logs.stderr
    plain = ANSI.sub("", logs.stdout)
    assert task_lines(logs.stdout) == ["hello from cli kept", "second line"]
    assert all(m.group("name") == "train" for m in map(TASK_LINE.match, plain.splitlines()) if m)
    assert "Job started. Streaming logs..." in plain
    assert "✓ Job finished (status: SUCCEEDED)." in plain
    # A second replay is byte-identical: nothing changed in the job's log.
    assert sky.run("jobs", "logs", "--tail", "0", str(job_id)).stdout == logs.stdout


def test_logs_exit_with_skypilot_job_exit_codes(sky: SkyDouble, workdir: Path) -> None:
    failing = sky.launch(write_task(workdir, "run: |\n  echo boom\n  exit 3\n", "fail.yaml"))
    logs = sky.run("jobs", "logs", "--tail", "0", str(failing))
    assert logs.returncode == 100
    assert task_lines(logs.stdout) == ["boom"]
    assert "(status: FAILED)" in logs.stdout
    missing = sky.run("jobs", "logs", "--tail", "0", "99")
    assert (missing.returncode, missing.stdout) == (102, "Job 99 not found.\n")
    assert sky.queue()[failing]["status"] == "FAILED"


def test_following_a_running_job_streams_until_it_ends(sky: SkyDouble, workdir: Path) -> None:
    gate = Gate.closed(workdir / "gate")
    try:
        task = write_task(
            workdir, f"name: held\nrun: |\n  echo before\n  flock --shared {gate.path} true\n"
            "  echo after\n"
        )  # fmt: skip
        job_id = sky.launch(task)
        follower = sky.start("jobs", "logs", "--tail", "0", str(job_id))
        assert follower.stdout is not None
        # The follower is streaming the running job once it has shown the first task line.
        seen = [follower.stdout.readline() for _ in range(3)]
        assert task_lines("".join(seen)) == ["before"]
        assert sky.queue()[job_id]["status"] == "RUNNING"
        # --no-follow on a running job: the log so far, exit 0 (not 101).
        snapshot = sky.run("jobs", "logs", "--no-follow", str(job_id))
        assert snapshot.returncode == 0
        assert task_lines(snapshot.stdout) == ["before"]
        gate.open()
        out, _ = follower.communicate(timeout=20)
        out = "".join(seen) + out
    finally:
        gate.open()
    assert follower.returncode == 0
    assert task_lines(out) == ["before", "after"]
    assert f"✓ Managed job finished: {job_id} (status: SUCCEEDED)." in ANSI.sub("", out)


def test_cancel_kills_the_job_and_a_follower_exits_103(sky: SkyDouble, workdir: Path) -> None:
    gate = Gate.closed(workdir / "gate")
    try:
        task = write_task(
            workdir, f"run: |\n  echo $$ > {workdir}/pid\n  flock --shared {gate.path} true\n"
        )  # fmt: skip
        job_id = sky.launch(task)
        wait_until(lambda: (workdir / "pid").exists() and (workdir / "pid").read_text().strip())
        pid = int((workdir / "pid").read_text())
        follower = sky.start("jobs", "logs", "--tail", "0", str(job_id))
        cancelled = sky.run("jobs", "cancel", "-y", str(job_id))
        assert cancelled.returncode == 0
        assert cancelled.stdout == f"Job with ID {job_id} is scheduled to be cancelled.\n"
        out, _ = follower.communicate(timeout=20)
        assert follower.returncode == 103
        assert "(status: CANCELLED)" in out
        wait_until(lambda: not is_alive(pid), what="the job's process to end")
        assert sky.queue()[job_id]["status"] == "CANCELLED"
        again = sky.run("jobs", "cancel", "-y", str(job_id))
        assert (again.returncode, again.stdout) == (0, "No job to cancel.\n")
    finally:
        gate.open()


def test_a_dropped_stream_dies_mid_way_and_the_next_replays_from_the_start(
    sky: SkyDouble, workdir: Path
) -> None:
    job_id = sky.launch(write_task(workdir, "run: |\n  for i in 1 2 3 4 5; do echo n$i; done\n"))
    wait_until(lambda: sky.queue()[job_id]["status"] == "SUCCEEDED")
    sky.set_faults(DROP_AFTER="4", DROP_PARTIAL="1")
    dropped = sky.run("jobs", "logs", "--tail", "0", str(job_id))
    assert dropped.returncode == 1
    assert "requests.exceptions.ChunkedEncodingError" in dropped.stderr
    # Two framing lines, n1, n2, then half a line.
    assert task_lines(dropped.stdout) == ["n1", "n2"]
    assert not dropped.stdout.endswith("\n")
    whole = sky.run("jobs", "logs", "--tail", "0", str(job_id))
    assert whole.returncode == 0
    assert task_lines(whole.stdout) == ["n1", "n2", "n3", "n4", "n5"]
    assert whole.stdout.startswith(dropped.stdout.rsplit("\n", 1)[0])


def test_a_replay_can_differ_from_what_was_streamed(sky: SkyDouble, workdir: Path) -> None:
    job_id = sky.launch(write_task(workdir, "run: |\n  echo one\n  echo two\n"))
    wait_until(lambda: sky.queue()[job_id]["status"] == "SUCCEEDED")
    sky.set_faults(REPLAY_MISMATCH="1")
    first = sky.run("jobs", "logs", "--tail", "0", str(job_id)).stdout.splitlines()
    replay = sky.run("jobs", "logs", "--tail", "0", str(job_id)).stdout.splitlines()
    differing = [i for i, (a, b) in enumerate(zip(first, replay, strict=True)) if a != b]
    assert differing == [2]  # the first task line; the framing and "two" are equal
    assert task_lines("\n".join(replay)) == ["one", "two"]


def test_queue_json_has_skypilot_record_fields_newest_first(sky: SkyDouble, workdir: Path) -> None:
    first = sky.launch(write_task(workdir, "name: a\nrun: echo a\n"))
    second = sky.launch(write_task(workdir, "name: b\nrun: |\n  exit 1\n", "b.yaml"))
    wait_until(lambda: sky.queue()[second]["status"] == "FAILED")
    listed = sky.run("jobs", "queue", "--output", "json")
    records = json.loads(listed.stdout)
    assert [r["job_id"] for r in records] == [second, first]
    assert {"task_job_id", "job_id", "task_id", "job_name", "status", "submitted_at",
            "end_at", "job_duration", "recovery_count", "pool"} <= set(records[0])  # fmt: skip
    assert records[0]["job_name"] == "b"
    assert isinstance(records[0]["submitted_at"], float)


def test_every_sky_process_is_counted(sky: SkyDouble, workdir: Path) -> None:
    job_id = sky.launch(write_task(workdir, "run: echo hi\n"))
    sky.run("jobs", "logs", "--tail", "0", str(job_id))
    sky.run("--version")
    assert [argv[:2] for argv in sky.invocations()] == [
        ["jobs", "launch"],
        ["jobs", "logs"],
        ["--version"],
    ]


def test_injected_latency_delays_each_api_server_round_trip(sky: SkyDouble, workdir: Path) -> None:
    # SkyPilot's client: launch -d is health, validate, launch, the launch's result; logs is
    # health and the stream; queue and cancel are health, the request and its result.
    latency = 0.25
    sky.set_faults(LATENCY_MS=str(round(latency * 1000)))
    task = write_task(workdir, "run: echo hi\n")
    job_id = sky.launch(task)
    wait_until(lambda: sky.queue()[job_id]["status"] == "SUCCEEDED")
    assert sky.run("jobs", "logs", "--tail", "0", str(job_id)).returncode == 0
    assert sky.run("jobs", "cancel", "-y", str(job_id)).returncode == 0
    assert sky.run("--version").returncode == 0
    runs = [run for run in sky.usage() if run["argv"][:1] != ["_supervise"]]
    trips = {" ".join(run["argv"][:2]): run["round_trips"] for run in runs}
    assert trips == {"jobs launch": 4, "jobs queue": 3, "jobs logs": 2, "jobs cancel": 3,
                     "--version": 0}  # fmt: skip
    for run in runs:
        assert run["wall_s"] >= run["round_trips"] * latency, run
        assert run["cpu_s"] > 0, run


def test_a_launch_without_cloud_access_fails_as_skypilot_does(
    sky: SkyDouble, workdir: Path
) -> None:
    task = write_task(workdir, "run: echo never\n")
    failed = sky.run("jobs", "launch", "-d", "-y", str(task), SKY_DOUBLE_FAIL_LAUNCH="nocloud")
    assert failed.returncode == 1
    assert ANSI.sub("", failed.stderr) == (
        "sky.exceptions.NoCloudAccessError: Cloud access is not set up. Run: sky check\n"
    )
    assert "Managed Job ID" not in failed.stdout
    assert sky.queue() == {}


def test_bad_task_yaml_fails_the_launch(sky: SkyDouble, workdir: Path) -> None:
    unknown_key = write_task(workdir, "rnu: echo hi\n", "typo.yaml")
    typo = sky.run("jobs", "launch", "-d", "-y", str(unknown_key))
    assert typo.returncode == 1
    assert typo.stderr == (
        "sky.exceptions.InvalidSkyPilotConfigError: Invalid task YAML: "
        "Instead of 'rnu', did you mean 'run'?\n"
    )
    broken = write_task(workdir, "run: |\n  echo\nnot yaml at all\n", "broken.yaml")
    unparsed = sky.run("jobs", "launch", "-d", "-y", str(broken))
    assert unparsed.returncode == 1
    assert "looks like a yaml path but contains an invalid configuration" in unparsed.stdout
    assert unparsed.stderr == "Aborted!\n"
    assert sky.queue() == {}


def test_usage_errors_exit_2_like_click(sky: SkyDouble, workdir: Path) -> None:
    task = write_task(workdir, "run: echo hi\n")
    unknown = sky.run("jobs", "launch", "-d", "-y", "--bogus", str(task))
    assert unknown.returncode == 2
    assert unknown.stderr.endswith("Error: No such option: --bogus\n")
    # Before 0.13 `sky jobs logs` had no --tail.
    old = sky.run("jobs", "logs", "--tail", "0", "1", SKY_DOUBLE_VERSION="0.10.3")
    assert (old.returncode, old.stderr.splitlines()[-1]) == (2, "Error: No such option: --tail")
    old_queue = sky.run("jobs", "queue", "-o", "json", SKY_DOUBLE_VERSION="0.11.0")
    assert (old_queue.returncode, old_queue.stderr.splitlines()[-1]) == (
        2,
        "Error: No such option: -o",
    )
    assert sky.run("--version", SKY_DOUBLE_VERSION="0.10.3").stdout == (
        "skypilot, version 0.10.3\n"
    )


def test_pool_launch_prints_all_ids(sky: SkyDouble, workdir: Path) -> None:
    task = write_task(workdir, "name: sweep\nrun: echo $SKYPILOT_NODE_RANK\n")
    done = sky.run("jobs", "launch", "-d", "-y", "-p", "pool1", "--num-jobs", "3", str(task))
    assert done.returncode == 0, done.stderr
    found = JOBS_SUBMITTED.search(done.stdout)
    assert found is not None
    assert found.group(1) == "1,2,3"
    assert "Launching 3 managed jobs 1-3 'sweep'" in done.stdout


def test_a_synchronous_launch_streams_and_exits_with_the_job(sky: SkyDouble, workdir: Path) -> None:
    task = write_task(workdir, "run: |\n  echo out\n  exit 7\n")
    done = sky.run("jobs", "launch", "-y", str(task))
    assert done.returncode == 100
    assert task_lines(done.stdout) == ["out"]
    assert done.stdout.rstrip().splitlines()[-1] == "└── To view all managed jobs:\tsky jobs queue"


def test_a_gated_job_stays_pending_and_logs_wait_silently(sky: SkyDouble, workdir: Path) -> None:
    start = workdir / "start"
    sky.set_faults(START_GATE=str(start))
    job_id = sky.launch(write_task(workdir, "run: echo late\n"))
    follower = sky.start("jobs", "logs", "--tail", "0", str(job_id))
    assert sky.queue()[job_id]["status"] == "PENDING"
    assert follower.poll() is None
    start.touch()
    out, _ = follower.communicate(timeout=20)
    assert follower.returncode == 0
    assert task_lines(out) == ["late"]


def test_the_double_refuses_to_run_without_its_home() -> None:
    env = {k: v for k, v in os.environ.items() if k != "SKY_DOUBLE_HOME"}
    done = subprocess.run([str(SKY), "jobs", "queue"], env=env, capture_output=True, text=True)
    assert done.returncode == 2
    assert "SKY_DOUBLE_HOME is not set" in done.stderr
