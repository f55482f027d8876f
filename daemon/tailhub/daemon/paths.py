"""Where a daemon keeps its state; shared with the client, which must find the socket."""

from __future__ import annotations

import os
import re
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


# How the daemon names its opened home (see `StatePaths.home_fd`), to show the real path instead.
_OPENED = re.compile(r"/proc/\d+/fd/\d+(?=/|$)")


def shown(path: str | os.PathLike[str]) -> str:
    """`path` as a person should read it: under a home the daemon opened, its real path."""
    text = os.fspath(path)
    opened = _OPENED.match(text)
    if opened is None:
        return text
    try:
        return os.readlink(opened.group()) + text[opened.end() :]
    except OSError:  # closed already (the daemon stopped): the name is all there is
        return text


@dataclass(frozen=True)
class StatePaths:
    """The files of one state directory.

    `home` is the state directory as the user named it (for messages, hints and the node
    name). In the daemon, `home_fd` is that directory opened once after every component of its
    path was checked (statedir.open_home), and every file is reached through it: `root` is
    /proc/PID/fd/N, whose lookup starts at the opened directory itself, so re-pointing a link
    on the way to `home` later changes nothing. The client has no `home_fd`: it checks the
    path (statedir.check_state_dir) before using it, and then only a path's owner (the user or
    root) can change where it leads.
    """

    home: Path
    home_fd: int | None = None

    @property
    def root(self) -> Path:
        """Where the files are reached: the opened home in the daemon, else `home`.

        /proc/PID (not /proc/self) so that a path handed to a child process (a SkyPilot task
        file) still leads to the daemon's directory."""
        if self.home_fd is None:
            return self.home
        return Path(f"/proc/{os.getpid()}/fd/{self.home_fd}")

    @property
    def socket(self) -> Path:
        return self.root / "sock"

    @property
    def address(self) -> str:
        return f"unix:{self.socket}"

    @property
    def lock(self) -> Path:
        return self.root / "tailhubd.lock"

    @property
    def pid(self) -> Path:
        return self.root / "tailhubd.pid"

    @property
    def database(self) -> Path:
        return self.root / "jobs.sqlite3"

    @property
    def daemon_log(self) -> Path:
        return self.root / "tailhubd.log"

    @property
    def logs(self) -> Path:
        return self.root / "logs"

    @property
    def runs(self) -> Path:
        return self.root / "runs"

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
        # The client connects by the path the user gave (the daemon binds through its fd).
        if len(os.fsencode(self.home / "sock")) > MAX_SOCKET_PATH:
            raise ValueError(
                f"state directory {self.home} is too long for a Unix socket path; "
                f"choose a shorter --home (at most {MAX_SOCKET_PATH - 5} bytes)"
            )
