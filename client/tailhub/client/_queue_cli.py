"""`tailhub jobs queue`: the jobs, newest first, as a table or JSON (see _queue.py)."""

from __future__ import annotations

import sys

import click

from tailhub.client._cli_common import connect, home_option
from tailhub.client._output import note

# `jobs queue` without --all shows this many, the newest.
QUEUE_DEFAULT_COUNT = 50


@click.command("queue")
@home_option
@click.option("--json", "as_json", is_flag=True, help="Print JSON for scripts (ISO times too).")
@click.option(
    "--all",
    "-a",
    "everything",
    is_flag=True,
    help=f"Every job, not only the newest {QUEUE_DEFAULT_COUNT}.",
)
@click.option("--skip-finished", "-s", is_flag=True, help="Only jobs that have not ended.")
def jobs_queue(home: str | None, as_json: bool, everything: bool, skip_finished: bool) -> None:
    """List jobs, newest first: id, name, state, exit code, source, log size, subscribers,
    upstream connections (open now/opened in total), submitted (age), duration."""
    from tailhub.client._queue import job_json, print_jobs

    with connect(home) as client:
        if skip_finished:
            listed = [job for job in client.list() if not job.state.terminal]
            total: int | None = len(listed)
            listed = listed if everything else listed[:QUEUE_DEFAULT_COUNT]
        elif everything:
            listed, total = client.list(), None
        else:
            page = client.list_page(QUEUE_DEFAULT_COUNT)
            listed, total = page.jobs, page.total_jobs
        clustered = not as_json and client.status().cluster is not None
    if as_json:
        import json

        click.echo(json.dumps([job_json(job) for job in listed], indent=2))
    else:
        print_jobs(listed, colour=sys.stdout.isatty(), clustered=clustered)
    if total is not None and total > len(listed):
        kind = "unfinished jobs" if skip_finished else "jobs"
        note(f"showing the newest {len(listed)} of {total} {kind}; --all for every one")
