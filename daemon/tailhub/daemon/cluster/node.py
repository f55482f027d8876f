"""This daemon as one node of a cluster: the `Placement` of jobs when daemons share a Redis.

- Ids and records: a new job takes its id from Redis and is recorded there; every node
  copies every record into its own database, so `jobs queue` anywhere lists them all
  (cluster/sync.py).
- One fetcher per job: the node holding a job's lease fetches it (cluster/writer.py). The
  lease is renewed every quarter of its length; a node that cannot renew in time stops the
  fetch at once, and one whose write is refused (the lease moved on) too.
- Takeover: every node looks for jobs nobody holds that it may fetch (command and SkyPilot
  jobs anywhere; local, file and push jobs on their home node only) and takes the lease of
  one it finds, reading the stream up to its end before fetching on from there
  (cluster/takeover.py).
- Followers here of a job fetched elsewhere read its bytes from Redis (cluster/mirror.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from redis.exceptions import RedisError

from tailhub.daemon import faults
from tailhub.daemon.cluster.commands import FencedCommands
from tailhub.daemon.cluster.connection import connect, describe_url
from tailhub.daemon.cluster.creations import Creations
from tailhub.daemon.cluster.leases import Leases
from tailhub.daemon.cluster.mirror import Mirror
from tailhub.daemon.cluster.placed import placed
from tailhub.daemon.cluster.sync import RecordSync, first_offset_key
from tailhub.daemon.cluster.takeover import FETCHED_ANYWHERE, Takeover
from tailhub.daemon.cluster.watchdog import kill_upstream
from tailhub.daemon.cluster.writer import HeldLease, LogWriter, RedisFirst
from tailhub.daemon.errors import (
    ClusterDataLost,
    ClusterRefused,
    ClusterUnavailable,
    NotFetchedYet,
)
from tailhub.daemon.home_kind import claim_node_name
from tailhub.daemon.placement import ClusterView
from tailhub.daemon.process import CommandWrap
from tailhub.daemon.runner import RunHandle
from tailhub.daemon.supervisor import Supervisor
from tailhub.daemon.tasks import TaskSet

if TYPE_CHECKING:
    from tailhub.daemon.config import ClusterSettings, DaemonConfig
    from tailhub.daemon.live_job import Job
    from tailhub.daemon.placement import JobsPort
    from tailhub.daemon.sink import LocalLog, LocalSink, Sink
    from tailhub.daemon.store import JobStore

logger = logging.getLogger(__name__)

# How long a subscriber from the log's end waits for this daemon to catch up.
_CATCH_UP_SECONDS = 30.0
# A node's name is held this many leases past its last renewal.
_NODE_HOLD_LEASES = 2


async def _grown_to(job: Job, size: int) -> None:
    while job.log_size < size and not job.sealed and placed(job).mirrored:
        await job.changed.wait()


class ClusterNode:
    """Implements `Placement` for a daemon in a cluster."""

    def __init__(self, settings: ClusterSettings, config: DaemonConfig) -> None:
        self.settings = settings
        # How this node starts upstream commands: behind its one fence, told of every renewal.
        self._commands = FencedCommands()
        self._config = config
        self.name = settings.node_name
        self.redis_name = describe_url(settings.redis_url)
        self._redis = connect(settings)
        self._port: JobsPort | None = None
        self._store: JobStore | None = None
        self._creations: Creations | None = None
        self._mirror = Mirror(self._redis, self)
        self._records: RecordSync | None = None
        self._tasks = TaskSet()
        self._leases = Leases(self._redis, settings, self._commands.fence, self._tasks, self)
        # The node's loops (keep-alive, take-over, record sync, mirror): essential.
        self._essentials = Supervisor()
        self._loops: list[asyncio.Task[Any]] = []
        self._cluster_id = ""
        self._token = secrets.token_hex(8)  # this process's hold on the node name
        self.connected = self.lost_data = False
        # Set when the daemon stops: every loop ends at its next turn. (redis-py may turn a
        # cancellation inside a call into a connection error, taken for Redis being away.)
        self.closing = False
        self.stale_appends_refused = 0
        self.nodes = 0
        # Told when Redis becomes reachable or not (the health service's cluster part).
        self.on_health: Callable[[bool], None] = lambda serving: None

    @property
    def _manager(self) -> JobsPort:
        assert self._port is not None
        return self._port

    @property
    def _sync(self) -> RecordSync:
        assert self._records is not None
        return self._records

    @property
    def held(self) -> dict[int, HeldLease]:
        """The fetch leases this node holds, by job id."""
        return self._leases.held

    def request_local_cancel(self, job: Job) -> None:
        """Another node asked (through Redis) to cancel a job fetched here."""
        job.record.cancel_requested = True
        self._tasks.spawn(self._manager.cancel([job.id], False), name=f"cancel-{job.id}")

    def _highest_known(self) -> int:  # (0 while it joins: it knows none yet)
        jobs = self._port.all_jobs() if self._port is not None else []
        return max((job.id for job in jobs), default=0)

    async def _hold_node(self) -> bool:
        hold_ms, known = self._node_hold_ms, self._highest_known()
        return await self._redis.hold_node(self.name, self._token, hold_ms, known)

    @property
    def lease_ms(self) -> int:
        return self.settings.lease_ms

    @property
    def _lease_s(self) -> float:
        return self.settings.lease_ms / 1000

    # -- lifecycle ---------------------------------------------------------------------------
    async def join(self, store: JobStore) -> None:
        """Connects, takes the node name, and checks that the state directory belongs to this
        cluster. ClusterRefused (before anything is served) when it cannot."""
        try:
            self._cluster_id = await self._redis.ensure_cluster_id()
            if not await self._take_node_name():
                raise ClusterRefused(
                    f"another daemon runs as node {self.name!r} in the cluster at "
                    f"{self.redis_name}: give this one its own --node-name"
                )
        except RedisError as error:
            raise ClusterRefused(f"cannot reach Redis at {self.redis_name}: {error}") from None
        self._store, self._creations = store, Creations(store, self._redis)
        joined = store.meta("cluster")
        if joined is None:
            if store.job_count():
                raise ClusterRefused(
                    f"{store.path} holds jobs of a daemon without Redis; their ids would "
                    "clash with the cluster's: give cluster mode its own --home"
                )
            store.set_meta("cluster", self._cluster_id)
        elif joined != self._cluster_id:
            raise ClusterRefused(
                f"{store.path} belongs to another cluster than the one at {self.redis_name} "
                "(a different Redis, or one that lost its data): give this daemon a new "
                "--home, or point it at its cluster's Redis"
            )
        claim_node_name(store, self.name)
        self.connected = True

    async def _take_node_name(self) -> bool:
        """Takes the node name; a daemon restarted right after a crash waits until its
        predecessor's hold (renewed by it every quarter lease) has expired."""
        deadline = time.monotonic() + _NODE_HOLD_LEASES * self._lease_s + 1.0
        while not await self._hold_node():
            if time.monotonic() > deadline:
                return False
            await asyncio.sleep(self._lease_s / 4)
        return True

    @property
    def _node_hold_ms(self) -> int:
        return _NODE_HOLD_LEASES * self.settings.lease_ms

    async def start(self, jobs: JobsPort, essentials: Supervisor | None = None) -> None:
        """Starts the node's loops under `essentials` (the daemon's supervisor): a node whose
        keep-alive, take-over, record sync or mirror died stops the daemon."""
        manager = jobs
        self._port = manager
        assert self._store is not None
        self._records = RecordSync(
            self._redis,
            manager,
            self._store,
            self._mirror,
            self,
            retry_seconds=min(1.0, self._lease_s / 4),
        )
        self._leases.watchdog.start()
        self._commands.fence.on_death = self._fence_died
        self._commands.fence.start()
        await self._sync.sync_all()
        assert self._creations is not None
        await self._creations.finish(manager, self.claim_new)
        if essentials is not None:
            self._essentials = essentials
        spawn = self._essentials.spawn
        self._loops = [
            spawn(self._keep_alive(), name=faults.KEEP_ALIVE),
            spawn(
                Takeover(self._redis, manager, self._mirror, self._sync, self).run(),
                name=faults.TAKE_OVER,
            ),
            spawn(self._sync.listen(), name=faults.RECORD_SYNC),
            spawn(self._mirror.run(), name=faults.MIRROR),
        ]
        logger.info(
            "node %s joined the cluster at %s (lease %d ms)",
            self.name,
            self.redis_name,
            self.settings.lease_ms,
        )

    async def close(self) -> None:
        """Stops the loops and gives the leases back (another node takes over at once)."""
        self.closing = self._mirror.closing = True
        self._leases.stop()
        await self._essentials.cancel(self._loops)
        await self._tasks.aclose()
        self._leases.close()
        try:
            await self._leases.release_all()
            # A daemon restarted with this name need not wait for the hold to expire.
            await self._redis.release_node(self.name, self._token)
        except RedisError:
            pass  # they expire on their own
        await self._redis.aclose()

    def report_health(self, report: Callable[[bool], None]) -> bool | None:
        self.on_health = report
        return self.connected

    def wrap_command(self) -> CommandWrap:
        return self._commands

    def local_log(self, job: Job) -> LocalLog:
        return self._manager.local_log(job)

    def view(self) -> ClusterView:
        return ClusterView(
            node_name=self.name,
            redis=self.redis_name,
            connected=self.connected,
            leases_held=len(self._leases.held),
            stale_appends_refused=self.stale_appends_refused,
            nodes=self.nodes,
        )

    # -- Placement -----------------------------------------------------------------------------
    async def new_job_id(self) -> int | None:
        self._check_usable()
        try:
            return await self._redis.next_job_id(self._highest_known())
        except RedisError as error:
            self.redis_failed(error)
            raise ClusterUnavailable(self._unreachable(error)) from None

    async def claim_new(self, job: Job) -> None:
        view = placed(job)
        view.home = "" if job.record.spec.kind in FETCHED_ANYWHERE else self.name
        sent = time.monotonic()
        assert self._creations is not None
        try:
            token = await self._creations.create(job, view.home, self.name, self.settings.lease_ms)
        except RedisError as error:
            self.redis_failed(error)
            raise ClusterUnavailable(self._unreachable(error)) from None
        if token is None:  # (never written over: somebody had replaced the id counter)
            raise ClusterUnavailable(f"job id {job.id} is taken in Redis already; try again")
        self.hold(job, token, sent)

    def may_fetch(self, job: Job) -> bool:
        return job.id in self._leases.held

    def make_sink(self, job: Job, local: LocalSink) -> Sink:
        writer = self._leases.writers.get(job.id)
        if writer is None:
            raise ClusterUnavailable(f"job {job.id} is not fetched by this node")
        return RedisFirst(job, writer, local)

    def saved(self, job: Job) -> None:
        writer = self._leases.writers.get(job.id)
        if writer is None or writer.lease.lost:
            return
        if job.sealed:
            writer.end()
        else:
            writer.save()

    async def prepare_read(self, job: Job, *, catch_up: bool) -> None:
        view = placed(job)
        if not view.mirrored:
            return
        self._mirror.want(job)
        try:  # how far the cluster's copy goes now (a follower may resume beyond ours)
            size, _, first = (await self._redis.sizes([job.id]))[job.id]
            view.size, view.kept_from = max(view.size, size), first
        except RedisError as error:
            self.redis_failed(error)
        if catch_up and job.log_size < view.size:
            wanted = view.size
            # Bounded: a follower never waits long for a Redis that went away.
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(_grown_to(job, wanted), _CATCH_UP_SECONDS)

    async def wait_to_fetch(self, job: Job) -> None:
        if job.id in self._leases.held or job.sealed or placed(job).home != self.name:
            return
        if job.record.spec.kind in FETCHED_ANYWHERE:
            return  # (any node may hold it: it is fetched elsewhere)
        self._check_usable()
        # Its old lease (this node's before a restart, or a lease lost while Redis was
        # away) expires within a lease; the take-over loop takes it back a round later.
        deadline = time.monotonic() + self._lease_s + 1.0
        while job.id not in self._leases.held and not job.sealed and not self.lost_data:
            left = deadline - time.monotonic()
            if left <= 0:
                raise NotFetchedYet(
                    f"job {job.id} is not taken back by this node ({self.name}) yet: its "
                    "previous lease has not expired, or Redis is unreachable; try again"
                )
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._leases.took.wait(), left)
        self._check_usable()

    def cancel_elsewhere(self, job: Job) -> bool:
        if job.id in self._leases.held:
            return False
        self._mirror.want(job)  # its end arrives through its stream
        self._tasks.spawn(self._redis.request_cancel(job.id), name=f"cancel-{job.id}")
        return True

    def allows_removal(self) -> bool:
        return False

    # -- writers and the mirror report here ---------------------------------------------------
    def lease_lost(
        self, job: Job, reason: str, *, stale_append: bool, tell_followers: bool = True
    ) -> None:
        lease = self._leases.drop(job.id)
        if lease is None:
            return
        lease.lost = True
        if stale_append:
            self.stale_appends_refused += 1
        # At once, not when the cancelled fetch gets to it: the loop may stall before then,
        # and another node's upstream may start as soon as the lease expires.
        kill_upstream(RunHandle.from_json(job.record.source_state))
        self._manager.stop_fetching(job)
        job.upstream_open = False
        view = placed(job)
        view.holder = ""
        logger.warning("job %d: this node stopped fetching it: %s", job.id, reason)
        if tell_followers:
            self._manager.tell_followers(
                job, f"node {self.name} stopped fetching this job: {reason}"
            )
        # Given back at once (if it is still ours): another node need not wait out its expiry.
        self._tasks.spawn(self._leases.give_back(lease), name=f"give-back-{job.id}")
        if view.home != self.name or job.record.spec.kind in FETCHED_ANYWHERE:
            view.mirrored = True
            self._mirror.want(job)

    def job_ended(self, job: Job) -> None:
        self._leases.drop(job.id)
        placed(job).holder = ""

    def lease_expired(self, job_id: int, reason: str) -> None:
        self.lease_lost(self._manager.get(job_id), reason, stale_append=False)

    def _fence_died(self, job_ids: list[int]) -> None:
        """The fence died: the commands it guarded stop with their leases (fail closed); the
        take-over starts them again behind the new one."""
        for job_id in job_ids:
            if job_id in self._leases.held:
                self.lease_expired(job_id, "the fence around its upstream command died")

    def starts_at(self, job: Job, offset: int) -> None:
        placed(job).first_offset = offset
        assert self._store is not None
        self._store.set_meta(first_offset_key(job.id), str(offset))

    def ended_remotely(self, job: Job) -> None:
        self._manager.ended_elsewhere(job)

    def redis_failed(self, error: Exception) -> None:
        if not self.connected:
            return
        self.connected = False
        logger.warning(
            "cluster: Redis at %s is unreachable (%s); no job is fetched until it is back",
            self.redis_name,
            error,
        )
        self.on_health(False)
        self._tell_followers(
            f"cluster: Redis at {self.redis_name} is unreachable; the log goes on when it is back"
        )

    def redis_ok(self) -> None:
        if self.connected or self.lost_data:
            return
        self.connected = True
        logger.info("cluster: Redis at %s is reachable again", self.redis_name)
        self.on_health(True)
        self._tell_followers(f"cluster: Redis at {self.redis_name} is reachable again")

    # -- internals -------------------------------------------------------------------------------
    def _check_usable(self) -> None:
        if self.lost_data:
            raise ClusterDataLost(
                f"Redis at {self.redis_name} lost the cluster's data; see the daemon's log"
            )

    def _unreachable(self, error: Exception) -> str:
        return f"the cluster's Redis at {self.redis_name} is unreachable ({error}); try again"

    def _tell_followers(self, message: str) -> None:
        for job in self._manager.all_jobs():
            if job.subscribers and not job.sealed:
                self._manager.tell_followers(job, message)

    def hold(self, job: Job, token: str, sent_at: float) -> LogWriter:
        """This node fetches the job now, under the lease `token` acquired at `sent_at`;
        returns the writer its fetcher's bytes go through."""
        view = placed(job)
        writer = self._leases.hold(job, token, sent_at, home=view.home)
        view.holder = self.name
        view.mirrored = False
        self._mirror.forget(job.id)
        return writer

    async def _keep_alive(self) -> None:
        """Renews the node's name and every lease held, four times per lease length."""
        while not self.closing:
            await asyncio.sleep(self._lease_s / 4)
            self._leases.watchdog.check()
            if self._leases.held:
                await faults.stall(self.settings.stall)
            sent = time.monotonic()
            try:
                # The leases first, in one round trip: each renewal's safe time counts from
                # `sent`, so nothing else waits before it.
                await self._leases.renew(sent)
                await self._check_cluster()
                await self._hold_node()
                await self._leases.check_ends(self._manager)
                self.nodes = await self._redis.node_count()
            except RedisError as error:
                self.redis_failed(error)
                continue
            self.redis_ok()

    async def _check_cluster(self) -> None:
        if await self._redis.cluster_id() != self._cluster_id:
            self.data_lost()

    def data_lost(self) -> None:
        """Redis no longer holds the cluster's data (it restarted empty, or was flushed):
        every follower here is told so in the same words on every node, once."""
        if self.lost_data:
            return
        self.lost_data = True
        self.connected = False
        self.on_health(False)
        logger.error(
            "cluster: Redis at %s no longer holds this cluster's data (it restarted without "
            "persistence, or was flushed): this node stops fetching. Logs and records it had "
            "are kept here; restart the daemons with a new --home to start a new cluster.",
            self.redis_name,
        )
        for job_id in list(self._leases.held):
            self.lease_lost(
                self._manager.get(job_id),
                "Redis lost its data",
                stale_append=False,
                tell_followers=False,
            )
        self._tell_followers(
            f"cluster: Redis at {self.redis_name} lost the cluster's data (it restarted "
            "without persistence, or was flushed): nothing more is fetched or stored; "
            "what this daemon has is still served"
        )

    def cannot_restore(self, job: Job, reason: str) -> None:
        """Redis went back in time past what this node's copy holds: the job fails with
        that reason (its end goes to Redis at Redis's end), rather than being fetched again
        and again."""
        self._manager.stop_fetching(job)
        self._manager.fail_start(job, reason)
