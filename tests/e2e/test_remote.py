"""The daemon over TCP with TLS and tokens: roles, revocation, the CLI with --server, a
follower across a restart, and the bad input a network brings (README "Remote access")."""

from __future__ import annotations

import os
import stat
from collections.abc import Callable, Iterator
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from helpers import BackgroundCli, DaemonProcess, run_cli, wait_until
from remote_helpers import (
    Remote,
    bearer,
    create_token,
    free_port,
    status_of,
    stub,
    tls_init,
    write_token,
)

from tailhub.daemon.listeners import MAX_STREAMS_PER_CONNECTION
from tailhub.v1 import tailhub_pb2 as pb
from tailhub.v1 import tailhub_pb2_grpc as rpc

OK = grpc.StatusCode.OK
Metadata = tuple[tuple[str, str | bytes], ...]
DENIED = grpc.StatusCode.PERMISSION_DENIED
UNAUTHENTICATED = grpc.StatusCode.UNAUTHENTICATED


@pytest.fixture
def remote(home: Path, start_daemon: Callable[..., DaemonProcess]) -> Remote:
    tls = tls_init(home)
    address = f"127.0.0.1:{free_port()}"
    daemon = start_daemon("--listen", address, *tls.flags)
    return Remote(daemon, address, tls, home.parent / "elsewhere")


@pytest.fixture
def tokens(home: Path, remote: Remote) -> dict[str, str]:
    """One token of each role, made as `tailhub token create` makes them (the CLI itself is
    tested once, below: each run costs a second on a loaded machine)."""
    from tailhub.daemon import tokens

    return {
        role: tokens.create_token(home, tokens.Role[role.upper()])[0]
        for role in ("read", "write", "admin")
    }


@pytest.fixture
def token_files(tokens: dict[str, str], workdir: Path) -> dict[str, Path]:
    return {role: write_token(workdir, role, token) for role, token in tokens.items()}


@pytest.fixture
def channel(remote: Remote) -> Iterator[tuple[grpc.Channel, rpc.TailhubServiceStub]]:
    opened, service = stub(remote.address, remote.tls.ca_pem)
    try:
        yield opened, service
    finally:
        opened.close()


def test_tls_init_keys_are_private_and_tokens_are_stored_as_hashes(
    home: Path, remote: Remote, tokens: dict[str, str]
) -> None:
    tokens = {**tokens, "cli": create_token(home, "read", "from-cli")}
    for key in ("ca.key", "server.key"):
        assert stat.S_IMODE((home / "tls" / key).stat().st_mode) == 0o600
    store = home / "tokens.json"
    assert stat.S_IMODE(store.stat().st_mode) == 0o600
    text = store.read_text()
    listed = run_cli(home, "token", "list")
    assert listed.returncode == 0, listed.stderr
    for token in tokens.values():
        assert token not in text
        assert token.encode() not in listed.stdout
    assert [line.split()[:2] for line in listed.stdout.decode().splitlines()[1:]] == [
        ["read-1", "read"],
        ["write-2", "write"],
        ["admin-3", "admin"],
        ["from-cli", "read"],
    ]


