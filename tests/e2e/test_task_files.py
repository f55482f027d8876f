"""Task files as `tailhub jobs launch` reads them: refused with a clear message when wrong,
warned about when they ask for what a local runner cannot do, honoured otherwise."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from helpers import DaemonProcess, run_cli
from job_helpers import queue, submitted_id, write_task

BAD_TASKS = {
    "malformed YAML": ("run: [echo hi\nname: x\n", "malformed YAML at line"),
    "run not a string": ("run:\n  - echo hi\n", "`run` must be a string"),
    "run a number": ("run: 42\n", "`run` must be a string"),
    "run missing": ("name: nothing\nsetup: echo hi\n", "`run` is missing"),
    "a list, not a mapping": ("- run: echo hi\n", "a task file is a YAML mapping"),
    "a scalar, not a mapping": ("echo hi\n", "a task file is a YAML mapping"),
    "empty": ("", "a task file is a YAML mapping"),
}


@pytest.mark.parametrize("case", list(BAD_TASKS))
def test_bad_task_file_is_refused_naming_the_file_and_nothing_is_launched(
    daemon: DaemonProcess, workdir: Path, case: str
) -> None:
    text, problem = BAD_TASKS[case]
    task = write_task(workdir, text, name="bad.yaml")
    for mode in ((), ("--async",)):
        launched = run_cli(daemon.home, "jobs", "launch", str(task), *mode)
        assert launched.returncode == 2
        assert launched.stdout == b""
        message = launched.stderr.decode()
        assert len(message.splitlines()) == 1, message
        assert message.startswith(f"tailhub: {task}: "), message
        assert problem in message
    assert queue(daemon.home) == {}


@pytest.mark.parametrize("backend", ["local", "skypilot"])
def test_a_file_that_is_no_task_is_refused_at_once_for_either_backend(
    daemon: DaemonProcess, workdir: Path, backend: str
) -> None:
    # A FIFO hung the CLI (its open waited for a writer), and SkyPilot's backend, which takes
    # the file whole, took anything readable (a symlink to a system file) as a task.
    fifo = workdir / "fifo.yaml"
    os.mkfifo(fifo)
    not_yaml = write_task(workdir, "some text\nthat is no task\n", name="system-file.yaml")
    cases = {fifo: "not a regular file", workdir: "is a directory", not_yaml: "YAML mapping"}
    for path, problem in cases.items():
        launched = run_cli(
            daemon.home, "jobs", "launch", "--async", "--backend", backend, str(path), timeout=30
        )
        assert launched.returncode == 2, launched.stderr
        message = launched.stderr.decode()
        assert message.startswith(f"tailhub: {path}: "), message
        assert problem in message, message
        assert len(message.splitlines()) == 1, message
    assert queue(daemon.home) == {}


def test_missing_task_file_is_refused_and_nothing_is_launched(
    daemon: DaemonProcess, workdir: Path
) -> None:
    missing = workdir / "nowhere.yaml"
    launched = run_cli(daemon.home, "jobs", "launch", str(missing))
    assert launched.returncode == 2
    assert launched.stdout == b""
    assert launched.stderr.decode() == f"tailhub: {missing}: no such task file\n"
    assert queue(daemon.home) == {}


def test_unsupported_keys_get_one_warning_each_and_the_job_runs(
    daemon: DaemonProcess, workdir: Path
) -> None:
    task = write_task(
        workdir,
        """\
        resources:
          accelerators: A100:8
        num_nodes: 4
        file_mounts:
          /data: s3://bucket/data
        run: echo ran here
        """,
    )
    launched = run_cli(daemon.home, "jobs", "launch", str(task))
    assert launched.returncode == 0, launched.stderr
    assert launched.stdout == b"ran here\n"
    warnings = [line for line in launched.stderr.decode().splitlines() if "warning" in line]
    assert len(warnings) == 3, warnings
    for key, line in zip(("resources", "num_nodes", "file_mounts"), warnings, strict=True):
        assert line == (
            f"tailhub: warning: {task}: `{key}` is ignored: the local runner runs on this machine"
        )
    (job,) = queue(daemon.home).values()
    assert job["state"] == "SUCCEEDED"


def test_command_line_name_and_env_override_the_task_file(
    daemon: DaemonProcess, workdir: Path
) -> None:
    task = write_task(
        workdir,
        """\
        name: from-file
        envs:
          COLOUR: from-file
          SHAPE: from-file
        run: |
          echo "colour=$COLOUR shape=$SHAPE size=$SIZE id=$TAILHUB_JOB_ID"
        """,
    )
    launched = run_cli(
        daemon.home,
        "jobs",
        "launch",
        str(task),
        "--name",
        "from-flag",
        "--env",
        "COLOUR=from-flag",
        "--env",
        "SIZE=large",
    )
    assert launched.returncode == 0, launched.stderr
    job_id = submitted_id(launched.stderr)
    assert launched.stdout == (
        f"colour=from-flag shape=from-file size=large id={job_id}\n".encode()
    )
    job = queue(daemon.home)[job_id]
    assert job["name"] == "from-flag"


def test_failing_setup_fails_the_job_without_running_it(
    daemon: DaemonProcess, workdir: Path
) -> None:
    task = write_task(
        workdir,
        """\
        setup: |
          echo preparing
          exit 7
        run: echo running
        """,
    )
    launched = run_cli(daemon.home, "jobs", "launch", str(task))
    assert launched.returncode == 100
    assert launched.stdout == b"preparing\n"
    assert "setup" in launched.stderr.decode().splitlines()[-1]
    (job,) = queue(daemon.home).values()
    assert job["state"] == "FAILED"
    assert job["exit_code"] == 7
    assert "setup" in job["reason"]


def test_setup_runs_before_run_in_the_same_workdir(daemon: DaemonProcess, workdir: Path) -> None:
    task = write_task(
        workdir,
        """\
        setup: echo "setup in $PWD" > setup.txt
        run: cat setup.txt
        """,
    )
    launched = run_cli(daemon.home, "jobs", "launch", str(task), cwd=workdir)
    assert launched.returncode == 0, launched.stderr
    assert launched.stdout == f"setup in {workdir}\n".encode()


def test_workdir_is_relative_to_the_task_file(daemon: DaemonProcess, workdir: Path) -> None:
    project = workdir / "project"
    (project / "data").mkdir(parents=True)
    (project / "data" / "input.txt").write_text("payload\n")
    task = write_task(
        project / "tasks",
        """\
        workdir: ../data
        run: |
          pwd
          cat input.txt
        """,
    )
    # Launched from elsewhere: the workdir still resolves from the task file's folder.
    launched = run_cli(daemon.home, "jobs", "launch", str(task), cwd=workdir)
    assert launched.returncode == 0, launched.stderr
    assert launched.stdout == f"{project / 'data'}\npayload\n".encode()


def test_without_workdir_the_job_runs_where_it_was_launched(
    daemon: DaemonProcess, workdir: Path
) -> None:
    here = workdir / "here"
    here.mkdir()
    task = write_task(workdir / "tasks", "run: pwd\n")
    launched = run_cli(daemon.home, "jobs", "launch", str(task), cwd=here)
    assert launched.returncode == 0, launched.stderr
    assert launched.stdout == f"{here}\n".encode()


def test_missing_workdir_is_refused_and_nothing_is_launched(
    daemon: DaemonProcess, workdir: Path
) -> None:
    task = write_task(workdir, "workdir: no-such-dir\nrun: pwd\n")
    launched = run_cli(daemon.home, "jobs", "launch", str(task))
    assert launched.returncode == 2
    message = launched.stderr.decode()
    assert message.startswith(f"tailhub: {task}: workdir no-such-dir is not a directory")
    assert queue(daemon.home) == {}


def test_bad_env_flag_is_refused_and_nothing_is_launched(
    daemon: DaemonProcess, workdir: Path
) -> None:
    task = write_task(workdir, "run: echo hi\n")
    launched = run_cli(daemon.home, "jobs", "launch", str(task), "--env", "1BAD=x")
    assert launched.returncode == 2
    assert launched.stderr.decode() == (
        "tailhub: --env 1BAD=x: expected KEY=VALUE with a valid variable name\n"
    )
    accented = run_cli(daemon.home, "jobs", "launch", str(task), "--env", "CAFÉ=x")
    assert accented.returncode == 2, accented.stderr
    assert b"--env CAF\xc3\x89=x: expected KEY=VALUE" in accented.stderr
    assert queue(daemon.home) == {}
