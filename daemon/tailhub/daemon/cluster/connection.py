"""How a node reaches the cluster's Redis: two bounded pools, and a name for it in messages."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import redis.asyncio
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

from tailhub.daemon.cluster.redis_store import RedisStore

if TYPE_CHECKING:
    from tailhub.daemon.config import ClusterSettings

# Connections to Redis at most (one is the announcements').
_REDIS_CONNECTIONS = 32
# The logs' readers (the mirror's loop, a take-over's catch-up): their own connections, whose
# reads may take longer than the lease's quarter. No lease waits on them, and the script that
# reads a stream copies each entry before it skips one too large (a 60 MiB one planted in
# Redis outlasted 0.75 s on a loaded machine, and the node said Redis was unreachable).
_READER_CONNECTIONS = 4
_READER_TIMEOUT_S = 10.0


def describe_url(url: str) -> str:
    """host:port/db of a Redis URL, never its password."""
    kwargs: dict[str, Any] = redis.connection.parse_url(url)  # type: ignore[no-untyped-call]
    if "path" in kwargs:
        return f"unix:{kwargs['path']}/{kwargs.get('db', 0)}"
    return f"{kwargs.get('host', 'localhost')}:{kwargs.get('port', 6379)}/{kwargs.get('db', 0)}"


def _pool(
    url: str, connections: int, timeout: float, connect_timeout: float
) -> redis.asyncio.Redis:
    """A client on a bounded pool: a call waits for a free connection rather than failing
    (many jobs' writers at once must not look like Redis being away), and is never retried
    by redis-py (retries are ours: a lease holder must know within its deadline)."""
    pool = redis.asyncio.BlockingConnectionPool.from_url(
        url,
        max_connections=connections,
        timeout=timeout,
        socket_timeout=timeout,
        socket_connect_timeout=connect_timeout,
        retry=Retry(NoBackoff(), 0),
    )
    return redis.asyncio.Redis(connection_pool=pool)


def connect(settings: ClusterSettings) -> RedisStore:
    """The node's store in Redis (connections are made as they are needed)."""
    timeout = max(0.5, settings.lease_ms / 4000)
    url = settings.redis_url
    return RedisStore(
        _pool(url, _REDIS_CONNECTIONS, timeout, timeout),
        reader=_pool(url, _READER_CONNECTIONS, _READER_TIMEOUT_S, timeout),
    )