def test_each_role_gets_its_calls_and_is_refused_the_next_roles(
    remote: Remote,
    tokens: dict[str, str],
    channel: tuple[grpc.Channel, rpc.TailhubServiceStub],
    workdir: Path,
) -> None:
    opened, api = channel
    read, write, admin = (bearer(tokens[role]) for role in ("read", "write", "admin"))

    def call(method: str, request: object, metadata: Metadata | None) -> object:
        return getattr(api, method)(request, metadata=metadata or (), timeout=20)

    # The owner's socket: launch a local job (no token there).
    with remote.daemon.client() as owner:
        launched = owner.launch("sleep 30", name="owned", workdir=str(workdir))
        pushed = owner.attach_push("pushed")
    job_list = pb.ListJobsRequest()

    # No token, a wrong one: UNAUTHENTICATED, even for the cheapest call.
    assert status_of(lambda: call("ListJobs", job_list, None)) is UNAUTHENTICATED
    assert status_of(lambda: call("ListJobs", job_list, bearer("thk_nope"))) is UNAUTHENTICATED

    # read: look and follow; not publish, attach or launch.
    assert status_of(lambda: call("ListJobs", job_list, read)) is OK
    assert status_of(lambda: call("GetJob", pb.GetJobRequest(job_id=pushed.id), read)) is OK
    assert status_of(lambda: call("GetDaemonStatus", pb.GetDaemonStatusRequest(), read)) is OK
    health = health_pb2_grpc.HealthStub(opened)
    checked = health.Check(health_pb2.HealthCheckRequest(), metadata=read, timeout=20)
    assert checked.status == health_pb2.HealthCheckResponse.SERVING
    publish = pb.PublishRequest(job_id=pushed.id, data=b"from write\n")
    assert status_of(lambda: call("Publish", publish, read)) is DENIED
    attach_push = pb.AttachJobRequest(name="remote", push=pb.PushSource())
    assert status_of(lambda: call("AttachJob", attach_push, read)) is DENIED

    # write: push jobs and attached ones; not files, commands, launches or removal.
    assert status_of(lambda: call("AttachJob", attach_push, write)) is OK
    assert status_of(lambda: call("Publish", publish, write)) is OK
    attach_file = pb.AttachJobRequest(file=pb.FileSource(path="/etc/hostname"))
    assert status_of(lambda: call("AttachJob", attach_file, write)) is DENIED
    attach_command = pb.AttachJobRequest(command=pb.CommandSource(argv=["id"]))
    assert status_of(lambda: call("AttachJob", attach_command, write)) is DENIED
    launch = pb.LaunchJobRequest(run="id", workdir=str(workdir))
    assert status_of(lambda: call("LaunchJob", launch, write)) is DENIED
    cancel_launched = pb.CancelJobsRequest(job_ids=[launched.id])
    assert status_of(lambda: call("CancelJobs", cancel_launched, write)) is DENIED
    assert status_of(lambda: call("CancelJobs", pb.CancelJobsRequest(all=True), write)) is DENIED
    cancel_pushed = pb.CancelJobsRequest(job_ids=[pushed.id])
    assert status_of(lambda: call("CancelJobs", cancel_pushed, write)) is OK
    remove = pb.RemoveJobsRequest(job_ids=[pushed.id])
    assert status_of(lambda: call("RemoveJobs", remove, write)) is DENIED
    with remote.daemon.client() as owner:
        assert owner.get(launched.id).state.value == "RUNNING"  # the refused cancel did nothing

    # admin: everything.
    assert status_of(lambda: call("AttachJob", attach_file, admin)) is OK
    assert status_of(lambda: call("CancelJobs", cancel_launched, admin)) is OK
    assert status_of(lambda: call("RemoveJobs", remove, admin)) is OK

    # A method the table does not name needs admin; then it is simply unknown.
    unknown = opened.unary_unary("/tailhub.v1.TailhubService/NotYetThere", None, None)
    assert status_of(lambda: unknown(b"", metadata=write, timeout=20)) is DENIED
    assert (
        status_of(lambda: unknown(b"", metadata=admin, timeout=20)) is grpc.StatusCode.UNIMPLEMENTED
    )

    # Nothing about tokens in the daemon's log.
    log = remote.daemon.log_text()
    for token in tokens.values():
        assert token not in log
        assert token[len("thk_") :][:12] not in log


