from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from helpers import DaemonProcess, run_cli, wait_until

from tailhub.client import StatePaths
from tailhub.client._daemon import is_listening


def _one_line_error(stderr: bytes) -> str:
    text = stderr.decode()
    assert "Traceback" not in text
    assert text.endswith("\n")
    assert text.count("\n") == 1, f"expected one line, got: {text!r}"
    return text


@pytest.fixture
def no_daemon(home: Path) -> Iterator[Path]:
    """A state directory no daemon serves; one started by mistake is stopped at the end."""
    yield home
    if home.exists():
        run_cli(home, "daemon", "stop")


@pytest.mark.parametrize(
    ("args", "stdin"),
    [
        (("jobs", "logs", "999"), None),
        (("jobs", "logs", "999", "--no-follow", "--tail", "3"), None),
        (("jobs", "finish", "999"), None),
        (("jobs", "cancel", "999"), None),
        (("jobs", "publish", "999"), b"bytes for nobody\n"),
        # Nothing to send must not hide the wrong id.
        (("jobs", "publish", "999"), b""),
    ],
)
def test_unknown_job_id_exits_102_with_one_line(
    daemon: DaemonProcess, args: tuple[str, ...], stdin: bytes | None
) -> None:
    result = run_cli(daemon.home, *args, input=stdin)

    assert result.returncode == 102
    assert result.stdout == b""
    assert _one_line_error(result.stderr) == "tailhub: job 999 not found\n"


@pytest.mark.parametrize(
    ("args", "complaint"),
    [
        (("jobs", "logs", "--bogus", "1"), "No such option '--bogus'"),
        # A word where a job is taken is a job name (looked up in the daemon): not a usage error.
        (("jobs", "logs", "1", "--tail", "seven"), "'seven' is not a valid integer"),
        (("jobs", "logs", "1", "--tail", "-1"), "-1 is not in the range"),
        (("jobs", "attach"), "give exactly one of --file, --command, --push or --skypilot"),
        (("jobs", "attach", "--file", "/x", "--push"), "give exactly one of"),
        (
            ("jobs", "attach", "--push", "--shell"),
            "--shell, --transport-exit-code and --stderr go with",
        ),
        (("jobs", "attach", "--command"), "requires an argument"),
        (("jobs", "cancel"), "name the jobs to cancel, or use --all"),
        (("jobs", "finish", "1", "--exit-code", "zero"), "'zero' is not a valid integer"),
        (("daemon", "frobnicate"), "No such command 'frobnicate'"),
    ],
)
def test_bad_usage_exits_2_without_starting_a_daemon(
    no_daemon: Path, args: tuple[str, ...], complaint: str
) -> None:
    result = run_cli(no_daemon, *args)

    assert result.returncode == 2
    stderr = result.stderr.decode()
    assert complaint in stderr
    assert "Traceback" not in stderr
    assert not is_listening(StatePaths(no_daemon)), "a usage error started a daemon"


def test_attaching_a_missing_file_is_refused_clearly(daemon: DaemonProcess, workdir: Path) -> None:
    missing = workdir / "not-there.log"

    result = run_cli(daemon.home, "jobs", "attach", "--file", str(missing))

    assert result.returncode == 1
    assert result.stdout == b""
    assert _one_line_error(result.stderr) == f"tailhub: no such file: {missing}\n"
    with daemon.client() as client:
        assert client.list() == [], "a refused attach left a job behind"


def test_relative_missing_file_is_reported_by_its_absolute_path(
    daemon: DaemonProcess, workdir: Path
) -> None:
    result = run_cli(daemon.home, "jobs", "attach", "--file", "gone.log", cwd=workdir)

    assert result.returncode == 1
    assert _one_line_error(result.stderr) == f"tailhub: no such file: {workdir / 'gone.log'}\n"


def test_daemon_status_without_a_daemon_exits_104(no_daemon: Path) -> None:
    for args in (("daemon", "status"), ("daemon", "status", "--json")):
        result = run_cli(no_daemon, *args)

        assert result.returncode == 104
        assert result.stdout == b""
        assert _one_line_error(result.stderr) == f"tailhub: no tailhubd is running on {no_daemon}\n"
    assert not is_listening(StatePaths(no_daemon)), "status started a daemon"


def test_finishing_a_command_job_is_refused_and_the_job_goes_on(daemon: DaemonProcess) -> None:
    attached = run_cli(daemon.home, "jobs", "attach", "--command", "sh -c 'echo up; sleep 600'")
    assert attached.returncode == 0, attached.stderr
    job_id = int(attached.stdout)

    refused = run_cli(daemon.home, "jobs", "finish", str(job_id), "--exit-code", "0")

    assert refused.returncode == 1
    message = _one_line_error(refused.stderr)
    assert f"job {job_id} is a command job; it ends by itself" in message
    assert "cancel" in message
    with daemon.client() as client:
        wait_until(lambda: client.get(job_id).log_size == 3, what="the command's output")
        job = client.get(job_id)
        assert job.state.value == "RUNNING"
        client.cancel([job_id])
        assert client.get(job_id).state.value == "CANCELLED"


def test_publishing_to_a_job_that_is_not_a_push_job_is_refused(daemon: DaemonProcess) -> None:
    attached = run_cli(daemon.home, "jobs", "attach", "--command", "true")
    job_id = int(attached.stdout)

    for stdin in (b"data\n", b""):
        refused = run_cli(daemon.home, "jobs", "publish", str(job_id), input=stdin)

        assert refused.returncode == 1
        message = _one_line_error(refused.stderr)
        assert message == f"tailhub: job {job_id} is not a push job; only push jobs take bytes\n"


def test_launching_a_missing_task_file_exits_2(no_daemon: Path) -> None:
    result = run_cli(no_daemon, "jobs", "launch", "/nonexistent/task.yaml")

    assert result.returncode == 2
    assert _one_line_error(result.stderr) == "tailhub: /nonexistent/task.yaml: no such task file\n"


def test_smaller_messages_say_what_is_wrong(tmp_path: Path) -> None:
    home = tmp_path / "home"
    bad_port = run_cli(home, "--server", "localhost:99999", "jobs", "queue")
    assert bad_port.returncode == 2
    assert b"the port must be 0 to 65535, not 99999" in bad_port.stderr
    assert b"0.0.0.0" not in bad_port.stderr  # no server address to connect to
    empty = run_cli(home, "jobs", "attach", "--command", "")
    assert empty.returncode == 2
    assert b"--command is empty" in empty.stderr
