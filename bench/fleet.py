"""Runs many commands at once and reports how each ended, and what CPU each used.

    python -m bench.fleet SPEC.json RESULT.json

SPEC: {"timeout": seconds, "commands": [{"argv": [...], "stdout": path, "stderr": path}]}.
All start together; each is reaped with wait4, which gives its end time and its own CPU (its
reaped descendants included). Those still running at the timeout are killed. The fleet is a
process of its own so that its children are exactly the commands.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import sys
import threading
import time
from typing import Any


def run(commands: list[dict[str, Any]], timeout: float) -> dict[str, Any]:
    started = time.time()
    running: dict[int, int] = {}
    for index, command in enumerate(commands):
        pid = os.posix_spawnp(
            command["argv"][0],
            command["argv"],
            os.environ,
            file_actions=[
                (os.POSIX_SPAWN_OPEN, 0, os.devnull, os.O_RDONLY, 0),
                (os.POSIX_SPAWN_OPEN, 1, command["stdout"], os.O_WRONLY | os.O_CREAT, 0o644),
                (os.POSIX_SPAWN_OPEN, 2, command["stderr"], os.O_WRONLY | os.O_CREAT, 0o644),
            ],
        )
        running[pid] = index

    def kill_the_rest() -> None:
        for pid in list(running):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)

    timer = threading.Timer(timeout, kill_the_rest)
    timer.start()
    results: list[dict[str, Any]] = [{} for _ in commands]
    try:
        while running:
            pid, status, usage = os.wait4(-1, 0)
            index = running.pop(pid)
            results[index] = {
                "exit": os.waitstatus_to_exitcode(status),
                "ended": time.time(),
                "cpu": usage.ru_utime + usage.ru_stime,
            }
    finally:
        timer.cancel()
    return {"started": started, "results": results}


def main() -> None:
    spec_path, result_path = sys.argv[1:3]
    with open(spec_path) as spec_file:
        spec = json.load(spec_file)
    result = run(spec["commands"], float(spec["timeout"]))
    with open(result_path, "w") as out:
        json.dump(result, out)


if __name__ == "__main__":
    main()
