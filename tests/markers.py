"""What a test needs besides Python, said once: the markers, how a test gets one, and what
happens when its requirement is missing.

- `slow`: takes more than about ten seconds; `make test-fast` leaves it out.
- `root`: needs root (a tmpfs mount, network namespaces, a file given to another user).
- `redis`: starts a real redis-server.

A test using one of the fixtures in `FIXTURE_MARKERS` gets its marker without saying so.
When a requirement is missing, the test says which and why: outside CI it is skipped; in CI
(`CI` set, as every CI service does) it fails, so that a runner lacking something never
passes by running less.
"""

from __future__ import annotations

import os
import shutil

import pytest

from harness.redis_server import INSTALL_HINT as REDIS_INSTALL_HINT

MARKERS = {
    "slow": "takes more than ~10 s: left out of `make test-fast`",
    "root": "needs root (tmpfs mounts, network namespaces, files given to another user); "
    "skipped without it outside CI, failed in CI",
    "redis": "starts a real redis-server; skipped when it is missing outside CI, failed in CI",
}

# Fixtures whose tests get a marker without saying so.
FIXTURE_MARKERS = {
    "small_disk_home": "root",
    "stop_any_daemon": "root",
    "roots_dir": "root",
    "redis_server": "redis",
    "start_redis": "redis",
    "cluster": "redis",
}


def on_ci() -> bool:
    return os.environ.get("CI", "").lower() not in ("", "0", "false", "no")


def unavailable(reason: str) -> None:
    """This test cannot run here: skipped with `reason` outside CI, failed with it in CI."""
    if on_ci():
        pytest.fail(f"CI lacks what this test needs: {reason}", pytrace=False)
    pytest.skip(reason)


def missing_requirement(marker: str) -> str | None:
    """Why a test marked `marker` cannot run on this machine; None when it can."""
    if marker == "root" and os.geteuid() != 0:
        return "needs root (tmpfs mounts, network namespaces, files given to another user)"
    if marker == "redis" and shutil.which("redis-server") is None:
        return REDIS_INSTALL_HINT
    return None


# Tests that measure time, memory or CPU against a bound, or load the whole machine (a
# benchmark, a 1 GiB log): pytest-xdist (`--dist loadgroup`) runs them one after another on one
# worker, never two at once, so that one's load is not another's measurement.
measures = pytest.mark.xdist_group("measures")
