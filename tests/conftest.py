from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from helpers import DaemonProcess


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
