"""The `local` source: a job started by tailhub's own runner.

The job writes its log file itself; the fetcher follows that file with the same tailer as the
`file` source and only takes note of the bytes (they are stored once). When the process has
exited and the file is drained, the recorded exit status becomes the job's outcome.
"""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

from tailhub.daemon.model import LocalSpec
from tailhub.daemon.runner import LocalRunner, RunHandle
from tailhub.daemon.signal import Stop
from tailhub.daemon.sources.base import Outcome, Upstream, UpstreamUnusable
from tailhub.daemon.sources.tail import FileTailer
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
        stop = Stop()
        unregister = upstream.finished.on_set(stop.set)
        waiter = asyncio.create_task(self._set_on_exit(handle, stop))
        try:
            await FileTailer(self.log_path, self.watcher, upstream, stop).follow()
        finally:
            unregister()
            waiter.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await waiter
        status = self.runner.exit_status(self.job_id)
        if status is None:
            return Outcome(
                137, "the job's process ended without recording an exit status (killed?)"
            )
        if status.phase == "setup":
            return Outcome(status.code, f"setup failed with exit code {status.code}")
        return Outcome(status.code, f"run exited with {status.code}")

    async def _set_on_exit(self, handle: RunHandle, stop: Stop) -> None:
        await self.runner.wait_for_exit(handle)
        stop.set()