def test_cli_over_tls_same_output_and_exit_codes_and_revocation_at_once(
    home: Path, remote: Remote, token_files: dict[str, Path]
) -> None:
    attached = remote.cli(token_files["write"], "jobs", "attach", "--push", "--name", "far")
    assert attached.returncode == 0, attached.stderr
    job_id = attached.stdout.decode().strip()
    published = remote.cli(token_files["write"], "jobs", "publish", job_id, input=b"a\x00b\nc\n")
    assert published.returncode == 0, published.stderr
    finished = remote.cli(token_files["write"], "jobs", "finish", job_id, "--exit-code", "3")
    assert finished.returncode == 0, finished.stderr

    over_tcp = remote.cli(token_files["read"], "jobs", "logs", job_id)
    over_socket = run_cli(home, "jobs", "logs", job_id)
    assert over_tcp.stdout == over_socket.stdout == b"a\x00b\nc\n"
    assert over_tcp.returncode == over_socket.returncode == 100
    assert over_tcp.stderr == over_socket.stderr

    refused = remote.cli(token_files["read"], "jobs", "attach", "--push")
    assert refused.returncode == 105
    assert refused.stderr.decode().count("\n") == 1, refused.stderr
    assert b"read token may not call AttachJob" in refused.stderr
    assert b"Traceback" not in refused.stderr

    # Revoked: the very next call is refused; the other tokens still work.
    revoked = run_cli(home, "token", "revoke", "read-1")
    assert revoked.returncode == 0, revoked.stderr
    after = remote.cli(token_files["read"], "jobs", "queue")
    assert after.returncode == 105, after.stderr
    assert b"refused the token" in after.stderr
    assert remote.cli(token_files["admin"], "jobs", "queue").returncode == 0
    # The CLI never started a daemon of its own in the state directory it ran in.
    assert not (remote.elsewhere / "sock").exists()


def test_follower_over_tls_survives_a_daemon_restart_byte_exact(
    home: Path,
    remote: Remote,
    token_files: dict[str, Path],
    background_cli: Callable[..., BackgroundCli],
) -> None:
    attached = run_cli(home, "jobs", "attach", "--push")
    job_id = attached.stdout.decode().strip()
    follower = background_cli(
        "--home", str(remote.elsewhere), *remote.flags(token_files["read"]), "jobs", "logs", job_id
    )
    first = bytes(range(256)) * 64
    assert run_cli(home, "jobs", "publish", job_id, input=first).returncode == 0
    follower.wait_for_stdout(first)

    remote.daemon.restart()
    second = b"after the restart\n" * 100
    assert run_cli(home, "jobs", "publish", job_id, input=second).returncode == 0
    assert run_cli(home, "jobs", "finish", job_id).returncode == 0
    assert follower.wait() == 0, follower.stderr
    assert follower.stdout == first + second


def test_a_follow_of_more_jobs_than_a_connection_carries_streams_every_job_at_once(
    home: Path,
    remote: Remote,
    token_files: dict[str, Path],
    background_cli: Callable[..., BackgroundCli],
) -> None:
    # A --listen connection carries at most MAX_STREAMS_PER_CONNECTION streams (against rapid
    # reset); past it the CLI opens another connection. On one connection, the jobs past the
    # cap would show nothing until others ended.
    count = MAX_STREAMS_PER_CONNECTION + 6
    with remote.daemon.client() as client:
        ids = [client.attach_push(name=f"job{n}").id for n in range(count)]
        for job_id in ids:
            client.publish(job_id, f"first line of {job_id}\n".encode())
    follower = background_cli(
        "--home",
        str(remote.elsewhere),
        *remote.flags(token_files["read"]),
        *("jobs", "logs", "-f"),
        *map(str, ids),
    )

    def unseen() -> list[int]:
        shown = follower.stdout
        return [job_id for job_id in ids if f"first line of {job_id}\n".encode() not in shown]

    try:
        wait_until(lambda: not unseen(), 60, "the first line of every job")
    except TimeoutError:
        raise AssertionError(f"nothing yet of jobs {unseen()}: {follower.stderr}") from None
    # Every connection resumes its streams after a restart.
    remote.daemon.restart()
    with remote.daemon.client() as client:
        for job_id in ids:
            client.publish(job_id, f"after the restart {job_id}\n".encode())
            client.finish(job_id, 0)
    assert follower.wait() == 0, follower.stderr
    assert all(f"after the restart {job_id}\n".encode() in follower.stdout for job_id in ids)


