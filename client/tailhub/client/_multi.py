"""Many jobs followed through one process and one channel, as `docker compose logs -f` does.

One thread per job runs the library's blocking `Client.follow` and feeds a bounded queue (a
slow terminal slows the streams down instead of growing memory); the main thread writes whole
lines only, each behind its job's prefix, and keeps every job's partial last line until the
rest of it arrives or the job ends. `jobs wait` uses the same machinery with no output.
"""

from __future__ import annotations

import fnmatch
import itertools
import queue
import sys
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from typing import IO, TYPE_CHECKING

import click

from tailhub.client import exit_codes
from tailhub.client._errors import JobNotFoundError
from tailhub.client._names import is_job_id, jobs_by_name, one_named
from tailhub.client._output import end_result, job_label, note, printable
from tailhub.client._types import LogChunk, LogEnd, LogEvent, LogItem, LogTimeMark

if TYPE_CHECKING:
    from tailhub.client import Client, JobInfo

# Items waiting for the writer, across every job: enough to absorb bursts, small enough that
# a stalled reader stalls the streams rather than filling memory (chunks are at most 64 KiB).
_QUEUE_ITEMS = 64
# An unfinished line longer than this is written out (bounded memory per job).
MAX_LINE_BYTES = 1024 * 1024
# How often the writer wakes to notice Ctrl-C (a blocking get() would delay it).
_WAKE_SECONDS = 0.5
# Prefix colours, in the order docker compose uses them; red is kept for failures.
_COLOURS = (
    *("cyan", "yellow", "green", "magenta", "blue"),
    *("bright_cyan", "bright_yellow", "bright_green", "bright_magenta", "bright_blue"),
)

# Results from best to worst: the exit code of many jobs is the worst of theirs. "Not found"
# ranks above "failed": a job that is not there at all usually means a mistyped id, which the
# user should hear about first; "not finished" only happens with --no-follow.
RESULT_ORDER = (
    exit_codes.SUCCEEDED,
    exit_codes.NOT_FINISHED,
    exit_codes.CANCELLED,
    exit_codes.FAILED,
    exit_codes.NOT_FOUND,
)
_RESULT_WORDS = {
    exit_codes.SUCCEEDED: "succeeded",
    exit_codes.FAILED: "failed",
    exit_codes.CANCELLED: "cancelled",
    exit_codes.NOT_FINISHED: "not finished",
    exit_codes.NOT_FOUND: "not found",
}
_SUMMARY_ORDER = (
    exit_codes.SUCCEEDED,
    exit_codes.FAILED,
    exit_codes.CANCELLED,
    exit_codes.NOT_FINISHED,
    exit_codes.NOT_FOUND,
)


@dataclass(frozen=True)
class Target:
    """One job to follow: its id (None when the name given matched no job) and its name."""

    job_id: int | None
    name: str
    # Where to start reading its log (`jobs wait` starts at the end: it reads no bytes).
    offset: int = 0

    @property
    def label(self) -> str:
        if self.job_id is None:
            return printable(self.name)
        return f"{printable(self.name)}-{self.job_id}" if self.name else str(self.job_id)


@dataclass(frozen=True)
class Outcome:
    target: Target
    result: int  # one of RESULT_ORDER


def worst(outcomes: Sequence[Outcome]) -> int:
    return max((o.result for o in outcomes), key=RESULT_ORDER.index, default=0)


def summary(outcomes: Sequence[Outcome]) -> str:
    """`28 succeeded, 2 failed: 7 (train), 19 (eval)`: counts, and which jobs did not succeed."""
    parts: list[str] = []
    for result in _SUMMARY_ORDER:
        chosen = sorted(
            (o.target for o in outcomes if o.result == result),
            key=lambda t: (t.job_id is None, t.job_id or 0, t.name),
        )
        if not chosen:
            continue
        text = f"{len(chosen)} {_RESULT_WORDS[result]}"
        if result != exit_codes.SUCCEEDED:
            text += ": " + ", ".join(_short(t) for t in chosen)
        parts.append(text)
    # Groups that list jobs are split by ";" so that their commas stay readable.
    out = parts[0] if parts else "no job"
    for previous, part in itertools.pairwise(parts):
        out += ("; " if ":" in previous else ", ") + part
    return out


def report(outcomes: list[Outcome], unfinished: bool, glob: str | None) -> int:
    """Says the summary line on stderr; returns the exit code for many jobs (or none found)."""
    if not outcomes:
        what = "unfinished job" if unfinished else "job"
        note(f"no {what}" + (f" named {glob!r}" if glob is not None else ""))
        return exit_codes.NOT_FOUND if glob is not None else exit_codes.SUCCEEDED
    note(summary(outcomes))
    return worst(outcomes)


