"""Job records as JSON in Redis: written by the daemon fetching the job, read by every daemon.

What comes out of Redis is checked like any other input (another daemon of another version,
or anyone who can write to that Redis, put it there): every field for its type, size and
range, as the API checks a request; a record that does not pass is reported and left out,
never half-applied, and never stops the loop that read it.
"""

from __future__ import annotations

import json
import math
from typing import Any

from tailhub.daemon import limits
from tailhub.daemon.domain import (
    CommandSpec,
    FileSpec,
    JobRecord,
    JobState,
    LocalSpec,
    PushSpec,
    SkyPilotSpec,
    SourceKind,
    SourceSpec,
    spec_to_json,
)
from tailhub.daemon.errors import BadRecord, InvalidRequest
from tailhub.daemon.limits import MAX_EXIT_CODE, MAX_NAME_BYTES, MAX_REASON_BYTES

# The largest record a daemon writes (a SkyPilot task file, its envs and environment) with
# room to spare; JSON nested deeper than a record ever is was not written by a daemon (and a
# deep enough nesting makes the parser recurse until it fails).
MAX_RECORD_BYTES = 4 * 1024 * 1024
MAX_RECORD_DEPTH = 8
# A source's resume state: a few counters and handles.
MAX_SOURCE_STATE_BYTES = 64 * 1024
# Times are Unix seconds: anything past the year 5000 is not a time a daemon wrote.
_MAX_TIME = 1e11
_MAX_COUNT = 2**53

# The node a job is pinned to (local and file jobs): only it can run or read the job.
HOME = "home"


def record_to_json(record: JobRecord, home: str) -> dict[str, Any]:
    spec = spec_to_json(record.spec)
    if record.spec.kind is SourceKind.LOCAL:
        # The task (its scripts, envs and the launching shell's environment, secrets
        # included) stays on the node that runs it, which alone needs it: everyone who can
        # read Redis would read it there.
        spec.update(run="", setup="", envs=[], environment=[])
    return {
        "id": record.id,
        "name": record.name,
        "spec": spec,
        "state": record.state.value,
        "exit_code": record.exit_code,
        "reason": record.reason,
        "submitted_at": record.submitted_at,
        "started_at": record.started_at,
        "ended_at": record.ended_at,
        "upstream_connections": record.upstream_connections,
        "sealed": record.sealed,
        "source_state": record.source_state,
        "cancel_requested": record.cancel_requested,
        HOME: home,
    }


def parse_record(job_id: int, raw: bytes) -> dict[str, Any]:
    """A record's JSON object as Redis holds it; BadRecord if it is not one."""
    if len(raw) > MAX_RECORD_BYTES:
        raise BadRecord(f"the record of job {job_id} is {len(raw)} bytes: not one")
    try:
        data = json.loads(raw)
    except (ValueError, UnicodeDecodeError, RecursionError) as error:
        raise BadRecord(f"the record of job {job_id} is not JSON: {error}") from None
    if not isinstance(data, dict):
        raise BadRecord(f"the record of job {job_id} is not a JSON object")
    if _depth(data) > MAX_RECORD_DEPTH:
        raise BadRecord(f"the record of job {job_id} is nested deeper than a record is")
    return data


def record_from_json(job_id: int, data: dict[str, Any]) -> tuple[JobRecord, str]:
    """The record and its home node ("" for none); BadRecord if it is not one."""
    try:
        if not _is_int(data["id"]) or data["id"] != job_id:
            raise BadRecord(f"it names job {limits.shown(str(data['id']))}")
        exit_code = data["exit_code"]
        if exit_code is not None:
            exit_code = _int(data, "exit_code", 0, MAX_EXIT_CODE)
        source_state = data["source_state"]
        if not isinstance(source_state, dict):
            raise BadRecord("source_state is not an object")
        if len(json.dumps(source_state)) > MAX_SOURCE_STATE_BYTES:
            raise BadRecord("source_state is larger than a source's state is")
        record = JobRecord(
            id=job_id,
            name=_text(data, "name", MAX_NAME_BYTES),
            spec=spec_from_record(data["spec"]),
            state=JobState.read(_text(data, "state", 32)),
            exit_code=exit_code,
            reason=_text(data, "reason", MAX_REASON_BYTES),
            submitted_at=_time(data, "submitted_at"),
            started_at=_time(data, "started_at"),
            ended_at=_time(data, "ended_at"),
            upstream_connections=_int(data, "upstream_connections", 0, _MAX_COUNT),
            sealed=_bool(data, "sealed"),
            source_state=source_state,
            cancel_requested=_bool(data, "cancel_requested"),
        )
        home = data.get(HOME, "")
        if not isinstance(home, str) or len(home.encode()) > MAX_NAME_BYTES:
            raise BadRecord("home is not a node name")
    except BadRecord as error:
        raise BadRecord(f"the record of job {job_id}: {error}") from None
    except (KeyError, TypeError, ValueError, InvalidRequest) as error:
        raise BadRecord(f"the record of job {job_id} is not one: {error!r}") from None
    return record, home


