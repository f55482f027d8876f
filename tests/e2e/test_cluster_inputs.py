"""Cluster flags as someone hostile or careless gives them: one line, an exit code, nothing
started, and never a daemon that joins a database it was not given."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from remote_helpers import free_port


def _tailhubd(home: Path, *args: str, env: dict[str, str] | None = None) -> tuple[int, str]:
    done = subprocess.run(
        [sys.executable, "-m", "tailhub.daemon", "--home", str(home), *args],
        capture_output=True,
        timeout=60,
        env=env,
    )
    return done.returncode, done.stderr.decode(errors="replace")


@pytest.mark.parametrize(
    ("args", "said"),
    [
        (["--redis", "http://127.0.0.1:6379/0"], "starts with redis://"),
        (["--redis", "redis://127.0.0.1:6379/2x"], "the database '2x' is not a number"),
        (["--redis", "redis://127.0.0.1:99999999/0"], "Port"),
        (["--redis", "redis://[::1/0"], "--redis"),
        (["--redis", "redis:///0"], "give the host"),
        (["--redis", "redis://h/0\x1b[31m"], "not a Redis URL"),
        (["--redis", "redis://" + "h" * 2000], "not a Redis URL"),
        (["--redis", "redis://h/0", "--node-name", "a\x1b[31mb"], "node name"),
        (["--redis", "redis://h/0", "--node-name", "n" * 100], "node name"),
        (["--redis", "redis://h/0", "--node-name", "two words"], "node name"),
        (["--redis", "redis://h/0", "--lease-ms", "10"], "--lease-ms"),
        (["--redis", "redis://h/0", "--redis-retention", "5"], "at least 1 MiB"),
    ],
)
def test_a_bad_cluster_flag_is_one_usage_line(home: Path, args: list[str], said: str) -> None:
    code, stderr = _tailhubd(home, *args)
    assert code == 2, stderr
    assert said in stderr
    assert "Traceback" not in stderr
    assert "\x1b" not in stderr  # (quoted escaped, never sent to the terminal)
    assert not (home / "sock").exists()


def test_an_unreachable_redis_is_exit_6_naming_it(home: Path) -> None:
    port = free_port()
    code, stderr = _tailhubd(home, "--redis", f"redis://127.0.0.1:{port}/3")
    assert code == 6
    assert f"cannot reach Redis at 127.0.0.1:{port}/3" in stderr
    assert len(stderr.strip().splitlines()) == 1
