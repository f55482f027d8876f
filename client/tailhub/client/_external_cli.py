"""`tailhub jobs attach|publish|finish`: jobs whose bytes come from elsewhere (a file, a
command's output, a producer that pushes them), registered, fed and ended from here."""

from __future__ import annotations

import io
import os
import shlex
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, cast

import click

from tailhub.client._cli_common import connect, home_option
from tailhub.client._names import JOB_REF, MAX_JOB_ID, checked_name, resolve_jobs
from tailhub.client._output import note

if TYPE_CHECKING:  # importing the client pulls in grpc, which `--help` does not need
    from tailhub.client import Client

# A number given by someone else (SkyPilot's managed job id), never a name.
JOB_ID = click.IntRange(1, MAX_JOB_ID)
EXIT_CODE = click.IntRange(0, 255)
# How long `jobs publish` waits for a daemon that went away, and how often it retries.
_PUBLISH_RETRY_SECONDS = 60.0
_PUBLISH_RETRY_PAUSE = 0.2


@click.command("attach")
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
    _check_source_flags(file_path, command, push, managed_job_id)
    if (shell or transport_codes or stderr_mode != "merge") and command is None:
        raise click.UsageError("--shell, --transport-exit-code and --stderr go with --command")
    argv = _command_argv(command, shell) if command is not None else []
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


def _check_source_flags(
    file_path: Path | None, command: str | None, push: bool, managed_job_id: int | None
) -> None:
    """Exactly one source, and a --command that says something (bad usage, exit 2)."""
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


def _command_argv(command: str, shell: bool) -> list[str]:
    """--command as the argv to run: split as a shell would, or whole for /bin/sh -c."""
    try:
        return [command] if shell else shlex.split(command)
    except ValueError as error:
        raise click.UsageError(f"--command: {error}") from None


@click.command("publish")
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


@click.command("finish")
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
