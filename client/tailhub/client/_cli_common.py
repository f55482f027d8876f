"""What every `tailhub` command shares: the --home option, the state directory, and the
connection to the daemon (this machine's socket, or --server)."""

from __future__ import annotations

import shlex
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar, cast

import click

if TYPE_CHECKING:  # importing the client pulls in grpc, which `--help` does not need
    from tailhub.client import Client, StatePaths
    from tailhub.client._remote import Target

F = TypeVar("F", bound=Callable[..., Any])

HOME_HELP = "State directory of the daemon (default: $TAILHUB_HOME, else ~/.tailhub)."


def home_option(command: F) -> F:
    """--home on every command too, so it can go anywhere on the line."""
    # No envvar here: $TAILHUB_HOME is read by resolve_home, after a --home given before the
    # subcommand, so that a flag always wins over the environment.
    return click.option("--home", metavar="DIR", help=HOME_HELP)(command)


def given_home(home: str | None) -> str | None:
    """The --home of the command, else the one given before the subcommand."""
    if home is not None:
        return home
    root = click.get_current_context(silent=True)
    return None if root is None else cast("str | None", root.find_root().params.get("home"))


def state_paths(home: str | None) -> StatePaths:
    """The state directory's files, once it is known to be the user's alone (exit 1 if not)."""
    from tailhub.client import resolve_paths
    from tailhub.daemon.statedir import check_state_dir

    try:
        paths = resolve_paths(given_home(home))
    except ValueError as error:
        raise click.UsageError(str(error)) from None
    check_state_dir(paths.home)
    return paths


def home_flag(home: str | None) -> str:
    """` --home DIR` for a command line we suggest, when the user gave one."""
    given = given_home(home)
    return f" --home {shlex.quote(given)}" if given else ""


def connect(home: str | None, autostart: bool = True) -> Client:
    from tailhub.client import Client

    targets = remote_targets()
    if targets is not None:  # never auto-started: those daemons are on other machines
        return Client.connect_remote(targets)
    from tailhub.client._output import note

    return Client.connect(state_paths(home), autostart=autostart, on_wait=note)


def remote_targets() -> list[Target] | None:
    """The daemons `--server` (or $TAILHUB_SERVER) lists; None: this machine's socket."""
    from tailhub.client._remote import targets_of

    root = click.get_current_context(silent=True)
    if root is None:
        return None
    try:
        return targets_of(root.find_root().params)
    except ValueError as error:
        raise click.UsageError(str(error)) from None


def local_only(what: str) -> None:
    """Refuses --server for a command that acts on this machine's daemon."""
    root = click.get_current_context().find_root()
    if root.params.get("server"):
        raise click.UsageError(f"{what} acts on this machine's daemon: leave out --server")
