"""The Node.js example (examples/node/follow.js) against the real daemon, over its Unix socket
and over a TCP listener with TLS and a read token.

Its dependencies are installed by `make test` (`npm ci --prefix examples/node`), never here.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest
from helpers import DaemonProcess, wait_until
from remote_helpers import create_token, free_port, tls_init

REPO = Path(__file__).resolve().parents[2]
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
    home: Path,
    job_id: int,
    stdout: int | None = subprocess.PIPE,
    remote: dict[str, str] | None = None,
) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [_node(), str(EXAMPLE / "follow.js"), str(job_id)],
        env={**os.environ, "TAILHUB_HOME": str(home), **(remote or {})},
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


def test_node_example_over_tls_with_a_read_token(
    home: Path, start_daemon: Callable[..., DaemonProcess]
) -> None:
    tls = tls_init(home)
    port = free_port()
    daemon = start_daemon("--listen", f"127.0.0.1:{port}", *tls.flags)
    remote = {
        # A name, as users give (Node warns about an IP address as the TLS server name).
        "TAILHUB_SERVER": f"localhost:{port}",
        "TAILHUB_CA": str(tls.ca),
        "TAILHUB_TOKEN": create_token(home, "read"),
        # Nothing reachable here: the follower must use the TCP listener, not the socket.
        "TAILHUB_HOME": str(home.parent / "elsewhere"),
    }
    with daemon.client() as client:
        job = client.attach_push(name="remote")
        client.publish(job.id, BINARY[:100])
        follower = _follow(daemon.home, job.id, remote=remote)
        wait_until(lambda: client.get(job.id).subscribers == 1, what="the node follower")
        client.publish(job.id, BINARY[100:])
        client.finish(job.id, exit_code=9)
        stdout, stderr = follower.communicate(timeout=60)
    assert stdout == BINARY
    assert follower.returncode == 9, stderr.decode(errors="replace")

    wrong = _follow(daemon.home, job.id, remote={**remote, "TAILHUB_TOKEN": "thk_not-a-token"})
    _, stderr = wrong.communicate(timeout=60)
    assert wrong.returncode == 1
    assert stderr.endswith(b"refused the token: token not accepted (unknown or revoked)\n")
    assert stderr.count(b"\n") == 1, stderr
