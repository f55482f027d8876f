"""A local job on a full disk: it writes its log itself, so nothing can pause it, but its exit code
is kept and the window in which its output was lost is said (issue 16, item 15)."""

from __future__ import annotations

from pathlib import Path

from disk_helpers import Follower, fill_disk
from helpers import DaemonProcess, wait_until
from job_helpers import Gate


def test_a_local_job_ending_on_a_full_disk_keeps_its_exit_code(
    small_disk_home: Path,  # noqa: F811 (the fixture imported above)
    workdir: Path,
) -> None:
    daemon = DaemonProcess(small_disk_home, args=["--heartbeat-interval", "0.5"])
    daemon.start()
    gate = Gate.closed(workdir / "gate")
    try:
        with daemon.client() as client:
            job = client.launch(f"echo started; flock --shared {gate.path} true; exit 5")
            follower = Follower(daemon, job.id)
            # Its script runs (RUNNING alone is not enough: the wrapper claims its launch in a
            # file of its own first, which a disk already full would refuse).
            wait_until(lambda: follower.data == b"started\n", what="the script to start")
            filler = fill_disk(small_disk_home)
            gate.open()
            follower.join()
            assert follower.end is not None
            assert follower.end.exit_code == 5  # not 137, "ended without an exit status"
            assert follower.end.reason == "run exited with 5"
            filler.unlink()
    finally:
        gate.open()
        daemon.stop()


def test_a_local_job_writing_through_a_full_disk_tells_its_followers_where(
    small_disk_home: Path,  # noqa: F811 (the fixture imported above)
    workdir: Path,
) -> None:
    daemon = DaemonProcess(small_disk_home, args=["--heartbeat-interval", "0.5"])
    daemon.start()
    stop = workdir / "stop"
    try:
        with daemon.client() as client:
            job = client.launch(
                f'i=0; while [ ! -e {stop} ]; do echo "line $i"; i=$((i+1)); sleep 0.02; done'
            )
            follower = Follower(daemon, job.id)
            wait_until(lambda: b"line 5\n" in follower.data, what="the first lines")
            filler = fill_disk(small_disk_home)
            wait_until(
                lambda: any("the disk holding the log is full" in e for e in follower.events),
                what="the full disk said to followers",
            )
            filler.unlink()
            wait_until(
                lambda: any("disk space available again" in e for e in follower.events),
                what="the room said to followers",
            )
            stop.touch()
            follower.join()
    finally:
        stop.touch()
        daemon.stop()
    assert follower.end is not None
    assert follower.end.exit_code == 0
    # The lines before and after the window are there; the window itself is said, not hidden.
    assert follower.data.startswith(b"line 0\nline 1\n")
