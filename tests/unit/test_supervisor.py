"""The supervisor of the essential tasks (supervisor.py) and its fault (faults.py), in-process.

The daemon's side (health NOT_SERVING, the stop, exit 8) is tests/e2e/test_supervision.py.
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import Awaitable, Callable

import pytest

from tailhub.daemon import faults
from tailhub.daemon.errors import EssentialTaskDied, InjectedFault
from tailhub.daemon.supervisor import Supervisor


def run(scenario: Callable[[], Awaitable[None]]) -> None:
    asyncio.run(asyncio.wait_for(scenario(), 10))


async def forever() -> None:
    await asyncio.Event().wait()


async def crash() -> None:
    await asyncio.sleep(0)
    raise ValueError("broken")


async def give_up() -> None:
    await asyncio.sleep(0)


def watched(supervisor: Supervisor) -> tuple[list[EssentialTaskDied], asyncio.Event]:
    """The failures the supervisor reports, and an event set at the first."""
    seen: list[EssentialTaskDied] = []
    told = asyncio.Event()

    def handler(failure: EssentialTaskDied) -> None:
        seen.append(failure)
        told.set()

    supervisor.on_failure(handler)
    return seen, told


def test_a_task_that_raises_is_the_failure_told_once(caplog: pytest.LogCaptureFixture) -> None:
    async def scenario() -> None:
        supervisor = Supervisor()
        seen, told = watched(supervisor)
        supervisor.spawn(forever(), name=faults.HEARTBEAT)
        supervisor.spawn(crash(), name=faults.MIRROR)
        supervisor.spawn(crash(), name=faults.KEEP_ALIVE)
        await told.wait()
        for _ in range(3):  # (the second crash reported too, never handled again)
            await asyncio.sleep(0)
        assert len(seen) == 1
        assert seen[0] is supervisor.failure
        assert seen[0].task_name == faults.MIRROR
        assert isinstance(seen[0].error, ValueError)
        assert (
            str(seen[0])
            == "essential task 'mirror' crashed: ValueError('broken'); the daemon stops"
        )
        await supervisor.aclose()
        assert len(supervisor) == 0

    with caplog.at_level(logging.ERROR, logger="tailhub.daemon.supervisor"):
        run(scenario)
    died = [record for record in caplog.records if "crashed" in record.getMessage()]
    assert [record.levelno for record in died] == [logging.ERROR, logging.ERROR]
    assert died[0].exc_info is not None  # the traceback, with the exception


def test_a_task_that_returns_is_a_failure_too() -> None:
    async def scenario() -> None:
        supervisor = Supervisor()
        seen, told = watched(supervisor)
        supervisor.spawn(give_up(), name=faults.RECORD_SYNC)
        await told.wait()
        assert seen[0].error is None
        assert "returned" in str(seen[0])

    run(scenario)


def test_tasks_cancelled_by_their_owner_or_ending_as_the_daemon_stops_are_no_failure() -> None:
    async def scenario() -> None:
        supervisor = Supervisor()
        seen, _ = watched(supervisor)
        mine = supervisor.spawn(forever(), name=faults.TAKE_OVER)
        supervisor.spawn(forever(), name=faults.HEALTH)
        await supervisor.cancel([mine])
        assert mine.cancelled()
        supervisor.stop()
        supervisor.spawn(crash(), name=faults.RETENTION)  # dies while the daemon stops
        await asyncio.sleep(0.01)
        await supervisor.aclose()
        assert seen == []
        assert supervisor.failure is None

    run(scenario)


def test_a_handler_set_after_the_death_is_told_at_once() -> None:
    async def scenario() -> None:
        supervisor = Supervisor()
        task = supervisor.spawn(crash(), name=faults.HEARTBEAT)
        await asyncio.wait([task])
        await asyncio.sleep(0)
        seen, _ = watched(supervisor)
        assert [failure.task_name for failure in seen] == [faults.HEARTBEAT]

    run(scenario)


def test_only_the_essential_tasks_are_supervised() -> None:
    async def scenario() -> None:
        with pytest.raises(ValueError, match="not an essential task"):
            Supervisor().spawn(forever(), name="fetch-1")

    run(scenario)


def test_a_task_named_in_the_fault_raises_once_the_daemon_serves() -> None:
    async def scenario() -> None:
        supervisor = Supervisor({faults.HEARTBEAT: 0.0})
        seen, told = watched(supervisor)
        supervisor.spawn(forever(), name=faults.HEARTBEAT)
        supervisor.spawn(forever(), name=faults.RETENTION)
        await asyncio.sleep(0.01)
        assert seen == []  # not before it serves
        supervisor.serving()
        await told.wait()
        assert seen[0].task_name == faults.HEARTBEAT
        assert isinstance(seen[0].error, InjectedFault)
        assert str(seen[0].error) == "TAILHUB_FAIL_LOOP=heartbeat made it fail"
        await supervisor.aclose()

    run(scenario)


@pytest.mark.parametrize(
    ("value", "parsed"),
    [
        ("", ()),
        ("keep-alive", (("keep-alive", 0.0),)),
        ("mirror:2.5,heartbeat", (("heartbeat", 0.0), ("mirror", 2.5))),
    ],
)
def test_the_fault_is_read_from_the_environment(
    value: str, parsed: tuple[tuple[str, float], ...]
) -> None:
    assert faults.failing_loops_from({faults.FAIL_LOOP_ENV: value}) == parsed
    assert faults.failing_loops_from({}) == ()


@pytest.mark.parametrize(
    ("value", "said"),
    [
        ("fetch-1", "unknown task 'fetch-1'"),
        ("heartbeat:soon", "NAME[:SECONDS]"),
        ("heartbeat:-1", "SECONDS in [0, 3600]"),
        ("heartbeat:nan", "SECONDS in [0, 3600]"),
    ],
)
def test_a_bad_fault_is_refused(value: str, said: str) -> None:
    with pytest.raises(ValueError, match=rf"^TAILHUB_FAIL_LOOP: .*{re.escape(said)}"):
        faults.failing_loops_from({faults.FAIL_LOOP_ENV: value})
