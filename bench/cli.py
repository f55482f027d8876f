"""The `tailhub` command line as a user runs it, timed: wall clock and CPU of each run.

As users have it: from a venv laid out as `pip install` of the wheel leaves one
(`installed_cli`), never the dev venv's `tailhub`. The dev venv installs tailhub editable, and
setuptools' finder for that is imported by every Python start there (pathlib, fnmatch,
urllib.parse...): about 30 ms of CPU a process on this machine (23 against 55 ms for
`python -c pass`), which a scenario counting its CLI processes' CPU would charge to tailhub.
"""

from __future__ import annotations

import atexit
import functools
import os
import resource
import shutil
import subprocess
import sys
import sysconfig
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from harness.processes import REPO

# pip's console script, as `pip install` writes it for the wheel's `tailhub` entry point.
_CONSOLE_SCRIPT = """#!{python}
# -*- coding: utf-8 -*-
import re
import sys
from tailhub.client._entry import main
if __name__ == '__main__':
    sys.argv[0] = re.sub(r'(-script\\.pyw|\\.exe)?$', '', sys.argv[0])
    sys.exit(main())
"""


def tailhub(*args: str) -> list[str]:
    """argv of `tailhub` as a user's install has it (one installed venv per process)."""
    return [str(_installed() / "bin" / "tailhub"), *args]


@functools.cache
def _installed() -> Path:
    directory = Path(tempfile.mkdtemp(prefix="thb-cli-", dir="/tmp"))
    atexit.register(shutil.rmtree, directory, ignore_errors=True)
    return installed_cli(directory / "venv")


def installed_cli(venv: Path) -> Path:
    """A venv laid out as `pip install tailhub-*.whl` leaves one, with this tree's code: its
    own interpreter, pip's console script for the `tailhub` entry point, the package and the
    dev venv's site-packages (the locked dependencies) on plain `.pth` lines, so with neither
    the dev venv's editable finder nor its .pth files. `tailhub-full` is the same script with
    TAILHUB_LEAN=0 (the full CLI). Returns the venv."""
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    python = venv / "bin" / "python"
    site = subprocess.run(
        [python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    lines = [str(REPO / part) for part in ("daemon", "client", "proto")]
    lines.append(sysconfig.get_paths()["purelib"])
    (Path(site) / "tailhub.pth").write_text("\n".join(lines) + "\n")
    script = _CONSOLE_SCRIPT.format(python=python)
    for name, text in (
        ("tailhub", script),
        (
            "tailhub-full",
            script.replace(
                "import sys\n", "import sys\nimport os\nos.environ['TAILHUB_LEAN'] = '0'\n", 1
            ),
        ),
    ):
        path = venv / "bin" / name
        path.write_text(text)
        path.chmod(0o755)
    return venv


@dataclass(frozen=True)
class Timed:
    wall_s: float
    cpu_s: float  # user + system CPU of the process
    returncode: int
    stdout: bytes
    stderr: bytes


def timed_run(argv: list[str], home: Path | None = None, timeout: float = 60.0) -> Timed:
    """Runs `argv` to completion; its CPU is read from this process's reaped-children usage."""
    env = dict(os.environ)
    if home is not None:
        env["TAILHUB_HOME"] = str(home)
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    done = subprocess.run(
        argv, env=env, capture_output=True, timeout=timeout, cwd=REPO, check=False
    )
    wall = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return Timed(wall, cpu, done.returncode, done.stdout, done.stderr)
