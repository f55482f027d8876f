"""`tailhub`: the command line. A thin layer: flags in, client library calls, one-line errors
and documented exit codes out (see exit_codes.py). Never a traceback."""

from __future__ import annotations

import io
import json
import os
import shlex
import sys
import time
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar, cast

import click

from tailhub.client import exit_codes
from tailhub.client._output import copy_log, job_json, note, print_jobs, result_exit_code

F = TypeVar("F", bound=Callable[..., Any])

# How long `jobs publish` waits for a daemon that went away, and how often it retries.
_PUBLISH_RETRY_SECONDS = 60.0
_PUBLISH_RETRY_PAUSE = 0.2

if TYPE_CHECKING:  # importing the client pulls in grpc, which `--help` does not need
    from tailhub.client import Client, StatePaths


def _home_option(command: F) -> F:
    """--home on every command, so it can go anywhere on the line."""
    return click.option(
        "--home",
        envvar="TAILHUB_HOME",
        metavar="DIR",
        help="State directory of the daemon (default: $TAILHUB_HOME, else ~/.tailhub).",
    )(command)


def _paths(home: str | None) -> StatePaths:
    from tailhub.client import resolve_paths

    return resolve_paths(home)


def _connect(home: str | None, autostart: bool = True) -> Client:
    from tailhub.client import Client

    return Client.connect(_paths(home), autostart=autostart)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="tailhub")
def cli() -> None:
    """One log fetch per job, fanned out to every follower.

    Exit codes of commands that report a job's result: 0 succeeded, 100 failed,
    101 not finished, 102 not found, 103 cancelled, 104 no daemon answered, 2 bad usage.
    """


# -- daemon -----------------------------------------------------------------------------------
@cli.group()
def daemon() -> None:
    """Start, stop and inspect the daemon (commands start it when needed)."""


@daemon.command("start")
@_home_option
@click.option(
    "--max-running-jobs", type=click.IntRange(min=1), help="Limit on local jobs running at once."
)
def daemon_start(home: str | None, max_running_jobs: int | None) -> None:
    """Start the daemon in the background; returns once it answers."""
    from tailhub.client._daemon import ensure_daemon

    paths = _paths(home)
    args = ["--max-running-jobs", str(max_running_jobs)] if max_running_jobs else []
    started = ensure_daemon(paths, args)
    with _connect(home, autostart=False) as client:
        status = client.status()
    verb = "started" if started else "already running"
    note(f"tailhubd {verb} (pid {status.pid}) on {paths.home}")


@daemon.command("stop")
@_home_option
def daemon_stop(home: str | None) -> None:
    """Stop the daemon. Running local jobs keep running; a new daemon adopts them."""
    from tailhub.client._daemon import stop_daemon

    paths = _paths(home)
    pid = stop_daemon(paths)
    note(f"tailhubd (pid {pid}) stopped" if pid else f"no tailhubd is running on {paths.home}")


@daemon.command("status")
@_home_option
@click.option("--json", "as_json", is_flag=True, help="Print JSON for scripts.")
def daemon_status(home: str | None, as_json: bool) -> None:
    """Jobs, subscribers, upstream connections and bytes served. Exit 104 if not running."""
    from tailhub.client import DaemonUnreachable
    from tailhub.client._daemon import is_listening

    paths = _paths(home)
    if not is_listening(paths):
        raise DaemonUnreachable(f"no tailhubd is running on {paths.home}")
    with _connect(home, autostart=False) as client:
        status = client.status()
    if as_json:
        click.echo(json.dumps(asdict(status), indent=2))
        return
    uptime = time.time() - status.started_at
    rows = [
        ("pid", status.pid),
        ("home", status.home),
        ("version", status.version),
        ("uptime", f"{uptime:.0f}s"),
        ("jobs", f"{status.jobs} ({status.running_jobs} not ended)"),
        ("subscribers", status.subscribers),
        ("upstream connections", status.upstream_connections),
        ("bytes served", status.bytes_served),
    ]
    for label, value in rows:
        click.echo(f"{label + ':':<22}{value}")


# -- jobs -------------------------------------------------------------------------------------
@cli.group()
def jobs() -> None:
    """Launch, attach, follow, finish and cancel jobs."""


@jobs.command("launch")
@_home_option
@click.argument("task_file", type=click.Path(path_type=Path))
@click.option("--async", "detach", is_flag=True, help="Print the job id and return at once.")
@click.option("--name", "-n", help="Job name (overrides the task file's).")
@click.option(
    "--env", "envs", multiple=True, metavar="KEY=VALUE", help="Set a variable (repeatable)."
)
def jobs_launch(
    home: str | None, task_file: Path, detach: bool, name: str | None, envs: tuple[str, ...]
) -> None:
    """Run TASK_FILE with the local runner; follow its log and exit with its result."""
    from tailhub.client._tasks import load_task, parse_env_overrides

    task = load_task(task_file).with_overrides(name, parse_env_overrides(envs))
    for warning in task.warnings:
        note(f"warning: {warning}")
    with _connect(home) as client:
        job = client.launch(
            task.run,
            name=task.name,
            setup=task.setup,
            # Without a workdir the job runs where it was launched from, as a script would.
            workdir=task.workdir or os.getcwd(),
            envs=task.envs,
        )
        if detach:
            click.echo(job.id)
            return
        note(f"job {job.id} submitted; following its log (Ctrl-C stops following, not the job)")
        try:
            end = copy_log(client, job.id, follow=True, tail=None)
        except KeyboardInterrupt:
            note(
                f"stopped following job {job.id}; it goes on. Follow again: "
                f"tailhub jobs logs {job.id}; cancel it: tailhub jobs cancel {job.id}"
            )
            sys.exit(exit_codes.INTERRUPTED)
    sys.exit(result_exit_code(end))


