"""The web view's listener as the daemon reports and configures it: listed by
GetDaemonStatus, `tailhub daemon status` and `tailhub doctor` as a "web" listener, never taken
for a gRPC one; `http-listen:` in `tailhubd --config FILE`; a TLS listener on a non-loopback
address answering only to its certificate's names."""

from __future__ import annotations

import contextlib
import http.client
import json
import socket
import ssl
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from urllib.parse import urlsplit

from helpers import DaemonProcess, run_cli, wait_until

from harness.ports import free_port
from tailhub.client._types import ListenerInfo

TAILHUBD = str(Path(sys.executable).parent / "tailhubd")
NOT_LOOPBACK = "is not a loopback address: the web view needs TLS"


def _lines(done: subprocess.CompletedProcess[bytes]) -> list[str]:
    assert done.returncode == 0, done.stderr
    return done.stdout.decode().splitlines()


def _session(home: Path, port: int) -> str:
    """A session cookie, as a browser gets it from `tailhub web`'s link."""
    url = urlsplit(_lines(run_cli(home, "web"))[0])
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    connection.request("GET", f"{url.path}?{url.query}")
    response = connection.getresponse()
    response.read()
    connection.close()
    assert response.status == 303, response.status
    return (response.getheader("Set-Cookie") or "").split(";", 1)[0].partition("=")[2]


def _config(directory: Path, text: str) -> Path:
    path = directory / "tailhubd.yaml"
    path.write_text(text)
    path.chmod(0o600)
    return path


def test_status_lists_the_web_listener_apart_from_the_grpc_ones(
    home: Path, start_daemon: Callable[..., DaemonProcess]
) -> None:
    web, grpc = free_port(), free_port()
    daemon = start_daemon(
        "--http-listen", f"127.0.0.1:{web}", "--listen", f"127.0.0.1:{grpc}", "--insecure"
    )
    with daemon.client() as client:
        status = client.status()
    assert status.listeners == (
        ListenerInfo(f"127.0.0.1:{grpc}", "plaintext", kind="grpc"),
        ListenerInfo(f"127.0.0.1:{web}", "plaintext", kind="web"),
    )
    assert status.max_jobs_per_token == 1000
    shown = _lines(run_cli(home, "daemon", "status"))
    assert f"grpc listener:        127.0.0.1:{grpc} (plaintext)" in shown
    assert f"web listener:         127.0.0.1:{web} (plaintext)" in shown
    as_json = json.loads(run_cli(home, "daemon", "status", "--json").stdout)
    assert [(each["kind"], each["address"]) for each in as_json["listeners"]] == [
        ("grpc", f"127.0.0.1:{grpc}"),
        ("web", f"127.0.0.1:{web}"),
    ]
    doctor = run_cli(home, "doctor")
    serving = [line for line in doctor.stdout.decode().splitlines() if "serving:" in line]
    assert serving == [
        f"info  serving: socket {home}/sock; 127.0.0.1:{grpc} (plaintext); "
        f"web view on http://127.0.0.1:{web}"
    ]


def test_a_web_view_alone_is_no_grpc_listener(
    home: Path, start_daemon: Callable[..., DaemonProcess]
) -> None:
    web = free_port()
    daemon = start_daemon("--http-listen", f"127.0.0.1:{web}")
    with daemon.client() as client:
        status = client.status()
    assert status.listeners == (ListenerInfo(f"127.0.0.1:{web}", "plaintext", kind="web"),)
    # The limits of tokens' gRPC calls are not in force: no gRPC listener takes a token.
    assert (status.max_jobs_per_token, status.max_streams, status.max_streams_per_token) == (
        0,
        0,
        0,
    )
    assert "grpc listener:" not in run_cli(home, "daemon", "status").stdout.decode()


def test_http_listen_works_from_the_config_file(
    home: Path, start_daemon: Callable[..., DaemonProcess], workdir: Path
) -> None:
    port = free_port()
    # Both spellings of a name, as for every option of the file.
    config = _config(workdir, f"http-listen: 127.0.0.1:{port}\nhttp_max_streams_per_session: 1\n")
    daemon = start_daemon("--config", str(config))
    cookie = _session(home, port)
    headers = {"Cookie": f"tailhub_session={cookie}"}
    held = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    held.request("GET", "/api/events/jobs", headers=headers)
    assert held.getresponse().status == 200
    # The file's limit is the one applied: a second stream of the same login is refused.
    second = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    second.request("GET", "/api/events/jobs", headers=headers)
    refused = second.getresponse()
    assert refused.status == 429
    assert "--http-max-streams-per-session" in json.loads(refused.read())["error"]
    second.close()
    held.close()
    with daemon.client() as client:
        assert [each.kind for each in client.status().listeners] == ["web"]


def test_a_non_loopback_http_listen_in_the_config_file_is_refused_as_on_the_command_line(
    home: Path, workdir: Path
) -> None:
    address = f"0.0.0.0:{free_port()}"  # noqa: S104 - refused before anything is bound
    config = _config(workdir, f"http-listen: {address}\n")
    refusals = [
        subprocess.run(
            [TAILHUBD, "--home", str(home), *args], capture_output=True, text=True, timeout=60
        )
        for args in (["--config", str(config)], ["--http-listen", address])
    ]
    for refused in refusals:
        assert refused.returncode == 2, refused.stderr
        assert NOT_LOOPBACK in refused.stderr
        assert "Traceback" not in refused.stderr
    assert refusals[0].stderr == refusals[1].stderr
    assert not (home / "tailhubd.log").exists()