def _short(target: Target) -> str:
    if target.job_id is None:
        return repr(target.name)
    return f"{target.job_id} ({target.name})" if target.name else str(target.job_id)


def select_targets(
    client: Client,
    refs: Sequence[str],
    *,
    unfinished: bool = False,
    glob: str | None = None,
    at_end: bool = False,
) -> list[Target]:
    """The jobs named by ids and names, plus those chosen by --all (`unfinished`) and --name.

    `--all --name GLOB` is the unfinished jobs whose name matches. A name matching no job is
    kept (as not found, for the summary); a name matching several is an error (exit 2).
    With `at_end`, each starts at its log's current end (`jobs wait` reads no old bytes).
    """
    listed = {job.id: job for job in client.list()}
    chosen = _named(listed, refs, at_end)
    if unfinished or glob is not None:
        chosen += _matching(listed, unfinished, glob, at_end)
    unique: dict[tuple[int | None, str], Target] = {}
    for target in chosen:
        unique.setdefault((target.job_id, target.name if target.job_id is None else ""), target)
    return list(unique.values())


def _named(listed: dict[int, JobInfo], refs: Sequence[str], at_end: bool) -> list[Target]:
    """The jobs named by ids and names, in order; a name no job has is kept, as not found."""
    by_name = jobs_by_name(listed.values())
    named: list[Target] = []
    for ref in refs:
        if is_job_id(ref):
            job_id: int | None = int(ref)
        else:
            try:
                job_id = one_named(by_name, ref)
            except JobNotFoundError:
                job_id = None
        job = listed.get(job_id) if job_id is not None else None
        name = job.name if job is not None else ("" if job_id is not None else ref)
        offset = job.log_size if job is not None and at_end else 0
        named.append(Target(job_id, name, offset))
    return named


def _matching(
    listed: dict[int, JobInfo], unfinished: bool, glob: str | None, at_end: bool
) -> list[Target]:
    """The jobs --all (`unfinished`) and --name GLOB choose, by id."""
    return [
        Target(job.id, job.name, job.log_size if at_end else 0)
        for job in sorted(listed.values(), key=lambda job: job.id)
        if not (unfinished and job.state.terminal)
        and (glob is None or fnmatch.fnmatchcase(job.name, glob))
    ]


class _Writer:
    """Whole lines of every job to stdout, each behind its job's prefix."""

    def __init__(self, targets: Sequence[Target], out: IO[bytes], prefix: bool, colour: bool):
        self._out = out
        width = max((len(t.label) for t in targets), default=0)
        self._prefixes: dict[int, bytes] = {}
        self._partial: dict[int, bytearray] = {}
        for index, target in enumerate(targets):
            if target.job_id is None:
                continue
            text = f"{target.label.ljust(width)} | " if prefix else ""
            if text and colour:
                text = click.style(text, fg=_COLOURS[index % len(_COLOURS)])
            self._prefixes[target.job_id] = text.encode()
            self._partial[target.job_id] = bytearray()

    def take(self, job_id: int, item: LogChunk | LogEvent | LogTimeMark) -> None:
        """Writes the lines a chunk completes; says an upstream event on stderr."""
        if isinstance(item, LogEvent):
            note(f"job {job_id}: {item.message}")
            return
        if isinstance(item, LogTimeMark):
            return
        pending = self._partial[job_id]
        pending += item.data
        cut = pending.rfind(b"\n")
        if cut < 0:
            if len(pending) >= MAX_LINE_BYTES:
                # Memory stays bounded: a line this long goes out in pieces, each on its own
                # prefixed line (other jobs' lines may come between).
                self.end(job_id)
            return
        lines = bytes(pending[:cut]).split(b"\n")
        del pending[: cut + 1]
        prefix = self._prefixes[job_id]
        self._out.write(b"".join(prefix + line + b"\n" for line in lines))
        self._out.flush()
        if len(pending) >= MAX_LINE_BYTES:
            self.end(job_id)

    def end(self, job_id: int) -> None:
        """The job's last line even without its newline: nothing more will complete it."""
        pending = self._partial[job_id]
        if pending:
            self._out.write(self._prefixes[job_id] + bytes(pending) + b"\n")
            self._out.flush()
            pending.clear()


