"""The CLI starts fast: a command imports only what it uses (see client/_deferred.py).

Timings would be flaky on a shared machine; what the interpreter imported is not. Each module
left out here was a measured part of a `tailhub jobs logs` start (bench/cli_latency.py).
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from helpers import DaemonProcess, cli_env

# Imported by grpc, protobuf and click, used by no `tailhub` command.
NEVER_ON_THE_READ_PATH = (
    "asyncio",
    "grpc.aio",
    "ssl",
    "google.protobuf.internal.python_message",
    "google.protobuf.text_format",
    "uuid",
)


def _imported(home: Path, *args: str) -> tuple[subprocess.CompletedProcess[bytes], set[str]]:
    """Runs `tailhub ARGS` under `python -X importtime`; its result and the modules it loaded."""
    done = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "tailhub.client", *args],
        env=cli_env(home),
        capture_output=True,
        timeout=120,
    )
    lines = done.stderr.decode().splitlines()
    modules = {line.rsplit("|", 1)[1].strip() for line in lines if line.startswith("import time:")}
    return done, modules


def test_reading_a_log_imports_neither_asyncio_nor_grpc_aio(daemon: DaemonProcess) -> None:
    """The full CLI's read (an option the lean path leaves to it): gRPC without the rest."""
    with daemon.client() as client:
        job = client.attach_push("short")
        client.publish(job.id, b"one\ntwo\n")
        client.finish(job.id)
    for args in (("--no-follow", "--timestamps"), ("--since", "1h")):
        done, modules = _imported(daemon.home, "jobs", "logs", *args, str(job.id))
        assert done.returncode == 0, done.stderr[-2000:]
        assert done.stdout.endswith(b"two\n")
        assert "grpc" in modules  # the read itself is a gRPC call
        assert modules.isdisjoint(NEVER_ON_THE_READ_PATH), modules & set(NEVER_ON_THE_READ_PATH)


# What a follower's start does without (issue 19, item 4): the lean path (client/_lean.py).
NEVER_ON_THE_LEAN_PATH = ("grpc", "google.protobuf", "click", "yaml", "typing", "asyncio")


def test_following_a_log_imports_no_grpc_click_or_protobuf(daemon: DaemonProcess) -> None:
    with daemon.client() as client:
        job = client.attach_push("short")
        client.publish(job.id, b"one\n\x00\xff two\n")
        client.finish(job.id, 3, "it broke")
    for args in ((), ("-f",), ("--no-follow",), ("--tail", "1"), ("--home", str(daemon.home))):
        done, modules = _imported(daemon.home, "jobs", "logs", *args, str(job.id))
        assert done.returncode == 100, done.stderr[-2000:]
        assert done.stdout == (b"\x00\xff two\n" if "--tail" in args else b"one\n\x00\xff two\n")
        said = [line for line in done.stderr.decode().splitlines() if "import time:" not in line]
        assert said == [f"tailhub: job {job.id} (short) failed: it broke"]
        heavy = {m for m in modules if m.split(".")[0] in NEVER_ON_THE_LEAN_PATH}
        heavy |= {m for m in modules if m.startswith("google.protobuf")}
        assert not heavy, sorted(heavy)


def test_a_sync_launch_imports_no_grpc_or_click(daemon: DaemonProcess, tmp_path: Path) -> None:
    task = tmp_path / "task.yaml"
    task.write_text("name: lean\nrun: printf 'a\\000b\\n'; exit 4\n")
    done, modules = _imported(daemon.home, "jobs", "launch", str(task))
    assert done.returncode == 100, done.stderr[-2000:]
    assert done.stdout == b"a\x00b\n"
    lines = [line for line in done.stderr.decode().splitlines() if "import time:" not in line]
    assert lines[0].endswith("submitted; following its log (Ctrl-C stops following, not the job)")
    assert lines[-1].endswith("(lean) failed: run exited with 4"), lines
    assert not {m for m in modules if m.split(".")[0] in ("grpc", "click")}
    assert not {m for m in modules if m.startswith("google.protobuf")}


def test_help_imports_no_grpc(home: Path) -> None:
    done, modules = _imported(home, "--help")
    assert done.returncode == 0
    assert b"jobs" in done.stdout
    assert not {module for module in modules if module.split(".")[0] == "grpc"}


def test_a_deferred_module_is_the_real_one_when_used(daemon: DaemonProcess) -> None:
    """grpc.aio and asyncio still work in a process that deferred them (one behaviour)."""
    code = f"""
from tailhub.client._deferred import defer
assert "asyncio" in defer()
import importlib.util
# Libraries probe for optional modules so; a stand-in must answer as the module would.
assert importlib.util.find_spec("uuid").name == "uuid"
import grpc
import grpc.aio
import asyncio
from asyncio import events  # a submodule of a deferred package
from tailhub.v1 import tailhub_pb2 as pb, tailhub_pb2_grpc as rpc

async def status():
    async with grpc.aio.insecure_channel({daemon.paths.address!r}) as channel:
        return await rpc.TailhubServiceStub(channel).GetDaemonStatus(pb.GetDaemonStatusRequest())

print(asyncio.run(status()).pid, events.get_event_loop_policy() is not None)
"""
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, timeout=60)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.split() == [str(daemon.pid).encode(), b"True"]
