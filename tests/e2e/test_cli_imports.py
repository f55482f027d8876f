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
    with daemon.client() as client:
        job = client.attach_push("short")
        client.publish(job.id, b"one\ntwo\n")
        client.finish(job.id)
    for args in (("--no-follow",), ("--tail", "1")):
        done, modules = _imported(daemon.home, "jobs", "logs", *args, str(job.id))
        assert done.returncode == 0, done.stderr[-2000:]
        assert done.stdout == (b"two\n" if "--tail" in args else b"one\ntwo\n")
        assert "grpc" in modules  # the read itself is a gRPC call
        assert modules.isdisjoint(NEVER_ON_THE_READ_PATH), modules & set(NEVER_ON_THE_READ_PATH)


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
