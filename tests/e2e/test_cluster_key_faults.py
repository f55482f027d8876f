"""A key planted under one job's name in Redis is that job's fault, not Redis's: the job fails
(or its mirror stops) with a reason naming the key, said once, and the node stays reachable and
serves every other job. Two plants used to make a node say Redis was unreachable ~10 times a
minute until the keys were deleted: the stream replaced by a string, and an entry past the
size the job's record says."""

from __future__ import annotations

import contextlib
import sys
import time
from pathlib import Path

from cluster_helpers import REPLAY, SERVING, Cluster, cluster_health, payload, upstream
from helpers import BackgroundCli, DaemonProcess, start_background_cli, wait_until

from tailhub.client import JobState, TailhubError

PREFIX = "tailhub:"


def publish(node: DaemonProcess, job_id: int, data: bytes) -> None:
    with node.client() as client:
        client.publish(job_id, data)


def log_size(node: DaemonProcess, job_id: int) -> int:
    with node.client() as client:
        return client.get(job_id).log_size


def the_good_job_streams_while_the_nodes_stay_reachable(
    first: DaemonProcess, second: DaemonProcess, good: int, rounds: int = 8
) -> None:
    """Publishes to the good job on its home node, and waits for each line to reach the other
    node (through its mirror); both nodes say their Redis is reachable throughout."""
    for index in range(rounds):
        publish(first, good, f"good {index}\n".encode())
        size = log_size(first, good)
        wait_until(lambda: log_size(second, good) == size, what="the good line on node n1")  # noqa: B023
        for node in (first, second):
            assert cluster_health(node) == SERVING, node.log_text()


def followers(second: DaemonProcess, directory: Path, *job_ids: int) -> list[BackgroundCli]:
    """A follower of each job on the second node: its mirror reads their streams."""
    return [
        start_background_cli(second.home, directory, "jobs", "logs", "-f", str(job_id))
        for job_id in job_ids
    ]


def start(cluster: Cluster) -> tuple[DaemonProcess, DaemonProcess, int, int]:
    first, second = cluster.start(2)
    with first.client() as client:
        bad, good = client.attach_push("bad").id, client.attach_push("good").id
    for job_id in (bad, good):
        publish(first, job_id, b"before\n")
        wait_until(lambda: job_id in {job.id for job in second.client().list()}, what="sync")  # noqa: B023
    return first, second, bad, good


def failed_with(node: DaemonProcess, job_id: int, words: str) -> None:
    def failed() -> bool:
        with node.client() as client:
            job = client.get(job_id)
        return job.state is JobState.FAILED and words in job.reason

    wait_until(failed, what=f"job {job_id} failed on {node.home.name} for '{words}'")


def test_a_stream_replaced_by_a_string_fails_its_job_and_nothing_else(
    cluster: Cluster, tmp_path: Path
) -> None:
    first, second, bad, good = start(cluster)
    watching = followers(second, tmp_path / "followers", bad, good)
    try:
        for job_id in (bad, good):
            wait_until(lambda: log_size(second, job_id) == 7, what="the mirror reads")  # noqa: B023
        redis = cluster.redis.client()
        redis.delete(f"{PREFIX}log:{bad}")
        redis.set(f"{PREFIX}log:{bad}", "notastream")
        # The mirror on n1 reads it with the good job's stream: it stops reading that one only.
        the_good_job_streams_while_the_nodes_stay_reachable(first, second, good)
        # The holder writes to it: the job fails, for the key it names.
        with contextlib.suppress(TailhubError):
            publish(first, bad, b"after\n")
        failed_with(first, bad, f"{PREFIX}log:{bad}")
        failed_with(second, bad, f"{PREFIX}log:{bad}")
        the_good_job_streams_while_the_nodes_stay_reachable(first, second, good)
    finally:
        for follower in watching:
            follower.stop()
    for node in (first, second):
        assert "is unreachable" not in node.log_text()
    # Said once: by the holder, when it wrote, and by the mirror on n1, when it read.
    assert first.log_text().count(f"job {bad}: Redis refuses") == 1
    assert second.log_text().count(f"({PREFIX}log:{bad}) is a key of another type") == 2
    assert second.log_text().count("it is no longer read here") == 1  # (and its event, once)


