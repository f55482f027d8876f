"""The status line of a job still waiting to start, on a terminal's stderr.

`job 12 pending: 3 jobs ahead`, rewritten in place and cleared once the job starts. Shown only
when stderr is a terminal: a pipe or a file gets nothing extra.
"""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING, TextIO

from tailhub.client._types import JobState

if TYPE_CHECKING:
    from tailhub.client import Client

# Back to the start of the line and erase it.
_CLEAR = "\r\x1b[2K"


class PendingStatus:
    """Shows, refreshes and clears one job's pending line; does nothing off a terminal."""

    def __init__(self, client: Client, job_id: int, stream: TextIO | None = None) -> None:
        self._client = client
        self._job_id = job_id
        self._stream = stream or sys.stderr
        self.enabled = self._stream.isatty()
        self._shown = False

    def update(self, state: JobState) -> None:
        """Shows the line while `state` is PENDING (asking how many are ahead), else clears it."""
        if not self.enabled:
            return
        if state is not JobState.PENDING:
            self.clear()
            return
        ahead = self._jobs_ahead()
        where = f"{ahead} job{'' if ahead == 1 else 's'} ahead" if ahead else "next to start"
        self._stream.write(f"{_CLEAR}tailhub: job {self._job_id} pending: {where}")
        self._stream.flush()
        self._shown = True

    def clear(self) -> None:
        if self._shown:
            self._stream.write(_CLEAR)
            self._stream.flush()
            self._shown = False

    def _jobs_ahead(self) -> int:
        """Local jobs submitted before this one and still waiting: they start first."""
        # Newest first: the pages past this job's id hold every candidate.
        return sum(
            1
            for job in self._client.list()
            if job.id < self._job_id and job.state is JobState.PENDING and job.source == "local"
        )
