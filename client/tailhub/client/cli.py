"""`tailhub`: the command line. A thin layer: flags in, client library calls, one-line errors
and documented exit codes out (see exit_codes.py). Never a traceback."""

from __future__ import annotations

import io
import os
import shlex
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import click

from tailhub.client import exit_codes
from tailhub.client._cli_common import (
    HOME_HELP,
    connect,
    home_flag,
    home_option,
    remote_targets,
    state_paths,
)
from tailhub.client._daemon_cli import daemon
from tailhub.client._doctor_cli import doctor
from tailhub.client._errors import TailhubError
from tailhub.client._names import MAX_JOB_ID, JobRef, checked_name, latest_job, resolve_jobs
from tailhub.client._output import (
    copy_log,
    job_label,
    note,
    result_exit_code,
    size_text,
)
from tailhub.client._pending import PendingStatus
from tailhub.client._tokens_cli import token
from tailhub.client._types import JobState
from tailhub.daemon.credentials import without_credentials

# How long `jobs publish` waits for a daemon that went away, and how often it retries.
_PUBLISH_RETRY_SECONDS = 60.0
_PUBLISH_RETRY_PAUSE = 0.2

if TYPE_CHECKING:  # importing the client pulls in grpc, which `--help` does not need
    from tailhub.client import Client


# Job ids (or names) and exit codes as the command line takes them.
JOB_REF = JobRef()
# A number given by someone else (SkyPilot's managed job id), never a name.
JOB_ID = click.IntRange(1, MAX_JOB_ID)
EXIT_CODE = click.IntRange(0, 255)
MAX_TAIL_LINES = 10**9
# `jobs queue` without --all shows this many, the newest.
QUEUE_DEFAULT_COUNT = 50


class _Commands(click.Group):
    """The top group: a reader that went away (`| head`) ends the command quietly, with 0.

    Caught here because click's own handler would turn it into exit code 1.
    """

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except BrokenPipeError:
            _drop_stdout()
            sys.exit(exit_codes.SUCCEEDED)


@click.group(
    cls=_Commands,
    context_settings={"help_option_names": ["-h", "--help"]},
    # --version needs --home and --server first (an eager option would run before them).
    invoke_without_command=True,
    no_args_is_help=True,
    subcommand_metavar="COMMAND [ARGS]...",
)
@click.option(
    "--version",
    "show_version",
    is_flag=True,
    help="Show this CLI's version, and the daemon's and its API's if one answers "
    "(never starts one).",
)
@click.option("--home", metavar="DIR", help=HOME_HELP)
@click.option(
    "--server",
    metavar="HOST:PORT,...",
    envvar="TAILHUB_SERVER",
    help="A daemon's --listen address, or a cluster's daemons in order of preference "
    "(default: this machine's socket). Env TAILHUB_SERVER.",
)
@click.option(
    "--token-file", metavar="FILE", help="Token for --server (default: $TAILHUB_TOKEN itself)."
)
@click.option(
    "--ca-file", metavar="PEM", help="CA that signed --server's certificate (env TAILHUB_CA)."
)
@click.option("--client-cert", metavar="PEM", help="Client certificate, for mutual TLS.")
@click.option("--client-key", metavar="PEM", help="Its private key.")
@click.option("--insecure", is_flag=True, help="--server speaks plaintext (loopback only).")
def cli(show_version: bool, home: str | None, **remote: Any) -> None:
    """One log fetch per job, fanned out to every follower.

    Exit codes of commands that report a job's result: 0 succeeded, 100 failed,
    101 not finished, 102 not found, 103 cancelled, 104 no daemon answered, 105 token
    refused, 106 TLS failed, 2 bad usage. Something wrong? `tailhub doctor`.
    """
    ctx = click.get_current_context()
    if show_version:
        from tailhub.client._version import print_versions

        print_versions(home)
        ctx.exit(exit_codes.SUCCEEDED)
    if ctx.invoked_subcommand is None:
        raise click.UsageError("Missing command.")


cli.add_command(daemon)
cli.add_command(token)
cli.add_command(doctor)


# -- jobs -------------------------------------------------------------------------------------
@cli.group()
def jobs() -> None:
    """Launch, attach, follow, finish, cancel and remove jobs."""


