"""How a cluster node starts a job's upstream command: so that it never outlives the lease.

The command dies with the daemon (another node takes the job over and starts its own; a
survivor would be a second connection to the upstream host), carries FETCH_MARKER=JOB_ID in
its environment (the lease watchdog finds it by this), and runs inside a fence that kills it
when the lease may end (process/fence.py).
"""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence

from tailhub.daemon.process import FETCH_MARKER, Wrapped, die_with_parent
from tailhub.daemon.process.fence import Fences

FENCE_MODULE = "tailhub.daemon.process.fence"


class FencedCommands:
    """A `CommandWrap` (process/): each command fenced by the lease it runs under."""

    def __init__(self) -> None:
        # The daemon's ends of the fences, told of every renewal.
        self.fences = Fences()

    def __call__(self, job_id: int, argv: Sequence[str]) -> Wrapped:
        fence = self.fences.open(job_id)
        return Wrapped(
            [sys.executable, "-I", "-m", FENCE_MODULE, str(fence), "--", *die_with_parent(), *argv],
            {**os.environ, FETCH_MARKER: str(job_id)},
            (fence,),
        )
