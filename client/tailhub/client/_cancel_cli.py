"""`tailhub jobs cancel|rm|prune`: end jobs, and remove ended ones with their logs."""

from __future__ import annotations

import sys
import time
from typing import TYPE_CHECKING

import click

from tailhub.client import exit_codes
from tailhub.client._cli_common import connect, home_option
from tailhub.client._names import JOB_REF, resolve_jobs
from tailhub.client._output import note, size_text

if TYPE_CHECKING:  # importing the client pulls in grpc, which `--help` does not need
    from tailhub.client import Client
    from tailhub.client._types import CancelResult


@click.command("cancel")
@home_option
@click.argument("jobs", type=JOB_REF, nargs=-1)
@click.option(
    "--all", "-a", "everything", is_flag=True, help="Cancel every job that has not ended."
)
@click.option("--yes", "-y", is_flag=True, help="Do not ask before cancelling --all.")
def jobs_cancel(home: str | None, jobs: tuple[str, ...], everything: bool, yes: bool) -> None:
    """Cancel jobs (ids or names): local ones get SIGTERM, then SIGKILL after a grace period.

    Each named job gets a line; exit 102 if one was not found. --all asks first when stdin
    is a terminal, unless --yes."""
    if not jobs and not everything:
        raise click.UsageError("name the jobs to cancel, or use --all")
    with connect(home) as client:
        job_ids = resolve_jobs(client, jobs)
        if everything and not yes and sys.stdin.isatty():
            _confirm_all(client)
        result = client.cancel_jobs(job_ids, everything=everything)
    lines = _cancel_lines(result)
    if not lines:
        note("no job to cancel")
    for job_id in sorted(lines):
        note(lines[job_id])
    if result.unknown_job_ids:
        sys.exit(exit_codes.NOT_FOUND)


def _confirm_all(client: Client) -> None:
    """Asks before --all cancels anything; exit 1 when the answer is no."""
    count = sum(1 for job in client.list() if not job.state.terminal)
    if count and not click.confirm(
        f"Cancel all {count} unfinished job{'' if count == 1 else 's'}?", err=True
    ):
        note("nothing cancelled")
        sys.exit(exit_codes.ERROR)


def _cancel_lines(result: CancelResult) -> dict[int, str]:
    """What became of each job, by id: cancelled, already ended, or not found."""
    lines: dict[int, str] = {}
    for job in result.cancelled:
        # A backend that cancels asynchronously (SkyPilot) answers before the job has ended.
        ending = "" if job.state.terminal else f" ({job.reason or 'cancel requested'})"
        lines[job.id] = f"job {job.id}: {job.state.value}{ending}"
    for job in result.already_ended:
        lines[job.id] = f"job {job.id} had already ended ({job.state.value}); left as it was"
    for job_id in result.unknown_job_ids:
        lines[job_id] = f"job {job_id} not found"
    return lines


@click.command("rm")
@home_option
@click.argument("jobs", type=JOB_REF, nargs=-1, required=True)
def jobs_rm(home: str | None, jobs: tuple[str, ...]) -> None:
    """Delete ended jobs (ids or names) with their logs. Exit 102 if one was not found, 1 if
    one has not ended (cancel it first)."""
    with connect(home) as client:
        result = client.remove(resolve_jobs(client, jobs))
    lines = {job_id: f"job {job_id} removed" for job_id in result.removed_job_ids}
    for job_id in result.not_ended_job_ids:
        lines[job_id] = f"job {job_id} has not ended; cancel it first"
    for job_id in result.unknown_job_ids:
        lines[job_id] = f"job {job_id} not found"
    for job_id in sorted(lines):
        note(lines[job_id])
    if result.unknown_job_ids:
        sys.exit(exit_codes.NOT_FOUND)
    if result.not_ended_job_ids:
        sys.exit(exit_codes.ERROR)


def _duration(ctx: click.Context, param: click.Parameter, value: str) -> float:
    from tailhub.daemon.durations import parse_duration

    try:
        return parse_duration(value)
    except ValueError as error:
        raise click.BadParameter(str(error), ctx, param) from None


@click.command("prune")
@home_option
@click.option(
    "--older-than",
    default="7d",
    show_default=True,
    metavar="DURATION",
    callback=_duration,
    help="Remove jobs that ended longer ago than this: 30m, 12h, 7d...",
)
def jobs_prune(home: str | None, older_than: float) -> None:
    """Delete every job that ended longer ago than --older-than, with its log."""
    with connect(home) as client:
        result = client.remove(ended_before=time.time() - older_than)
    count = len(result.removed_job_ids)
    note(
        f"removed {count} job{'' if count == 1 else 's'} ({size_text(result.bytes_freed)} of logs)"
    )
