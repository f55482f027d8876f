"""The `push` source: producers send bytes through the API, so there is nothing to fetch."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import ClassVar

from tailhub.daemon.domain import PushSpec
from tailhub.daemon.sources.base import Outcome, Upstream


@dataclass
class PushSource:
    spec: PushSpec
    counts_connections: ClassVar[bool] = False

    async def fetch(self, upstream: Upstream) -> Outcome | None:
        finished = asyncio.Event()
        unregister = upstream.finished.on_set(finished.set)
        try:
            await finished.wait()
        finally:
            unregister()
        return None
