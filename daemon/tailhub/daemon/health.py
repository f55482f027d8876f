"""What the health service says, changed from anywhere on the loop and applied in order.

The cluster node reports Redis reachable or not from synchronous code; one owned task (an
essential one: supervisor.py) applies the latest report of each service, in the order they
came. Once the daemon fails, every service says NOT_SERVING for good.
"""

from __future__ import annotations

import asyncio
from typing import Any, NoReturn

from grpc_health.v1 import health_pb2

SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


class HealthReports:
    """The daemon's side of the gRPC health service (grpc_health's aio servicer)."""

    def __init__(self, servicer: Any) -> None:
        self._servicer = servicer
        self._pending: dict[str, bool] = {}
        self._changed = asyncio.Event()

    async def set(self, service: str, serving: bool) -> None:
        """Says it now (at start, before anything reports)."""
        await self._servicer.set(service, SERVING if serving else NOT_SERVING)

    def report(self, service: str, serving: bool) -> None:
        """Says it soon, after whatever was reported before (`run` applies it)."""
        self._pending.pop(service, None)  # (re-inserted last: the order reports came in)
        self._pending[service] = serving
        self._changed.set()

    async def run(self) -> NoReturn:
        """Applies the reports as they come (the daemon's "health" task)."""
        while True:
            await self._changed.wait()
            self._changed.clear()
            pending, self._pending = self._pending, {}
            for service, serving in pending.items():
                await self.set(service, serving)

    async def fail(self) -> None:
        """Every service NOT_SERVING, for good: the daemon stops."""
        await self._servicer.enter_graceful_shutdown()
