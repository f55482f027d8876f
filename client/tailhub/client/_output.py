"""What the CLI prints: job tables, a log copied to stdout, notes on stderr, exit codes."""

from __future__ import annotations

import sys
from collections.abc import Iterable
from dataclasses import asdict
from typing import TYPE_CHECKING, Any

import click

from tailhub.client import exit_codes

if TYPE_CHECKING:
    from tailhub.client import Client, JobInfo, LogEnd


# C0 controls, DEL and C1 controls: a terminal acts on them (titles, colours, cursor moves).
_CONTROLS = {code: f"\\x{code:02x}" for code in (*range(0x20), *range(0x7F, 0xA0))}
_CONTROLS.update({ord("\n"): "\\n", ord("\r"): "\\r", ord("\t"): "\\t"})


def printable(text: str) -> str:
    """`text` with every control character shown as an escape (`\\x1b`, `\\n`), so that a job
    name or a daemon's message can neither steer the terminal nor break a line apart."""
    return text.translate(_CONTROLS)


def note(message: str) -> None:
    """One line for a person, on stderr (stdout carries only what scripts read)."""
    click.echo(f"tailhub: {printable(message)}", err=True)


def job_json(job: JobInfo) -> dict[str, Any]:
    data = asdict(job)
    data["state"] = job.state.value
    return data


def print_jobs(listed: Iterable[JobInfo]) -> None:
    header = ("ID", "NAME", "STATE", "EXIT", "SOURCE", "LOG", "SUBS", "CONNS", "DESCRIPTION")
    rows = [header]
    for job in listed:
        rows.append(
            (
                str(job.id),
                printable(job.name) or "-",
                job.state.value,
                "-" if job.exit_code is None else str(job.exit_code),
                # SkyPilot's own id beside it: `sky jobs logs 7` is what a user would run.
                f"{job.source}:{job.external_id}" if job.external_id else job.source,
                size_text(job.log_size),
                str(job.subscribers),
                f"{job.upstream_connections_open}/{job.upstream_connections}",
                printable(job.source_description[:50]),
            )
        )
    widths = [max(len(row[i]) for row in rows) for i in range(len(header) - 1)]
    for row in rows:
        cells = [cell.ljust(width) for cell, width in zip(row, widths, strict=False)]
        click.echo("  ".join([*cells, row[-1]]).rstrip())


def size_text(count: int) -> str:
    value = float(count)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            return f"{value:.0f}{unit}" if unit == "B" else f"{value:.1f}{unit}"
        value /= 1024
    return str(count)


def copy_log(client: Client, job_id: int, *, follow: bool, tail: int | None) -> LogEnd:
    """Copies the log to stdout as it arrives; upstream events go to stderr."""
    from tailhub.client import LogChunk, LogEnd, LogEvent

    out = sys.stdout.buffer
    for item in client.follow(job_id, tail_lines=tail, follow=follow):
        if isinstance(item, LogChunk):
            out.write(item.data)
            out.flush()
        elif isinstance(item, LogEvent):
            note(f"job {job_id}: {item.message}")  # note() escapes it
        elif isinstance(item, LogEnd):
            return item
    raise AssertionError("a log stream always ends with LogEnd")


def result_exit_code(end: LogEnd) -> int:
    """The job's result in SkyPilot's convention; says why on stderr when it failed."""
    from tailhub.client import JobState

    if not end.finished:
        return exit_codes.NOT_FINISHED
    if end.state is JobState.SUCCEEDED:
        return exit_codes.SUCCEEDED
    if end.state is JobState.CANCELLED:
        return exit_codes.CANCELLED
    if end.reason and end.state is JobState.FAILED:
        note(f"job failed: {end.reason}")
    return exit_codes.FAILED
