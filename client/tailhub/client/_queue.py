"""`jobs queue`: the job table (ages, durations, coloured states on a terminal) and its JSON."""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import asdict
from datetime import datetime, timezone
from typing import Any

import click

from tailhub.client._output import printable, size_text
from tailhub.client._types import JobInfo, JobState

_STATE_COLOURS = {
    JobState.SUCCEEDED: "green",
    JobState.FAILED: "red",
    JobState.PENDING: "yellow",
    JobState.CANCELLED: "yellow",
    JobState.RUNNING: "blue",
}
_TIMES = ("submitted_at", "started_at", "ended_at")


def job_json(job: JobInfo) -> dict[str, Any]:
    """The job as JSON: epoch seconds as the daemon gives them, and ISO 8601 (UTC) beside them."""
    data = asdict(job)
    data["state"] = job.state.value
    for key in _TIMES:
        data[f"{key}_iso"] = iso_time(getattr(job, key))
    return data


def iso_time(epoch: float) -> str | None:
    """`2026-11-29T07:50:55.123+00:00`; None for 0 (not happened yet)."""
    if not epoch:
        return None
    return datetime.fromtimestamp(epoch, tz=timezone.utc).isoformat(timespec="milliseconds")


def print_jobs(
    listed: Sequence[JobInfo], *, colour: bool, clustered: bool = False, now: float | None = None
) -> None:
    """The table, newest first as listed; states coloured when `colour` (stdout a terminal).

    In cluster mode a NODE column (before DESCRIPTION) names the daemon fetching each job.
    """
    now = time.time() if now is None else now
    rows = [_header(clustered), *(_row(job, now, clustered) for job in listed)]
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]) - 1)]
    for index, row in enumerate(rows):
        cells = [cell.ljust(width) for cell, width in zip(row, widths, strict=False)]
        if colour and index > 0:
            state = listed[index - 1].state
            # Padded first, so that the escape codes do not upset the columns.
            cells[2] = click.style(cells[2], fg=_STATE_COLOURS.get(state))
        click.echo("  ".join([*cells, row[-1]]).rstrip())


def _header(clustered: bool) -> tuple[str, ...]:
    return (
        "ID",
        "NAME",
        "STATE",
        "EXIT",
        "SOURCE",
        "LOG",
        "SUBS",
        "CONNS",
        # After the older columns, so that scripts counting fields keep working.
        "SUBMITTED",
        "DURATION",
        *(("NODE",) if clustered else ()),
        "DESCRIPTION",
    )


def _row(job: JobInfo, now: float, clustered: bool) -> tuple[str, ...]:
    """One job's cells, in the header's order."""
    return (
        str(job.id),
        printable(job.name) or "-",
        job.state.value,
        "-" if job.exit_code is None else str(job.exit_code),
        # SkyPilot's own id beside it: `sky jobs logs 7` is what a user would run.
        f"{job.source}:{printable(job.external_id)}" if job.external_id else job.source,
        size_text(job.log_size),
        str(job.subscribers),
        f"{job.upstream_connections_open}/{job.upstream_connections}",
        age_text(now - job.submitted_at) if job.submitted_at else "-",
        duration_text(job, now),
        *((printable(job.lease_holder) or "-",) if clustered else ()),
        printable(job.source_description[:50]),
    )


def age_text(seconds: float) -> str:
    """`12s ago`, `3m ago`, `5h ago`, `2d ago`."""
    return f"{_span(seconds, parts=1)} ago"


def duration_text(job: JobInfo, now: float) -> str:
    """How long it ran: ended minus started, or now minus started while running."""
    if not job.started_at:
        return "-"
    end = job.ended_at or (now if not job.state.terminal else job.started_at)
    return _span(end - job.started_at, parts=2)


def _span(seconds: float, *, parts: int) -> str:
    """`45s`, `3m 12s`, `2h 5m`, `3d 4h` (its `parts` largest units)."""
    left = max(int(seconds), 0)
    units: list[str] = []
    for size, unit in ((86400, "d"), (3600, "h"), (60, "m"), (1, "s")):
        if left >= size or (size == 1 and not units):
            units.append(f"{left // size}{unit}")
            left %= size
        elif units:
            units.append(f"0{unit}")
        if len(units) == parts:
            break
    return " ".join(units)
