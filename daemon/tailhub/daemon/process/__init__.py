"""How the daemon starts the processes of upstream commands, apart from what they fetch.

Sources start a job's command through a `CommandWrap` they are given: as it is (a daemon
alone), or wrapped by whoever places the job (a cluster node starts it behind its fence, which
kills it when its lease may end or the daemon dies: see cluster/commands.py). Nothing here
imports the rest of the daemon, so `python -m tailhub.daemon.process.fence` stays light.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol

# In the environment of a wrapped command: the id of the job it fetches (a watchdog finds
# it by this even before the daemon has noted its pid).
FETCH_MARKER = "TAILHUB_FETCHING_JOB"


@dataclass
class Wrapped:
    """A command as it is to be started: its argv, environment (None: the daemon's), and the
    descriptors it inherits (the daemon closes its copies once it started)."""

    argv: list[str]
    env: dict[str, str] | None = None
    pass_fds: tuple[int, ...] = field(default=())

    def started(self) -> None:
        """The command started (or failed to): the daemon's copies of its descriptors go."""
        for fd in self.pass_fds:
            os.close(fd)
        self.pass_fds = ()


class CommandWrap(Protocol):
    def __call__(
        self, job_id: int, argv: Sequence[str], env: Mapping[str, str] | None = None
    ) -> Wrapped:
        """How job `job_id`'s upstream command `argv` is started (`env`: its environment;
        None: the daemon's)."""


def as_is(job_id: int, argv: Sequence[str], env: Mapping[str, str] | None = None) -> Wrapped:
    """The command as it is (a daemon alone)."""
    return Wrapped([*argv], None if env is None else dict(env))
