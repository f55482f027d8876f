"""examples/systemd: the units parse, and tailhubd run as their ExecStart= says keeps the
`Type=notify` contract: READY=1 only once it serves, STOPPING=1 and exit 0 on SIGTERM within
the unit's TimeoutStopSec, and NOTIFY_SOCKET never reaching a job."""

from __future__ import annotations

import os
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from follow_many import kill_all, start_followers, wait_ready
from helpers import wait_until
from markers import measures

from tailhub.client import Client, LogChunk, StatePaths
from tailhub.client._daemon import is_listening

UNITS = Path(__file__).resolve().parents[2] / "examples" / "systemd"
SYSTEM_UNIT = UNITS / "tailhubd.service"
USER_UNIT = UNITS / "user" / "tailhubd.service"
TAILHUBD = str(Path(sys.executable).parent / "tailhubd")
SECTIONS = {"Unit", "Service", "Install"}
FOLLOWERS = 500


def _settings(unit: Path) -> dict[str, dict[str, list[str]]]:
    """The unit's settings by section and key (a key may be given more than once)."""
    sections: dict[str, dict[str, list[str]]] = {}
    current: dict[str, list[str]] | None = None
    for number, line in enumerate(unit.read_text().splitlines(), 1):
        stripped = line.strip()
        if not stripped or stripped.startswith(("#", ";")):
            continue
        assert not stripped.endswith("\\"), f"{unit}:{number}: no continued lines here"
        section = re.fullmatch(r"\[(\w+)\]", stripped)
        if section:
            assert section[1] in SECTIONS, f"{unit}:{number}: unknown section {section[1]}"
            current = sections.setdefault(section[1], {})
            continue
        setting = re.fullmatch(r"([A-Z][A-Za-z]+)=(.*)", stripped)
        assert setting, f"{unit}:{number}: not Key=value: {line!r}"
        assert current is not None, f"{unit}:{number}: a setting before any section"
        current.setdefault(setting[1], []).append(setting[2])
    return sections


def _timeout_stop(unit: Path) -> float:
    text = _settings(unit)["Service"]["TimeoutStopSec"][-1]
    match = re.fullmatch(r"(\d+)s?", text)
    assert match, f"TimeoutStopSec={text}: write it in seconds"
    return float(match[1])


@pytest.mark.parametrize("unit", [SYSTEM_UNIT, USER_UNIT], ids=["system", "user"])
def test_unit_files_are_key_value_lines_in_known_sections(unit: Path) -> None:
    settings = _settings(unit)

    service = settings["Service"]
    assert service["Type"] == ["notify"]
    # Jobs run in the unit's cgroup: any other mode kills them at every stop.
    assert service["KillMode"] == ["process"]
    assert service["Restart"] == ["on-failure"]
    assert _timeout_stop(unit) <= 30
    assert shlex.split(service["ExecStart"][0])[0].endswith("/tailhubd")
    assert "Install" in settings


def test_system_unit_keeps_its_state_directory_private() -> None:
    service = _settings(SYSTEM_UNIT)["Service"]
    argv = shlex.split(service["ExecStart"][0])

    home = argv[argv.index("--home") + 1]
    assert home == "/var/lib/" + service["StateDirectory"][0]
    assert service["StateDirectoryMode"] == ["0700"]
    assert service["User"] == ["tailhub"]


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="no systemd-analyze here")
@pytest.mark.parametrize("unit", [SYSTEM_UNIT, USER_UNIT], ids=["system", "user"])
def test_units_pass_systemd_analyze_verify(unit: Path, tmp_path: Path) -> None:
    # verify insists that the program exists: this venv's tailhubd stands in for it.
    text = unit.read_text()
    text = text.replace("/usr/bin/tailhubd", TAILHUBD).replace("%h/.local/bin/tailhubd", TAILHUBD)
    copy = tmp_path / unit.name
    copy.write_text(text)

    result = subprocess.run(
        ["systemd-analyze", "verify", "--man=no", str(copy)],
        capture_output=True,
        text=True,
        timeout=60,
    )

    assert result.returncode == 0, result.stderr
    assert copy.name not in result.stderr, result.stderr  # warnings about the unit itself


