"""The Node.js example (examples/node/follow.js) against the real daemon over its Unix socket.

Its dependencies are installed by `make test` (`npm ci --prefix examples/node`), never here.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest
from helpers import DaemonProcess, wait_until

REPO = Path(__file__).resolve().parent.parent
EXAMPLE = REPO / "examples" / "node"
# Every byte value, NULs, and sequences that are not UTF-8 (a lone continuation byte, an
# overlong encoding, a cut-off multi-byte character): a client that decodes would change them.
BINARY = bytes(range(256)) + b"\x00\x00\xff\xfe\x80\xc0\xaf\xe2\x82" + "héllo\n".encode()


def _node() -> str:
    node = shutil.which("node")
    assert node is not None, "node is not on PATH (npm is needed for `make test` already)"
    assert (EXAMPLE / "node_modules" / "@grpc" / "grpc-js").is_dir(), (
        "the example's dependencies are missing: run `make test` "
        "(or `npm ci --prefix examples/node`)"
    )
    return node


def _follow(
    home: Path, job_id: int, stdout: int | None = subprocess.PIPE
) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [_node(), str(EXAMPLE / "follow.js"), str(job_id)],
        env={**os.environ, "TAILHUB_HOME": str(home)},
        stdout=stdout,
        stderr=subprocess.PIPE,
    )


def test_node_example_writes_the_exact_bytes_and_exits_with_the_jobs_exit_code(
    daemon: DaemonProcess,
) -> None:
    with daemon.client() as client:
        job = client.attach_push(name="binary")
        client.publish(job.id, BINARY[:100])
        follower = _follow(daemon.home, job.id)
        wait_until(lambda: client.get(job.id).subscribers == 1, what="the node follower")
        client.publish(job.id, BINARY[100:])
        client.finish(job.id, exit_code=7)
        stdout, stderr = follower.communicate(timeout=60)
        assert client.get(job.id).exit_code == 7
    assert stdout == BINARY
    assert follower.returncode == 7, stderr.decode(errors="replace")


def test_node_example_resumes_at_the_next_byte_across_a_daemon_restart(
    daemon: DaemonProcess, workdir: Path
) -> None:
    out = workdir / "out"
    with daemon.client() as client:
        job = client.attach_push(name="restarted")
        client.publish(job.id, BINARY[:150])
    with open(out, "wb") as sink:
        follower = _follow(daemon.home, job.id, stdout=sink.fileno())
    wait_until(lambda: out.stat().st_size == 150, what="the bytes before the restart")
    daemon.restart()
    with daemon.client() as client:
        client.publish(job.id, BINARY[150:])
        client.finish(job.id, exit_code=5)
    _, stderr = follower.communicate(timeout=90)
    assert out.read_bytes() == BINARY
    assert follower.returncode == 5, stderr.decode(errors="replace")


@pytest.mark.parametrize("case", ["unknown", "cancelled"])
def test_node_example_exit_codes_without_a_jobs_own(daemon: DaemonProcess, case: str) -> None:
    with daemon.client() as client:
        job_id = 99
        if case == "cancelled":
            job_id = client.attach_push(name="cancelled").id
            client.cancel([job_id])
    follower = _follow(daemon.home, job_id)
    _, stderr = follower.communicate(timeout=60)
    if case == "unknown":
        assert follower.returncode == 102
        assert b"job 99 not found" in stderr
    else:
        assert follower.returncode == 103, stderr.decode(errors="replace")
