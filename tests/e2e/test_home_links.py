"""A home reached through symlinks: resolved once, checked component by component (a symlink
counts by its owner), then reached only through the directory the daemon opened. Real daemon,
real CLI, real links; tests run as root, and uid 65534 stands for the local user who tries to
make root run their script (issue 16, item 1)."""

from __future__ import annotations

import os
import signal
import stat
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from helpers import DaemonProcess, one_line, run_cli, wait_until
from job_helpers import Gate, queue, write_task

from tailhub.client import StatePaths
from tailhub.client._daemon import is_listening

SOMEONE_ELSE = 65534  # nobody


def _daemons_naming(path: Path) -> list[int]:
    """Pids of tailhubd processes whose command line names `path`."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            argv = Path(f"/proc/{entry}/cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if b"tailhub.daemon" in argv and os.fsencode(path) in argv:
            found.append(int(entry))
    return found


@pytest.fixture
def roots_dir(home: Path) -> Iterator[Path]:
    """A directory of root's (mode 0755) that someone else's link points at; any daemon a
    test left on it (when the fix is missing) is killed at the end."""
    directory = home.parent / "roots"
    directory.mkdir(mode=0o755)
    os.chmod(directory, 0o755)
    yield directory
    for named in (home.parent / "link", home.parent / "linked" / "home"):
        for pid in _daemons_naming(named):
            os.kill(pid, signal.SIGKILL)


def _link_of_someone_else(link: Path, target: Path) -> None:
    link.symlink_to(target)
    os.lchown(link, SOMEONE_ELSE, SOMEONE_ELSE)


def _assert_untouched(directory: Path, entries: list[str]) -> None:
    assert sorted(os.listdir(directory)) == entries, "something was made in root's directory"
    assert stat.S_IMODE(directory.stat().st_mode) == 0o755, "root's directory was chmod'ed"
    assert not is_listening(StatePaths(directory))


@pytest.mark.root
def test_a_home_that_is_someone_elses_symlink_is_refused_and_starts_nothing(
    roots_dir: Path,
) -> None:
    link = roots_dir.parent / "link"
    _link_of_someone_else(link, roots_dir)

    cli = run_cli(link, "daemon", "start")
    daemon = subprocess.run(
        [sys.executable, "-m", "tailhub.daemon", "--home", str(link)],
        capture_output=True,
        timeout=30,
        check=False,
    )

    assert cli.returncode == 1
    line = one_line(cli.stderr, f"tailhub: refusing state directory {link}: ")
    assert f"{link} is a symbolic link owned by uid {SOMEONE_ELSE}" in line
    assert daemon.returncode == 1
    line = one_line(daemon.stderr, f"tailhubd: refusing state directory {link}: ")
    assert f"{link} is a symbolic link owned by uid {SOMEONE_ELSE}" in line
    assert _daemons_naming(link) == [], "a daemon was left running on the refused home"
    _assert_untouched(roots_dir, [])


def test_a_home_under_someone_elses_symlinked_parent_is_refused(roots_dir: Path) -> None:
    (roots_dir / "home").mkdir(mode=0o700)
    linked = roots_dir.parent / "linked"
    _link_of_someone_else(linked, roots_dir)
    home = linked / "home"

    cli = run_cli(home, "jobs", "queue")
    daemon = subprocess.run(
        [sys.executable, "-m", "tailhub.daemon", "--home", str(home)],
        capture_output=True,
        timeout=30,
        check=False,
    )

    for result, prefix in ((cli, "tailhub"), (daemon, "tailhubd")):
        assert result.returncode == 1
        line = one_line(result.stderr, f"{prefix}: refusing state directory {home}: ")
        assert f"{linked} is a symbolic link owned by uid {SOMEONE_ELSE}" in line
    assert _daemons_naming(home) == []
    assert os.listdir(roots_dir / "home") == []
    _assert_untouched(roots_dir, ["home"])


def test_repointing_the_home_link_later_changes_nothing(home: Path, workdir: Path) -> None:
    real = home.parent / "real"
    elsewhere = home.parent / "elsewhere"
    real.mkdir(mode=0o700)
    elsewhere.mkdir(mode=0o700)
    link = home.parent / "link"
    link.symlink_to(real)  # the user's own link: fine
    daemon = DaemonProcess(link, args=["--heartbeat-interval", "0.5"])
    daemon.start()
    try:
        link.unlink()
        link.symlink_to(elsewhere)  # what someone who could write there would do next
        task = write_task(workdir, "run: |\n  echo the real script\n")

        # The daemon is found where it really is; it never learned the link's new target.
        launched = run_cli(real, "jobs", "launch", str(task))

        assert launched.returncode == 0, launched.stderr
        assert launched.stdout == b"the real script\n"
        assert (real / "logs" / "1.log").read_bytes() == b"the real script\n"
        assert (real / "runs" / "1" / "run.sh").is_file()
        assert os.listdir(elsewhere) == [], "the daemon followed the re-pointed link"
    finally:
        daemon.stop()
    assert "Traceback" not in daemon.log_text()


def test_a_run_directory_swapped_for_a_link_runs_nothing_of_the_planters(
    daemon: DaemonProcess, workdir: Path, gate: Callable[[str], Gate]
) -> None:
    waiting = gate("setup-gate")
    started = workdir / "setup-started"
    planted = workdir / "planted"
    planted.mkdir(mode=0o700)
    pwned = workdir / "pwned"
    for script in ("setup.sh", "run.sh"):
        (planted / script).write_text(f"touch {pwned}\necho the planted script\n")
    (planted / "exit_status").write_text("run 0\n")
    task = write_task(
        workdir,
        f"""\
        setup: |
          touch {started}
          flock --shared {waiting.path} true
        run: |
          echo the real script
          exit 3
        """,
    )
    launched = run_cli(daemon.home, "jobs", "launch", "--async", str(task))
    assert launched.returncode == 0, launched.stderr
    wait_until(started.exists, what="the job's setup to start")

    run_dir = daemon.home / "runs" / "1"
    run_dir.rename(daemon.home / "runs" / "1.moved")
    run_dir.symlink_to(planted)
    waiting.open()
    wait_until(lambda: queue(daemon.home)[1]["state"] != "RUNNING", what="the job to end")

    assert not pwned.exists(), "the job ran a script from the planted directory"
    assert queue(daemon.home)[1]["state"] == "FAILED"  # not the planted "run 0"
    assert (daemon.home / "logs" / "1.log").read_bytes() == b"the real script\n"
