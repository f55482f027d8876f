"""Cluster mode when Redis goes away: daemons say so, keep serving, and lose nothing Redis had
acknowledged once it is back."""

from __future__ import annotations

import json
import os
import signal
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from cluster_helpers import (
    NOT_SERVING,
    REPLAY,
    SERVING,
    Cluster,
    cluster_health,
    followed_push_job,
    payload,
    restart_once_crashed,
    upstream,
)
from helpers import DaemonProcess, run_cli, start_background_cli, wait_until
from redis_helpers import RedisServer

from tailhub.client import JobState


def test_redis_crash_and_restart_loses_no_acknowledged_byte(
    redis_server: RedisServer, cluster: Cluster, tmp_path: Path
) -> None:
    nodes = cluster.start(2)
    data = payload(1024 * 1024, seed=5)
    half = len(data) // 2
    log, state = upstream(tmp_path / "up", data[:half])
    with nodes[0].client() as client:
        job = client.attach_command([sys.executable, REPLAY, str(log), str(state)])
    followers = [
        start_background_cli(node.home, tmp_path / node.home.name, "jobs", "logs", str(job.id))
        for node in nodes
    ]
    try:
        wait_until(lambda: all(len(f.stdout) >= half for f in followers), what="the first half")
        assert all(cluster_health(node) == SERVING for node in nodes)

        redis_server.kill()
        wait_until(
            lambda: all(cluster_health(node) == NOT_SERVING for node in nodes),
            what="NOT_SERVING on every node",
        )
        for node in nodes:
            assert "Redis at 127.0.0.1" in node.log_text()
            assert "is unreachable" in node.log_text()
            with node.client() as client:  # the daemon itself still answers
                view = client.status().cluster
                assert view is not None
                assert not view.connected
        wait_until(
            lambda: all("is unreachable" in follower.stderr for follower in followers),
            what="the event on every follower",
        )
        assert all(follower.process.poll() is None for follower in followers)  # following

        # While Redis is away nothing new can be stored; then it comes back with its AOF.
        with open(log, "ab") as more:
            more.write(data[half:])
        redis_server.restart()
        wait_until(
            lambda: all(cluster_health(node) == SERVING for node in nodes),
            20,
            "SERVING again on every node",
        )
        (state / "done").touch()
        for follower in followers:
            assert follower.wait(60) == 0, follower.stderr
            assert follower.stdout == data  # nothing lost, nothing twice
            assert "reachable again" in follower.stderr
    finally:
        for follower in followers:
            follower.stop()
    assert cluster.job(job.id).state is JobState.SUCCEEDED
    assert not (state / "overlaps").exists()


def test_a_redis_that_lost_its_data_is_refused_with_a_reason(
    start_redis: Callable[..., RedisServer], tmp_path: Path, cluster: Cluster
) -> None:
    cluster.redis = start_redis(appendonly=False)
    (node,) = cluster.start(1)
    with node.client() as client:
        job = client.attach_push(name="kept")
        client.publish(job.id, b"already here\n")
    cluster.redis.restart()  # no persistence: it comes back empty
    wait_until(lambda: cluster_health(node) == NOT_SERVING, what="NOT_SERVING")
    wait_until(lambda: "lost its data" in node.log_text() or "no longer holds" in node.log_text())
    attached = run_cli(node.home, "jobs", "attach", "--push")
    assert attached.returncode != 0
    assert "lost the cluster's data" in attached.stderr.decode()
    assert "Traceback" not in attached.stderr.decode()
    # What this daemon had is still served.
    followed = run_cli(node.home, "jobs", "logs", "--no-follow", str(job.id))
    assert followed.stdout == b"already here\n"


