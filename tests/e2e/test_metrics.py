"""`tailhubd --metrics-listen`: Prometheus scrapes `/metrics` and its figures move with real
traffic; the endpoint is bounded, and an address in use is one line and an exit code."""

from __future__ import annotations

import contextlib
import shlex
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path

import grpc
import pytest
from helpers import BackgroundCli, DaemonProcess, run_cli, wait_until
from job_helpers import Gate, write_task
from prometheus_client.parser import text_string_to_metric_families
from remote_helpers import bearer, create_token, free_port, status_of, tls_init
from remote_helpers import stub as remote_stub

from tailhub.client import JobNotFoundError, LogChunk
from tailhub.daemon.metrics import MAX_CONNECTIONS, MAX_REQUEST_BYTES, REQUEST_TIMEOUT
from tailhub.v1 import tailhub_pb2 as pb

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]

# Prints a line, waits at the gate (so that the job is RUNNING and followed at once), then
# prints more.
TASK = """\
name: metered
run: |
  echo "first line"
  flock --shared "$GATE" true
  seq 1 3000
"""
SERVICE = "tailhub.v1.TailhubService"
OWNER = "tailhub.owner"  # the owner endpoint's requests (the CLI's lean path)
# Never through a proxy from the environment: the daemon is on this machine.
_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))


@pytest.fixture
def port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        number: int = probe.getsockname()[1]
    return number


def _get(port: int, path: str = "/metrics") -> tuple[int, str]:
    try:
        with _OPENER.open(f"http://127.0.0.1:{port}{path}", timeout=10) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, error.read().decode()


def scrape(port: int) -> Samples:
    """Every sample of a real scrape, parsed as Prometheus would, by (name, labels)."""
    status, text = _get(port)
    assert status == 200, text
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def rpcs_of(samples: Samples, service: str, method: str, code: str) -> float:
    return value(samples, "tailhub_rpcs_total", service=service, method=method, code=code)


def rpcs(samples: Samples, method: str, code: str) -> float:
    return value(samples, "tailhub_rpcs_total", service=SERVICE, method=method, code=code)


def test_figures_move_with_real_traffic(
    start_daemon: Callable[..., DaemonProcess],
    background_cli: Callable[..., BackgroundCli],
    workdir: Path,
    port: int,
) -> None:
    daemon = start_daemon("--metrics-listen", f"127.0.0.1:{port}")
    before = scrape(port)
    assert value(before, "tailhub_jobs", state="RUNNING") == 0
    assert value(before, "tailhub_fetched_bytes_total") == 0
    gate = Gate.closed(workdir / "gate")
    try:
        task = write_task(workdir, TASK)
        launched = run_cli(
            daemon.home, "jobs", "launch", str(task), "--async", "--env", f"GATE={gate.path}"
        )
        assert launched.returncode == 0, launched.stderr
        job_id = launched.stdout.decode().strip()
        follower = background_cli("jobs", "logs", job_id, "--follow")
        follower.wait_for_stdout(b"first line\n")

        # Running, followed, its upstream open: as a scrape reads it now.
        def live() -> bool:
            now = scrape(port)
            return (
                value(now, "tailhub_subscribers") == 1
                and value(now, "tailhub_jobs", state="RUNNING") == 1
                and value(now, "tailhub_upstream_connections_open") == 1
            )

        wait_until(live, what="one subscriber of one running job with its upstream open")
        with daemon.client() as client, pytest.raises(JobNotFoundError):
            client.get(999_999)
    finally:
        gate.open()
    assert follower.wait() == 0, follower.stderr
    with daemon.client() as client:
        wait_until(lambda: client.get(int(job_id)).sealed, what="the job to be sealed")
        log_size = client.get(int(job_id)).log_size
    assert log_size == len(follower.stdout) > len(b"first line\n")

    # The server may see the follower's stream end a moment after the follower exited.
    wait_until(lambda: value(scrape(port), "tailhub_subscribers") == 0, what="no subscriber")
    after = scrape(port)
    assert value(after, "tailhub_jobs", state="SUCCEEDED") == 1
    assert value(after, "tailhub_jobs", state="RUNNING") == 0
    assert value(after, "tailhub_upstream_connections_open") == 0
    assert value(after, "tailhub_upstream_connections_opened_total") == 1
    assert value(after, "tailhub_upstream_reconnects_total") == 0
    assert value(after, "tailhub_fetched_bytes_total") == log_size
    # One follower, which read the whole log once.
    assert value(after, "tailhub_served_bytes_total") == log_size
    lag_count = value(after, "tailhub_subscriber_lag_bytes_count")
    assert lag_count > 0
    assert value(after, "tailhub_subscriber_lag_bytes_bucket", le="+Inf") == lag_count
    # Per RPC, by status code: the unknown job's NOT_FOUND among them. The CLI launched and
    # followed through the owner endpoint (its lean path), counted as the RPCs they stand for.
    assert rpcs_of(after, OWNER, "LaunchJob", "OK") - rpcs_of(before, OWNER, "LaunchJob", "OK") == 1
    wait_until(
        lambda: rpcs_of(scrape(port), OWNER, "Subscribe", "OK") == 1, what="the follow counted"
    )
    assert rpcs(after, "GetJob", "NOT_FOUND") - rpcs(before, "GetJob", "NOT_FOUND") == 1
    # No job id or name in any label.
    labels = {label for _, pairs in after for label in pairs}
    assert {name for name, _ in labels} <= {"state", "service", "method", "code", "le"}
    assert not any("metered" in text for _, text in labels)

    # The same log followed by a program over gRPC: its Subscribe ends OK, or CANCELLED when
    # the client closed it on the final message before the server's status came.
    with daemon.client() as client:
        assert b"".join(
            item.data for item in client.follow(int(job_id)) if isinstance(item, LogChunk)
        ) == bytes(follower.stdout)

    def grpc_follows() -> float:
        return sum(rpcs(scrape(port), "Subscribe", code) for code in ("OK", "CANCELLED"))

    wait_until(lambda: grpc_follows() == 1, what="the gRPC follow counted")


