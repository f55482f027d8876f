"""A job's reconnect schedule (reconnects.py): delays that double up to a cap, what followers
are told, and when a failing upstream is given up. Time is a clock the test turns."""

from __future__ import annotations

import pytest

from tailhub.daemon.reconnects import GiveUp, ReconnectPolicy, Reconnects, Retry


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def schedule(policy: ReconnectPolicy, clock: Clock, jitter: float = 1.0) -> Reconnects:
    return Reconnects(policy, clock=clock, jitter=lambda: jitter)


def retry(decision: Retry | GiveUp) -> Retry:
    assert isinstance(decision, Retry), decision
    return decision


def test_delays_double_up_to_the_cap() -> None:
    clock = Clock()
    reconnects = schedule(ReconnectPolicy(0.2, 1.0, give_up_after=None), clock)
    delays = [retry(reconnects.failed("refused", 255)).delay for _ in range(6)]
    assert delays == pytest.approx([0.2, 0.4, 0.8, 1.0, 1.0, 1.0])


def test_jitter_spreads_jobs_that_failed_together_over_half_to_all_of_the_delay() -> None:
    low = schedule(ReconnectPolicy(1.0, 8.0), Clock(), jitter=0.0)
    high = schedule(ReconnectPolicy(1.0, 8.0), Clock(), jitter=1.0)
    assert retry(low.failed("x", 1)).delay == pytest.approx(0.5)
    assert retry(high.failed("x", 1)).delay == pytest.approx(1.0)


def test_progress_starts_the_schedule_afresh() -> None:
    reconnects = schedule(ReconnectPolicy(0.2, 10.0), Clock())
    for _ in range(4):
        reconnects.failed("x", 1)
    reconnects.progressed()
    assert retry(reconnects.failed("x", 1)).delay == pytest.approx(0.2)


def test_followers_are_told_of_a_kind_of_failure_at_the_1st_2nd_4th_8th_time() -> None:
    reconnects = schedule(ReconnectPolicy(0.2, 0.2, give_up_after=None), Clock())
    told = [retry(reconnects.failed(f"exit 255 at {n}", 255)).event for n in range(1, 10)]
    assert [n for n, event in enumerate(told, 1) if event] == [1, 2, 4, 8]
    assert told[0] == "upstream connection lost (exit 255 at 1); reconnecting in 0.2s"
    assert told[7] == (
        "upstream connection lost (exit 255 at 8) 8 times in a row; reconnecting in 0.2s"
    )
    # Another kind of failure is told at once.
    assert retry(reconnects.failed("no route", 1)).event is not None


def test_an_upstream_failing_for_longer_than_the_limit_is_given_up() -> None:
    clock = Clock()
    reconnects = schedule(ReconnectPolicy(1.0, 4.0, give_up_after=10.0), clock)
    decision: Retry | GiveUp = reconnects.failed("refused", 255)
    while isinstance(decision, Retry):
        assert clock.now + decision.delay <= 10.0  # the last try comes at the deadline
        clock.now += decision.delay
        decision = reconnects.failed("refused", 255)
    assert clock.now == pytest.approx(10.0)
    assert decision.reason.startswith("upstream failed ")
    assert "in a row over 10s (tailhubd --give-up-after 10s); last: refused" in decision.reason


def test_healthy_ends_never_count_towards_giving_up_but_still_slow_down() -> None:
    clock = Clock()
    reconnects = schedule(ReconnectPolicy(1.0, 4.0, give_up_after=5.0), clock)
    delays = []
    for _ in range(10):
        decision = retry(reconnects.failed("not finished", 0, healthy=True))
        delays.append(decision.delay)
        clock.now += decision.delay
    assert delays[-1] == pytest.approx(4.0)


@pytest.mark.parametrize(
    ("initial", "maximum", "give_up"), [(0.0, 1.0, None), (2.0, 1.0, None), (1.0, 1.0, 0.0)]
)
def test_a_policy_that_cannot_work_is_refused(
    initial: float, maximum: float, give_up: float | None
) -> None:
    with pytest.raises(ValueError, match="reconnect delays|give-up-after"):
        ReconnectPolicy(initial, maximum, give_up)
