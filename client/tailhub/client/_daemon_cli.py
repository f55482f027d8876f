"""`tailhub daemon start|stop|status|tls-init`: the daemon on this machine."""

from __future__ import annotations

import shlex
import sys
import time
from dataclasses import asdict
from typing import TYPE_CHECKING, Any

import click

from tailhub.client import exit_codes
from tailhub.client._cli_common import (
    connect,
    home_flag,
    home_option,
    local_only,
    remote_targets,
    state_paths,
)
from tailhub.client._output import note, printable, size_text

if TYPE_CHECKING:
    from tailhub.client._daemon_options import Previous
    from tailhub.client._errors import TailhubError
    from tailhub.daemon.paths import StatePaths


@click.group()
def daemon() -> None:
    """Start, stop and inspect the daemon (commands start it when needed)."""


def _checked_redis_url(
    _ctx: click.Context, _param: click.Parameter, value: str | None
) -> str | None:
    """A Redis URL the daemon would take, and no password in it (bad usage: exit 2): this
    command's argv, and the daemon's it would be passed on to, are anyone's to read."""
    from tailhub.daemon.config import check_redis_url
    from tailhub.daemon.started_with import ARGV_REFUSAL, redis_url_has_secret

    if value is None:
        return None
    if redis_url_has_secret(value):
        note(ARGV_REFUSAL)
        sys.exit(exit_codes.USAGE)
    try:
        check_redis_url(value)
    except ValueError as error:
        raise click.BadParameter(str(error)) from None
    return value


def _start_options(command: Any) -> Any:
    """The options of `daemon start` and `daemon restart`: tailhubd's, passed on."""
    options = [
        click.option(
            "--config",
            metavar="FILE",
            help="tailhubd's options from this YAML file (yours, mode 0600); flags win.",
        ),
        click.option(
            "--max-running-jobs",
            type=click.IntRange(min=1),
            help="Limit on local jobs running at once.",
        ),
        click.option("--listen", multiple=True, metavar="HOST:PORT", help="Also serve on TCP."),
        click.option(
            "--tls-cert", metavar="PEM", help="Certificate of --listen (tailhub daemon tls-init)."
        ),
        click.option("--tls-key", metavar="PEM", help="Its private key."),
        click.option(
            "--tls-client-ca", metavar="PEM", help="Require client certificates of this CA."
        ),
        click.option("--insecure", is_flag=True, help="No TLS on --listen (loopback only)."),
        click.option(
            "--max-streams", type=click.IntRange(min=1), help="Network log streams in all."
        ),
        click.option("--max-streams-per-token", type=click.IntRange(min=1), help="... per token."),
        click.option(
            "--max-connections-per-peer",
            type=click.IntRange(min=1),
            help="--listen connections one address may hold.",
        ),
        click.option(
            "--subscriber-budget",
            type=click.IntRange(min=64 * 1024),
            metavar="BYTES",
            help="Bytes in flight to all subscribers together.",
        ),
        click.option(
            "--metrics-listen",
            metavar="HOST:PORT",
            callback=lambda _ctx, _param, value: _checked_host_port(value),
            help="Serve Prometheus metrics at http://HOST:PORT/metrics (no authentication).",
        ),
        click.option(
            "--http-listen",
            metavar="HOST:PORT",
            callback=lambda _ctx, _param, value: _checked_host_port(value),
            help="Serve the read-only web view (`tailhub web` logs in); TLS unless loopback.",
        ),
        click.option(
            "--http-max-streams", type=click.IntRange(min=1), help="Web view streams in all."
        ),
        click.option(
            "--http-max-streams-per-session",
            type=click.IntRange(min=1),
            help="... per token's logins.",
        ),
        click.option(
            "--http-max-connections",
            type=click.IntRange(min=1),
            help="Web view connections open at once.",
        ),
        click.option(
            "--http-max-connections-per-peer",
            type=click.IntRange(min=1),
            help="... from one address.",
        ),
        click.option(
            "--redis",
            metavar="URL",
            callback=_checked_redis_url,
            help="Cluster mode: share jobs with the daemons on it (a password only through "
            "TAILHUB_REDIS or --config, never here).",
        ),
        click.option("--node-name", metavar="NAME", help="This daemon's name in the cluster."),
        click.option(
            "--lease-ms", type=click.IntRange(min=200), help="Cluster fetch lease length."
        ),
    ]
    for option in reversed(options):
        command = option(command)
    return home_option(command)


@daemon.command("start")
@_start_options
def daemon_start(home: str | None, **options: Any) -> None:
    """Start the daemon in the background; returns once it answers.

    A daemon already running is left as it is: exit 0 if it has every option given, else 1
    with the `tailhub daemon restart` command that applies them."""
    from tailhub.client._daemon import ensure_daemon
    from tailhub.client._daemon_options import requested

    local_only("daemon start")
    paths = state_paths(home)
    asked = requested(options)
    started = ensure_daemon(paths, asked.argv, as_node=_as_node(options), explicit=True)
    _report(home, options, "started" if started else None)


