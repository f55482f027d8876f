"""What the CLI prints: a log copied to stdout, notes on stderr, exit codes."""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING, BinaryIO

import click

from tailhub.client import exit_codes
from tailhub.client._printable import job_label as job_label  # noqa: PLC0414 (re-exported)
from tailhub.client._printable import printable as printable  # noqa: PLC0414

if TYPE_CHECKING:
    from tailhub.client import Client, LogEnd
    from tailhub.client._json_lines import JsonLines
    from tailhub.client._pending import PendingStatus
    from tailhub.client._timestamps import LineStamper


def note(message: str) -> None:
    """One line for a person, on stderr (stdout carries only what scripts read)."""
    click.echo(f"tailhub: {printable(message)}", err=True)


def size_text(count: int) -> str:
    value = float(count)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            return f"{value:.0f}{unit}" if unit == "B" else f"{value:.1f}{unit}"
        value /= 1024
    return str(count)


def copy_log(
    client: Client,
    job_id: int,
    *,
    follow: bool,
    tail: int | None,
    pending: PendingStatus | None = None,
    since_time: float | None = None,
    timestamps: bool = False,
    again: str = "",
    grep: tuple[str, ...] = (),
    exclude: tuple[str, ...] = (),
    json_name: str | None = None,
) -> LogEnd:
    """Copies the log to stdout as it arrives; upstream events go to stderr.

    With `pending`, a job still waiting to start shows a status line on stderr (refreshed at
    each heartbeat, cleared before the first byte or when the job starts). `since_time` starts
    at the first line that reached the daemon then or later; `timestamps` starts each line with
    when it arrived. `again`: the command that follows the job again, said when the daemon was
    lost for good (the job may still run). `grep`/`exclude`: only the lines they select (the
    daemon filters). With `json_name` (the job's name), one JSON object per line (_json_lines).
    """
    from tailhub.client import (
        DaemonUnreachable,
        LogChunk,
        LogEnd,
        LogEvent,
        LogHeartbeat,
        LogTimeMark,
    )

    writer = _writer(job_id, json_name, timestamps)
    items = client.follow(
        job_id,
        tail_lines=tail,
        follow=follow,
        since_time=since_time,
        timestamps=timestamps or json_name is not None,
        grep=grep,
        exclude=exclude,
    )
    try:
        for item in items:
            if pending is not None and not isinstance(item, (LogHeartbeat, LogTimeMark)):
                pending.clear()
            if isinstance(item, LogChunk):
                writer.write(item.offset, item.data)
            elif isinstance(item, LogTimeMark):
                writer.mark(item.offset, item.time)
            elif isinstance(item, LogHeartbeat):
                if pending is not None:
                    pending.update(item.state)
            elif isinstance(item, LogEvent):
                note(f"job {job_id}: {item.message}")  # note() escapes it
            elif isinstance(item, LogEnd):
                writer.finish()
                return item
    except KeyboardInterrupt:
        # What arrived is written, as without --timestamps: a begun line is not lost.
        writer.finish()
        raise
    except DaemonUnreachable as error:
        writer.finish()
        if not again:
            raise
        raise DaemonUnreachable(f"{error}; follow it again once it is back: {again}") from None
    raise AssertionError("a log stream always ends with LogEnd")


def _writer(
    job_id: int, json_name: str | None, timestamps: bool
) -> _PlainWriter | LineStamper | JsonLines:
    """How a log goes to stdout: as it is, with times, or as JSON objects."""
    from tailhub.client._json_lines import JsonLines
    from tailhub.client._timestamps import LineStamper

    out = sys.stdout.buffer
    if json_name is not None:
        return JsonLines(out, job_id, json_name)
    return LineStamper(out) if timestamps else _PlainWriter(out)


class _PlainWriter:
    """The log byte for byte, as it arrives (LineStamper's interface, without stamps)."""

    def __init__(self, out: BinaryIO) -> None:
        self._out = out

    def write(self, offset: int, data: bytes) -> None:
        self._out.write(data)
        self._out.flush()

    def mark(self, offset: int, when: float) -> None:
        pass

    def finish(self) -> None:
        pass


def end_result(end: LogEnd) -> int:
    """The exit code a job's end stands for, in SkyPilot's convention."""
    from tailhub.client import JobState

    if not end.finished:
        return exit_codes.NOT_FINISHED
    if end.state is JobState.SUCCEEDED:
        return exit_codes.SUCCEEDED
    if end.state is JobState.CANCELLED:
        return exit_codes.CANCELLED
    return exit_codes.FAILED


def result_exit_code(end: LogEnd, label: str = "job") -> int:
    """The job's result in SkyPilot's convention; says why on stderr when it failed.

    `label` names the job in that line (`job 17 (train)`, see job_label)."""
    from tailhub.client import JobState

    if end.finished and end.state is JobState.FAILED:
        note(f"{label} failed: {end.reason}" if end.reason else f"{label} failed")
    return end_result(end)
