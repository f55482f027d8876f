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
import random
import secrets
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import redis.asyncio
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import RedisError

from tailhub.daemon.cluster import ClusterRefused
from tailhub.daemon.cluster.fence import Fences
from tailhub.daemon.cluster.mirror import Mirror
from tailhub.daemon.cluster.records import record_to_json
from tailhub.daemon.cluster.redis_store import LOST, RedisStore
from tailhub.daemon.cluster.sync import RecordSync, first_offset_key
from tailhub.daemon.cluster.takeover import FETCHED_ANYWHERE, Takeover
from tailhub.daemon.cluster.watchdog import LeaseWatchdog, kill_upstream
from tailhub.daemon.cluster.writer import HeldLease, LeasedFetcher, LogWriter
from tailhub.daemon.model import ClusterUnavailable, NotFetchedYet
from tailhub.daemon.placement import ClusterView
from tailhub.daemon.runner import RunHandle
from tailhub.daemon.sources.command import die_with_parent
from tailhub.daemon.tasks import TaskSet

if TYPE_CHECKING:
    from tailhub.daemon.config import ClusterSettings, DaemonConfig
    from tailhub.daemon.counts import DaemonCounts
    from tailhub.daemon.fetcher import Fetcher, FetchOwner
    from tailhub.daemon.job import Job
    from tailhub.daemon.jobs import JobManager
    from tailhub.daemon.sources import Source
    from tailhub.daemon.store import JobStore

logger = logging.getLogger(__name__)

# A lease is surely ours until this share of its length after a renewal was sent (the rest
# covers the trip to Redis and clocks that drift): the fetch stops here at that moment.
_SAFE_SHARE = 0.6
# How long a subscriber from the log's end waits for this daemon to catch up.
_CATCH_UP_SECONDS = 30.0
# Connections to Redis at most (one is the mirror's blocking read, one the announcements').
_REDIS_CONNECTIONS = 32
# A node's name is held this many leases past its last renewal.
_NODE_HOLD_LEASES = 2


def describe_url(url: str) -> str:
    """host:port/db of a Redis URL, never its password."""
    kwargs: dict[str, Any] = redis.connection.parse_url(url)  # type: ignore[no-untyped-call]
    if "path" in kwargs:
        return f"unix:{kwargs['path']}/{kwargs.get('db', 0)}"
    return f"{kwargs.get('host', 'localhost')}:{kwargs.get('port', 6379)}/{kwargs.get('db', 0)}"


async def _grown_to(job: Job, size: int) -> None:
    while job.log_size < size and not job.sealed and job.mirror:
        await job.changed.wait()


