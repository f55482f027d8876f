"""A follower across the loss of its daemon (issue 16, item 19 and a new user's finding): it
says so at once and when it is back, leaves nothing of its calls to the garbage collector
(whose finalizers deadlocked a CLI at exit), and never waits past its window without a word."""

from __future__ import annotations

import gc
import time
from collections.abc import Callable, Iterator

import pytest
from helpers import BackgroundCli, DaemonProcess, run_cli, wait_until

from tailhub.client import Client, DaemonUnreachable, LogChunk, LogEnd, LogItem


def _attach_push(daemon: DaemonProcess) -> int:
    with daemon.client() as client:
        return client.attach_push().id


def _publish(daemon: DaemonProcess, job_id: int, data: bytes) -> None:
    with daemon.client() as client:
        client.publish(job_id, data)


def _read_until(items: Iterator[LogItem], size: int) -> bytes:
    """Reads `items` until `size` bytes (or the end) have come."""
    data = b""
    while len(data) < size:
        item = next(items)
        if isinstance(item, LogChunk):
            data += item.data
        if isinstance(item, LogEnd):
            break
    return data


@pytest.fixture
def no_automatic_collection() -> Iterator[None]:
    """Nothing is collected unless the test asks: what a follow leaves in cycles stays there."""
    gc.collect()
    gc.disable()
    try:
        yield
    finally:
        gc.enable()


def _calls_in_cycles() -> list[object]:
    """gRPC call objects that only a collection would free (found by collecting, kept)."""
    gc.set_debug(gc.DEBUG_SAVEALL)
    try:
        gc.collect()
        # grpc's _MultiThreadedRendezvous (or _SingleThreadedRendezvous): the call objects.
        found = [thing for thing in gc.garbage if type(thing).__name__.endswith("Rendezvous")]
    finally:
        gc.set_debug(0)
        gc.garbage.clear()
    return found


@pytest.mark.usefixtures("no_automatic_collection")
def test_a_follow_across_a_daemon_crash_leaves_no_call_to_the_garbage_collector(
    daemon: DaemonProcess,
) -> None:
    job_id = _attach_push(daemon)
    _publish(daemon, job_id, b"before the crash\n")
    with Client.connect(daemon.paths, autostart=False) as client:
        items = client.follow(job_id)
        assert _read_until(items, 17) == b"before the crash\n"
        daemon.kill()
        daemon.start()
        _publish(daemon, job_id, b"after it\n")
        assert _read_until(items, 9) == b"after it\n"
        with daemon.client() as other:
            other.finish(job_id)
        assert isinstance(next(items), LogEnd)
        assert list(items) == []  # the follow has returned: its last call is done
        # The stream the crash broke was raised as its own error: left in a cycle, its
        # finalizer ran whenever the collector did (at exit, after gRPC's thread had died
        # holding the call's lock: the CLI hung). Each call is freed where it ends now.
        assert _calls_in_cycles() == []


def test_a_follower_says_when_it_loses_its_daemon_and_when_it_is_back(
    daemon: DaemonProcess, background_cli: Callable[..., BackgroundCli]
) -> None:
    job_id = _attach_push(daemon)
    first = b"".join(b"line %d\n" % i for i in range(200))
    _publish(daemon, job_id, first)
    follower = background_cli("jobs", "logs", "-f", str(job_id))
    follower.wait_for_stdout(first)
    address = daemon.paths.address

    daemon.kill()
    lost = f"tailhub: lost the daemon on {address}; reconnecting for up to 60 s (the job goes on)"
    wait_until(lambda: lost in follower.stderr, 10, "the line saying the daemon was lost")
    daemon.start()
    # Retries while it was away and the bytes after it: still one line each.
    second = b"after the restart\n"
    _publish(daemon, job_id, second)
    follower.wait_for_stdout(first + second)
    back = f"tailhub: reconnected to {address}; resuming at byte {len(first)}"
    wait_until(lambda: back in follower.stderr, 10, "the line saying it is back")
    finished = run_cli(daemon.home, "jobs", "finish", str(job_id))
    assert finished.returncode == 0, finished.stderr

    assert follower.wait() == 0, follower.stderr
    assert follower.stdout == first + second  # the messages are on stderr only
    lines = follower.stderr.splitlines()
    assert lines.count(lost) == 1, follower.stderr
    assert lines.count(back) == 1, follower.stderr
    assert lines.index(lost) < lines.index(back)


def test_a_follow_whose_daemon_never_comes_back_gives_up_at_the_end_of_its_window(
    daemon: DaemonProcess,
) -> None:
    job_id = _attach_push(daemon)
    _publish(daemon, job_id, b"0123456789")
    told: list[str] = []
    with Client(daemon.paths, on_wait=told.append) as client:
        items = client.follow(job_id, reconnect_timeout=2.0)
        assert _read_until(items, 10) == b"0123456789"
        daemon.kill()
        lost_at = time.monotonic()
        with pytest.raises(DaemonUnreachable) as raised:
            _read_until(items, 1)
        waited = time.monotonic() - lost_at
    assert 2.0 <= waited < 4.0, waited
    address = daemon.paths.address
    assert str(raised.value) == (
        f"lost the daemon on {address} and none came back within 2 s; "
        f"job {job_id} may still be running (read up to byte 10)"
    )
    assert told == [f"lost the daemon on {address}; reconnecting for up to 2 s (the job goes on)"]


def test_the_cli_follower_of_a_daemon_gone_for_good_exits_104_after_60_s_saying_why(
    daemon: DaemonProcess, background_cli: Callable[..., BackgroundCli]
) -> None:
    job_id = _attach_push(daemon)
    _publish(daemon, job_id, b"the only line\n")
    follower = background_cli("jobs", "logs", "-f", str(job_id))
    follower.wait_for_stdout(b"the only line\n")
    daemon.kill()
    lost_at = time.monotonic()

    assert follower.wait(90) == 104
    waited = time.monotonic() - lost_at
    assert 60 <= waited < 66, waited
    assert follower.stdout == b"the only line\n"
    last = follower.stderr.splitlines()[-1]
    assert last == (
        f"tailhub: lost the daemon on {daemon.paths.address} and none came back within 60 s; "
        f"job {job_id} may still be running (read up to byte 14); follow it again once it "
        f"is back: tailhub jobs logs -f {job_id}"
    )
