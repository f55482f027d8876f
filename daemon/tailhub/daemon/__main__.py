"""`tailhubd`: the daemon in the foreground. Signals are handled here and only here:
the first SIGTERM/SIGINT drains, a second one forces."""

from __future__ import annotations

import asyncio
import gc
import hashlib
import logging
import os
import resource
import signal
import socket
import sys
from pathlib import Path
from typing import Any, NoReturn

import click
from click.core import ParameterSource

# Read by gRPC's core when it is imported (below): at its default, anyone who reaches a
# --listen port could write a line per failed TLS handshake into the daemon's log.
os.environ.setdefault("GRPC_VERBOSITY", "ERROR")

from tailhub.daemon import daemon_log
from tailhub.daemon.config import (
    ClusterSettings,
    DaemonConfig,
    format_host_port,
    minimal_environment,
    parse_host_port,
)
from tailhub.daemon.config_file import read_config_file
from tailhub.daemon.credentials import CREDENTIAL_VARIABLES
from tailhub.daemon.durations import parse_duration
from tailhub.daemon.errors import (
    AlreadyRunning,
    ClusterRefused,
    EssentialTaskDied,
    HomeOfAnotherKind,
    ListenerError,
    StorageFull,
    UnusableState,
)
from tailhub.daemon.faults import crash_points_from, failing_loops_from, stall_from
from tailhub.daemon.flags_file import apply_flags_file, flags_file_of
from tailhub.daemon.listeners import (
    DEFAULT_MAX_STREAMS,
    DEFAULT_MAX_STREAMS_PER_TOKEN,
    NetworkSettings,
    network_settings,
)
from tailhub.daemon.memtrace import MemoryTrace
from tailhub.daemon.open_files import MIN_OPEN_FILES, RAISE_OPEN_FILES
from tailhub.daemon.paths import StatePaths, resolve_home, shown
from tailhub.daemon.quotas import DEFAULT_MAX_JOBS_PER_TOKEN
from tailhub.daemon.reconnects import ReconnectPolicy
from tailhub.daemon.sd_notify import Notifier
from tailhub.daemon.server import Daemon
from tailhub.daemon.sizes import parse_size
from tailhub.daemon.started_with import ARGV_REFUSAL, applied_options, redis_url_has_secret
from tailhub.daemon.statedir import open_home

logger = logging.getLogger("tailhub.daemon")


async def serve(
    config: DaemonConfig,
    network: NetworkSettings | None = None,
    notifier: Notifier | None = None,
    options: dict[str, Any] | None = None,
    memory_trace: MemoryTrace | None = None,
) -> None:
    loop = asyncio.get_running_loop()
    loop.set_exception_handler(_log_loop_error)
    if memory_trace is not None:
        memory_trace.start()
    notifier = notifier or Notifier(None)
    # It records `options` in the state directory before it serves (home_kind.py).
    daemon = Daemon(config, network, options)
    stopping: asyncio.Task[None] | None = None
    # A signal that comes while the daemon starts (its socket bound, the handlers not yet in
    # place, it would have died without cleaning up) is a stop asked for: done once started.
    started = False
    asked = False

    def begin_stop() -> None:
        nonlocal stopping
        stopping = asyncio.ensure_future(daemon.stop())
        stopping.add_done_callback(_exit_if_stop_failed)

    def on_signal(signum: int) -> None:
        nonlocal asked
        if not asked:
            asked = True
            logger.info("%s: stopping (send it again to force)", signal.Signals(signum).name)
            notifier.notify("STOPPING=1", "STATUS=stopping: ending streams, then exiting")
            if started:
                begin_stop()
        else:
            logger.warning("second signal: exiting now")
            os._exit(1)

    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, on_signal, signum)
    if memory_trace is not None:
        loop.add_signal_handler(signal.SIGUSR2, memory_trace.report)
    try:
        await daemon.start()
        _tune_gc()
        started = True
        if asked:
            begin_stop()
        else:
            # Only now: start() returned once the socket and every listener accept
            # connections, and a SIGTERM sent the moment the service manager hears READY=1
            # is a drain, not a kill.
            notifier.notify(
                "READY=1", f"MAINPID={os.getpid()}", f"STATUS={_serving(config, network)}"
            )
        await daemon.wait_closed()
        if daemon.failure is not None:  # an essential task died: exit with the reason
            raise daemon.failure
    finally:
        for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGUSR2):
            loop.remove_signal_handler(signum)


