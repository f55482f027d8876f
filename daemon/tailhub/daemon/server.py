"""The daemon's lifecycle: lock, database, job manager and gRPC server, started and stopped
in order. `start()` returns once the socket is bound and serving."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import shutil
from collections.abc import Mapping, Sequence
from dataclasses import replace
from types import TracebackType
from typing import TYPE_CHECKING, Any

import grpc
import grpc.aio
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from tailhub.daemon import limits
from tailhub.daemon.auth import AuthInterceptor, LaunchedTarget, StreamCaps
from tailhub.daemon.budget import BudgetFigures
from tailhub.daemon.cert_expiry import CertificateWatch
from tailhub.daemon.config import DaemonConfig
from tailhub.daemon.domain import backend_of
from tailhub.daemon.errors import EssentialTaskDied, JobError
from tailhub.daemon.facts import WEB, ListenerFacts, RunFacts, listener_facts
from tailhub.daemon.failed_auth import FailedAuthLimit
from tailhub.daemon.faults import HEALTH
from tailhub.daemon.health import HealthReports
from tailhub.daemon.heap_trim import HeapTrim
from tailhub.daemon.identity import check_logs_belong
from tailhub.daemon.listeners import (
    SERVER_KEEPALIVE_OPTIONS,
    NetworkSettings,
    bind,
    connection_cap,
    describe,
    network_limits,
    parse_address,
)
from tailhub.daemon.lock import StateLock
from tailhub.daemon.manager import JobManager
from tailhub.daemon.owner_http import OwnerEndpoint
from tailhub.daemon.owner_http import socket_path as owner_socket
from tailhub.daemon.paths import shown
from tailhub.daemon.peer_cap import PeerCap
from tailhub.daemon.placement import Placement
from tailhub.daemon.placing import choose_placement
from tailhub.daemon.runner import LocalRunner
from tailhub.daemon.service import SERVICE_NAME, TailhubServicer
from tailhub.daemon.sky import SkyCli
from tailhub.daemon.sources import SourceEnvironment, ssh_share
from tailhub.daemon.started_with import record_options
from tailhub.daemon.statedir import check_database, ensure_private_dir, open_home
from tailhub.daemon.store import JobStore
from tailhub.daemon.supervisor import Supervisor
from tailhub.daemon.tokens import TokenIndex
from tailhub.daemon.watch import FileWatcher

if TYPE_CHECKING:
    from tailhub.daemon.metrics import DaemonMetrics, MetricsEndpoint
    from tailhub.daemon.web.app import WebView
    from tailhub.daemon.web.settings import WebSettings

# The health service's name for the placement's part (a cluster node: Redis reachable, data
# intact).
CLUSTER_HEALTH = "tailhub.cluster"

logger = logging.getLogger(__name__)


class Daemon:
    def __init__(
        self,
        config: DaemonConfig,
        network: NetworkSettings | None = None,
        options: Mapping[str, Any] | None = None,
        web: WebSettings | None = None,
    ) -> None:
        self.config = config
        # The web view (--http-listen), if asked for: aiohttp in this loop (web/app.py).
        self.web = web
        self._web_view: WebView | None = None
        # What tailhubd applied (started_with.py), recorded in the state directory at start.
        self._options = options
        # The TCP listeners (auth.py's interceptor on their own server), if asked for.
        self.network = network
        self._network_server: grpc.aio.Server | None = None
        # Failed authentications on the TCP listeners, per peer (told once more at stop).
        self._failed_auth = FailedAuthLimit()
        # Warns when the listeners' certificate has expired or soon will (daily).
        self._certificates: CertificateWatch | None = None
        self._peer_cap: PeerCap | None = None
        # Made in start(), once the home is opened: its files are reached through it.
        self._lock: StateLock | None = None
        self._watcher = FileWatcher()
        self._store: JobStore | None = None
        self._manager: JobManager | None = None
        self._server: grpc.aio.Server | None = None
        # With --metrics-listen: every gRPC server gets `self._metrics.interceptor()` first.
        self._metrics: DaemonMetrics | None = None
        self._metrics_endpoint: MetricsEndpoint | None = None
        self._servicer: TailhubServicer | None = None
        # The owner's lean endpoint for the CLI (owner_http.py), beside the socket: standalone.
        self._owner: OwnerEndpoint | None = None
        # Where jobs are fetched: here, or (`--redis`) as one node of several sharing a Redis.
        self._placement: Placement | None = None
        self._stopped = asyncio.Event()
        self._stopping: asyncio.Future[None] | None = None
        # The daemon-wide loops (supervisor.py): if one dies, the daemon stops, and its
        # entry point exits with `failure`.
        self._essentials = Supervisor(dict(config.fail_loops))
        self._essentials.on_failure(self._essential_died)
        self._health: HealthReports | None = None
        self._serving = False
        self._stopping_after_failure: asyncio.Task[None] | None = None

    @property
    def failure(self) -> EssentialTaskDied | None:
        """Why the daemon stopped on its own: an essential task died."""
        return self._essentials.failure

    async def start(self) -> None:
        paths = self.config.paths
        paths.check_socket_path()
        if paths.home_fd is None:
            # Started in-process (tailhubd's entry point opens it itself, before it reads any
            # file there). Never closed: a later use of these paths must not reach whatever
            # file would get its number.
            paths = replace(paths, home_fd=open_home(paths.home, create=True))
            self.config = replace(self.config, paths=paths)
        assert paths.home_fd is not None
        # Only now that every component of its path was checked, and through the descriptor:
        # never the mode of a directory someone else's link leads to.
        os.fchmod(paths.home_fd, 0o700)
        self._lock = StateLock(paths.lock, paths.pid)
        self._lock.acquire()
        try:
            await self._start_locked()
        except BaseException:
            await self._close()
            raise

    async def _start_locked(self) -> None:
        paths = self.config.paths
        ensure_private_dir(paths.logs)
        ensure_private_dir(paths.runs)
        loop = asyncio.get_running_loop()
        self._watcher.start(loop)
        check_database(paths.database)
        self._store = JobStore(paths.database)
        check_logs_belong(paths, *self._store.instance_id())
        placement = self._placement = choose_placement(self.config)
        environment = SourceEnvironment(
            self.config,
            self._watcher,
            LocalRunner(paths, self.config.job_environment, self.config.job_umask),
            asyncio.Semaphore(self.config.max_connecting_commands),
            # Found on the daemon's PATH now; else looked up on the PATH of each run.
            SkyCli(
                shutil.which(self.config.sky) or self.config.sky,
                dict(self.config.sky_environment),
            ),
            placement.wrap_command(),
            self._ssh_share(),
        )
        await placement.join(self._store)
        self._record_kind()
        self._manager = JobManager(self.config, self._store, environment, placement)
        await self._manager.start(self._essentials)
        HeapTrim().start(self._essentials)
        await placement.start(self._manager, self._essentials)

        # Outermost first: the RPC counter sees every call, even one a later interceptor refuses.
        counting: list[grpc.aio.ServerInterceptor[Any, Any]] = []
        if self.config.metrics_listen is not None:
            # Imported only when asked for: prometheus_client slows every daemon start.
            from tailhub.daemon.metrics import DaemonMetrics, MetricsEndpoint

            metrics = self._metrics = DaemonMetrics(self._manager)
            counting.append(metrics.interceptor())
            # Bound before the gRPC servers: an address in use stops the start with nothing
            # served yet.
            self._metrics_endpoint = MetricsEndpoint(metrics, *self.config.metrics_listen)
            await self._metrics_endpoint.start()

        server = grpc.aio.server(options=self._server_options(), interceptors=counting)
        servicer = self._servicer = TailhubServicer(self._manager, self.config)
        if self._metrics_endpoint is not None:
            servicer.run_facts = RunFacts(metrics_addresses=tuple(self._metrics_endpoint.addresses))
        await asyncio.gather(self._start_web(servicer), self._start_owner(servicer))
        health_servicer = health.aio.HealthServicer()  # type: ignore[attr-defined]
        network_server = self._network(servicer, health_servicer, counting)
        _serve(server, servicer, health_servicer)
        # Created 0600 from the start: no moment where another user could connect.
        old_umask = os.umask(0o177)
        try:
            server.add_insecure_port(paths.address)
        finally:
            os.umask(old_umask)
        await server.start()
        self._server = server
        if network_server is not None:
            await self._start_network(network_server)
        self._watch_certificates(servicer.run_facts.listeners)
        await health_servicer.set(SERVICE_NAME, health_pb2.HealthCheckResponse.SERVING)
        await self._watch_placement_health(placement, health_servicer)
        if self._essentials.failure is not None:  # (one died while the daemon started)
            raise self._essentials.failure
        await health_servicer.set("", health_pb2.HealthCheckResponse.SERVING)
        self._serving = True
        self._essentials.serving()
        logger.info("tailhubd serving unix:%s (pid %d)", shown(paths.socket), os.getpid())

    async def _start_web(self, servicer: TailhubServicer) -> None:
        """The web view, bound before the gRPC servers (an address in use stops the start
        with nothing served yet); its streams share the servicer's budget."""
        if self.web is None or self._manager is None:
            return
        # Imported only when asked for: aiohttp slows every daemon start.
        from tailhub.daemon.web.app import WebView

        view = self._web_view = WebView(
            self.web, self._manager, self.config, servicer.budget, servicer.filter_pacer
        )
        await view.start()
        servicer.web_login = view.login
        web = listener_facts(self.web.tls, [view.address], WEB)
        servicer.run_facts = replace(servicer.run_facts, listeners=web)

    def _ssh_share(self) -> ssh_share.SshShare | None:
        """How `ssh` command jobs share one connection per destination (sources/ssh_share.py):
        a daemon alone only (a node's fence kills all of a job's upstream, and a master serves
        several jobs)."""
        directory = self.config.paths.root / "ssh"
        if self.config.cluster is not None or not ssh_share.fits(directory):
            return None
        ensure_private_dir(directory)
        return ssh_share.SshShare(directory)

    def _record_kind(self) -> None:
        """One kind of daemon per home (home_kind.py; the placement's `join` checked the
        database): how this one runs is recorded, before anything is served and only by the
        daemon holding the lock, for the CLI's autostart to respect."""
        if self._options is not None:
            record_options(self.config.paths, os.getpid(), self._options)

    async def _start_network(self, server: grpc.aio.Server) -> None:
        """The --listen addresses' server, and the cap on one address's connections to them
        (peer_cap.py)."""
        await server.start()
        self._network_server = server
        if self._peer_cap is not None:
            self._peer_cap.start(self._essentials)

    def _watch_certificates(self, listeners: tuple[ListenerFacts, ...]) -> None:
        """The TCP listeners' certificates (gRPC and web alike): their expiry as a metric, and
        warnings in the log."""
        if self._metrics is not None:
            self._metrics.listeners = listeners
        self._certificates = CertificateWatch(listeners)
        self._certificates.start(self._essentials)

    async def _watch_placement_health(self, placement: Placement, health_servicer: Any) -> None:
        """The health service's reports: applied in order by the "health" task (essential)."""
        reports = self._health = HealthReports(health_servicer)
        self._essentials.spawn(reports.run(), name=HEALTH)
        serving = placement.report_health(lambda serving: reports.report(CLUSTER_HEALTH, serving))
        if serving is not None:  # (a daemon alone has no health of its own there)
            await reports.set(CLUSTER_HEALTH, serving)

    def _essential_died(self, failure: EssentialTaskDied) -> None:
        """The supervisor's word: health turns NOT_SERVING, and the daemon stops as on
        SIGTERM (followers are told "daemon stopping"); its entry point exits with the
        reason. One that died while the daemon started fails the start instead."""
        if self._serving and self._stopping_after_failure is None:
            self._stopping_after_failure = asyncio.get_running_loop().create_task(
                self._stop_after(failure), name="stop-after-failure"
            )

    async def _stop_after(self, failure: EssentialTaskDied) -> None:
        try:
            if self._health is not None:
                await self._health.fail()
            await self.stop()
        except Exception:  # nothing left to serve with: the entry point exits all the same
            logger.exception("stopping after the death of %s failed", failure.task_name)
            self._stopped.set()

    def _server_options(self) -> list[tuple[str, int]]:
        """The Unix socket's server: its only peer is the owner, who may open many streams."""
        limit = self.config.max_concurrent_streams
        return [
            # The C core queues at most 1000 unanswered requests by default: a burst of
            # 2000 subscriptions would see some cancelled.
            ("grpc.server.max_pending_requests", limit),
            ("grpc.server.max_pending_requests_hard_limit", limit),
            *self._common_options(),
        ]

    def _common_options(self) -> list[tuple[str, int]]:
        return [
            ("grpc.max_send_message_length", 8 * 1024 * 1024),
            # Just above the largest request the limits allow (gRPC's default is 4 MiB,
            # which a Publish of the documented maximum exceeds by its framing).
            ("grpc.max_receive_message_length", limits.MAX_REQUEST_BYTES),
            *SERVER_KEEPALIVE_OPTIONS,
        ]

    def _network(
        self,
        servicer: TailhubServicer,
        health_servicer: health.HealthServicer,
        counting: list[grpc.aio.ServerInterceptor[Any, Any]],
    ) -> grpc.aio.Server | None:
        """The TCP listeners' server, its ports bound (ListenerError if one cannot be)."""
        network = self.network
        if network is None or self._manager is None:
            return None
        interceptor = AuthInterceptor(
            TokenIndex(self.config.paths.root),
            _launched_target(self._manager),
            StreamCaps(network.max_streams, network.max_streams_per_token),
            self._failed_auth,
        )
        # Not the socket's limits: anyone who reaches the port may send frames before any
        # token is checked (listeners.network_limits). The connections' descriptors are kept
        # aside from what jobs may take, as the web view's are.
        descriptors = self._manager.descriptors
        connections = connection_cap(descriptors.limit)
        if descriptors.limit is not None:
            descriptors.reserve += connections
        server = grpc.aio.server(
            options=[*self._common_options(), *network_limits(network, connections)],
            interceptors=[*counting, interceptor],
        )
        _serve(server, servicer, health_servicer)
        bound = bind(server, network)
        for address in bound:
            logger.info("tailhubd listening on %s (%s)", address, describe(network))
        ports = {parse_address(address).port for address in bound}
        self._peer_cap = PeerCap(ports, network.max_connections_per_peer, connections)
        servicer.run_facts = replace(
            servicer.run_facts,
            # The gRPC listeners first, then the web view's.
            listeners=(*listener_facts(network.tls, bound), *servicer.run_facts.listeners),
            max_streams=network.max_streams,
            max_streams_per_token=network.max_streams_per_token,
        )
        return server

    async def stop(self, grace: float | None = None) -> None:
        """Ends subscribers' streams with "daemon stopping", then the server, then the rest.
        Once: a second call waits for the first stop."""
        if self._stopping is None:
            self._stopping = asyncio.ensure_future(self._stop(grace))
        await asyncio.shield(self._stopping)

    async def _stop(self, grace: float | None) -> None:
        self._essentials.stop()
        if self._manager is not None:
            self._manager.begin_stop()
        grace = self.config.stop_grace if grace is None else grace
        servers = [server for server in (self._server, self._network_server) if server]
        await asyncio.gather(
            *(server.stop(grace) for server in servers), self._close_web(), self._close_owner(grace)
        )
        self._failed_auth.close()
        if self._servicer is not None:
            _log_budget(self._servicer.budget_figures())
        await self._close()

    async def _close_web(self) -> None:
        if self._web_view is not None:
            await self._web_view.close()
            self._web_view = None

    async def _start_owner(self, servicer: TailhubServicer) -> None:
        """The owner's lean endpoint for the CLI (owner_http.py), bound before the gRPC socket:
        a CLI that finds the daemon finds it too. Standalone only: a node's CLI needs gRPC's
        failover between nodes."""
        if self.config.cluster is not None or self._manager is None:
            return
        owner = self._owner = OwnerEndpoint(self._manager, self.config, servicer.budget)
        if self._metrics is not None:
            owner.on_request = self._metrics.count_owner_request
        await owner.start(owner_socket(self.config.paths.root))

    async def _close_owner(self, grace: float = 0.0) -> None:
        if self._owner is not None:
            await self._owner.close(grace)
            self._owner = None

    async def _close(self) -> None:
        await self._close_web()
        await self._close_owner()
        if self._certificates is not None:
            await self._certificates.close()
            self._certificates = None
        if self._peer_cap is not None:
            await self._peer_cap.close()
            self._peer_cap = None
        if self._metrics_endpoint is not None:
            await self._metrics_endpoint.close()
            self._metrics_endpoint = None
        if self._manager is not None:
            await self._manager.close()
            self._manager = None
            # Once the commands are stopped: the ssh masters they shared (left the group).
            await asyncio.to_thread(ssh_share.close_masters, self.config.paths.root / "ssh")
        if self._placement is not None:
            await self._placement.close()
            self._placement = None
        await self._essentials.aclose()
        if self._store is not None:
            self._store.close()
            self._store = None
        self._watcher.close(asyncio.get_running_loop())
        if self._server is not None:
            with contextlib.suppress(FileNotFoundError):
                self.config.paths.socket.unlink()
            self._server = None
        self._network_server = None
        if self._lock is not None:
            self._lock.release()
        self._stopped.set()

    async def wait_closed(self) -> None:
        await self._stopped.wait()

    async def __aenter__(self) -> Daemon:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.stop()


