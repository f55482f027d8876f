"""The web view's listener as the daemon reports and configures it: listed by
GetDaemonStatus, `tailhub daemon status` and `tailhub doctor` as a "web" listener, never taken
for a gRPC one; `http-listen:` in `tailhubd --config FILE`; a TLS listener on a non-loopback
address answering only to its certificate's names."""

from __future__ import annotations

import http.client
import json
import socket
import ssl
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from urllib.parse import urlsplit

from helpers import DaemonProcess, run_cli

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