@daemon.command("restart")
@_start_options
def daemon_restart(home: str | None, **options: Any) -> None:
    """Stop the daemon, then start it with these options (only these: none is kept).

    tailhubd checks them first (`tailhubd --check`): options it refuses leave the running
    daemon as it is. If the new daemon still fails to start (an address in use), the
    previous one is started again with the options it ran with, and this exits 1. Running
    local jobs keep running; followers reconnect and resume where they were."""
    from tailhub.client import DaemonUnreachable
    from tailhub.client._daemon import (
        OptionsRefused,
        check_options,
        check_same_kind,
        ensure_daemon,
        stop_daemon,
    )
    from tailhub.client._daemon_options import previous, requested
    from tailhub.daemon.lock import is_held, read_pid
    from tailhub.daemon.started_with import read_options

    local_only("daemon restart")
    paths = state_paths(home)
    asked = requested(options)
    as_node = _as_node(options)
    if as_node is False:  # refused before the running daemon is stopped, not after
        check_same_kind(paths)
    pid_text = read_pid(paths.pid)
    running = int(pid_text) if pid_text and is_held(paths.lock) else None
    try:
        check_options(paths, asked.argv)
    except OptionsRefused as error:
        kept = f"tailhubd (pid {running}) runs on as it was" if running else "nothing started"
        note(f"not restarted: the new options fail: {error.line}; {kept}")
        sys.exit(error.exit_code)
    applied = None if running is None else read_options(paths, running)
    stopped = stop_daemon(paths)
    try:
        started = ensure_daemon(paths, asked.argv, as_node=as_node, explicit=True)
    except DaemonUnreachable as error:
        if stopped is None or applied is None:
            raise
        _start_previous_again(home, paths, previous(applied), error)
    verb = "started" if stopped is None else f"restarted (pid {stopped} stopped)"
    # Not started by us: another command's autostart came first, maybe without these options.
    _report(home, options, verb if started else None)


def _start_previous_again(
    home: str | None, paths: StatePaths, before: Previous, failure: TailhubError
) -> None:
    """After new options failed to start: the daemon that ran before, with the options it
    ran with (its Redis password through the environment, as `daemon start` passes it).
    One line says both; exit 1 (104 when the previous one cannot start either)."""
    import os

    from tailhub.client._daemon import ensure_daemon
    from tailhub.client._daemon_options import requested
    from tailhub.client._errors import TailhubError

    failed = f"the new options failed: {failure}"
    again = requested(before.params)
    command = f"tailhub daemon start{home_flag(home)} {again.shown()}".rstrip()
    environment = before.environment(os.environ)
    if environment is None:
        note(
            f"{failed}; the previous daemon's Redis URL holds a password this shell's "
            f"TAILHUB_REDIS does not: start it again with TAILHUB_REDIS=URL {command}"
        )
        sys.exit(exit_codes.DAEMON_UNREACHABLE)
    try:
        ensure_daemon(paths, again.argv, as_node=None, explicit=True, environment=environment)
    except TailhubError as error:
        note(f"{failed}; starting the previous daemon again failed too: {error}")
        sys.exit(error.exit_code)
    with connect(home, autostart=False) as client:
        pid = client.status().pid
    options = f"with {again.shown()}" if again.argv else "with no options"
    note(f"{failed}; the previous daemon runs again (pid {pid}) {options}")
    sys.exit(exit_codes.ERROR)


def _report(home: str | None, options: dict[str, Any], started: str | None) -> None:
    """One line on the daemon now serving `home`; exit 1 when it lacks an option asked for,
    with the restart that keeps what it has and adds what it lacks."""
    from tailhub.client._daemon_options import (
        describe,
        lacking,
        merged,
        previous,
        requested,
    )
    from tailhub.daemon.started_with import read_options

    asked = requested(options)
    paths = state_paths(home)
    with connect(home, autostart=False) as client:
        status = client.status()
    if started == "started":
        note(f"tailhubd started (pid {status.pid}) on {paths.home}{describe(asked)}")
        return
    if started is not None:
        note(f"tailhubd {started}, now pid {status.pid} on {paths.home}{describe(asked)}")
        return
    running = f"tailhubd already running (pid {status.pid}) on {paths.home}"
    if not asked.argv:
        note(running)
        return
    restart = f"tailhub daemon restart{home_flag(home)} {asked.shown()} (local jobs keep running)"
    applied = read_options(paths, status.pid)
    if applied is None:
        note(f"{running}, which did not record its options; to be sure of them: {restart}")
        sys.exit(exit_codes.ERROR)
    missing = lacking(asked, applied)
    if missing:
        # Restart takes only the options it is given: the command repeats the daemon's own.
        before = previous(applied)
        keep = requested(merged(before.params, options))
        password = "TAILHUB_REDIS=URL " if before.redis_from_environment else ""
        if options.get("redis"):
            password = ""
        restart = (
            f"{password}tailhub daemon restart{home_flag(home)} {keep.shown()} "
            "(local jobs keep running)"
        )
        note(f"{running} without {', '.join(missing)}; to apply it: {restart}")
        sys.exit(exit_codes.ERROR)
    note(f"{running}{describe(asked)}")


