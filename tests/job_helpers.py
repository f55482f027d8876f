"""Helpers for tests of local jobs: task files, the queue as users see it, job processes."""

from __future__ import annotations

import fcntl
import json
import re
import textwrap
from pathlib import Path
from typing import IO, Any

from helpers import DaemonProcess, run_cli

from tailhub.client import JobInfo

_SUBMITTED = re.compile(rb"job (\d+) submitted")


def write_task(directory: Path, text: str, name: str = "task.yaml") -> Path:
    """Writes a task file (dedented) and returns its path."""
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / name
    path.write_text(textwrap.dedent(text))
    return path


def queue(home: Path) -> dict[int, dict[str, Any]]:
    """`tailhub jobs queue --json`, by job id."""
    listed = run_cli(home, "jobs", "queue", "--json")
    assert listed.returncode == 0, listed.stderr
    return {job["id"]: job for job in json.loads(listed.stdout)}


def jobs(daemon: DaemonProcess) -> dict[int, JobInfo]:
    """The daemon's jobs through the client library: cheap enough to poll."""
    with daemon.client() as client:
        return {job.id: job for job in client.list()}


def submitted_id(stderr: bytes) -> int:
    """The job id a synchronous `jobs launch` announces on stderr."""
    found = _SUBMITTED.search(stderr)
    assert found is not None, stderr
    return int(found.group(1))


def is_alive(pid: int) -> bool:
    """True while the process exists and is not a zombie waiting to be reaped."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):  # (gone between the open and the read)
        return False
    return stat[stat.rfind(")") + 2] != "Z"


class Gate:
    """A lock file that jobs wait on with `flock --shared PATH true`: they wait without polling,
    so many waiting jobs cost no CPU. Open it in `finally` too: a failing test leaves no job
    behind."""

    def __init__(self, path: Path, handle: IO[bytes]) -> None:
        self.path = path
        self._handle: IO[bytes] | None = handle

    @classmethod
    def closed(cls, path: Path) -> Gate:
        handle = path.open("wb")
        fcntl.flock(handle, fcntl.LOCK_EX)
        return cls(path, handle)

    def open(self) -> None:
        """Lets every waiting job, and every later one, through."""
        if self._handle is not None:
            self._handle.close()
            self._handle = None
