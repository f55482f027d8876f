"""SkyPilot-style task files as the client reads them (client/_tasks.py): what cannot be
honoured is reported, what would make the launch wrong is refused, naming the file."""

from __future__ import annotations

from pathlib import Path

import pytest

from tailhub.client import exit_codes
from tailhub.client._tasks import TaskFileError, load_task, parse_env_overrides
from tailhub.daemon.limits import MAX_ENV_VALUE_BYTES, MAX_NAME_BYTES


def task_file(directory: Path, text: str) -> Path:
    path = directory / "task.yaml"
    path.write_text(text)
    return path


def test_a_task_file_gives_name_setup_run_and_envs(tmp_path: Path) -> None:
    path = task_file(
        tmp_path, "name: train\nsetup: pip install x\nrun: python train.py\nenvs:\n  LR: 0.1\n"
    )
    task = load_task(path)
    assert (task.name, task.setup, task.run) == ("train", "pip install x", "python train.py")
    assert task.envs == {"LR": "0.1"}
    assert task.warnings == ()


def test_a_relative_workdir_is_relative_to_the_task_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "code").mkdir()
    path = task_file(tmp_path, "workdir: code\nrun: make\n")
    monkeypatch.chdir("/")
    assert load_task(path).workdir == str((tmp_path / "code").resolve())


def test_keys_the_local_runner_cannot_honour_are_reported_one_warning_each(
    tmp_path: Path,
) -> None:
    path = task_file(tmp_path, "run: x\nresources:\n  cpus: 4\nnum_nodes: 2\ncolour: red\n")
    assert load_task(path).warnings == (
        f"{path}: `resources` is ignored: the local runner runs on this machine",
        f"{path}: `num_nodes` is ignored: the local runner runs on this machine",
        f"{path}: unknown key `colour` is ignored",
    )


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("name: x\n", "`run` is missing"),
        ("- run: x\n", "a task file is a YAML mapping"),
        ("run: [a, b]\n", "`run` must be a string \\(a shell script\\), not list"),
        ("run: x\nenvs: [A]\n", "`envs` must be a mapping"),
        ("run: x\nenvs:\n  1A: x\n", "`envs` has an invalid variable name: '1A'"),
        ("run: x\nenvs:\n  A: {b: c}\n", "`envs.A` must be a plain value"),
        ("run: x\nworkdir: nowhere\n", "workdir nowhere is not a directory"),
        ("run: x\n  bad: indent\n", "malformed YAML at line 2, column 6"),
    ],
)
def test_a_task_file_that_would_launch_wrong_is_refused_naming_it(
    tmp_path: Path, text: str, message: str
) -> None:
    path = task_file(tmp_path, text)
    with pytest.raises(TaskFileError, match=message) as raised:
        load_task(path)
    assert str(raised.value).startswith(f"{path}: ")
    assert raised.value.exit_code == exit_codes.USAGE


def test_a_missing_or_unreadable_task_file_says_so(tmp_path: Path) -> None:
    with pytest.raises(TaskFileError, match="no such task file"):
        load_task(tmp_path / "absent.yaml")
    with pytest.raises(TaskFileError, match="is a directory, not a task file"):
        load_task(tmp_path)
    binary = tmp_path / "binary.yaml"
    binary.write_bytes(b"run: \xff\xfe\n")
    with pytest.raises(TaskFileError, match="not a text file"):
        load_task(binary)


def test_values_larger_than_the_daemon_takes_are_refused_before_launching(
    tmp_path: Path,
) -> None:
    long_name = "n" * (MAX_NAME_BYTES + 1)
    with pytest.raises(TaskFileError, match=f"`name` is {MAX_NAME_BYTES + 1} bytes"):
        load_task(task_file(tmp_path, f"name: {long_name}\nrun: x\n"))
    big = "v" * (MAX_ENV_VALUE_BYTES + 1)
    with pytest.raises(TaskFileError, match="`envs.BIG` is"):
        load_task(task_file(tmp_path, f"run: x\nenvs:\n  BIG: {big}\n"))


def test_env_flags_override_the_files_envs_and_the_name(tmp_path: Path) -> None:
    task = load_task(task_file(tmp_path, "name: a\nrun: x\nenvs:\n  A: '1'\n  B: '2'\n"))
    overridden = task.with_overrides("b", {"B": "3", "C": "4"})
    assert overridden.name == "b"
    assert overridden.envs == {"A": "1", "B": "3", "C": "4"}
    assert task.with_overrides(None, {}).name == "a"


def test_an_env_flag_without_a_value_takes_it_from_this_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("TOKEN_FOR_JOB", "s3cret")
    assert parse_env_overrides(("A=1=2", "TOKEN_FOR_JOB")) == {
        "A": "1=2",
        "TOKEN_FOR_JOB": "s3cret",
    }
    monkeypatch.delenv("TOKEN_FOR_JOB")
    with pytest.raises(TaskFileError, match="--env TOKEN_FOR_JOB: not set in this environment"):
        parse_env_overrides(("TOKEN_FOR_JOB",))
    with pytest.raises(TaskFileError, match="expected KEY=VALUE with a valid variable name"):
        parse_env_overrides(("no-dash=1",))
