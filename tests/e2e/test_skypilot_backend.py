"""The skypilot backend, against the SkyPilot contract double (tests/sky_double/sky): jobs
submitted and followed with one `sky jobs launch -y` each (its log after the submission), on
with `sky jobs logs` only when that stream breaks or the daemon restarts; cancelled with
`sky jobs cancel -y`; a dropped stream loses and repeats no line."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from helpers import DaemonProcess, cli_env, run_cli, start_cli, wait_until
from job_helpers import queue, submitted_id, write_task
from markers import measures
from skydouble import ANSI, SKY, SkyDouble

from tailhub.client import LogEvent

TASK_LINE = re.compile(r"^\((?P<name>[^,()]+), pid=(?P<pid>\d+)\) (?P<text>.*)$")


@pytest.fixture
def sky(home: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[SkyDouble]:
    """The double, its state beside the test's; the CLI (and so every job's `sky`) sees it."""
    double = SkyDouble(home.parent / "sky")
    double.home.mkdir()
    monkeypatch.setenv("SKY_DOUBLE_HOME", str(double.home))
    try:
        yield double
    finally:
        double.set_faults()
        double.run("jobs", "cancel", "-a", "-y")


@pytest.fixture
def skyd(sky: SkyDouble, start_daemon: Callable[..., DaemonProcess]) -> DaemonProcess:
    return start_daemon("--sky", str(SKY))


def task_lines(log: bytes) -> list[str]:
    """The job's own output lines, without SkyPilot's framing or colours."""
    found = [TASK_LINE.match(line) for line in ANSI.sub("", log.decode()).splitlines()]
    return [match.group("text") for match in found if match]


def logs_runs(sky: SkyDouble) -> Counter[str]:
    """How many `sky jobs logs` processes were started, by managed job id."""
    return Counter(argv[-1] for argv in sky.invocations() if argv[:2] == ["jobs", "logs"])


def by_subcommand(sky: SkyDouble) -> Counter[str]:
    return Counter(argv[1] for argv in sky.invocations() if argv[:1] == ["jobs"])


def without_closing(log: bytes) -> bytes:
    """A log without SkyPilot's closing lines (`✓ Job finished ...` on): which of them a
    `sky jobs logs` prints depends on whether the job had ended when it started."""
    return log[: log.rfind(b"\n", 0, log.index(b"Job finished (status")) + 1]


def sky_logs(sky: SkyDouble, managed: str) -> bytes:
    """The whole log as `sky jobs logs --tail 0` prints it now, in bytes."""
    done = subprocess.run(
        [str(SKY), "jobs", "logs", "--tail", "0", managed],
        env=sky.env(),
        capture_output=True,
        timeout=60,
        check=False,
    )
    assert done.returncode in (0, 100, 103), done.stderr
    return done.stdout


def test_thirty_concurrent_launches_hold_one_sky_process_each(
    home: Path, skyd: DaemonProcess, sky: SkyDouble, workdir: Path
) -> None:
    # A third succeed, a third fail, a third are cancelled (in SkyPilot, by someone else).
    expected = {0: 0, 1: 100, 2: 103}
    clis = []
    for index in range(30):
        kind = index % 3
        run = ["echo ok", "echo bad; exit 3", "while :; do sleep 0.1; done"][kind]
        task = write_task(
            workdir / f"t{index}", f"name: job{index}\nrun: |\n  echo start {index}\n  {run}\n"
        )
        clis.append((index, start_cli(home, "jobs", "launch", "--backend", "skypilot", str(task))))

    # Out of PENDING: the job's log flows (its `sky jobs launch` got past the submission).
    def followed() -> bool:
        listed = queue(home)
        return len(listed) == 30 and all(job["state"] != "PENDING" for job in listed.values())

    wait_until(followed, 120, "every job to be followed")
    for index in range(2, 30, 3):
        cancelled = sky.run("jobs", "cancel", "-y", "-n", f"job{index}")
        assert cancelled.returncode == 0, cancelled.stderr
    for index, cli in clis:
        out, err = cli.communicate(timeout=60)
        assert cli.returncode == expected[index % 3], (index, err)
        assert task_lines(out)[0] == f"start {index}", out
    # One `sky jobs launch` per job, which also streamed its log: no `sky jobs logs`; a queue
    # call at most for each failed job (to say why it failed).
    counts = by_subcommand(sky)
    assert counts["launch"] == 30
    assert counts["logs"] == 0
    assert counts["queue"] <= 10
    assert counts["cancel"] == 10
    listed = queue(home)
    assert sorted(job["state"] for job in listed.values()) == sorted(
        ["SUCCEEDED"] * 10 + ["FAILED"] * 10 + ["CANCELLED"] * 10
    )
    assert all(job["backend"] == "skypilot" and job["external_id"] for job in listed.values())
    assert all(job["upstream_connections"] == 1 for job in listed.values())


def test_a_dropped_stream_loses_and_repeats_no_line(
    home: Path, skyd: DaemonProcess, sky: SkyDouble, workdir: Path
) -> None:
    # The launch's log stream dies after 4 lines, half-way through the 5th; the replay of
    # the `sky jobs logs` that goes on differs in the first task line (a new pid, as after a
    # recovery).
    sky.set_faults(DROP_AFTER="4", DROP_PARTIAL="1", DROP_TIMES="1", REPLAY_MISMATCH="1")
    lines = "\n".join(f"  echo line {n}" for n in range(1, 7))
    task = write_task(workdir, f"name: drop\nrun: |\n{lines}\n")
    done = run_cli(home, "jobs", "launch", "--backend", "skypilot", str(task))
    assert done.returncode == 0, done.stderr
    assert task_lines(done.stdout) == [f"line {n}" for n in range(1, 7)]
    plain = ANSI.sub("", done.stdout.decode())
    assert plain.count("Job started. Streaming logs...") == 1
    assert "differs from the stored one" in done.stderr.decode()
    job = queue(home)[submitted_id(done.stderr)]
    assert job["upstream_connections"] == 2
    assert list(logs_runs(sky).values()) == [1]
    assert by_subcommand(sky) == Counter({"launch": 1, "queue": 1, "logs": 1})


def test_a_job_followed_from_launch_to_end_costs_one_sky_process_and_its_log_is_exact(
    home: Path, skyd: DaemonProcess, sky: SkyDouble, workdir: Path
) -> None:
    # Control bytes, colours, UTF-8 and bytes that are not UTF-8 (SkyPilot's stream is text:
    # it replaces those, the same way whoever asks). The last line comes only once the one
    # with bytes that are not UTF-8 was streamed: it must not be cut by them.
    gate, last = workdir / "go", workdir / "last"
    task = write_task(
        workdir,
        f"name: exact\nrun: |\n  echo first\n"
        f"  while [ ! -e {gate} ]; do sleep 0.05; done\n"
        "  printf 'bin \\000\\001\\033[31mred\\033[0m \\342\\202\\254 \\377\\376 end\\n'\n"
        f"  while [ ! -e {last} ]; do sleep 0.05; done\n"
        "  printf 'no newline at the end'\n",
    )
    launch = start_cli(home, "jobs", "launch", "--backend", "skypilot", str(task))
    wait_until(lambda: [job["state"] for job in queue(home).values()] == ["RUNNING"], 60, "the log")
    # What `sky jobs logs --tail 0` prints when it follows the same job from now on.
    reference = subprocess.Popen(
        [str(SKY), "jobs", "logs", "--tail", "0"],
        env=sky.env(),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
    )
    [counter] = sky.home.glob("jobs/*/logs_count")
    wait_until(lambda: counter.read_text() == "2", 60, "the reference to follow")
    gate.touch()
    assert reference.stdout is not None
    expected = b""
    while b"bin " not in expected:  # (the test's timeout bounds this)
        line = reference.stdout.readline()
        assert line, expected
        expected += line
    last.touch()
    out, err = launch.communicate(timeout=60)
    expected += reference.communicate(timeout=60)[0]
    assert task_lines(expected)[2] == "no newline at the end"
    assert launch.returncode == 0, err
    lines = task_lines(out)
    assert lines[0] == "first"
    assert lines[1].startswith("bin \x00\x01red \u20ac")
    assert lines[2] == "no newline at the end"
    assert out == expected
    assert b"Useful Commands" not in out
    assert b"Launching managed job" not in out
    # One `sky` for the job: the launch that also streamed its log (the double records each
    # run, with its CPU).
    runs = [
        json.loads(line)
        for line in (sky.home / "usage.log").read_text().splitlines()
        if json.loads(line)["pid"] != reference.pid
    ]
    assert [run["argv"][:2] for run in runs if run["argv"][:1] == ["jobs"]] == [["jobs", "launch"]]


@pytest.mark.parametrize("after", [0, 3, 11])
def test_a_launch_that_dies_mid_stream_goes_on_with_sky_jobs_logs_exactly(
    home: Path, skyd: DaemonProcess, sky: SkyDouble, workdir: Path, after: int
) -> None:
    # The launch's stream breaks after `after` lines of the log (half-way through the next):
    # before the first line, in the job's lines, in SkyPilot's closing lines.
    sky.set_faults(DROP_AFTER=str(after), DROP_PARTIAL="1", DROP_TIMES="1")
    lines = "\n".join(f"  echo line {n}" for n in range(1, 9))
    task = write_task(workdir, f"name: dies\nrun: |\n{lines}\n")
    done = run_cli(home, "jobs", "launch", "--backend", "skypilot", str(task))
    assert done.returncode == 0, done.stderr
    assert task_lines(done.stdout) == [f"line {n}" for n in range(1, 9)]
    assert "differs from the stored one" not in done.stderr.decode()
    job = queue(home)[submitted_id(done.stderr)]
    assert job["upstream_connections"] == 2
    assert by_subcommand(sky) == Counter({"launch": 1, "queue": 1, "logs": 1})
    assert without_closing(done.stdout) == without_closing(sky_logs(sky, job["external_id"]))


def test_lines_a_launch_prints_before_the_log_do_not_shift_the_replay_after_a_drop(
    home: Path, skyd: DaemonProcess, sky: SkyDouble, workdir: Path
) -> None:
    # SkyPilot's default mode prints the jobs controller's start after `Launching managed
    # job`: stored as the log's start, they are not in what `sky jobs logs` replays.
    sky.set_faults(CONTROLLER_LINES="2", DROP_AFTER="4", DROP_PARTIAL="1", DROP_TIMES="1")
    lines = "\n".join(f"  echo line {n}" for n in range(1, 7))
    task = write_task(workdir, f"name: controller\nrun: |\n{lines}\n")
    done = run_cli(home, "jobs", "launch", "--backend", "skypilot", str(task))
    assert done.returncode == 0, done.stderr
    assert task_lines(done.stdout) == [f"line {n}" for n in range(1, 7)]
    assert "the launch stored 2 lines before the log" in done.stderr.decode()
    job = queue(home)[submitted_id(done.stderr)]
    controller = b"".join(
        f"\x1b[2m\u2699\ufe0e Job submitted, ID: {n}\x1b[0m\n".encode() for n in (1, 2)
    )
    expected = controller + sky_logs(sky, job["external_id"])
    assert without_closing(done.stdout) == without_closing(expected)


def test_cancel_runs_sky_jobs_cancel_once(
    home: Path,
    skyd: DaemonProcess,
    sky: SkyDouble,
    workdir: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("TAILHUB_BACKEND", "skypilot")  # the environment chooses the backend
    task = write_task(
        workdir, "name: forever\nrun: |\n  echo started\n  while :; do sleep 0.1; done\n"
    )
    launched = run_cli(home, "jobs", "launch", "--async", str(task))
    assert launched.returncode == 0, launched.stderr
    job_id = int(launched.stdout)
    wait_until(lambda: queue(home)[job_id]["state"] == "RUNNING", 30, "the job to run")
    cancelled = run_cli(home, "jobs", "cancel", str(job_id))
    assert cancelled.returncode == 0, cancelled.stderr
    # SkyPilot's cancel is asynchronous: the job ends once its `sky jobs logs` says so.
    wait_until(lambda: queue(home)[job_id]["state"] == "CANCELLED", 30, "the job to end")
    job = queue(home)[job_id]
    managed = job["external_id"]
    assert [argv for argv in sky.invocations() if argv[:2] == ["jobs", "cancel"]] == [
        ["jobs", "cancel", "-y", managed]
    ]
    assert sky.queue()[int(managed)]["status"] == "CANCELLED"
    # Its id came after the log: the cancel found it with one `sky jobs queue`.
    assert by_subcommand(sky) == Counter({"launch": 1, "queue": 2, "cancel": 1})


def test_attach_follows_a_managed_job_launched_elsewhere(
    home: Path, skyd: DaemonProcess, sky: SkyDouble, workdir: Path
) -> None:
    task = write_task(workdir, "name: elsewhere\nrun: |\n  echo from elsewhere\n  exit 4\n")
    managed = sky.launch(task)
    attached = run_cli(home, "jobs", "attach", "--skypilot", str(managed), "-n", "mine")
    assert attached.returncode == 0, attached.stderr
    job_id = int(attached.stdout)
    logs = run_cli(home, "jobs", "logs", str(job_id))
    assert logs.returncode == 100, logs.stderr
    assert task_lines(logs.stdout) == ["from elsewhere"]
    listed = run_cli(home, "jobs", "queue")
    assert f"skypilot:{managed}" in listed.stdout.decode()
    assert list(logs_runs(sky).values()) == [1]


def test_a_failed_submission_fails_the_job_with_skypilots_message(
    home: Path, sky: SkyDouble, start_daemon: Callable[..., DaemonProcess], workdir: Path
) -> None:
    # The state directory's config.yaml chooses the backend and the `sky` to run.
    home.mkdir(mode=0o700)
    (home / "config.yaml").write_text(f"backend: skypilot\nsky: {SKY}\n")
    (home / "config.yaml").chmod(0o600)
    start_daemon()
    sky.set_faults(FAIL_LAUNCH="nocloud")
    task = write_task(workdir, "name: nocloud\nrun: echo never\n")
    done = run_cli(home, "jobs", "launch", str(task))
    assert done.returncode == 100
    message = "sky.exceptions.NoCloudAccessError: Cloud access is not set up. Run: sky check"
    assert message in done.stderr.decode()
    job = queue(home)[submitted_id(done.stderr)]
    assert job["state"] == "FAILED"
    assert job["reason"] == message
    assert by_subcommand(sky) == Counter({"launch": 1})


def test_an_old_sky_without_tail_is_followed_without_it(
    home: Path, skyd: DaemonProcess, sky: SkyDouble, workdir: Path
) -> None:
    sky.set_faults(VERSION="0.10.3")
    task = write_task(workdir, "name: old\nrun: echo from an old sky\n")
    done = run_cli(home, "jobs", "launch", "--backend", "skypilot", str(task))
    assert done.returncode == 0, done.stderr
    assert task_lines(done.stdout) == ["from an old sky"]
    managed = sky.launch(task)
    attached = run_cli(home, "jobs", "attach", "--skypilot", str(managed))
    assert attached.returncode == 0, attached.stderr
    logs = run_cli(home, "jobs", "logs", attached.stdout.decode().strip())
    assert task_lines(logs.stdout) == ["from an old sky"]
    runs = [argv for argv in sky.invocations() if argv[:2] == ["jobs", "logs"]]
    assert runs[0][2:4] == ["--tail", "0"]
    assert "--tail" not in runs[-1]


def test_sky_not_installed_fails_the_launch(
    home: Path, start_daemon: Callable[..., DaemonProcess], workdir: Path
) -> None:
    start_daemon("--sky", str(workdir / "no-such-sky"))
    task = write_task(workdir, "name: nosky\nrun: echo never\n")
    done = run_cli(home, "jobs", "launch", "--backend", "skypilot", str(task))
    assert done.returncode == 100
    assert "cannot run" in done.stderr.decode()
    assert "no-such-sky" in done.stderr.decode()


@pytest.mark.parametrize("stop", ["stop", "kill"])
def test_a_daemon_restart_resumes_the_stream_without_losing_or_repeating_a_line(
    home: Path, skyd: DaemonProcess, sky: SkyDouble, workdir: Path, stop: str
) -> None:
    # Killed (-9), the daemon saved no line count at the end: the restarted one counts the
    # stored lines again (off the event loop) before it skips as many of the replay.
    gate = workdir / "go"
    task = write_task(
        workdir,
        f"""\
        name: survivor
        run: |
          echo line 1; echo line 2
          while [ ! -e {gate} ]; do sleep 0.05; done
          echo line 3; echo line 4
        """,
    )
    launched = run_cli(home, "jobs", "launch", "--backend", "skypilot", "--async", str(task))
    assert launched.returncode == 0, launched.stderr
    job_id = int(launched.stdout)

    def has_two_lines() -> bool:
        logs = run_cli(home, "jobs", "logs", "--no-follow", str(job_id))
        return task_lines(logs.stdout) == ["line 1", "line 2"]

    wait_until(has_two_lines, 30, "the first lines")
    if stop == "kill":
        skyd.kill()
    else:
        skyd.stop()
    skyd.start()
    gate.touch()
    logs = run_cli(home, "jobs", "logs", str(job_id))
    assert logs.returncode == 0, logs.stderr
    assert task_lines(logs.stdout) == ["line 1", "line 2", "line 3", "line 4"]
    assert ANSI.sub("", logs.stdout.decode()).count("Job started. Streaming logs...") == 1
    assert queue(home)[job_id]["upstream_connections"] == 2
    # The launch streamed the start; the restarted daemon found the job's id (one queue
    # call) and went on with one `sky jobs logs`, exactly where the stored log ends.
    assert by_subcommand(sky) == Counter({"launch": 1, "queue": 1, "logs": 1})
    managed = queue(home)[job_id]["external_id"]
    assert without_closing(logs.stdout) == without_closing(sky_logs(sky, managed))


@pytest.mark.parametrize(
    ("text", "mode", "said"),
    [
        ("backend: skypilot\n", 0o622, "writable by others"),
        ("backend: kubernetes\n", 0o600, "unknown backend 'kubernetes'"),
        ("bakend: skypilot\n", 0o600, "unknown setting 'bakend'"),
    ],
)
def test_a_config_file_that_cannot_be_used_keeps_the_daemon_from_starting(
    home: Path, text: str, mode: int, said: str
) -> None:
    home.mkdir(mode=0o700)
    config = home / "config.yaml"
    config.write_text(text)
    config.chmod(mode)
    done = subprocess.run(
        [sys.executable, "-m", "tailhub.daemon", "--home", str(home)],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert done.returncode == 1
    assert str(config) in done.stderr
    assert said in done.stderr


def test_a_line_longer_than_memory_holds_is_stored_in_pieces_and_resumed_exactly(
    home: Path, skyd: DaemonProcess, sky: SkyDouble, workdir: Path
) -> None:
    # The stream drops half-way through a 3 MB line: more than the daemon holds back (1 MiB),
    # so the start of that line is stored before its newline; the replay must skip exactly it.
    sky.set_faults(DROP_AFTER="3", DROP_PARTIAL="1", DROP_TIMES="1")
    task = write_task(
        workdir,
        'name: big\nrun: |\n  echo line 1\n  head -c 3000000 /dev/zero | tr "\\0" x; echo\n'
        "  echo after\n",
    )
    done = run_cli(home, "jobs", "launch", "--backend", "skypilot", str(task))
    assert done.returncode == 0, done.stderr
    assert task_lines(done.stdout) == ["line 1", "x" * 3_000_000, "after"]
    assert "differs from the stored one" not in done.stderr.decode()
    job = queue(home)[submitted_id(done.stderr)]
    assert job["upstream_connections"] == 2


def test_env_values_travel_in_skys_environment_not_on_its_command_line(
    home: Path, skyd: DaemonProcess, sky: SkyDouble, workdir: Path
) -> None:
    # Any local user can read a process's command line (/proc/PID/cmdline); a secret must
    # not be on it. SkyPilot reads a bare `--env KEY` from its own environment.
    task = write_task(workdir, "name: secret\nrun: echo token=$TOKEN\n")
    done = run_cli(
        home, "jobs", "launch", "--backend", "skypilot", "--env", "TOKEN=hunter2", str(task)
    )
    assert done.returncode == 0, done.stderr
    assert task_lines(done.stdout) == ["token=hunter2"]
    [launch] = [argv for argv in sky.invocations() if argv[:2] == ["jobs", "launch"]]
    assert "--env" in launch
    assert launch[launch.index("--env") + 1] == "TOKEN"
    assert not any("hunter2" in arg for arg in launch)


def stub_sky(directory: Path, *, logs: str, cancel: str = "exit 0", says: str = "") -> Path:
    """A `sky` for one test: `jobs launch` keeps its argv and environment beside it and prints
    `says` (by default a managed job id); `jobs logs` and `jobs cancel` run the given shell."""
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / "sky"
    path.write_text(
        f"""#!/bin/sh
