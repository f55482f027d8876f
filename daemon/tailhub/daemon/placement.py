"""Where a job is fetched: here always (one daemon), or where its lease is (cluster mode).

The daemon asks its `Placement` at the few points where several daemons differ from one: a
new job's id, whether this daemon may fetch a job, where its fetcher's bytes go (its sink),
how its upstream command starts, a record that changed, a subscriber that wants a job's
bytes. `Standalone` answers as one daemon always did, so the single-daemon path has no "if
cluster" in it (cluster/node.py is the other one; placing.py picks one).

What the core reads of a job's place goes through its `Placed` view (`Job.placed`): `HERE`
for a daemon alone; a cluster node gives each job one view of its own, which it keeps up to
date. What the placement may do with the jobs goes through one narrow port, `JobsPort`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

from tailhub.daemon.home_kind import refuse_alone_on
from tailhub.daemon.process import CommandWrap, as_is

if TYPE_CHECKING:
    from tailhub.daemon.cancelling import CancelResult
    from tailhub.daemon.domain import JobRecord
    from tailhub.daemon.live_job import Job
    from tailhub.daemon.paths import StatePaths
    from tailhub.daemon.sink import LocalLog, LocalSink, Sink
    from tailhub.daemon.store import JobStore
    from tailhub.daemon.supervisor import Supervisor


@dataclass(frozen=True)
class ClusterView:
    """What GetDaemonStatus reports of the cluster this daemon is a node of."""

    node_name: str
    redis: str
    connected: bool
    leases_held: int
    stale_appends_refused: int
    nodes: int


class Placed(Protocol):
    """A job's place, as this daemon knows it (read-only to the core)."""

    @property
    def holder(self) -> str:
        """The daemon fetching the job now ("" if none, or for a daemon alone)."""

    @property
    def home(self) -> str:
        """The daemon a local, file or push job is pinned to ("" when any may fetch it)."""

    @property
    def size(self) -> int:
        """How far the job's log has reached where it is fetched, as last seen (0: here)."""

    @property
    def sealed(self) -> bool:
        """Sealed where it is fetched (its bytes here may still be fewer)."""

    @property
    def first_offset(self) -> int:
        """Bytes before this offset are not here (gone from where they were read)."""

    @property
    def kept_from(self) -> int:
        """The first offset the shared copy of the log still keeps, as last seen."""

    @property
    def mirrored(self) -> bool:
        """The log here is filled from another daemon's fetch (so this one writes it)."""


@dataclass(frozen=True)
class Here:
    """The place of every job of a daemon alone: fetched here, all of it here."""

    holder: str = ""
    home: str = ""
    size: int = 0
    sealed: bool = False
    first_offset: int = 0
    kept_from: int = 0
    mirrored: bool = False


HERE = Here()


class JobsPort(Protocol):
    """What a placement may do with the daemon's jobs (the job manager implements it)."""

    def get(self, job_id: int) -> Job: ...

    def all_jobs(self) -> list[Job]: ...

    def adopt(self, record: JobRecord, placed: Placed) -> Job:
        """A job another daemon created: recorded here, with its place."""

    def resume(self, job: Job) -> None:
        """This daemon has just become the job's fetcher: its fetch starts."""

    def stop_fetching(self, job: Job) -> None:
        """Stops the job's fetch without ending the job (another daemon fetches it now)."""

    def save_or_defer(self, job: Job) -> None: ...

    def local_log(self, job: Job) -> LocalLog:
        """The way bytes and events enter the job's log here (as its fetcher's do)."""

    def tell_followers(self, job: Job, message: str) -> None:
        """An event for this daemon's followers only (the cluster's state, as seen here)."""

    def ended_elsewhere(self, job: Job) -> None:
        """The job's last byte and its end arrived from where it was fetched: sealed here."""

    def fail_start(self, job: Job, error: Exception | str) -> None: ...

    async def cancel(self, job_ids: list[int], everything: bool) -> CancelResult: ...


class Placement(Protocol):
    async def join(self, store: JobStore) -> None:
        """Before anything is served: checks that the database is of this kind of daemon."""

    async def start(self, jobs: JobsPort, essentials: Supervisor) -> None:
        """The jobs are loaded: the placement's own loops start (under `essentials`: the
        daemon stops if one dies)."""

    async def close(self) -> None: ...

    def report_health(self, report: Callable[[bool], None]) -> bool | None:
        """Whether the placement can serve now (told to `report` whenever it changes); None:
        it has no health of its own (a daemon alone)."""

    async def new_job_id(self) -> int | None:
        """The id of a job about to be created; None: the local database assigns it."""

    async def claim_new(self, job: Job) -> None:
        """A job was just created here: make it known and this daemon its fetcher."""

    def may_fetch(self, job: Job) -> bool:
        """Whether this daemon runs the job's fetch now (resume at start, launch, attach)."""

    def make_sink(self, job: Job, local: LocalSink) -> Sink:
        """Where the job's fetcher writes: `local`, or through what the placement needs first."""

    def wrap_command(self) -> CommandWrap:
        """How the upstream commands of jobs are started (process/)."""

    def saved(self, job: Job) -> None:
        """The job's record changed here (and was saved locally)."""

    async def prepare_read(self, job: Job, *, catch_up: bool) -> None:
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

    def __init__(self, paths: StatePaths | None = None) -> None:
        self._paths = paths

    async def join(self, store: JobStore) -> None:
        # One kind of daemon per home (home_kind.py): not on a cluster node's database.
        if self._paths is not None:
            refuse_alone_on(self._paths, store.meta("cluster"))

    async def start(self, jobs: JobsPort, essentials: Supervisor) -> None:
        return None

    async def close(self) -> None:
        return None

    def report_health(self, report: Callable[[bool], None]) -> bool | None:
        return None

    async def new_job_id(self) -> int | None:
        return None

    async def claim_new(self, job: Job) -> None:
        return None

    def may_fetch(self, job: Job) -> bool:
        return True

    def make_sink(self, job: Job, local: LocalSink) -> Sink:
        return local

    def wrap_command(self) -> CommandWrap:
        return as_is

    def saved(self, job: Job) -> None:
        return None

    async def prepare_read(self, job: Job, *, catch_up: bool) -> None:
        return None

    async def wait_to_fetch(self, job: Job) -> None:
        return None

    def cancel_elsewhere(self, job: Job) -> bool:
        return False

    def allows_removal(self) -> bool:
        return True

    def view(self) -> ClusterView | None:
        return None