def test_a_tls_web_view_answers_only_to_its_certificates_names(
    home: Path, start_daemon: Callable[..., DaemonProcess]
) -> None:
    made = run_cli(home, "daemon", "tls-init")
    assert made.returncode == 0, made.stderr
    tls_flags = made.stdout.decode().split()
    port = free_port()
    daemon = start_daemon("--http-listen", f"0.0.0.0:{port}", *tls_flags)  # noqa: S104
    with daemon.client() as client:
        [listener] = client.status().listeners
    assert (listener.kind, listener.address, listener.security) == (
        "web",
        f"0.0.0.0:{port}",
        "tls",
    )
    assert listener.certificate_path == f"{home}/tls/server.pem"
    assert listener.certificate_not_after is not None
    context = ssl.create_default_context(cafile=str(home / "tls" / "ca.pem"))
    context.check_hostname = False  # the Host header is what is tested, not the handshake

    def status(host: str) -> int:
        connection = http.client.HTTPSConnection("127.0.0.1", port, context=context, timeout=30)
        connection.request("GET", "/api/jobs", headers={"Host": host})
        response = connection.getresponse()
        response.read()
        connection.close()
        return response.status

    # The certificate's names (tls-init: loopback and this machine's name): no session yet.
    for host in ("localhost", "127.0.0.1", "[::1]", socket.gethostname()):
        assert status(f"{host}:{port}") == 401, host
    assert status(f"evil.example:{port}") == 421
    assert status(f"0.0.0.0:{port}") == 421
    assert status(f"localhost:{port + 1}") == 421


def _half_open(port: int) -> socket.socket:
    """A connection that starts a request and never ends its head (a slowloris)."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=30)
    sock.sendall(f"GET / HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n".encode())
    return sock


def _closed_by_daemon(sock: socket.socket) -> bool:
    """Whether the daemon has closed `sock` (without waiting: a poll's step)."""
    sock.setblocking(False)
    try:
        return sock.recv(1) == b""
    except BlockingIOError:
        return False
    except ConnectionError:
        return True
    finally:
        sock.setblocking(True)


def test_connections_past_the_per_address_cap_are_closed_at_once_and_the_daemon_answers(
    home: Path, start_daemon: Callable[..., DaemonProcess]
) -> None:
    port = free_port()
    start_daemon(
        "--http-listen",
        f"127.0.0.1:{port}",
        "--http-max-connections-per-peer",
        "8",
        "--http-request-timeout",
        "600",  # (the deadline is another test's)
    )
    held = [_half_open(port) for _ in range(8)]
    extra = [_half_open(port) for _ in range(12)]
    try:
        wait_until(
            lambda: all(_closed_by_daemon(sock) for sock in extra), 20, "the extra ones closed"
        )
        assert not any(_closed_by_daemon(sock) for sock in held)
        # The owner's daemon still answers on its socket.
        status = run_cli(home, "daemon", "status")
        assert status.returncode == 0, status.stderr
        assert f"127.0.0.1:{port}" in status.stdout.decode()
        # A place freed is a place to take: a whole request gets its answer.
        held.pop().close()

        def answered() -> bool:
            connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
            try:
                connection.request("GET", "/api/jobs")
                return connection.getresponse().status == 401
            except ConnectionError:
                return False
            finally:
                connection.close()

        wait_until(answered, 20, "a new connection served")
    finally:
        for sock in held + extra:
            sock.close()


def test_a_connection_without_a_whole_request_in_time_is_closed(
    home: Path, start_daemon: Callable[..., DaemonProcess]
) -> None:
    port = free_port()
    start_daemon("--http-listen", f"127.0.0.1:{port}", "--http-request-timeout", "0.5")
    half_open = _half_open(port)
    silent = socket.create_connection(("127.0.0.1", port), timeout=30)
    try:

        def trickles_until_closed() -> bool:
            """A header line at each look, as a slowloris sends (never the blank line)."""
            if _closed_by_daemon(half_open):
                return True
            with contextlib.suppress(OSError):
                half_open.sendall(b"X-More: y\r\n")
            return False

        wait_until(trickles_until_closed, 20, "the half-open one closed")
        wait_until(lambda: _closed_by_daemon(silent), 20, "the silent one closed")
    finally:
        half_open.close()
        silent.close()


def test_a_tls_handshake_not_finished_in_time_is_closed(
    home: Path, start_daemon: Callable[..., DaemonProcess]
) -> None:
    made = run_cli(home, "daemon", "tls-init")
    assert made.returncode == 0, made.stderr
    port = free_port()
    start_daemon(
        "--http-listen",
        f"0.0.0.0:{port}",  # noqa: S104
        *made.stdout.decode().split(),
        "--http-request-timeout",
        "0.5",
    )
    stalled = socket.create_connection(("127.0.0.1", port), timeout=30)
    try:
        wait_until(lambda: _closed_by_daemon(stalled), 20, "the handshake dropped")
    finally:
        stalled.close()
    # A whole handshake and request in time is served.
    context = ssl.create_default_context(cafile=str(home / "tls" / "ca.pem"))
    connection = http.client.HTTPSConnection("localhost", port, context=context, timeout=30)
    connection.request("GET", "/api/jobs")
    assert connection.getresponse().status == 401
    connection.close()