def _serve(
    server: grpc.aio.Server, servicer: TailhubServicer, health_servicer: health.HealthServicer
) -> None:
    """The same service, health and reflection on the socket's server and the network's."""
    server.add_generic_rpc_handlers((servicer.handler(),))
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    reflection.enable_server_reflection(
        (SERVICE_NAME, health.SERVICE_NAME, reflection.SERVICE_NAME), server
    )


def _launched_target(manager: JobManager) -> LaunchedTarget:
    """For auth.py: the first launched (local or SkyPilot) job a CancelJobs would cancel."""

    def launched(job_ids: Sequence[int], everything: bool) -> int | None:
        jobs = manager.all_jobs() if everything else []
        for job_id in job_ids:
            with contextlib.suppress(JobError):
                jobs.append(manager.get(job_id))
        for job in jobs:
            if not job.state.terminal and backend_of(job.record.spec):
                return job.id
        return None

    return launched


def _log_budget(figures: BudgetFigures) -> None:
    """What the in-flight budget did over the daemon's life (the benchmark reads this line)."""
    logger.info(
        "subscriber budget: peak %d of %d bytes in flight; %d chunks, %d shrunk,"
        " %d waited %.3f s in all; %d overdrafts",
        figures.peak_in_flight,
        figures.limit,
        figures.grants,
        figures.shrunk,
        figures.waits,
        figures.wait_seconds,
        figures.overdrafts,
    )
