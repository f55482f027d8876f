"""The Redis the cluster tests run on keeps its promise: with an append-only file fsynced on
every write (`appendfsync always`, what the README recommends), a write Redis acknowledged
survives a crash of Redis; without persistence, it does not."""

from __future__ import annotations

from collections.abc import Callable

from redis_helpers import RedisServer


def test_an_acknowledged_write_survives_a_redis_crash_with_aof(redis_server: RedisServer) -> None:
    writer = redis_server.client()
    entry = writer.xadd("log", {"data": b"hello\n"}, id="6-0")
    assert entry == b"6-0"
    port = redis_server.port

    redis_server.kill()
    redis_server.restart()

    assert redis_server.port == port  # same address: clients reconnect to where it was
    assert redis_server.client().xrange("log") == [(b"6-0", {b"data": b"hello\n"})]


def test_without_persistence_a_redis_crash_loses_everything(
    start_redis: Callable[..., RedisServer],
) -> None:
    server = start_redis(appendonly=False)
    server.client().set("kept", "no")

    server.kill()
    server.restart()

    assert server.client().get("kept") is None
