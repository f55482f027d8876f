"""Thousands of subscriptions at once are all served, and the ones that go leave nothing behind."""

from __future__ import annotations

import hashlib
import os
import time
from pathlib import Path

from follow_many import cancel_held, kill_all, results_of, start_followers, wait_ready
from helpers import DaemonProcess, run_cli, wait_until

MIB = 1024 * 1024


def _attach(daemon: DaemonProcess, path: Path) -> int:
    attached = run_cli(daemon.home, "jobs", "attach", "--file", str(path))
    assert attached.returncode == 0, attached.stderr
    return int(attached.stdout)


def test_two_thousand_subscriptions_opened_at_once_are_all_served(
    daemon: DaemonProcess, workdir: Path
) -> None:
    log = workdir / "service.log"
    log.write_bytes(b"".join(b"request %d served\n" % n for n in range(5000)))
    job_id = _attach(daemon, log)
    with daemon.client() as client:
        wait_until(lambda: client.get(job_id).log_size == log.stat().st_size, what="the fetch")
        started = time.monotonic()
        processes = [start_followers(daemon.paths.address, job_id, 1000) for _ in range(2)]
        try:
            # A follower process that fails outright ends early; its error then says why.
            wait_until(
                lambda: (
                    client.get(job_id).subscribers == 2000
                    or any(process.poll() is not None for process in processes)
                ),
                30,
                "2000 subscriptions",
            )
            connected = time.monotonic() - started
            with log.open("ab") as handle:
                handle.write(os.urandom(256 * 1024) + b"\nshutting down\n")
            finished = run_cli(daemon.home, "jobs", "finish", str(job_id), "--exit-code", "3")
            assert finished.returncode == 0, finished.stderr
            results = [result for process in processes for result in results_of(process, 120)]
        finally:
            kill_all(processes)
        elapsed = time.monotonic() - started
        assert client.get(job_id).subscribers == 0
    expected = log.read_bytes()
    assert len(results) == 2000
    assert [result.error for result in results if result.error] == []
    assert {(result.size, result.sha256) for result in results} == {
        (len(expected), hashlib.sha256(expected).hexdigest())
    }
    assert {(result.state, result.exit_code, result.finished) for result in results} == {
        ("JOB_STATE_FAILED", 3, True)
    }
    print(f"2000 subscriptions connected in {connected:.2f}s, all served in {elapsed:.2f}s")


def test_subscribers_that_disconnect_leave_no_descriptors_memory_or_counts_behind(
    daemon: DaemonProcess, workdir: Path
) -> None:
    log = workdir / "worker.log"
    log.write_bytes(os.urandom(64 * 1024) + b"\n")
    job_id = _attach(daemon, log)
    rounds = 8
    per_process = 500
    with daemon.client() as client:
        wait_until(lambda: client.get(job_id).log_size == log.stat().st_size, what="the fetch")
        baseline_fds = daemon.open_fds()
        rss_after_round = []
        for round_number in range(rounds):
            # One client process gives up on its streams; the other just dies (kill -9).
            cancelling = start_followers(daemon.paths.address, job_id, per_process, hold=True)
            dying = start_followers(daemon.paths.address, job_id, per_process, hold=True)
            try:
                wait_ready(cancelling)
                wait_ready(dying)
                assert client.get(job_id).subscribers == 2 * per_process
                assert daemon.open_fds() > baseline_fds
                with log.open("ab") as handle:
                    handle.write(b"round %d\n" % round_number)
                cancel_held(cancelling)
            finally:
                kill_all([cancelling, dying])
            wait_until(lambda: client.get(job_id).subscribers == 0, what="the subscribers to go")
            wait_until(
                lambda: daemon.open_fds() <= baseline_fds, what="descriptors back to baseline"
            )
            rss_after_round.append(daemon.rss_bytes())
        # The job carries on unharmed: one upstream, every byte still there.
        job = client.get(job_id)
        assert job.upstream_connections == 1
        assert job.log_size == log.stat().st_size
    # RSS wanders by some 30 MiB from round to round (allocator noise), but must not climb:
    # a leak lifts every later round above the early ones (20 KB a stream is 20 MiB a round).
    figures = ", ".join(f"{rss / MIB:.0f}" for rss in rss_after_round)
    early, late = rss_after_round[:3], rss_after_round[-3:]
    assert min(late) < max(early) + 16 * MIB, f"daemon RSS after each round (MiB): {figures}"
    print(f"daemon RSS after each round of 1000 subscriptions (MiB): {figures}")
