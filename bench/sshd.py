"""A throwaway sshd on 127.0.0.1, set up by `setup_sshd.sh`, for the ssh scenario."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
from pathlib import Path

from harness.ports import free_port
from harness.processes import Owned
from harness.readings import CpuTimes, cpu_times, is_gone
from harness.waiting import wait_until

SETUP = Path(__file__).resolve().parent / "setup_sshd.sh"
SETUP_TIMEOUT = 600.0  # installing openssh-server may take a while


class SshdUnavailable(Exception):
    """sshd cannot be installed or started here; the message says why."""


class Sshd(Owned):
    """sshd with its default session limits, or with `max_startups` (`"1000"`) raised; started
    by `start()` (or `with`), stopped by `close()`.

    Not a child of ours: sshd detaches (a session of its own), so its end is read from /proc.
    """

    def __init__(self, directory: Path, max_startups: str = "") -> None:
        self.directory = directory
        self.max_startups = max_startups
        self.pid = 0
        self.port = 0
        self.key = ""
        self.user = ""
        self.log = Path()

    def start(self) -> None:
        port = free_port()
        try:
            done = subprocess.run(
                ["bash", str(SETUP), str(self.directory), str(port), self.max_startups],
                capture_output=True,
                text=True,
                timeout=SETUP_TIMEOUT,
                check=False,
            )
        except (OSError, subprocess.TimeoutExpired) as error:
            raise SshdUnavailable(f"setup_sshd.sh failed: {error}") from error
        if done.returncode != 0:
            last = (done.stderr.strip().splitlines() or ["no message"])[-1]
            raise SshdUnavailable(f"setup_sshd.sh exited with {done.returncode}: {last}")
        values = dict(line.split("=", 1) for line in done.stdout.splitlines() if "=" in line)
        self.pid, self.port = int(values["PID"]), int(values["PORT"])
        self.key, self.user, self.log = values["KEY"], values["USER"], Path(values["LOG"])

    def argv(self, remote_command: str) -> list[str]:
        """`ssh` to this server running `remote_command`: no prompts, no known_hosts noise."""
        return [
            "ssh",
            "-p",
            str(self.port),
            "-i",
            self.key,
            "-o",
            "BatchMode=yes",
            "-o",
            "StrictHostKeyChecking=no",
            "-o",
            "UserKnownHostsFile=/dev/null",
            "-o",
            "LogLevel=ERROR",
            f"{self.user}@127.0.0.1",
            remote_command,
        ]

    def cpu(self) -> CpuTimes:
        """The listener's CPU and that of the sessions it has reaped (all the server side).

        A session's process may outlive its client by a moment: `settle()` first, or its CPU
        lands in the next reading.
        """
        return cpu_times(self.pid)

    def settle(self, timeout: float = 30.0) -> None:
        """Waits until every session process has exited and been reaped by the listener."""
        children = Path(f"/proc/{self.pid}/task/{self.pid}/children")
        wait_until(lambda: not children.read_text().strip(), timeout, "sshd's sessions to end")

    def log_size(self) -> int:
        return self.log.stat().st_size

    def log_since(self, position: int) -> str:
        with open(self.log, "rb") as log:
            log.seek(position)
            return log.read().decode(errors="replace")

    def close(self) -> None:
        """SIGTERM to the listener, then wait until it is gone (its sessions end with their
        clients)."""
        if not self.pid:
            return
        with contextlib.suppress(ProcessLookupError):
            os.kill(self.pid, signal.SIGTERM)
        pid = self.pid
        wait_until(lambda: is_gone(pid), 30, "sshd to exit")
        self.pid = 0
