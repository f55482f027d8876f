"""Jobs named on the command line: an id (digits), a unique job name, or none (the latest).

Resolved on the client from `ListJobs`: the daemon knows jobs by id only. Digits always mean
an id, so a job whose name is all digits can only be named by its id.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any

import click

from tailhub.client import exit_codes
from tailhub.client._errors import JobNotFoundError, TailhubError
from tailhub.client._output import printable

if TYPE_CHECKING:
    from tailhub.client import Client, JobInfo

# The largest job id (SQLite row ids are signed 64-bit).
MAX_JOB_ID = 2**63 - 1
# Digits, with a sign so that `-3` is refused as an id out of range rather than looked up.
_ID = re.compile(r"[+-]?[0-9]+")


class AmbiguousJobName(TailhubError):
    """A name given where one job is meant matches several: the user must pick an id."""

    exit_code = exit_codes.USAGE


class JobRef(click.ParamType):  # type: ignore[type-arg]
    """A job id (digits), or a job's name: resolved against the daemon's jobs once connected."""

    name = "JOB"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> str:
        try:
            return check_job_ref(str(value))
        except ValueError as error:
            self.fail(str(error), param, ctx)

    def shell_complete(
        self, ctx: click.Context, param: click.Parameter, incomplete: str
    ) -> list[click.shell_completion.CompletionItem]:
        from click.shell_completion import CompletionItem

        home = ctx.params.get("home") or ctx.find_root().params.get("home")
        return [CompletionItem(value, help=text) for value, text in complete_jobs(home, incomplete)]


# Job ids (or names) as the command line takes them.
JOB_REF = JobRef()


def checked_name(_ctx: click.Context, _param: click.Parameter, name: str | None) -> str | None:
    """A new job's --name, checked as the daemon would (bad usage: exit 2, nothing sent)."""
    from tailhub.daemon.limits import MAX_NAME_BYTES

    size = len((name or "").encode("utf-8", "surrogatepass"))
    if size > MAX_NAME_BYTES:
        raise click.BadParameter(f"it is {size} bytes; at most {MAX_NAME_BYTES} are allowed")
    return name


def is_job_id(ref: str) -> bool:
    """True when `ref` is written as a job id (digits), whatever job names exist."""
    return _ID.fullmatch(ref) is not None


def check_job_ref(ref: str) -> str:
    """`ref` when it can name a job; ValueError for an id out of range or an empty name."""
    if is_job_id(ref) and not 1 <= int(ref) <= MAX_JOB_ID:
        raise ValueError(f"{ref} is not in the range 1<=x<={MAX_JOB_ID}")
    if not ref:
        raise ValueError("a job id or name cannot be empty")
    return ref


def resolve_jobs(client: Client, refs: Sequence[str]) -> list[int]:
    """The job ids `refs` name, in order; lists the jobs only when a name is among them.

    An id is passed through as given (the daemon says whether it exists); a name must match
    exactly one job: JobNotFoundError (exit 102) when none, AmbiguousJobName (exit 2) when more.
    """
    if all(is_job_id(ref) for ref in refs):
        return [int(ref) for ref in refs]
    by_name = jobs_by_name(client.list())
    return [int(ref) if is_job_id(ref) else one_named(by_name, ref) for ref in refs]


def latest_job(client: Client) -> int:
    """The id of the newest job; JobNotFoundError when there is none."""
    page = client.list_page(1)
    if not page.jobs:
        raise JobNotFoundError("no job yet: launch or attach one first")
    return page.jobs[0].id


def jobs_by_name(listed: Iterable[JobInfo]) -> dict[str, list[int]]:
    """Job ids by name, for resolving many names against one listing."""
    by_name: dict[str, list[int]] = {}
    for job in listed:
        by_name.setdefault(job.name, []).append(job.id)
    return by_name


def one_named(by_name: dict[str, list[int]], name: str) -> int:
    """The one job called `name`; JobNotFoundError (none) or AmbiguousJobName (several)."""
    ids = sorted(by_name.get(name, []))
    if not ids:
        # Quoted short: a name can be anything the user typed, up to the argument limit.
        shown = name if len(name) <= 80 else name[:80] + "..."
        raise JobNotFoundError(f"no job named {shown!r}")
    if len(ids) > 1:
        shown = ", ".join(str(job_id) for job_id in ids[:20])
        more = f" and {len(ids) - 20} more" if len(ids) > 20 else ""
        raise AmbiguousJobName(
            f"{len(ids)} jobs are named {name!r} ({shown}{more}): give an id instead"
        )
    return ids[0]


def complete_jobs(home: str | None, incomplete: str) -> list[tuple[str, str]]:
    """(value, help) pairs for shell completion: ids and names of the daemon's jobs.

    Never starts a daemon and never fails: any error completes nothing, at once.
    """
    try:
        from tailhub.client import Client, resolve_paths
        from tailhub.client._daemon import is_listening

        paths = resolve_paths(home)
        if not is_listening(paths):
            return []
        with Client.connect(paths, autostart=False) as client:
            listed = client.list(limit=_COMPLETION_JOBS)
    except Exception:  # completion must never print a traceback into the user's shell
        return []
    found: dict[str, str] = {}
    for job in listed:
        # The shell prints the help text as it is: a name's control characters escaped.
        found.setdefault(str(job.id), printable(f"{job.name} {job.state.value}".strip()))
        # A name with control characters is not offered: typed back, it would not be the name.
        if job.name and not is_job_id(job.name) and job.name.isprintable():
            found.setdefault(job.name, f"job {job.id} {job.state.value}")
    return [(value, help) for value, help in found.items() if value.startswith(incomplete)]


# Completion offers the newest jobs only: it must answer before the user notices a pause.
_COMPLETION_JOBS = 500
