"""The `file` source: a path on this machine that something else writes."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

from tailhub.daemon.domain import FileSpec
from tailhub.daemon.sources.base import Outcome, Upstream
from tailhub.daemon.sources.tail import FileTailer
from tailhub.daemon.watch import FileWatcher


@dataclass
class FileSource:
    """Follows a file until the job's final state is set through the API."""

    spec: FileSpec
    watcher: FileWatcher
    counts_connections: ClassVar[bool] = True

    async def fetch(self, upstream: Upstream) -> Outcome | None:
        await FileTailer(Path(self.spec.path), self.watcher, upstream, upstream.finished).follow()
        return None
