"""Server-Sent Events: the response, its events, and the caps on how many are open.

Each event is written whole with one `write`, which waits while the browser's socket is full:
a stalled tab holds what it was being sent and no more (the chunk under the daemon-wide
budget, and the socket's buffers).
"""

from __future__ import annotations

import collections
import contextlib
import json
from collections.abc import Iterator
from typing import Any

from aiohttp import web

# What an EventSource waits before it reconnects after the stream ends or breaks (ms).
RETRY_MS = 1000
HEARTBEAT = b": heartbeat\n\n"


def event(name: str, data: dict[str, Any] | str, event_id: str | None = None) -> bytes:
    """One event: its name, the id a reconnect sends back (Last-Event-ID), one line of JSON."""
    text = data if isinstance(data, str) else json.dumps(data, separators=(",", ":"))
    head = f"event: {name}\n" + (f"id: {event_id}\n" if event_id is not None else "")
    return f"{head}data: {text}\n\n".encode()


async def open_stream(request: web.Request) -> web.StreamResponse:
    """An event stream's response, sent (its headers) before the first event."""
    response = web.StreamResponse(
        headers={
            "Content-Type": "text/event-stream; charset=utf-8",
            "Cache-Control": "no-cache, no-store",
            # nginx and others buffer responses unless told not to.
            "X-Accel-Buffering": "no",
        }
    )
    await response.prepare(request)
    await response.write(f"retry: {RETRY_MS}\n\n".encode())
    return response


class StreamSlots:
    """Event streams (and downloads) open at once: in all, and per session's identity."""

    def __init__(self, total: int, per_session: int) -> None:
        self.total = total
        self.per_session = per_session
        self.open = 0
        self._by_key: collections.Counter[str] = collections.Counter()

    def refusal(self, key: str) -> str | None:
        """Why one more stream for `key` is refused; None when it is not."""
        if self.open >= self.total:
            return (
                f"too many streams: the web view serves at most {self.total} at once "
                "(tailhubd --http-max-streams)"
            )
        if self._by_key[key] >= self.per_session:
            return (
                f"too many streams for this login: at most {self.per_session} at once "
                "(tailhubd --http-max-streams-per-session); close some tabs"
            )
        return None

    @contextlib.contextmanager
    def held(self, key: str) -> Iterator[None]:
        self.open += 1
        self._by_key[key] += 1
        try:
            yield
        finally:
            self.open -= 1
            self._by_key[key] -= 1
            if not self._by_key[key]:
                del self._by_key[key]