case "$2" in
  launch) printf '%s\\n' "$@" > {directory}/launch.argv; env > {directory}/launch.env
          echo "{says or "Managed Job ID: 7"}" ;;
  logs) {logs} ;;
  cancel) {cancel} ;;
  *) echo "[]" ;;
esac
"""
    )
    path.chmod(0o755)
    return path


@measures
def test_a_slow_sky_jobs_cancel_returns_at_once_with_the_cancel_requested(
    home: Path, start_daemon: Callable[..., DaemonProcess], workdir: Path
) -> None:
    # SkyPilot may take minutes to cancel (it tears the cluster down first): `jobs cancel`
    # returns once the cancel is sent, not with an error after a timeout.
    sky = stub_sky(
        workdir / "bin",
        logs='echo "(t, pid=1) started"; exec sleep 60',
        cancel="sleep 15",
    )
    start_daemon("--sky", str(sky), "--cancel-grace", "1")
    task = write_task(workdir, "name: t\nrun: sleep 60\n")
    launched = run_cli(home, "jobs", "launch", "--backend", "skypilot", "--async", str(task))
    assert launched.returncode == 0, launched.stderr
    job_id = int(launched.stdout)
    wait_until(lambda: queue(home)[job_id]["state"] == "RUNNING", 30, "the job to run")
    started = time.monotonic()
    cancelled = run_cli(home, "jobs", "cancel", str(job_id))
    assert cancelled.returncode == 0, cancelled.stderr
    assert time.monotonic() - started < 5
    assert f"job {job_id}: RUNNING (cancel requested)" in cancelled.stderr.decode()
    job = queue(home)[job_id]
    assert job["state"] == "RUNNING"
    assert job["reason"] == "cancel requested"


def test_a_launch_without_a_client_environment_gives_sky_a_minimal_one(
    home: Path,
    start_daemon: Callable[..., DaemonProcess],
    workdir: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("DAEMON_ONLY_SECRET", "not for jobs")
    sky = stub_sky(workdir / "bin", logs="exit 0")
    daemon = start_daemon("--sky", str(sky))
    with daemon.client() as client:
        job = client.launch("", backend="skypilot", task_yaml="name: t\nrun: echo hi\n")
        wait_until(lambda: client.get(job.id).sealed, 30, "the job to end")
    names = {line.partition("=")[0] for line in (sky.parent / "launch.env").read_text().split()}
    assert "DAEMON_ONLY_SECRET" not in names
    assert {"HOME", "PATH"} <= names


def test_a_huge_id_range_from_sky_is_not_expanded(
    home: Path, start_daemon: Callable[..., DaemonProcess], workdir: Path
) -> None:
    # Only the last id is used: a range is read by its ends, never made a list of 10^11.
    sky = stub_sky(workdir / "bin", logs="exit 0", says="Jobs submitted with IDs: 1-99999999999.")
    start_daemon("--sky", str(sky))
    task = write_task(workdir, "name: t\nrun: echo hi\n")
    done = run_cli(home, "jobs", "launch", "--backend", "skypilot", str(task))
    assert done.returncode == 0, done.stderr
    assert queue(home)[submitted_id(done.stderr)]["external_id"] == "99999999999"


def test_a_stream_that_keeps_ending_unfinished_is_run_again_with_growing_delays(
    home: Path, start_daemon: Callable[..., DaemonProcess], workdir: Path
) -> None:
    # `sky jobs logs` exiting 101 (the job is not finished) at once, again and again: not a
    # failure of the job, but no tight loop either.
    sky = stub_sky(workdir / "bin", logs="exit 101")
    daemon = start_daemon("--sky", str(sky))
    with daemon.client() as client:
        job = client.attach_skypilot(7)

        def delays() -> list[float]:
            events = client.follow(job.id, follow=False)
            said = [item.message for item in events if isinstance(item, LogEvent)]
            return [float(found) for found in re.findall(r"reconnecting in ([0-9.]+)s", str(said))]

        # Told at the 1st, 2nd and 4th end in a row (not at each: no flood of events).
        wait_until(lambda: len(delays()) >= 3, 30, "four reconnects")
        # The first is the initial delay (0.2 s, with jitter); they double from there.
        assert delays()[2] >= 0.8, delays()
        assert client.get(job.id).upstream_connections >= 4
        assert not client.get(job.id).state.terminal


def _launch_as(
    home: Path, task: Path, lean: bool, *args: str
) -> tuple[subprocess.CompletedProcess[bytes], set[str]]:
    """A sync SkyPilot launch by the CLI, on its lean path or (TAILHUB_LEAN=0) the full one:
    what it printed, and the modules it imported (`-X importtime`)."""
    env = {**cli_env(home), "TAILHUB_LEAN": "1" if lean else "0"}
    done = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "tailhub.client", "jobs", "launch"]
        + ["--backend", "skypilot", *args, str(task)],
        env=env,
        capture_output=True,
        timeout=120,
    )
    said = done.stderr.decode().splitlines()
    modules = {line.rsplit("|", 1)[1].strip() for line in said if line.startswith("import time:")}
    stderr = "\n".join(line for line in said if not line.startswith("import time:"))
    return subprocess.CompletedProcess(
        done.args, done.returncode, done.stdout, stderr.encode()
    ), modules


@pytest.mark.parametrize("run", ['echo "hello $GREETING"', "echo broken; exit 3"])
def test_a_sync_launch_takes_the_lean_path_and_prints_what_the_full_cli_prints(
    home: Path, skyd: DaemonProcess, sky: SkyDouble, workdir: Path, run: str
) -> None:
    # A SkyPilot launch's follower imported grpc and click: 0.29 s of CPU per launch, against
    # 0.08 s on the lean path a local launch takes (issue 19, items 4 and 6).
    task = write_task(workdir, f"name: lean-sky\nrun: |\n  {run}\n")
    results = {
        lean: _launch_as(home, task, lean, "--env", "GREETING=world") for lean in (True, False)
    }
    for lean, (done, modules) in results.items():
        heavy = {m for m in modules if m.split(".")[0] in ("grpc", "click")}
        assert bool(heavy) is not lean, sorted(heavy)
    (lean_done, _), (full_done, _) = results[True], results[False]
    assert lean_done.returncode == full_done.returncode == (0 if "exit" not in run else 100)
    assert task_lines(lean_done.stdout) == task_lines(full_done.stdout)
    assert task_lines(lean_done.stdout)[0] in ("hello world", "broken")
    # The same lines on stderr, the job's id and its managed id aside.
    ids = re.compile(rb"\b\d+\b")
    assert ids.sub(b"N", lean_done.stderr) == ids.sub(b"N", full_done.stderr)
    assert by_subcommand(sky)["launch"] == 2  # (one `sky jobs launch` each)