@jobs.command("launch")
@home_option
@click.argument("task_file", type=click.Path(path_type=Path))
@click.option("--async", "detach", is_flag=True, help="Print the job id and return at once.")
@click.option("--name", "-n", callback=checked_name, help="Job name (overrides the task file's).")
@click.option(
    "--env", "envs", multiple=True, metavar="KEY=VALUE", help="Set a variable (repeatable)."
)
@click.option(
    "--backend",
    type=click.Choice(["local", "skypilot"]),
    help="Where the task runs: this machine, or SkyPilot managed jobs (`sky jobs launch`). "
    "Default: $TAILHUB_BACKEND, else the daemon's config.yaml, else local.",
)
def jobs_launch(
    home: str | None,
    task_file: Path,
    detach: bool,
    name: str | None,
    envs: tuple[str, ...],
    backend: str | None,
) -> None:
    """Run TASK_FILE (locally or with SkyPilot); follow its log and exit with its result."""
    from tailhub.client._tasks import load_task, parse_env_overrides

    chosen = _backend(home, backend)
    overrides = parse_env_overrides(envs)
    if chosen == "skypilot":
        task_yaml = _read_task_text(task_file)
    else:
        task = load_task(task_file).with_overrides(name, overrides)
        for warning in task.warnings:
            note(f"warning: {warning}")
    with connect(home) as client:
        if chosen == "skypilot":
            job = client.launch(
                "",
                name=name or _task_name(task_yaml),
                # SkyPilot takes the file whole (resources, file_mounts...); `sky` runs in its
                # directory, so that relative paths in it resolve as they would there.
                workdir=str(task_file.resolve().parent),
                envs=overrides,
                # `sky` needs this shell's credentials and PATH.
                environment=without_credentials(os.environ),
                backend="skypilot",
                task_yaml=task_yaml,
            )
        else:
            job = client.launch(
                task.run,
                name=task.name,
                setup=task.setup,
                # Without a workdir the job runs where it was launched from, as a script would.
                workdir=task.workdir or os.getcwd(),
                envs=task.envs,
                # The job runs in this shell's environment, not the daemon's (started by anyone).
                environment=without_credentials(os.environ),
                backend=chosen,
            )
        if detach:
            click.echo(job.id)
            return
        note(f"job {job.id} submitted; following its log (Ctrl-C stops following, not the job)")
        pending = PendingStatus(client, job.id)
        try:
            pending.update(job.state)
            again = f"tailhub jobs logs{home_flag(home)} -f {job.id}"
            end = copy_log(client, job.id, follow=True, tail=None, pending=pending, again=again)
        except KeyboardInterrupt:
            flag = home_flag(home)
            note(
                f"stopped following job {job.id}; it goes on. Follow again: "
                f"tailhub jobs logs{flag} {job.id}; cancel it: tailhub jobs cancel{flag} {job.id}"
            )
            sys.exit(exit_codes.INTERRUPTED)
        finally:
            pending.clear()
    sys.exit(result_exit_code(end, job_label(job.id, job.name)))


def _backend(home: str | None, given: str | None) -> str:
    """--backend, else $TAILHUB_BACKEND, else the state directory's config.yaml, else local."""
    from tailhub.daemon.config_file import read_config_file

    chosen = given or os.environ.get("TAILHUB_BACKEND", "")
    if chosen and chosen not in ("local", "skypilot"):
        raise click.UsageError(f"TAILHUB_BACKEND={chosen!r}: local or skypilot")
    if chosen:
        return chosen
    if remote_targets() is not None:
        return ""  # the remote daemon's own default
    try:
        return read_config_file(state_paths(home)).backend or "local"
    except ValueError as error:
        raise click.UsageError(str(error)) from None


def _read_task_text(task_file: Path) -> str:
    from tailhub.client._tasks import TaskFileError

    try:
        return task_file.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise TaskFileError(f"{task_file}: no such task file") from None
    except (OSError, UnicodeDecodeError) as error:
        raise TaskFileError(f"{task_file}: cannot read it: {error}") from None


def _task_name(task_yaml: str) -> str:
    """The task's `name`, if the file says one (SkyPilot checks the rest itself)."""
    import yaml

    try:
        document = yaml.safe_load(task_yaml)
    except yaml.YAMLError:
        return ""
    name = document.get("name") if isinstance(document, dict) else None
    return name if isinstance(name, str) else ""


