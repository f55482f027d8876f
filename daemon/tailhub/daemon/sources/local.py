"""The `local` source: a job started by tailhub's own runner.

The job writes its log file itself; the fetcher follows that file with the same tailer as the
`file` source and only takes note of the bytes (they are stored once). When the process has
exited and the file is drained, the recorded exit status becomes the job's outcome.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

from tailhub.daemon.domain import LocalSpec
from tailhub.daemon.errors import UpstreamUnusable
from tailhub.daemon.runner import LocalRunner, RunHandle
from tailhub.daemon.sources.base import Outcome, Upstream
from tailhub.daemon.sources.tail import FileTailer
from tailhub.daemon.wakeups import StopFlag
from tailhub.daemon.watch import FileWatcher


@dataclass
class LocalSource:
    spec: LocalSpec
    runner: LocalRunner
    log_path: Path
    watcher: FileWatcher
    job_id: int
    counts_connections: ClassVar[bool] = True

    async def fetch(self, upstream: Upstream) -> Outcome | None:
        handle = RunHandle.from_json(upstream.state)
        if handle is None:
            raise UpstreamUnusable(f"job {self.job_id} has no process on record")
        stop = StopFlag()
        unregister = upstream.finished.on_set(stop.set)
        waiter = asyncio.create_task(self._set_on_exit(handle, stop))
        disk = asyncio.create_task(_report_full_disk(self.log_path, upstream))
        try:
            await FileTailer(self.log_path, self.watcher, upstream, stop).follow()
        finally:
            unregister()
            for task in (waiter, disk):
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        status = self.runner.exit_status(self.job_id)
        if status is None:
            return Outcome(
                137, "the job's process ended without recording an exit status (killed?)"
            )
        if status.phase == "setup":
            return Outcome(status.code, f"setup failed with exit code {status.code}")
        return Outcome(status.code, f"run exited with {status.code}")

    async def _set_on_exit(self, handle: RunHandle, stop: StopFlag) -> None:
        await self.runner.wait_for_exit(handle)
        stop.set()


async def _report_full_disk(log_path: Path, upstream: Upstream) -> None:
    """Tells followers when the disk holding the log fills, and when it has room again.

    The job writes its log file itself, so unlike other sources nothing can pause it: what it
    writes while the disk is full is lost (its writes fail). That cannot be undone, but it is
    said, with where it happened, instead of the log silently missing lines. Polled (a full
    disk sends no event), every few seconds, only while the job runs.
    """
    full = False
    while True:
        now_full = _disk_full(log_path)
        if now_full and not full:
            upstream.event(
                f"the disk holding the log is full at offset {upstream.stored}: what the job "
                "writes now is lost until there is room"
            )
        elif full and not now_full:
            upstream.event(
                f"disk space available again at offset {upstream.stored}: output the job "
                "wrote while the disk was full is missing before it"
            )
        full = now_full
        await asyncio.sleep(_DISK_CHECK_SECONDS)


# How often a running local job's disk is checked for room, and what counts as none left (a
# job's next writes fail within a few blocks).
_DISK_CHECK_SECONDS = 2.0
_FULL_BELOW_BYTES = 256 * 1024


def _disk_full(path: Path) -> bool:
    try:
        facts = os.statvfs(path.parent)
    except OSError:
        return False
    # Root may use the blocks reserved for it; anyone else only the available ones.
    free = facts.f_bfree if os.geteuid() == 0 else facts.f_bavail
    return free * facts.f_frsize < _FULL_BELOW_BYTES
