"""What one caller may hold, and what the daemon keeps for itself.

- `JobQuota`: the jobs not ended that one token may hold (`--max-jobs-per-token`). A token
  holder attaching push jobs in a loop made 21,000 of them in 13 s; each is a record and, before
  push logs let their descriptor go, a descriptor. The owner (Unix socket) is not limited.
- `DescriptorBudget`: jobs that hold descriptors (file and command jobs: the file or pipes and
  the log) are admitted while the daemon's descriptors in use stay below its limit minus a
  reserve; past it they are refused at once with a line saying why, instead of failing later
  with "Too many open files", and the reserve stays for the daemon's own work: the owner's
  launches, connections, the database and logs.

They refuse with `JobQuotaReached` and `OutOfDescriptors` (errors.py: RESOURCE_EXHAUSTED, whose
message begins "too many").
"""

from __future__ import annotations

import contextlib
import os
import resource
import time
from collections import deque
from collections.abc import Callable, Iterable

from tailhub.daemon.errors import JobQuotaReached, OutOfDescriptors

# The default of --max-jobs-per-token.
DEFAULT_MAX_JOBS_PER_TOKEN = 1000
# Descriptors kept for the daemon's own work: an eighth of its limit, within these bounds.
MIN_RESERVE, MAX_RESERVE = 64, 1024
# A job admitted is counted as holding its descriptors until a count taken this long after
# its admission sees them (its fetch opens them within a few turns of the event loop).
_SETTLE_SECONDS = 0.01
# Descriptors in use are counted at most this often (a listing of /proc/self/fd).
_COUNT_EVERY = 0.1


class JobQuota:
    """The jobs not ended each token holds (by the token's name)."""

    def __init__(self, max_per_token: int, is_open: Callable[[int], bool]) -> None:
        self.max_per_token = max_per_token
        # Asked of a job id when a token is at its quota: does that job still count?
        self._is_open = is_open
        self._held: dict[str, set[int]] = {}

    def check(self, owner: str | None) -> None:
        """JobQuotaReached when `owner` (a token's name; None: the socket's owner) may not have
        one more job."""
        if owner is None:
            return
        held = self._held.get(owner)
        if held is None or len(held) < self.max_per_token:
            return
        # Ended or removed jobs are let go only here, when it matters: cheap per call.
        held.difference_update([job_id for job_id in held if not self._is_open(job_id)])
        if len(held) >= self.max_per_token:
            raise JobQuotaReached(
                f"too many open jobs for this token: at most {self.max_per_token} not ended at "
                "once (tailhubd --max-jobs-per-token); finish or cancel some first"
            )

    def hold(self, owner: str | None, job_ids: Iterable[int]) -> None:
        """Counts jobs as `owner`'s (after they were created, or at start)."""
        if owner is not None:
            self._held.setdefault(owner, set()).update(job_ids)


def descriptor_limit() -> int | None:
    """The daemon's (soft) limit on open descriptors; None for none."""
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    return None if soft == resource.RLIM_INFINITY else soft


def default_reserve(limit: int) -> int:
    return min(max(limit // 8, MIN_RESERVE), MAX_RESERVE)


def descriptors_in_use() -> int:
    """How many descriptors the daemon holds now (minus the one the listing itself takes)."""
    return len(os.listdir("/proc/self/fd")) - 1


class DescriptorBudget:
    """Admits jobs that hold descriptors while `limit - reserve` are not in use."""

    def __init__(
        self,
        limit: int | None,
        reserve: int | None = None,
        in_use: Callable[[], int] = descriptors_in_use,
    ) -> None:
        self.limit = limit
        if reserve is None:
            reserve = 0 if limit is None else default_reserve(limit)
        self.reserve = reserve
        self._in_use = in_use
        self._counted = 0
        self._counted_at = float("-inf")
        # (when, descriptors) of jobs admitted lately: counted until a count sees them.
        self._admitted: deque[tuple[float, int]] = deque()

    def admit(self, what: str, cost: int, *, opens_within: float = 0.0) -> None:
        """Counts a new job holding `cost` descriptors; OutOfDescriptors when the budget is used
        up (`what` names the job's kind for the message). `opens_within`: how long it may take
        the job to open them, during which it is counted on top of what is open (jobs resumed
        at start open theirs only once the daemon's start is done)."""
        if self.limit is None:
            return
        now = time.monotonic()
        budget = self.limit - self.reserve
        in_use = self._in_use_at(now, fresh=False)
        if in_use + cost > budget:
            # Refused only on a count of now: the last one may be a tenth of a second old.
            in_use = self._in_use_at(now, fresh=True)
        if in_use + cost > budget:
            raise OutOfDescriptors(
                f"too many open files: the daemon holds {in_use} of the {self.limit} "
                f"descriptors it may open and keeps the last {self.reserve} for its own work, "
                f"so no new {what} job is taken now; end some file or command jobs, or raise "
                "its limit (ulimit -n, LimitNOFILE=) and restart it"
            )
        if cost:
            self._admitted.append((now + opens_within, cost))

    def _in_use_at(self, now: float, *, fresh: bool) -> int:
        if fresh or now - self._counted_at >= _COUNT_EVERY:
            with contextlib.suppress(OSError):  # no /proc: nothing is refused
                self._counted, self._counted_at = self._in_use(), now
        while self._admitted and self._admitted[0][0] < self._counted_at - _SETTLE_SECONDS:
            self._admitted.popleft()
        # Those admitted just before the last count or since are not in it yet (or are, and
        # count twice for a moment: erring on the safe side).
        return self._counted + sum(cost for _, cost in self._admitted)
