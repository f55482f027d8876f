"""Cluster failover: kill -9 the daemon holding a command job's lease, again and again.

Three daemons on one Redis, one replayable command job (`bench.replayable`) written at a fixed
rate, and one follower per daemon in this process (`Observer`), each resuming where it was
when its daemon dies. Each round kills the lease holder and measures, from the kill, the time
until another node holds the lease, and until a line written after the kill reaches a follower
of a surviving daemon (lease expiry, the command's restart and its replay included); then the
killed daemon is started again, so that three are up for the next round. At the end, every
follower must hold exactly the bytes written: no gap, no repeat.
"""

from __future__ import annotations

import bisect
import contextlib
import hashlib
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc

from bench.measure import percentile
from bench.redis_server import cluster_redis, reading
from bench.replayable import Source, attach, get_job
from bench.report import Table, number
from bench.writer import LINE_BYTES, TIMESTAMP_BYTES, timestamp_at
from harness.daemon_process import DaemonProcess
from harness.processes import ProcessSet
from harness.redis_server import RedisServer
from harness.waiting import wait_until
from tailhub.v1 import tailhub_pb2 as pb
from tailhub.v1 import tailhub_pb2_grpc as pb_grpc

ROUND_TIMEOUT = 60.0  # seconds for any one step of a round
SETTLE_BYTES = 1_000_000  # written between a round's start and its kill
# A follower whose daemon was killed must find the restarted one promptly: gRPC's default
# reconnect backoff grows to minutes.
CHANNEL_OPTIONS = [
    ("grpc.initial_reconnect_backoff_ms", 100),
    ("grpc.min_reconnect_backoff_ms", 100),
    ("grpc.max_reconnect_backoff_ms", 500),
]


def daemon_args(redis: RedisServer, index: int, lease_ms: int) -> list[str]:
    return ["--redis", redis.url, "--node-name", node_name(index), "--lease-ms", str(lease_ms)]


def node_name(index: int) -> str:
    return f"n{index + 1}"


@dataclass
class _Received:
    """What an observer has been sent so far; written by its thread, read by the scenario."""

    offset: int = 0
    gaps: int = 0  # chunks starting past the last byte received
    repeats: int = 0  # chunks starting before it
    breaks: int = 0  # streams that failed (its daemon killed) and were resumed
    state: str = ""  # the job's state in the `end` message, once received
    error: str | None = None
    # Per chunk holding a line's timestamp: the write time of its last line, and when it came.
    written: list[float] = field(default_factory=list)
    arrived: list[float] = field(default_factory=list)


