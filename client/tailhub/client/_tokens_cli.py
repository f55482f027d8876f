"""`tailhub token create|list|revoke`: the tokens of the network listeners (see tokens.py).

They edit the state directory's token store on this machine, with or without a daemon: a
running daemon sees a change at its next call."""

from __future__ import annotations

import datetime
import os
import stat
import sys
from pathlib import Path

import click

from tailhub.client import exit_codes
from tailhub.client._output import note, printable


def _home() -> str | None:
    root = click.get_current_context().find_root()
    if root.params.get("server"):
        raise click.UsageError(
            "tokens are kept on the daemon's machine: run `tailhub token ...` there, "
            "without --server"
        )
    home = click.get_current_context().params.get("home")
    return home if home is not None else root.params.get("home")


def _state_home() -> Path:
    from tailhub.client import resolve_paths
    from tailhub.daemon.statedir import check_state_dir

    try:
        paths = resolve_paths(_home())
    except ValueError as error:
        raise click.UsageError(str(error)) from None
    check_state_dir(paths.home)
    return paths.home


_HOME = click.option("--home", metavar="DIR", help="State directory of the daemon.")


@click.group("token")
def token() -> None:
    """Tokens for the daemon's --listen addresses (read, write or admin)."""


@token.command("create")
@_HOME
@click.option(
    "--role",
    type=click.Choice(["read", "write", "admin"]),
    required=True,
    help="read: follow and list; write: also push jobs; admin: everything.",
)
@click.option("--name", help="A name to list and revoke it by (default ROLE-N).")
@click.option(
    "--output",
    "-o",
    metavar="FILE",
    type=click.Path(dir_okay=False),
    help="Write the token to FILE, a new file only you can read (0600), instead of stdout.",
)
def token_create(home: str | None, role: str, name: str | None, output: str | None) -> None:
    """Make a token and print it (or write it to --output), once: only its hash is kept."""
    from tailhub.daemon.errors import TokenError
    from tailhub.daemon.tokens import Role, create_token

    if output is not None:
        # Made before the token, so that a file that cannot be written costs no token.
        fd = _new_private_file(output)
    try:
        secret, entry = create_token(_state_home(), Role[role.upper()], name)
    except TokenError as error:
        note(str(error))
        sys.exit(exit_codes.ERROR)
    if output is not None:
        with os.fdopen(fd, "w") as file:
            file.write(secret + "\n")
        where = f"written to {printable(output)} (0600)"
    else:
        click.echo(secret)
        where = "shown only this once"
        _warn_if_stdout_is_readable_by_others()
    note(f"token {entry.name!r} ({entry.role.label}) created; {where}")


def _new_private_file(path: str) -> int:
    """A new file only its owner can read; an existing one (or a link) is never overwritten."""
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
    try:
        return os.open(path, flags, 0o600)
    except FileExistsError:
        note(f"{printable(path)} exists: remove it first, or give another --output")
    except OSError as error:
        note(f"cannot write {printable(path)}: {error.strerror or error}")
    sys.exit(exit_codes.ERROR)


def _warn_if_stdout_is_readable_by_others() -> None:
    """`token create > file` under umask 022 leaves the token readable by every local user."""
    try:
        facts = os.fstat(sys.stdout.fileno())
    except (OSError, ValueError):
        return
    if stat.S_ISREG(facts.st_mode) and facts.st_mode & 0o077:
        note(
            f"warning: the file the token went to can be read by others "
            f"(mode {stat.S_IMODE(facts.st_mode):04o}): chmod 600 it, or use --output FILE"
        )


@token.command("list")
@_HOME
def token_list(home: str | None) -> None:
    """Name, role and creation time of each token (never the token)."""
    from tailhub.daemon.errors import TokenError
    from tailhub.daemon.tokens import read_tokens

    try:
        entries = read_tokens(_state_home())
    except TokenError as error:
        note(str(error))
        sys.exit(exit_codes.ERROR)
    if not entries:
        note("no tokens; make one with: tailhub token create --role read|write|admin")
        return
    click.echo(f"{'NAME':<24} {'ROLE':<6} CREATED")
    for entry in entries:
        created = datetime.datetime.fromtimestamp(entry.created, datetime.timezone.utc)
        click.echo(
            f"{printable(entry.name):<24} {entry.role.label:<6} "
            f"{created.strftime('%Y-%m-%dT%H:%M:%SZ')}"
        )


@token.command("revoke")
@_HOME
@click.argument("name")
def token_revoke(home: str | None, name: str) -> None:
    """Remove a token: calls with it are refused from now on (running streams go on)."""
    from tailhub.daemon.errors import TokenError
    from tailhub.daemon.tokens import revoke_token

    try:
        revoked = revoke_token(_state_home(), name)
    except TokenError as error:
        note(str(error))
        sys.exit(exit_codes.ERROR)
    if not revoked:
        note(f"no token named {printable(name)!r}")
        sys.exit(exit_codes.ERROR)
    note(f"token {printable(name)!r} revoked")
