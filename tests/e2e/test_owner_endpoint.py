"""The owner's lean endpoint (daemon owner_http.py) and the CLI's lean path on it (issue 19,
item 4): a private socket, exact bytes, requests it cannot read refused with a clear status
and never a broken daemon, and the full CLI whenever the endpoint is not there."""

from __future__ import annotations

import json
import os
import random
import socket
import stat
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import DaemonProcess, cli_env, run_cli

from tailhub.client import InvalidRequestError


def _request(home: Path, raw: bytes, *, read_all: bool = True) -> tuple[int, bytes]:
    """Sends `raw` to owner.sock; the status and the body (to the connection's end)."""
    with socket.socket(socket.AF_UNIX) as sock:
        sock.settimeout(30)
        sock.connect(str(home / "owner.sock"))
        sock.sendall(raw)
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
            if not read_all and b"\r\n\r\n" in answer:
                break
    head, _, body = answer.partition(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1])
    return status, body


def _get(home: Path, target: str) -> tuple[int, bytes]:
    return _request(home, f"GET {target} HTTP/1.1\r\nHost: x\r\n\r\n".encode())


def _post(home: Path, body: bytes, extra: str = "") -> tuple[int, dict[str, object]]:
    head = f"POST /v1/jobs HTTP/1.1\r\nHost: x\r\nContent-Length: {len(body)}\r\n{extra}\r\n"
    status, answer = _request(home, head.encode() + body)
    return status, json.loads(answer)


def _frames(body: bytes) -> list[tuple[bytes, bytes]]:
    frames, at = [], 0
    while at < len(body):
        kind, size = body[at : at + 1], int.from_bytes(body[at + 1 : at + 5], "big")
        frames.append((kind, body[at + 5 : at + 5 + size]))
        at += 5 + size
    return frames


def test_the_endpoint_is_a_private_socket_beside_the_grpc_one(daemon: DaemonProcess) -> None:
    info = os.lstat(daemon.home / "owner.sock")
    assert stat.S_ISSOCK(info.st_mode)
    assert stat.S_IMODE(info.st_mode) == 0o600
    assert info.st_uid == os.geteuid()
    assert stat.S_IMODE(os.stat(daemon.home).st_mode) == 0o700


def test_a_binary_log_comes_byte_for_byte_through_the_endpoint_and_the_cli(
    daemon: DaemonProcess,
) -> None:
    data = bytes(range(256)) * 64 + random.Random(7).randbytes(600_000)
    with daemon.client() as client:
        job = client.attach_push("binary")
        for start in range(0, len(data), 100_000):
            client.publish(job.id, data[start : start + 100_000])
        client.finish(job.id, 0)
    status, body = _get(daemon.home, f"/v1/jobs/{job.id}/log?offset=0&follow=1")
    assert status == 200
    frames = _frames(body)
    chunks = [payload for kind, payload in frames if kind == b"C"]
    offsets = [int.from_bytes(chunk[:8], "big") for chunk in chunks]
    assert b"".join(chunk[8:] for chunk in chunks) == data
    assert offsets[0] == 0
    assert offsets == sorted(offsets)
    assert frames[-1] == (b"Z", b"SUCCEEDED\n0\n1\n%d\nfinished through the API" % len(data))
    done = run_cli(daemon.home, "jobs", "logs", str(job.id))
    assert (done.returncode, done.stdout, done.stderr) == (0, data, b"")
    tail = run_cli(daemon.home, "jobs", "logs", "--tail", "1", "--no-follow", str(job.id))
    assert tail.stdout == data[data.rindex(b"\n", 0, len(data) - 1) + 1 :]


@pytest.mark.parametrize(
    ("raw", "status", "said"),
    [
        (b"NONSENSE\r\n\r\n", 400, "not an HTTP/1.1 request line"),
        (b"GET /v1/jobs HTTP/1.1\r\nX-" + b"a" * 9000 + b": 1\r\n\r\n", 431, "over 8192 bytes"),
        (b"GET /v1/nothing HTTP/1.1\r\n\r\n", 404, "no such resource"),
        (b"DELETE /v1/jobs/1 HTTP/1.1\r\n\r\n", 405, "DELETE is not allowed"),
        (b"POST /v1/jobs HTTP/1.1\r\n\r\n", 411, "Content-Length"),
        (b"POST /v1/jobs HTTP/1.1\r\nContent-Length: 99999999999\r\n\r\n", 413, "over"),
        (b"POST /v1/jobs HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n", 501, "chunked"),
        (b"GET /v1/jobs?page_size=-1 HTTP/1.1\r\n\r\n", 400, "whole number"),
        (b"GET /v1/jobs/1/log?offset=1&offset=2 HTTP/1.1\r\n\r\n", 400, "given twice"),
        (b"GET /v1/jobs/1/log?offset=%ff HTTP/1.1\r\n\r\n", 400, "cannot be read"),
        (b"GET /v1/jobs/99/log HTTP/1.1\r\n\r\n", 404, "job 99 not found"),
    ],
)
def test_a_request_it_cannot_serve_is_refused_with_a_clear_status(
    daemon: DaemonProcess, raw: bytes, status: int, said: str
) -> None:
    got, body = _request(daemon.home, raw)
    assert got == status, body
    assert said in json.loads(body)["error"]["message"]
    # The daemon serves on, both ways.
    assert _get(daemon.home, "/v1/jobs")[0] == 200
    with daemon.client() as client:
        assert client.status().pid == daemon.pid


