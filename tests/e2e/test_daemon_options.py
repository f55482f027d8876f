"""`tailhub daemon start OPTIONS` on a home whose daemon already runs, and `daemon restart`:
exit 0 when the running daemon has what was asked, else one line naming what it lacks and
the command that applies it; a restart keeps local jobs running."""

from __future__ import annotations

import socket
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from helpers import run_cli, wait_until
from job_helpers import Gate, queue, write_task

from tailhub.client import StatePaths


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        number: int = probe.getsockname()[1]
    return number


def _pid(home: Path) -> int:
    return int(StatePaths(home).pid.read_text().split()[0])


def _line(result: subprocess.CompletedProcess[bytes]) -> str:
    """What the CLI said: exactly one line."""
    stderr = result.stderr.decode()
    assert stderr.count("\n") == 1, stderr
    return stderr.strip()


@pytest.fixture
def cli_home(home: Path) -> Iterator[Path]:
    """A home whose daemons the CLI starts; the last one is stopped at the end."""
    yield home
    if home.exists():
        assert run_cli(home, "daemon", "stop").returncode == 0


def test_start_asking_what_the_running_daemon_has_exits_0(cli_home: Path) -> None:
    started = run_cli(cli_home, "daemon", "start", "--max-running-jobs", "2")
    assert started.returncode == 0, started.stderr
    pid = _pid(cli_home)

    again = run_cli(cli_home, "daemon", "start", "--max-running-jobs", "2")
    # The daemon's default (10000) is what it has: asking for it is asking for what it has.
    default = run_cli(cli_home, "daemon", "start", "--max-streams", "10000")

    assert again.returncode == 0, again.stderr
    assert _line(again) == (
        f"tailhub: tailhubd already running (pid {pid}) on {cli_home} with --max-running-jobs 2"
    )
    assert default.returncode == 0, default.stderr
    assert _pid(cli_home) == pid


def test_start_with_a_listener_an_autostarted_daemon_lacks_names_the_restart_that_adds_it(
    cli_home: Path, workdir: Path, gate: Callable[[str], Gate]
) -> None:
    release = gate("gate")
    task = write_task(workdir, f"run: flock --shared {release.path} true\n")
    # As in the docs: an earlier command started a daemon without the listener.
    launched = run_cli(cli_home, "jobs", "launch", "--async", str(task))
    assert launched.returncode == 0, launched.stderr
    job_id = int(launched.stdout)
    first = _pid(cli_home)
    port = _free_port()
    address = f"127.0.0.1:{port}"

    refused = run_cli(cli_home, "daemon", "start", "--listen", address, "--insecure")

    assert refused.returncode == 1
    restart = f"tailhub daemon restart --listen {address} --insecure"
    assert _line(refused) == (
        f"tailhub: tailhubd already running (pid {first}) on {cli_home} without "
        f"--listen {address}, --insecure; to apply it: {restart} (local jobs keep running)"
    )

    restarted = run_cli(cli_home, *restart.split()[1:])

    assert restarted.returncode == 0, restarted.stderr
    second = _pid(cli_home)
    assert second != first
    assert _line(restarted) == (
        f"tailhub: tailhubd restarted (pid {first} stopped), now pid {second} on {cli_home} "
        f"with --listen {address} --insecure"
    )
    socket.create_connection(("127.0.0.1", port), timeout=5).close()
    again = run_cli(cli_home, "daemon", "start", "--listen", address, "--insecure")
    assert again.returncode == 0, again.stderr
    # The job outlived the daemon that started it; the new one adopted it.
    assert queue(cli_home)[job_id]["state"] == "RUNNING"
    release.open()
    wait_until(lambda: queue(cli_home)[job_id]["state"] == "SUCCEEDED", what="the job to end")


def test_start_with_a_config_file_tells_the_one_applied_from_an_edited_one(
    cli_home: Path, workdir: Path
) -> None:
    config = workdir / "tailhubd.yaml"
    config.write_text("max-running-jobs: 3\n")
    config.chmod(0o600)
    plain = run_cli(cli_home, "daemon", "start")
    assert plain.returncode == 0, plain.stderr

    lacking = run_cli(cli_home, "daemon", "start", "--config", str(config))
    restarted = run_cli(cli_home, "daemon", "restart", "--config", str(config))
    same = run_cli(cli_home, "daemon", "start", "--config", str(config))
    # What the file set is what the daemon has, however it was asked for.
    flag = run_cli(cli_home, "daemon", "start", "--max-running-jobs", "3")
    config.write_text("max-running-jobs: 4\n")
    edited = run_cli(cli_home, "daemon", "start", "--config", str(config))

    assert lacking.returncode == 1
    assert f"without --config {config}; to apply it: tailhub daemon restart" in _line(lacking)
    assert restarted.returncode == 0, restarted.stderr
    assert same.returncode == 0, same.stderr
    assert flag.returncode == 0, flag.stderr
    assert edited.returncode == 1
    assert f"without --config {config} as it is now (edited since" in _line(edited)


def test_restart_with_no_daemon_running_starts_one(cli_home: Path) -> None:
    result = run_cli(cli_home, "daemon", "restart", "--max-running-jobs", "1")

    assert result.returncode == 0, result.stderr
    assert _line(result) == (
        f"tailhub: tailhubd started (pid {_pid(cli_home)}) on {cli_home} with --max-running-jobs 1"
    )


def test_start_passes_the_web_views_limits_on_and_knows_them_applied(cli_home: Path) -> None:
    web = f"127.0.0.1:{_free_port()}"
    limits = (
        *("--http-max-streams", "7", "--http-max-streams-per-session", "3"),
        *("--http-max-connections", "9", "--http-max-connections-per-peer", "2"),
    )
    started = run_cli(cli_home, "daemon", "start", "--http-listen", web, *limits)
    assert started.returncode == 0, started.stderr
    pid = _pid(cli_home)
    argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    for flag, value in zip(limits[::2], limits[1::2], strict=True):
        assert argv[argv.index(flag.encode()) + 1] == value.encode()
    # Asked again, they are what it has; another value is not.
    again = run_cli(cli_home, "daemon", "start", "--http-listen", web, *limits)
    assert again.returncode == 0, again.stderr
    other = run_cli(cli_home, "daemon", "start", "--http-max-connections-per-peer", "5")
    assert other.returncode == 1
    assert "--http-max-connections-per-peer 5" in other.stderr.decode()
    assert _pid(cli_home) == pid


def test_start_passes_the_connection_cap_per_address_on_and_knows_it_applied(
    cli_home: Path,
) -> None:
    listen = ("--listen", f"127.0.0.1:{_free_port()}", "--insecure")
    started = run_cli(cli_home, "daemon", "start", *listen, "--max-connections-per-peer", "3")
    assert started.returncode == 0, started.stderr
    pid = _pid(cli_home)
    argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    assert argv[argv.index(b"--max-connections-per-peer") + 1] == b"3"
    again = run_cli(cli_home, "daemon", "start", *listen, "--max-connections-per-peer", "3")
    assert again.returncode == 0, again.stderr
    other = run_cli(cli_home, "daemon", "start", "--max-connections-per-peer", "5")
    assert other.returncode == 1
    assert "--max-connections-per-peer 5" in other.stderr.decode()
    assert _pid(cli_home) == pid
