"""Fan-out: many followers of one job share its one upstream fetch and all get every byte."""

from __future__ import annotations

import hashlib
import json
import os
import time
from pathlib import Path

from follow_many import kill_all, results_of, start_followers
from helpers import DaemonProcess, run_cli, wait_until

FOLLOWER_PROCESSES = 4
FOLLOWERS_PER_PROCESS = 50


def test_two_hundred_followers_of_a_growing_file_get_its_exact_bytes_over_one_upstream(
    daemon: DaemonProcess, workdir: Path
) -> None:
    log = workdir / "train.log"
    log.write_bytes(b"epoch 0 starting\n")
    attached = run_cli(daemon.home, "jobs", "attach", "--file", str(log), "--name", "train")
    assert attached.returncode == 0, attached.stderr
    job_id = int(attached.stdout)
    appended = 0

    def append(data: bytes) -> None:
        with log.open("ab") as handle:
            handle.write(data)

    with daemon.client() as client:
        started = time.monotonic()
        processes = [
            start_followers(daemon.paths.address, job_id, FOLLOWERS_PER_PROCESS)
            for _ in range(FOLLOWER_PROCESSES)
        ]
        followers = FOLLOWER_PROCESSES * FOLLOWERS_PER_PROCESS

        # The file keeps growing while the followers connect...
        def grow_and_count_followers() -> bool:
            nonlocal appended
            appended += 1
            append(b"step %d loss=%f\n" % (appended, 1 / appended))
            # A follower process that fails outright ends early; its error then says why.
            return client.get(job_id).subscribers == followers or any(
                process.poll() is not None for process in processes
            )

        try:
            wait_until(grow_and_count_followers, 60, f"{followers} followers to connect")
            connected = time.monotonic() - started
            # ...and after: lines, binary noise, and blocks bigger than one message.
            for step in range(20):
                append(b"epoch %d done\n" % step + os.urandom(3000) + b"\n")
            append(os.urandom(3 * 1024 * 1024))
            append(b"training complete\n")

            finished = run_cli(daemon.home, "jobs", "finish", str(job_id))
            assert finished.returncode == 0, finished.stderr
            results = [result for process in processes for result in results_of(process, 120)]
        finally:
            kill_all(processes)
        all_done = time.monotonic() - started
        job = client.get(job_id)

    expected = log.read_bytes()
    assert len(results) == followers
    assert [result.error for result in results if result.error] == []
    assert {(result.size, result.sha256) for result in results} == {
        (len(expected), hashlib.sha256(expected).hexdigest())
    }
    assert {(result.state, result.exit_code, result.finished) for result in results} == {
        ("JOB_STATE_SUCCEEDED", 0, True)
    }
    # One upstream fetch, whatever the number of followers: through the API and the CLI.
    assert job.upstream_connections == 1
    assert job.subscribers == 0
    assert job.log_size == len(expected)
    queue = run_cli(daemon.home, "jobs", "queue", "--json")
    assert queue.returncode == 0, queue.stderr
    (listed,) = [entry for entry in json.loads(queue.stdout) if entry["id"] == job_id]
    assert listed["upstream_connections"] == 1
    assert listed["state"] == "SUCCEEDED"
    print(
        f"{followers} followers connected in {connected:.2f}s, all done in {all_done:.2f}s; "
        f"{len(expected)} bytes each, {job.bytes_served} bytes served, "
        f"daemon RSS {daemon.rss_bytes() / 2**20:.0f} MiB"
    )
