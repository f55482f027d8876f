"""`tailhub jobs launch`: run a task file here or with SkyPilot, follow it, exit with its result."""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TypedDict

import click

from tailhub.client import exit_codes
from tailhub.client._cli_common import connect, home_flag, home_option, remote_targets, state_paths
from tailhub.client._names import checked_name
from tailhub.client._output import copy_log, job_label, note, result_exit_code
from tailhub.client._pending import PendingStatus
from tailhub.daemon.credentials import without_credentials


@click.command("launch")
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
@click.option(
    "--launch-key",
    metavar="KEY",
    help="The launch's key (16-64 characters of A-Z a-z 0-9 _ -; default: a random one). "
    "Launched again with the key of a launch that gave up waiting for its daemon, it follows "
    "the job that launch made, if it made one, instead of launching it twice.",
)
def jobs_launch(
    home: str | None,
    task_file: Path,
    detach: bool,
    name: str | None,
    envs: tuple[str, ...],
    backend: str | None,
    launch_key: str | None,
) -> None:
    """Run TASK_FILE (locally or with SkyPilot); follow its log and exit with its result."""
    from tailhub.client._tasks import load_task, parse_env_overrides, read_task_text, task_name

    chosen = _backend(home, backend)
    overrides = parse_env_overrides(envs)
    if chosen == "skypilot":
        task_yaml = read_task_text(task_file)
        sky_name = name or task_name(task_file, task_yaml)
    else:
        task = load_task(task_file).with_overrides(name, overrides)
        for warning in task.warnings:
            note(f"warning: {warning}")
    # One key per invocation: however often the call is made again (a slow daemon), one job.
    patience = _launch_patience(launch_key)
    with connect(home) as client:
        if chosen == "skypilot":
            job = client.launch(
                "",
                name=sky_name,
                # SkyPilot takes the file whole (resources, file_mounts...); `sky` runs in its
                # directory, so that relative paths in it resolve as they would there.
                workdir=str(task_file.resolve().parent),
                envs=overrides,
                # `sky` needs this shell's credentials and PATH.
                environment=without_credentials(os.environ),
                backend="skypilot",
                task_yaml=task_yaml,
                **patience,
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
                **patience,
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


class _Patience(TypedDict):
    launch_key: str
    call_timeout: float
    patience: float
    on_slow: Callable[[str], None]


def _launch_patience(key: str | None) -> _Patience:
    """The launch's key (--launch-key, else a random one) and how long it waits for its
    daemon: the seconds of one call ($TAILHUB_CALL_TIMEOUT) and of all the calls made again
    with the key ($TAILHUB_LAUNCH_PATIENCE)."""
    import secrets

    from tailhub.client._patience import CALL_TIMEOUT, LAUNCH_PATIENCE, seconds
    from tailhub.daemon.domain import LAUNCH_KEY_PATTERN

    if key is not None and LAUNCH_KEY_PATTERN.fullmatch(key) is None:
        raise click.UsageError("--launch-key: 16-64 characters of A-Z a-z 0-9 _ -")
    try:
        call_timeout = seconds("TAILHUB_CALL_TIMEOUT", CALL_TIMEOUT)
        patience = seconds("TAILHUB_LAUNCH_PATIENCE", LAUNCH_PATIENCE)
    except ValueError as error:
        raise click.UsageError(str(error)) from None
    return _Patience(
        launch_key=key or secrets.token_hex(16),
        call_timeout=call_timeout,
        patience=patience,
        on_slow=note,
    )