def test_an_entry_past_its_records_size_fails_its_job_and_nothing_else(
    cluster: Cluster, tmp_path: Path
) -> None:
    first, second, bad, good = start(cluster)
    watching = followers(second, tmp_path / "followers", good)
    try:
        redis = cluster.redis.client()
        redis.xadd(f"{PREFIX}log:{bad}", {"v": "planted"}, id="31457280-1")
        with contextlib.suppress(TailhubError):
            publish(first, bad, b"after\n")
        failed_with(first, bad, "holds an entry past the size its record says")
        # Its end sealed its record all the same: every node sees it failed.
        failed_with(second, bad, "holds an entry past the size its record says")
        the_good_job_streams_while_the_nodes_stay_reachable(first, second, good)
        # A new job on the same node is served as well.
        with first.client() as client:
            later = client.attach_push("later").id
        publish(first, later, b"later\n")
        assert log_size(first, later) == len(b"later\n")
    finally:
        for follower in watching:
            follower.stop()
    for node in (first, second):
        assert "is unreachable" not in node.log_text()
    assert first.log_text().count(f"job {bad}: Redis refuses") == 1


def test_a_broken_stream_of_a_dead_holders_job_is_not_taken_over_and_stops_no_round(
    cluster: Cluster, tmp_path: Path
) -> None:
    first, second = cluster.start(2)
    data = payload(64 * 1024, seed=5)
    jobs: dict[str, int] = {}
    for name in ("bad", "good"):
        log, state = upstream(tmp_path / name, data)
        with first.client() as client:
            jobs[name] = client.attach_command([sys.executable, REPLAY, str(log), str(state)]).id
    watching = followers(second, tmp_path / "followers", *jobs.values())
    try:
        for job_id in jobs.values():
            wait_until(lambda: log_size(second, job_id) == len(data), what="the mirror reads")  # noqa: B023
        assert {cluster.holder(job_id) for job_id in jobs.values()} == {"n0"}
        redis = cluster.redis.client()
        redis.delete(f"{PREFIX}log:{jobs['bad']}")
        redis.set(f"{PREFIX}log:{jobs['bad']}", "notastream")
        first.kill()
        # The good job is taken over, round after round past the broken one...
        cluster.wait_for_holder(jobs["good"], other_than=["n0"], timeout=30)
        wait_until(
            lambda: (
                f"job {jobs['bad']}: " in second.log_text()
                and "it is no longer read here" in second.log_text()
            ),
            what="the broken stream said",
        )
        assert cluster_health(second) == SERVING, second.log_text()
    finally:
        for follower in watching:
            follower.stop()
    log_text = second.log_text()
    # ...and the broken one is said once, never taken over, and fails no round.
    assert "the take-over round failed" not in log_text
    assert log_text.count("it is no longer read here") == 1
    assert f"job {jobs['bad']}: this node fetches it now" not in log_text


def test_a_lease_replaced_by_a_hash_stops_that_jobs_fetch_and_nothing_else(
    cluster: Cluster, tmp_path: Path
) -> None:
    # Every lease of a node is renewed in one script: a lease key of another type made it
    # fail whole, and the node said its Redis was unreachable and stopped every fetch.
    first, second = cluster.start(2)
    jobs: dict[str, int] = {}
    for name in ("bad", "good"):
        # Quiet once up: nothing is appended, only the lease renewed.
        with first.client() as client:
            jobs[name] = client.attach_command(["/bin/sh", "-c", "echo up; exec sleep 600"]).id
    for job_id in jobs.values():
        wait_until(lambda: cluster.holder(job_id, on=first) == "n0", what="n0 to fetch")  # noqa: B023
    redis = cluster.redis.client()
    lease = f"{PREFIX}lease:{jobs['bad']}"
    redis.delete(lease)
    redis.hset(lease, "planted", "1")
    # The bad job's fetch stops here (its lease is not this node's any more), and nobody
    # takes it over while the planted key stands; the good job's goes on.
    wait_until(lambda: cluster.holder(jobs["bad"], on=first) == "", what="the bad job's fetch")
    good = f"{PREFIX}lease:{jobs['good']}"
    started = time.monotonic()

    def the_good_lease_held_for_two_lease_lengths() -> bool:
        held = redis.get(good)
        assert isinstance(held, bytes), "the good job's lease was lost"
        assert held.startswith(b"n0 "), held
        for node in (first, second):
            assert cluster_health(node) == SERVING, node.log_text()
        return time.monotonic() - started > 2 * cluster.lease_ms / 1000

    wait_until(the_good_lease_held_for_two_lease_lengths, 30, "two lease lengths")
    assert cluster.holder(jobs["good"], on=second) == "n0"
    assert cluster.holder(jobs["bad"], on=second) == ""
    for node in (first, second):
        assert "is unreachable" not in node.log_text()
