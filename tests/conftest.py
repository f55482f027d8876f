from __future__ import annotations

import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from helpers import BackgroundCli, DaemonProcess, start_background_cli
from job_helpers import Gate


@pytest.fixture
def home() -> Iterator[Path]:
    """A fresh state directory with a short path (Unix socket paths are limited to 107 bytes)."""
    path = Path(tempfile.mkdtemp(prefix="th-", dir="/tmp"))
    try:
        yield path / "home"
    finally:
        shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def daemon(home: Path) -> Iterator[DaemonProcess]:
    """The real daemon, listening on a real socket in a temp directory."""
    process = DaemonProcess(home, args=["--heartbeat-interval", "0.5"])
    process.start()
    try:
        yield process
    finally:
        if process.process is not None and process.process.poll() is None:
            process.stop()


@pytest.fixture
def workdir(home: Path) -> Path:
    """A scratch directory beside the state directory for files the test writes."""
    path = home.parent / "work"
    path.mkdir()
    return path


@pytest.fixture
def start_daemon(home: Path) -> Iterator[Callable[..., DaemonProcess]]:
    """Starts the real daemon with extra flags (`"--max-running-jobs", "2"`); stopped at the end."""
    started: list[DaemonProcess] = []

    def start(*args: str) -> DaemonProcess:
        process = DaemonProcess(home, args=["--heartbeat-interval", "0.5", *args])
        started.append(process)
        process.start()
        return process

    yield start
    for process in started:
        if process.process is not None and process.process.poll() is None:
            process.stop()


@pytest.fixture
def background_cli(home: Path) -> Iterator[Callable[..., BackgroundCli]]:
    """Starts `tailhub ARGS` in the background, output in files; kills what still runs at end."""
    started: list[BackgroundCli] = []

    def start(*args: str) -> BackgroundCli:
        cli = start_background_cli(home, home.parent / "cli", *args)
        started.append(cli)
        return cli

    try:
        yield start
    finally:
        for cli in started:
            cli.stop()


@pytest.fixture
def gate(workdir: Path) -> Iterator[Callable[[str], Gate]]:
    """Closes a gate named NAME in the work directory for jobs to wait on with
    `flock --shared PATH true`; every gate is opened at the end, so that a failing test
    leaves no job waiting behind it."""
    closed: list[Gate] = []

    def close(name: str) -> Gate:
        closed.append(Gate.closed(workdir / name))
        return closed[-1]

    try:
        yield close
    finally:
        for each in closed:
            each.open()
