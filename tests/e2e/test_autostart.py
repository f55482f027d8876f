from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from helpers import cli_env, run_cli, wait_until


def _daemon_pids(home: Path) -> list[int]:
    """Live processes running `tailhub.daemon --home HOME` (zombies have no command line)."""
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            argv = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:  # gone meanwhile
            continue
        if b"tailhub.daemon" in argv and any(
            flag == b"--home" and value == os.fsencode(home)
            for flag, value in zip(argv, argv[1:], strict=False)
        ):
            pids.append(int(entry.name))
    return pids


@pytest.fixture
def no_daemon(home: Path) -> Iterator[Path]:
    """A state directory no daemon serves yet; whatever daemon the test started is stopped."""
    yield home
    if home.exists():
        run_cli(home, "daemon", "stop")
    for pid in _daemon_pids(home):  # only if `daemon stop` failed: the test reports why
        os.kill(pid, signal.SIGKILL)


def test_many_clis_at_once_start_exactly_one_daemon(no_daemon: Path) -> None:
    clis = [
        subprocess.Popen(
            [sys.executable, "-m", "tailhub.client", "jobs", "queue", "--json"],
            env=cli_env(no_daemon),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        for _ in range(20)
    ]
    results = [(cli.communicate(timeout=120), cli.returncode) for cli in clis]

    for (stdout, stderr), returncode in results:
        assert returncode == 0, stderr.decode()
        assert json.loads(stdout) == []
        assert b"Traceback" not in stderr
    pids = _daemon_pids(no_daemon)
    assert len(pids) == 1, f"daemons running for {no_daemon}: {pids}"
    # The CLIs queued for the one that started it: none started a daemon only to see it quit.
    daemon_log = (no_daemon / "tailhubd.log").read_text()
    assert "another tailhubd already serves" not in daemon_log, daemon_log
    assert (no_daemon / "tailhubd.pid").read_text().strip() == str(pids[0])
    status = run_cli(no_daemon, "daemon", "status", "--json")
    assert status.returncode == 0, status.stderr
    assert json.loads(status.stdout)["pid"] == pids[0]

    stopped = run_cli(no_daemon, "daemon", "stop")
    assert stopped.returncode == 0, stopped.stderr
    wait_until(lambda: _daemon_pids(no_daemon) == [], what="the daemon process to exit")


def test_daemon_start_status_stop_round_trip(no_daemon: Path) -> None:
    started = run_cli(no_daemon, "daemon", "start")
    assert started.returncode == 0, started.stderr
    assert b"tailhubd started (pid " in started.stderr
    [pid] = _daemon_pids(no_daemon)
    assert f"(pid {pid})".encode() in started.stderr

    again = run_cli(no_daemon, "daemon", "start")
    assert again.returncode == 0, again.stderr
    assert f"tailhubd already running (pid {pid})".encode() in again.stderr
    assert _daemon_pids(no_daemon) == [pid]

    status = run_cli(no_daemon, "daemon", "status", "--json")
    assert status.returncode == 0, status.stderr
    reported = json.loads(status.stdout)
    assert reported["pid"] == pid
    assert reported["home"] == str(no_daemon)
    assert reported["jobs"] == 0
    assert reported["version"]

    stopped = run_cli(no_daemon, "daemon", "stop")
    assert stopped.returncode == 0, stopped.stderr
    assert f"tailhubd (pid {pid}) stopped".encode() in stopped.stderr
    wait_until(lambda: _daemon_pids(no_daemon) == [], what="the daemon process to exit")
    assert not (no_daemon / "sock").exists()

    after = run_cli(no_daemon, "daemon", "status", "--json")
    assert after.returncode == 104
    assert after.stdout == b""
    nothing = run_cli(no_daemon, "daemon", "stop")
    assert nothing.returncode == 0
    assert b"no tailhubd is running" in nothing.stderr