def test_what_anyone_wrote_into_redis_never_stops_the_cluster(
    redis_server: RedisServer, cluster: Cluster, tmp_path: Path
) -> None:
    nodes = cluster.start(2)
    redis = redis_server.client()
    # A record that is no JSON, a size that is no number, a job id that is none.
    redis.hset("tailhub:job:900", mapping={"record": "not json", "size": "0"})
    redis.hset("tailhub:job:901", mapping={"record": "[]", "size": "many"})
    redis.zadd("tailhub:jobs", {"900": 900, "901": 901, "x": 902})
    redis.publish("tailhub:changes", "not a job id")
    log, state = upstream(tmp_path / "up", b"first line\n")
    with nodes[0].client() as client:
        job = client.attach_command([sys.executable, REPLAY, str(log), str(state)])
    follower = start_background_cli(
        nodes[1].home, tmp_path / "follower", "jobs", "logs", str(job.id)
    )
    try:
        follower.wait_for_stdout(b"first line\n")
        # Entries no holder writes, in the job's own stream: skipped, and the log goes on.
        size = int(redis.hget(f"tailhub:job:{job.id}", "size") or 0)
        redis.xadd(f"tailhub:log:{job.id}", {"end": "not json"}, id=f"{size}-90")
        redis.xadd(f"tailhub:log:{job.id}", {"o": "0", "d": "forged"}, id=f"{size}-91")
        with open(log, "ab") as more:
            more.write(b"second line\n")
        (state / "done").touch()
        assert follower.wait(60) == 0, follower.stderr
        assert follower.stdout == b"first line\nsecond line\n"
    finally:
        follower.stop()
    # A node started now joins all the same, and lists the good jobs.
    late = cluster.add("n2")
    assert cluster.job(job.id, on=late).state is JobState.SUCCEEDED
    assert "left out" in late.log_text()
    assert "skipped stream entry" in nodes[1].log_text()


def test_a_local_job_keeps_running_across_a_kill_of_its_node(
    cluster: Cluster, workdir: Path
) -> None:
    (node,) = cluster.start(1)
    gate = workdir / "gate"
    task = workdir / "task.yaml"
    task.write_text(
        f"run: |\n  echo before\n  while [ ! -e {gate} ]; do sleep 0.05; done\n  echo after\n"
    )
    launched = run_cli(node.home, "jobs", "launch", "--async", str(task))
    assert launched.returncode == 0, launched.stderr
    job_id = int(launched.stdout.split()[0])
    wait_until(lambda: cluster.job(job_id).log_size >= len(b"before\n"), what="its first line")
    node.kill()
    node.start()  # the same node name: it takes its local job back
    gate.touch()
    followed = run_cli(node.home, "jobs", "logs", str(job_id))
    assert followed.returncode == 0, followed.stderr
    assert followed.stdout == b"before\nafter\n"


def test_a_lease_holder_frozen_whole_never_leaves_two_upstreams(
    cluster: Cluster, tmp_path: Path
) -> None:
    cluster.lease_ms = 1000
    nodes = cluster.start(2)
    data = payload(512 * 1024, seed=17)
    half = len(data) // 2
    log, state = upstream(tmp_path / "up", data[:half])
    with nodes[0].client() as client:
        job = client.attach_command([sys.executable, REPLAY, str(log), str(state)])
    follower = start_background_cli(
        nodes[1].home, tmp_path / "follower", "jobs", "logs", str(job.id)
    )
    try:
        follower.wait_for_stdout(data[:half])
        # The whole holder stops (SIGSTOP: its event loop and its watchdog thread alike).
        os.kill(nodes[0].pid, signal.SIGSTOP)
        try:
            new_holder = cluster.wait_for_holder(job.id, other_than=["n0"], on=nodes[1])
            with open(log, "ab") as more:
                more.write(data[half:])
            (state / "done").touch()
            assert follower.wait(60) == 0, follower.stderr
            assert follower.stdout == data
        finally:
            os.kill(nodes[0].pid, signal.SIGCONT)
    finally:
        follower.stop()
    assert new_holder == "n1"
    # The fence around n0's command killed it when n0's lease ran out, before n1 started its
    # own: one upstream at a time, though n0 could do nothing.
    assert not (state / "overlaps").exists()
    assert (state / "connections").read_text() == "2"