@jobs.command("attach")
@home_option
@click.option(
    "--file", "file_path", type=click.Path(path_type=Path), help="Follow this file (like tail -F)."
)
@click.option(
    "--command", "command", metavar="'CMD ...'", help="Run this command; its output is the log."
)
@click.option(
    "--push", is_flag=True, help="Bytes arrive through `tailhub jobs publish` or the API."
)
@click.option(
    "--skypilot",
    "managed_job_id",
    type=JOB_ID,
    metavar="ID",
    help="Follow this SkyPilot managed job (launched elsewhere) with one `sky jobs logs`.",
)
@click.option("--name", "-n", default="", callback=checked_name, help="Job name.")
@click.option(
    "--shell", is_flag=True, help="Run --command with /bin/sh -c instead of splitting it."
)
@click.option(
    "--transport-exit-code",
    "transport_codes",
    type=EXIT_CODE,
    multiple=True,
    help="Exit code of --command that means a broken connection, to reconnect on (default 255).",
)
@click.option(
    "--stderr",
    "stderr_mode",
    type=click.Choice(["merge", "events"]),
    default="merge",
    show_default=True,
    help="--command's stderr: merged into the log, or each line reported as an event "
    "(keeps ssh's own messages out of the log).",
)
def jobs_attach(
    home: str | None,
    file_path: Path | None,
    command: str | None,
    push: bool,
    managed_job_id: int | None,
    name: str,
    shell: bool,
    transport_codes: tuple[int, ...],
    stderr_mode: str,
) -> None:
    """Register an external job and print its id."""
    if command is not None and not command.strip():
        raise click.UsageError("--command is empty: give the command whose output is the log")
    chosen = [
        flag
        for flag, value in (
            ("--file", file_path),
            ("--command", command),
            ("--push", push),
            ("--skypilot", managed_job_id),
        )
        if value
    ]
    if len(chosen) != 1:
        raise click.UsageError("give exactly one of --file, --command, --push or --skypilot")
    if (shell or transport_codes or stderr_mode != "merge") and command is None:
        raise click.UsageError("--shell, --transport-exit-code and --stderr go with --command")
    argv: list[str] = []
    if command is not None:
        try:
            argv = [command] if shell else shlex.split(command)
        except ValueError as error:
            raise click.UsageError(f"--command: {error}") from None
    with connect(home) as client:
        if file_path is not None:
            job = client.attach_file(os.path.abspath(file_path), name)
        elif command is not None:
            job = client.attach_command(
                argv,
                name=name,
                shell=shell,
                transport_exit_codes=transport_codes,
                stderr_events=stderr_mode == "events",
            )
        elif managed_job_id is not None:
            job = client.attach_skypilot(managed_job_id, name)
        else:
            job = client.attach_push(name)
    click.echo(job.id)


@jobs.command("publish")
@home_option
@click.argument("job", type=JOB_REF)
def jobs_publish(home: str | None, job: str) -> None:
    """Append standard input to a push job's log, as it arrives.

    Each chunk is sent with the offset it must land at, so a chunk is retried after a daemon
    restart or a full disk without being lost or stored twice. One producer per job.
    """
    stdin = cast("io.BufferedReader", sys.stdin.buffer)
    with connect(home) as client:
        [job_id] = resolve_jobs(client, [job])
        # Nothing yet: the daemon checks the job takes bytes, so a wrong id fails now, not
        # after the producer is done, and not silently when it sends nothing.
        offset = client.publish(job_id, b"")
        while data := stdin.read1(1024 * 1024):
            _publish_retrying(client, job_id, data, offset)
            offset += len(data)


def _publish_retrying(client: Client, job_id: int, data: bytes, offset: int) -> None:
    """Publishes one chunk at `offset`, again and again while the daemon is away (up to a
    minute) or its disk is full (until there is room)."""
    from tailhub.client._errors import DaemonUnreachable, DiskFullError

    unreachable_since: float | None = None
    told = ""
    while True:
        try:
            client.publish(job_id, data, expected_offset=offset)
            return
        except (DaemonUnreachable, DiskFullError) as error:
            now = time.monotonic()
            if isinstance(error, DaemonUnreachable):
                unreachable_since = unreachable_since or now
                if now - unreachable_since > _PUBLISH_RETRY_SECONDS:
                    raise
            if told != type(error).__name__:
                told = type(error).__name__
                note(f"{error}; retrying at offset {offset}")
            time.sleep(_PUBLISH_RETRY_PAUSE)


@jobs.command("finish")
@home_option
@click.argument("job", type=JOB_REF)
@click.option(
    "--exit-code",
    type=EXIT_CODE,
    default=0,
    show_default=True,
    help="0 succeeds, anything else (up to 255) fails.",
)
def jobs_finish(home: str | None, job: str, exit_code: int) -> None:
    """End a file or push job; its followers get the rest of the log, then the result."""
    with connect(home) as client:
        [job_id] = resolve_jobs(client, [job])
        ended = client.finish(job_id, exit_code)
    note(f"job {ended.id} {ended.state.value}")


