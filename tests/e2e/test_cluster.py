"""Cluster mode: several real daemons on one real Redis share jobs, one fetch per job."""

from __future__ import annotations

import hashlib
import shutil
import sys
import time
from pathlib import Path
from typing import Any

from cluster_helpers import REPLAY, Cluster, payload, upstream
from follow_many import kill_all, results_of, start_followers
from helpers import run_cli, start_background_cli, wait_until
from markers import measures
from redis_helpers import RedisServer
from remote_helpers import free_port, write_token

from tailhub.client import Client, JobNotFoundError, JobState


def test_followers_on_three_nodes_get_exact_bytes_from_oneupstream(
    cluster: Cluster, tmp_path: Path
) -> None:
    nodes = cluster.start(3)
    data = payload(3 * 1024 * 1024)
    log, state = upstream(tmp_path / "up", data[: len(data) // 2])
    with nodes[0].client() as client:
        job = client.attach_command([sys.executable, REPLAY, str(log), str(state)])
    followers = [start_followers(node.paths.address, job.id, 100) for node in nodes]
    try:
        # The second half arrives while 300 followers on three daemons are reading.
        with open(log, "ab") as more:
            more.write(data[len(data) // 2 :])
        (state / "done").touch()
        results = [result for process in followers for result in results_of(process, 120)]
    finally:
        kill_all(followers)
    digest = hashlib.sha256(data).hexdigest()
    assert len(results) == 300
    assert all(r.error is None and r.size == len(data) for r in results), results[:3]
    assert all(r.sha256 == digest for r in results), [r.sha256 == digest for r in results].count(
        True
    )
    assert all(r.state == "JOB_STATE_SUCCEEDED" and r.exit_code == 0 for r in results)
    for node in nodes:
        seen = cluster.job(job.id, on=node)
        assert seen.upstream_connections == 1, (node.home.name, seen)
        assert seen.state is JobState.SUCCEEDED
        assert seen.log_size == len(data)
    assert (state / "connections").read_text() == "1"
    assert not (state / "overlaps").exists()


def test_every_node_lists_every_job_with_its_lease_holder(cluster: Cluster, tmp_path: Path) -> None:
    nodes = cluster.start(2)
    lines = b"".join(b"line %d\n" % number for number in range(1, 1001))
    log, state = upstream(tmp_path / "up", lines)
    with nodes[1].client() as client:
        job = client.attach_command([sys.executable, REPLAY, str(log), str(state)], name="far")

    def holder_as_n0_lists_it() -> str:
        try:
            return cluster.holder(job.id, on=nodes[0])
        except JobNotFoundError:
            return ""  # (n0 has not synced it yet: a loaded machine)

    wait_until(lambda: holder_as_n0_lists_it() == "n1", what="n0 to list n1 as the holder")
    listed = run_cli(nodes[0].home, "jobs", "queue")
    assert listed.returncode == 0, listed.stderr
    row = next(line for line in listed.stdout.decode().splitlines() if " far " in line)
    assert row.split()[0] == str(job.id)
    assert "n1" in row  # the node fetching it
    (state / "done").touch()
    wait_until(lambda: cluster.job(job.id, on=nodes[0]).sealed, what="the job to end")
    # A node that never read the log finds its last lines all the same.
    tail = run_cli(nodes[0].home, "jobs", "logs", "--tail", "2", str(job.id))
    assert tail.stdout == b"line 999\nline 1000\n", tail.stderr
    with nodes[0].client() as client:
        status = client.status()
        assert status.cluster is not None
        assert status.cluster.node_name == "n0"
        assert status.cluster.connected
        # Counted at each keep-alive (a quarter of the lease): n0 may not have seen n1 yet.
        wait_until(lambda: _cluster_nodes(client) == 2, timeout=10, what="n0 to count 2 nodes")


def _cluster_nodes(client: Client) -> int:
    cluster = client.status().cluster
    assert cluster is not None
    return cluster.nodes


@measures
def test_kill_of_the_lease_holder_is_taken_over_within_5s_byte_exact(
    cluster: Cluster, tmp_path: Path
) -> None:
    nodes = cluster.start(3)  # the default lease: 3 s
    data = payload(2 * 1024 * 1024, seed=11)
    log, state = upstream(tmp_path / "up", data[: 1024 * 1024])
    with nodes[0].client() as client:
        job = client.attach_command([sys.executable, REPLAY, str(log), str(state)])
    followers = [
        start_background_cli(node.home, tmp_path / node.home.name, "jobs", "logs", str(job.id))
        for node in nodes[1:]
    ]
    try:
        wait_until(
            lambda: all(len(follower.stdout) >= 1024 * 1024 for follower in followers),
            what="the first half on every follower",
        )
        assert cluster.holder(job.id) == "n0"
        nodes[0].kill()
        killed_at = time.monotonic()
        # More bytes arrive upstream only now: they can come through the new holder alone.
        with open(log, "ab") as more:
            more.write(data[1024 * 1024 :])
        new_holder = cluster.wait_for_holder(job.id, other_than=["n0"], timeout=10)
        wait_until(
            lambda: len(followers[0].stdout) > 1024 * 1024, 10, "bytes through the new holder"
        )
        took = time.monotonic() - killed_at
        assert took < 5.0, f"takeover took {took:.1f}s"
        (state / "done").touch()
        for follower in followers:
            assert follower.wait(60) == 0, follower.stderr
            assert follower.stdout == data  # no gap, no repeat
            assert f"node {new_holder} fetches this job now" in follower.stderr
    finally:
        for follower in followers:
            follower.stop()
    seen = cluster.job(job.id)
    assert seen.upstream_connections == 2  # the first holder's, and the new one's
    assert (state / "connections").read_text() == "2"
    assert not (state / "overlaps").exists()  # the killed daemon's command died with it


def test_a_job_launched_on_one_node_is_followed_through_another(
    cluster: Cluster, workdir: Path
) -> None:
    nodes = cluster.start(2)
    task = workdir / "task.yaml"
    task.write_text("run: |\n  for i in 1 2 3; do echo step $i; done\n  exit 3\n")
    launched = run_cli(nodes[0].home, "jobs", "launch", "--async", str(task))
    assert launched.returncode == 0, launched.stderr
    job_id = launched.stdout.decode().split()[0]
    followed = run_cli(nodes[1].home, "jobs", "logs", job_id)
    assert followed.stdout == b"step 1\nstep 2\nstep 3\n"
    assert followed.returncode == 100  # failed, as on the daemon that ran it
    assert cluster.job(int(job_id), on=nodes[1]).home_node == "n0"


def _audit_stream(redis: RedisServer, job_id: int) -> tuple[bytes, list[int]]:
    """The log as the cluster's stream holds it, and the epoch of each data entry, checking
    that the entries' offsets follow one another without a gap or an overlap."""
    client = redis.client()
    data = bytearray()
    epochs: list[int] = []
    entries: Any = client.xrange(f"tailhub:log:{job_id}")
    for entry_id, fields in entries:
        if b"d" not in fields:
            continue  # an event, or the end
        assert int(fields[b"o"]) == len(data), f"entry {entry_id!r} leaves a gap or overlaps"
        data += fields[b"d"]
        assert int(entry_id.split(b"-")[0]) == len(data)
        epochs.append(int(fields[b"e"]))
    return bytes(data), epochs


@measures  # its pace is the stalls': never beside the CPU-bound benchmark test
def test_two_nodes_racing_for_one_lease_100_times_never_fetch_at_once(
    redis_server: RedisServer, cluster: Cluster, tmp_path: Path
) -> None:
    # A short lease, and daemons that stop dead (the whole process, as in a long GC pause)
    # for longer than the lease before half of their renewals: the lease keeps changing hands.
    # The stalls end with the race (the calm file), so that a holder keeps the lease long
    # enough to start the upstream and finish the job: on a loaded machine a command's start
    # alone can outlast every lease the stalls leave.
    cluster.lease_ms = 200
    calm = tmp_path / "calm"
    stall = {"TAILHUB_CLUSTER_STALL": f"0.5:0.3:{calm}"}
    nodes = [cluster.add(f"n{index}", env=stall) for index in range(2)]
    data = payload(400 * 1024, seed=3)
    log, state = upstream(tmp_path / "up", b"")
    with nodes[0].client() as client:
        job = client.attach_command([sys.executable, REPLAY, str(log), str(state)])
    followers = [
        start_background_cli(node.home, tmp_path / node.home.name, "jobs", "logs", str(job.id))
        for node in nodes
    ]
    redis = redis_server.client()
    written = 0
    try:
        # (About 30 s on a quiet machine, 240 s was not enough beside CI's other tests; the
        # bound only stops a test that hangs.)
        deadline = time.monotonic() + 360
        # 100 rounds: the lease granted 101 times (the first holder, and 100 takeovers).
        while (granted := int(redis.hget(f"tailhub:job:{job.id}", "epoch") or 0)) < 101:
            assert time.monotonic() < deadline, f"{granted - 1} takeovers in 360 s"
            if written < len(data):  # the log grows while the lease moves
                with open(log, "ab") as more:
                    more.write(data[written : written + 1024])
                written += 1024
            # Pacing the upstream's growth (about 100 KiB/s), not waiting for an event.
            time.sleep(0.01)
        with open(log, "ab") as more:
            more.write(data[written:])
        (state / "done").touch()
        calm.touch()
        for follower in followers:
            assert follower.wait(60) == 0, follower.stderr
            assert follower.stdout == data
    finally:
        for follower in followers:
            follower.stop()
    stored, epochs = _audit_stream(redis_server, job.id)
    assert stored == data
    # A stale append accepted would be an entry of an older epoch after a newer one's.
    stale_accepted = sum(later < earlier for earlier, later in zip(epochs, epochs[1:]))
    assert stale_accepted == 0
    assert not (state / "overlaps").exists(), (state / "overlaps").read_text()
    refused = 0
    for node in nodes:
        with node.client() as client:
            view = client.status().cluster
        assert view is not None
        refused += view.stale_appends_refused
    granted = int(redis.hget(f"tailhub:job:{job.id}", "epoch") or 0)
    print(
        f"lease granted {granted} times, {len(set(epochs))} of them appended; "
        f"stale appends refused: {refused}"
    )


def test_a_follower_of_a_killed_node_resumes_through_the_next_server_over_tcp(
    cluster: Cluster, tmp_path: Path
) -> None:
    from tailhub.daemon import tokens

    addresses = [f"127.0.0.1:{free_port()}" for _ in range(3)]
    first_home = cluster.base / "n0"
    first_home.mkdir(mode=0o700, parents=True)
    token, _ = tokens.create_token(first_home, tokens.Role.READ)
    for index in (1, 2):  # one token store for the whole cluster
        (cluster.base / f"n{index}").mkdir(mode=0o700)
        shutil.copy2(first_home / "tokens.json", cluster.base / f"n{index}" / "tokens.json")
    nodes = [
        cluster.add(f"n{index}", "--listen", address, "--insecure")
        for index, address in enumerate(addresses)
    ]
    data = payload(1024 * 1024, seed=21)
    log, state = upstream(tmp_path / "up", data[: len(data) // 2])
    with nodes[0].client() as client:
        job = client.attach_command([sys.executable, REPLAY, str(log), str(state)])
    follower = start_background_cli(
        tmp_path / "elsewhere",
        tmp_path / "follower",
        "--server",
        ",".join(addresses),
        "--insecure",
        "--token-file",
        str(write_token(tmp_path, "read", token)),
        "jobs",
        "logs",
        str(job.id),
    )
    try:
        wait_until(lambda: len(follower.stdout) >= len(data) // 2, what="the first half")
        nodes[0].kill()  # the node it follows through, and the job's fetcher
        with open(log, "ab") as more:
            more.write(data[len(data) // 2 :])
        (state / "done").touch()
        assert follower.wait(60) == 0, follower.stderr
        assert follower.stdout == data
    finally:
        follower.stop()
    ended = cluster.job(job.id)
    assert ended.state is JobState.SUCCEEDED
    assert ended.upstream_connections == 2


def test_bytes_trimmed_from_redis_are_out_of_range_on_a_node_that_never_had_them(
    cluster: Cluster, tmp_path: Path
) -> None:
    mib = 1024 * 1024
    nodes = cluster.start(2, "--redis-retention", str(mib))
    data = payload(4 * mib, seed=9)
    log, state = upstream(tmp_path / "up", data)
    (state / "done").touch()
    with nodes[0].client() as client:
        job = client.attach_command([sys.executable, REPLAY, str(log), str(state)])
    wait_until(lambda: cluster.job(job.id).sealed, what="the job to end")
    kept = cluster.redis.client().hget(f"tailhub:job:{job.id}", "first")
    first = int(kept or 0)
    assert 3 * mib - 256 * 1024 <= first <= 3 * mib  # the last MiB (and part of an entry)
    # The node that fetched it has every byte on disk.
    whole = run_cli(nodes[0].home, "jobs", "logs", str(job.id))
    assert whole.stdout == data
    # The other never read it: from 0 is out of range, naming where it can start.
    refused = run_cli(nodes[1].home, "jobs", "logs", str(job.id))
    assert refused.returncode == 1
    message = refused.stderr.decode()
    assert f"bytes before offset {first} of job {job.id} are no longer kept" in message
    assert "Traceback" not in message
    with nodes[1].client() as client:
        received = b"".join(
            item.data for item in client.follow(job.id, offset=first) if hasattr(item, "data")
        )
    assert received == data[first:]


def test_a_job_is_cancelled_through_a_node_that_does_not_fetch_it(
    cluster: Cluster, tmp_path: Path
) -> None:
    nodes = cluster.start(2)
    log, state = upstream(tmp_path / "up", b"running\n")
    with nodes[0].client() as client:
        job = client.attach_command([sys.executable, REPLAY, str(log), str(state)])
    follower = start_background_cli(
        nodes[1].home, tmp_path / "follower", "jobs", "logs", str(job.id)
    )
    try:
        follower.wait_for_stdout(b"running\n")
        cancelled = run_cli(nodes[1].home, "jobs", "cancel", str(job.id))
        assert cancelled.returncode == 0, cancelled.stderr
        assert follower.wait(30) == 103  # cancelled, seen through the other node
    finally:
        follower.stop()
    for node in nodes:
        assert cluster.job(job.id, on=node).state is JobState.CANCELLED