class ClusterNode:
    """Implements `Placement` for a daemon in a cluster."""

    def __init__(self, settings: ClusterSettings, config: DaemonConfig, fences: Fences) -> None:
        self.settings = settings
        # The fences around this node's upstream commands, told of every renewal.
        self._fences = fences
        self._config = config
        self.name = settings.node_name
        self.redis_name = describe_url(settings.redis_url)
        timeout = max(0.5, settings.lease_ms / 4000)
        # Bounded, and a call waits for a free connection rather than failing (many jobs'
        # writers at once must not look like Redis being away).
        pool = redis.asyncio.BlockingConnectionPool.from_url(
            settings.redis_url,
            max_connections=_REDIS_CONNECTIONS,
            timeout=timeout,
            socket_timeout=timeout,
            socket_connect_timeout=timeout,
            # Retries are ours: a lease holder must know within its deadline.
            retry=Retry(NoBackoff(), 0),
        )
        self._redis = RedisStore(redis.asyncio.Redis(connection_pool=pool))
        self._manager: JobManager | None = None
        self._store: JobStore | None = None
        self._held: dict[int, HeldLease] = {}
        # Set (and replaced) whenever this node takes a lease.
        self._took_lease = asyncio.Event()
        self._writers: dict[int, LogWriter] = {}
        self._deadlines: dict[int, asyncio.TimerHandle] = {}
        self._mirror = Mirror(self._redis, self)
        self._records: RecordSync | None = None
        self._watchdog = LeaseWatchdog()
        self._tasks = TaskSet()
        self._cluster_id = ""
        self._token = secrets.token_hex(8)  # this process's hold on the node name
        self.connected = False
        self.lost_data = False
        # Set when the daemon stops: every loop ends at its next turn. (redis-py may turn a
        # cancellation that lands inside a call into a connection error, which the loops
        # would otherwise take for Redis being away, and go on.)
        self.closing = False
        self.stale_appends_refused = 0
        self.nodes = 0
        # Told when Redis becomes reachable or not (the health service's cluster part).
        self.on_health: Callable[[bool], None] = lambda serving: None

    @property
    def _jobs(self) -> JobManager:
        assert self._manager is not None
        return self._manager

    @property
    def _sync(self) -> RecordSync:
        assert self._records is not None
        return self._records

    @property
    def held(self) -> dict[int, HeldLease]:
        """The fetch leases this node holds, by job id."""
        return self._held

    def request_local_cancel(self, job: Job) -> None:
        """Another node asked (through Redis) to cancel a job fetched here."""
        job.record.cancel_requested = True
        self._tasks.spawn(self._jobs.cancel([job.id], False), name=f"cancel-{job.id}")

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
        self._store = store
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
        self.connected = True

    async def _take_node_name(self) -> bool:
        """Takes the node name; a daemon restarted right after a crash waits until its
        predecessor's hold (renewed by it every quarter lease) has expired."""
        deadline = time.monotonic() + _NODE_HOLD_LEASES * self._lease_s + 1.0
        while not await self._redis.hold_node(self.name, self._token, self._node_hold_ms):
            if time.monotonic() > deadline:
                return False
            await asyncio.sleep(self._lease_s / 4)
        return True

    @property
    def _node_hold_ms(self) -> int:
        return _NODE_HOLD_LEASES * self.settings.lease_ms

    async def start(self, manager: JobManager) -> None:
        self._manager = manager
        assert self._store is not None
        self._records = RecordSync(
            self._redis,
            manager,
            self._store,
            self._mirror,
            self,
            retry_seconds=min(1.0, self._lease_s / 4),
        )
        self._watchdog.start()
        await self._sync.sync_all()
        if not die_with_parent():
            logger.warning(
                "setpriv (util-linux) is not installed: the commands of a daemon killed with "
                "kill -9 may outlive it until they next write"
            )
        spawn = self._tasks.spawn
        spawn(self._keep_alive(), name="cluster-keep-alive")
        spawn(
            Takeover(self._redis, manager, self._mirror, self._sync, self).run(),
            name="cluster-take-over",
        )
        spawn(self._sync.listen(), name="cluster-listen")
        spawn(self._mirror.run(), name="cluster-mirror")
        logger.info(
            "node %s joined the cluster at %s (lease %d ms)",
            self.name,
            self.redis_name,
            self.settings.lease_ms,
        )

    async def close(self) -> None:
        """Stops the loops and gives the leases back (another node takes over at once)."""
        self.closing = self._mirror.closing = True
        for lease in self._held.values():
            lease.lost = True  # (its writer ends)
        await self._tasks.aclose()
        self._watchdog.close()
        self._fences.close_all()
        for handle in self._deadlines.values():
            handle.cancel()
        try:
            for job_id, lease in list(self._held.items()):
                await self._redis.release(job_id, lease.token)
            # A daemon restarted with this name need not wait for the hold to expire.
            await self._redis.release_node(self.name, self._token)
        except RedisError:
            pass  # they expire on their own
        await self._redis.client.aclose(close_connection_pool=True)

    def view(self) -> ClusterView:
        return ClusterView(
            node_name=self.name,
            redis=self.redis_name,
            connected=self.connected,
            leases_held=len(self._held),
            stale_appends_refused=self.stale_appends_refused,
            nodes=self.nodes,
        )

    # -- Placement -----------------------------------------------------------------------------
    async def new_job_id(self) -> int | None:
        self._check_usable()
        try:
            known = max((job.id for job in self._jobs.all_jobs()), default=0)
            return await self._redis.next_job_id(known)
        except RedisError as error:
            self.redis_failed(error)
            raise ClusterUnavailable(self._unreachable(error)) from None

    async def claim_new(self, job: Job) -> None:
        job.home_node = "" if job.record.spec.kind in FETCHED_ANYWHERE else self.name
        sent = time.monotonic()
        try:
            token = await self._redis.create(
                job.id,
                record_to_json(job.record, job.home_node),
                self.name,
                self.settings.lease_ms,
            )
        except RedisError as error:
            self.redis_failed(error)
            raise ClusterUnavailable(self._unreachable(error)) from None
        self.hold(job, token, sent)

    def may_fetch(self, job: Job) -> bool:
        return job.id in self._held

    def make_fetcher(
        self,
        job: Job,
        source: Source,
        owner: FetchOwner,
        config: DaemonConfig,
        counts: DaemonCounts,
    ) -> Fetcher:
        writer = self._writers.get(job.id)
        if writer is None:
            raise ClusterUnavailable(f"job {job.id} is not fetched by this node")
        return LeasedFetcher(job, source, owner, config, counts, writer)

    def saved(self, job: Job) -> None:
        writer = self._writers.get(job.id)
        if writer is None or writer.lease.lost:
            return
        if job.sealed:
            writer.end()
        else:
            writer.save()

    async def watch(self, job: Job, *, catch_up: bool) -> None:
        if not job.mirror:
            return
        self._mirror.want(job)
        try:  # how far the cluster's copy goes now (a follower may resume beyond ours)
            size, _, first = (await self._redis.sizes([job.id]))[job.id]
            job.cluster_size, job.cluster_first = max(job.cluster_size, size), first
        except RedisError as error:
            self.redis_failed(error)
        if catch_up and job.log_size < job.cluster_size:
            wanted = job.cluster_size
            # Bounded: a follower never waits long for a Redis that went away.
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(_grown_to(job, wanted), _CATCH_UP_SECONDS)

    async def wait_to_fetch(self, job: Job) -> None:
        if job.id in self._held or job.sealed or job.home_node != self.name:
            return
        if job.record.spec.kind in FETCHED_ANYWHERE:
            return  # (any node may hold it: it is fetched elsewhere)
        self._check_usable()
        # Its old lease (this node's before a restart, or a lease lost while Redis was
        # away) expires within a lease; the take-over loop takes it back a round later.
        deadline = time.monotonic() + self._lease_s + 1.0
        while job.id not in self._held and not job.sealed and not self.lost_data:
            left = deadline - time.monotonic()
            if left <= 0:
                raise NotFetchedYet(
                    f"job {job.id} is not taken back by this node ({self.name}) yet: its "
                    "previous lease has not expired, or Redis is unreachable; try again"
                )
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._took_lease.wait(), left)
        self._check_usable()

    def cancel_elsewhere(self, job: Job) -> bool:
        if job.id in self._held:
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
        lease = self._held.pop(job.id, None)
        if lease is None:
            return
        lease.lost = True
        self._watchdog.forget(job.id)
        self._fences.forget(job.id)
        self._writers.pop(job.id, None)
        handle = self._deadlines.pop(job.id, None)
        if handle is not None:
            handle.cancel()
        if stale_append:
            self.stale_appends_refused += 1
        # At once, not when the cancelled fetch gets to it: the loop may stall before then,
        # and another node's upstream may start as soon as the lease expires.
        kill_upstream(RunHandle.from_json(job.record.source_state))
        self._jobs.stop_fetching(job)
        job.upstream_open = False
        job.lease_holder = ""
        logger.warning("job %d: this node stopped fetching it: %s", job.id, reason)
        if tell_followers:
            self._jobs.notice(job, f"node {self.name} stopped fetching this job: {reason}")
        # Given back at once (if it is still ours): another node need not wait out its expiry.
        self._tasks.spawn(self._give_back(lease), name=f"give-back-{job.id}")
        if job.home_node != self.name or job.record.spec.kind in FETCHED_ANYWHERE:
            job.mirror = True
            self._mirror.want(job)

    async def _give_back(self, lease: HeldLease) -> None:
        with contextlib.suppress(RedisError):
            await self._redis.release(lease.job_id, lease.token)

    def job_ended(self, job: Job) -> None:
        self._watchdog.forget(job.id)
        self._fences.forget(job.id)
        self._held.pop(job.id, None)
        self._writers.pop(job.id, None)
        handle = self._deadlines.pop(job.id, None)
        if handle is not None:
            handle.cancel()
        job.lease_holder = ""

    def starts_at(self, job: Job, offset: int) -> None:
        job.first_offset = offset
        assert self._store is not None
        self._store.set_meta(first_offset_key(job.id), str(offset))

    def ended_remotely(self, job: Job) -> None:
        self._jobs.seal_remote(job)

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
            raise ClusterUnavailable(
                f"Redis at {self.redis_name} lost the cluster's data; see the daemon's log"
            )

    def _unreachable(self, error: Exception) -> str:
        return f"the cluster's Redis at {self.redis_name} is unreachable ({error}); try again"

    def _tell_followers(self, message: str) -> None:
        for job in self._jobs.all_jobs():
            if job.subscribers and not job.sealed:
                self._jobs.notice(job, message)

    def hold(self, job: Job, token: str, sent_at: float) -> LogWriter:
        """This node fetches the job now, under the lease `token` acquired at `sent_at`;
        returns the writer its fetcher's bytes go through."""
        lease = HeldLease(job.id, token, sent_at + self._lease_s * _SAFE_SHARE)
        self._held[job.id] = lease
        # Publishes waiting for this node to take a job back look again.
        self._took_lease.set()
        self._took_lease = asyncio.Event()
        writer = LogWriter(
            job,
            lease,
            self._redis,
            self,
            home=job.home_node,
            retention=self.settings.retention_bytes,
        )
        self._writers[job.id] = writer
        self._tasks.spawn(writer.run(), name=f"cluster-writer-{job.id}")
        self._arm_deadline(lease)
        self._watchdog.watch(lease, lambda: RunHandle.from_json(job.record.source_state))
        job.lease_holder = self.name
        job.mirror = False
        self._mirror.forget(job.id)
        return writer

    def _arm_deadline(self, lease: HeldLease) -> None:
        """Stops the fetch when the lease may have expired: before anyone else can take it
        (here, in the watchdog thread, and in the fence around the command)."""
        self._fences.extend(lease.job_id, lease.valid_until)
        old = self._deadlines.pop(lease.job_id, None)
        if old is not None:
            old.cancel()
        loop = asyncio.get_running_loop()
        delay = lease.valid_until - time.monotonic()
        self._deadlines[lease.job_id] = loop.call_later(max(0.0, delay), self._expire, lease)

    def _expire(self, lease: HeldLease) -> None:
        if self._held.get(lease.job_id) is lease and (
            lease.lost or time.monotonic() >= lease.valid_until
        ):
            job = self._jobs.get(lease.job_id)
            self.lease_lost(job, "its lease could not be renewed in time", stale_append=False)

    async def _keep_alive(self) -> None:
        """Renews the node's name and every lease held, four times per lease length."""
        while not self.closing:
            await asyncio.sleep(self._lease_s / 4)
            self._stall_for_tests()
            sent = time.monotonic()
            try:
                await self._check_cluster()
                await self._redis.hold_node(self.name, self._token, self._node_hold_ms)
                for job_id, lease in list(self._held.items()):
                    if lease.lost:  # the watchdog stopped its upstream
                        self._expire(lease)
                        continue
                    renewed = await self._redis.renew(job_id, lease.token, self.settings.lease_ms)
                    if renewed == LOST:
                        self.data_lost()
                    elif self._held.get(job_id) is not lease:
                        continue
                    elif renewed:
                        lease.valid_until = sent + self._lease_s * _SAFE_SHARE
                        self._arm_deadline(lease)
                    else:
                        self.lease_lost(
                            self._jobs.get(job_id), "its lease expired", stale_append=False
                        )
                await self._check_ends()
                self.nodes = await self._redis.node_count()
            except RedisError as error:
                self.redis_failed(error)
                continue
            self.redis_ok()

    def _stall_for_tests(self) -> None:
        """TAILHUB_CLUSTER_STALL=P:S: before a renewal of the leases it holds, with
        probability P, the whole daemon stops for S seconds (a GC pause, a frozen host), as
        the lease race tests want."""
        stall = self.settings.stall
        if stall is not None and self._held and random.random() < stall[0]:
            time.sleep(stall[1])

    async def _check_cluster(self) -> None:
        if await self._redis.cluster_id() != self._cluster_id:
            self.data_lost()

    async def _check_ends(self) -> None:
        """Whether Redis went back in time (restored from an older copy) under a job held
        here: it then holds fewer bytes than it acknowledged, which only the holder's own
        copy can give back (its writer does, before anything new)."""
        before = {job_id: self._jobs.get(job_id).log_size for job_id in self._held}
        if not before:
            return
        # (Sizes here taken first: they grow only once Redis stored the bytes, so Redis
        # holding fewer than that is Redis having lost them, never a race with an append.)
        found = await self._redis.sizes(list(before))
        for job_id, (size, _, _) in found.items():
            writer = self._writers.get(job_id)
            if writer is not None and size < before[job_id]:
                writer.check_end()

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
        for job_id in list(self._held):
            self.lease_lost(
                self._jobs.get(job_id),
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
        self._jobs.stop_fetching(job)
        self._jobs.fail_start(job, reason)