def _serving(config: DaemonConfig, network: NetworkSettings | None) -> str:
    """What the daemon serves, for the service manager's status line."""
    served = [f"unix:{shown(config.paths.socket)}"]
    served += [str(address) for address in network.addresses] if network else []
    if config.metrics_listen is not None:
        served.append(f"metrics on {format_host_port(*config.metrics_listen)}")
    return f"serving {', '.join(served)}"


def _tune_gc() -> None:
    """Fewer, cheaper cyclic collections: at fan-out load they took ~10% of the CPU (py-spy).

    What start-up created (modules, grpc, the jobs) lives as long as the daemon: frozen, full
    collections no longer walk it. Each message allocates a few short-lived objects (futures,
    callbacks), so the youngest generation fills fast; collected every 10,000 allocations
    instead of 700, it is collected less often at little cost in memory.
    """
    gc.freeze()
    _, middle, oldest = gc.get_threshold()
    gc.set_threshold(10_000, middle, oldest)


def _exit_if_stop_failed(task: asyncio.Task[None]) -> None:
    """A stop that failed half-way leaves nothing to serve with: say why and exit."""
    if task.cancelled() or task.exception() is None:
        return
    logger.error("stopping failed: %r", task.exception(), exc_info=task.exception())
    os._exit(1)