def test_a_launch_is_checked_as_launch_job_checks_it(daemon: DaemonProcess) -> None:
    for body, said in (
        (b"{not json", "not a JSON object"),
        (b"[1]", "not a JSON object"),
        (b'{"run": 3}', "run must be a string"),
        (b'{"run": "x", "envs": {"A": 1}}', "envs must be a string"),
        (b'{"run": "x", "oops": ""}', "unknown field 'oops'"),
        (b'{"run": "x", "name": "\\ud800"}', "not valid UTF-8"),
    ):
        status, answer = _post(daemon.home, body)
        assert status == 400, answer
        assert said in str(answer["error"]["message"])  # type: ignore[index]
    # What LaunchJob refuses, refused alike: the same kind and message.
    long_name = {"run": "true", "name": "n" * 300, "backend": "local"}
    status, answer = _post(daemon.home, json.dumps(long_name).encode())
    with daemon.client() as client, pytest.raises(InvalidRequestError) as refused:
        client.launch("true", name="n" * 300, backend="local")
    assert status == 400
    assert answer["error"] == {
        "status": "INVALID_ARGUMENT",
        "kind": "INVALID_REQUEST",
        "message": str(refused.value),
    }
    status, answer = _post(daemon.home, b'{"run": "echo hi", "name": "fine"}')
    assert status == 200
    launched = answer["job"]
    assert isinstance(launched, dict)
    assert launched["name"] == "fine"


def test_idle_connections_hold_nothing_up(daemon: DaemonProcess, tmp_path: Path) -> None:
    """Connections that never finish their request, and one gone mid-stream, while the CLI
    serves on at once."""
    idle = []
    for _ in range(50):
        sock = socket.socket(socket.AF_UNIX)
        sock.connect(str(daemon.home / "owner.sock"))
        sock.sendall(b"GET /v1/jobs HTTP/1.1\r\n")
        idle.append(sock)
    try:
        task = tmp_path / "t.yaml"
        task.write_text("run: echo fine\n")
        done = run_cli(daemon.home, "jobs", "launch", str(task), timeout=60)
        assert done.returncode == 0, done.stderr
        assert done.stdout == b"fine\n"
    finally:
        for sock in idle:
            sock.close()


def test_without_the_endpoint_the_cli_takes_the_grpc_way(daemon: DaemonProcess) -> None:
    """A daemon without it (an older one): same output, same exit code."""
    with daemon.client() as client:
        job = client.attach_push("old")
        client.publish(job.id, b"one\n\x00two\n")
        client.finish(job.id, 7, "seven")
    lean = run_cli(daemon.home, "jobs", "logs", str(job.id))
    (daemon.home / "owner.sock").unlink()
    full = run_cli(daemon.home, "jobs", "logs", str(job.id))
    missing = run_cli(daemon.home, "jobs", "logs", "4242")
    assert (full.returncode, full.stdout, full.stderr) == (
        lean.returncode,
        lean.stdout,
        lean.stderr,
    )
    assert full.returncode == 100
    assert full.stderr == f"tailhub: job {job.id} (old) failed: seven\n".encode()
    assert (missing.returncode, missing.stderr) == (102, b"tailhub: job 4242 not found\n")


@pytest.mark.root
@pytest.mark.parametrize("planted", ["owner.sock", "sock"])
def test_a_socket_of_someone_else_is_never_spoken_to(
    daemon: DaemonProcess, tmp_path: Path, planted: str
) -> None:
    """owner.sock of another user: the CLI takes the gRPC way (which checks its own socket);
    the gRPC socket of another user: refused as the gRPC client refuses it, nothing launched."""
    os.chown(daemon.home / planted, 65534, 65534)
    marker = tmp_path / "ran"
    task = tmp_path / "t.yaml"
    task.write_text(f"run: touch {marker}\n")
    try:
        done = subprocess.run(
            [
                sys.executable,
                "-X",
                "importtime",
                "-m",
                "tailhub.client",
                "jobs",
                "launch",
                str(task),
            ],
            env=cli_env(daemon.home),
            capture_output=True,
            timeout=120,
        )
    finally:
        os.chown(daemon.home / planted, 0, 0)
    said = [line for line in done.stderr.decode().splitlines() if "import time:" not in line]
    imported = {line.rsplit("|", 1)[-1].strip() for line in done.stderr.decode().splitlines()}
    took_grpc = "grpc" in imported
    if planted == "owner.sock":
        assert done.returncode == 0, said
        assert took_grpc
        assert marker.exists()
    else:
        assert done.returncode == 1
        assert said[0].startswith(f"tailhub: refusing {daemon.home / 'sock'}"), said
        assert not marker.exists()