def spec_from_record(data: object) -> SourceSpec:
    """A source spec from Redis, checked as the API checks the request that makes one."""
    if not isinstance(data, dict):
        raise BadRecord("spec is not an object")
    kind = _text(data, "kind", 16)
    if kind == "file":
        path = _text(data, "path", limits.MAX_PATH_BYTES)
        limits.check_attach("", path=path)
        return FileSpec(path=path)
    if kind == "command":
        argv = _strings(data, "argv")
        codes = data["transport_exit_codes"]
        if not isinstance(codes, list) or not all(_is_int(code) for code in codes):
            raise BadRecord("transport_exit_codes is not a list of exit codes")
        limits.check_attach("", argv=argv, transport_exit_codes=codes)
        if not argv:
            raise BadRecord("argv is empty")
        return CommandSpec(
            argv=tuple(argv),
            shell=_bool(data, "shell"),
            transport_exit_codes=frozenset(codes),
            stderr_events=_bool(data, "stderr_events") if "stderr_events" in data else False,
        )
    if kind == "push":
        return PushSpec()
    if kind == "local":
        spec = LocalSpec(
            run=_text(data, "run"),
            setup=_text(data, "setup"),
            workdir=_text(data, "workdir", limits.MAX_PATH_BYTES),
            envs=_pairs(data, "envs"),
            environment=_pairs(data, "environment") if "environment" in data else (),
        )
        _check_launch(spec.run, spec.setup, spec.workdir, spec.envs, spec.environment, "")
        return spec
    if kind == "skypilot":
        managed = data["managed_job_id"]
        if managed is not None:
            managed = _int(data, "managed_job_id", 1, 2**63 - 1)
        sky = SkyPilotSpec(
            task_yaml=_text(data, "task_yaml"),
            workdir=_text(data, "workdir", limits.MAX_PATH_BYTES),
            name=_text(data, "name", MAX_NAME_BYTES),
            envs=_pairs(data, "envs"),
            environment=_pairs(data, "environment"),
            managed_job_id=managed,
        )
        _check_launch("", "", sky.workdir, sky.envs, sky.environment, sky.task_yaml)
        return sky
    raise BadRecord(f"unknown source kind {limits.shown(kind)}")


def _check_launch(
    run: str,
    setup: str,
    workdir: str,
    envs: tuple[tuple[str, str], ...],
    environment: tuple[tuple[str, str], ...],
    task_yaml: str,
) -> None:
    limits.check_launch(
        "",
        run=run,
        setup=setup,
        workdir=workdir,
        envs=dict(envs),
        environment=dict(environment),
        task_yaml=task_yaml,
    )


def _depth(value: object) -> int:
    """How deep JSON containers nest in `value` (without recursion: it may be hostile)."""
    deepest, pending = 0, [(value, 1)]
    while pending:
        item, depth = pending.pop()
        if isinstance(item, dict):
            item = list(item.values())
        if isinstance(item, list):
            deepest = max(deepest, depth)
            if depth > MAX_RECORD_DEPTH:
                return depth
            pending.extend((child, depth + 1) for child in item)
    return deepest


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _int(data: dict[str, Any], key: str, low: int, high: int) -> int:
    value = data[key]
    if not _is_int(value) or not low <= value <= high:
        raise BadRecord(f"{key} is not an integer from {low} to {high}")
    return int(value)


def _time(data: dict[str, Any], key: str) -> float:
    value = data[key]
    if not (_is_int(value) or isinstance(value, float)) or not (
        math.isfinite(value) and 0 <= value <= _MAX_TIME
    ):
        raise BadRecord(f"{key} is not a time")
    return float(value)


def _bool(data: dict[str, Any], key: str) -> bool:
    value = data[key]
    if not isinstance(value, bool):
        raise BadRecord(f"{key} is not true or false")
    return value


def _text(data: dict[str, Any], key: str, max_bytes: int = limits.MAX_TASK_BYTES) -> str:
    value = data[key]
    if not isinstance(value, str) or len(value.encode(errors="replace")) > max_bytes:
        raise BadRecord(f"{key} is not a string of at most {max_bytes} bytes")
    return value


def _strings(data: dict[str, Any], key: str) -> list[str]:
    value = data[key]
    if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
        raise BadRecord(f"{key} is not a list of strings")
    return value


def _pairs(data: dict[str, Any], key: str) -> tuple[tuple[str, str], ...]:
    value = data[key]
    if not isinstance(value, list) or len(value) > limits.MAX_ENV_ITEMS:
        raise BadRecord(f"{key} is not a list of variables")
    pairs = []
    for pair in value:
        if not (
            isinstance(pair, list)
            and len(pair) == 2
            and isinstance(pair[0], str)
            and isinstance(pair[1], str)
        ):
            raise BadRecord(f"{key} holds something other than [name, value] pairs")
        pairs.append((pair[0], pair[1]))
    return tuple(pairs)
