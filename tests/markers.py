"""What a test needs besides Python, said once: the markers, how a test gets one, and what
happens when its requirement is missing.

- `slow`: among the longest (listed in `SLOW` by what they do, or measured at 2 s or more in
  `slow-tests.txt`); `make test-fast` leaves it out.
- `root`: needs root (a tmpfs mount, network namespaces, a file given to another user).
- `redis`: starts a real redis-server.
- `browser`: drives Debian's headless Chromium through its chromedriver (the web view).

A test using one of the fixtures in `FIXTURE_MARKERS` gets its marker without saying so.
When a requirement is missing, the test says which and why: outside CI it is skipped; in CI
(`CI` set, as every CI service does) it fails, so that a runner lacking something never
passes by running less.
"""

from __future__ import annotations

import functools
import os
import shutil
from pathlib import Path

import pytest

from harness.redis_server import INSTALL_HINT as REDIS_INSTALL_HINT

# Debian's packages, used by their paths (selenium must not look for, or download, another).
CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
CHROMIUM_INSTALL_HINT = (
    "chromium is missing (the browser tests need it): sudo apt-get install chromium chromium-driver"
)

MARKERS = {
    "slow": "takes more than ~10 s: left out of `make test-fast`",
    "root": "needs root (tmpfs mounts, network namespaces, files given to another user); "
    "skipped without it outside CI, failed in CI",
    "redis": "starts a real redis-server; skipped when it is missing outside CI, failed in CI",
    "browser": "drives headless Chromium; skipped when chromium or chromium-driver is missing "
    "outside CI, failed in CI",
}

# The slow end-to-end tests (`make test-fast` leaves them out), by module or by test: the
# longest by measured duration (several daemons or a cluster, a benchmark, floods of followers or
# jobs, restarts and reconnect windows, building and installing the wheel). Listed here rather
# than in each module, so that one look tells what the edit loop skips.
SLOW = (
    "test_bench.py",
    "test_budget.py",
    "test_chaos.py",
    "test_cluster.py",
    "test_cluster_faults.py",
    "test_cluster_netns.py",
    "test_cluster_push.py",
    "test_cluster_records.py",
    "test_cluster_redis_restore.py",
    "test_daemon_restart.py",
    "test_fanout.py",
    "test_follow_reconnect.py",
    "test_isolation.py",
    "test_job_survival.py",
    "test_listener_abuse.py",
    "test_many_subscriptions.py",
    "test_memory_churn.py",
    "test_node_client.py",
    "test_reconnect_storm.py",
    "test_restart.py",
    "test_supervision.py",
    "test_tail.py",
    "test_web_browser.py",
    "test_wheel.py",
    "test_autostart.py::test_many_clis_at_once_start_exactly_one_daemon",
    "test_binary_data.py::test_every_byte_value_a_huge_line_and_carriage_returns_pass_unchanged",
    "test_daemon_options.py::test_start_with_a_listener_an_autostarted_daemon_lacks_names_the_restart_that_adds_it",
    "test_daemon_options.py::test_start_with_a_config_file_tells_the_one_applied_from_an_edited_one",
    "test_event_limits.py::test_a_stderr_flood_in_events_mode_is_capped_and_the_drops_are_reported",
    "test_faults.py::test_jobs_publish_survives_daemon_restarts_mid_stream",
)


# And those measured slow in a full run (scripts/slow-tests writes the list from pytest's
# --durations report): a test function whose case took 2 s or more.
MEASURED_SLOW = Path(__file__).parent / "slow-tests.txt"


@functools.cache
def _measured_slow() -> frozenset[str]:
    lines = MEASURED_SLOW.read_text().splitlines()
    return frozenset(line for line in lines if line and not line.startswith("#"))


def is_slow(nodeid: str) -> bool:
    """Whether the test `nodeid` (tests/e2e/MODULE::NAME[PARAMS]) is listed in `SLOW` or was
    measured slow."""
    if not nodeid.startswith("tests/e2e/"):
        return False
    function = nodeid.partition("[")[0]
    module, _, name = function.removeprefix("tests/e2e/").partition("::")
    return module in SLOW or f"{module}::{name}" in SLOW or function in _measured_slow()


# Fixtures whose tests get a marker without saying so.
FIXTURE_MARKERS = {
    "small_disk_home": "root",
    "stop_any_daemon": "root",
    "roots_dir": "root",
    "redis_server": "redis",
    "start_redis": "redis",
    "cluster": "redis",
    "browser": "browser",
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
    if marker == "browser" and not (
        os.access(CHROMIUM, os.X_OK) and os.access(CHROMEDRIVER, os.X_OK)
    ):
        return CHROMIUM_INSTALL_HINT
    return None


# Tests that measure time, memory or CPU against a bound, or load the whole machine (a
# benchmark, a 1 GiB log): pytest-xdist (`--dist loadgroup`) runs them one after another on one
# worker, never two at once, so that one's load is not another's measurement.
measures = pytest.mark.xdist_group("measures")


def one_worker(name: str) -> pytest.MarkDecorator:
    """For a module whose tests share an expensive module fixture (a built wheel and its
    venv, a browser): xdist runs them all on one worker, so the fixture is made once, not once
    per worker (the wheel's venv took 100 s, three times over, on four workers)."""
    return pytest.mark.xdist_group(name)
