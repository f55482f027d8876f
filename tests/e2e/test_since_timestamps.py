"""`jobs logs --since` and `--timestamps`: when lines reached the daemon, kept across restarts.

Lines need distinct arrival times, so a test lets real time pass between two batches: it
waits (polling a deadline, not sleeping blindly) until the clock is past the first batch by
more than the index's resolution.
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import pytest
from disk_helpers import fill_disk
from helpers import BackgroundCli, DaemonProcess, run_cli, wait_until

from tailhub.client import LogEnd, exit_codes
from tailhub.client._timestamps import parse_since
from tailhub.daemon.timeindex import RESOLUTION

FIRST = b"a1\na2\npar"  # ends inside a line finished by the second batch
SECOND = b"tial\nb1\nb2\n"


@dataclass
class TwoBatches:
    job_id: int
    # After the first batch was stored and before the second one was sent.
    boundary: float


def _let_time_pass(after: float) -> None:
    wait_until(lambda: time.time() > after + 3 * RESOLUTION, 5, "time to pass")


def _two_batches(daemon: DaemonProcess, *, finish: bool = True) -> TwoBatches:
    with daemon.client() as client:
        job_id = client.attach_push("timed").id
        client.publish(job_id, FIRST)
        boundary = time.time()
        _let_time_pass(boundary)
        client.publish(job_id, SECOND)
        if finish:
            client.finish(job_id, 0)
    return TwoBatches(job_id, boundary)


def _rfc3339(when: float) -> str:
    return datetime.fromtimestamp(when, timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _stamped(output: bytes) -> list[tuple[float, bytes]]:
    """(time, line) for each line `--timestamps` printed; fails on a line without a stamp."""
    lines = []
    for line in output.splitlines(keepends=True):
        stamp, _, text = line.partition(b" ")
        moment = datetime.strptime(stamp.decode(), "%Y-%m-%dT%H:%M:%S.%fZ")
        lines.append((moment.replace(tzinfo=timezone.utc).timestamp(), text))
    return lines


def _logs(daemon: DaemonProcess, job_id: int, *args: str, running: bool = False) -> bytes:
    shown = run_cli(daemon.home, "jobs", "logs", str(job_id), "--no-follow", *args)
    assert shown.returncode == (exit_codes.NOT_FINISHED if running else 0), shown.stderr
    return shown.stdout


def test_since_a_time_between_two_batches_shows_only_the_second(daemon: DaemonProcess) -> None:
    batches = _two_batches(daemon)
    job_id = batches.job_id

    # A line counts by when its first byte came: "partial" began in the first batch.
    assert _logs(daemon, job_id, "--since", _rfc3339(batches.boundary)) == b"b1\nb2\n"
    # The same moment as a local time without an offset, and with an explicit one.
    local = datetime.fromtimestamp(batches.boundary).isoformat()
    assert _logs(daemon, job_id, "--since", local) == b"b1\nb2\n"
    utc = datetime.fromtimestamp(batches.boundary, timezone.utc).isoformat()
    assert _logs(daemon, job_id, "--since", utc) == b"b1\nb2\n"
    # Durations count back from now.
    assert _logs(daemon, job_id, "--since", "1h") == FIRST + SECOND
    assert _logs(daemon, job_id, "--since", "0s") == b""
    assert _logs(daemon, job_id, "--since", _rfc3339(batches.boundary - 3600)) == FIRST + SECOND


def test_timestamps_stamp_whole_lines_with_when_their_first_byte_came(
    daemon: DaemonProcess,
) -> None:
    before = time.time()
    batches = _two_batches(daemon)
    after = time.time()

    lines = _stamped(_logs(daemon, batches.job_id, "--timestamps"))

    assert [text for _, text in lines] == [b"a1\n", b"a2\n", b"partial\n", b"b1\n", b"b2\n"]
    times = [when for when, _ in lines]
    assert times == sorted(times)
    assert all(before - 1e-6 <= when <= batches.boundary for when in times[:3])
    assert all(batches.boundary < when <= after for when in times[3:])
    # With --since, the stamps say the lines came at or after it.
    since = _stamped(
        _logs(daemon, batches.job_id, "--timestamps", "--since", _rfc3339(batches.boundary))
    )
    assert since == lines[3:]


@pytest.mark.parametrize("stop", ["sigterm", "kill-9"])
def test_times_survive_a_daemon_restart(
    start_daemon: Callable[..., DaemonProcess], stop: str
) -> None:
    daemon = start_daemon()
    batches = _two_batches(daemon, finish=False)
    # The job still runs: --no-follow stops at the end of what is there.
    stamped_before = _logs(daemon, batches.job_id, "--timestamps", running=True)
    assert len(_stamped(stamped_before)) == 5

    if stop == "sigterm":
        daemon.stop()
    else:
        daemon.kill()
    daemon.start()
    restarted = time.time()
    with daemon.client() as client:
        client.publish(batches.job_id, b"c1\n")
        client.finish(batches.job_id, 0)

    stamped_after = _logs(daemon, batches.job_id, "--timestamps")
    assert stamped_after.startswith(stamped_before)  # the same times as before
    lines = _stamped(stamped_after)
    assert [text for _, text in lines][5:] == [b"c1\n"]
    assert lines[5][0] >= restarted
    since = _logs(daemon, batches.job_id, "--since", _rfc3339(batches.boundary))
    assert since == b"b1\nb2\nc1\n"


def test_a_follower_with_timestamps_resumes_across_a_restart(
    daemon: DaemonProcess, background_cli: Callable[..., BackgroundCli]
) -> None:
    with daemon.client() as client:
        job_id = client.attach_push("live").id
    follower = background_cli("jobs", "logs", str(job_id), "--follow", "--timestamps")
    with daemon.client() as client:
        client.publish(job_id, b"one\n")
    wait_until(lambda: follower.stdout.endswith(b" one\n"), what="the first line")
    boundary = time.time()
    _let_time_pass(boundary)

    daemon.stop()
    daemon.start()
    with daemon.client() as client:
        client.publish(job_id, b"two\n")
        client.finish(job_id, 0)

    assert follower.wait() == 0, follower.stderr
    lines = _stamped(follower.stdout)
    assert [text for _, text in lines] == [b"one\n", b"two\n"]
    assert lines[0][0] <= boundary < lines[1][0]


def test_a_torn_index_is_read_and_appended_to_after_a_crash(
    start_daemon: Callable[..., DaemonProcess],
) -> None:
    daemon = start_daemon()
    batches = _two_batches(daemon, finish=False)
    daemon.kill()
    times_file = daemon.paths.job_times(batches.job_id)
    size = times_file.stat().st_size
    assert size > 16
    # Half a record: a crash in the middle of writing the last mark.
    with open(times_file, "r+b") as file:
        file.truncate(size - 5)

    daemon.start()
    lines = _stamped(_logs(daemon, batches.job_id, "--timestamps", "--tail", "3", running=True))
    assert [text for _, text in lines] == [b"partial\n", b"b1\n", b"b2\n"]
    # The second batch's mark is lost: its lines take the first batch's time.
    assert all(when <= batches.boundary for when, _ in lines)

    later = time.time()
    with daemon.client() as client:
        client.publish(batches.job_id, b"c1\n")
        client.finish(batches.job_id, 0)
    lines = _stamped(_logs(daemon, batches.job_id, "--timestamps"))
    assert [text for _, text in lines][-1] == b"c1\n"
    assert later <= lines[-1][0] <= time.time()
    assert _logs(daemon, batches.job_id, "--since", _rfc3339(later)) == b"c1\n"


def test_a_flood_of_tiny_appends_keeps_the_index_small(daemon: DaemonProcess) -> None:
    with daemon.client() as client:
        job_id = client.attach_push("flood").id
        started = time.monotonic()
        for number in range(500):
            client.publish(job_id, b"%d\n" % number)
        elapsed = time.monotonic() - started
        client.finish(job_id, 0)
    marks = daemon.paths.job_times(job_id).stat().st_size // 16
    assert 1 <= marks <= elapsed / RESOLUTION + 2
    assert len(_stamped(_logs(daemon, job_id, "--timestamps"))) == 500


def test_a_local_job_s_lines_are_stamped(daemon: DaemonProcess, workdir: Path) -> None:
    before = time.time()
    with daemon.client() as client:
        job_id = client.launch("echo hello", workdir=str(workdir), environment=os.environ).id
    shown = run_cli(daemon.home, "jobs", "logs", str(job_id), "--timestamps")
    assert shown.returncode == 0, shown.stderr
    lines = _stamped(shown.stdout)
    assert [text for _, text in lines] == [b"hello\n"]
    assert before <= lines[0][0] <= time.time()


def test_removing_a_job_deletes_its_index(daemon: DaemonProcess) -> None:
    batches = _two_batches(daemon)
    times_file = daemon.paths.job_times(batches.job_id)
    assert times_file.exists()

    removed = run_cli(daemon.home, "jobs", "rm", str(batches.job_id))
    assert removed.returncode == 0, removed.stderr

    assert not times_file.exists()
    assert not daemon.paths.job_log(batches.job_id).exists()


def test_since_with_tail_or_a_bad_time_is_a_usage_error(daemon: DaemonProcess) -> None:
    batches = _two_batches(daemon)
    both = run_cli(daemon.home, "jobs", "logs", str(batches.job_id), "--since", "1h", "--tail", "3")
    assert both.returncode == 2
    assert b"--since and --tail" in both.stderr
    bad = run_cli(daemon.home, "jobs", "logs", str(batches.job_id), "--since", "yesterday")
    assert bad.returncode == 2
    assert b"neither a duration" in bad.stderr


def test_since_a_time_before_year_1_in_utc_says_so(monkeypatch: pytest.MonkeyPatch) -> None:
    # East of UTC, local midnight of 0001-01-01 is in year 0: Python cannot represent it.
    monkeypatch.setenv("TZ", "Asia/Tokyo")
    time.tzset()
    try:
        with pytest.raises(ValueError, match="'0001-01-01' is not a time this machine"):
            parse_since("0001-01-01", time.time())
    finally:
        monkeypatch.undo()
        time.tzset()


def test_timestamps_name_a_failed_job_and_keep_a_begun_line_on_ctrl_c(
    daemon: DaemonProcess, background_cli: Callable[..., BackgroundCli]
) -> None:
    with daemon.client() as client:
        failed = client.attach_push("trainer").id
        client.publish(failed, b"loss nan\n")
        client.finish(failed, 3, "diverged")
        live = client.attach_push("live").id
        client.publish(live, b"epoch 1\nepoch 2 at 5")

    result = run_cli(daemon.home, "jobs", "logs", str(failed), "--timestamps")
    assert result.returncode == exit_codes.FAILED
    assert f"job {failed} (trainer) failed: diverged".encode() in result.stderr

    follower = background_cli("jobs", "logs", str(live), "--follow", "--timestamps")
    wait_until(lambda: follower.stdout.endswith(b" epoch 1\n"), what="the first line")
    follower.process.send_signal(signal.SIGINT)
    assert follower.wait() == exit_codes.INTERRUPTED
    assert follower.stdout.endswith(b" epoch 2 at 5"), "the begun line was lost"


def test_timestamps_write_a_line_longer_than_1_mib_before_it_ends(
    daemon: DaemonProcess, background_cli: Callable[..., BackgroundCli]
) -> None:
    with daemon.client() as client:
        job_id = client.attach_push("long").id
        client.publish(job_id, b"x" * (1536 * 1024))
    follower = background_cli("jobs", "logs", str(job_id), "--follow", "--timestamps")
    # Written without waiting for a newline that may never come (memory stays bounded).
    wait_until(lambda: len(follower.stdout) >= 1024 * 1024, what="the first MiB")
    with daemon.client() as client:
        client.publish(job_id, b"y\nnext\n")
        client.finish(job_id, 0)
    assert follower.wait() == 0, follower.stderr
    lines = _stamped(follower.stdout)
    assert [text for _, text in lines] == [b"x" * (1536 * 1024) + b"y\n", b"next\n"]


def test_a_full_disk_skips_time_marks_but_never_fails_the_job(
    small_disk_home: Path,  # noqa: F811 (the fixture imported above)
) -> None:
    daemon = DaemonProcess(small_disk_home, args=["--heartbeat-interval", "0.5"])
    daemon.start()
    try:
        with daemon.client() as client:
            job_id = client.attach_push().id
            client.publish(job_id, b"first\n")
            # The index must grow by a block that the full disk does not have; the log's
            # block still has room for a few lines.
            daemon.paths.job_times(job_id).unlink()
            filler = fill_disk(small_disk_home)
            for number in range(3):
                _let_time_pass(time.time())
                assert client.publish(job_id, b"line %d\n" % number) > 0
            filler.unlink()
            client.finish(job_id, 0)
        shown = _logs(daemon, job_id)
        assert shown == b"first\nline 0\nline 1\nline 2\n"
        assert daemon.log_text().count("times not recorded") == 1
        # The index lost its one mark and got no other: no line's time is known.
        stamped = _logs(daemon, job_id, "--timestamps")
        assert [line.split(maxsplit=1) for line in stamped.splitlines()] == [
            [b"-", b"first"],
            [b"-", b"line 0"],
            [b"-", b"line 1"],
            [b"-", b"line 2"],
        ]
    finally:
        daemon.stop()


def test_a_planted_times_file_refuses_timestamps_in_one_line_and_the_log_still_serves(
    daemon: DaemonProcess, tmp_path: Path
) -> None:
    with daemon.client() as client:
        job = client.launch("echo one; echo two")
        assert isinstance(list(client.follow(job.id))[-1], LogEnd)  # it has ended
    times = daemon.home / "logs" / f"{job.id}.times"
    daemon.stop()
    elsewhere = tmp_path / "elsewhere.times"
    times.rename(elsewhere)
    times.symlink_to(elsewhere)  # someone planted a link where the index was
    daemon.start()

    stamped = run_cli(daemon.home, "jobs", "logs", str(job.id), "--timestamps")
    since = run_cli(daemon.home, "jobs", "logs", str(job.id), "--since", "1h")
    plain = run_cli(daemon.home, "jobs", "logs", str(job.id))

    for refused in (stamped, since):
        assert refused.returncode == 1
        assert b"is a symbolic link" in refused.stderr
        assert b"INTERNAL" not in refused.stderr
    assert plain.returncode == 0
    assert plain.stdout == b"one\ntwo\n"
