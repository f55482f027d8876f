"""The cluster benchmarks' Redis: the shared redis-server (harness/redis_server.py) run as the
cluster docs advise (append-only file, fsync every second), and what it uses as read."""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

import redis

from harness.readings import cpu_times, peak_rss_bytes, rss_bytes
from harness.redis_server import RedisServer

INSTALL_HINT = "apt-get install redis-server"


def available() -> bool:
    return shutil.which("redis-server") is not None


def cluster_redis(directory: Path) -> RedisServer:
    """A redis-server as a cluster should run one (started by `with`, killed after)."""
    return RedisServer(directory, fsync="everysec")


@dataclass(frozen=True)
class RedisReading:
    """Redis's own view of its memory, and the process's, at one moment."""

    used_memory_bytes: int  # INFO memory used_memory: what Redis allocated for data
    rss_bytes: int
    peak_rss_bytes: int
    cpu_s: float  # CPU seconds of the server process since it started


def reading(server: RedisServer) -> RedisReading:
    with redis.Redis(port=server.port, socket_timeout=5.0) as client:
        info = client.info("memory")
    return RedisReading(
        used_memory_bytes=int(info["used_memory"]),
        rss_bytes=rss_bytes(server.pid),
        peak_rss_bytes=peak_rss_bytes(server.pid),
        cpu_s=cpu_times(server.pid).own,
    )
