"""The daemon's memory under churn (issue 16, item 20): what an ended job leaves is bounded as
jobs end, the encoded-chunk cache is bounded in memory, and the daemon says where its memory
goes when asked (TAILHUB_TRACEMALLOC, SIGUSR2). The soak itself is bench/churn.py."""

from __future__ import annotations

import os
import re
import signal
from collections.abc import Callable
from pathlib import Path

from helpers import DaemonProcess, wait_until

from tailhub.daemon.wire import ENTRY_OVERHEAD, EncodedChunkCache


def test_ended_jobs_past_the_cap_are_removed_as_jobs_end_not_an_hour_later(
    start_daemon: Callable[..., DaemonProcess],
) -> None:
    daemon = start_daemon("--max-ended-jobs", "10")
    with daemon.client() as client:
        # One after another, so that they end in the order of their ids (the cap removes the
        # jobs that ended first).
        launched = []
        for _ in range(40):
            job_id = client.launch("echo hi").id
            launched.append(job_id)
            wait_until(lambda: client.get(job_id).state.terminal, 60, "the job to end")  # noqa: B023
        # The pass runs once a job has ended past the cap (a tenth of a cap of 10: one job).
        wait_until(lambda: len(client.list()) <= 11, 20, "the oldest ended jobs to go")
        kept = [job.id for job in client.list()]
    assert set(launched[-10:]) <= set(kept), kept  # the newest stay


def test_the_encoded_chunk_cache_counts_what_each_entry_costs() -> None:
    cache = EncodedChunkCache(max_bytes=40 * (100 + ENTRY_OVERHEAD))
    for offset in range(1000):
        cache.put((1, offset * 100, offset * 100 + 100), b"x" * 100)
    # 1,000 chunks of 100 bytes: 100 KB of bytes, but ~400 KB of memory; 40 fit.
    held = [offset for offset in range(1000) if cache.get((1, offset * 100, offset * 100 + 100))]
    assert held == list(range(960, 1000))


def test_the_daemon_says_where_its_memory_grew_when_asked(home: Path) -> None:
    daemon = DaemonProcess(home, env={"TAILHUB_TRACEMALLOC": "4"})
    daemon.start()
    try:
        assert "tracing memory allocations" in daemon.log_text()
        os.kill(daemon.pid, signal.SIGUSR2)
        wait_until(lambda: "memory report 1:" in daemon.log_text(), 30, "the first report")
        with daemon.client() as client:
            for _ in range(5):
                client.launch("echo hi")
        os.kill(daemon.pid, signal.SIGUSR2)
        wait_until(lambda: "memory report 2:" in daemon.log_text(), 30, "the second report")
    finally:
        daemon.stop()
    report = daemon.log_text().split("memory report 2:", 1)[1]
    assert re.search(r"grew [+-][\d,]+ bytes since the first report; top sites:", report)
    assert re.search(r"\n    [+-][\d,]+ B [+-][\d,]+ blocks \(now [\d,]+ B\): \S+:\d+", report)
    assert "objects by type: " in report
