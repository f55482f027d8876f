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
from tailhub.daemon.cli_options import tailhubd_options
from tailhub.daemon.config import (
    ClusterSettings,
    DaemonConfig,
    check_redis_url,
    format_host_port,
    minimal_environment,
)
from tailhub.daemon.config_file import FileConfig, read_config_file
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
from tailhub.daemon.flags_file import flags_file_of
from tailhub.daemon.home_kind import recorded_kind
from tailhub.daemon.listeners import (
    NetworkSettings,
    network_settings,
)
from tailhub.daemon.memtrace import MemoryTrace
from tailhub.daemon.open_files import MIN_OPEN_FILES, RAISE_OPEN_FILES
from tailhub.daemon.paths import StatePaths, resolve_home, shown
from tailhub.daemon.reconnects import ReconnectPolicy
from tailhub.daemon.sd_notify import Notifier
from tailhub.daemon.server import Daemon
from tailhub.daemon.started_with import ARGV_REFUSAL, applied_options, redis_url_has_secret
from tailhub.daemon.statedir import open_home
from tailhub.daemon.web.settings import WebSettings, web_settings

logger = logging.getLogger("tailhub.daemon")


async def serve(
    config: DaemonConfig,
    network: NetworkSettings | None = None,
    notifier: Notifier | None = None,
    options: dict[str, Any] | None = None,
    memory_trace: MemoryTrace | None = None,
    web: WebSettings | None = None,
) -> None:
    loop = asyncio.get_running_loop()
    loop.set_exception_handler(_log_loop_error)
    if memory_trace is not None:
        memory_trace.start()
    notifier = notifier or Notifier(None)
    # It records `options` in the state directory before it serves (home_kind.py).
    daemon = Daemon(config, network, options, web)
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
                "READY=1", f"MAINPID={os.getpid()}", f"STATUS={_serving(config, network, web)}"
            )
        await daemon.wait_closed()
        if daemon.failure is not None:  # an essential task died: exit with the reason
            raise daemon.failure
    finally:
        for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGUSR2):
            loop.remove_signal_handler(signum)


def _serving(config: DaemonConfig, network: NetworkSettings | None, web: WebSettings | None) -> str:
    """What the daemon serves, for the service manager's status line."""
    served = [f"unix:{shown(config.paths.socket)}"]
    served += [str(address) for address in network.addresses] if network else []
    served += [f"web view on {web.address}"] if web else []
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


def _cluster_settings(
    redis_url: str | None,
    node_name: str | None,
    lease_ms: int,
    retention: int,
    paths: StatePaths,
) -> ClusterSettings | None:
    if not redis_url:
        return None
    recorded = recorded_kind(paths)
    if node_name is None and recorded is not None and recorded.node_name:
        node_name = recorded.node_name  # (the node this home was: its jobs are pinned to it)
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
    # A URL from argv or the environment is checked before the home is made (one from the
    # home's --config file, once it is read: _cluster_settings).
    try:
        if url:
            check_redis_url(url)
    except ValueError as error:
        click.echo(f"tailhubd: {error}", err=True)
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


def _reconnect_policy(give_up_after: str) -> ReconnectPolicy:
    """--give-up-after as a policy (0: retry forever); bad usage (exit 2) if not a duration."""
    try:
        return ReconnectPolicy(give_up_after=parse_duration(give_up_after) or None)
    except ValueError as error:
        raise click.BadParameter(str(error), param_hint="--give-up-after") from None


def _network_or_exit(listen: tuple[str, ...], **settings: Any) -> NetworkSettings | None:
    """The --listen addresses' settings, checked (TLS files read); bad usage (exit 2) or one
    line and the listener's exit code when they cannot be used."""
    try:
        return network_settings(listen, **settings)
    except ValueError as error:
        raise click.UsageError(str(error)) from None
    except ListenerError as error:
        click.echo(f"tailhubd: {error}", err=True)
        sys.exit(error.exit_code)


def _web_or_exit(http_listen: str | None, **settings: Any) -> WebSettings | None:
    """The web view's settings (--http-listen), checked as `_network_or_exit` checks the
    listeners': a non-loopback address without TLS is bad usage (exit 2)."""
    try:
        return web_settings(http_listen, **settings)
    except ValueError as error:
        raise click.UsageError(str(error)) from None
    except ListenerError as error:
        click.echo(f"tailhubd: {error}", err=True)
        sys.exit(error.exit_code)