def test_an_append_under_a_lease_taken_over_is_refused_by_redis(
    redis_server: RedisServer,
) -> None:
    import asyncio

    import redis.asyncio

    from tailhub.daemon.cluster.lua import STALE
    from tailhub.daemon.cluster.redis_store import RedisStore

    async def race() -> tuple[int, int, bytes]:
        client = redis.asyncio.Redis.from_url(redis_server.url)
        store = RedisStore(client)
        try:
            await store.ensure_cluster_id()  # (writes need the cluster's data in Redis)
            old = await store.create(5, {"id": 5}, "paused", 60_000)
            assert old is not None
            status, size = await store.append(5, old, 0, b"from the first holder\n", 0)
            assert (status, size) == (0, 22)
            # The first holder pauses past its lease; another node takes the job over.
            await client.pexpire("tailhub:lease:5", 1)
            new = None
            while new is None:
                new = await store.acquire(5, "awake", 60_000)
            assert await store.append(5, new, 22, b"from the second\n", 0) == (0, 38)
            # The first holder wakes and appends at what it believes is the end.
            stale, _ = await store.append(5, old, 22, b"STALE\n", 0)
            late_event = await store.event(5, old, "stale event")
            entries: Any = await client.xrange("tailhub:log:5")
            return stale, late_event, b"".join(f.get(b"d", b"") for _, f in entries)
        finally:
            await client.aclose()

    stale, late_event, stored = asyncio.run(race())
    assert stale == STALE
    assert late_event == STALE
    assert stored == b"from the first holder\nfrom the second\n"


def test_a_forged_local_job_never_runs_and_a_key_of_another_type_stops_nothing(
    redis_server: RedisServer, cluster: Cluster, tmp_path: Path
) -> None:
    # What someone who can write to Redis tried: a local job pinned to a node, with a task
    # of theirs (a node's local tasks never go to Redis: it has its own, in its database),
    # and a job key that is a string, not a hash (it stopped the sync and every later start).
    nodes = cluster.start(2)
    redis = redis_server.client()
    with nodes[0].client() as client:
        template = client.attach_push()
    base = json.loads(redis.hget(f"tailhub:job:{template.id}", "record") or b"{}")
    pwned = tmp_path / "pwned"
    forged_id = int(redis.incr("tailhub:next_job_id"))
    forged = {
        **base,
        "id": forged_id,
        "state": "PENDING",
        "spec": {
            "kind": "local",
            "run": f"touch {pwned}",
            "setup": "",
            "workdir": str(tmp_path),
            "envs": [],
            "environment": [],
        },
        "home": "n1",
    }
    redis.hset(
        f"tailhub:job:{forged_id}",
        mapping={"record": json.dumps(forged), "size": 0, "sealed": 0, "holder": ""},
    )
    redis.set("tailhub:job:424242", "x")
    redis.zadd("tailhub:jobs", {str(forged_id): forged_id, "424242": 424242})
    redis.publish("tailhub:changes", str(forged_id))
    redis.publish("tailhub:changes", "424242")
    wait_until(
        lambda: "never launched" in nodes[1].log_text() and "424242" in nodes[1].log_text(),
        what="n1 to leave out the forged job and the key of another type",
    )
    # The sync goes on: a job made on n0 now reaches n1.
    with nodes[0].client() as client:
        later = client.attach_push(name="after-the-forgery")
    wait_until(lambda: later.id in _job_ids(nodes[1]), what="the next job on n1")
    # A node restarts and one joins all the same.
    nodes[1].kill()
    nodes[1].start_as_service()
    late = cluster.add("n2")
    assert cluster.job(later.id, on=late).name == "after-the-forgery"
    assert not pwned.exists()
    assert forged_id not in _job_ids(nodes[1])


