"""Cluster mode: a push job takes bytes on the node that attached it, and its publisher
outlives that node's restart, as it outlives a daemon's alone."""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import IO

from cluster_helpers import Cluster
from helpers import DaemonProcess, cli_env, wait_until

from tailhub.client import JobNotFoundError, JobState, LogChunk

LINES = 300
# Each line is produced this long after the previous one: a producer writing as it runs.
LINE_INTERVAL = 0.01


def _produce(stdin: IO[bytes], lines: list[bytes]) -> None:
    for line in lines:
        stdin.write(line)
        stdin.flush()
        time.sleep(LINE_INTERVAL)  # (pacing the producer, not waiting for anything)
    stdin.close()


def _log_size(cluster: Cluster, job_id: int, node: DaemonProcess) -> int:
    """The job's log size as `node` has it; 0 while its record has not reached `node` yet
    (records go from node to node through Redis: a new job is not everywhere at once)."""
    try:
        return cluster.job(job_id, on=node).log_size
    except JobNotFoundError:
        return 0


def test_a_publisher_outlives_a_kill_and_restart_of_its_jobs_home_node(
    cluster: Cluster, tmp_path: Path
) -> None:
    a, b = cluster.start(2)
    with a.client() as client:
        job = client.attach_push()
    lines = [b"line %03d %s\n" % (number, b"." * 100) for number in range(LINES)]
    errors = tmp_path / "publish.err"
    with errors.open("wb") as stderr:
        publisher = subprocess.Popen(
            [sys.executable, "-m", "tailhub.client", "jobs", "publish", str(job.id)],
            env=cli_env(a.home),
            stdin=subprocess.PIPE,
            stderr=stderr,
        )
    assert publisher.stdin is not None
    producer = threading.Thread(target=_produce, args=(publisher.stdin, lines))
    producer.start()
    try:
        # Killed while the publisher streams through it (a Publish may be in flight).
        wait_until(
            lambda: _log_size(cluster, job.id, b) >= 50 * len(lines[0]),
            what="the first 50 lines in the cluster",
        )
        a.kill()
        a.start_as_service()  # (a start that finds its name still held exits 6: again)
        producer.join(60)
        assert publisher.wait(90) == 0, errors.read_text()
    finally:
        producer.join(60)
        if publisher.poll() is None:
            publisher.kill()
            publisher.wait()
    with a.client() as client:
        client.finish(job.id)
    for node in (a, b):
        with node.client() as client:
            received = b"".join(
                item.data for item in client.follow(job.id) if isinstance(item, LogChunk)
            )
        assert received == b"".join(lines), node.home.name  # every line once, in order
    assert cluster.job(job.id, on=a).state is JobState.SUCCEEDED
    assert "not here" not in errors.read_text()
