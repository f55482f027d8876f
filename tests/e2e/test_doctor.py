"""`tailhub doctor` and `tailhub --version`: what a user sees, from the real CLI against the
real daemon (or none)."""

from __future__ import annotations

import datetime
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from helpers import DaemonProcess, cli_env, run_cli
from redis_helpers import RedisServer

from tailhub.client._daemon import is_listening
from tailhub.client._tls_init import make_ca
from tailhub.client._version import cli_version
from tailhub.daemon.paths import StatePaths


def _lines(done: subprocess.CompletedProcess[bytes]) -> list[str]:
    assert not done.stderr or b"Traceback" not in done.stderr, done.stderr
    return done.stdout.decode().splitlines()


def _line(lines: list[str], start: str) -> str:
    """The one line that starts so (level and topic), to assert on whole."""
    found = [line for line in lines if line.startswith(start)]
    assert len(found) == 1, f"{start!r} in:\n" + "\n".join(lines)
    return found[0]


def _write_certificate(path: Path, days_left: float) -> None:
    now = datetime.datetime.now(datetime.timezone.utc)
    _, certificate = make_ca(
        "doctor test", now - datetime.timedelta(days=400), now + datetime.timedelta(days_left)
    )
    path.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))


def _private_home(home: Path) -> None:
    home.mkdir(mode=0o700)
    (home / "tls").mkdir(mode=0o700)


def test_doctor_on_a_healthy_home_with_a_running_daemon_exits_0_naming_the_versions(
    daemon: DaemonProcess,
) -> None:
    done = run_cli(daemon.home, "doctor")
    lines = _lines(done)
    assert done.returncode == 0, lines
    version = cli_version()
    assert _line(lines, "ok    cli:") == f"ok    cli: tailhub {version}, API tailhub.v1"
    assert _line(lines, "ok    daemon:") == (
        f"ok    daemon: {version} on {daemon.home} (pid {daemon.pid}), API tailhub.v1"
    )
    assert _line(lines, "ok    state directory:") == (
        f"ok    state directory: {daemon.home} is yours alone"
    )
    assert _line(lines, "info  serving:") == f"info  serving: socket {daemon.home}/sock"
    assert _line(lines, "info  limits:").startswith(
        "info  limits: no limit on running local jobs, subscriber budget 16.0MiB"
    )
    assert _line(lines, "ok    disk:").endswith(f" at {daemon.home}/logs")
    assert _line(lines, "ok    open files: the daemon holds ")
    assert not [line for line in lines if line.startswith(("warn", "FAIL"))], lines


def test_doctor_without_a_daemon_says_one_will_be_started_and_starts_none(home: Path) -> None:
    done = run_cli(home, "doctor")
    lines = _lines(done)
    assert done.returncode == 0, lines
    assert _line(lines, "info  daemon:") == (
        f"info  daemon: none running on {home} (the next command that needs one starts it)"
    )
    assert _line(lines, "info  state directory:") == (
        f"info  state directory: {home} does not exist yet; a daemon makes it"
    )
    # Nothing was started, nor even made.
    assert not is_listening(StatePaths(home))
    assert not home.exists()


def test_doctor_fails_on_a_home_others_can_write_and_says_the_chmod(home: Path) -> None:
    home.mkdir()
    os.chmod(home, 0o777)
    done = run_cli(home, "doctor")
    lines = _lines(done)
    assert done.returncode == 1, lines
    assert _line(lines, "FAIL  state directory:") == (
        f"FAIL  state directory: the daemon would refuse it: {home} is writable by others "
        f"(mode 0777); fix: chmod go-w {home}"
    )
    assert _line(lines, "info  daemon:") == (
        "info  daemon: not asked: the state directory is refused"
    )
    assert not is_listening(StatePaths(home))


def test_doctor_warns_of_a_certificate_expiring_within_30_days(home: Path) -> None:
    _private_home(home)
    _write_certificate(home / "tls" / "server.pem", days_left=12.5)
    _write_certificate(home / "tls" / "ca.pem", days_left=3000)
    done = run_cli(home, "doctor")
    lines = _lines(done)
    assert done.returncode == 0, lines  # a warning is not a failure...
    expires = _line(lines, "warn  tls: server.pem")
    assert expires.startswith("warn  tls: server.pem expires in 12 days (")
    assert expires.endswith(
        "): renew with tailhub daemon tls-init --force (clients then need the new ca.pem), "
        "and restart a daemon that serves it"
    )
    assert _line(lines, "ok    tls: ca.pem").startswith("ok    tls: ca.pem, valid until ")
    # ... unless asked for.
    assert run_cli(home, "doctor", "--strict").returncode == 1