def _daemon_config(
    paths: StatePaths,
    settings: FileConfig,
    cluster: ClusterSettings | None,
    *,
    max_running_jobs: int | None,
    heartbeat_interval: float,
    cancel_grace: float,
    subscriber_budget: int,
    job_umask: int,
    retention_seconds: float,
    max_ended_jobs: int,
    retain_logs: int,
    max_jobs_per_token: int,
    max_log_bytes_per_token: int,
    reconnect_policy: ReconnectPolicy,
    sky: str | None,
    metrics_listen: tuple[str, int] | None,
) -> DaemonConfig:
    """The daemon's config: its flags, the state directory's config.yaml, the environment."""
    if cluster is not None:
        # Jobs are the cluster's: no daemon deletes them on its own (see README).
        retention_seconds, max_ended_jobs, retain_logs = 0, 0, 0
    return DaemonConfig(
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
        max_log_bytes_per_token=max_log_bytes_per_token,
        reconnect_policy=reconnect_policy,
        crash_at=crash_points_from(os.environ),
        fail_loops=failing_loops_from(os.environ),
        default_backend=settings.backend or "local",
        sky=sky or settings.sky or "sky",
        sky_environment=tuple(sorted(os.environ.items())),
        metrics_listen=metrics_listen,
        cluster=cluster,
    )


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
@tailhubd_options
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
    max_connections_per_peer: int,
    max_jobs_per_token: int,
    max_log_bytes_per_token: int,
    metrics_listen: tuple[str, int] | None,
    http_listen: str | None,
    http_max_streams: int,
    http_max_streams_per_session: int,
    http_heartbeat_interval: float,
    http_max_connections: int,
    http_max_connections_per_peer: int,
    http_request_timeout: float,
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
    reconnect_policy = _reconnect_policy(give_up_after)
    # Read and checked before anything is bound: asked-for listeners are never skipped.
    network = _network_or_exit(
        listen,
        cert=tls_cert,
        key=tls_key,
        client_ca=tls_client_ca,
        insecure=insecure,
        max_streams=max_streams,
        max_streams_per_token=max_streams_per_token,
        max_connections_per_peer=max_connections_per_peer,
        web=http_listen is not None,
    )
    web = _web_or_exit(
        http_listen,
        cert=tls_cert,
        key=tls_key,
        client_ca=tls_client_ca,
        max_streams=http_max_streams,
        max_streams_per_session=http_max_streams_per_session,
        heartbeat_interval=http_heartbeat_interval,
        max_connections=http_max_connections,
        max_connections_per_peer=http_max_connections_per_peer,
        request_timeout=http_request_timeout,
    )
    _raise_open_file_limit()
    try:
        # Resolved and checked once, component by component, before anything in it is read or
        # made; from here on every file is reached through this descriptor (paths.py).
        paths = StatePaths(home_path, open_home(home_path, create=True))
        # Read once, here: a change applies at the next start.
        settings = read_config_file(paths)
        config = _daemon_config(
            paths,
            settings,
            _cluster_settings(redis_url, node_name, lease_ms, redis_retention, paths),
            max_running_jobs=max_running_jobs,
            heartbeat_interval=heartbeat_interval,
            cancel_grace=cancel_grace,
            subscriber_budget=subscriber_budget,
            job_umask=job_umask,
            retention_seconds=retention_seconds,
            max_ended_jobs=max_ended_jobs,
            retain_logs=retain_logs,
            max_jobs_per_token=max_jobs_per_token,
            max_log_bytes_per_token=max_log_bytes_per_token,
            reconnect_policy=reconnect_policy,
            sky=sky,
            metrics_listen=metrics_listen,
        )
        if check:
            _usable(paths)
        applied = _applied(network, config)
        # The home is checked: from here on the log also goes to a bounded file in it.
        with daemon_log.log_file_owned(paths.root, paths.daemon_log, repeats):
            # A bad TAILHUB_TRACEMALLOC is a ValueError: one line, exit 1, as for a bad home.
            memory_trace = MemoryTrace.from_environment(os.environ)
            asyncio.run(serve(config, network, notifier, applied, memory_trace, web))
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
