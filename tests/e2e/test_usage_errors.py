"""Usage errors exit 2 with one line saying what to fix, before anything starts (issue 16,
item 22): no state directory made, no daemon started, the task file named."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from helpers import run_cli


def test_daemon_start_with_a_bad_redis_url_exits_2_before_anything_starts(home: Path) -> None:
    done = run_cli(home, "daemon", "start", "--redis", "garbage")
    assert done.returncode == 2, done.stderr
    assert b"--redis" in done.stderr
    assert b"redis://" in done.stderr  # what a Redis URL looks like
    assert not home.exists()  # nothing was created, nothing started


def test_a_job_name_over_256_bytes_is_a_usage_error(home: Path, workdir: Path) -> None:
    task = workdir / "task.yaml"
    task.write_text("run: echo hi\n")
    name = "é" * 129  # 258 bytes in UTF-8
    for args in (("jobs", "launch", "--name", name, str(task)), ("jobs", "attach", "--push")):
        done = run_cli(home, *args, *(("--name", name) if "attach" in args else ()))
        assert done.returncode == 2, done.stderr
        assert b"--name" in done.stderr
        assert b"258 bytes; at most 256" in done.stderr
    assert not (home / "sock").exists()  # refused before any daemon was started


def test_a_task_files_name_or_envs_value_too_large_names_the_file(
    home: Path, workdir: Path
) -> None:
    big = workdir / "big.yaml"
    big.write_text("run: echo hi\nenvs:\n  BIG: " + "y" * (128 * 1024 + 1) + "\n")
    done = run_cli(home, "jobs", "launch", str(big))
    assert done.returncode == 2, done.stderr
    line = done.stderr.decode()
    assert line.count("\n") == 1
    assert f"{big}: `envs.BIG` is 131073 bytes; at most 131072 are allowed" in line

    named = workdir / "named.yaml"
    named.write_text("name: " + "n" * 300 + "\nrun: echo hi\n")
    done = run_cli(home, "jobs", "launch", str(named))
    assert done.returncode == 2, done.stderr
    assert f"{named}: `name` is 300 bytes" in done.stderr.decode()

    assert not (home / "sock").exists()


def test_an_empty_tailhub_home_is_a_usage_error_for_tailhubd(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "tailhub.daemon"],
        env={**os.environ, "TAILHUB_HOME": ""},
        capture_output=True,
        timeout=60,
        cwd=tmp_path,
    )
    assert done.returncode == 2, done.stderr
    assert b"Usage:" in done.stderr
    assert b"$TAILHUB_HOME is set but empty" in done.stderr


def test_a_byte_quota_of_nothing_is_a_usage_error_for_tailhubd(home: Path) -> None:
    # (Before: exit 1 with "max log bytes per token must be at least 1", naming no flag.)
    done = subprocess.run(
        [sys.executable, "-m", "tailhub.daemon", "--home", str(home)]
        + ["--max-log-bytes-per-token", "0"],
        capture_output=True,
        timeout=60,
    )
    assert done.returncode == 2, done.stderr
    assert b"--max-log-bytes-per-token" in done.stderr
    assert b"'0': at least 1 byte" in done.stderr
