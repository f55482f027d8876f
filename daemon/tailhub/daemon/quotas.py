"""What one caller may hold, and what the daemon keeps for itself.

- `JobQuota`: the jobs not ended that one token may hold (`--max-jobs-per-token`), and the bytes
  of log its jobs may hold (`--max-log-bytes-per-token`, checked before each Publish). A token
  holder attaching push jobs in a loop made 21,000 of them in 13 s; each is a record and, before
  push logs let their descriptor go, a descriptor. One publishing in a loop filled the disk the
  owner's logs are on. The owner (Unix socket) is not limited.
- `DescriptorBudget`: jobs that hold descriptors (file and command jobs: the file or pipes and
  the log) are admitted while the daemon's descriptors in use stay below its limit minus a
  reserve; past it they are refused at once with a line saying why, instead of failing later
  with "Too many open files", and the reserve stays for the daemon's own work: the owner's
  launches, connections, the database and logs.

They refuse with `JobQuotaReached`, `LogQuotaReached` and `OutOfDescriptors` (errors.py:
RESOURCE_EXHAUSTED, whose message begins "too many").
"""

from __future__ import annotations

import contextlib
import os
import resource
import time
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from typing import TYPE_CHECKING

from tailhub.daemon.errors import JobQuotaReached, LogQuotaReached, OutOfDescriptors
from tailhub.daemon.sizes import shown_size

if TYPE_CHECKING:
    from tailhub.daemon.live_job import Job

# The defaults of --max-jobs-per-token and --max-log-bytes-per-token.
DEFAULT_MAX_JOBS_PER_TOKEN = 1000
DEFAULT_MAX_LOG_BYTES_PER_TOKEN = 10 << 30
# A token's log bytes are counted again (from its jobs' logs) at most this often; in between,
# what it published is added.
_RECOUNT_EVERY = 1.0
# Descriptors kept for the daemon's own work: an eighth of its limit, within these bounds.
MIN_RESERVE, MAX_RESERVE = 64, 1024
# A job admitted is counted as holding its descriptors until a count taken this long after
# its admission sees them (its fetch opens them within a few turns of the event loop).
_SETTLE_SECONDS = 0.01
# Descriptors in use are counted at most this often (a listing of /proc/self/fd).
_COUNT_EVERY = 0.1


class JobQuota:
    """The jobs not ended each token holds (by the token's name), and the bytes of log all its
    jobs hold."""

    def __init__(
        self,
        max_per_token: int,
        is_open: Callable[[int], bool],
        max_log_bytes: int = DEFAULT_MAX_LOG_BYTES_PER_TOKEN,
        jobs: Mapping[int, Job] | None = None,
    ) -> None:
        self.max_per_token = max_per_token
        self.max_log_bytes = max_log_bytes
        # Asked of a job id when a token is at its quota: does that job still count?
        self._is_open = is_open
        self._held: dict[str, set[int]] = {}
        # Every job's token, ended ones too (their logs count until they are removed).
        self._owners: dict[int, str] = {}
        self._jobs: Mapping[int, Job] = {} if jobs is None else jobs
        self._log_bytes: dict[str, int] = {}
        # What each token published into jobs not its own, by job (in memory: a restart
        # forgets it, and counts only the bytes of its own jobs).
        self._published: dict[str, dict[int, int]] = {}
        # When each token's bytes were last counted, and how many jobs there were then.
        self._counted_at: dict[str, tuple[float, int]] = {}

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

    def hold(self, owner: str | None, job_ids: Iterable[int], *, ended: bool = False) -> None:
        """Counts jobs as `owner`'s (after they were created, or at start; `ended` ones only
        for their logs)."""
        if owner is None:
            return
        job_ids = list(job_ids)
        if not ended:
            self._held.setdefault(owner, set()).update(job_ids)
        for job_id in job_ids:
            self._owners[job_id] = owner
        if len(self._owners) > 2 * len(self._jobs) + 1000:  # removed jobs: amortized
            self._forget_removed()

    def check_log_bytes(self, caller: str | None, job_id: int, size: int) -> None:
        """LogQuotaReached when `size` more bytes published by `caller` (a token's name; None:
        the socket's owner, not limited) into job `job_id` would take the bytes it holds past
        --max-log-bytes-per-token; else counts them as its. A token holds its own jobs' logs
        and what it published into others' jobs (a write token may publish into any push
        job, the owner's too), while those jobs exist."""
        if caller is None:
            return
        now = time.monotonic()
        used = self._log_bytes.get(caller)
        counted_at, jobs_then = self._counted_at.get(caller, (float("-inf"), -1))
        if used is None or (
            used + size > self.max_log_bytes
            and (now - counted_at >= _RECOUNT_EVERY or len(self._jobs) != jobs_then)
        ):
            # Counted again when it matters: removed jobs and retries that appended nothing
            # stop counting; at most once a second, however fast a refused token calls, unless
            # jobs were removed (or made) since.
            used = self._count_log_bytes(caller)
            self._counted_at[caller] = (now, len(self._jobs))
        if used + size > self.max_log_bytes:
            self._log_bytes[caller] = used
            raise LogQuotaReached(
                f"too many log bytes for this token: it holds {shown_size(used)} of logs of the "
                f"{shown_size(self.max_log_bytes)} it may (tailhubd --max-log-bytes-per-token); "
                "an admin can remove its ended jobs (tailhub jobs rm)"
            )
        self._log_bytes[caller] = used + size
        if self._owners.get(job_id) != caller:
            published = self._published.setdefault(caller, {})
            published[job_id] = published.get(job_id, 0) + size

    def _forget_removed(self) -> None:
        for job_id in [job_id for job_id in self._owners if job_id not in self._jobs]:
            del self._owners[job_id]
        for published in self._published.values():
            for job_id in [job_id for job_id in published if job_id not in self._jobs]:
                del published[job_id]

    def _count_log_bytes(self, token: str) -> int:
        self._forget_removed()
        own = sum(
            self._jobs[job_id].log.size for job_id, owner in self._owners.items() if owner == token
        )
        return own + sum(self._published.get(token, {}).values())


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