@jobs.command("cancel")
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
            count = sum(1 for job in client.list() if not job.state.terminal)
            if count and not click.confirm(
                f"Cancel all {count} unfinished job{'' if count == 1 else 's'}?", err=True
            ):
                note("nothing cancelled")
                sys.exit(exit_codes.ERROR)
        result = client.cancel_jobs(job_ids, everything=everything)
    lines: dict[int, str] = {}
    for job in result.cancelled:
        # A backend that cancels asynchronously (SkyPilot) answers before the job has ended.
        ending = "" if job.state.terminal else f" ({job.reason or 'cancel requested'})"
        lines[job.id] = f"job {job.id}: {job.state.value}{ending}"
    for job in result.already_ended:
        lines[job.id] = f"job {job.id} had already ended ({job.state.value}); left as it was"
    for job_id in result.unknown_job_ids:
        lines[job_id] = f"job {job_id} not found"
    if not lines:
        note("no job to cancel")
    for job_id in sorted(lines):
        note(lines[job_id])
    if result.unknown_job_ids:
        sys.exit(exit_codes.NOT_FOUND)


@jobs.command("rm")
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


@jobs.command("prune")
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


@jobs.command("logs")
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
) -> None:
    """Write a job's log, byte for byte, to stdout; exit with the job's result.

    JOBS are ids or names (none: the latest job). With several, --all or --name, whole lines
    of each, prefixed, then a summary on stderr; the exit code is the worst result."""
    from tailhub.client._timestamps import since_option

    since_time = since_option(since, tail)
    many = len(jobs) > 1 or unfinished or glob is not None or bool(prefix)
    if many and (since_time is not None or timestamps):
        raise click.UsageError("--since and --timestamps follow one job")
    with connect(home) as client:
        if many:
            _follow_many(client, jobs, unfinished, glob, follow, tail, prefix is not False)
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
            )
        finally:
            pending.clear()
        failed = end.finished and end.state is JobState.FAILED
        code = result_exit_code(end, _label(client, job_id) if failed else "job")
    sys.exit(code)


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
) -> None:
    """`jobs logs` of several jobs: their lines, a summary, and the worst result (exits)."""
    from tailhub.client._multi import follow_jobs, report, select_targets

    targets = select_targets(client, refs, unfinished=unfinished, glob=glob)
    colour = sys.stdout.isatty()
    try:
        outcomes = follow_jobs(
            client, targets, follow=follow, tail=tail, prefix=prefix, colour=colour
        )
    except KeyboardInterrupt:
        note("stopped following; the jobs go on")
        sys.exit(exit_codes.INTERRUPTED)
    sys.exit(report(outcomes, unfinished, glob))


@jobs.command("wait")
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


@jobs.command("queue")
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


def main() -> None:
    """Entry point: the library's errors become one line on stderr and an exit code."""
    try:
        _run()
    finally:
        # Output still buffered goes now, where a closed pipe can be told apart.
        try:
            sys.stdout.flush()
        except BrokenPipeError:
            _drop_stdout()
        except ValueError:  # stdout already closed
            pass


def _run() -> None:
    from tailhub.client._errors import TailhubError

    try:
        # The same completion variable however it was started (`python -m tailhub.client`).
        cli.main(standalone_mode=False, complete_var="_TAILHUB_COMPLETE")
    except click.ClickException as error:
        error.show()
        sys.exit(error.exit_code)
    except click.exceptions.Abort:
        sys.exit(exit_codes.INTERRUPTED)
    except click.exceptions.Exit as done:
        sys.exit(done.exit_code)
    except TailhubError as error:
        note(str(error))
        sys.exit(error.exit_code)
    except BrokenPipeError:
        # The reader went away (`| head`): not an error worth a message.
        _drop_stdout()
        sys.exit(exit_codes.SUCCEEDED)
    except KeyboardInterrupt:
        sys.exit(exit_codes.INTERRUPTED)
    except OSError as error:
        note(f"{error.strerror or error}{f': {error.filename}' if error.filename else ''}")
        sys.exit(exit_codes.ERROR)


def _drop_stdout() -> None:
    """Points stdout at /dev/null, so that the flush at exit cannot fail on a closed pipe."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    os.close(devnull)