def test_untrusted_and_expired_certificates_and_tls_mismatch_each_get_one_line(
    home: Path,
    remote: Remote,
    token_files: dict[str, Path],
    workdir: Path,
) -> None:
    from remote_helpers import self_signed_pair

    address = remote.address
    token = ["--token-file", str(token_files["read"])]

    def cli(*args: str) -> tuple[int, str]:
        done = run_cli(remote.elsewhere, "--server", address, *token, *args, "jobs", "queue")
        text = done.stderr.decode()
        assert "Traceback" not in text, text
        assert text.count("\n") == 1, text
        return done.returncode, text

    # The system's CAs do not know the daemon's own CA; another CA did not sign it.
    code, text = cli()
    assert code == 106, text
    assert "not trusted" in text, text
    other_cert, _ = self_signed_pair(workdir, "other")
    code, text = cli("--ca-file", str(other_cert))
    assert code == 106, text
    assert "not trusted" in text, text
    # Plaintext to a TLS port.
    code, text = cli("--insecure")
    assert code == 106, text
    assert "speaks TLS" in text, text
    # Nothing listening.
    address = f"127.0.0.1:{free_port()}"
    code, text = cli("--ca-file", str(remote.tls.ca))
    assert code == 104, text
    assert "no tailhub daemon answers" in text, text

    # A daemon with an expired certificate (from the right CA): refused as expired.
    from cryptography import x509
    from cryptography.hazmat.primitives import serialization

    ca_key = serialization.load_pem_private_key((home / "tls" / "ca.key").read_bytes(), None)
    ca_cert = x509.load_pem_x509_certificate(remote.tls.ca_pem)
    expired_cert, expired_key = self_signed_pair(
        workdir, "expired", days=(-30, -1), ca=(ca_key, ca_cert)
    )
    other_home = home.parent / "h2"
    expired_daemon = DaemonProcess(
        other_home,
        args=[
            "--listen",
            address,
            "--tls-cert",
            str(expired_cert),
            "--tls-key",
            str(expired_key),
        ],
    )
    expired_daemon.start()
    try:
        code, text = cli("--ca-file", str(remote.tls.ca))
        assert code == 106, text
        # The real cause and its date, not "the CA did not sign it": it did.
        ended = x509.load_pem_x509_certificate(expired_cert.read_bytes()).not_valid_after_utc
        assert f"expired on {ended:%Y-%m-%d %H:%M} UTC" in text, text
        assert "did not sign" not in text, text
    finally:
        expired_daemon.stop()
    # The daemon said so at start, in its log.
    warnings = [line for line in expired_daemon.log_text().splitlines() if "expired on" in line]
    assert len(warnings) == 1, expired_daemon.log_text()
    assert " WARNING " in warnings[0], warnings
    assert str(expired_cert) in warnings[0], warnings

    # TLS to a plaintext port (loopback, --insecure).
    plain = DaemonProcess(other_home, args=["--listen", address, "--insecure"])
    plain.start()
    try:
        code, text = cli("--ca-file", str(remote.tls.ca))
        assert code == 106, text
        assert "does not speak TLS" in text, text
    finally:
        plain.stop()

    # Through all of it the first daemon served on, over its socket and over TCP.
    assert run_cli(home, "jobs", "queue").returncode == 0
    assert remote.cli(token_files["read"], "jobs", "queue").returncode == 0


def test_a_listener_that_cannot_be_set_up_stops_the_daemon_with_one_line(
    home: Path, remote: Remote, workdir: Path
) -> None:
    other = str(home.parent / "h3")
    cert, key = remote.tls.flags[1], remote.tls.flags[3]

    def tailhubd(*args: str) -> tuple[int, str]:
        import subprocess
        import sys

        done = subprocess.run(
            [sys.executable, "-m", "tailhub.daemon", "--home", other, *args],
            capture_output=True,
            timeout=60,
        )
        lines = [line for line in done.stderr.decode().splitlines() if line.startswith("tailhubd")]
        return done.returncode, "\n".join(lines)

    code, text = tailhubd("--listen", remote.address, "--tls-cert", cert, "--tls-key", key)
    assert code == 5, text
    assert f"cannot listen on {remote.address}" in text, text
    assert "in use" in text, text
    loose = workdir / "loose.key"
    loose.write_bytes(Path(key).read_bytes())
    loose.chmod(0o644)
    code, text = tailhubd("--listen", "127.0.0.1:0", "--tls-cert", cert, "--tls-key", str(loose))
    assert code == 4, text
    assert "others can read it" in text, text
    missing = str(workdir / "missing.pem")
    code, text = tailhubd("--listen", "127.0.0.1:0", "--tls-cert", missing, "--tls-key", key)
    assert code == 4, text
    assert missing in text, text
    garbage = workdir / "garbage.pem"
    garbage.write_text("not a certificate\n")
    code, text = tailhubd("--listen", "127.0.0.1:0", "--tls-cert", str(garbage), "--tls-key", key)
    assert code == 4, text
    assert str(garbage) in text, text
    code, _ = tailhubd("--listen", "0.0.0.0:0", "--insecure")
    assert code == 2
    # None of them started: nothing was left behind to answer.
    assert not (home.parent / "h3" / "sock").exists()


