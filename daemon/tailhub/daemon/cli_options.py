"""tailhubd's command line: every option once, with its help (`tailhubd --help` lists them in
this order). `main` in __main__.py takes them; docs/cli.md documents them."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

import click

from tailhub.daemon.config import ClusterSettings, DaemonConfig, parse_host_port
from tailhub.daemon.flags_file import apply_flags_file
from tailhub.daemon.listeners import DEFAULT_MAX_STREAMS, DEFAULT_MAX_STREAMS_PER_TOKEN
from tailhub.daemon.peer_cap import DEFAULT_GRPC_CONNECTIONS_PER_PEER
from tailhub.daemon.quotas import DEFAULT_MAX_JOBS_PER_TOKEN
from tailhub.daemon.sizes import parse_size
from tailhub.daemon.web.settings import (
    DEFAULT_HEARTBEAT_SECONDS as DEFAULT_WEB_HEARTBEAT,
)
from tailhub.daemon.web.settings import (
    DEFAULT_MAX_CONNECTIONS,
    DEFAULT_MAX_CONNECTIONS_PER_PEER,
    DEFAULT_REQUEST_SECONDS,
)
from tailhub.daemon.web.settings import (
    DEFAULT_MAX_STREAMS as DEFAULT_WEB_STREAMS,
)
from tailhub.daemon.web.settings import (
    DEFAULT_MAX_STREAMS_PER_SESSION as DEFAULT_WEB_STREAMS_PER_SESSION,
)

F = TypeVar("F", bound=Callable[..., Any])


def _host_port(value: str | None) -> tuple[str, int] | None:
    """(host, port) of a HOST:PORT option; bad usage (exit 2) if it is not one."""
    try:
        return None if value is None else parse_host_port(value)
    except ValueError as error:
        raise click.BadParameter(str(error)) from None


def _size(ctx: click.Context, param: click.Parameter, text: str) -> int:
    """Bytes of a SIZE option (`500M`, `20G`); bad usage (exit 2) if it is not one."""
    try:
        return parse_size(text)
    except ValueError as error:
        raise click.BadParameter(str(error), ctx, param) from None


def _positive_size(ctx: click.Context, param: click.Parameter, text: str) -> int:
    """`_size`, and not 0 (a quota of nothing refuses every byte: surely not what was meant)."""
    size = _size(ctx, param, text)
    if size < 1:
        raise click.BadParameter(f"{text!r}: at least 1 byte", ctx, param)
    return size


_OPTIONS = [
    click.option(
        "--config",
        envvar="TAILHUB_CONFIG",
        metavar="FILE",
        is_eager=True,
        expose_value=False,
        callback=apply_flags_file,
        help="YAML file of these options by long name (`listen: [HOST:PORT]`); flags win over "
        "it. Yours, mode 0600 or 0400, not a symlink. Env: TAILHUB_CONFIG.",
    ),
    click.option("--home", envvar="TAILHUB_HOME", help="State directory (default ~/.tailhub)."),
    click.option(
        "--max-running-jobs",
        type=click.IntRange(min=1),
        default=None,
        help="Local jobs allowed to run at once; more wait PENDING. Default: no limit.",
    ),
    click.option(
        "--heartbeat-interval",
        type=click.FloatRange(min=0.05),
        default=5.0,
        show_default=True,
        metavar="SECONDS",
        help="How often followers get a heartbeat with the log's size and the job's state.",
    ),
    click.option(
        "--cancel-grace",
        type=click.FloatRange(min=0),
        default=10.0,
        show_default=True,
        help="Seconds between SIGTERM and SIGKILL when a local job is cancelled.",
    ),
    click.option(
        "--retention",
        "--retain-age",
        "retention",
        default="30d",
        show_default=True,
        metavar="DURATION",
        help="Remove ended jobs (and their logs) this long after they ended: 12h, 7d... "
        "0 keeps them.",
    ),
    click.option(
        "--max-ended-jobs",
        type=click.IntRange(min=0),
        default=10_000,
        show_default=True,
        help="Keep at most this many ended jobs, removing the oldest first; 0: no limit.",
    ),
    click.option(
        "--retain-logs",
        default="0",
        show_default=True,
        metavar="SIZE",
        callback=_size,
        help="Keep the logs of ended jobs within SIZE together (500M, 20G...), removing the oldest "
        "ended jobs first; 0: no budget.",
    ),
    click.option(
        "--give-up-after",
        default="10m",
        show_default=True,
        metavar="DURATION",
        help="Fail an attached command or SkyPilot job whose upstream has failed this long in a "
        "row without output (reconnecting with growing delays up to 10s): 90s, 30m... 0 retries "
        "forever.",
    ),
    click.option(
        "--sky",
        metavar="PATH",
        help="The `sky` executable of the skypilot backend (default: config.yaml's `sky:`, "
        "else `sky` on the PATH).",
    ),
    click.option(
        "--listen",
        multiple=True,
        metavar="HOST:PORT",
        help="Also serve on this TCP address (repeatable; IPv6 as [::1]:PORT), "
        "with TLS and tokens.",
    ),
    click.option("--tls-cert", metavar="PEM", help="Certificate chain of the --listen addresses."),
    click.option("--tls-key", metavar="PEM", help="Its private key (mode 0600, yours)."),
    click.option(
        "--tls-client-ca", metavar="PEM", help="Require client certificates signed by this CA."
    ),
    click.option(
        "--insecure",
        is_flag=True,
        help="No TLS on --listen: loopback addresses only (tests, tunnels).",
    ),
    click.option(
        "--max-streams",
        type=click.IntRange(min=1),
        default=DEFAULT_MAX_STREAMS,
        show_default=True,
        help="Log streams served at once over the --listen addresses, in all.",
    ),
    click.option(
        "--max-streams-per-token",
        type=click.IntRange(min=1),
        default=DEFAULT_MAX_STREAMS_PER_TOKEN,
        show_default=True,
        help="Log streams served at once to one token.",
    ),
    click.option(
        "--max-connections-per-peer",
        type=click.IntRange(min=1),
        default=DEFAULT_GRPC_CONNECTIONS_PER_PEER,
        show_default=True,
        help="TCP connections one address may hold on the --listen ports; its newest past "
        "that are closed within half a second.",
    ),
    click.option(
        "--max-jobs-per-token",
        type=click.IntRange(min=1),
        default=DEFAULT_MAX_JOBS_PER_TOKEN,
        show_default=True,
        help="Jobs not ended that one token may hold (attached or launched over --listen); "
        "the owner, on the Unix socket, is not limited.",
    ),
    click.option(
        "--max-log-bytes-per-token",
        default="10G",
        show_default=True,
        metavar="SIZE",
        callback=_positive_size,
        help="Bytes of log that the jobs of one token may hold together; a Publish past it is "
        "refused. The owner is not limited.",
    ),
    click.option(
        "--metrics-listen",
        metavar="HOST:PORT",
        callback=lambda _ctx, _param, value: _host_port(value),
        help="Serve Prometheus metrics at http://HOST:PORT/metrics (plain HTTP, no "
        "authentication: bind it where only your Prometheus can reach it).",
    ),
    click.option(
        "--http-listen",
        metavar="HOST:PORT",
        help="Serve the read-only web view here (log in with `tailhub web`): plain http on a "
        "loopback address, https with --tls-cert/--tls-key anywhere else. Default: off.",
    ),
    click.option(
        "--http-max-streams",
        type=click.IntRange(min=1),
        default=DEFAULT_WEB_STREAMS,
        show_default=True,
        help="Event streams and downloads the web view serves at once, in all.",
    ),
    click.option(
        "--http-max-streams-per-session",
        type=click.IntRange(min=1),
        default=DEFAULT_WEB_STREAMS_PER_SESSION,
        show_default=True,
        help="... to the logins of one token (or of the owner).",
    ),
    click.option(
        "--http-heartbeat-interval",
        type=click.FloatRange(min=0.05),
        default=DEFAULT_WEB_HEARTBEAT,
        show_default=True,
        metavar="SECONDS",
        help="An idle event stream of the web view gets a comment line this often.",
    ),
    click.option(
        "--http-max-connections",
        type=click.IntRange(min=1),
        default=DEFAULT_MAX_CONNECTIONS,
        show_default=True,
        help="Connections the web view keeps open at once (at most a quarter of the daemon's "
        "descriptor limit); one more is closed at once.",
    ),
    click.option(
        "--http-max-connections-per-peer",
        type=click.IntRange(min=1),
        default=DEFAULT_MAX_CONNECTIONS_PER_PEER,
        show_default=True,
        help="... from one address (behind a reverse proxy every tab comes from its address).",
    ),
    click.option(
        "--http-request-timeout",
        type=click.FloatRange(min=0.05),
        default=DEFAULT_REQUEST_SECONDS,
        show_default=True,
        metavar="SECONDS",
        help="A web connection is closed unless a whole request comes this soon after it "
        "opens (TLS handshake included) or after its last answer; an event stream, once "
        "served, is not cut.",
    ),
    click.option(
        "--subscriber-budget",
        type=click.IntRange(min=DaemonConfig.min_chunk_bytes),
        default=DaemonConfig.subscriber_budget_bytes,
        show_default=True,
        metavar="BYTES",
        help="Bytes in flight to all subscribers together, shared fairly per client; followers "
        "wait for a whole chunk (and fall behind) when it is used up. Bounds memory however "
        "many followers lag.",
    ),
    click.option(
        "--redis",
        "redis_url",
        envvar="TAILHUB_REDIS",
        metavar="URL",
        help="Cluster mode: share jobs with the other daemons on this Redis "
        "(redis://HOST:PORT/DB, rediss:// for TLS). A password only from TAILHUB_REDIS or "
        "--config, never on the command line. Default: this daemon alone.",
    ),
    click.option(
        "--node-name",
        envvar="TAILHUB_NODE_NAME",
        metavar="NAME",
        help="This daemon's name in the cluster (default: the host name and a hash of the "
        "state directory). Keep it across restarts: local and file jobs are pinned to it.",
    ),
    click.option(
        "--lease-ms",
        type=click.IntRange(min=200, max=600_000),
        default=ClusterSettings.lease_ms,
        show_default=True,
        help="Cluster mode: a job's fetch lease lasts this long unless renewed; a dead "
        "daemon's jobs are taken over after about this long.",
    ),
    click.option(
        "--redis-retention",
        type=click.IntRange(min=0),
        default=ClusterSettings.retention_bytes,
        show_default=True,
        metavar="BYTES",
        help="Cluster mode: bytes of each job's log kept in Redis (older ones are trimmed; "
        "0 keeps all).",
    ),
    click.option(
        "--log-level",
        default="INFO",
        show_default=True,
        metavar="LEVEL",
        help="The daemon's log level: DEBUG, INFO, WARNING or ERROR.",
    ),
    click.option(
        "--check",
        is_flag=True,
        help="Check these options, the --config file, the TLS files and the state directory's "
        "config.yaml, then exit without serving: 0 if usable, else a start's exit code and line. "
        "Not checked: whether the addresses are free, Redis.",
    ),
]


def tailhubd_options(command: F) -> F:
    """`command` with tailhubd's options, in the order above."""
    for option in reversed(_OPTIONS):
        command = option(command)
    return command
