"""The CLI as a user meets it: bad numbers and homes are usage errors, output cannot steer the
terminal, and the small things (hints, per-id results, pipes, stop, connection counts) are right."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from helpers import BackgroundCli, DaemonProcess, cli_env, run_cli, wait_until
from job_helpers import Gate, jobs, write_task

from tailhub.client import StatePaths
from tailhub.client._daemon import is_listening


@pytest.fixture
def no_daemon(home: Path) -> Iterator[Path]:
    """A state directory no daemon serves; one started by mistake is stopped at the end."""
    yield home
    if home.exists():
        run_cli(home, "daemon", "stop")


def _run_with_env(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(
        [sys.executable, "-m", "tailhub.client", *args],
        env=env,
        capture_output=True,
        timeout=60,
    )


@pytest.mark.parametrize(
    ("args", "complaint"),
    [
        (("jobs", "logs", "--", "-3"), "-3 is not in the range"),
        (("jobs", "logs", "0"), "0 is not in the range"),
        (("jobs", "logs", "9223372036854775808"), "is not in the range"),
        (("jobs", "logs", "1", "--tail", "99999999999999999999"), "is not in the range"),
        (("jobs", "finish", "1", "--exit-code", "99999999999"), "is not in the range"),
        (("jobs", "finish", "1", "--exit-code", "-1"), "is not in the range"),
        (("jobs", "cancel", "1", "99999999999999999999"), "is not in the range"),
        (("jobs", "rm", "-5"), "No such option"),
        (("jobs", "publish", "18446744073709551616"), "is not in the range"),
        (
            ("jobs", "attach", "--command", "true", "--transport-exit-code", "256"),
            "is not in the range",
        ),
        (("jobs", "queue", "--home", ""), "--home is empty"),
        (("--home", "", "jobs", "queue"), "--home is empty"),
    ],
)
def test_out_of_range_numbers_and_empty_homes_are_usage_errors(
    no_daemon: Path, args: tuple[str, ...], complaint: str
) -> None:
    result = run_cli(no_daemon, *args)

    assert result.returncode == 2, result.stderr
    stderr = result.stderr.decode()
    assert complaint in stderr
    assert "Traceback" not in stderr
    assert not is_listening(StatePaths(no_daemon)), "a usage error started a daemon"


def test_an_empty_tailhub_home_is_an_error_not_the_default(tmp_path: Path) -> None:
    env = {**os.environ, "HOME": str(tmp_path), "TAILHUB_HOME": ""}

    result = _run_with_env(env, "jobs", "queue")

    assert result.returncode == 2
    assert "$TAILHUB_HOME is set but empty" in result.stderr.decode()
    assert not (tmp_path / ".tailhub").exists(), "the default state directory was used"


def test_home_before_the_subcommand_is_used_and_a_later_one_wins(
    daemon: DaemonProcess, tmp_path: Path
) -> None:
    with daemon.client() as client:
        job_id = client.attach_push("mine").id
    # The environment points elsewhere: the flag must win over it.
    env = {**os.environ, "TAILHUB_HOME": str(tmp_path / "elsewhere")}

    before = _run_with_env(env, "--home", str(daemon.home), "jobs", "queue", "--json")
    after = _run_with_env(env, "jobs", "queue", "--json", "--home", str(daemon.home))
    both = _run_with_env(
        env, "--home", str(tmp_path / "other"), "jobs", "queue", "--home", str(daemon.home)
    )

    for result in (before, after, both):
        assert result.returncode == 0, result.stderr
        assert b'"name": "mine"' in result.stdout or b"mine" in result.stdout
    assert f'"id": {job_id}'.encode() in before.stdout
    assert not (tmp_path / "elsewhere").exists()
    assert not (tmp_path / "other").exists()


def test_names_events_and_messages_cannot_steer_the_terminal(daemon: DaemonProcess) -> None:
    title = "\x1b]0;pwned\x07"
    attached = run_cli(daemon.home, "jobs", "attach", "--push", "--name", title)
    assert attached.returncode == 0, attached.stderr
    job_id = int(attached.stdout)
    noisy = run_cli(
        daemon.home,
        "jobs",
        "attach",
        "--name",
        "noisy",
        "--stderr",
        "events",
        "--command",
        r"""sh -c 'printf "\033[2J\033]0;owned\007\n" >&2; echo out'""",
    )
    noisy_id = int(noisy.stdout)

    queue = run_cli(daemon.home, "jobs", "queue")
    with daemon.client() as client:
        wait_until(lambda: client.get(noisy_id).sealed, what="the noisy command to end")
    logs = run_cli(daemon.home, "jobs", "logs", str(noisy_id))
    cancelled = run_cli(daemon.home, "jobs", "cancel", str(job_id), str(noisy_id))

    assert queue.returncode == 0, queue.stderr
    assert b"\x1b" not in queue.stdout
    assert b"\x07" not in queue.stdout
    assert b"\\x1b]0;pwned\\x07" in queue.stdout
    assert logs.stdout == b"out\n"
    assert b"\x1b" not in logs.stderr
    assert b"\\x1b[2J\\x1b]0;owned\\x07" in logs.stderr
    assert b"\x1b" not in cancelled.stderr


def test_ctrl_c_hint_repeats_the_home_given(
    daemon: DaemonProcess, workdir: Path, background_cli: Callable[..., BackgroundCli]
) -> None:
    gate = Gate.closed(workdir / "gate")
    task = write_task(workdir, f"run: |\n  echo started\n  flock --shared {gate.path} true\n")
    try:
        launch = background_cli("jobs", "launch", "--home", str(daemon.home), str(task))
        launch.wait_for_stdout(b"started\n")
        launch.process.send_signal(signal.SIGINT)
        assert launch.wait() == 130
        job_id = next(iter(jobs(daemon)))
        assert f"tailhub jobs logs --home {daemon.home} {job_id}" in launch.stderr
        assert f"tailhub jobs cancel --home {daemon.home} {job_id}" in launch.stderr
    finally:
        gate.open()


def test_daemon_start_with_options_on_a_running_daemon_says_they_were_not_applied(
    daemon: DaemonProcess,
) -> None:
    plain = run_cli(daemon.home, "daemon", "start")
    with_options = run_cli(daemon.home, "daemon", "start", "--max-running-jobs", "2")

    assert plain.returncode == 0, plain.stderr
    assert with_options.returncode == 1
    assert "without --max-running-jobs 2; to apply it: tailhub daemon restart" in (
        with_options.stderr.decode()
    )


def test_cancel_reports_each_id_and_goes_on_past_unknown_ones(daemon: DaemonProcess) -> None:
    with daemon.client() as client:
        ended = client.attach_push().id
        client.finish(ended)
        running = client.attach_push().id

    result = run_cli(daemon.home, "jobs", "cancel", str(ended), "999", str(running))

    assert result.returncode == 102
    assert result.stderr.decode() == (
        f"tailhub: job {ended} had already ended (SUCCEEDED); left as it was\n"
        f"tailhub: job {running}: CANCELLED\n"
        "tailhub: job 999 not found\n"
    )
    assert jobs(daemon)[running].state.value == "CANCELLED"


def test_queue_into_a_pipe_closed_early_exits_0(daemon: DaemonProcess) -> None:
    with daemon.client() as client:
        for index in range(400):  # well over a pipe's 64 KiB buffer
            client.attach_push(f"{index}-" + "n" * 240)

    result = subprocess.run(
        [
            "bash",
            "-c",
            f"set -o pipefail; {sys.executable} -m tailhub.client jobs queue --all | head -1",
        ],
        env=cli_env(daemon.home),
        capture_output=True,
        timeout=60,
    )

    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith(b"ID")
    assert result.stdout.count(b"\n") == 1
    assert result.stderr == b""


def _gone(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return True
    return stat[stat.rfind(")") + 2] in "ZX"


def test_daemon_stop_returns_once_the_process_is_gone(no_daemon: Path) -> None:
    for _ in range(3):
        started = run_cli(no_daemon, "daemon", "start")
        assert started.returncode == 0, started.stderr
        pid = int(StatePaths(no_daemon).pid.read_text().split()[0])

        stopped = run_cli(no_daemon, "daemon", "stop")

        assert stopped.returncode == 0, stopped.stderr
        assert _gone(pid), "`daemon stop` returned while the daemon still ran"


def test_queue_and_status_tell_open_connections_from_all_opened(daemon: DaemonProcess) -> None:
    attached = run_cli(daemon.home, "jobs", "attach", "--command", "sh -c 'echo up; sleep 600'")
    job_id = int(attached.stdout)
    with daemon.client() as client:
        wait_until(lambda: client.get(job_id).log_size == 3, what="the command's output")
        assert client.get(job_id).upstream_connections_open == 1
        assert client.status().upstream_connections_open == 1

        queue = run_cli(daemon.home, "jobs", "queue")
        status = run_cli(daemon.home, "daemon", "status")
        assert queue.stdout.decode().splitlines()[1].split()[7] == "1/1"
        assert "1 open now, 1 opened in total" in status.stdout.decode()

        client.cancel([job_id])
        # The command is stopped just after the job is recorded as cancelled.
        wait_until(
            lambda: client.get(job_id).upstream_connections_open == 0,
            what="the connection to close",
        )
        assert client.status().upstream_connections_open == 0
        assert client.get(job_id).upstream_connections == 1
