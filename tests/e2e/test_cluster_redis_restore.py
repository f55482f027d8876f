"""Cluster mode when Redis comes back with less than it acknowledged: restored from an older
snapshot (it went back in time), or restarted empty (it lost the cluster's data). Every
follower is told, the log is mended from a node's copy, and the upstream is never restarted
over and over."""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from cluster_helpers import REPLAY, Cluster, payload, upstream
from helpers import BackgroundCli, DaemonProcess, start_background_cli, wait_until
from redis_helpers import RedisServer

from tailhub.client import JobNotFoundError, JobState

BACK_IN_TIME = "the cluster's Redis went back in time"
LOST_DATA = "lost the cluster's data"


def _connections(state: Path) -> int:
    counter = state / "connections"
    return int(counter.read_text()) if counter.exists() else 0


def _knows(node: DaemonProcess, job_id: int) -> bool:
    with node.client() as client:
        try:
            client.get(job_id)
        except JobNotFoundError:
            return False
    return True


def _follow_on_every_node(cluster: Cluster, job_id: int, where: Path) -> list[BackgroundCli]:
    return [
        start_background_cli(node.home, where / node.home.name, "jobs", "logs", str(job_id))
        for node in cluster.nodes.values()
    ]


@pytest.mark.parametrize("holder_gives_up", [False, True], ids=["holder-keeps", "taken-over"])
def test_redis_restored_from_an_older_snapshot_is_mended_from_a_nodes_copy(
    start_redis: Callable[..., RedisServer], cluster: Cluster, tmp_path: Path, holder_gives_up: bool
) -> None:
    # No AOF: a restart brings back the last snapshot, as a host crash with an RDB (or an
    # AOF fsynced every second) does.
    cluster.redis = start_redis(appendonly=False)
    nodes = cluster.start(3)
    data = payload(600_000, seed=23)
    snapshot, acknowledged = 440_000, 530_000
    log, state = upstream(tmp_path / "up", data[:snapshot])
    with nodes[0].client() as client:
        job = client.attach_command([sys.executable, REPLAY, str(log), str(state)])
    followers = _follow_on_every_node(cluster, job.id, tmp_path)
    try:
        wait_until(
            lambda: all(len(f.stdout) >= snapshot for f in followers), what="the first bytes"
        )
        redis = cluster.redis.client()
        redis.save()  # what Redis will come back with
        with nodes[1].client() as client:  # a job the snapshot does not hold
            after_snapshot = client.attach_push().id
        with open(log, "ab") as more:
            more.write(data[snapshot:acknowledged])
        wait_until(
            lambda: all(len(f.stdout) >= acknowledged for f in followers),
            what="bytes Redis acknowledged after its snapshot, on every node",
        )
        wait_until(
            lambda: all(_knows(node, after_snapshot) for node in nodes),
            what="every node to know the job attached after the snapshot",
        )
        cluster.redis.kill()
        if holder_gives_up:
            # Away past the holder's safe share of its lease: it stops fetching, and the
            # node that takes the job over (any of the three) mends the log from its copy.
            wait_until(
                lambda: "this node stopped fetching it" in nodes[0].log_text(),
                what="the holder to stop fetching",
            )
        cluster.redis.restart()  # from the snapshot: 90,000 acknowledged bytes fewer
        # Ids go on above every job the nodes know, though Redis's counter went back.
        with nodes[2].client() as client:
            assert client.attach_push().id == after_snapshot + 1
        # The upstream goes on at once (appends now find Redis 90,000 bytes short).
        with open(log, "ab") as more:
            more.write(data[acknowledged:])
        (state / "done").touch()

        # The log in Redis is mended from a node's copy (the lease holder's, or that of
        # whoever takes the job over), and its fetch goes on: the upstream is not
        # reconnected to again and again.
        wait_until(
            lambda: all(f.process.poll() is not None for f in followers) or _connections(state) > 3,
            60,
            "the followers to end",
        )
        started = _connections(state)
        assert started <= 2, f"{started} upstream starts"
        for follower in followers:
            assert follower.wait(10) == 0, follower.stderr
            assert follower.stdout == data  # nothing lost, nothing twice, on every node
            # Told once, in the same words everywhere.
            assert follower.stderr.count(BACK_IN_TIME) == 1, follower.stderr
    finally:
        for follower in followers:
            follower.stop()
    assert int(redis.hget(f"tailhub:job:{job.id}", "size") or 0) == len(data)
    assert _connections(state) == started
    assert not (state / "overlaps").exists()
    for node in nodes:
        assert cluster.job(job.id, on=node).state is JobState.SUCCEEDED
        assert "stopping its fetch here" not in node.log_text()


def test_every_follower_is_told_once_when_redis_restarts_empty(
    start_redis: Callable[..., RedisServer], cluster: Cluster, tmp_path: Path
) -> None:
    cluster.redis = start_redis(appendonly=False)
    nodes = cluster.start(3)
    data = payload(64 * 1024, seed=29)
    log, state = upstream(tmp_path / "up", data)
    with nodes[0].client() as client:
        job = client.attach_command([sys.executable, REPLAY, str(log), str(state)])
    followers = _follow_on_every_node(cluster, job.id, tmp_path)
    try:
        for follower in followers:
            follower.wait_for_stdout(data)
        cluster.redis.restart()  # no persistence: it comes back empty
        wait_until(
            lambda: all(LOST_DATA in follower.stderr for follower in followers),
            30,
            "the event on the followers of every node",
        )
        messages = {
            line
            for follower in followers
            for line in follower.stderr.splitlines()
            if LOST_DATA in line
        }
        # The same words on every node, once each; never "its lease was taken over".
        assert len(messages) == 1, messages
        for follower in followers:
            assert follower.stderr.count(LOST_DATA) == 1, follower.stderr
            assert "taken over" not in follower.stderr
            assert follower.process.poll() is None  # still following what it has
    finally:
        for follower in followers:
            follower.stop()
    assert _connections(state) == 1
