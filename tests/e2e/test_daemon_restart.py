"""`tailhub daemon restart` never leaves a home without the daemon that worked: options
tailhubd refuses (`tailhubd --check`) stop nothing, and a new daemon that still fails to start
(an address in use) gives way to the previous one, started again with its own options. And
`daemon start`'s suggested restart keeps the options the daemon runs with."""

from __future__ import annotations

import shlex
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from helpers import run_cli
from remote_helpers import free_port, tls_init

from tailhub.client import StatePaths
from tailhub.daemon.__main__ import main as tailhubd


def _pid(home: Path) -> int:
    return int(StatePaths(home).pid.read_text().split()[0])


def _line(result: subprocess.CompletedProcess[bytes]) -> str:
    """What the CLI said: exactly one line."""
    stderr = result.stderr.decode()
    assert stderr.count("\n") == 1, stderr
    return stderr.strip()


def _serves(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=5).close()
    except OSError:
        return False
    return True


@pytest.fixture
def cli_home(home: Path) -> Iterator[Path]:
    """A home whose daemons the CLI starts; the last one is stopped at the end."""
    yield home
    if home.exists():
        assert run_cli(home, "daemon", "stop").returncode == 0


@pytest.fixture
def taken_port() -> Iterator[int]:
    """A port something else listens on."""
    with socket.socket() as other:
        other.bind(("127.0.0.1", 0))
        other.listen()
        yield int(other.getsockname()[1])


def test_restart_with_a_key_others_can_read_leaves_the_running_daemon_serving(
    cli_home: Path, workdir: Path
) -> None:
    tls = tls_init(cli_home)
    address = f"127.0.0.1:{free_port()}"
    started = run_cli(cli_home, "daemon", "start", "--listen", address, *tls.flags)
    assert started.returncode == 0, started.stderr
    pid = _pid(cli_home)
    key = workdir / "k.key"
    key.write_bytes((cli_home / "tls" / "server.key").read_bytes())
    key.chmod(0o644)

    restarted = run_cli(
        cli_home, "daemon", "restart", "--listen", address,
        "--tls-cert", str(cli_home / "tls" / "server.pem"), "--tls-key", str(key),
    )  # fmt: skip

    assert restarted.returncode == 1
    assert _line(restarted) == (
        f"tailhub: not restarted: the new options fail: tailhubd: refusing the TLS private key "
        f"{key}: others can read it (mode 0644); fix: chmod 600 {key}; tailhubd (pid {pid}) "
        "runs on as it was"
    )
    assert _pid(cli_home) == pid
    assert _serves(int(address.rsplit(":", 1)[1]))


def test_restart_with_a_config_file_holding_a_typo_stops_nothing(
    cli_home: Path, workdir: Path
) -> None:
    port = free_port()
    started = run_cli(cli_home, "daemon", "start", "--listen", f"127.0.0.1:{port}", "--insecure")
    assert started.returncode == 0, started.stderr
    pid = _pid(cli_home)
    config = workdir / "c.yaml"
    config.write_text("listn: [127.0.0.1:1]\n")
    config.chmod(0o600)

    restarted = run_cli(cli_home, "daemon", "restart", "--config", str(config))

    assert restarted.returncode == 2  # bad usage, as tailhubd itself says
    line = _line(restarted)
    assert line.startswith(f"tailhub: not restarted: the new options fail: tailhubd: {config}: ")
    assert "unknown option 'listn' (did you mean 'listen'?)" in line
    assert line.endswith(f"; tailhubd (pid {pid}) runs on as it was")
    assert _pid(cli_home) == pid
    assert _serves(port)


def test_restart_onto_a_taken_address_starts_the_previous_daemon_again(
    cli_home: Path, taken_port: int
) -> None:
    port = free_port()
    # In `daemon start --help`'s order, as the previous daemon's options are said.
    previous = ["--max-running-jobs", "2", "--listen", f"127.0.0.1:{port}", "--insecure"]
    started = run_cli(cli_home, "daemon", "start", *previous)
    assert started.returncode == 0, started.stderr
    first = _pid(cli_home)
    taken = f"127.0.0.1:{taken_port}"

    restarted = run_cli(cli_home, "daemon", "restart", "--listen", taken, "--insecure")

    assert restarted.returncode == 1
    again = _pid(cli_home)
    assert again != first
    log = StatePaths(cli_home).daemon_log
    assert _line(restarted) == (
        f"tailhub: the new options failed: tailhubd exited with 5 while starting; see {log}: "
        f"tailhubd: cannot listen on {taken}: the address is already in use (another daemon "
        f"or program on it?); the previous daemon runs again (pid {again}) with "
        f"{shlex.join(previous)}"
    )
    assert _serves(port)
    # It has what it had: asking for it again is asking for what it has.
    same = run_cli(cli_home, "daemon", "start", *previous)
    assert same.returncode == 0, same.stderr


def test_start_lacking_an_option_suggests_a_restart_that_keeps_the_running_ones(
    cli_home: Path,
) -> None:
    address = f"127.0.0.1:{free_port()}"
    started = run_cli(cli_home, "daemon", "start", "--listen", address, "--insecure")
    assert started.returncode == 0, started.stderr

    lacking = run_cli(cli_home, "daemon", "start", "--max-running-jobs", "3")

    assert lacking.returncode == 1
    restart = f"tailhub daemon restart --listen {address} --insecure --max-running-jobs 3"
    assert _line(lacking).endswith(
        f"without --max-running-jobs 3; to apply it: {restart} (local jobs keep running)"
    )
    restarted = run_cli(cli_home, *shlex.split(restart)[1:])
    assert restarted.returncode == 0, restarted.stderr
    both = run_cli(
        cli_home, "daemon", "start", "--listen", address, "--insecure", "--max-running-jobs", "3"
    )
    assert both.returncode == 0, both.stderr  # the listener was kept
    assert _serves(int(address.rsplit(":", 1)[1]))


def test_tailhubd_on_a_taken_port_says_so_in_one_line(home: Path, taken_port: int) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "tailhub.daemon", "--home", str(home),
         "--listen", f"127.0.0.1:{taken_port}", "--insecure"],
        capture_output=True, timeout=60,
    )  # fmt: skip

    assert done.returncode == 5
    # Nothing of gRPC's own ("E1207 ... add_port.cc] Failed to add port") before it.
    said = [line for line in done.stderr.decode().splitlines() if " INFO " not in line]
    assert said == [
        f"tailhubd: cannot listen on 127.0.0.1:{taken_port}: the address is already in use "
        "(another daemon or program on it?)"
    ]


def test_tailhubd_check_refuses_a_bad_config_file_and_accepts_good_options(
    home: Path, workdir: Path
) -> None:
    config = workdir / "c.yaml"
    config.write_text("max-running-job: 3\n")
    config.chmod(0o600)
    tailhubd_argv = [sys.executable, "-m", "tailhub.daemon", "--home", str(home), "--check"]

    bad = subprocess.run([*tailhubd_argv, "--config", str(config)], capture_output=True)
    good = subprocess.run([*tailhubd_argv, "--max-running-jobs", "3"], capture_output=True)

    assert bad.returncode == 2
    assert "did you mean 'max-running-jobs'?" in bad.stderr.decode()
    assert good.returncode == 0, good.stderr
    assert good.stderr.decode().endswith(f"tailhubd: the options are usable on {home}\n")
    assert not StatePaths(home).socket.exists()  # it served nothing


def test_every_tailhubd_option_says_what_it_does() -> None:
    silent = [param.name for param in tailhubd.params if not getattr(param, "help", None)]
    assert silent == []
