"""Essentials fail fast (DESIGN.md, invariant 9): a daemon-wide loop that dies stops the daemon.

Each essential task (faults.ESSENTIAL_TASKS) is made to raise with TAILHUB_FAIL_LOOP: health
turns NOT_SERVING (or the daemon is already gone), tailhubd exits 8 with the reason on stderr,
and its log names the task and the exception. Followers get the usual "daemon stopping" end,
and the state directory's lock is released for the next daemon.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import grpc
import pytest
from cluster_helpers import REPLAY, Cluster, upstream
from grpc_health.v1 import health_pb2, health_pb2_grpc
from helpers import DaemonProcess, one_line
from remote_helpers import free_port, tls_init

from tailhub.daemon import faults
from tailhub.daemon.errors import EssentialTaskDied
from tailhub.v1 import tailhub_pb2 as pb
from tailhub.v1 import tailhub_pb2_grpc as rpc

NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING
# A daemon alone runs these; a cluster node these too, and its own.
ALONE = (faults.HEARTBEAT, faults.RETENTION, faults.HEALTH, faults.HEAP_TRIM)
CLUSTER = (faults.KEEP_ALIVE, faults.TAKE_OVER, faults.RECORD_SYNC, faults.MIRROR)
CLUSTER_HEALTH = "tailhub.cluster"
# After serving: long enough for the test to watch the health service first.
DELAY = 1.0

pytestmark = pytest.mark.daemon_log_may_hold(
    "Traceback", reason="the injected crash is logged with its traceback, as a real one would be"
)


def _fail(name: str, delay: float = DELAY) -> dict[str, str]:
    return {faults.FAIL_LOOP_ENV: f"{name}:{delay}"}


def _health(daemon: DaemonProcess, service: str = "") -> tuple[list[int], bool]:
    """What the daemon's health says of `service` from now on; and whether the daemon went
    (the stream broken: its server stopped, its socket removed)."""
    seen: list[int] = []
    with grpc.insecure_channel(daemon.paths.address) as channel:
        watch = health_pb2_grpc.HealthStub(channel).Watch(
            health_pb2.HealthCheckRequest(service=service), timeout=60
        )
        try:
            for answer in watch:
                seen.append(int(answer.status))
        except grpc.RpcError as error:
            broken = error.code()
        else:
            return seen, False
    assert broken is not grpc.StatusCode.DEADLINE_EXCEEDED, seen  # (still serving after 60 s)
    return seen, True


def _stops_with_reason(daemon: DaemonProcess, name: str, service: str = "") -> None:
    """Health says NOT_SERVING or the daemon is gone; it exits 8; its log and stderr say why."""
    seen, gone = _health(daemon, service)
    assert NOT_SERVING in seen or gone, seen
    assert daemon.process is not None
    try:
        code = daemon.process.wait(60)
    except subprocess.TimeoutExpired:
        pytest.fail(f"the daemon still runs after {name} died:\n{daemon.log_text()}")
    assert code == EssentialTaskDied.exit_code, daemon.log_text()
    said = f"essential task '{name}' crashed: InjectedFault('{faults.FAIL_LOOP_ENV}={name}"
    # On stderr as its last line (the service manager's journal), and in tailhubd.log.
    output = daemon.log_text().strip().splitlines()
    assert output[-1].startswith(f"tailhubd: {said}"), output[-5:]
    log = (daemon.home / "tailhubd.log").read_text(errors="replace")
    assert said in log, log
    assert "ERROR" in next(line for line in log.splitlines() if said in line)
    assert f"{faults.FAIL_LOOP_ENV}={name} made it fail" in log  # the exception, traceback too


def test_every_essential_task_is_crashed_by_a_test() -> None:
    listeners = {faults.CERTIFICATE_CHECK, faults.CONNECTION_CAP}
    assert {*ALONE, *CLUSTER, *listeners} == faults.ESSENTIAL_TASKS


def test_a_bad_fault_is_refused_at_start(home: Path) -> None:
    # (What is refused, and how it is said: tests/unit/test_supervisor.py.)
    refused = subprocess.run(
        [sys.executable, "-m", "tailhub.daemon", "--home", str(home)],
        env={**os.environ, faults.FAIL_LOOP_ENV: "no-such-loop"},
        capture_output=True,
        timeout=60,
    )
    assert refused.returncode == 1, refused.stderr
    assert one_line(refused.stderr, f"tailhubd: {faults.FAIL_LOOP_ENV}: ")


@pytest.mark.parametrize("name", ALONE)
def test_a_crashed_essential_loop_stops_the_daemon(home: Path, name: str) -> None:
    daemon = DaemonProcess(home, args=["--heartbeat-interval", "0.5"], env=_fail(name))
    daemon.start()
    _stops_with_reason(daemon, name)


def test_a_crashed_certificate_check_stops_the_daemon(home: Path) -> None:
    tls = tls_init(home)
    listen = f"127.0.0.1:{free_port()}"
    daemon = DaemonProcess(
        home, args=["--listen", listen, *tls.flags], env=_fail(faults.CERTIFICATE_CHECK)
    )
    daemon.start()
    _stops_with_reason(daemon, faults.CERTIFICATE_CHECK)


def test_a_crashed_connection_cap_stops_the_daemon(home: Path) -> None:
    # Without its cap, one address could hold every --listen connection again.
    listen = f"127.0.0.1:{free_port()}"
    daemon = DaemonProcess(
        home, args=["--listen", listen, "--insecure"], env=_fail(faults.CONNECTION_CAP)
    )
    daemon.start()
    _stops_with_reason(daemon, faults.CONNECTION_CAP)


@pytest.mark.slow
@pytest.mark.parametrize("name", CLUSTER)
def test_a_crashed_cluster_loop_stops_the_node(cluster: Cluster, tmp_path: Path, name: str) -> None:
    # Two nodes: the one whose loop dies, holding a job's lease, and one that goes on.
    survivor = cluster.add("n0")
    node = cluster.add("n1", env=_fail(name, 2.0))
    log, state = upstream(tmp_path / "up", b"line\n")
    try:
        with node.client() as client:
            job = client.attach_command([sys.executable, REPLAY, str(log), str(state)])
        # The cluster's part of its health too: nothing says SERVING with dead leases.
        _stops_with_reason(node, name, CLUSTER_HEALTH)
        # Its lease is given back (or expires): the survivor fetches the job now.
        cluster.wait_for_holder(job.id, other_than=["n1"], on=survivor, timeout=30)
    finally:
        (state / "done").touch()


@pytest.mark.slow
def test_followers_are_told_the_daemon_stops_and_the_next_daemon_starts(home: Path) -> None:
    daemon = DaemonProcess(
        home, args=["--heartbeat-interval", "0.5"], env=_fail(faults.HEARTBEAT, 5.0)
    )
    daemon.start()
    with daemon.client() as client:
        job = client.attach_push()
        client.publish(job.id, b"first\n")
    with grpc.insecure_channel(daemon.paths.address) as channel:
        stream = rpc.TailhubServiceStub(channel).Subscribe(
            pb.SubscribeRequest(job_id=job.id, follow=True), timeout=60
        )
        with pytest.raises(grpc.RpcError) as ended:
            for _ in stream:
                pass
    assert ended.value.code() is grpc.StatusCode.UNAVAILABLE, ended.value
    assert "stopping" in (ended.value.details() or ""), ended.value.details()
    assert daemon.process is not None
    assert daemon.process.wait(60) == EssentialTaskDied.exit_code
    # The lock and the socket were given up: the next daemon (the service manager's
    # restart) starts at once and serves the job as it was.
    again = DaemonProcess(home)
    again.start()
    try:
        with again.client() as client:
            assert client.get(job.id).log_size == len(b"first\n")
    finally:
        assert again.stop() == 0