def test_stream_caps_refuse_with_resource_exhausted_naming_the_cap(
    home: Path, start_daemon: Callable[..., DaemonProcess]
) -> None:
    tls = tls_init(home)
    address = f"127.0.0.1:{free_port()}"
    daemon = start_daemon(
        "--listen", address, *tls.flags, "--max-streams", "3", "--max-streams-per-token", "2"
    )
    first, second = create_token(home, "read"), create_token(home, "read")
    with daemon.client() as owner:
        job = owner.attach_push("capped")
    channel, service = stub(address, tls.ca_pem)
    streams: list[object] = []
    try:

        def follow(token: str) -> object:
            call = service.Subscribe(
                pb.SubscribeRequest(job_id=job.id, follow=True), metadata=bearer(token)
            )
            streams.append(call)
            return call

        def refused_with(token: str) -> str:
            call = follow(token)
            with pytest.raises(grpc.RpcError) as error:
                next(call)  # type: ignore[call-overload]
            assert error.value.code() is grpc.StatusCode.RESOURCE_EXHAUSTED
            return error.value.details() or ""

        def subscribers(count: int) -> None:
            with daemon.client() as owner:
                wait_until(lambda: owner.get(job.id).subscribers == count, what="subscribers")

        follow(first)
        follow(first)
        subscribers(2)
        assert "for this token: at most 2" in refused_with(first)
        # Every stream a token keeps open counts, health's Watch too.
        watch = health_pb2_grpc.HealthStub(channel).Watch(
            health_pb2.HealthCheckRequest(service=""), metadata=bearer(first)
        )
        streams.append(watch)
        with pytest.raises(grpc.RpcError) as error:
            next(watch)
        assert error.value.code() is grpc.StatusCode.RESOURCE_EXHAUSTED
        follow(second)
        subscribers(3)
        assert "at most 3 at once over the network" in refused_with(second)
        # The owner's socket is not capped.
        with daemon.client() as owner:
            items = owner.follow(job.id, follow=False)
            assert next(items) is not None
    finally:
        for call in streams:
            call.cancel()  # type: ignore[attr-defined]
        channel.close()


def test_mutual_tls_refuses_a_client_without_a_certificate_in_one_line(
    home: Path, start_daemon: Callable[..., DaemonProcess], workdir: Path
) -> None:
    import datetime

    from cryptography import x509
    from cryptography.hazmat.primitives import serialization

    from tailhub.client._tls_init import cert_pem, key_pem, make_leaf

    tls = tls_init(home)
    ca_key = serialization.load_pem_private_key((home / "tls" / "ca.key").read_bytes(), None)
    ca_cert = x509.load_pem_x509_certificate(tls.ca_pem)
    now = datetime.datetime.now(datetime.timezone.utc)
    key, cert = make_leaf(
        ca_key,  # type: ignore[arg-type]
        ca_cert,
        ["alice"],
        now - datetime.timedelta(hours=1),
        now + datetime.timedelta(days=1),
        client=True,
    )
    (workdir / "alice.pem").write_bytes(cert_pem(cert))
    (workdir / "alice.key").write_bytes(key_pem(key))
    address = f"127.0.0.1:{free_port()}"
    start_daemon("--listen", address, *tls.flags, "--tls-client-ca", str(tls.ca))
    token = write_token(workdir, "read", create_token(home, "read"))
    remote = Remote(DaemonProcess(home), address, tls, home.parent / "elsewhere")

    without = remote.cli(token, "jobs", "queue")
    assert without.returncode == 106, without.stderr
    assert b"wants a client certificate" in without.stderr
    assert without.stderr.count(b"\n") == 1
    with_certificate = remote.cli(
        token,
        "--client-cert",
        str(workdir / "alice.pem"),
        "--client-key",
        str(workdir / "alice.key"),
        "jobs",
        "queue",
    )
    assert with_certificate.returncode == 0, with_certificate.stderr


