"""The daemon-wide budget of bytes in flight to subscribers (budget.py), on one event loop."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import pytest

from tailhub.daemon.budget import SendBudget


def run(scenario: Callable[[], Awaitable[None]]) -> None:
    asyncio.run(asyncio.wait_for(scenario(), 10))


@pytest.mark.parametrize(
    ("limit", "min_grant", "floor"), [(100, 200, 10), (100, 50, 60), (100, 50, 0)]
)
def test_a_budget_that_cannot_hold_one_minimum_grant_is_refused(
    limit: int, min_grant: int, floor: int
) -> None:
    with pytest.raises(ValueError, match="at least one minimum grant"):
        SendBudget(limit, min_grant, floor=floor)


def test_asking_for_nothing_is_refused() -> None:
    async def scenario() -> None:
        with pytest.raises(ValueError, match="at least one byte"):
            await SendBudget(100, 50, floor=10).acquire(0)

    run(scenario)


def test_a_subscriber_gets_all_it_asks_for_while_the_budget_has_it() -> None:
    async def scenario() -> None:
        budget = SendBudget(1000, 100, floor=10)
        first = await budget.acquire(600)
        second = await budget.acquire(400)
        assert (first.size, second.size) == (600, 400)
        assert budget.in_flight == 1000
        figures = budget.figures()
        assert (figures.grants, figures.shrunk, figures.waits) == (2, 0, 0)

    run(scenario)


def test_a_tight_budget_waits_for_a_whole_grant_instead_of_shrinking_it() -> None:
    """Under pressure fewer, larger messages: what is free is not handed out in pieces."""

    async def scenario() -> None:
        budget = SendBudget(1000, 100, floor=10)
        held = await budget.acquire(800)
        waiting = asyncio.create_task(budget.acquire(500))
        await asyncio.sleep(0.01)
        assert not waiting.done()
        budget.release(held)
        assert (await asyncio.wait_for(waiting, 5)).size == 500
        assert budget.figures().shrunk == 0

    run(scenario)


def test_a_waiter_is_granted_what_it_came_to_be_owed_while_it_waited() -> None:
    async def scenario() -> None:
        budget = SendBudget(1000, 100, floor=10)
        held = await budget.acquire(1000)
        owed = [200]
        waiting = asyncio.create_task(budget.acquire(200, owed=lambda: owed[0]))
        await asyncio.sleep(0.01)
        owed[0] = 600  # the log grew meanwhile
        budget.release(held)
        assert (await asyncio.wait_for(waiting, 5)).size == 600

    run(scenario)


def test_below_the_minimum_a_subscriber_waits_until_bytes_are_given_back() -> None:
    async def scenario() -> None:
        budget = SendBudget(1000, 100, floor=10)
        held = await budget.acquire(950)
        waiting = asyncio.create_task(budget.acquire(300))
        await asyncio.sleep(0.01)
        assert not waiting.done()
        budget.release(held)
        grant = await waiting
        assert grant.size == 300
        assert budget.in_flight == 300
        assert budget.figures().waits == 1

    run(scenario)


def test_waiters_are_served_first_come_first_served() -> None:
    async def scenario() -> None:
        budget = SendBudget(1000, 100, floor=10)
        held = await budget.acquire(1000)
        order: list[tuple[str, int]] = []
        grants = []

        async def wait(name: str, want: int) -> None:
            grants.append(await budget.acquire(want))
            order.append((name, grants[-1].size))

        first = asyncio.create_task(wait("first", 700))
        await asyncio.sleep(0.01)
        second = asyncio.create_task(wait("second", 700))
        await asyncio.sleep(0.01)
        # A small ask that would fit once bytes come free does not jump the queue either.
        late = asyncio.create_task(wait("late", 100))
        await asyncio.sleep(0.01)
        assert order == []
        budget.release(held)
        await asyncio.wait_for(first, 5)
        assert order == [("first", 700)]
        budget.release(grants[0])
        await asyncio.wait_for(asyncio.gather(second, late), 5)
        assert order == [("first", 700), ("second", 700), ("late", 100)]

    run(scenario)


def test_shrinking_a_grant_gives_the_unused_bytes_to_the_next_waiter() -> None:
    async def scenario() -> None:
        budget = SendBudget(1000, 100, floor=10)
        grant = await budget.acquire(1000)
        waiting = asyncio.create_task(budget.acquire(500))
        await asyncio.sleep(0.01)
        budget.shrink(grant, 400)  # the chunk needed only 400 bytes
        assert grant.size == 400
        assert (await waiting).size == 500
        assert budget.in_flight == 900

    run(scenario)


def test_a_follower_cancelled_while_waiting_for_budget_is_just_cancelled() -> None:
    """A follower gone (Ctrl-C) while it waited for budget, just as budget came free: its
    stream ends cancelled, not with an internal error and a traceback in the daemon's log."""

    async def scenario() -> None:
        budget = SendBudget(100, 50, floor=10)
        held = await budget.acquire(100)
        waiting = asyncio.create_task(budget.acquire(50))
        await asyncio.sleep(0)  # it queues
        waiting.cancel()
        budget.release(held)  # wakes the queue before the cancelled waiter runs again
        with pytest.raises(asyncio.CancelledError):
            await waiting
        assert budget.in_flight == 0
        assert (await budget.acquire(100)).size == 100

    run(scenario)


