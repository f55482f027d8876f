"""`tailhub jobs show JOB`: one job's record, reason, events, timing, node and followers."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

import click

from tailhub.client._cli_common import connect, home_option
from tailhub.client._names import JOB_REF, resolve_jobs
from tailhub.client._output import printable, size_text

if TYPE_CHECKING:
    from tailhub.client._types import JobEvent, JobInfo


@click.command("show")
@home_option
@click.argument("job", type=JOB_REF)
@click.option(
    "--output",
    "-o",
    type=click.Choice(["text", "json"]),
    default="text",
    show_default=True,
    help="json: the record and its events as one JSON object, for scripts.",
)
def jobs_show(home: str | None, job: str, output: str) -> None:
    """Show a job (id or name): its state and why, source, log, followers, times, node and
    the source events it kept."""
    with connect(home) as client:
        job_id = resolve_jobs(client, (job,))[0]
        info, events = client.get_with_events(job_id)
    if output == "json":
        import json

        click.echo(json.dumps(show_json(info, events), indent=2))
    else:
        click.echo("\n".join(show_lines(info, events, time.time())))


def show_json(job: JobInfo, events: list[JobEvent]) -> dict[str, Any]:
    """`jobs queue --json`'s object for the job, with its events (ISO times beside)."""
    from tailhub.client._queue import iso_time, job_json

    data = job_json(job)
    data["events"] = [
        {"offset": e.offset, "time": e.time, "time_iso": iso_time(e.time), "message": e.message}
        for e in events
    ]
    return data


def show_lines(job: JobInfo, events: list[JobEvent], now: float) -> list[str]:
    """The record as `field  value` lines, then the events, oldest first."""
    from tailhub.client._queue import age_text, duration_text, iso_time

    def when(epoch: float) -> str:
        return f"{iso_time(epoch)} ({age_text(now - epoch)})" if epoch else "-"

    state = job.state.value + ("" if job.exit_code is None else f" (exit code {job.exit_code})")
    source = job.source + (f":{printable(job.external_id)}" if job.external_id else "")
    fields = [
        ("job", str(job.id)),
        ("name", printable(job.name) or "-"),
        ("state", state),
        ("reason", printable(job.reason) or "-"),
        ("source", f"{source} {printable(job.source_description)}".rstrip()),
        *((("backend", job.backend),) if job.backend else ()),
        (
            "log",
            f"{size_text(job.log_size)} ({job.log_size} bytes{', sealed' if job.sealed else ''})",
        ),
        ("followers", f"{job.subscribers} now; {size_text(job.bytes_served)} served"),
        ("upstream", f"{job.upstream_connections_open} open, {job.upstream_connections} opened"),
        ("submitted", when(job.submitted_at)),
        ("started", when(job.started_at)),
        ("ended", when(job.ended_at)),
        ("duration", duration_text(job, now)),
        *_node_fields(job),
    ]
    width = max(len(name) for name, _ in fields)
    lines = [f"{name.ljust(width)}  {value}" for name, value in fields]
    lines.append(f"events ({len(events)})" + (":" if events else ""))
    lines += [
        f"  {iso_time(e.time) or '-'}  at byte {e.offset}  {printable(e.message)}" for e in events
    ]
    return lines


def _node_fields(job: JobInfo) -> list[tuple[str, str]]:
    """Cluster mode: the node the job is pinned to and the one fetching it now."""
    if not job.home_node and not job.lease_holder:
        return []
    return [
        ("home node", printable(job.home_node) or "-"),
        ("fetched by", printable(job.lease_holder) or "- (no node holds its lease)"),
    ]
