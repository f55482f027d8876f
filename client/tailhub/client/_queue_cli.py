"""`tailhub jobs queue`: the jobs, newest first, as a table or JSON (see _queue.py), once or
redrawn until Ctrl-C (`--watch`)."""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING

import click

from tailhub.client._cli_common import connect, home_option
from tailhub.client._output import note, printable

if TYPE_CHECKING:
    from tailhub.client import Client, JobInfo

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
@click.option(
    "--watch",
    "-w",
    is_flag=True,
    help="Redraw the table every --interval seconds until Ctrl-C (in place on a terminal).",
)
@click.option(
    "--interval",
    "-n",
    type=click.FloatRange(min=0.1, max=3600),
    default=2.0,
    show_default=True,
    metavar="SECONDS",
    help="How often --watch redraws.",
)
def jobs_queue(
    home: str | None,
    as_json: bool,
    everything: bool,
    skip_finished: bool,
    watch: bool,
    interval: float,
) -> None:
    """List jobs, newest first: id, name, state, exit code, source, log size, subscribers,
    upstream connections (open now/opened in total), submitted (age), duration."""
    from tailhub.client._queue import job_json, print_jobs

    if watch and as_json:
        raise click.UsageError("--watch redraws the table; --json is for scripts: use one")
    view = _View(everything, skip_finished, as_json)
    with connect(home) as client:
        if watch:
            _watch(client, view, interval)
            return
        listed, total, clustered = view.read(client)
    if as_json:
        import json

        click.echo(json.dumps([job_json(job) for job in listed], indent=2))
    else:
        print_jobs(listed, colour=sys.stdout.isatty(), clustered=clustered)
    if total is not None and total > len(listed):
        note(view.more(len(listed), total))


@dataclass(frozen=True)
class _View:
    """Which jobs the table shows."""

    everything: bool
    skip_finished: bool
    as_json: bool

    def read(self, client: Client) -> tuple[list[JobInfo], int | None, bool]:
        """The jobs to show, how many there are (None: all shown), and whether the daemon is
        a cluster node (a NODE column)."""
        if self.skip_finished:
            listed = [job for job in client.list() if not job.state.terminal]
            total: int | None = len(listed)
            listed = listed if self.everything else listed[:QUEUE_DEFAULT_COUNT]
        elif self.everything:
            listed, total = client.list(), None
        else:
            page = client.list_page(QUEUE_DEFAULT_COUNT)
            listed, total = page.jobs, page.total_jobs
        clustered = not self.as_json and client.status().cluster is not None
        return listed, total, clustered

    def more(self, shown: int, total: int) -> str:
        kind = "unfinished jobs" if self.skip_finished else "jobs"
        return f"showing the newest {shown} of {total} {kind}; --all for every one"


# Cursor home, then clear the screen: a terminal redraws the table in place.
_REDRAW = "\x1b[H\x1b[2J"


def _watch(client: Client, view: _View, interval: float) -> None:
    """Draws the table every `interval` seconds until Ctrl-C, which ends it with exit 0. On a
    terminal each frame replaces the last; elsewhere (a pipe, a file) frames follow each other,
    a blank line between. A daemon that does not answer is said in the frame, and retried."""
    from tailhub.client._errors import TailhubError
    from tailhub.client._queue import print_jobs

    terminal = sys.stdout.isatty()
    frames = 0
    try:
        while True:
            if terminal:
                click.echo(_REDRAW, nl=False)
            elif frames:
                click.echo()
            stamp = datetime.now().astimezone().strftime("%Y-%m-%d %H:%M:%S")
            click.echo(f"every {interval:g}s: tailhub jobs queue    {stamp}")
            try:
                listed, total, clustered = view.read(client)
            except TailhubError as error:
                click.echo(f"tailhub: {printable(str(error))} (retrying)")
            else:
                print_jobs(listed, colour=terminal, clustered=clustered)
                if total is not None and total > len(listed):
                    click.echo(view.more(len(listed), total))
            sys.stdout.flush()
            frames += 1
            time.sleep(interval)
    except KeyboardInterrupt:
        if terminal:
            click.echo()
