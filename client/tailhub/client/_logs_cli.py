"""`tailhub jobs logs|wait`: follow one job's log byte for byte, or several jobs' lines, and
exit with the (worst) result."""

from __future__ import annotations

import sys
from dataclasses import dataclass
from typing import TYPE_CHECKING

import click

from tailhub.client import exit_codes
from tailhub.client._cli_common import connect, home_flag, home_option
from tailhub.client._errors import TailhubError
from tailhub.client._names import JOB_REF, latest_job, resolve_jobs
from tailhub.client._output import copy_log, job_label, note, result_exit_code
from tailhub.client._pending import PendingStatus
from tailhub.client._types import JobState

if TYPE_CHECKING:  # importing the client pulls in grpc, which `--help` does not need
    from tailhub.client import Client

MAX_TAIL_LINES = 10**9


@click.command("logs")
@home_option
@click.argument("jobs", type=JOB_REF, nargs=-1)
@click.option(
    "--follow/--no-follow",
    "-f",
    default=True,
    show_default=True,
    help="Keep streaming until the job ends.",
)
@click.option(
    "--tail",
    type=click.IntRange(0, MAX_TAIL_LINES),
    metavar="N",
    help="Start with the last N lines (of each job).",
)
@click.option("--all", "-a", "unfinished", is_flag=True, help="Every job that has not ended.")
@click.option("--name", "glob", metavar="GLOB", help="Every job whose name matches GLOB.")
@click.option(
    "--prefix/--no-prefix",
    default=None,
    help="Start each line with the job's name and id (default: when following several).",
)
@click.option(
    "--since",
    metavar="WHEN",
    help="Start with the lines that reached the daemon since then: 10m, 2h, 1d, or a time "
    "(2026-11-29T08:00:00Z; no offset: local time).",
)
@click.option(
    "--timestamps",
    is_flag=True,
    help="Start each line with when it reached the daemon (RFC 3339, UTC).",
)
@click.option(
    "--grep",
    "grep",
    metavar="RE",
    multiple=True,
    callback=lambda _, param, values: _utf8_patterns(param, values),
    help="Only the lines matching RE (RE2 syntax; repeat: any of them). Filtered in the daemon.",
)
@click.option(
    "--exclude",
    "exclude",
    metavar="RE",
    multiple=True,
    callback=lambda _, param, values: _utf8_patterns(param, values),
    help="Not the lines matching RE (RE2 syntax; repeatable).",
)
@click.option(
    "--output",
    "-o",
    type=click.Choice(["text", "json"]),
    default="text",
    show_default=True,
    help="json: one object per line (job, name, offset, time, line) for scripts.",
)
def jobs_logs(
    home: str | None,
    jobs: tuple[str, ...],
    follow: bool,
    tail: int | None,
    unfinished: bool,
    glob: str | None,
    prefix: bool | None,
    since: str | None,
    timestamps: bool,
    grep: tuple[str, ...],
    exclude: tuple[str, ...],
    output: str,
) -> None:
    """Write a job's log, byte for byte, to stdout; exit with the job's result.

    JOBS are ids or names (none: the latest job). With several, --all or --name, whole lines
    of each, prefixed, then a summary on stderr; the exit code is the worst result.

    --grep/--exclude keep whole lines, judged in the daemon, which sends only those; -o json
    writes one JSON object per line."""
    from tailhub.client._timestamps import since_option

    since_time = since_option(since, tail)
    many = len(jobs) > 1 or unfinished or glob is not None or bool(prefix)
    lines = _LineOptions(grep, exclude, output == "json")
    _check_usage(many, since_time, timestamps, lines)
    as_json = lines.as_json
    with connect(home) as client:
        if many:
            _follow_many(client, jobs, unfinished, glob, follow, tail, prefix is not False, lines)
        job_id = resolve_jobs(client, jobs)[0] if jobs else latest_job(client)
        pending = PendingStatus(client, job_id)
        if follow and pending.enabled:
            pending.update(client.get(job_id).state)
        try:
            end = copy_log(
                client,
                job_id,
                follow=follow,
                tail=tail,
                pending=pending,
                since_time=since_time,
                timestamps=timestamps,
                again=f"tailhub jobs logs{home_flag(home)} -f {job_id}" if follow else "",
                grep=grep,
                exclude=exclude,
                json_name=client.get(job_id).name if as_json else None,
            )
        finally:
            pending.clear()
        failed = end.finished and end.state is JobState.FAILED
        code = result_exit_code(end, _label(client, job_id) if failed else "job")
    sys.exit(code)


