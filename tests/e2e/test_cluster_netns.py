"""Cluster mode across a real network: daemons in their own network namespaces (ip netns, a
veth pair each) reach Redis over TCP, and one of them is cut off from it (a partition)."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from cluster_helpers import NOT_SERVING, REPLAY, SERVING, Cluster, cluster_health, payload, upstream
from helpers import DaemonProcess, start_background_cli, wait_until
from markers import unavailable
from redis_helpers import RedisServer

from tailhub.client import JobState


def _ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True, timeout=30)


@dataclass(frozen=True)
class Host:
    """A network namespace joined to this one by a veth pair: `address` is this side's."""

    namespace: str
    address: str
    inner_link: str
    outer_link: str

    def cut(self) -> None:
        _ip("-n", self.namespace, "link", "set", self.inner_link, "down")

    def heal(self) -> None:
        _ip("-n", self.namespace, "link", "set", self.inner_link, "up")


def _namespaces_allowed() -> bool:
    probe = f"th-probe-{os.getpid()}"
    try:
        _ip("netns", "add", probe)
    except (OSError, subprocess.CalledProcessError):
        return False
    _ip("netns", "del", probe)
    return True


@pytest.fixture
def hosts() -> Iterator[list[Host]]:
    """Two namespaces, 10.213.K.2 inside, 10.213.K.1 on this side."""
    if not _namespaces_allowed():
        unavailable("this machine does not allow network namespaces (needs root and ip netns)")
    made: list[Host] = []
    tag = f"{os.getpid() % 10000}"
    try:
        for index in (1, 2):
            namespace, outer, inner = f"th{tag}n{index}", f"th{tag}o{index}", f"th{tag}i{index}"
            _ip("netns", "add", namespace)
            made.append(Host(namespace, f"10.213.{index}.1", inner, outer))
            _ip("link", "add", outer, "type", "veth", "peer", "name", inner)
            _ip("link", "set", inner, "netns", namespace)
            _ip("addr", "add", f"10.213.{index}.1/24", "dev", outer)
            _ip("link", "set", outer, "up")
            _ip("-n", namespace, "addr", "add", f"10.213.{index}.2/24", "dev", inner)
            _ip("-n", namespace, "link", "set", inner, "up")
            _ip("-n", namespace, "link", "set", "lo", "up")
        yield made
    finally:
        for host in made:
            # The pair by its outer end too: a namespace outlives its name while a process
            # still runs in it, and its address would clash with the next test's.
            for command in (["link", "del", host.outer_link], ["netns", "del", host.namespace]):
                subprocess.run(["ip", *command], capture_output=True, timeout=30)


def _in(host: Host, node: DaemonProcess) -> DaemonProcess:
    """The node's daemon runs inside the host's namespace (its socket file is shared)."""
    node.prefix = ["ip", "netns", "exec", host.namespace]
    return node


@pytest.mark.root
@pytest.mark.slow
def test_a_node_cut_off_from_redis_hands_its_job_over_without_a_gap(
    hosts: list[Host],
    start_redis: Callable[..., RedisServer],
    cluster: Cluster,
    tmp_path: Path,
) -> None:
    # Redis listens on this side of both veth pairs.
    redis = start_redis(
        "--bind", f"127.0.0.1 {hosts[0].address} {hosts[1].address}", "--protected-mode", "no"
    )
    cluster.redis = redis
    cluster.lease_ms = 1000
    nodes = []
    for index, host in enumerate(hosts):
        url = f"redis://{host.address}:{redis.port}/0"
        node = _in(host, cluster.prepare(f"n{index}", url))
        node.start()
        nodes.append(node)
    data = payload(1024 * 1024, seed=13)
    half = len(data) // 2
    log, state = upstream(tmp_path / "up", data[:half])
    with nodes[0].client() as client:
        job = client.attach_command([sys.executable, REPLAY, str(log), str(state)])
    follower = start_background_cli(
        nodes[1].home, tmp_path / "follower", "jobs", "logs", str(job.id)
    )
    try:
        follower.wait_for_stdout(data[:half])  # through Redis, across the namespaces
        assert cluster.holder(job.id) == "n0"

        hosts[0].cut()  # n0 can no longer reach Redis: a partition
        wait_until(lambda: cluster_health(nodes[0]) == NOT_SERVING)
        with open(log, "ab") as more:
            more.write(data[half:])
        new_holder = cluster.wait_for_holder(job.id, other_than=["n0"], timeout=15, on=nodes[1])
        assert new_holder == "n1"
        (state / "done").touch()
        assert follower.wait(60) == 0, follower.stderr
        assert follower.stdout == data  # no gap, no repeat across the handover

        hosts[0].heal()
        wait_until(lambda: cluster_health(nodes[0]) == SERVING, 20)
        # Back in the cluster, it learns how the job ended elsewhere.
        wait_until(lambda: cluster.job(job.id, on=nodes[0]).state is JobState.SUCCEEDED)
    finally:
        follower.stop()
    # n0 stopped its upstream before n1 started one: never two at once.
    assert not (state / "overlaps").exists()
    assert "is unreachable" in nodes[0].log_text()
