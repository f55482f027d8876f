"""Idle followers hear from the daemon: heartbeats with the log's size and the job's state."""

from __future__ import annotations

import threading
from pathlib import Path

from helpers import DaemonProcess, wait_until

from tailhub.client import JobState, LogChunk, LogHeartbeat, LogItem

# The daemon fixture beats every 0.5 s: a few intervals, with room for a busy machine.
HEARTBEAT_WITHIN = 5.0


def test_an_idle_follower_of_a_running_job_receives_heartbeats_with_size_and_state(
    daemon: DaemonProcess, workdir: Path
) -> None:
    log = workdir / "quiet.log"
    log.write_bytes(b"started, now waiting\n")
    items: list[LogItem] = []
    with daemon.client() as client:
        job_id = client.attach_file(str(log)).id
        wait_until(lambda: client.get(job_id).log_size == log.stat().st_size, what="fetch")

        def follow() -> None:
            with daemon.client() as follower:
                # One at a time, so that the test sees each item as it arrives.
                for item in follower.follow(job_id):
                    items.append(item)  # noqa: PERF402

        thread = threading.Thread(target=follow, daemon=True)
        thread.start()
        try:

            def heartbeats() -> list[LogHeartbeat]:
                return [item for item in list(items) if isinstance(item, LogHeartbeat)]

            wait_until(heartbeats, HEARTBEAT_WITHIN, "a heartbeat to the idle follower")
            assert heartbeats()[0] == LogHeartbeat(len(b"started, now waiting\n"), JobState.RUNNING)
            assert [item for item in items if isinstance(item, LogChunk)] == [
                LogChunk(0, b"started, now waiting\n")
            ]

            # They keep coming, and tell the new size once the log has grown.
            with log.open("ab") as handle:
                handle.write(b"still here\n")
            size = log.stat().st_size
            wait_until(
                lambda: LogHeartbeat(size, JobState.RUNNING) in heartbeats(),
                HEARTBEAT_WITHIN,
                "a heartbeat with the new size",
            )
        finally:
            client.finish(job_id)
            thread.join(30)
    assert not thread.is_alive()
