"""SkyPilot-style task files: `name`, `workdir`, `envs`, `setup`, `run`.

Keys the local runner cannot honour are reported, one warning each; anything that would make
the launch wrong is an error naming the file and the problem, and nothing is launched.
"""

from __future__ import annotations

import os
import re
import stat
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path

import yaml

from tailhub.client import exit_codes
from tailhub.client._errors import TailhubError
from tailhub.daemon.limits import MAX_ENV_VALUE_BYTES, MAX_NAME_BYTES, MAX_TASK_BYTES

# Keys SkyPilot knows that describe where and on what a task runs: meaningless on this machine.
UNSUPPORTED_KEYS = (
    "resources",
    "num_nodes",
    "file_mounts",
    "storage_mounts",
    "service",
    "config",
    "secrets",
    "volumes",
    "event_callback",
    "inputs",
    "outputs",
)
_KNOWN_KEYS = ("name", "workdir", "envs", "setup", "run")


class TaskFileError(TailhubError):
    exit_code = exit_codes.USAGE


@dataclass(frozen=True)
class Task:
    run: str
    name: str = ""
    setup: str = ""
    workdir: str = ""
    envs: dict[str, str] = field(default_factory=dict)
    warnings: tuple[str, ...] = ()

    def with_overrides(self, name: str | None, envs: Mapping[str, str]) -> Task:
        return replace(self, name=name or self.name, envs={**self.envs, **envs})


def load_task(path: Path) -> Task:
    """Reads and checks a task file; raises TaskFileError with the file's name in it."""
    text = read_task_text(path)
    document = _parsed(path, text)
    return _task_from(path, document)


def _task_from(path: Path, document: dict[object, object]) -> Task:
    warnings = []
    for key in document:
        if key in _KNOWN_KEYS:
            continue
        if key in UNSUPPORTED_KEYS:
            warnings.append(f"{path}: `{key}` is ignored: the local runner runs on this machine")
        else:
            warnings.append(f"{path}: unknown key `{key}` is ignored")
    run = document.get("run")
    if run is None:
        raise TaskFileError(f"{path}: `run` is missing: it holds the commands the job runs")
    return Task(
        run=_text(path, "run", run),
        name=_sized(path, "name", _text(path, "name", document.get("name", "")), MAX_NAME_BYTES),
        setup=_text(path, "setup", document.get("setup", "")),
        workdir=_workdir(path, document.get("workdir", "")),
        envs=_envs(path, document.get("envs")),
        warnings=tuple(warnings),
    )


def _text(path: Path, key: str, value: object) -> str:
    if value is None:
        return ""
    if not isinstance(value, str):
        raise TaskFileError(
            f"{path}: `{key}` must be a string (a shell script), not {type(value).__name__}"
        )
    return value


def _workdir(path: Path, value: object) -> str:
    workdir = _text(path, "workdir", value)
    if not workdir:
        return ""
    # Relative to the task file, as SkyPilot does, so a task runs the same from anywhere.
    resolved = (path.parent / Path(workdir).expanduser()).resolve()
    if not resolved.is_dir():
        raise TaskFileError(f"{path}: workdir {workdir} is not a directory ({resolved})")
    return str(resolved)


# What the daemon takes as a variable name in `envs` (str.isidentifier() would take `é`).
_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def _envs(path: Path, value: object) -> dict[str, str]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise TaskFileError(f"{path}: `envs` must be a mapping of names to values")
    envs = {}
    for key, item in value.items():
        if not isinstance(key, str) or not _ENV_NAME.fullmatch(key):
            raise TaskFileError(f"{path}: `envs` has an invalid variable name: {key!r}")
        if isinstance(item, (dict, list)):
            raise TaskFileError(f"{path}: `envs.{key}` must be a plain value")
        envs[key] = _sized(path, f"envs.{key}", "" if item is None else str(item))
    return envs


def _sized(where: Path | str, key: str, value: str, limit: int = MAX_ENV_VALUE_BYTES) -> str:
    """`value`, unless it is larger than the daemon takes: then an error naming `where`."""
    size = len(value.encode("utf-8", "surrogatepass"))
    if size > limit:
        what = f"`{key}`" if isinstance(where, Path) else key
        raise TaskFileError(f"{where}: {what} is {size} bytes; at most {limit} are allowed")
    return value


def parse_env_overrides(pairs: tuple[str, ...]) -> dict[str, str]:
    """`--env KEY=VALUE` flags; `--env KEY` takes KEY's value from this environment."""
    envs = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not _ENV_NAME.fullmatch(key):
            raise TaskFileError(f"--env {pair}: expected KEY=VALUE with a valid variable name")
        if not sep:
            if key not in os.environ:
                raise TaskFileError(f"--env {key}: not set in this environment; use KEY=VALUE")
            value = os.environ[key]
        envs[key] = _sized("--env", key, value)
    return envs


def read_task_text(path: Path) -> str:
    """A task file's text (SkyPilot takes it whole); TaskFileError naming the file when it
    cannot be one: missing, not a regular file (a directory; a FIFO, whose open waited for a
    writer forever), not UTF-8, or larger than a launch may carry."""
    try:
        # Non-blocking: a FIFO opens at once, and is refused below.
        descriptor = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except FileNotFoundError:
        raise TaskFileError(f"{path}: no such task file") from None
    except OSError as error:
        raise TaskFileError(f"{path}: cannot read it: {error.strerror}") from None
    try:
        mode = os.fstat(descriptor).st_mode
        if stat.S_ISDIR(mode):
            raise TaskFileError(f"{path}: is a directory, not a task file")
        if not stat.S_ISREG(mode):
            raise TaskFileError(f"{path}: not a regular file, so not a task file")
        with open(descriptor, "rb", closefd=False) as file:
            data = file.read(MAX_TASK_BYTES + 1)
    except OSError as error:
        raise TaskFileError(f"{path}: cannot read it: {error.strerror}") from None
    finally:
        os.close(descriptor)
    if len(data) > MAX_TASK_BYTES:
        raise TaskFileError(f"{path}: larger than a task file may be ({MAX_TASK_BYTES} bytes)")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        raise TaskFileError(f"{path}: not a text file (it is not valid UTF-8)") from None


def task_name(path: Path, task_yaml: str) -> str:
    """The task's `name`, if the file says one; TaskFileError when the file is no YAML mapping,
    so no task at all (SkyPilot checks the rest itself)."""
    document = _parsed(path, task_yaml)
    name = document.get("name")
    return name if isinstance(name, str) else ""


def _parsed(path: Path, text: str) -> dict[object, object]:
    try:
        document = yaml.safe_load(text)
    except yaml.YAMLError as error:
        where = getattr(error, "problem_mark", None)
        at = f" at line {where.line + 1}, column {where.column + 1}" if where else ""
        problem = getattr(error, "problem", None) or "invalid YAML"
        raise TaskFileError(f"{path}: malformed YAML{at}: {problem}") from None
    if not isinstance(document, dict):
        raise TaskFileError(f"{path}: a task file is a YAML mapping with at least a `run` key")
    return document
