"""What the daemon counts as it runs that no job keeps: plain integers, read at scrape time.

Figures a job already holds (its state, subscribers, open upstream) are read from the jobs when
metrics are scraped; only what would be lost or go backwards that way is counted here: bytes
and connections since the daemon started (a removed job takes its own figures with it, and a
job's persisted connection count includes earlier daemons'), and subscriber lag. Plain `int`
additions and one `bisect` are all the hot paths pay; `metrics.py` turns them into Prometheus
families. Nothing here knows Prometheus.
"""

from __future__ import annotations

import math
from bisect import bisect_left
from dataclasses import dataclass, field

KIB = 1024
MIB = 1024 * KIB
GIB = 1024 * MIB
# Bytes a subscriber is behind the log's end when it is sent a chunk: 0 at the live edge, one
# chunk cap (256 KiB) for a follower catching up, more for one far behind (reading from disk).
LAG_BUCKETS: tuple[int, ...] = (
    0,
    4 * KIB,
    64 * KIB,
    256 * KIB,
    1 * MIB,
    4 * MIB,
    16 * MIB,
    64 * MIB,
    256 * MIB,
    1 * GIB,
)


class LagHistogram:
    """Counts of observed lags per bucket (`le` bounds, cumulated only when read) and their sum.

    `observe` costs one bisect and two additions: it runs once per chunk sent, on the
    fan-out's hot path (a Prometheus `Histogram.observe` costs ~10x more, with a lock).
    """

    def __init__(self, bounds: tuple[int, ...] = LAG_BUCKETS) -> None:
        self.bounds = bounds
        # One count per bound, plus one for values above the last (+Inf).
        self.counts = [0] * (len(bounds) + 1)
        self.total = 0

    def observe(self, lag: int) -> None:
        self.counts[bisect_left(self.bounds, lag)] += 1
        self.total += lag

    def cumulative(self) -> list[tuple[float, int]]:
        """(upper bound, observations at or below it) per bucket, ending with infinity."""
        buckets = []
        running = 0
        for bound, count in zip((*self.bounds, math.inf), self.counts, strict=True):
            running += count
            buckets.append((float(bound), running))
        return buckets


@dataclass
class DaemonCounts:
    """Totals since this daemon started (Prometheus counters: they only grow)."""

    # Bytes appended to logs (fetched from sources, published, or seen in a local job's file).
    bytes_fetched: int = 0
    # Bytes of chunks sent to subscribers.
    bytes_served: int = 0
    upstream_connections_opened: int = 0
    # Upstream connections opened for a job beyond its first (its persisted count > 1).
    reconnects: int = 0
    lag: LagHistogram = field(default_factory=LagHistogram)
    # Ended jobs the retention policy removed, and the bytes of their logs.
    retention_removed_jobs: int = 0
    retention_removed_bytes: int = 0
