"""The replayed upstream the cluster tests follow (replay_upstream.py) sends every byte of its
file, even the bytes a test appends just before it lets the replay end (touches STATE/done):
a byte lost there is a byte missing from the job's log, which every follower then misses too."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from cluster_helpers import REPLAY, payload, upstream

# Runs the replay with the test's last append and `done` landing at the worst moment: right
# after a read found nothing more (os.path.isdir is the replay's first call after that read),
# before it looks for `done`. A loaded machine gives that interleaving now and then; this gives
# it every time.
_RACED = """
import os, runpy, sys
replay, log, state, last = sys.argv[1:]
done = os.path.join(state, "done")
real_isdir = os.path.isdir
def isdir(path):
    if not os.path.exists(done):
        with open(log, "ab") as more, open(last, "rb") as piece:
            more.write(piece.read())
        open(done, "w").close()
    return real_isdir(path)
os.path.isdir = isdir
sys.argv = [replay, log, state]
runpy.run_path(replay, run_name="__main__")
"""


def test_the_last_bytes_appended_before_done_are_all_sent(tmp_path: Path) -> None:
    first, last = payload(8192, seed=9), payload(8192, seed=99)
    log, state = upstream(tmp_path / "up", first)
    (tmp_path / "last").write_bytes(last)
    replay = subprocess.run(
        [sys.executable, "-c", _RACED, REPLAY, str(log), str(state), str(tmp_path / "last")],
        capture_output=True,
        timeout=60,
    )
    assert replay.returncode == 0, replay.stderr
    assert (state / "done").exists()  # the append came after a read that found nothing
    sent, whole = replay.stdout, first + last
    lost = next((at for at, (a, b) in enumerate(zip(sent, whole, strict=False)) if a != b), None)
    assert sent == whole, f"sent {len(sent)} of {len(whole)} bytes, first difference at {lost}"