def test_doctor_fails_on_an_expired_certificate(home: Path) -> None:
    _private_home(home)
    _write_certificate(home / "tls" / "server.pem", days_left=-2)
    done = run_cli(home, "doctor")
    lines = _lines(done)
    assert done.returncode == 1, lines
    expired = _line(lines, "FAIL  tls: server.pem")
    assert expired.startswith("FAIL  tls: server.pem expired on ")
    assert "renew with tailhub daemon tls-init --force" in expired


def test_doctor_reports_the_listeners_limits_and_served_certificate(
    home: Path, start_daemon: Callable[..., DaemonProcess]
) -> None:
    done = run_cli(home, "daemon", "tls-init")
    assert done.returncode == 0, done.stderr
    tls_flags = done.stdout.decode().split()
    daemon = start_daemon(
        "--listen",
        "127.0.0.1:0",
        *tls_flags,
        "--metrics-listen",
        "127.0.0.1:0",
        "--max-running-jobs",
        "2",
    )
    with daemon.client() as client:
        status = client.status()
    [listener] = status.listeners
    assert listener.security == "tls"
    assert listener.certificate_path == f"{home}/tls/server.pem"
    lines = _lines(run_cli(home, "doctor"))
    assert _line(lines, "info  serving:") == (
        f"info  serving: socket {home}/sock; {listener.address} (tls); "
        f"metrics on {status.metrics_address}"
    )
    assert _line(lines, "info  limits:") == (
        "info  limits: at most 2 local jobs running, subscriber budget 16.0MiB, "
        "10000 network streams (200 per token)"
    )
    served = _line(lines, f"ok    tls: {listener.address} serves")
    assert served.startswith(f"ok    tls: {listener.address} serves {home}/tls/server.pem, valid")


def test_doctor_warns_of_a_low_open_file_limit(home: Path) -> None:
    done = subprocess.run(
        ["prlimit", "--nofile=1024:1024", sys.executable, "-m", "tailhub.client", "doctor"],
        env=cli_env(home),
        capture_output=True,
        timeout=60,
    )
    lines = _lines(done)
    assert done.returncode == 0, lines
    warning = _line(lines, "warn  open files:")
    assert warning.startswith(
        "warn  open files: a daemon started from here may hold only 1024 descriptors "
        "(ulimit -n 1024, hard 1024), and each follower and followed job holds one or more: "
        "raise the hard limit"
    )
    assert "`ulimit -n 65536`" in warning


def test_doctor_pings_tailhub_redis_without_showing_its_password(
    home: Path, redis_server: RedisServer
) -> None:
    env = {**cli_env(home), "TAILHUB_REDIS": redis_server.url}
    done = subprocess.run(
        [sys.executable, "-m", "tailhub.client", "doctor"], env=env, capture_output=True
    )
    assert _line(_lines(done), "ok    redis:") == (
        f"ok    redis: {redis_server.url} ($TAILHUB_REDIS) answers PING"
    )
    env["TAILHUB_REDIS"] = "redis://:s3cret@127.0.0.1:1/0"
    done = subprocess.run(
        [sys.executable, "-m", "tailhub.client", "doctor"], env=env, capture_output=True
    )
    assert done.returncode == 1
    assert b"s3cret" not in done.stdout + done.stderr
    assert _line(_lines(done), "FAIL  redis:").startswith(
        "FAIL  redis: no answer to PING from redis://:***@127.0.0.1:1/0 ($TAILHUB_REDIS): "
    )


def test_version_names_the_cli_daemon_and_api(daemon: DaemonProcess) -> None:
    done = run_cli(daemon.home, "--version")
    assert done.returncode == 0, done.stderr
    version = cli_version()
    assert _lines(done) == [
        f"tailhub {version} (API tailhub.v1)",
        f"tailhubd {version} on {daemon.home} (pid {daemon.pid}), API tailhub.v1",
    ]
    assert done.stderr == b""  # the versions agree: nothing to say


def test_version_without_a_daemon_starts_none(home: Path) -> None:
    done = run_cli(home, "--version")
    assert done.returncode == 0, done.stderr
    assert _lines(done) == [
        f"tailhub {cli_version()} (API tailhub.v1)",
        f"tailhubd: none running on {home} (the next command that needs one starts it)",
    ]
    assert not is_listening(StatePaths(home))
    assert not home.exists()


def test_version_of_an_unreachable_server_answers_quickly() -> None:
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "tailhub.client",
            "--server",
            "127.0.0.1:1",
            "--insecure",
            "--version",
        ],
        capture_output=True,
        timeout=30,
    )
    assert done.returncode == 0, done.stderr
    lines = _lines(done)
    assert lines[1].startswith("tailhubd: no answer from 127.0.0.1:1: ")
