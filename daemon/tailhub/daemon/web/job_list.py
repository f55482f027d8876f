"""The jobs as JSON: `/api/jobs` (newest first) and `/api/jobs/{id}` (one job and its events).

Ids and sizes are decimal strings (64-bit values; JavaScript numbers are not), times Unix
seconds, null where a job has none yet."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from tailhub.daemon import limits
from tailhub.daemon.domain import SourceEvent
from tailhub.daemon.errors import JobNotFound
from tailhub.daemon.live_job import Job
from tailhub.daemon.web.state import job_id_of, json_error, json_response, state_of

MAX_LISTED = 1000


def job_json(job: Job) -> dict[str, Any]:
    """A job as the page shows it (its reason and description cut as in ListJobs)."""
    record = job.record
    return {
        "id": str(record.id),
        "name": record.name,
        "state": record.state.value,
        "source": record.spec.kind.value,
        "source_description": record.spec.describe()[: limits.MAX_LISTED_DESCRIPTION_CHARS],
        "log_size": str(max(job.log_size, job.placed.size)),
        "followers": job.subscribers,
        "exit_code": record.exit_code,
        "reason": record.reason[: limits.MAX_LISTED_REASON_CHARS],
        "submitted_at": record.submitted_at,
        "started_at": record.started_at or None,
        "ended_at": record.ended_at or None,
        "home_node": job.placed.home,
        "lease_holder": job.placed.holder,
    }


def event_json(event: SourceEvent) -> dict[str, Any]:
    return {"offset": str(event.offset), "message": event.message, "time": event.time}


def listed(state_jobs: list[Job]) -> list[dict[str, Any]]:
    return [job_json(job) for job in state_jobs]


async def jobs(request: web.Request) -> web.Response:
    """`GET /api/jobs`: at most MAX_LISTED jobs, newest first, and how many there are."""
    manager = state_of(request).manager
    newest, _ = manager.newest(MAX_LISTED)
    return json_response({"jobs": listed(newest), "total": manager.job_count})


async def job(request: web.Request) -> web.Response:
    """`GET /api/jobs/{id}`: one job and its source events; 404 JSON for an unknown one."""
    job_id = job_id_of(request)
    if job_id is None:
        return json_error(404, "no such job")
    try:
        found = state_of(request).manager.get(job_id)
    except JobNotFound as error:
        return json_error(404, str(error))
    return json_response(
        {"job": job_json(found), "events": [event_json(event) for event in found.events]}
    )
