"""Limits on a job's source events (events.py): how many are kept, how fast, how long each;
what goes over is counted and said once. Time is a clock the test turns."""

from __future__ import annotations

import pytest

from tailhub.daemon.events import EventLimiter, EventLimits, clip, dropped_message


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_events_within_the_burst_are_all_kept_as_they_are() -> None:
    limiter = EventLimiter(EventLimits(burst=5), clock=Clock())
    kept = [limiter.offer(f"event {number}") for number in range(5)]
    assert kept == [[f"event {number}"] for number in range(5)]
    assert limiter.flush(final=True) is None


def test_a_flood_is_dropped_and_counted_then_said_once_when_the_rate_allows() -> None:
    clock = Clock()
    limiter = EventLimiter(EventLimits(rate=10.0, burst=2), clock=clock)
    assert limiter.offer("a") == ["a"]
    assert limiter.offer("b") == ["b"]
    assert [limiter.offer(f"flood {n}") for n in range(7)] == [[]] * 7
    assert limiter.flush(final=False) is None  # no token yet
    clock.now += 0.1  # one token back
    assert limiter.flush(final=False) == "7 events dropped (rate or count limit)"
    assert limiter.dropped == 0


def test_the_next_kept_event_comes_after_the_count_of_those_dropped_before_it() -> None:
    clock = Clock()
    limiter = EventLimiter(EventLimits(rate=10.0, burst=1), clock=clock)
    assert limiter.offer("first") == ["first"]
    assert limiter.offer("lost") == []
    clock.now += 0.1
    assert limiter.offer("later") == [dropped_message(1), "later"]


def test_a_job_keeps_at_most_its_limit_and_at_its_end_says_how_many_it_lost() -> None:
    limiter = EventLimiter(EventLimits(max_events=4, rate=1e6, burst=1000), clock=Clock())
    kept = [message for n in range(10) for message in limiter.offer(f"e{n}")]
    assert kept == ["e0", "e1", "e2"]  # one slot held back for the count
    assert limiter.flush(final=False) is None
    assert limiter.flush(final=True) == "7 events dropped (rate or count limit)"
    assert limiter.kept == 4


def test_a_restarted_daemon_counts_the_events_a_job_kept_before() -> None:
    limiter = EventLimiter(EventLimits(max_events=4), kept=3, clock=Clock())
    assert limiter.offer("one more") == []
    assert limiter.flush(final=True) == dropped_message(1)


def test_a_long_message_is_cut_to_its_limit_on_a_character_boundary_and_marked() -> None:
    assert clip("short", 16) == "short"
    cut = clip("é" * 40, 16)
    assert cut.endswith("…")
    assert len(cut.encode()) <= 16
    assert set(cut[:-1]) == {"é"}
    limiter = EventLimiter(EventLimits(max_message_bytes=16), clock=Clock())
    assert limiter.offer("x" * 100) == ["x" * 13 + "…"]


def test_a_dropped_count_says_event_or_events() -> None:
    assert dropped_message(1) == "1 event dropped (rate or count limit)"
    assert dropped_message(2) == "2 events dropped (rate or count limit)"


@pytest.mark.parametrize(
    "limits",
    [
        {"max_events": 1},
        {"rate": 0.0},
        {"burst": 0},
        {"max_message_bytes": 15},
        {"max_events": 10_000, "max_message_bytes": 1024},
    ],
)
def test_limits_that_cannot_work_are_refused(limits: dict[str, float]) -> None:
    with pytest.raises(ValueError, match="event limits"):
        EventLimits(**limits)  # type: ignore[arg-type]