def test_reconnects_count_connections_beyond_the_first(
    start_daemon: Callable[..., DaemonProcess], workdir: Path, port: int
) -> None:
    daemon = start_daemon("--metrics-listen", f"127.0.0.1:{port}")
    marker = workdir / "failed-once"
    # Fails its first connection the way ssh does (exit 255), then sends its bytes.
    script = (
        f"if [ ! -e {shlex.quote(str(marker))} ]; then touch {shlex.quote(str(marker))}; "
        "exit 255; fi; printf 'abc\\n'"
    )
    attached = run_cli(daemon.home, "jobs", "attach", "--command", f"bash -c {shlex.quote(script)}")
    assert attached.returncode == 0, attached.stderr
    job_id = int(attached.stdout)
    with daemon.client() as client:
        wait_until(lambda: client.get(job_id).sealed, what="the job to end")

    samples = scrape(port)
    assert value(samples, "tailhub_upstream_connections_opened_total") == 2
    assert value(samples, "tailhub_upstream_reconnects_total") == 1
    assert value(samples, "tailhub_fetched_bytes_total") == len(b"abc\n")


def test_only_metrics_is_served_and_requests_are_bounded(
    start_daemon: Callable[..., DaemonProcess], port: int
) -> None:
    start_daemon("--metrics-listen", f"127.0.0.1:{port}")
    assert _get(port, "/")[0] == 404
    assert _get(port, "/metrics/../secret")[0] == 404
    assert _get(port, "/metrics?name[]=tailhub_jobs")[0] == 200
    with socket.create_connection(("127.0.0.1", port), timeout=10) as big:
        big.sendall(b"GET /metrics HTTP/1.1\r\nX: " + b"a" * MAX_REQUEST_BYTES + b"\r\n\r\n")
        assert big.recv(100).startswith(b"HTTP/1.1 431 ")
    with socket.create_connection(("127.0.0.1", port), timeout=10) as garbage:
        garbage.sendall(b"\x16\x03\x01 not http\r\n\r\n")
        assert garbage.recv(100).startswith(b"HTTP/1.1 400 ")

    # Idle connections filling every slot do not keep a scrape out.
    idle = [socket.create_connection(("127.0.0.1", port)) for _ in range(MAX_CONNECTIONS * 2)]
    try:
        assert scrape(port)
    finally:
        for each in idle:
            each.close()
    # A client that sends half a request and nothing more is dropped after the timeout, and
    # is no obstacle to a scrape meanwhile.
    with socket.create_connection(("127.0.0.1", port), timeout=REQUEST_TIMEOUT + 20) as slow:
        slow.sendall(b"GET /met")
        opened = time.monotonic()
        assert scrape(port)
        assert slow.recv(100) == b""
        assert REQUEST_TIMEOUT - 1 < time.monotonic() - opened < REQUEST_TIMEOUT + 10


