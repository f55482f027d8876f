"""How a cluster node starts a job's upstream command: so that it never outlives the lease.

The command starts behind a gate of the node's one fence, which kills its process group when
the lease may end, and at once when the daemon dies, even by kill -9 (another node takes the
job over and starts its own; a survivor would be a second connection to the upstream host):
process/fence.py, process/fences.py. It carries FETCH_MARKER=JOB_ID in its environment (the
lease watchdog finds it by this).
"""

from __future__ import annotations

import os
from collections.abc import Sequence

from tailhub.daemon.errors import UpstreamFailed
from tailhub.daemon.process import FETCH_MARKER, Wrapped
from tailhub.daemon.process.fence import FENCED
from tailhub.daemon.process.fences import NodeFence, gate_argv


class FencedCommands:
    """A `CommandWrap` (process/): each command fenced by the lease it runs under."""

    def __init__(self) -> None:
        # The node's fence, told of every renewal.
        self.fence = NodeFence()

    def __call__(self, job_id: int, argv: Sequence[str]) -> Wrapped:
        try:
            go, report = self.fence.arm(job_id)
        except OSError as error:  # (no fence can be told, or no pipe made)
            # Never unfenced: the fetch tries again, with backoff, once a fence runs.
            raise UpstreamFailed(f"cannot start the command: {error}", FENCED) from None
        return Wrapped(
            gate_argv(go, report, argv),
            {**os.environ, FETCH_MARKER: str(job_id)},
            (go, report),
        )
