"""The daemon-wide budget of bytes in flight: followers that stop reading cannot make the
daemon's memory grow with their number, and still get every byte once they read again."""

from __future__ import annotations

import hashlib
import os
import re
from pathlib import Path
from typing import Any

from follow_many import kill_all, results_of, start_followers, wait_ready
from helpers import DaemonProcess, wait_until

MIB = 1024 * 1024
BUDGET = 1 * MIB
PROCESSES = 3
FOLLOWERS_PER_PROCESS = 100
READERS = 10
# The floor a follower may take beyond a budget held by followers that stopped reading.
FLOOR = 2048
# Idle streams cost the same either way; what stalled followers hold must stay near the
# budget (measured: 15 MiB with it, 42 MiB with the budget lifted to 8 GiB).
RSS_GROWTH_LIMIT = 28 * MIB


def _budget_line(log: str) -> dict[str, int]:
    found = re.findall(
        r"subscriber budget: peak (\d+) of (\d+) bytes in flight.*?(\d+) overdrafts", log
    )
    assert found, f"the daemon logged no subscriber budget figures:\n{log[-2000:]}"
    peak, limit, overdrafts = (int(value) for value in found[-1])
    return {"peak": peak, "limit": limit, "overdrafts": overdrafts}


def _peak_rss(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmHWM")


def test_stalled_followers_hold_no_more_than_the_budget_and_get_every_byte_in_the_end(
    start_daemon: Any,
) -> None:
    daemon: DaemonProcess = start_daemon("--subscriber-budget", str(BUDGET))
    data = os.urandom(4 * MIB)
    followers = PROCESSES * FOLLOWERS_PER_PROCESS
    with daemon.client() as client:
        job = client.attach_push(name="burst")
        processes = [
            start_followers(daemon.paths.address, job.id, FOLLOWERS_PER_PROCESS, stall=True)
            for _ in range(PROCESSES)
        ]
        try:
            for process in processes:
                wait_ready(process)
            idle_rss = daemon.rss_bytes()
            # 4 MiB for 300 followers that read nothing: all of it is due to each of them.
            for start in range(0, len(data), MIB):
                client.publish(job.id, data[start : start + MIB])
            client.finish(job.id, 0)
            # Every stalled follower is being sent something (budget or floor) before any
            # of them reads on.
            wait_until(
                lambda: client.get(job.id).bytes_served >= followers * FLOOR,
                60,
                "the daemon to send to every stalled follower",
            )
            # Followers that read, arriving when stalled ones hold the whole budget, still
            # get everything while those go on stalling.
            readers = start_followers(daemon.paths.address, job.id, READERS)
            processes.append(readers)
            read = results_of(readers, 300)
            for process in processes[:PROCESSES]:
                assert process.stdin is not None
                process.stdin.write(b"read\n")
                process.stdin.flush()
            results = read + [
                result for process in processes[:PROCESSES] for result in results_of(process, 300)
            ]
            # The most the daemon ever held: while they stalled, and while all caught up.
            peak_rss = _peak_rss(daemon.pid)
        finally:
            kill_all(processes)
    daemon.stop()

    digest = hashlib.sha256(data).hexdigest()
    assert len(results) == followers + READERS
    assert all(result.error is None for result in results), {r.error for r in results}
    assert all(result.size == len(data) and result.sha256 == digest for result in results)
    assert all(result.state == "JOB_STATE_SUCCEEDED" for result in results)
    figures = _budget_line(daemon.log_text())
    assert figures["limit"] == BUDGET
    # Within the budget, plus the floors of followers that found it held by stalled ones.
    assert figures["peak"] <= BUDGET + (followers + READERS) * FLOOR, figures
    assert figures["overdrafts"] > 0, figures
    assert peak_rss - idle_rss < RSS_GROWTH_LIMIT, (
        f"daemon RSS grew by {(peak_rss - idle_rss) / MIB:.0f} MiB with {followers} stalled"
    )
