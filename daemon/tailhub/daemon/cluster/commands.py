"""How a cluster node starts a job's upstream command (a command job's, or a SkyPilot job's
`sky`): so that it never outlives the lease.

The command starts behind a gate of the node's one fence, which kills its process group when
the lease may end, and at once when the daemon dies, even by kill -9 (another node takes the
job over and starts its own; a survivor would be a second connection to the upstream host):
process/fence.py, process/fences.py. The kernel kills it too when the daemon dies, should the
fence die with it (setpriv --pdeathsig: its gate then kills its whole process group). It
carries FETCH_MARKER=JOB_ID in its environment (the lease watchdog finds it by this).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping, Sequence

from tailhub.daemon.errors import UpstreamFailed
from tailhub.daemon.process import FETCH_MARKER, Wrapped
from tailhub.daemon.process.fence import FENCED
from tailhub.daemon.process.fences import (
    NodeFence,
    die_with_parent,
    gate_argv,
    starting_thread_lives,
)

logger = logging.getLogger(__name__)


class FencedCommands:
    """A `CommandWrap` (process/): each command fenced by the lease it runs under."""

    def __init__(self) -> None:
        # The node's fence, told of every renewal.
        self.fence = NodeFence()
        if not die_with_parent():
            logger.warning(
                "setpriv (util-linux) is not installed: a command whose daemon and fence are "
                "killed together (kill -9 of both) outlives them, beside the one another node "
                "starts"
            )

    def __call__(
        self, job_id: int, argv: Sequence[str], env: Mapping[str, str] | None = None
    ) -> Wrapped:
        if not starting_thread_lives():  # (a bug: the kernel would kill it with the thread)
            raise UpstreamFailed("cannot start the command outside the main thread", FENCED)
        try:
            go, report = self.fence.arm(job_id)
        except OSError as error:  # (no fence can be told, or no pipe made)
            # Never unfenced: the fetch tries again, with backoff, once a fence runs.
            raise UpstreamFailed(f"cannot start the command: {error}", FENCED) from None
        return Wrapped(
            gate_argv(go, report, argv),
            {**(os.environ if env is None else env), FETCH_MARKER: str(job_id)},
            (go, report),
        )