def test_a_cancelled_waiter_at_the_head_of_the_queue_lets_the_next_one_through() -> None:
    async def scenario() -> None:
        budget = SendBudget(1000, 100, floor=10)
        held = await budget.acquire(950)
        head = asyncio.create_task(budget.acquire(900))  # waits: 50 free, below the minimum
        await asyncio.sleep(0.01)
        behind = asyncio.create_task(budget.acquire(50))  # would fit, but queues behind it
        await asyncio.sleep(0.01)
        assert not behind.done()
        head.cancel()
        assert (await asyncio.wait_for(behind, 5)).size == 50
        budget.release(held)
        assert budget.in_flight == 50

    run(scenario)


def test_readers_that_stopped_reading_cannot_stop_everyone_else() -> None:
    """Grants held past the patience freeze the budget: a newcomer gets a floor beyond it."""

    async def scenario() -> None:
        budget = SendBudget(1000, 100, floor=10, patience=0.05)
        await budget.acquire(1000)  # never given back: a client that stopped reading
        grant = await asyncio.wait_for(budget.acquire(500), 5)
        assert grant.size == 10
        assert grant.overdraft
        assert budget.figures().overdrafts == 1
        # Held to the budget plus one floor per such stream.
        assert budget.figures().peak_in_flight == 1010
        budget.release(grant)
        assert budget.in_flight == 1000

    run(scenario)


def test_slow_readers_that_still_read_never_overdraw_the_budget() -> None:
    async def scenario() -> None:
        budget = SendBudget(1000, 100, floor=10, patience=0.2)

        async def slow_reader() -> None:
            for _ in range(8):
                grant = await budget.acquire(600)
                await asyncio.sleep(0.02)
                budget.release(grant)

        await asyncio.gather(*(slow_reader() for _ in range(4)))
        figures = budget.figures()
        assert figures.overdrafts == 0
        assert figures.peak_in_flight <= 1000
        assert figures.waits > 0
        assert budget.in_flight == 0

    run(scenario)


def test_a_released_grant_is_empty_and_releasing_it_again_gives_nothing_back() -> None:
    async def scenario() -> None:
        budget = SendBudget(1000, 100, floor=10)
        first = await budget.acquire(300)
        await budget.acquire(200)
        budget.release(first)
        budget.release(first)
        assert first.size == 0
        assert budget.in_flight == 200

    run(scenario)


def test_a_client_holding_the_whole_budget_does_not_make_another_client_wait() -> None:
    """Streams of one token that stopped reading hold its share, not the other token's."""

    async def scenario() -> None:
        budget = SendBudget(1000, 100, floor=10)
        await budget.acquire(1000, "unread")  # never given back
        grant = await asyncio.wait_for(budget.acquire(300, "reader"), 5)
        assert (grant.size, grant.overdraft) == (300, False)
        assert budget.figures().waits == 0
        # Within its fair part (half of the budget with two clients), not beyond.
        await budget.acquire(200, "reader")
        beyond = asyncio.create_task(budget.acquire(100, "reader"))
        await asyncio.sleep(0.01)
        assert not beyond.done()
        budget.release(grant)
        assert (await asyncio.wait_for(beyond, 5)).size == 100
        assert budget.in_flight == 1300

    run(scenario)


def test_waiting_clients_take_turns() -> None:
    async def scenario() -> None:
        budget = SendBudget(1000, 100, floor=10)
        held = await budget.acquire(1000, "a")
        order: list[str] = []

        async def wait(name: str) -> None:
            grant = await budget.acquire(1000, name)
            order.append(name)
            budget.release(grant)

        tasks = [asyncio.create_task(wait(name)) for name in ("a", "a", "a", "b")]
        await asyncio.sleep(0.01)
        budget.release(held)
        await asyncio.wait_for(asyncio.gather(*tasks), 5)
        assert order[:2] == ["a", "b"]

    run(scenario)


def test_waiters_near_the_live_edge_go_before_deep_catch_ups() -> None:
    async def scenario() -> None:
        budget = SendBudget(1000, 100, floor=10)
        held = await budget.acquire(1000)
        order: list[str] = []

        async def wait(name: str, *, live: bool) -> None:
            grant = await budget.acquire(1000, live=live)
            order.append(name)
            budget.release(grant)

        tasks = [asyncio.create_task(wait(f"behind{i}", live=False)) for i in range(2)]
        await asyncio.sleep(0.01)
        tasks += [asyncio.create_task(wait(f"live{i}", live=True)) for i in range(5)]
        await asyncio.sleep(0.01)
        budget.release(held)
        await asyncio.wait_for(asyncio.gather(*tasks), 5)
        # Three live ones, then a deep catch-up's turn: none waits for ever.
        assert order == ["live0", "live1", "live2", "behind0", "live3", "live4", "behind1"]

    run(scenario)
