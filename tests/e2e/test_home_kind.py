"""One kind of daemon per home (issue 16, item 10; DESIGN invariant 8): a cluster node's CLI
followers never autostart a daemon alone on its home, which would run the node's upstreams
outside any lease. They wait for the node; a daemon alone refuses that home outright."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from cluster_helpers import REPLAY, Cluster, payload, upstream
from helpers import BackgroundCli, cli_env, run_cli, start_background_cli, wait_until

from tailhub.client import Client, StatePaths
from tailhub.client._daemon import is_listening

KILLS = 10


def test_killing_a_node_under_its_own_followers_never_makes_two_upstreams(
    cluster: Cluster, tmp_path: Path
) -> None:
    cluster.lease_ms = 2000
    nodes = cluster.start(3)
    log, state = upstream(tmp_path / "up", b"")
    with nodes[0].client() as client:
        job = client.attach_command([sys.executable, REPLAY, str(log), str(state)])
    followers: list[BackgroundCli] = []

    def follow(home: Path) -> BackgroundCli:
        cli = start_background_cli(home, tmp_path / f"f{len(followers)}", "jobs", "logs", "1")
        followers.append(cli)
        return cli

    for node in nodes:
        follow(node.home), follow(node.home)
    written = b""
    killed: set[str] = set()
    try:
        for kill in range(KILLS):
            holder = cluster.wait_for_holder(job.id)
            piece = payload(8192, seed=kill)
            with open(log, "ab") as more:
                more.write(piece)
            written += piece
            for each in followers:
                each.wait_for_stdout(written, timeout=30)
            node = cluster.nodes[holder]
            node.kill()
            killed.add(holder)
            # A CLI started now on the dead node's home: it autostarted a daemon alone there,
            # which ran the job's command beside the node that takes it over.
            late = follow(node.home)
            wait_until(lambda: "waiting for node" in late.stderr, 30, "the waiting line")
            assert f"node {holder} of the cluster at {cluster.redis.url}" in late.stderr
            cluster.wait_for_holder(job.id, other_than=[holder])
            assert not is_listening(node.paths), "nothing but the node serves its home"
            # As its service manager would: on a loaded machine Redis may answer the join
            # slower than the node waits (exit 6), and the manager starts it again.
            node.start_as_service()
        last = payload(8192, seed=99)
        with open(log, "ab") as more:
            more.write(last)
        written += last
        (state / "done").touch()
        for each in followers:
            assert each.wait(60) == 0, each.stderr
            assert each.stdout == written  # exact, resumed across every kill
    finally:
        for each in followers:
            each.stop()
    assert not (state / "overlaps").exists(), "two upstreams ran at once"
    # The first upstream, then at least one per kill of its holder (more when a loaded
    # machine made a lease lapse: a new holder then, never a second upstream beside it).
    assert int((state / "connections").read_text()) >= KILLS + 1
    for each in followers[:6]:
        if each.stderr:
            assert "for it to come back" in each.stderr
    assert any("lost node" in each.stderr for each in followers[:6])
    assert killed


def test_a_daemon_alone_refuses_a_nodes_home(cluster: Cluster) -> None:
    (node,) = cluster.start(1)
    with node.client() as client:
        client.attach_push("the cluster's")
    node.stop()
    started = run_cli(node.home, "daemon", "start")
    assert started.returncode == 2, started.stderr
    line = started.stderr.decode()
    assert line.count("\n") == 1, line
    assert f"state directory of node n0 of the cluster at {cluster.redis.url}" in line
    assert "TAILHUB_REDIS=URL tailhub daemon start" in line
    assert "--node-name n0" in line
    restarted = run_cli(node.home, "daemon", "restart")
    assert restarted.returncode == 2, restarted.stderr
    assert not is_listening(node.paths)

    # tailhubd itself, even with the record gone: the database says whose jobs these are.
    (node.home / "tailhubd.options").unlink()
    alone = subprocess.run(
        [sys.executable, "-m", "tailhub.daemon", "--home", str(node.home)],
        capture_output=True,
        timeout=60,
    )
    assert alone.returncode == 7, alone.stderr
    text = alone.stderr.decode()
    assert text.count("\n") == 1, text
    assert "its jobs belong to the cluster" in text
    assert not is_listening(node.paths)

    # Started as the node again, it serves its jobs.
    node.start()
    with node.client() as client:
        assert client.get(1).name == "the cluster's"


def test_a_nodes_home_started_again_is_that_node_and_no_other(
    cluster: Cluster, tmp_path: Path
) -> None:
    # `daemon start` without --node-name used to join as a new node named after the host:
    # the jobs pinned to n0 then waited for n0 for ever.
    (node,) = cluster.start(1)
    with node.client() as client:
        job_id = client.attach_push("pinned").id
        client.publish(job_id, b"one\n")
    node.kill()
    env = {**cli_env(node.home), "TAILHUB_REDIS": cluster.redis.url}
    started = subprocess.run(
        [sys.executable, "-m", "tailhub.client", "daemon", "start", "--lease-ms", "3000"],
        env=env,
        capture_output=True,
        timeout=120,
    )
    assert started.returncode == 0, started.stderr
    try:
        with Client.connect(StatePaths(node.home), autostart=False) as client:
            cluster_info = client.status().cluster
            assert cluster_info is not None
            assert cluster_info.node_name == "n0"
            wait_until(lambda: client.get(job_id).lease_holder == "n0", what="n0 to take it back")
            client.finish(job_id, 0)
    finally:
        stopped = run_cli(node.home, "daemon", "stop")
        assert stopped.returncode == 0, stopped.stderr

    other = subprocess.run(
        [sys.executable, "-m", "tailhub.client", "daemon", "start", "--node-name", "n9"],
        env=env,
        capture_output=True,
        timeout=120,
    )
    assert other.returncode != 0
    line = other.stderr.decode()
    assert "is the state directory of node 'n0', not 'n9'" in line, line
    assert not is_listening(node.paths)
