"""tailhub's own credentials stay out of jobs, logs and files others can read.

A launch carries its shell's environment; the token the CLI used (`TAILHUB_TOKEN`) or the Redis
URL with its password (`TAILHUB_REDIS`) must not reach the job (whose log any read token can
follow) nor the daemon's database. Token files are written 0600 and read only when private.
"""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import DaemonProcess, cli_env, run_cli
from job_helpers import write_task

from tailhub.client import JobState, LogChunk

SOMEONE_ELSE = 65534  # nobody (the tests run as root)

SECRET_TOKEN = "thk_not-for-the-job-0123456789"
SECRET_PASSWORD = "redis-password-not-for-the-job"


def state_bytes(home: Path) -> bytes:
    """Every byte the daemon keeps in its database (WAL included)."""
    return b"".join(path.read_bytes() for path in home.glob("jobs.sqlite3*") if path.is_file())


def test_a_launch_never_hands_tailhubs_credentials_to_the_job_or_its_record(
    daemon: DaemonProcess, workdir: Path
) -> None:
    task = write_task(
        workdir,
        'run: echo "token=${TAILHUB_TOKEN-unset} redis=${TAILHUB_REDIS-unset} mine=$MINE"\n',
    )
    env = {
        **cli_env(daemon.home),
        "TAILHUB_TOKEN": SECRET_TOKEN,
        "TAILHUB_REDIS": f"redis://:{SECRET_PASSWORD}@127.0.0.1:1/0",
        "MINE": "kept",
    }
    launched = subprocess.run(
        [sys.executable, "-m", "tailhub.client", "jobs", "launch", str(task)],
        env=env,
        capture_output=True,
        timeout=60,
        check=False,
    )

    assert launched.returncode == 0, launched.stderr
    assert launched.stdout == b"token=unset redis=unset mine=kept\n"
    stored = state_bytes(daemon.home)
    assert SECRET_TOKEN.encode() not in stored
    assert SECRET_PASSWORD.encode() not in stored


def test_the_daemon_drops_them_from_any_client_but_keeps_what_the_owner_named(
    daemon: DaemonProcess,
) -> None:
    """A client of another language sends its whole environment: the daemon filters it too."""
    with daemon.client() as client:
        job = client.launch(
            'echo "token=${TAILHUB_TOKEN-unset} named=${TAILHUB_REDIS-unset}"',
            environment={"PATH": os.environ["PATH"], "TAILHUB_TOKEN": SECRET_TOKEN},
            # Named in the task's envs by its owner: theirs to pass on.
            envs={"TAILHUB_REDIS": "on-purpose"},
        )
        output = b"".join(item.data for item in client.follow(job.id) if isinstance(item, LogChunk))
        assert client.get(job.id).state is JobState.SUCCEEDED
    assert output == b"token=unset named=on-purpose\n"
    assert SECRET_TOKEN.encode() not in state_bytes(daemon.home)


def test_token_create_output_writes_a_private_file_and_never_overwrites(
    daemon: DaemonProcess, workdir: Path
) -> None:
    target = workdir / "read.token"
    created = run_cli(daemon.home, "token", "create", "--role", "read", "--output", str(target))

    assert created.returncode == 0, created.stderr
    assert created.stdout == b""  # the token went to the file only
    assert stat.S_IMODE(target.stat().st_mode) == 0o600
    assert target.read_text().startswith("thk_")
    again = run_cli(daemon.home, "token", "create", "--role", "read", "--output", str(target))
    assert again.returncode == 1
    assert b"exists: remove it first" in again.stderr


def test_token_create_into_a_file_others_can_read_warns(
    daemon: DaemonProcess, workdir: Path
) -> None:
    target = workdir / "shared.token"
    with target.open("wb") as out:
        os.fchmod(out.fileno(), 0o644)
        created = subprocess.run(
            [sys.executable, "-m", "tailhub.client", "token", "create", "--role", "read"],
            env=cli_env(daemon.home),
            stdout=out,
            stderr=subprocess.PIPE,
            timeout=60,
            check=False,
        )
    assert created.returncode == 0
    assert b"can be read by others (mode 0644)" in created.stderr
    assert b"--output FILE" in created.stderr


def _queue_with(workdir: Path, token_file: Path) -> subprocess.CompletedProcess[bytes]:
    """`jobs queue` over --server with `token_file` (nothing listens: refused before that)."""
    return run_cli(
        workdir / "elsewhere",
        *("--server", "127.0.0.1:7443", "--insecure", "--token-file", str(token_file)),
        *("jobs", "queue"),
    )


def test_the_cli_refuses_a_token_file_others_can_read(daemon: DaemonProcess, workdir: Path) -> None:
    target = workdir / "open.token"
    target.write_text("thk_whatever\n")
    target.chmod(0o644)
    refused = _queue_with(workdir, target)
    assert refused.returncode == 105
    assert f"chmod 600 {target}".encode() in refused.stderr
    assert b"Traceback" not in refused.stderr


@pytest.mark.root
def test_the_cli_refuses_a_token_file_another_user_could_change(
    daemon: DaemonProcess, workdir: Path
) -> None:
    theirs = workdir / "theirs.token"
    theirs.write_text("thk_whatever\n")
    theirs.chmod(0o600)
    os.chown(theirs, SOMEONE_ELSE, SOMEONE_ELSE)
    link = workdir / "link.token"
    link.symlink_to(workdir / "mine.token")
    (workdir / "mine.token").write_text("thk_whatever\n")
    (workdir / "mine.token").chmod(0o600)
    os.chown(link, SOMEONE_ELSE, SOMEONE_ELSE, follow_symlinks=False)
    shared = workdir / "shared"
    shared.mkdir(mode=0o777)
    shared.chmod(0o777)  # (no sticky bit: anyone may rename or replace what is in it)
    (shared / "t.token").write_text("thk_whatever\n")
    (shared / "t.token").chmod(0o600)
    into_shared = workdir / "into-shared.token"
    into_shared.symlink_to(shared / "t.token")  # (a link of mine, to a file others may replace)
    cases = {
        theirs: f"is owned by uid {SOMEONE_ELSE}, not by you",
        link: f"is owned by uid {SOMEONE_ELSE}, not by you",
        shared / "t.token": "is in a directory others may write to",
        into_shared: "is in a directory others may write to",
    }
    for target, says in cases.items():
        refused = _queue_with(workdir, target)
        assert refused.returncode == 105, refused.stderr
        assert says.encode() in refused.stderr, refused.stderr
        assert refused.stderr.count(b"\n") == 1, refused.stderr
