"""Descriptors: a daemon started with the usual soft limit (1024) still follows 2000 files."""

from __future__ import annotations

import resource
from pathlib import Path

from helpers import DaemonProcess, wait_until

from tailhub.client import JobState, LogChunk

FILE_JOBS = 2000


def test_two_thousand_file_jobs_fit_in_a_daemon_started_with_1024_descriptors(
    home: Path, workdir: Path
) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    assert hard >= 8192, "the test needs a hard limit of at least 8192 descriptors"
    daemon = DaemonProcess(home, args=["--heartbeat-interval", "0.5"])
    # The daemon inherits the soft limit a login shell typically has.
    resource.setrlimit(resource.RLIMIT_NOFILE, (1024, hard))
    try:
        daemon.start()
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
    try:
        paths = []
        for index in range(FILE_JOBS):
            path = workdir / f"{index}.log"
            path.write_bytes(b"first line of %d\n" % index)
            paths.append(path)
        with daemon.client() as client:
            ids = [client.attach_file(str(path)).id for path in paths]
            expected = sum(path.stat().st_size for path in paths)

            def all_read() -> bool:
                jobs = client.list()
                assert not [job for job in jobs if job.state is JobState.FAILED], [
                    job.reason for job in jobs if job.state is JobState.FAILED
                ][:3]
                return sum(job.log_size for job in jobs) == expected

            wait_until(all_read, timeout=120, what="every file job to read its file")
            assert all(job.state is JobState.RUNNING for job in client.list())
            # Waiting jobs hold what they need: the followed file and the log they append to.
            assert daemon.open_fds() <= 2 * FILE_JOBS + 100

            push = client.attach_push()
            assert client.publish(push.id, b"still works\n") == len(b"still works\n")

            last = paths[-1]
            with last.open("ab") as out:
                out.write(b"a line for the follower\n")
            received = b""
            for item in client.follow(ids[-1]):
                if isinstance(item, LogChunk):
                    received += item.data
                    if received.endswith(b"a line for the follower\n"):
                        break
            assert received == last.read_bytes()
    finally:
        daemon.stop()
