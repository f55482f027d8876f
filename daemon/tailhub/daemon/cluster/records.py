"""Job records as JSON in Redis: written by the daemon fetching the job, read by every daemon.

What comes out of Redis is checked like any other input (another daemon of another version,
or anyone who can write to that Redis, put it there): a record that does not parse is
reported and left out, never half-applied.
"""

from __future__ import annotations

from typing import Any

from tailhub.daemon.limits import MAX_NAME_BYTES, MAX_REASON_BYTES
from tailhub.daemon.model import JobRecord, JobState, SourceKind, spec_from_json, spec_to_json

# The node a job is pinned to (local and file jobs): only it can run or read the job.
HOME = "home"


class BadRecord(ValueError):
    """A record in Redis that this daemon cannot use."""


def record_to_json(record: JobRecord, home: str) -> dict[str, Any]:
    spec = spec_to_json(record.spec)
    if record.spec.kind is SourceKind.LOCAL:
        # The launching shell's environment (its secrets too) stays on the node that runs
        # the job, which alone needs it: everyone who can read Redis would read it there.
        spec["environment"] = []
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


def record_from_json(job_id: int, data: dict[str, Any]) -> tuple[JobRecord, str]:
    """The record and its home node ("" for none); BadRecord if it is not one."""
    try:
        if data["id"] != job_id:
            raise BadRecord(f"the record of job {job_id} names job {data['id']}")
        exit_code = data["exit_code"]
        source_state = data["source_state"]
        home = data.get(HOME, "")
        if exit_code is not None and not isinstance(exit_code, int):
            raise BadRecord("exit_code is not an integer")
        if not isinstance(source_state, dict) or not isinstance(home, str):
            raise BadRecord("source_state or home has the wrong type")
        record = JobRecord(
            id=job_id,
            name=str(data["name"])[:MAX_NAME_BYTES],
            spec=spec_from_json(data["spec"]),
            state=JobState(data["state"]),
            exit_code=exit_code,
            reason=str(data["reason"])[:MAX_REASON_BYTES],
            submitted_at=float(data["submitted_at"]),
            started_at=float(data["started_at"]),
            ended_at=float(data["ended_at"]),
            upstream_connections=int(data["upstream_connections"]),
            sealed=bool(data["sealed"]),
            source_state=source_state,
            cancel_requested=bool(data["cancel_requested"]),
        )
    except BadRecord:
        raise
    except (KeyError, TypeError, ValueError) as error:
        raise BadRecord(f"the record of job {job_id} is not one: {error!r}") from None
    return record, home
