"""Several real daemons on one real Redis: the cluster-mode tests' set-up."""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from helpers import BackgroundCli, DaemonProcess, start_background_cli, wait_until
from redis_helpers import RedisServer

from tailhub.client import JobInfo

# A remote log reached through a command (see replay_upstream.py): each connection replays it
# from its first byte, so a daemon taking a job over gets the same bytes.
REPLAY = str(Path(__file__).parent / "replay_upstream.py")
SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


def upstream(directory: Path, data: bytes) -> tuple[Path, Path]:
    """A remote log holding `data` (append to it to make it grow), and the state directory
    its replays count their connections in; touch STATE/done to let them end."""
    directory.mkdir(parents=True, exist_ok=True)
    log = directory / "upstream.log"
    log.write_bytes(data)
    state = directory / "state"
    state.mkdir()
    return log, state


def payload(size: int, seed: int = 7) -> bytes:
    """Every byte value, newlines and invalid UTF-8 among them."""
    return random.Random(seed).randbytes(size)


def cluster_health(node: DaemonProcess) -> int:
    """What the node's health service says of its cluster part (`tailhub.cluster`)."""
    with grpc.insecure_channel(node.paths.address) as channel:
        answer = health_pb2_grpc.HealthStub(channel).Check(
            health_pb2.HealthCheckRequest(service="tailhub.cluster"), timeout=10
        )
    return int(answer.status)


@dataclass
class Cluster:
    """Daemons named n0, n1, ... each with its own state directory, sharing `redis`."""

    redis: RedisServer
    base: Path
    lease_ms: int = 3000
    nodes: dict[str, DaemonProcess] = field(default_factory=dict)

    def add(self, name: str, *args: str, env: dict[str, str] | None = None) -> DaemonProcess:
        node = self.prepare(name, self.redis.url, *args, env=env)
        node.start()
        return node

    def prepare(
        self, name: str, url: str, *args: str, env: dict[str, str] | None = None
    ) -> DaemonProcess:
        """A node not started yet, reaching Redis at `url`."""
        node = DaemonProcess(
            self.base / name,
            args=[
                "--heartbeat-interval",
                "0.5",
                "--redis",
                url,
                "--node-name",
                name,
                "--lease-ms",
                str(self.lease_ms),
                *args,
            ],
            env=env,
        )
        self.nodes[name] = node
        return node

    def start(self, count: int, *args: str) -> list[DaemonProcess]:
        return [self.add(f"n{index}", *args) for index in range(count)]

    def alive(self) -> list[DaemonProcess]:
        return [node for node in self.nodes.values() if node.running]

    def job(self, job_id: int, on: DaemonProcess | None = None) -> JobInfo:
        with (on or self.alive()[0]).client() as client:
            return client.get(job_id)

    def holder(self, job_id: int, on: DaemonProcess | None = None) -> str:
        """The node fetching the job now, as a live node reports it ("" for none)."""
        return self.job(job_id, on).lease_holder

    def wait_for_holder(
        self,
        job_id: int,
        *,
        other_than: Sequence[str] = (),
        timeout: float = 20.0,
        on: DaemonProcess | None = None,
    ) -> str:
        found: list[str] = []

        def held() -> bool:
            holder = self.holder(job_id, on)
            found[:] = [holder]
            return bool(holder) and holder not in other_than

        wait_until(held, timeout, f"a lease holder of job {job_id} other than {other_than}")
        return found[0]

    def stop_all(self) -> None:
        for node in self.nodes.values():
            if node.running:
                node.stop()


def followed_push_job(
    node: DaemonProcess, follower_node: DaemonProcess, directory: Path, name: str, line: bytes
) -> tuple[int, BackgroundCli]:
    """A push job of `node` holding `line`, and a `jobs logs -f` of it on `follower_node`
    that has printed it."""
    with node.client() as client:
        job_id = client.attach_push(name).id
        client.publish(job_id, line)
    follower = start_background_cli(
        follower_node.home, directory, "jobs", "logs", "-f", str(job_id)
    )
    follower.wait_for_stdout(line)
    return job_id, follower


def restart_once_crashed(node: DaemonProcess, point: str) -> None:
    """Waits for `node` to kill itself at its crash point, then starts it without one."""
    wait_until(lambda: not node.running, what=f"the node to kill itself {point}")
    node.env = None
    node.start()