def test_every_rpc_of_the_service_has_a_role_in_the_table() -> None:
    """A new RPC must be placed in the roles table (else it is admin-only by default)."""
    from tailhub.daemon import auth

    service = pb.DESCRIPTOR.services_by_name["TailhubService"]
    methods = {f"/tailhub.v1.TailhubService/{method.name}" for method in service.methods}
    assert methods <= set(auth.ROLES), methods - set(auth.ROLES)


def test_a_malformed_token_ca_file_or_client_pair_is_one_line_before_connecting(
    remote: Remote, token_files: dict[str, Path], workdir: Path
) -> None:
    tls_dir = remote.daemon.home / "tls"
    bad_token = workdir / "bad.token"
    bad_token.write_bytes(b"thk_abc\x01def\n")
    bad_token.chmod(0o600)
    cases = {
        # (flags, exit code, what the line says)
        "token": (["--token-file", str(bad_token)], 105, "does not hold a tailhub token"),
        "ca": (["--ca-file", str(tls_dir / "server.key")], 1, "holds no PEM certificate"),
        "pair": (
            [
                *("--ca-file", str(remote.tls.ca), "--token-file", str(token_files["read"])),
                *("--client-cert", str(tls_dir / "server.pem")),
                *("--client-key", str(tls_dir / "ca.key")),
            ],
            1,
            "are not a certificate and its key",
        ),
    }
    for case, (flags, code, says) in cases.items():
        done = run_cli(remote.elsewhere, "--server", remote.address, *flags, "jobs", "queue")
        text = done.stderr.decode()
        assert done.returncode == code, (case, text)
        assert says in text, (case, text)
        assert text.count("\n") == 1, (case, text)


def test_a_token_store_others_can_read_or_write_accepts_no_token(
    home: Path, remote: Remote, tokens: dict[str, str]
) -> None:
    channel, service = stub(remote.address, remote.tls.ca_pem)
    with channel:
        list_jobs = lambda: service.ListJobs(  # noqa: E731
            pb.ListJobsRequest(), metadata=bearer(tokens["read"])
        )
        assert status_of(list_jobs) is grpc.StatusCode.OK
        (home / "tokens.json").chmod(0o666)
        # Whoever can write it could add an admin token: refused until it is private again.
        assert status_of(list_jobs) is grpc.StatusCode.UNAUTHENTICATED
        listed = run_cli(home, "token", "list")
        assert listed.returncode == 1
        assert b"chmod 600" in listed.stderr
        assert listed.stderr.count(b"\n") == 1
        (home / "tokens.json").chmod(0o600)
        assert status_of(list_jobs) is grpc.StatusCode.OK


def test_hostile_remote_flags_get_a_short_line_and_never_hang(
    remote: Remote, workdir: Path
) -> None:
    fifo = workdir / "token.fifo"
    os.mkfifo(fifo)  # a FIFO nobody writes would block a plain read forever
    big_ca = workdir / "big.pem"
    big_ca.write_bytes(b"-----BEGIN CERTIFICATE-----\n" + b"A" * (2 * 1024 * 1024))
    cases = {
        "fifo": (["--server", remote.address, "--token-file", str(fifo)], 1, "regular file"),
        "big": (["--server", remote.address, "--ca-file", str(big_ca)], 1, "over 1 MiB"),
        "long host": (["--server", "h" * 100_000 + ":1"], 2, "is not HOST:PORT"),
        "escapes": (["--server", "a\x1b[31m:1"], 2, "is not HOST:PORT"),
    }
    for case, (flags, code, says) in cases.items():
        done = run_cli(remote.elsewhere, *flags, "jobs", "queue", timeout=30)
        text = done.stderr.decode()
        assert done.returncode == code, (case, text)
        assert says in text, (case, text)
        assert len(text) < 1000, (case, text)
        assert "\x1b" not in text, (case, text)
