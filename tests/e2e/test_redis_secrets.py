"""The Redis password never sits on a process's argv (issue 16, item 2): any local user reads
argv with `ps`, and whoever can write to Redis runs commands on every node. A password on the
command line is refused with one line; from TAILHUB_REDIS or a private --config file it works,
and neither the daemon, its fences nor their commands carry it on argv or in their environment.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from cluster_helpers import REPLAY, upstream
from helpers import cli_env, run_cli, wait_until
from redis_helpers import RedisServer

from tailhub.client import Client, StatePaths

PASSWORD = "hunter2-s3cret"
FENCE = b"tailhub.daemon.process.fence"


def _children(pid: int) -> list[int]:
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = Path(f"/proc/{entry}/stat").read_text()
            except OSError:
                continue
            if int(stat[stat.rfind(")") + 2 :].split()[1]) == pid:
                found.append(int(entry))
    return found


def _descendants(pid: int) -> list[int]:
    found, todo = [], [pid]
    while todo:
        for child in _children(todo.pop()):
            found.append(child)
            todo.append(child)
    return found


def _read(path: str) -> bytes:
    try:
        return Path(path).read_bytes()
    except OSError:  # (it ended meanwhile)
        return b""


def _refused_in_one_line(done: subprocess.CompletedProcess[bytes]) -> None:
    assert done.returncode == 2, done.stderr
    text = done.stderr.decode()
    assert text.count("\n") == 1, text
    assert "password on the command line" in text
    assert "TAILHUB_REDIS" in text
    assert "--config FILE" in text
    assert PASSWORD not in text


@pytest.mark.parametrize(
    "url",
    [f"redis://:{PASSWORD}@127.0.0.1:6379/0", f"redis://127.0.0.1:6379/0?password={PASSWORD}"],
)
def test_a_redis_password_on_the_command_line_is_refused(home: Path, url: str) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "tailhub.daemon", "--home", str(home), "--redis", url],
        capture_output=True,
        timeout=60,
    )
    _refused_in_one_line(done)
    for command in ("start", "restart"):
        _refused_in_one_line(run_cli(home, "daemon", command, "--redis", url))
    assert not home.exists()  # refused before anything was made or started


@pytest.mark.parametrize(
    ("query", "said"),
    [
        (f"?foo={PASSWORD}", "sets 'foo'"),
        (f"?PASSWORD={PASSWORD}", "sets 'PASSWORD'"),
        ("?db=abc", "the database 'abc' is not a number"),
    ],
)
def test_a_redis_url_tailhub_cannot_use_is_refused_before_the_home_is_made(
    home: Path, query: str, said: str
) -> None:
    # From the environment too. Before, tailhubd made the home, then exited 1 with a
    # traceback from redis-py (or, for ?db=abc, made the whole state directory first).
    done = subprocess.run(
        [sys.executable, "-m", "tailhub.daemon", "--home", str(home), "--node-name", "a"],
        env={**os.environ, "TAILHUB_REDIS": f"redis://127.0.0.1:1/0{query}"},
        capture_output=True,
        timeout=60,
    )
    assert done.returncode == 2, done.stderr
    text = done.stderr.decode()
    assert text.count("\n") == 1, text
    assert said in text, text
    assert PASSWORD not in text
    assert not home.exists()


def _start_node(home: Path, env: dict[str, str], *args: str) -> int:
    done = subprocess.run(
        [sys.executable, "-m", "tailhub.client", "daemon", "start", *args],
        env=env,
        capture_output=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    with Client.connect(StatePaths(home), autostart=False) as client:
        status = client.status()
    assert status.cluster is not None
    assert status.cluster.connected  # it did get the password
    return status.pid


def test_a_node_started_with_tailhub_redis_has_the_password_on_no_argv(
    start_redis: Callable[..., RedisServer], home: Path, tmp_path: Path
) -> None:
    redis_server = start_redis(password=PASSWORD)
    env = {**cli_env(home), "TAILHUB_REDIS": redis_server.url_with_password}
    pid = _start_node(home, env, "--node-name", "n0", "--lease-ms", "1000")
    log, state = upstream(tmp_path / "up", b"first line\n")
    try:
        with Client.connect(StatePaths(home), autostart=False) as client:
            job = client.attach_command([sys.executable, REPLAY, str(log), str(state)])
        wait_until((state / "connections").exists, what="the upstream to start")
        fences = [p for p in _descendants(pid) if FENCE in _read(f"/proc/{p}/cmdline")]
        assert fences, "the command runs inside a fence"
        processes = [pid, *_descendants(pid)]
        commands = [p for p in processes if REPLAY.encode() in _read(f"/proc/{p}/cmdline")]
        assert commands
        for each in processes:
            assert PASSWORD.encode() not in _read(f"/proc/{each}/cmdline"), each
        # Nor in the environment of what the daemon runs: the fences and their commands. (The
        # daemon's own /proc environ, and that of a child forked but not yet exec'd, is the
        # one it was started with, readable only by its user: the password it was given.)
        for each in [*fences, *commands]:
            assert PASSWORD.encode() not in _read(f"/proc/{each}/environ"), each
        assert job.id
    finally:
        (state / "done").touch()
        stopped = run_cli(home, "daemon", "stop")
        assert stopped.returncode == 0, stopped.stderr


def test_the_password_in_a_private_config_file_works(
    start_redis: Callable[..., RedisServer], home: Path, tmp_path: Path
) -> None:
    redis_server = start_redis(password=PASSWORD)
    config = tmp_path / "tailhubd.yaml"
    config.write_text(f"redis: {redis_server.url_with_password}\nnode-name: n0\n")
    config.chmod(0o600)
    pid = _start_node(home, cli_env(home), "--config", str(config))
    try:
        assert PASSWORD.encode() not in _read(f"/proc/{pid}/cmdline")
        status = run_cli(home, "daemon", "status")
        assert b"n0" in status.stdout
        assert PASSWORD.encode() not in status.stdout
        assert PASSWORD not in (home / "tailhubd.options").read_text()
    finally:
        stopped = run_cli(home, "daemon", "stop")
        assert stopped.returncode == 0, stopped.stderr


def test_daemon_start_with_the_url_of_the_redis_it_runs_on_says_it_runs(
    start_redis: Callable[..., RedisServer], home: Path
) -> None:
    # The daemon got its password from TAILHUB_REDIS; the same URL on a command line has
    # none. It used to say the daemon ran "without" it, and give a restart that would have
    # dropped the password.
    redis_server = start_redis(password=PASSWORD)
    env = {**cli_env(home), "TAILHUB_REDIS": redis_server.url_with_password}
    _start_node(home, env, "--node-name", "n0")
    try:
        again = run_cli(home, "daemon", "start", "--redis", redis_server.url, "--node-name", "n0")
        assert again.returncode == 0, again.stderr
        assert b"already running" in again.stderr
        assert b"restart" not in again.stderr
    finally:
        stopped = run_cli(home, "daemon", "stop")
        assert stopped.returncode == 0, stopped.stderr
