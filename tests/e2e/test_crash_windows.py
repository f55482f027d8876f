"""A daemon killed between two writes that belong together recovers exactly.

The daemon kills itself (SIGKILL) at a named point when the test sets TAILHUB_CRASH_AT; the
test then starts it again without it and checks what a user would see.
"""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from helpers import DaemonProcess, wait_until

from tailhub.client import JobState, LogChunk


def _crashed(daemon: DaemonProcess) -> bool:
    return daemon.process is not None and daemon.process.poll() is not None


@pytest.mark.parametrize("point", ["before-spawn", "after-spawn"])
def test_a_daemon_killed_while_starting_a_job_runs_it_exactly_once(
    start_daemon: Callable[..., DaemonProcess],
    workdir: Path,
    monkeypatch: pytest.MonkeyPatch,
    point: str,
) -> None:
    counter = workdir / "runs"
    monkeypatch.setenv("TAILHUB_CRASH_AT", point)
    daemon = start_daemon()
    # The launch outlives the crash: its client calls the restarted daemon again with the
    # same launch key, and gets the one job back.
    launched: list[int] = []
    with daemon.client() as client, ThreadPoolExecutor(1) as pool:
        launch = pool.submit(
            lambda: launched.append(client.launch(f"echo ran >> {counter}; echo hello").id)
        )
        wait_until(lambda: _crashed(daemon), what=f"the daemon to kill itself {point}")
        monkeypatch.delenv("TAILHUB_CRASH_AT")
        daemon = start_daemon()
        launch.result(timeout=120)

    with daemon.client() as client:
        wait_until(lambda: client.get(1).sealed, what="the job to end")
        job = client.get(1)
        received = b"".join(item.data for item in client.follow(1) if isinstance(item, LogChunk))
        jobs = client.list()
    assert launched == [1]
    assert [listed.id for listed in jobs] == [1]
    assert job.state is JobState.SUCCEEDED, job.reason
    assert counter.read_text() == "ran\n"
    assert received == b"hello\n"


def test_a_daemon_killed_between_a_stderr_append_and_its_count_repeats_and_skips_nothing(
    start_daemon: Callable[..., DaemonProcess],
    workdir: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # First run: one line on stderr, then it waits (the daemon dies meanwhile). The rerun
    # after the restart replays stdout from the start, as `ssh host tail -n +1 -f` would.
    marker = workdir / "first-run-done"
    script = (
        f"if [ -e {marker} ]; then printf 'one\\ntwo\\n'; exit 0; fi; "
        f"touch {marker}; printf 'ERR\\n' >&2; exec sleep 60"
    )
    monkeypatch.setenv("TAILHUB_CRASH_AT", "after-stderr-append")
    daemon = start_daemon()
    with daemon.client() as client:
        job = client.attach_command([script], shell=True)
    wait_until(lambda: _crashed(daemon), what="the daemon to kill itself after the append")
    monkeypatch.delenv("TAILHUB_CRASH_AT")

    daemon = start_daemon()
    with daemon.client() as client:
        received = b"".join(
            item.data for item in client.follow(job.id) if isinstance(item, LogChunk)
        )
        assert client.get(job.id).state is JobState.SUCCEEDED
    assert received == b"ERR\none\ntwo\n"