class _JsonWriter:
    """`-o json`: every job's lines as JSON objects (_json_lines), whole lines only."""

    def __init__(self, targets: Sequence[Target], out: IO[bytes]) -> None:
        from tailhub.client._json_lines import JsonLines

        self._jobs = {
            t.job_id: JsonLines(out, t.job_id, t.name) for t in targets if t.job_id is not None
        }

    def take(self, job_id: int, item: LogChunk | LogEvent | LogTimeMark) -> None:
        if isinstance(item, LogEvent):
            note(f"job {job_id}: {item.message}")
        elif isinstance(item, LogTimeMark):
            self._jobs[job_id].mark(item.offset, item.time)
        else:
            self._jobs[job_id].write(item.offset, item.data)

    def end(self, job_id: int) -> None:
        self._jobs[job_id].finish()


class _NoOutput:
    """`jobs wait`: the streams are followed to their ends, nothing of them is said."""

    def take(self, job_id: int, item: LogChunk | LogEvent | LogTimeMark) -> None:
        pass

    def end(self, job_id: int) -> None:
        pass


def follow_jobs(
    client: Client,
    targets: Sequence[Target],
    *,
    follow: bool = True,
    tail: int | None = None,
    output: bool = True,
    prefix: bool = True,
    colour: bool = False,
    grep: tuple[str, ...] = (),
    exclude: tuple[str, ...] = (),
    as_json: bool = False,
) -> list[Outcome]:
    """Follows every target to its end; with `output`, their lines go to stdout (only those
    `grep`/`exclude` select; as JSON objects with `as_json`).

    Reports each failure on stderr as it happens; returns every target's outcome.
    """
    items: queue.Queue[tuple[int, LogItem | Exception]] = queue.Queue(_QUEUE_ITEMS)
    outcomes = [Outcome(t, exit_codes.NOT_FOUND) for t in targets if t.job_id is None]
    # Said at once, not only in the summary when every other job has ended: a mistyped id or
    # name is what the user wants to hear about first.
    for outcome in outcomes:
        note(f"no job named {outcome.target.name!r}")
    running = _start_pumps(client, targets, items, _Stream(follow, tail, grep, exclude, as_json))
    writer: _Writer | _JsonWriter | _NoOutput = _NoOutput()
    if output:
        out = sys.stdout.buffer
        writer = _JsonWriter(targets, out) if as_json else _Writer(targets, out, prefix, colour)
    while running:
        try:
            job_id, item = items.get(timeout=_WAKE_SECONDS)
        except queue.Empty:
            continue
        ended = _take(running[job_id], item, writer)
        if ended is not None:
            outcomes.append(ended)
            del running[job_id]
    return outcomes


@dataclass(frozen=True)
class _Stream:
    """What each job's stream asks for."""

    follow: bool
    tail: int | None
    grep: tuple[str, ...]
    exclude: tuple[str, ...]
    timestamps: bool


def _start_pumps(
    client: Client,
    targets: Sequence[Target],
    items: queue.Queue[tuple[int, LogItem | Exception]],
    stream: _Stream,
) -> dict[int, Target]:
    """A thread per job found (once each, however often it was named); the jobs, by id."""
    running: dict[int, Target] = {}
    for target in targets:
        if target.job_id is None or target.job_id in running:
            continue
        running[target.job_id] = target
        thread = threading.Thread(
            target=_pump,
            args=(client, target, items, stream),
            name=f"follow-{target.job_id}",
            daemon=True,  # Ctrl-C must not wait for streams that never end
        )
        thread.start()
    return running


def _take(
    target: Target, item: LogItem | Exception, writer: _Writer | _JsonWriter | _NoOutput
) -> Outcome | None:
    """Hands one item of a job's stream on; the job's outcome once its stream is over."""
    assert target.job_id is not None
    if isinstance(item, LogChunk | LogEvent | LogTimeMark):
        writer.take(target.job_id, item)
    elif isinstance(item, LogEnd):
        writer.end(target.job_id)
        result = end_result(item)
        if result == exit_codes.FAILED:
            why = f": {item.reason}" if item.reason else ""
            note(f"{job_label(target.job_id, target.name)} failed{why}")
        return Outcome(target, result)
    elif isinstance(item, JobNotFoundError):
        note(f"job {target.job_id} not found")
        return Outcome(target, exit_codes.NOT_FOUND)
    elif isinstance(item, Exception):
        raise item
    return None


def _pump(
    client: Client,
    target: Target,
    items: queue.Queue[tuple[int, LogItem | Exception]],
    stream: _Stream,
) -> None:
    """One job's stream into the shared queue; its error too, for the writer to raise."""
    assert target.job_id is not None
    try:
        for item in client.follow(
            target.job_id,
            offset=target.offset,
            tail_lines=stream.tail,
            follow=stream.follow,
            grep=stream.grep,
            exclude=stream.exclude,
            timestamps=stream.timestamps,
        ):
            items.put((target.job_id, item))
    except Exception as error:  # handed to the main thread, which says it in one line
        items.put((target.job_id, error))