def test_an_address_in_use_is_one_line_and_exit_code_5(home: Path, port: int) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", port))
        taken.listen()
        daemon = subprocess.run(
            [sys.executable, "-m", "tailhub.daemon", "--home", str(home)]
            + ["--metrics-listen", f"127.0.0.1:{port}"],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert daemon.returncode == 5
        assert daemon.stderr.splitlines()[-1] == (
            f"tailhubd: cannot serve metrics on 127.0.0.1:{port}: address already in use "
            "(--metrics-listen)"
        ), daemon.stderr
        assert "Traceback" not in daemon.stderr
        # `daemon start` passes the flag on, and reports the daemon's line.
        started = run_cli(home, "daemon", "start", "--metrics-listen", f"127.0.0.1:{port}")
        assert started.returncode == 104
        assert "address already in use (--metrics-listen)" in started.stderr.decode()
    assert run_cli(home, "daemon", "start", "--metrics-listen", ":9100").returncode == 2


def test_daemon_start_passes_metrics_listen_on(home: Path, port: int) -> None:
    started = run_cli(home, "daemon", "start", "--metrics-listen", f"127.0.0.1:{port}")
    try:
        assert started.returncode == 0, started.stderr
        assert value(scrape(port), "tailhub_jobs", state="RUNNING") == 0
    finally:
        assert run_cli(home, "daemon", "stop").returncode == 0
    with (
        pytest.raises(ConnectionRefusedError),
        socket.create_connection(("127.0.0.1", port), timeout=5),
    ):
        pass  # the endpoint went with the daemon


def test_calls_over_a_tls_listener_are_counted_refusals_included(
    home: Path, start_daemon: Callable[..., DaemonProcess], port: int
) -> None:
    tls = tls_init(home)
    address = f"127.0.0.1:{free_port()}"
    start_daemon("--listen", address, *tls.flags, "--metrics-listen", f"127.0.0.1:{port}")
    read_token = create_token(home, "read")
    channel, stub = remote_stub(address, tls.ca_pem)
    with channel:
        assert status_of(lambda: stub.ListJobs(pb.ListJobsRequest())) is (
            grpc.StatusCode.UNAUTHENTICATED
        )
        request = pb.LaunchJobRequest(run="true")
        launch = lambda: stub.LaunchJob(request, metadata=bearer(read_token))  # noqa: E731
        assert status_of(launch) is grpc.StatusCode.PERMISSION_DENIED
        stub.ListJobs(pb.ListJobsRequest(), metadata=bearer(read_token))
        # Paths anyone can make up, without a token: counted, never labels (else each one
        # would be a new series, kept for good).
        for made_up in ("/evil1.Svc/M1", "/evil2.Svc/M2"):
            call = channel.unary_unary(made_up, None, None)
            assert status_of(lambda: call(b"")) is grpc.StatusCode.UNAUTHENTICATED
    # A call is counted once its status is sent: the last may land a moment after the client
    # has its answer.
    expected = {
        ("unknown", "UNAUTHENTICATED"): 2,
        ("ListJobs", "UNAUTHENTICATED"): 1,
        ("LaunchJob", "PERMISSION_DENIED"): 1,
        ("ListJobs", "OK"): 1,
    }

    def counted() -> dict[tuple[str, str], float]:
        samples = scrape(port)
        assert not [key for key in samples if "evil" in repr(key)]
        return {
            ("unknown", "UNAUTHENTICATED"): rpcs_of(
                samples, "unknown", "unknown", "UNAUTHENTICATED"
            ),
            ("ListJobs", "UNAUTHENTICATED"): rpcs(samples, "ListJobs", "UNAUTHENTICATED"),
            ("LaunchJob", "PERMISSION_DENIED"): rpcs(samples, "LaunchJob", "PERMISSION_DENIED"),
            ("ListJobs", "OK"): rpcs(samples, "ListJobs", "OK"),
        }

    with contextlib.suppress(TimeoutError):
        wait_until(lambda: counted() == expected, 10, "every call to be counted")
    assert counted() == expected


@pytest.mark.parametrize(
    "accept",
    [
        "text/plain; version=x",
        "application/openmetrics-text; version=x",
        "application/openmetrics-text; version=",
        "*/*; q=zz, \x7f",
    ],
)
def test_an_odd_accept_header_gets_the_default_format_never_a_traceback(
    daemon_with_metrics: tuple[DaemonProcess, int], accept: str
) -> None:
    daemon, port = daemon_with_metrics
    with socket.create_connection(("127.0.0.1", port), timeout=10) as client:
        client.sendall(f"GET /metrics HTTP/1.1\r\nAccept: {accept}\r\n\r\n".encode("latin-1"))
        answer = b""
        while chunk := client.recv(65536):
            answer += chunk
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200 ")
    assert b"\ntailhub_subscribers 0" in body
    # The daemon's log (checked for tracebacks when the test ends) got no line for it.
    assert "metrics request failed" not in daemon.log_text()


@pytest.fixture
def daemon_with_metrics(
    start_daemon: Callable[..., DaemonProcess], port: int
) -> tuple[DaemonProcess, int]:
    return start_daemon("--metrics-listen", f"127.0.0.1:{port}"), port


def test_a_tls_listener_exports_its_certificate_expiry_and_the_daemon_warns_of_it(
    start_daemon: Callable[..., DaemonProcess], port: int, workdir: Path
) -> None:
    from cryptography import x509
    from remote_helpers import self_signed_pair

    cert, key = self_signed_pair(workdir, "soon", days=(-1, 5))
    address = f"127.0.0.1:{free_port()}"
    daemon = start_daemon(
        "--listen", address, "--tls-cert", str(cert), "--tls-key", str(key),
        "--metrics-listen", f"127.0.0.1:{port}",
    )  # fmt: skip
    not_after = x509.load_pem_x509_certificate(cert.read_bytes()).not_valid_after_utc
    expiry = value(scrape(port), "tailhub_tls_certificate_expiry_seconds", listener=address)
    assert expiry == not_after.timestamp()
    # Within 14 days: one warning at start, with the date (again daily while it runs).
    warnings = [line for line in daemon.log_text().splitlines() if "expires on" in line]
    assert len(warnings) == 1, daemon.log_text()
    assert " WARNING " in warnings[0], warnings
    assert f"{not_after:%Y-%m-%d %H:%M} UTC, in 5.0 days" in warnings[0], warnings