def _job_ids(node: DaemonProcess) -> set[int]:
    with node.client() as client:
        return {job.id for job in client.list()}


def test_a_node_killed_between_sealing_a_job_and_storing_its_end_ends_it_everywhere(
    cluster: Cluster, tmp_path: Path
) -> None:
    # The job is sealed in the node's own database first, then its end goes to Redis: a
    # kill -9 between the two left it sealed there and open in Redis, for ever.
    first = cluster.add("n0", env={"TAILHUB_CRASH_AT": "before-cluster-end"})
    second = cluster.add("n1")
    job_id, follower = followed_push_job(first, second, tmp_path / "f", "crash", b"one\n")
    finishing = start_background_cli(first.home, tmp_path / "c", "jobs", "finish", str(job_id))
    restart_once_crashed(first, "before-cluster-end")
    finishing.wait()

    assert follower.wait() == 0, follower.stderr
    assert follower.stdout == b"one\n"
    assert cluster.job(job_id, on=second).state is JobState.SUCCEEDED


def test_a_launch_across_a_node_killed_before_its_job_reached_redis_runs_the_job_once(
    cluster: Cluster, tmp_path: Path
) -> None:
    first = cluster.add("n0", env={"TAILHUB_CRASH_AT": "before-cluster-create"})
    second = cluster.add("n1")
    counter = tmp_path / "runs"
    task = tmp_path / "task.yaml"
    task.write_text(f"run: echo ran >> {counter}; echo hello\n")
    launching = start_background_cli(first.home, tmp_path / "l", "jobs", "launch", str(task))
    restart_once_crashed(first, "before-cluster-create")

    assert launching.wait() == 0, launching.stderr
    assert launching.stdout == b"hello\n"
    assert counter.read_text() == "ran\n"
    [job] = second.client().list()
    assert job.state is JobState.SUCCEEDED


def test_a_finish_acknowledged_before_its_record_reached_redis_holds_across_a_kill(
    cluster: Cluster, tmp_path: Path
) -> None:
    # The node saves the job's end in its database, answers, then sends the record to Redis:
    # killed in between, it came back and took Redis's older record (RUNNING) over its own.
    # The job ran again, and its followers elsewhere waited for ever.
    first = cluster.add("n0", env={"TAILHUB_CRASH_AT": "before-cluster-save"})
    second = cluster.add("n1")
    job_id, follower = followed_push_job(first, second, tmp_path / "f", "finished", b"one\n")
    finishing = start_background_cli(
        first.home, tmp_path / "c", "jobs", "finish", "--exit-code", "3", str(job_id)
    )
    restart_once_crashed(first, "before-cluster-save")

    assert follower.wait() == 100, follower.stderr  # failed, with the finish's exit code
    assert follower.stdout == b"one\n"
    finishing.wait()
    for node in (first, second):
        job = cluster.job(job_id, on=node)
        assert (job.state, job.exit_code) == (JobState.FAILED, 3)


def test_a_finish_answered_before_a_restarted_node_took_its_job_back_holds(
    cluster: Cluster, tmp_path: Path
) -> None:
    # The hostile tester's repro: the finish waits for the killed node, which answers it as
    # soon as it is back, before its take-over; the take-over then applied Redis's older
    # record (RUNNING) over the finish.
    first, second = cluster.start(2)
    job_id, follower = followed_push_job(first, second, tmp_path / "f", "finished", b"one\n")
    first.kill()
    finishing = start_background_cli(first.home, tmp_path / "c", "jobs", "finish", str(job_id))
    wait_until(lambda: "waiting for" in finishing.stderr, what="the finish to wait for n0")
    first.start()

    assert finishing.wait() == 0, finishing.stderr
    assert follower.wait() == 0, follower.stderr
    assert follower.stdout == b"one\n"
    for node in (first, second):
        assert cluster.job(job_id, on=node).state is JobState.SUCCEEDED
