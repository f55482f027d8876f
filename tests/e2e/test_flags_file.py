"""`tailhubd --config FILE` (and TAILHUB_CONFIG): the daemon's options from a private YAML file,
flags winning over it; any file that cannot be trusted or read stops the start in one line."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import urllib.request
from collections.abc import Callable
from pathlib import Path

import pytest
from helpers import DaemonProcess, wait_until
from job_helpers import Gate, jobs

from tailhub.client import JobState

TAILHUBD = str(Path(sys.executable).parent / "tailhubd")


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        number: int = probe.getsockname()[1]
    return number


def _config(directory: Path, text: str, mode: int = 0o600) -> Path:
    path = directory / "tailhubd.yaml"
    path.write_text(text)
    path.chmod(mode)
    return path


def _states(daemon: DaemonProcess, job_ids: list[int]) -> list[JobState]:
    known = jobs(daemon)
    return [known[job_id].state for job_id in job_ids]


def _launch_two(daemon: DaemonProcess, release: Gate) -> list[int]:
    with daemon.client() as client:
        return [client.launch(f"flock --shared {release.path} true").id for _ in range(2)]


def test_options_in_the_config_file_are_applied(
    start_daemon: Callable[..., DaemonProcess], workdir: Path, gate: Callable[[str], Gate]
) -> None:
    port = _free_port()
    # Both spellings of a name: `max-running-jobs` and `metrics_listen`.
    config = _config(workdir, f"max-running-jobs: 1\nmetrics_listen: 127.0.0.1:{port}\n")
    daemon = start_daemon("--config", str(config))
    release = gate("gate")

    job_ids = _launch_two(daemon, release)

    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as response:
        assert response.status == 200
        assert b"tailhub_jobs" in response.read()
    wait_until(
        lambda: _states(daemon, job_ids) == [JobState.RUNNING, JobState.PENDING],
        what="one job running, the other waiting for it (max-running-jobs: 1)",
    )
    release.open()
    wait_until(
        lambda: _states(daemon, job_ids) == [JobState.SUCCEEDED] * 2, what="both jobs to end"
    )


def test_a_flag_on_the_command_line_wins_over_the_file_named_by_tailhub_config(
    home: Path, workdir: Path, gate: Callable[[str], Gate]
) -> None:
    config = _config(workdir, "max-running-jobs: 1\n")
    daemon = DaemonProcess(home, ["--max-running-jobs", "2"], env={"TAILHUB_CONFIG": str(config)})
    daemon.start()
    release = gate("gate")
    try:
        job_ids = _launch_two(daemon, release)
        wait_until(
            lambda: _states(daemon, job_ids) == [JobState.RUNNING] * 2,
            what="both jobs running (--max-running-jobs 2 over the file's 1)",
        )
        release.open()
    finally:
        assert daemon.stop() == 0
    assert "Traceback" not in daemon.log_text()


def _refused(home: Path, config: Path) -> str:
    """Starts tailhubd with `--config CONFIG`: it must exit 2 with one line; that line."""
    result = subprocess.run(
        [TAILHUBD, "--home", str(home), "--config", str(config)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2, result.stderr
    assert result.stdout == ""
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("tailhubd: "), result.stderr
    assert str(config) in lines[0]
    assert not home.exists(), "refused before touching the state directory"
    return lines[0]


@pytest.mark.parametrize(
    ("text", "mode", "expected"),
    [
        ("max-running-jobs: 2\n", 0o644, "(mode 0644) and it may hold secrets; fix: chmod 600 "),
        ("max-running-jobs: 2\n", 0o640, "(mode 0640)"),
        ("max-running-jobs: 2\n", 0o400, None),
        (
            "max_runing_jobs: 2\n",
            0o600,
            "unknown option 'max_runing_jobs' (did you mean 'max-running-jobs'?)",
        ),
        ("listen: [127.0.0.1:1\n  redis: x\n", 0o600, "malformed YAML at line 2, column 8"),
        ("max-running-jobs: two\n", 0o600, "`max-running-jobs` takes a number, not 'two'"),
        ("max-running-jobs: 0\n", 0o600, "0 is not in the range x>=1"),
        ("listen: {a: 1}\n", 0o600, "`listen` takes a list"),
        ("insecure: yes please\n", 0o600, "`insecure` is a flag: give true or false"),
        ("metrics-listen: ':9100'\n", 0o600, "':9100' is not HOST:PORT"),
        ("config: other.yaml\n", 0o600, "unknown option 'config'"),
        ("- listen\n", 0o600, "expected a mapping of option names to values"),
        ("# " + "x" * 70_000 + "\n", 0o600, "larger than 64 KiB"),
    ],
    ids=[
        "0644",
        "0640",
        "0400-accepted",
        "unknown-key",
        "malformed-yaml",
        "not-a-number",
        "out-of-range",
        "not-a-list",
        "not-a-flag",
        "bad-address",
        "config-in-config",
        "not-a-mapping",
        "too-big",
    ],
)
def test_an_unusable_config_file_is_refused_in_one_line_with_exit_2(
    home: Path, workdir: Path, text: str, mode: int, expected: str | None
) -> None:
    config = _config(workdir, text, mode)
    if expected is None:  # accepted: what refuses the start is a flag's value after it
        bad_flag = subprocess.run(
            [TAILHUBD, "--home", str(home), "--config", str(config), "--retention", "soon"],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert bad_flag.returncode == 2, bad_flag.stderr
        assert "--retention" in bad_flag.stderr
        return
    assert expected in _refused(home, config)


def test_a_symlinked_config_file_is_refused(home: Path, workdir: Path) -> None:
    target = _config(workdir, "max-running-jobs: 2\n")
    link = workdir / "link.yaml"
    link.symlink_to(target)

    line = _refused(home, link)

    assert "is a symbolic link; give the file itself" in line


def test_a_fifo_as_config_file_is_refused_without_waiting(home: Path, workdir: Path) -> None:
    fifo = workdir / "fifo.yaml"
    os.mkfifo(fifo, 0o600)

    assert "not a regular file" in _refused(home, fifo)


@pytest.mark.root
def test_a_config_file_of_another_user_is_refused(home: Path, workdir: Path) -> None:
    config = _config(workdir, "max-running-jobs: 2\n")
    os.chown(config, 65534, 65534)

    line = _refused(home, config)

    assert "owned by uid 65534, not by the daemon's user (uid 0); fix: chown 0 " in line


def test_a_missing_config_file_is_refused(home: Path, workdir: Path) -> None:
    assert "cannot read config file" in _refused(home, workdir / "nothing.yaml")
