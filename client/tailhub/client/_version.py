"""Versions: this CLI's, and the daemon's and its API's when one answers on the selected home
(or --server). `tailhub --version` prints them; `tailhub doctor` judges them. Asking never
starts a daemon, and gives up quickly when none answers."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import click

from tailhub.client._cli_common import given_home, remote_targets
from tailhub.client._output import note, printable

if TYPE_CHECKING:
    from tailhub.client import DaemonStatus

# What a daemon that is there answers within: a status is one small read. A daemon that
# takes longer is reported as not answering, not waited for.
PROBE_TIMEOUT = 2.0


def cli_version() -> str:
    """The installed distribution's version; the source's when run from a checkout that was
    never installed. (One place: pyproject takes it from tailhub.daemon.__version__.)"""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("tailhub")
    except PackageNotFoundError:
        from tailhub.daemon import __version__

        return __version__


def api_version() -> str:
    """The API this CLI speaks: the protobuf package it was generated from."""
    from tailhub.v1 import tailhub_pb2 as pb

    return pb.DESCRIPTOR.package


@dataclass(frozen=True)
class DaemonProbe:
    """What asking the selected daemon found."""

    # The state directory, or the --server list.
    where: str
    remote: bool
    status: DaemonStatus | None = None
    # Nothing listens (on this machine's socket): not a fault, autostart starts one.
    not_running: bool = False
    # Why there is no status otherwise (an untrusted home, no answer in time, a refused token).
    problem: str = ""


def probe_daemon(home: str | None, timeout: float = PROBE_TIMEOUT) -> DaemonProbe:
    """Asks the daemon of `home` (or --server) for its status, never starting one."""
    from tailhub.client import Client, TailhubError
    from tailhub.client._daemon import is_listening
    from tailhub.daemon.errors import UntrustedState
    from tailhub.daemon.paths import resolve_home

    targets = remote_targets()
    if targets is not None:
        where = ", ".join(target.address for target in targets)
        try:
            with Client.connect_remote(targets, connect_timeout=timeout) as client:
                return DaemonProbe(where, True, status=client.status(timeout))
        except TailhubError as error:
            return DaemonProbe(where, True, problem=str(error))
    import os

    from tailhub.daemon.paths import StatePaths

    try:
        paths = StatePaths(resolve_home(given_home(home), os.environ))
    except ValueError as error:
        raise click.UsageError(str(error)) from None
    where = str(paths.home)
    if not is_listening(paths):
        return DaemonProbe(where, False, not_running=True)
    try:
        with Client.connect(paths, autostart=False) as client:
            return DaemonProbe(where, False, status=client.status(timeout))
    except (TailhubError, UntrustedState) as error:
        return DaemonProbe(where, False, problem=str(error))


def daemon_line(probe: DaemonProbe) -> str:
    """`0.2.0 on /home/u/.tailhub (pid 123), API tailhub.v1`, or why there is no daemon."""
    status = probe.status
    if status is None:
        if probe.not_running:
            return f"none running on {probe.where} (the next command that needs one starts it)"
        return f"no answer from {probe.where}: {probe.problem}"
    place = f"on {status.home}" if not probe.remote else f"at {probe.where}"
    api = status.api_version or "unknown (a daemon before 0.2.0)"
    return f"{status.version} {place} (pid {status.pid}), API {api}"


def mismatch(status: DaemonStatus) -> str | None:
    """What differs between this CLI and the daemon, in words; None when nothing does."""
    differences = []
    mine = cli_version()
    if status.version != mine:
        differences.append(f"the daemon runs {status.version}, this CLI is {mine}")
    if status.api_version != api_version():
        theirs = status.api_version or "unknown"
        differences.append(f"the daemon serves API {theirs}, this CLI speaks {api_version()}")
    return "; ".join(differences) or None


def restart_hint(probe: DaemonProbe, home: str | None) -> str:
    """How to bring the daemon to this CLI's version."""
    if probe.remote:
        return "upgrade or restart the daemon on its machine"
    from tailhub.client._cli_common import home_flag

    return f"restart it: tailhub daemon stop{home_flag(home)} (the next command starts this one)"


def print_versions(home: str | None) -> None:
    """`tailhub --version`: the CLI, then the daemon that answers (if one does)."""
    click.echo(f"tailhub {cli_version()} (API {api_version()})")
    probe = probe_daemon(home)
    separator = " " if probe.status is not None else ": "
    click.echo(f"tailhubd{separator}{printable(daemon_line(probe))}")
    if probe.status is not None:
        differs = mismatch(probe.status)
        if differs is not None:
            note(f"versions differ: {differs}; {restart_hint(probe, home)}")