def _log_loop_error(loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
    """Errors nobody else caught (a callback that raised): one log record, the daemon goes on."""
    error = context.get("exception")
    logger.error(
        "unhandled error in the event loop: %s",
        context.get("message", "no message"),
        exc_info=error if isinstance(error, BaseException) else None,
    )


def _host_port(value: str | None) -> tuple[str, int] | None:
    try:
        return None if value is None else parse_host_port(value)
    except ValueError as error:
        raise click.BadParameter(str(error)) from None


def _cluster_settings(
    redis_url: str | None,
    node_name: str | None,
    lease_ms: int,
    retention: int,
    paths: StatePaths,
) -> ClusterSettings | None:
    if not redis_url:
        return None
    if node_name is None:
        digest = hashlib.sha256(str(paths.home).encode()).hexdigest()[:6]
        node_name = f"{socket.gethostname()[:48]}-{digest}"
    try:
        return ClusterSettings(redis_url, node_name, lease_ms, retention, stall_from(os.environ))
    except ValueError as error:
        raise click.UsageError(str(error)) from None


def _refuse_redis_secret_on_argv(ctx: click.Context, url: str | None) -> None:
    """Refuses a Redis password on the command line: any local user reads a process's argv
    with `ps`, and whoever can write to Redis runs commands on every node. The same URL is
    fine from the environment or the private --config file. (Asked once every option is
    parsed: before that, click 8.4 does not know yet where a value came from.)"""
    source = ctx.get_parameter_source("redis_url")
    if url and source is ParameterSource.COMMANDLINE and redis_url_has_secret(url):
        click.echo(f"tailhubd: {ARGV_REFUSAL}", err=True)
        ctx.exit(2)


def _home_and_no_credentials(home: str | None) -> Path:
    """The state directory (an empty one is bad usage: exit 2); and tailhub's credentials,
    read by click already, removed from the environment before anything copies it: an
    upstream command, its fence or `sky` never gets the Redis password or a token."""
    for name in CREDENTIAL_VARIABLES:
        os.environ.pop(name, None)
    try:
        return resolve_home(home, os.environ)
    except ValueError as error:
        raise click.UsageError(str(error)) from None


def _duration(text: str, flag: str) -> float:
    """Seconds of a DURATION flag (`12h`, `7d`); bad usage (exit 2) if it is not one."""
    try:
        return parse_duration(text)
    except ValueError as error:
        raise click.BadParameter(str(error), param_hint=flag) from None


def _size(ctx: click.Context, param: click.Parameter, text: str) -> int:
    """Bytes of a SIZE option (`500M`, `20G`); bad usage (exit 2) if it is not one."""
    try:
        return parse_size(text)
    except ValueError as error:
        raise click.BadParameter(str(error), ctx, param) from None


def _usable(paths: StatePaths) -> NoReturn:
    """`--check` found nothing wrong in what a start reads before it binds or joins anything
    (`tailhub daemon restart` asks before it stops a daemon that works)."""
    click.echo(f"tailhubd: the options are usable on {paths.home}", err=True)
    sys.exit(0)


def _applied(network: NetworkSettings | None, config: DaemonConfig) -> dict[str, Any]:
    """What the daemon records of its options (started_with.py), with those given on the
    command line or in the environment named (not those of --config: the record keeps the
    file's path, and the file gives them again)."""
    ctx = click.get_current_context()
    sources = (ParameterSource.COMMANDLINE, ParameterSource.ENVIRONMENT)
    given = [name for name in ctx.params if ctx.get_parameter_source(name) in sources]
    return applied_options(ctx.params, network, config, flags_file_of(ctx), given)


def _raise_open_file_limit() -> None:
    """Soft limit up to the hard one: each followed file and command holds descriptors.

    Below MIN_OPEN_FILES even then, it says so at once: otherwise the first sign is a job
    failing with 'Too many open files' long after the start."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != hard:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
            soft = hard
        except (ValueError, OSError) as error:
            logger.warning("cannot raise the open-file limit from %d to %d: %s", soft, hard, error)
    if soft != resource.RLIM_INFINITY and soft < MIN_OPEN_FILES:
        logger.warning(
            "the open-file limit is %d (hard limit %d): jobs, followers and upstreams each "
            "hold descriptors, and past it jobs fail with 'Too many open files'; %s",
            soft,
            hard,
            RAISE_OPEN_FILES,
        )


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.option(
    "--config",
    envvar="TAILHUB_CONFIG",
    metavar="FILE",
    is_eager=True,
    expose_value=False,
    callback=apply_flags_file,
    help="YAML file of these options by long name (`listen: [HOST:PORT]`); flags win over "
    "it. Yours, mode 0600 or 0400, not a symlink. Env: TAILHUB_CONFIG.",
)
@click.option("--home", envvar="TAILHUB_HOME", help="State directory (default ~/.tailhub).")
@click.option(
    "--max-running-jobs",
    type=click.IntRange(min=1),
    default=None,
    help="Local jobs allowed to run at once; more wait PENDING. Default: no limit.",
)
@click.option(
    "--heartbeat-interval",
    type=click.FloatRange(min=0.05),
    default=5.0,
    show_default=True,
    metavar="SECONDS",
    help="How often followers get a heartbeat with the log's size and the job's state.",
)
@click.option(
    "--cancel-grace",
    type=click.FloatRange(min=0),
    default=10.0,
    show_default=True,
    help="Seconds between SIGTERM and SIGKILL when a local job is cancelled.",
)
@click.option(
    "--retention",
    "--retain-age",
    "retention",
    default="30d",
    show_default=True,
    metavar="DURATION",
    help="Remove ended jobs (and their logs) this long after they ended: 12h, 7d... 0 keeps them.",
)
@click.option(
    "--max-ended-jobs",
    type=click.IntRange(min=0),
    default=10_000,
    show_default=True,
    help="Keep at most this many ended jobs, removing the oldest first; 0: no limit.",
)
@click.option(
    "--retain-logs",
    default="0",
    show_default=True,
    metavar="SIZE",
    callback=_size,
    help="Keep the logs of ended jobs within SIZE together (500M, 20G...), removing the oldest "
    "ended jobs first; 0: no budget.",
)
@click.option(
    "--give-up-after",
    default="10m",
    show_default=True,
    metavar="DURATION",
    help="Fail an attached command or SkyPilot job whose upstream has failed this long in a "
    "row without output (reconnecting with growing delays up to 10s): 90s, 30m... 0 retries "
    "forever.",
)
@click.option(
    "--sky",
    metavar="PATH",
    help="The `sky` executable of the skypilot backend (default: config.yaml's `sky:`, "
    "else `sky` on the PATH).",
)
@click.option(
    "--listen",
    multiple=True,
    metavar="HOST:PORT",
    help="Also serve on this TCP address (repeatable; IPv6 as [::1]:PORT), with TLS and tokens.",
)
@click.option("--tls-cert", metavar="PEM", help="Certificate chain of the --listen addresses.")
@click.option("--tls-key", metavar="PEM", help="Its private key (mode 0600, yours).")
@click.option(
    "--tls-client-ca", metavar="PEM", help="Require client certificates signed by this CA."
)
@click.option(
    "--insecure", is_flag=True, help="No TLS on --listen: loopback addresses only (tests, tunnels)."
)
@click.option(
    "--max-streams",
    type=click.IntRange(min=1),
    default=DEFAULT_MAX_STREAMS,
    show_default=True,
    help="Log streams served at once over the --listen addresses, in all.",
)
@click.option(
    "--max-streams-per-token",
    type=click.IntRange(min=1),
    default=DEFAULT_MAX_STREAMS_PER_TOKEN,
    show_default=True,
    help="Log streams served at once to one token.",
)
@click.option(
    "--max-jobs-per-token",
    type=click.IntRange(min=1),
    default=DEFAULT_MAX_JOBS_PER_TOKEN,
    show_default=True,
    help="Jobs not ended that one token may hold (attached or launched over --listen); "
    "the owner, on the Unix socket, is not limited.",
)
@click.option(
    "--metrics-listen",
    metavar="HOST:PORT",
    callback=lambda _ctx, _param, value: _host_port(value),
    help="Serve Prometheus metrics at http://HOST:PORT/metrics (plain HTTP, no "
    "authentication: bind it where only your Prometheus can reach it).",
)
@click.option(
    "--subscriber-budget",
    type=click.IntRange(min=DaemonConfig.min_chunk_bytes),
    default=DaemonConfig.subscriber_budget_bytes,
    show_default=True,
    metavar="BYTES",
    help="Bytes in flight to all subscribers together; chunks shrink, then followers wait "
    "(and fall behind) when it is used up. Bounds memory however many followers lag.",
)
@click.option(
    "--redis",
    "redis_url",
    envvar="TAILHUB_REDIS",
    metavar="URL",
    help="Cluster mode: share jobs with the other daemons on this Redis "
    "(redis://HOST:PORT/DB, rediss:// for TLS). A password only from TAILHUB_REDIS or "
    "--config, never on the command line. Default: this daemon alone.",
)
@click.option(
    "--node-name",
    envvar="TAILHUB_NODE_NAME",
    metavar="NAME",
    help="This daemon's name in the cluster (default: the host name and a hash of the "
    "state directory). Keep it across restarts: local and file jobs are pinned to it.",
)
@click.option(
    "--lease-ms",
    type=click.IntRange(min=200, max=600_000),
    default=ClusterSettings.lease_ms,
    show_default=True,
    help="Cluster mode: a job's fetch lease lasts this long unless renewed; a dead "
    "daemon's jobs are taken over after about this long.",
)
@click.option(
    "--redis-retention",
    type=click.IntRange(min=0),
    default=ClusterSettings.retention_bytes,
    show_default=True,
    metavar="BYTES",
    help="Cluster mode: bytes of each job's log kept in Redis (older ones are trimmed; "
    "0 keeps all).",
)
@click.option(
    "--log-level",
    default="INFO",
    show_default=True,
    metavar="LEVEL",
    help="The daemon's log level: DEBUG, INFO, WARNING or ERROR.",
)
@click.option(
    "--check",
    is_flag=True,
    help="Check these options, the --config file, the TLS files and the state directory's "
    "config.yaml, then exit without serving: 0 if usable, else a start's exit code and line. "
    "Not checked: whether the addresses are free, Redis.",
)
def main(
    home: str | None,
    max_running_jobs: int | None,
    heartbeat_interval: float,
    cancel_grace: float,
    retention: str,
    max_ended_jobs: int,
    retain_logs: int,
    give_up_after: str,
    sky: str | None,
    listen: tuple[str, ...],
    tls_cert: str | None,
    tls_key: str | None,
    tls_client_ca: str | None,
    insecure: bool,
    max_streams: int,
    max_streams_per_token: int,
    max_jobs_per_token: int,
    metrics_listen: tuple[str, int] | None,
    subscriber_budget: int,
    redis_url: str | None,
    node_name: str | None,
    lease_ms: int,
    redis_retention: int,
    log_level: str,
    check: bool,
) -> None:
    """Run the tailhub daemon in the foreground."""
    _refuse_redis_secret_on_argv(click.get_current_context(), redis_url)
    home_path = _home_and_no_credentials(home)
    repeats = daemon_log.configure(log_level)
    # Read, and removed from the environment, before anything copies it: no job or upstream
    # command may speak to the service manager as the daemon.
    notifier = Notifier.from_environment(os.environ)
    # Every file the daemon creates is private; its jobs get back the umask it was given.
    job_umask = os.umask(0o077)
    retention_seconds = _duration(retention, "--retention")
    try:
        reconnect_policy = ReconnectPolicy(give_up_after=parse_duration(give_up_after) or None)
    except ValueError as error:
        raise click.BadParameter(str(error), param_hint="--give-up-after") from None
    try:
        # Read and checked before anything is bound: asked-for listeners are never skipped.
        network = network_settings(
            listen,
            cert=tls_cert,
            key=tls_key,
            client_ca=tls_client_ca,
            insecure=insecure,
            max_streams=max_streams,
            max_streams_per_token=max_streams_per_token,
        )
    except ValueError as error:
        raise click.UsageError(str(error)) from None
    except ListenerError as error:
        click.echo(f"tailhubd: {error}", err=True)
        sys.exit(error.exit_code)
    _raise_open_file_limit()
    try:
        # Resolved and checked once, component by component, before anything in it is read or
        # made; from here on every file is reached through this descriptor (paths.py).
        paths = StatePaths(home_path, open_home(home_path, create=True))
        # Read once, here: a change applies at the next start.
        settings = read_config_file(paths)
        cluster = _cluster_settings(redis_url, node_name, lease_ms, redis_retention, paths)
        if cluster is not None:
            # Jobs are the cluster's: no daemon deletes them on its own (see README).
            retention_seconds, max_ended_jobs, retain_logs = 0, 0, 0
        config = DaemonConfig(
            paths=paths,
            max_running_jobs=max_running_jobs,
            heartbeat_interval=heartbeat_interval,
            cancel_grace=cancel_grace,
            subscriber_budget_bytes=subscriber_budget,
            job_environment=minimal_environment(os.environ),
            job_umask=job_umask,
            retention_seconds=retention_seconds or None,
            max_ended_jobs=max_ended_jobs or None,
            retain_log_bytes=retain_logs or None,
            max_jobs_per_token=max_jobs_per_token,
            reconnect_policy=reconnect_policy,
            crash_at=crash_points_from(os.environ),
            fail_loops=failing_loops_from(os.environ),
            default_backend=settings.backend or "local",
            sky=sky or settings.sky or "sky",
            sky_environment=tuple(sorted(os.environ.items())),
            metrics_listen=metrics_listen,
            cluster=cluster,
        )
        if check:
            _usable(paths)
        applied = _applied(network, config)
        # The home is checked: from here on the log also goes to a bounded file in it.
        with daemon_log.log_file_owned(paths.root, paths.daemon_log, repeats):
            # A bad TAILHUB_TRACEMALLOC is a ValueError: one line, exit 1, as for a bad home.
            asyncio.run(
                serve(config, network, notifier, applied, MemoryTrace.from_environment(os.environ))
            )
    except (ListenerError, HomeOfAnotherKind, EssentialTaskDied) as error:
        click.echo(f"tailhubd: {error}", err=True)
        sys.exit(error.exit_code)
    except ClusterRefused as error:
        click.echo(f"tailhubd: {error}", err=True)
        sys.exit(6)
    except AlreadyRunning as error:
        click.echo(f"tailhubd: {error}", err=True)
        sys.exit(3)
    except (UnusableState, StorageFull) as error:
        click.echo(f"tailhubd: {error}", err=True)
        sys.exit(1)
    except (ValueError, OSError) as error:
        click.echo(f"tailhubd: {error}", err=True)
        sys.exit(1)


if __name__ == "__main__":
    main()
