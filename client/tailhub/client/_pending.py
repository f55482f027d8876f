"""The status line of a job still waiting to start, on a terminal's stderr.

`job 12 pending: 3 jobs ahead`, rewritten in place and cleared once the job starts. Shown only
when stderr is a terminal: a pipe or a file gets nothing extra.
"""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING, TextIO

from tailhub.client._errors import TailhubError
from tailhub.client._types import JobState

if TYPE_CHECKING:
    from tailhub.client import Client

# Back to the start of the line and erase it.
_CLEAR = "\r\x1b[2K"
# Jobs per ListJobs page while counting those ahead (the daemon's maximum).
_PAGE_SIZE = 1000


class PendingStatus:
    """Shows, refreshes and clears one job's pending line; does nothing off a terminal."""

    def __init__(self, client: Client, job_id: int, stream: TextIO | None = None) -> None:
        self._client = client
        self._job_id = job_id
        self._stream = stream or sys.stderr
        self.enabled = self._stream.isatty()
        self._shown = False
        # Whether the job is a local one (asked once, at the first pending heartbeat).
        self._local: bool | None = None

    def update(self, state: JobState) -> None:
        """Shows the line while `state` is PENDING (asking how many are ahead), else clears it."""
        if not self.enabled:
            return
        if state is not JobState.PENDING:
            self.clear()
            return
        ahead = self._jobs_ahead()
        if ahead is None:
            where = ""
        elif ahead:
            where = f": {ahead} job{'' if ahead == 1 else 's'} ahead"
        else:
            where = ": next to start"
        self._stream.write(f"{_CLEAR}tailhub: job {self._job_id} pending{where}")
        self._stream.flush()
        self._shown = True

    def clear(self) -> None:
        if self._shown:
            self._stream.write(_CLEAR)
            self._stream.flush()
            self._shown = False

    def _jobs_ahead(self) -> int | None:
        """Local jobs submitted before this one and still waiting: they start first.

        None for a job of another backend (SkyPilot queues it; the local queue says nothing of
        it), or when the daemon cannot say now: the line is a courtesy, never a reason to stop.
        """
        try:
            if self._local is None:
                self._local = self._client.get(self._job_id).source == "local"
            if not self._local:
                return None
            ahead = 0
            # Pages continue below an id: starting below this job's, only older jobs are read.
            token = str(self._job_id)
            while token:
                page = self._client.list_page(_PAGE_SIZE, token)
                ahead += sum(
                    1
                    for job in page.jobs
                    if job.state is JobState.PENDING and job.source == "local"
                )
                token = page.next_page_token
        except TailhubError:
            return None
        return ahead