def _as_node(options: dict[str, Any]) -> bool | None:
    """Whether the daemon started joins a cluster: --redis, or TAILHUB_REDIS, which it
    inherits (never on its argv); None when a --config file may say (it is the daemon's)."""
    import os

    if options.get("redis") or os.environ.get("TAILHUB_REDIS"):
        return True
    if options.get("config") or os.environ.get("TAILHUB_CONFIG"):
        return None
    return False


def _checked_host_port(value: str | None) -> str | None:
    """`HOST:PORT` as given, once the daemon's own parser accepts it (bad usage: exit 2)."""
    from tailhub.daemon.config import parse_host_port

    if value is not None:
        try:
            parse_host_port(value)
        except ValueError as error:
            raise click.BadParameter(str(error)) from None
    return value


@daemon.command("stop")
@home_option
def daemon_stop(home: str | None) -> None:
    """Stop the daemon. Running local jobs keep running; a new daemon adopts them."""
    from tailhub.client._daemon import stop_daemon

    local_only("daemon stop")
    paths = state_paths(home)
    pid = stop_daemon(paths)
    note(f"tailhubd (pid {pid}) stopped" if pid else f"no tailhubd is running on {paths.home}")


@daemon.command("status")
@home_option
@click.option("--json", "as_json", is_flag=True, help="Print JSON for scripts.")
def daemon_status(home: str | None, as_json: bool) -> None:
    """Jobs, subscribers, upstream connections and bytes served. Exit 104 if not running."""
    from tailhub.client import DaemonUnreachable
    from tailhub.client._daemon import is_listening

    if remote_targets() is None:
        paths = state_paths(home)
        if not is_listening(paths):
            raise DaemonUnreachable(f"no tailhubd is running on {paths.home}")
    with connect(home, autostart=False) as client:
        status = client.status()
    if as_json:
        import json

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
        (
            "upstream connections",
            f"{status.upstream_connections_open} open now, "
            f"{status.upstream_connections} opened in total",
        ),
        ("bytes served", status.bytes_served),
        (
            "retention removed",
            f"{status.retention_removed_jobs} ended job"
            f"{'' if status.retention_removed_jobs == 1 else 's'} "
            f"({size_text(status.retention_removed_bytes)} of logs) since start",
        ),
    ]
    rows += [
        (f"{listener.kind} listener", f"{listener.address} ({listener.security or 'tls'})")
        for listener in status.listeners
    ]
    if status.metrics_address:
        rows.append(("metrics listener", status.metrics_address))
    cluster = status.cluster
    if cluster is not None:
        reach = "reachable" if cluster.connected else "UNREACHABLE (see the daemon's log)"
        rows += [
            ("cluster node", f"{cluster.node_name}, one of {cluster.nodes} up"),
            ("redis", f"{cluster.redis}, {reach}"),
            ("fetch leases held", cluster.leases_held),
            ("stale writes refused", cluster.stale_appends_refused),
        ]
    for label, value in rows:
        click.echo(f"{label + ':':<22}{printable(str(value))}")


@daemon.command("tls-init")
@home_option
@click.option(
    "--host",
    "hosts",
    multiple=True,
    metavar="NAME",
    help="A name or address clients use to reach this machine (repeatable).",
)
@click.option("--force", is_flag=True, help="Replace the CA and certificate there are.")
def daemon_tls_init(home: str | None, hosts: tuple[str, ...], force: bool) -> None:
    """Make a private CA and a server certificate in <state dir>/tls/; print the flags."""
    from tailhub.client._tls_init import default_hosts, tls_init

    local_only("daemon tls-init")
    paths = state_paths(home)
    names = list(dict.fromkeys([*default_hosts(), *hosts]))
    try:
        files = tls_init(paths.home, names, force=force)
    except FileExistsError as error:
        note(f"{error} exists; clients may trust its CA already. --force replaces it")
        sys.exit(exit_codes.ERROR)
    note(f"certificate valid for {', '.join(names)}; give clients {files.ca_cert}")
    click.echo(
        f"--tls-cert {shlex.quote(str(files.server_cert))} "
        f"--tls-key {shlex.quote(str(files.server_key))}"
    )
