"""A job's place in the cluster, as this node knows it: the one view its core reads.

Every job of a node has one `ClusterJob` (its `Job.placed`, placement.py), made on first use
and kept up to date by the node's record sync, take-over, writers and mirror. Nothing
outside cluster/ writes it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from tailhub.daemon.live_job import Job


@dataclass
class ClusterJob:
    """Implements `Placed` (placement.py) for a job of a cluster node."""

    # The node fetching the job now ("" if none).
    holder: str = ""
    # The node a local, file or push job is pinned to ("" for those any node fetches).
    home: str = ""
    # The size of the cluster's copy of the log, as last seen.
    size: int = 0
    # Sealed where it was fetched (its bytes here may still be fewer).
    sealed: bool = False
    # Sealed here, not in Redis: the node that sealed it was killed before its end reached
    # Redis (or Redis lost it). This copy is whole, and its end is stored from here.
    end_unstored: bool = False
    # Bytes before this offset are not here (Redis had trimmed them before this daemon
    # read them; the file holds a hole there, never served).
    first_offset: int = 0
    # The first offset Redis still keeps, as last seen.
    kept_from: int = 0
    # The log here is filled from the cluster's copy (another node fetches the job).
    mirrored: bool = False


def placed(job: Job) -> ClusterJob:
    """The job's view (made on first use)."""
    view = job.placed
    if not isinstance(view, ClusterJob):
        view = job.placed = ClusterJob()
    return view
