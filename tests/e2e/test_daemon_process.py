"""The daemon as a process: its socket, its lock, the standard gRPC services, its stop."""

from __future__ import annotations

import json
import stat
import subprocess
import sys
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc
from helpers import DaemonProcess, run_cli

from tailhub.v1 import tailhub_pb2 as pb
from tailhub.v1 import tailhub_pb2_grpc as rpc


def test_state_directory_and_socket_are_private(daemon: DaemonProcess) -> None:
    assert stat.S_IMODE(daemon.home.stat().st_mode) == 0o700
    socket_mode = daemon.paths.socket.stat().st_mode
    assert stat.S_ISSOCK(socket_mode)
    assert stat.S_IMODE(socket_mode) == 0o600


def test_second_daemon_on_same_home_is_refused_and_first_keeps_serving(
    daemon: DaemonProcess,
) -> None:
    second = subprocess.run(
        [sys.executable, "-m", "tailhub.daemon", "--home", str(daemon.home)],
        capture_output=True,
        timeout=60,
    )
    assert second.returncode == 3
    assert b"another tailhubd already serves" in second.stderr
    assert str(daemon.pid).encode() in second.stderr
    # The socket still belongs to the first daemon.
    with daemon.client() as client:
        assert client.status().pid == daemon.pid


def test_health_and_reflection_are_served(daemon: DaemonProcess) -> None:
    with grpc.insecure_channel(daemon.paths.address) as channel:
        health = health_pb2_grpc.HealthStub(channel)
        answer = health.Check(
            health_pb2.HealthCheckRequest(service="tailhub.v1.TailhubService"), timeout=10
        )
        assert answer.status == health_pb2.HealthCheckResponse.SERVING

        reflection = reflection_pb2_grpc.ServerReflectionStub(channel)
        request = reflection_pb2.ServerReflectionRequest(list_services="")
        responses = list(reflection.ServerReflectionInfo(iter([request]), timeout=10))
        names = {service.name for service in responses[0].list_services_response.service}
        assert "tailhub.v1.TailhubService" in names
        assert "grpc.health.v1.Health" in names


def test_unknown_job_is_not_found_over_grpc(daemon: DaemonProcess) -> None:
    with grpc.insecure_channel(daemon.paths.address) as channel:
        stub = rpc.TailhubServiceStub(channel)
        with pytest.raises(grpc.RpcError) as raised:
            stub.GetJob(pb.GetJobRequest(job_id=424242), timeout=10)
        error = raised.value
        assert error.code() is grpc.StatusCode.NOT_FOUND
        assert "424242" in (error.details() or "")


def test_sigterm_stops_cleanly_and_removes_socket(daemon: DaemonProcess) -> None:
    assert daemon.stop() == 0
    assert not daemon.paths.socket.exists()
    assert not daemon.paths.pid.exists()


def test_too_long_home_is_a_clear_error(tmp_path: Path) -> None:
    home = tmp_path / ("x" * 120)
    result = run_cli(home, "jobs", "queue")
    assert result.returncode != 0
    assert b"too long for a Unix socket path" in result.stderr
    assert b"Traceback" not in result.stderr


def test_status_json_carries_only_the_daemons_fields(daemon: DaemonProcess) -> None:
    shown = run_cli(daemon.home, "daemon", "status", "--json")
    assert shown.returncode == 0, shown.stderr
    fields = json.loads(shown.stdout)
    assert daemon.process is not None
    assert fields["pid"] == daemon.process.pid
    # Job fields (a job's backend, its SkyPilot id) have no meaning for a daemon.
    assert "backend" not in fields
    assert "external_id" not in fields
