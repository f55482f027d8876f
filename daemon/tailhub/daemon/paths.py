"""Where a daemon keeps its state; shared with the client, which must find the socket."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

HOME_ENV = "TAILHUB_HOME"
DEFAULT_HOME = "~/.tailhub"
# sockaddr_un.sun_path holds 108 bytes including the terminating NUL.
MAX_SOCKET_PATH = 107


def resolve_home(explicit: str | os.PathLike[str] | None, environ: Mapping[str, str]) -> Path:
    """The state directory: the flag, else $TAILHUB_HOME, else ~/.tailhub.

    An empty flag or variable is an error, not "unset": falling back to ~/.tailhub would
    quietly send jobs (and their secrets) to a daemon the user did not mean.
    """
    if explicit is not None:
        raw = os.fspath(explicit)
        if not raw:
            raise ValueError("--home is empty; give a state directory, or leave it out")
    else:
        raw = environ.get(HOME_ENV, DEFAULT_HOME)
        if not raw:
            raise ValueError(f"${HOME_ENV} is set but empty; give a state directory, or unset it")
    return Path(raw).expanduser().absolute()


@dataclass(frozen=True)
class StatePaths:
    """The files of one state directory."""

    home: Path

    @property
    def socket(self) -> Path:
        return self.home / "sock"

    @property
    def address(self) -> str:
        return f"unix:{self.socket}"

    @property
    def lock(self) -> Path:
        return self.home / "tailhubd.lock"

    @property
    def pid(self) -> Path:
        return self.home / "tailhubd.pid"

    @property
    def database(self) -> Path:
        return self.home / "jobs.sqlite3"

    @property
    def daemon_log(self) -> Path:
        return self.home / "tailhubd.log"

    @property
    def logs(self) -> Path:
        return self.home / "logs"

    @property
    def runs(self) -> Path:
        return self.home / "runs"

    def job_log(self, job_id: int) -> Path:
        return self.logs / f"{job_id}.log"

    def job_times(self, job_id: int) -> Path:
        """When the bytes of the job's log reached the daemon (see `timeindex`)."""
        return self.logs / f"{job_id}.times"

    def job_acked(self, job_id: int) -> Path:
        """Where a push job's acknowledged bytes end (see `acked`)."""
        return self.logs / f"{job_id}.acked"

    def run_dir(self, job_id: int) -> Path:
        """Scripts, pid and exit code of a job started by the local runner."""
        return self.runs / str(job_id)

    def check_socket_path(self) -> None:
        if len(os.fsencode(self.socket)) > MAX_SOCKET_PATH:
            raise ValueError(
                f"state directory {self.home} is too long for a Unix socket path; "
                f"choose a shorter --home (at most {MAX_SOCKET_PATH - 5} bytes)"
            )
