"""Bounds on what a client may send: checked at the API edge, before the job manager sees it.

One function per request kind. Each raises InvalidRequest naming the field at fault, so a
client learns what to fix and nothing oversized or malformed ever reaches the core, the
database or a child process's environment.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping, Sequence

from tailhub.daemon.errors import InvalidRequest

KIB = 1024
MIB = 1024 * KIB

# Bytes (UTF-8) of a job name.
MAX_NAME_BYTES = 256
# Bytes of a reason given to FinishJob.
MAX_REASON_BYTES = 4 * KIB
# Bytes of a path (a file source, a workdir): PATH_MAX.
MAX_PATH_BYTES = 4096
# Bytes of one environment value, and of every key and value of a launch together.
MAX_ENV_VALUE_BYTES = 128 * KIB
MAX_ENV_TOTAL_BYTES = 1 * MIB
# Variables of a launch (`environment` + `envs`): bounds the encoding's per-entry overhead.
MAX_ENV_ITEMS = 8192
# Bytes of a LaunchJob backend name ("local", "skypilot").
MAX_BACKEND_BYTES = 64
# A command source's argv: items, and bytes of all of them together.
MAX_ARGV_ITEMS = 1024
MAX_ARGV_BYTES = 256 * KIB
# Bytes of a task's `run` and `setup` together.
MAX_TASK_BYTES = 1 * MIB
# Bytes of one Publish call.
MAX_PUBLISH_BYTES = 4 * MIB
# The largest request any limit above lets through, encoded: a Publish of the maximum, or a
# LaunchJob at every cap (scripts, task file, workdir, environment with at most ~11 bytes of
# framing per variable). gRPC's receive limit is set just above it, so a request within the
# limits is never refused by the transport and check_publish is the check that speaks.
_MAX_LAUNCH_BYTES = (
    MAX_NAME_BYTES
    + MAX_TASK_BYTES
    + MAX_TASK_BYTES
    + MAX_PATH_BYTES
    + MAX_BACKEND_BYTES
    + MAX_ENV_TOTAL_BYTES
    + 16 * MAX_ENV_ITEMS
)
MAX_REQUEST_BYTES = max(MAX_PUBLISH_BYTES, _MAX_LAUNCH_BYTES, MAX_ARGV_BYTES) + 64 * KIB
# Ids named in one CancelJobs or RemoveJobs call.
MAX_JOB_IDS = 10_000
# What a process exit status can be.
MAX_EXIT_CODE = 255
# ListJobs pages.
DEFAULT_PAGE_SIZE = 100
MAX_PAGE_SIZE = 1000
# Encoded bytes of the jobs of one page: a page ends early rather than grow past this (the
# daemon sends at most 8 MiB per message).
MAX_PAGE_BYTES = 2 * MIB
# What a listed job carries of its source description and reason: enough to recognise it,
# small enough that a full page stays far below the message limit.
MAX_LISTED_DESCRIPTION_CHARS = 1024
MAX_LISTED_REASON_CHARS = MAX_REASON_BYTES

_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def check_attach(
    name: str,
    *,
    path: str | None = None,
    argv: Sequence[str] | None = None,
    transport_exit_codes: Iterable[int] = (),
) -> None:
    """AttachJob: the name, and the file path or the command."""
    check_name(name)
    if path is not None:
        _check_path("file.path", path)
    if argv is not None:
        if len(argv) > MAX_ARGV_ITEMS:
            raise InvalidRequest(
                f"command.argv has {len(argv)} items; at most {MAX_ARGV_ITEMS} are allowed"
            )
        total = 0
        for index, item in enumerate(argv):
            _check_text(f"command.argv[{index}]", item)
            total += _size(item)
        if total > MAX_ARGV_BYTES:
            raise InvalidRequest(
                f"command.argv is {total} bytes; at most {MAX_ARGV_BYTES} are allowed"
            )
    for code in transport_exit_codes:
        if not 0 <= code <= MAX_EXIT_CODE:
            raise InvalidRequest(
                f"command.transport_exit_codes: {code} is not an exit code (0..{MAX_EXIT_CODE})"
            )


def check_launch(
    name: str,
    *,
    run: str,
    setup: str,
    workdir: str,
    envs: Mapping[str, str],
    environment: Mapping[str, str],
    task_yaml: str = "",
    backend: str = "",
) -> None:
    """LaunchJob: the name, the backend, the scripts, the workdir and both environment maps."""
    check_name(name)
    if len(backend) > MAX_BACKEND_BYTES or "\0" in backend:
        raise InvalidRequest(f"backend {shown(backend)} is not a backend: local or skypilot")
    _check_text("run", run)
    _check_text("setup", setup)
    _check_text("task_yaml", task_yaml)
    task = _size(run) + _size(setup)
    if task > MAX_TASK_BYTES:
        raise InvalidRequest(
            f"run and setup are {task} bytes together; at most {MAX_TASK_BYTES} are allowed"
        )
    if _size(task_yaml) > MAX_TASK_BYTES:
        raise InvalidRequest(
            f"task_yaml is {_size(task_yaml)} bytes; at most {MAX_TASK_BYTES} are allowed"
        )
    if workdir:
        _check_path("workdir", workdir)
    # A shell's whole environment may hold names no task would choose (bash exports functions
    # as `BASH_FUNC_name%%`): only what would break the environment block is refused there.
    items = len(environment) + len(envs)
    if items > MAX_ENV_ITEMS:
        raise InvalidRequest(
            f"environment and envs have {items} variables together; "
            f"at most {MAX_ENV_ITEMS} are allowed"
        )
    total = _check_env("environment", environment, strict_names=False) + _check_env("envs", envs)
    if total > MAX_ENV_TOTAL_BYTES:
        raise InvalidRequest(
            f"environment and envs are {total} bytes together; "
            f"at most {MAX_ENV_TOTAL_BYTES} are allowed"
        )


def check_publish(data: bytes) -> None:
    if len(data) > MAX_PUBLISH_BYTES:
        raise InvalidRequest(
            f"data is {len(data)} bytes; at most {MAX_PUBLISH_BYTES} per Publish call "
            "(send it in several)"
        )


def check_finish(exit_code: int, reason: str) -> None:
    if not 0 <= exit_code <= MAX_EXIT_CODE:
        raise InvalidRequest(f"exit_code {exit_code} is not an exit code (0..{MAX_EXIT_CODE})")
    _check_text("reason", reason, MAX_REASON_BYTES)


def check_job_ids(job_ids: Sequence[int]) -> None:
    """CancelJobs and RemoveJobs: how many ids one call may name."""
    if len(job_ids) > MAX_JOB_IDS:
        raise InvalidRequest(f"job_ids names {len(job_ids)} jobs; at most {MAX_JOB_IDS} per call")


def check_ended_before(ended_before: float) -> None:
    if not math.isfinite(ended_before):
        raise InvalidRequest(f"ended_before must be a finite time, not {ended_before}")


def page_size(requested: int) -> int:
    """ListJobs: 0 means the default; more than the cap is served as the cap."""
    return DEFAULT_PAGE_SIZE if requested == 0 else min(requested, MAX_PAGE_SIZE)


def page_token(token: str) -> int | None:
    """ListJobs: the id a page continues below (None for the first page)."""
    if not token:
        return None
    if len(token) > 20 or not token.isdigit() or int(token) < 1:
        raise InvalidRequest("page_token is not one this daemon handed out")
    return int(token)


def check_name(name: str) -> None:
    _check_text("name", name, MAX_NAME_BYTES)


def _check_env(field: str, env: Mapping[str, str], *, strict_names: bool = True) -> int:
    total = 0
    for key, value in env.items():
        if strict_names and not _ENV_NAME.fullmatch(key):
            raise InvalidRequest(
                f"{field}: {shown(key)} is not a variable name ([A-Za-z_][A-Za-z0-9_]*)"
            )
        if not key or "=" in key or "\0" in key or _size(key) > MAX_NAME_BYTES:
            raise InvalidRequest(f"{field}: {shown(key)} cannot be a variable name")
        _check_text(f"{field}.{key}", value, MAX_ENV_VALUE_BYTES)
        total += _size(key) + _size(value)
    return total


def _check_path(field: str, path: str) -> None:
    _check_text(field, path, MAX_PATH_BYTES)


def _check_text(field: str, text: str, limit: int | None = None) -> None:
    if limit is not None and len(text) > limit // 4 and _size(text) > limit:
        raise InvalidRequest(f"{field} is {_size(text)} bytes; at most {limit} are allowed")
    if "\0" in text:
        raise InvalidRequest(f"{field} contains a NUL character")


def _size(text: str) -> int:
    return len(text.encode("utf-8", "surrogatepass"))


def shown(text: str) -> str:
    """A bad value quoted in an error, cut short: the message must stay small."""
    return repr(text if len(text) <= 64 else text[:64] + "...")