@pytest.fixture
def notify_socket(home: Path) -> Iterator[socket.socket]:
    """A datagram socket bound where the daemon's NOTIFY_SOCKET will name (as systemd's)."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind(str(home.parent / "notify"))
        yield sock


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        number: int = probe.getsockname()[1]
    return number


def _exec_start(home: Path, config: Path) -> list[str]:
    """The system unit's ExecStart=, with this venv's tailhubd and a home and config of ours."""
    command = _settings(SYSTEM_UNIT)["Service"]["ExecStart"][0]
    argv = [
        {"/var/lib/tailhub": str(home), "/etc/tailhub/tailhubd.yaml": str(config)}.get(arg, arg)
        for arg in shlex.split(command)
    ]
    assert argv[0] == "/usr/bin/tailhubd"
    assert str(home) in argv, f"ExecStart changed: {command}"
    assert str(config) in argv, f"ExecStart changed: {command}"
    return [TAILHUBD, *argv[1:]]


def _receive(sock: socket.socket, timeout: float) -> dict[str, str]:
    sock.settimeout(timeout)
    message = sock.recv(4096).decode()
    return dict(line.split("=", 1) for line in message.splitlines())


def _job_output(client: Client, job_id: int) -> bytes:
    return b"".join(
        item.data
        for item in client.follow(job_id, reconnect_timeout=10)
        if isinstance(item, LogChunk)
    )


@measures
def test_service_is_ready_once_serving_and_stops_on_sigterm_within_its_timeout(
    home: Path, tmp_path: Path, notify_socket: socket.socket
) -> None:
    listen_port, metrics_port = _free_port(), _free_port()
    config = tmp_path / "tailhubd.yaml"
    config.write_text(
        f"listen: [127.0.0.1:{listen_port}]\ninsecure: true\n"
        f"metrics-listen: 127.0.0.1:{metrics_port}\nheartbeat-interval: 0.5\n"
    )
    config.chmod(0o600)
    paths = StatePaths(home)
    environment = {**os.environ, "NOTIFY_SOCKET": notify_socket.getsockname()}
    log = (tmp_path / "daemon.log").open("wb")
    daemon = subprocess.Popen(
        _exec_start(home, config), env=environment, stdout=log, stderr=subprocess.STDOUT
    )
    followers: list[subprocess.Popen[bytes]] = []
    try:
        ready = _receive(notify_socket, timeout=30)
        # Checked the moment READY=1 arrives: the socket and every listener already answer.
        assert is_listening(paths), "READY=1 before the daemon's socket accepted connections"
        with Client.connect(paths, autostart=False) as client:
            assert client.status().pid == daemon.pid
        for port in (listen_port, metrics_port):
            socket.create_connection(("127.0.0.1", port), timeout=5).close()
        assert ready["READY"] == "1"
        assert ready["MAINPID"] == str(daemon.pid)
        assert paths.address in ready["STATUS"]

        with Client.connect(paths, autostart=False) as client:
            command = client.attach_command(["env"]).id
            launched = client.launch("env").id
            for job_id in (command, launched):
                output = _job_output(client, job_id)
                assert b"PATH=" in output
                assert b"NOTIFY_SOCKET" not in output
            held = client.attach_push().id
        for _ in range(2):
            followers.append(start_followers(paths.address, held, FOLLOWERS // 2, hold=True))
        for process in followers:
            wait_ready(process)

        started = time.monotonic()
        daemon.send_signal(signal.SIGTERM)
        stopping = _receive(notify_socket, timeout=10)
        exit_code = daemon.wait(_timeout_stop(SYSTEM_UNIT))
        took = time.monotonic() - started
    finally:
        kill_all(followers)
        if daemon.poll() is None:
            daemon.kill()
            daemon.wait(30)
        log.close()
    daemon_log = (tmp_path / "daemon.log").read_text()
    assert stopping["STOPPING"] == "1"
    assert exit_code == 0, daemon_log
    # Far inside TimeoutStopSec=30s, with FOLLOWERS followers told "daemon stopping".
    assert took < 10, f"{took:.1f}s to stop"
    assert "Traceback" not in daemon_log
    assert not paths.socket.exists()


def test_a_bad_notify_socket_is_logged_and_the_daemon_serves(home: Path, tmp_path: Path) -> None:
    log_path = tmp_path / "daemon.log"
    with log_path.open("wb") as log:
        daemon = subprocess.Popen(
            [TAILHUBD, "--home", str(home)],
            env={**os.environ, "NOTIFY_SOCKET": "relative/path"},
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    try:
        wait_until(
            lambda: is_listening(StatePaths(home)) or daemon.poll() is not None,
            what="the daemon to listen",
        )
        assert daemon.poll() is None, log_path.read_text()
    finally:
        daemon.send_signal(signal.SIGTERM)
        assert daemon.wait(30) == 0
    assert "NOTIFY_SOCKET='relative/path': neither an absolute path" in log_path.read_text()


def test_an_abstract_notify_socket_gets_ready(home: Path) -> None:
    name = f"tailhub-test-{os.getpid()}-{time.monotonic_ns()}"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind("\0" + name)
        daemon = subprocess.Popen(
            [TAILHUBD, "--home", str(home)],
            env={**os.environ, "NOTIFY_SOCKET": "@" + name},
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            assert _receive(sock, timeout=30)["READY"] == "1"
            daemon.send_signal(signal.SIGTERM)
            assert _receive(sock, timeout=10)["STOPPING"] == "1"
            assert daemon.wait(30) == 0
        finally:
            if daemon.poll() is None:
                daemon.kill()
                daemon.wait(30)
