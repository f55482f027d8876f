"""What comes back from Redis is input: records and stream entries that someone who can write to
Redis planted are checked like API requests, left out one by one, and stop nothing."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import grpc
from cluster_helpers import Cluster
from helpers import BackgroundCli, DaemonProcess, start_background_cli, wait_until

from tailhub.daemon.events import MAX_EVENTS, MAX_MESSAGE_BYTES
from tailhub.v1 import tailhub_pb2 as pb
from tailhub.v1 import tailhub_pb2_grpc as rpc

PREFIX = "tailhub:"


def job_ids(node: DaemonProcess) -> set[int]:
    with node.client() as client:
        return {job.id for job in client.list()}


def plant(cluster: Cluster, record: bytes | dict[str, object]) -> int:
    """A job as an attacker with write access to Redis makes one: id, record, index, news."""
    redis = cluster.redis.client()
    job_id = int(redis.incr(PREFIX + "next_job_id"))
    body = record if isinstance(record, bytes) else json.dumps({**record, "id": job_id})
    redis.hset(f"{PREFIX}job:{job_id}", mapping={"record": body, "size": "0", "first": "0"})
    redis.zadd(PREFIX + "jobs", {str(job_id): job_id})
    redis.publish(PREFIX + "changes", str(job_id))
    return job_id


def record_of_a_new_job(cluster: Cluster, node: DaemonProcess) -> dict[str, Any]:
    """The record Redis holds of a new push job of `node`: what a planted record copies."""
    with node.client() as client:
        job_id = client.attach_push("template").id
    stored = cluster.redis.client().hget(f"{PREFIX}job:{job_id}", "record")
    assert isinstance(stored, bytes)
    record: dict[str, Any] = json.loads(stored)
    return record


def plant_ended(cluster: Cluster, record: dict[str, Any], name: str, size: int) -> int:
    """A job that ended, planted: its record and its hash say it is sealed with `size` bytes
    (its stream is the test's to plant)."""
    job_id = plant(cluster, {**record, "name": name, "state": "SUCCEEDED", "sealed": True})
    cluster.redis.client().hset(f"{PREFIX}job:{job_id}", mapping={"size": size, "sealed": 1})
    return job_id


def test_hostile_records_are_left_out_and_the_sync_goes_on_across_a_restart(
    cluster: Cluster,
) -> None:
    first, second = cluster.start(2)
    with first.client() as client:
        good = client.attach_push("good").id
    wait_until(lambda: good in job_ids(second), what="the good job on the second node")
    stored = cluster.redis.client().hget(f"{PREFIX}job:{good}", "record")
    assert isinstance(stored, bytes)
    record = json.loads(stored)
    command = {"kind": "command", "shell": False, "transport_exit_codes": [255]}
    planted = [
        plant(cluster, b"[" * 60_000 + b"]" * 60_000),  # the parser recursed until it failed
        plant(cluster, {**record, "exit_code": 2**70}),  # SQLite overflowed on it
        plant(cluster, {**record, "sealed": "false"}),
        plant(cluster, {**record, "submitted_at": float("nan")}),
        plant(cluster, {**record, "spec": {**command, "argv": [1, 2]}}),
        plant(cluster, {**record, "spec": {**command, "argv": ["x" * 300_000]}}),
    ]

    # A job made after them still reaches every node: no loop stopped on them.
    with first.client() as client:
        after = client.attach_push("after").id
    for node in (first, second):
        wait_until(lambda: after in job_ids(node), what="the later job everywhere")  # noqa: B023
        assert not job_ids(node) & set(planted)
    # ...and a node starts again with them in Redis, and serves.
    second.restart()
    assert {good, after} <= job_ids(second)
    assert not job_ids(second) & set(planted)
    log = second.log_text()
    for job_id in planted:
        assert f"cluster: job {job_id} left out" in log


def test_a_flood_of_events_in_a_mirrored_log_is_bounded_like_a_local_jobs(
    cluster: Cluster, tmp_path: Path
) -> None:
    first, second = cluster.start(2)
    with first.client() as client:
        job_id = client.attach_push("flooded").id
    wait_until(lambda: job_id in job_ids(second), what="the job on the second node")
    # A follower on the second node makes it read the job's stream.
    follower: BackgroundCli = start_background_cli(
        second.home, tmp_path / "follower", "jobs", "logs", "-f", str(job_id)
    )
    try:
        redis = cluster.redis.client()
        pipe = redis.pipeline(transaction=False)
        for index in range(10_000):
            pipe.xadd(f"{PREFIX}log:{job_id}", {"v": f"{index:05d} " + "x" * 4090}, id="0-*")
        pipe.execute()

        def get_job() -> pb.GetJobResponse:
            with grpc.insecure_channel(second.paths.address) as channel:
                return rpc.TailhubServiceStub(channel).GetJob(pb.GetJobRequest(job_id=job_id))

        wait_until(lambda: len(get_job().events) >= MAX_EVENTS, what="the mirror to read them")
        events = get_job().events
        assert len(events) == MAX_EVENTS
        assert all(len(event.message.encode()) <= MAX_MESSAGE_BYTES for event in events)
    finally:
        follower.stop()


def test_records_at_ids_the_counter_never_gave_are_left_out_and_ids_stay_small(
    cluster: Cluster,
) -> None:
    first, second = cluster.start(2)
    with first.client() as client:
        good = client.attach_push("good").id
    wait_until(lambda: good in job_ids(second), what="the good job on the second node")
    redis = cluster.redis.client()
    stored = redis.hget(f"{PREFIX}job:{good}", "record")
    assert isinstance(stored, bytes)
    record = json.loads(stored)
    # Well-formed records, at ids no daemon took from the counter (INCR): far ahead, and
    # the very next one.
    forged = [1_000_000_000_000_000, int(redis.get(PREFIX + "next_job_id") or 0) + 5]
    for job_id in forged:
        body = json.dumps({**record, "id": job_id, "name": f"forged-{job_id}"})
        redis.hset(f"{PREFIX}job:{job_id}", mapping={"record": body, "size": "0", "first": "0"})
        redis.zadd(PREFIX + "jobs", {str(job_id): job_id})
        redis.publish(PREFIX + "changes", str(job_id))

    def seen(node: DaemonProcess) -> bool:
        return reported(node) == 2 or bool(job_ids(node) & set(forged))

    for node in (first, second):
        wait_until(lambda: seen(node), what="the forged records read")  # noqa: B023
    # A job made after them reaches every node, with the next id (adopting the forged one
    # would have made it 1,000,000,000,000,001).
    with second.client() as client:
        after = client.attach_push("after").id
    assert after < forged[1]
    for node in (first, second):
        wait_until(lambda: after in job_ids(node), what="the later job everywhere")  # noqa: B023
        assert not job_ids(node) & set(forged)
    second.restart()
    assert {good, after} <= job_ids(second)
    assert not job_ids(second) & set(forged)
    # Said once per start (two ids in at most a line each), naming them.
    assert reported(first) == 2
    wait_until(lambda: reported(second) == 4, what="the restarted node to report them")
    assert all(str(job_id) in second.log_text() for job_id in forged)


def reported(node: DaemonProcess) -> int:
    """How many records at ids the counter never gave the node's log says it left out."""
    found = re.findall(r"cluster: left out (\d+) job record\(s\) at ids", node.log_text())
    return sum(int(count) for count in found)


def _everything_in(redis: Any) -> bytes:
    """Every byte Redis holds for the cluster: strings, hashes, sets, sorted sets, streams."""
    found = []
    for key in redis.scan_iter(match=PREFIX + "*"):
        kind = redis.type(key)
        if kind == b"string":
            found.append(redis.get(key) or b"")
        elif kind == b"hash":
            found.extend(b"".join(pair) for pair in redis.hgetall(key).items())
        elif kind == b"set":
            found.extend(redis.smembers(key))
        elif kind == b"zset":
            found.extend(redis.zrange(key, 0, -1))
        elif kind == b"list":
            found.extend(redis.lrange(key, 0, -1))
        elif kind == b"stream":
            for _, fields in redis.xrange(key):
                found.extend(b"".join(pair) for pair in fields.items())
    return b"\n".join(found)


def test_a_forged_file_job_of_a_node_is_never_adopted_and_its_file_never_read(
    cluster: Cluster, tmp_path: Path
) -> None:
    # Someone who can write to Redis names a file (any file the daemon can read) as a file job
    # of n1: n1 would have read it into Redis for everyone. A node's file, push and local jobs
    # are in its own database since it made them: one it never made is refused.
    first, second = cluster.start(2)
    secret = tmp_path / "secret"
    secret.write_bytes(b"the-secret-bytes-0xC0FFEE\n" * 4)
    with second.client() as client:
        template = client.attach_push("template").id
    redis = cluster.redis.client()
    stored = redis.hget(f"{PREFIX}job:{template}", "record")
    assert isinstance(stored, bytes)
    record = json.loads(stored)
    forged = [
        plant(
            cluster,
            {**record, "state": "RUNNING", "spec": {"kind": "file", "path": str(secret)}},
        ),
        plant(cluster, {**record, "state": "RUNNING", "name": "forged-push"}),
    ]
    wait_until(
        lambda: all(f"job {job_id} left out" in second.log_text() for job_id in forged),
        what="n1 to refuse the forged jobs",
    )
    # The sync went on past them: a later job reaches n1.
    with first.client() as client:
        later = client.attach_push("later").id
    wait_until(lambda: later in job_ids(second), what="the later job on n1")
    log = second.log_text()
    for job_id in forged:
        assert log.count(f"job {job_id} left out") == 1, log
        assert job_id not in job_ids(second)
    assert "a file job of node n1 that this node never launched" in log
    assert "a push job of node n1 that this node never launched" in log
    assert b"the-secret-bytes" not in _everything_in(redis)
    assert f"job {forged[0]}: this node fetches it now" not in log


def test_a_node_that_joins_after_a_job_ended_serves_its_whole_log(
    cluster: Cluster, tmp_path: Path
) -> None:
    # The node adopts the job from a record already sealed: it used to seal its own (empty)
    # copy at once, and its followers got no byte, only the job's exit status.
    (first,) = cluster.start(1)
    with first.client() as client:
        job_id = client.attach_push("ended").id
        client.publish(job_id, b"one\ntwo\n")
        client.finish(job_id, 3)
    late = cluster.add("late")
    wait_until(lambda: job_id in job_ids(late), what="the ended job on the late node")
    follower = start_background_cli(late.home, tmp_path / "f", "jobs", "logs", "-f", str(job_id))
    assert follower.wait() == 100, follower.stderr  # exit 3: failed
    assert follower.stdout == b"one\ntwo\n"


def test_a_sealed_job_whose_stream_ends_short_ends_with_what_it_has_and_says_so(
    cluster: Cluster, tmp_path: Path
) -> None:
    first, second = cluster.start(2)
    # Planted: a job that ended, whose record says 30 bytes; its stream has 6, two entries of
    # no kind, bytes at an offset that is not one, and an end that is not at the log's end.
    job_id = plant_ended(cluster, record_of_a_new_job(cluster, first), "short", size=30)
    redis = cluster.redis.client()
    log = f"{PREFIX}log:{job_id}"
    redis.xadd(log, {"o": "0", "d": "hello\n"}, id="6-0")
    redis.xadd(log, {"e": json.dumps({"x": [[[]]]})}, id="6-1")
    redis.xadd(log, {"e": "[" * 100_000}, id="6-2")
    redis.xadd(log, {"o": "abc", "d": "zz"}, id="10-0")
    redis.xadd(log, {"end": '{"state": 5, "exit_code": "x"}'}, id="30-0")
    wait_until(lambda: job_id in job_ids(second), what="the planted job on the second node")

    follower = start_background_cli(second.home, tmp_path / "f", "jobs", "logs", "-f", str(job_id))
    follower.wait()  # it used to wait forever
    assert follower.stdout == b"hello\n"
    lines = follower.stderr.splitlines()
    assert lines == [
        f"tailhub: job {job_id}: the cluster's copy of this log ends at byte 6 of 30, without "
        "the job's end: the rest is not in Redis"
    ], follower.stderr


def test_an_ended_job_whose_stream_is_a_key_of_another_type_ends_its_followers(
    cluster: Cluster, tmp_path: Path
) -> None:
    first, second = cluster.start(2)
    job_id = plant_ended(cluster, record_of_a_new_job(cluster, first), "listed", size=6)
    cluster.redis.client().rpush(f"{PREFIX}log:{job_id}", "hello\n")
    wait_until(lambda: job_id in job_ids(second), what="the planted job on the second node")

    follower = start_background_cli(second.home, tmp_path / "f", "jobs", "logs", str(job_id))
    follower.wait()  # it used to wait forever
    assert follower.stdout == b""
    assert "is a key of another type" in follower.stderr
    assert "Traceback" not in follower.stderr