def _utf8_patterns(param: click.Parameter, values: tuple[str, ...]) -> tuple[str, ...]:
    """Patterns as given, each valid UTF-8 (an argument's invalid bytes arrive as lone
    surrogates, which the API's strings cannot carry)."""
    for value in values:
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            # (As Python writes bytes: control characters and the bad bytes as escapes.)
            shown_value = repr(value.encode("utf-8", "surrogateescape"))[2:-1]
            raise click.BadParameter(
                f"'{shown_value}' is not valid UTF-8 (patterns are UTF-8 text; match a byte "
                "as \\xNN)",
                param=param,
            ) from None
    return values


@dataclass(frozen=True)
class _LineOptions:
    """Which lines (`--grep`, `--exclude`) and how (`-o json`)."""

    grep: tuple[str, ...]
    exclude: tuple[str, ...]
    as_json: bool


def _check_usage(
    many: bool, since_time: float | None, timestamps: bool, lines: _LineOptions
) -> None:
    if many and (since_time is not None or timestamps):
        raise click.UsageError("--since and --timestamps follow one job")
    if lines.as_json and timestamps:
        raise click.UsageError("-o json gives each line its time already: drop --timestamps")


def _label(client: Client, job_id: int) -> str:
    """`job 17 (train)`: asked for only when a line must name the job."""
    try:
        return job_label(job_id, client.get(job_id).name)
    except TailhubError:
        return job_label(job_id, "")


def _follow_many(
    client: Client,
    refs: tuple[str, ...],
    unfinished: bool,
    glob: str | None,
    follow: bool,
    tail: int | None,
    prefix: bool,
    lines: _LineOptions,
) -> None:
    """`jobs logs` of several jobs: their lines, a summary, and the worst result (exits)."""
    from tailhub.client._multi import follow_jobs, report, select_targets

    targets = select_targets(client, refs, unfinished=unfinished, glob=glob)
    colour = sys.stdout.isatty()
    try:
        outcomes = follow_jobs(
            client,
            targets,
            follow=follow,
            tail=tail,
            prefix=prefix,
            colour=colour,
            grep=lines.grep,
            exclude=lines.exclude,
            as_json=lines.as_json,
        )
    except KeyboardInterrupt:
        note("stopped following; the jobs go on")
        sys.exit(exit_codes.INTERRUPTED)
    sys.exit(report(outcomes, unfinished, glob))


@click.command("wait")
@home_option
@click.argument("jobs", type=JOB_REF, nargs=-1)
@click.option("--all", "-a", "unfinished", is_flag=True, help="Every job that has not ended.")
@click.option("--name", "glob", metavar="GLOB", help="Every job whose name matches GLOB.")
def jobs_wait(home: str | None, jobs: tuple[str, ...], unfinished: bool, glob: str | None) -> None:
    """Wait for jobs (ids or names) to end: no log, a summary on stderr, the worst result."""
    if not jobs and not unfinished and glob is None:
        raise click.UsageError("name the jobs to wait for, or use --all or --name")
    from tailhub.client._multi import follow_jobs, report, select_targets

    with connect(home) as client:
        targets = select_targets(client, jobs, unfinished=unfinished, glob=glob, at_end=True)
        outcomes = follow_jobs(client, targets, output=False)
    sys.exit(report(outcomes, unfinished, glob))
