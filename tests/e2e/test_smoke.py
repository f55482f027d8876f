from __future__ import annotations

from pathlib import Path

from helpers import DaemonProcess, run_cli


def test_attached_file_is_followed_to_its_end(daemon: DaemonProcess, workdir: Path) -> None:
    log = workdir / "app.log"
    log.write_bytes(b"first\n")
    attached = run_cli(daemon.home, "jobs", "attach", "--file", str(log))
    assert attached.returncode == 0, attached.stderr
    job_id = attached.stdout.decode().strip()
    with log.open("ab") as handle:
        handle.write(b"second\n")
    finished = run_cli(daemon.home, "jobs", "finish", job_id, "--exit-code", "0")
    assert finished.returncode == 0, finished.stderr
    logs = run_cli(daemon.home, "jobs", "logs", job_id)
    assert logs.returncode == 0, logs.stderr
    assert logs.stdout == b"first\nsecond\n"
