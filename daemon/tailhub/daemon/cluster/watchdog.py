"""Stops an upstream whose lease may have expired, even while the event loop is stuck.

The event loop stops a fetch when its lease's safe time runs out (node.py). But a loop that
is stuck (a long GC pause, a blocking call, a host that froze and thawed) cannot, and by the
time it runs again another node may have taken the lease and started its own upstream. This
thread does not need the loop: it kills the command's process group at the deadline, so two
upstreams of one job never run at once. Writes are fenced in Redis anyway (the append
script checks the lease); this is about the upstream host, which should see one connection.
"""

from __future__ import annotations

import logging
import os
import signal
import threading
import time
from collections.abc import Callable

from tailhub.daemon.cluster.writer import HeldLease
from tailhub.daemon.process import FETCH_MARKER
from tailhub.daemon.runner import RunHandle

logger = logging.getLogger(__name__)

# How often the thread looks at the deadlines.
_TICK = 0.02


class LeaseWatchdog:
    """One thread per daemon, guarding every lease it holds."""

    def __init__(self) -> None:
        self._leases: dict[int, tuple[HeldLease, Callable[[], RunHandle | None]]] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="lease-watchdog", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def check(self) -> None:
        """Raises if the thread died (an error in it): the leases would go unguarded, so the
        keep-alive dies with it and the supervisor stops the daemon."""
        if not self._stop.is_set() and not self._thread.is_alive():
            raise RuntimeError("the lease watchdog thread died")

    def close(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(5)

    def guard(self, lease: HeldLease, upstream: Callable[[], RunHandle | None]) -> None:
        """`upstream` tells the process running the job's upstream now, if any."""
        with self._lock:
            self._leases[lease.job_id] = (lease, upstream)

    def forget(self, job_id: int) -> None:
        with self._lock:
            self._leases.pop(job_id, None)

    def _run(self) -> None:
        while not self._stop.wait(_TICK):
            now = time.monotonic()
            with self._lock:
                due = [
                    (lease, upstream)
                    for lease, upstream in self._leases.values()
                    if now >= lease.valid_until
                ]
            for lease, upstream in due:
                # Read by the loop's side: the fetch of this lease is over.
                lease.lost = True
                # Watched until the loop forgets the lease: a command started just now may
                # not have told its pid yet, but it carries its job's id.
                pid = kill_upstream(upstream()) or _kill_marked(lease.job_id)
                if pid is not None:
                    logger.warning(
                        "job %d: lease past its safe time while the daemon was stuck; "
                        "killed its upstream (pid %d)",
                        lease.job_id,
                        pid,
                    )


def _kill_marked(job_id: int) -> int | None:
    """SIGKILLs this daemon's children that fetch `job_id` (by their environment's marker)."""
    marker = f"{FETCH_MARKER}={job_id}".encode()
    me = str(os.getpid())
    killed = None
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as stat:
                # The fields after the command's name (which may hold spaces): ppid is 2nd.
                parent = stat.read().rsplit(b")", 1)[1].split()[1].decode()
            if parent != me:
                continue
            with open(f"/proc/{entry}/environ", "rb") as environ:
                if marker not in environ.read().split(b"\0"):
                    continue
            os.killpg(int(entry), signal.SIGKILL)
            killed = int(entry)
        except (OSError, IndexError):
            continue  # gone meanwhile, or not ours
    return killed


def kill_upstream(handle: RunHandle | None) -> int | None:
    """SIGKILLs the process group of the upstream `handle` names, if that very process still
    runs (its pid may have been reused since); returns the pid it killed."""
    if handle is None or handle != RunHandle.of(handle.pid):
        return None
    try:
        os.killpg(handle.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        return None
    return handle.pid
