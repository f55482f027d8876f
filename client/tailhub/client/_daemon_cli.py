"""`tailhub daemon start|stop|status|tls-init`: the daemon on this machine."""

from __future__ import annotations

import os
import shlex
import sys
import time
from dataclasses import asdict
from typing import Any

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
from tailhub.client._output import note, printable


@click.group()
def daemon() -> None:
    """Start, stop and inspect the daemon (commands start it when needed)."""


@daemon.command("start")
@home_option
@click.option(
    "--max-running-jobs", type=click.IntRange(min=1), help="Limit on local jobs running at once."
)
@click.option("--listen", multiple=True, metavar="HOST:PORT", help="Also serve on TCP (TLS).")
@click.option(
    "--tls-cert", metavar="PEM", help="Certificate of --listen (tailhub daemon tls-init)."
)
@click.option("--tls-key", metavar="PEM", help="Its private key.")
@click.option("--tls-client-ca", metavar="PEM", help="Require client certificates of this CA.")
@click.option("--insecure", "plaintext", is_flag=True, help="No TLS on --listen (loopback only).")
@click.option("--max-streams", type=click.IntRange(min=1), help="Network log streams in all.")
@click.option("--max-streams-per-token", type=click.IntRange(min=1), help="... per token.")
@click.option(
    "--subscriber-budget",
    type=click.IntRange(min=64 * 1024),
    metavar="BYTES",
    help="Bytes in flight to all subscribers together.",
)
@click.option(
    "--metrics-listen",
    metavar="HOST:PORT",
    callback=lambda _ctx, _param, value: _checked_host_port(value),
    help="Serve Prometheus metrics at http://HOST:PORT/metrics (no authentication).",
)
@click.option("--redis", metavar="URL", help="Cluster mode: share jobs with the daemons on it.")
@click.option("--node-name", metavar="NAME", help="This daemon's name in the cluster.")
@click.option("--lease-ms", type=click.IntRange(min=200), help="Cluster fetch lease length.")
def daemon_start(
    home: str | None,
    max_running_jobs: int | None,
    listen: tuple[str, ...],
    plaintext: bool,
    **passed_on: Any,
) -> None:
    """Start the daemon in the background; returns once it answers."""
    from tailhub.client._daemon import ensure_daemon

    local_only("daemon start")
    paths = state_paths(home)
    args = ["--max-running-jobs", str(max_running_jobs)] if max_running_jobs else []
    args += [item for address in listen for item in ("--listen", address)]
    args += ["--insecure"] if plaintext else []
    for name, value in passed_on.items():
        if value is not None:
            # The daemon runs in its state directory: a relative path must not change meaning.
            text = os.path.abspath(value) if name.startswith("tls_") else str(value)
            args += [f"--{name.replace('_', '-')}", text]
    started = ensure_daemon(paths, args)
    with connect(home, autostart=False) as client:
        status = client.status()
    verb = "started" if started else "already running"
    note(f"tailhubd {verb} (pid {status.pid}) on {paths.home}")
    if args and not started:
        note(
            f"{args[0]} was not applied to the running daemon; to apply it: "
            f"tailhub daemon stop{home_flag(home)}, then start it again"
        )
        sys.exit(exit_codes.ERROR)


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
    ]
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
