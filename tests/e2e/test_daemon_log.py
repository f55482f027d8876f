"""The daemon's own log (issue 16, item 6): `<home>/tailhubd.log` rotates at a bound, repeated
lines collapse into a count, and an autostarted daemon writes each line once."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path

import pytest
from helpers import DaemonProcess, run_cli

from tailhub.daemon import daemon_log
from tailhub.daemon.errors import UntrustedState


@pytest.fixture
def root_handlers() -> Iterator[None]:
    """The root logger's handlers and level as they were, whatever the test added."""
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    try:
        yield
    finally:
        for handler in root.handlers:
            if handler not in handlers:
                root.removeHandler(handler)
                handler.close()
        root.setLevel(level)


def test_the_log_file_rotates_and_stays_under_its_bound(
    tmp_path: Path, root_handlers: None
) -> None:
    home = tmp_path / "home"
    path = home / "tailhubd.log"
    repeats = daemon_log.RepeatFilter()
    daemon_log.own_log_file(home, path, repeats, max_bytes=4096, backups=3)
    logging.getLogger().setLevel(logging.INFO)
    flood = logging.getLogger("tailhub.daemon.flood")
    for n in range(5000):  # distinct lines: nothing to collapse
        flood.info("line %d of a flood that must not fill the disk", n)
    files = sorted(home.iterdir())
    assert [file.name for file in files] == [f"tailhubd.log{end}" for end in ("", ".1", ".2", ".3")]
    assert all(file.stat().st_size <= 4096 + 200 for file in files)
    assert "line 4999 of a flood" in path.read_text()
    assert (path.stat().st_mode & 0o777) == 0o600


def test_a_planted_symlink_for_the_log_is_refused(tmp_path: Path, root_handlers: None) -> None:
    home = tmp_path / "home"
    home.mkdir(mode=0o700)
    victim = tmp_path / "victim"
    victim.write_text("")
    (home / "tailhubd.log").symlink_to(victim)
    with pytest.raises(UntrustedState, match="symbolic link"):
        daemon_log.own_log_file(home, home / "tailhubd.log", daemon_log.RepeatFilter())
    assert victim.read_text() == ""


def test_repeated_lines_collapse_into_a_count(tmp_path: Path, root_handlers: None) -> None:
    home = tmp_path / "home"
    path = home / "tailhubd.log"
    now = [0.0]
    repeats = daemon_log.RepeatFilter(clock=lambda: now[0])
    logging.getLogger().setLevel(logging.INFO)
    gone = logging.getLogger("tailhub.daemon.gone")
    with daemon_log.log_file_owned(home, path, repeats):
        for _ in range(854):  # what one test's followers made the daemon write
            gone.info("the client went away mid-write")
        gone.info("job %d ended", 1)
        gone.info("job %d ended", 2)  # not a repeat: another line
        now[0] = 61.0  # a minute later, once more: with the count of the minute before
        gone.info("the client went away mid-write")
        for _ in range(10):
            gone.info("the client went away mid-write")
    lines = path.read_text().splitlines()
    went = [line for line in lines if "went away" in line]
    # Three shown, then the count with the next one a minute on, two more, and the rest
    # counted at the end.
    assert len(went) == 3 + 1 + 2 + 1, lines
    assert went[3].endswith("the client went away mid-write (repeated 851 more times)"), went
    # At the end (the daemon stops), the count of the last minute's repeats.
    assert went[-1].endswith("the client went away mid-write (repeated 8 more times)"), went
    assert sum("job 1 ended" in line or "job 2 ended" in line for line in lines) == 2


def test_an_autostarted_daemon_writes_each_line_once_into_its_home(home: Path) -> None:
    assert run_cli(home, "jobs", "queue").returncode == 0
    assert run_cli(home, "daemon", "stop").returncode == 0
    text = (home / "tailhubd.log").read_text()
    assert text.count("tailhubd serving") == 1, text


def test_a_foreground_daemon_logs_to_stderr_and_to_its_home(daemon: DaemonProcess) -> None:
    daemon.stop()
    assert daemon.log_text().count("tailhubd serving") == 1
    assert (daemon.home / "tailhubd.log").read_text().count("tailhubd serving") == 1
