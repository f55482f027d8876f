"""Where the daemon's memory goes, for whoever runs it: tracemalloc on request, read by signal.

Off unless the daemon is started with TAILHUB_TRACEMALLOC=FRAMES (1-50: how deep each
allocation's stack is kept; tracing costs CPU and memory, so it is for a soak, not for
production). Then each SIGUSR2 writes to the daemon's log the allocation sites that grew most
since the first SIGUSR2 and since the previous one, with the counts of the most numerous
object types: a site that keeps growing under a steady load is a leak, one that grows and
stops is a warm-up (bench/churn.py sends the signals and reads the lines).

Nothing here opens a way in: the variable is read once from the daemon's own environment
(whoever can set it owns the daemon already), only the daemon's owner (or root) can signal
it, and the report goes to the daemon's own log.
"""

from __future__ import annotations

import gc
import logging
import tracemalloc
from collections import Counter
from collections.abc import Mapping

logger = logging.getLogger(__name__)

ENVIRONMENT_VARIABLE = "TAILHUB_TRACEMALLOC"
MAX_FRAMES = 50
# Lines per part of a report: enough to see past the top few, short enough to read.
TOP = 15
# Allocations of tracemalloc itself and of the import machinery say nothing about ours.
_IGNORED = (
    tracemalloc.Filter(inclusive=False, filename_pattern=tracemalloc.__file__),
    tracemalloc.Filter(inclusive=False, filename_pattern="<frozen importlib._bootstrap*>"),
    tracemalloc.Filter(inclusive=False, filename_pattern="<unknown>"),
)


class MemoryTrace:
    """Traces allocations from `start()`; `report()` logs what grew (see the module's doc)."""

    def __init__(self, frames: int) -> None:
        self.frames = frames
        self._first: tracemalloc.Snapshot | None = None
        self._previous: tracemalloc.Snapshot | None = None
        self._reports = 0

    @classmethod
    def from_environment(cls, environment: Mapping[str, str]) -> MemoryTrace | None:
        """The trace TAILHUB_TRACEMALLOC asks for, None when unset or empty; ValueError when
        it is not a whole number of frames from 1 to 50."""
        value = environment.get(ENVIRONMENT_VARIABLE, "").strip()
        if not value:
            return None
        if not value.isdigit() or not 1 <= int(value) <= MAX_FRAMES:
            raise ValueError(
                f"{ENVIRONMENT_VARIABLE}={value!r}: give how many frames to keep (1-{MAX_FRAMES})"
            )
        return cls(int(value))

    def start(self) -> None:
        tracemalloc.start(self.frames)
        logger.warning(
            "tracing memory allocations (%s=%d): slower; SIGUSR2 logs what grew",
            ENVIRONMENT_VARIABLE,
            self.frames,
        )

    def report(self) -> None:
        """Logs the sites that grew since the first and the previous report, and the most
        numerous object types (after a full collection: what is left is held)."""
        gc.collect()
        snapshot = tracemalloc.take_snapshot().filter_traces(_IGNORED)
        self._reports += 1
        traced, peak = tracemalloc.get_traced_memory()
        lines = [f"memory report {self._reports}: traced {traced:,} bytes (peak {peak:,})"]
        if self._first is None:
            self._first = snapshot
            lines.append("  (the first report is the baseline of the next ones)")
        else:
            assert self._previous is not None
            lines += _growth("since the first report", snapshot, self._first, self.frames)
            lines += _growth("since the previous report", snapshot, self._previous, self.frames)
        lines += _types()
        self._previous = snapshot
        logger.info("\n".join(lines))


def _growth(
    title: str, snapshot: tracemalloc.Snapshot, before: tracemalloc.Snapshot, frames: int
) -> list[str]:
    key = "traceback" if frames > 1 else "lineno"
    differences = snapshot.compare_to(before, key)
    total = sum(difference.size_diff for difference in differences)
    lines = [f"  grew {total:+,} bytes {title}; top sites:"]
    for difference in differences[:TOP]:
        where = " <- ".join(
            f"{frame.filename}:{frame.lineno}" for frame in reversed(difference.traceback)
        )
        lines.append(
            f"    {difference.size_diff:+,} B {difference.count_diff:+,} blocks "
            f"(now {difference.size:,} B): {where}"
        )
    return lines


def _types() -> list[str]:
    counts = Counter(type(thing).__qualname__ for thing in gc.get_objects())
    listed = ", ".join(f"{name} {count:,}" for name, count in counts.most_common(TOP))
    return [f"  objects by type: {listed}"]