class Observer:
    """A follower of one job on one daemon, in a thread; resumes at its offset when cut."""

    def __init__(self, address: str, job_id: int) -> None:
        self.address = address
        self.job_id = job_id
        self.received = _Received()
        self._digest = hashlib.sha256()
        self._stopping = threading.Event()
        self._call: Any = None
        self._thread = threading.Thread(target=self._run, name=f"observer {address}", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stopping.set()
        call = self._call
        if call is not None:
            call.cancel()
        self._thread.join(30)

    @property
    def ended(self) -> bool:
        return bool(self.received.state)

    def sha256(self) -> str:
        return self._digest.hexdigest()

    def first_arrival_after(self, moment: float) -> float | None:
        """When the first line written after `moment` arrived, if it has."""
        index = bisect.bisect_right(self.received.written, moment)
        arrived = self.received.arrived
        return arrived[index] if index < len(arrived) else None

    def _run(self) -> None:
        while not self._stopping.is_set():
            try:
                if self._follow():
                    return
            except grpc.RpcError as error:
                if self._stopping.is_set():
                    return
                self.received.breaks += 1
                self.received.error = f"{error.code().name}: {error.details()}"

    def _follow(self) -> bool:
        """One stream from the current offset; True once the job's end came."""
        received = self.received
        with grpc.insecure_channel(self.address, options=CHANNEL_OPTIONS) as channel:
            subscribe = pb_grpc.TailhubServiceStub(channel).Subscribe
            request = pb.SubscribeRequest(job_id=self.job_id, offset=received.offset, follow=True)
            call = subscribe(request, wait_for_ready=True)
            self._call = call
            if self._stopping.is_set():  # stop() came before the call could be cancelled
                self._call.cancel()
            for message in call:
                kind = message.WhichOneof("message")
                if kind == "chunk":
                    self._take(message.chunk.offset, message.chunk.data, time.time())
                elif kind == "end":
                    received.state = pb.JobState.Name(message.end.state)
                    return True
        return False

    def _take(self, offset: int, data: bytes, now: float) -> None:
        received = self.received
        if offset > received.offset:
            received.gaps += 1
        elif offset < received.offset:
            received.repeats += 1
        self._digest.update(data)
        end = offset + len(data)
        received.offset = end
        last_line = (end - TIMESTAMP_BYTES) // LINE_BYTES * LINE_BYTES
        if last_line >= offset:
            written = timestamp_at(data, last_line - offset)
            if written is not None:
                received.written.append(written)
                received.arrived.append(now)


def run(directory: Path, *, daemons: int, kills: int, lease_ms: int, rate: float) -> dict[str, Any]:
    directory.mkdir(parents=True)
    with contextlib.ExitStack() as stack:
        redis = stack.enter_context(cluster_redis(directory / "redis"))
        nodes = [
            DaemonProcess(directory / f"h{index}", daemon_args(redis, index, lease_ms))
            for index in range(daemons)
        ]
        for daemon in nodes:
            stack.enter_context(daemon)
        processes = stack.enter_context(ProcessSet())
        # Long enough for every round; stopped once they are done.
        source = Source.start(processes, directory, rate, kills * (lease_ms / 1000 + 60) + 60)
        job = attach(nodes[0], source, "cluster-failover")
        observers = [Observer(daemon.address, job) for daemon in nodes]
        for observer in observers:
            observer.start()
            stack.callback(observer.stop)
        _wait_live(observers, time.time())
        rounds = [_kill_holder(nodes, observers, job, source) for _ in range(kills)]
        source.stop_writer()
        wait_until(
            lambda: all(observer.ended for observer in observers),
            ROUND_TIMEOUT,
            "every follower to see the job end",
        )
        final = get_job(nodes[0].address, job)
        redis_reading = reading(redis)
    written = source.digest()
    lease = sorted(round_["lease_s"] for round_ in rounds)
    flow = sorted(round_["flow_s"] for round_ in rounds)
    return {
        "kills": kills,
        "lease_ms": lease_ms,
        "rate_bytes_per_s": rate,
        "rounds": rounds,
        "lease_p50_s": percentile(lease, 0.5),
        "lease_max_s": lease[-1] if lease else None,
        "flow_p50_s": percentile(flow, 0.5),
        "flow_max_s": flow[-1] if flow else None,
        "log_bytes": source.size(),
        "job_log_size": final.log_size,
        "job_state": pb.JobState.Name(final.state),
        "upstreams_opened": final.upstream_connections,
        "followers": [
            {
                "node": node_name(index),
                "bytes": observer.received.offset,
                "exact": observer.sha256() == written,
                "gaps": observer.received.gaps,
                "repeats": observer.received.repeats,
                "breaks": observer.received.breaks,
                "state": observer.received.state,
            }
            for index, observer in enumerate(observers)
        ],
        "survivor_breaks": sum(round_["survivor_breaks"] for round_ in rounds),
        "redis_used_memory_bytes": redis_reading.used_memory_bytes,
        "redis_rss_bytes": redis_reading.rss_bytes,
    }


def _holder(daemon: DaemonProcess, job: int) -> str:
    return get_job(daemon.address, job).lease_holder


def _wait_live(observers: list[Observer], since: float) -> None:
    """Until every follower has received a line written after `since`."""
    wait_until(
        lambda: all(observer.first_arrival_after(since) is not None for observer in observers),
        ROUND_TIMEOUT,
        "every follower to receive new lines",
    )


def _first_arrival(observers: list[Observer], since: float) -> float:
    """When a line written after `since` first reached one of `observers` (waits for one)."""

    def arrivals() -> list[float]:
        found = (observer.first_arrival_after(since) for observer in observers)
        return [arrival for arrival in found if arrival is not None]

    wait_until(arrivals, ROUND_TIMEOUT, "a line written after it to reach a follower")
    return min(arrivals())


def _kill_holder(
    nodes: list[DaemonProcess], observers: list[Observer], job: int, source: Source
) -> dict[str, Any]:
    names = [node_name(index) for index in range(len(nodes))]
    # Kill a holder that has been fetching for a while, not one just started.
    settled = source.size() + SETTLE_BYTES
    wait_until(lambda: source.size() >= settled, ROUND_TIMEOUT, "the job's log to grow")
    wait_until(lambda: _holder(nodes[0], job) in names, ROUND_TIMEOUT, "a lease holder")
    holder = _holder(nodes[0], job)
    victim = names.index(holder)
    survivors = [index for index in range(len(nodes)) if index != victim]
    breaks_before = sum(observers[index].received.breaks for index in survivors)
    log_bytes = source.size()
    killed_at = time.time()
    nodes[victim].kill()

    new_holder = ""

    def taken() -> bool:
        nonlocal new_holder
        new_holder = _holder(nodes[survivors[0]], job)
        return new_holder not in ("", holder)

    wait_until(taken, ROUND_TIMEOUT, "another daemon to take the lease")
    lease_s = time.time() - killed_at

    flow_s = _first_arrival([observers[index] for index in survivors], killed_at) - killed_at
    survivor_breaks = sum(observers[index].received.breaks for index in survivors) - breaks_before
    # It waits, as it starts, for the dead daemon's hold on its node name to expire.
    nodes[victim].start()
    restarted_at = time.time()
    restart_s = restarted_at - killed_at
    # Its follower resumes there: until it has new lines, the daemon is not back for it.
    back_s = _first_arrival([observers[victim]], restarted_at) - restarted_at
    return {
        "killed": holder,
        "took_over": new_holder,
        "log_bytes_at_kill": log_bytes,
        "lease_s": lease_s,
        "flow_s": flow_s,
        "survivor_breaks": survivor_breaks,
        # From the restart until its follower got a line written after it.
        "back_s": back_s,
        # From the kill until the restarted daemon listened (its node name hold expired).
        "restart_s": restart_s,
    }


def tables(result: dict[str, Any], settings: dict[str, Any]) -> list[Table]:
    rows = [
        (
            str(index + 1),
            f"{round_['killed']} -> {round_['took_over']}",
            number(round_["log_bytes_at_kill"], 1, 1 / 1e6),
            number(round_["lease_s"], 2),
            number(round_["flow_s"], 2),
            number(round_["restart_s"], 2),
            number(round_["back_s"], 2),
        )
        for index, round_ in enumerate(result["rounds"])
    ]
    rows += [
        ("p50", "", "", number(result["lease_p50_s"], 2), number(result["flow_p50_s"], 2), "", ""),
        ("max", "", "", number(result["lease_max_s"], 2), number(result["flow_max_s"], 2), "", ""),
    ]
    followers = result["followers"]
    exact = sum(
        follower["exact"] and not follower["gaps"] and not follower["repeats"]
        for follower in followers
    )
    notes: tuple[str, ...] = (
        "lease: from kill -9 of the holder until a surviving daemon's GetJob names another node",
        "flow: from the kill until a line written after it reaches a follower on a surviving"
        " daemon (lease expiry, the command's restart and its replay of the file included)",
        "restart: from the kill until the killed daemon, started again once bytes flow, listens"
        " (it waits for its dead predecessor's hold on the node name to expire: 2 leases)",
        "back: from then until its follower, resuming there, gets a line written after it",
        f"followers exact over all kills: {exact}/{len(followers)} (sha256 of the file written,"
        f" no gap, no repeat); streams of survivors cut by a kill: {result['survivor_breaks']}",
        f"log {result['log_bytes'] / 1e6:,.1f} MB at the end; upstreams opened in all:"
        f" {result['upstreams_opened']} (the first, one per kill, and"
        f" {result['upstreams_opened'] - 1 - result['kills']} more: leases lost without a kill);"
        " Redis used"
        f" {result['redis_used_memory_bytes'] / 2**20:,.1f} MiB,"
        f" RSS {result['redis_rss_bytes'] / 2**20:,.1f} MiB",
    )
    title = (
        f"cluster failover: {result['kills']} kills of the lease holder"
        f" (--lease-ms {result['lease_ms']}), job at {result['rate_bytes_per_s'] / 1e6:g} MB/s,"
        f" one follower per daemon ({settings['daemons']} daemons)"
    )
    headers = ("kill", "holder -> new", "log MB", "lease s", "flow s", "restart s", "back s")
    return [Table(title, headers, rows, notes, left=2)]