@jobs.command("attach")
@_home_option
@click.option(
    "--file", "file_path", type=click.Path(path_type=Path), help="Follow this file (like tail -F)."
)
@click.option(
    "--command", "command", metavar="'CMD ...'", help="Run this command; its output is the log."
)
@click.option(
    "--push", is_flag=True, help="Bytes arrive through `tailhub jobs publish` or the API."
)
@click.option("--name", "-n", default="", help="Job name.")
@click.option(
    "--shell", is_flag=True, help="Run --command with /bin/sh -c instead of splitting it."
)
@click.option(
    "--transport-exit-code",
    "transport_codes",
    type=int,
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
    name: str,
    shell: bool,
    transport_codes: tuple[int, ...],
    stderr_mode: str,
) -> None:
    """Register an external job and print its id."""
    chosen = [
        flag
        for flag, value in (("--file", file_path), ("--command", command), ("--push", push))
        if value
    ]
    if len(chosen) != 1:
        raise click.UsageError("give exactly one of --file, --command or --push")
    if (shell or transport_codes or stderr_mode != "merge") and command is None:
        raise click.UsageError("--shell, --transport-exit-code and --stderr go with --command")
    argv: list[str] = []
    if command is not None:
        try:
            argv = [command] if shell else shlex.split(command)
        except ValueError as error:
            raise click.UsageError(f"--command: {error}") from None
    with _connect(home) as client:
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
        else:
            job = client.attach_push(name)
    click.echo(job.id)


@jobs.command("publish")
@_home_option
@click.argument("job_id", type=int)
def jobs_publish(home: str | None, job_id: int) -> None:
    """Append standard input to a push job's log, as it arrives.

    Each chunk is sent with the offset it must land at, so a chunk is retried after a daemon
    restart or a full disk without being lost or stored twice. One producer per job.
    """
    stdin = cast("io.BufferedReader", sys.stdin.buffer)
    with _connect(home) as client:
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
@_home_option
@click.argument("job_id", type=int)
@click.option(
    "--exit-code", type=int, default=0, show_default=True, help="0 succeeds, anything else fails."
)
def jobs_finish(home: str | None, job_id: int, exit_code: int) -> None:
    """End a file or push job; its followers get the rest of the log, then the result."""
    with _connect(home) as client:
        job = client.finish(job_id, exit_code)
    note(f"job {job.id} {job.state.value}")


@jobs.command("cancel")
@_home_option
@click.argument("job_ids", type=int, nargs=-1)
@click.option("--all", "everything", is_flag=True, help="Cancel every job that has not ended.")
def jobs_cancel(home: str | None, job_ids: tuple[int, ...], everything: bool) -> None:
    """Cancel jobs: local ones get SIGTERM, then SIGKILL after a grace period."""
    if not job_ids and not everything:
        raise click.UsageError("name the jobs to cancel, or use --all")
    with _connect(home) as client:
        cancelled = client.cancel(job_ids, everything=everything)
    if not cancelled:
        note("no job to cancel")
    for job in cancelled:
        note(f"job {job.id}: {job.state.value}")


@jobs.command("logs")
@_home_option
@click.argument("job_id", type=int)
@click.option(
    "--follow/--no-follow",
    default=True,
    show_default=True,
    help="Keep streaming until the job ends.",
)
@click.option(
    "--tail", type=click.IntRange(min=0), metavar="N", help="Start with the last N lines."
)
def jobs_logs(home: str | None, job_id: int, follow: bool, tail: int | None) -> None:
    """Write a job's log, byte for byte, to stdout; exit with the job's result."""
    with _connect(home) as client:
        end = copy_log(client, job_id, follow=follow, tail=tail)
    sys.exit(result_exit_code(end))


@jobs.command("queue")
@_home_option
@click.option("--json", "as_json", is_flag=True, help="Print JSON for scripts.")
def jobs_queue(home: str | None, as_json: bool) -> None:
    """List jobs: id, name, state, source, log size, subscribers, upstream connections."""
    with _connect(home) as client:
        listed = client.list()
    if as_json:
        click.echo(json.dumps([job_json(job) for job in listed], indent=2))
        return
    print_jobs(listed)


def main() -> None:
    """Entry point: the library's errors become one line on stderr and an exit code."""
    from tailhub.client._errors import TailhubError

    try:
        cli.main(standalone_mode=False)
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
        sys.stderr.close()
        sys.exit(exit_codes.SUCCEEDED)
    except KeyboardInterrupt:
        sys.exit(exit_codes.INTERRUPTED)
    except OSError as error:
        note(f"{error.strerror or error}{f': {error.filename}' if error.filename else ''}")
        sys.exit(exit_codes.ERROR)
