"""Where a job is fetched: here always (one daemon), or where its lease is (cluster mode).

The job manager asks its `Placement` at the few points where several daemons differ from
one: a new job's id, whether this daemon may fetch a job, the fetcher it runs, a record that
changed, a subscriber that wants a job's bytes. `Standalone` answers as one daemon always
did, so the single-daemon path has no "if cluster" in it (cluster/node.py is the other one).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

from tailhub.daemon.fetcher import Fetcher

if TYPE_CHECKING:
    from tailhub.daemon.config import DaemonConfig
    from tailhub.daemon.counts import DaemonCounts
    from tailhub.daemon.fetcher import FetchOwner
    from tailhub.daemon.job import Job
    from tailhub.daemon.sources import Source


@dataclass(frozen=True)
class ClusterView:
    """What GetDaemonStatus reports of the cluster this daemon is a node of."""

    node_name: str
    redis: str
    connected: bool
    leases_held: int
    stale_appends_refused: int
    nodes: int


class Placement(Protocol):
    async def new_job_id(self) -> int | None:
        """The id of a job about to be created; None: the local database assigns it."""

    async def claim_new(self, job: Job) -> None:
        """A job was just created here: make it known and this daemon its fetcher."""

    def may_fetch(self, job: Job) -> bool:
        """Whether this daemon runs the job's fetch now (resume at start, launch, attach)."""

    def make_fetcher(
        self,
        job: Job,
        source: Source,
        owner: FetchOwner,
        config: DaemonConfig,
        counts: DaemonCounts,
    ) -> Fetcher: ...

    def saved(self, job: Job) -> None:
        """The job's record changed here (and was saved locally)."""

    async def watch(self, job: Job, *, catch_up: bool) -> None:
        """A subscriber starts reading the job here; with `catch_up`, returns once this
        daemon has the bytes the job had (a tail is found from the end)."""

    async def wait_to_fetch(self, job: Job) -> None:
        """A job not fetched here now, that this daemon takes back (its own, after a
        restart): waits a little for it, then raises NotFetchedYet. Returns at once for a
        job fetched elsewhere."""

    def cancel_elsewhere(self, job: Job) -> bool:
        """Asks the daemon fetching the job to cancel it; False: it is fetched here."""

    def allows_removal(self) -> bool:
        """Whether `jobs rm` and the retention policy may delete jobs."""

    def view(self) -> ClusterView | None:
        """The cluster as this daemon sees it; None for a daemon alone."""


class Standalone:
    """One daemon: every job is created, fetched and served here."""

    async def new_job_id(self) -> int | None:
        return None

    async def claim_new(self, job: Job) -> None:
        return None

    def may_fetch(self, job: Job) -> bool:
        return True

    def make_fetcher(
        self,
        job: Job,
        source: Source,
        owner: FetchOwner,
        config: DaemonConfig,
        counts: DaemonCounts,
    ) -> Fetcher:
        return Fetcher(job, source, owner, config, counts)

    def saved(self, job: Job) -> None:
        return None

    async def watch(self, job: Job, *, catch_up: bool) -> None:
        return None

    async def wait_to_fetch(self, job: Job) -> None:
        return None

    def cancel_elsewhere(self, job: Job) -> bool:
        return False

    def allows_removal(self) -> bool:
        return True

    def view(self) -> ClusterView | None:
        return None
