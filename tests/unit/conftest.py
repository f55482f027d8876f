"""The unit layer starts no process: every way Python has to start one fails the test here.

A test of the Redis writer or mirror may start a real redis-server (the `redis_server` fixture,
which marks it `redis`): Redis is not ours to fake. Nothing else does.
"""

from __future__ import annotations

import _posixsubprocess
import os
import subprocess
from typing import NoReturn

import pytest

_STARTERS = (
    # subprocess and asyncio's subprocesses (3.11+ bind fork_exec into subprocess at import)
    (subprocess, "_fork_exec"),
    (_posixsubprocess, "fork_exec"),
    (os, "fork"),
    (os, "forkpty"),
    (os, "posix_spawn"),
    (os, "posix_spawnp"),
    (os, "system"),
    (os, "execv"),
    (os, "execve"),
)


@pytest.fixture(autouse=True)
def starts_no_process(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> None:
    if request.node.get_closest_marker("redis") is not None:
        return

    def refused(*args: object, **kwargs: object) -> NoReturn:
        raise AssertionError("a unit test starts no process: this one belongs in tests/e2e")

    for module, name in _STARTERS:
        if hasattr(module, name):
            monkeypatch.setattr(module, name, refused)
