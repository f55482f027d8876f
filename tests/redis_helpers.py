"""The tests' redis-server: one class, shared with the benchmarks (harness/redis_server.py)."""

from __future__ import annotations

from harness.redis_server import RedisServer

__all__ = ["RedisServer"]
