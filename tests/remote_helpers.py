"""Helpers for tests of the network listeners: certificates, tokens, a daemon with a TLS
listener, gRPC calls with a token, and the CLI with --server."""

from __future__ import annotations

import datetime
import os
import shlex
import subprocess
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
from helpers import DaemonProcess, run_cli

from harness import ports
from tailhub.client._tls_init import cert_pem, key_pem, make_ca, make_leaf
from tailhub.v1 import tailhub_pb2_grpc as rpc

# Written once, for the benchmarks too (harness/ports.py).
free_port = ports.free_port


@dataclass(frozen=True)
class Tls:
    """What `tailhub daemon tls-init` made, and the flags it printed."""

    ca: Path
    flags: list[str]

    @property
    def ca_pem(self) -> bytes:
        return self.ca.read_bytes()


def tls_init(home: Path) -> Tls:
    made = run_cli(home, "daemon", "tls-init")
    assert made.returncode == 0, made.stderr
    flags = shlex.split(made.stdout.decode())
    assert flags[0::2] == ["--tls-cert", "--tls-key"], flags
    return Tls(home / "tls" / "ca.pem", flags)


def create_token(home: Path, role: str, name: str | None = None) -> str:
    made = run_cli(home, "token", "create", "--role", role, *(["--name", name] if name else []))
    assert made.returncode == 0, made.stderr
    lines = made.stdout.decode().splitlines()
    assert len(lines) == 1, made.stdout  # the token, alone, so that `> file` works
    return lines[0]


def write_token(directory: Path, name: str, token: str) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"{name}.token"
    path.write_text(token + "\n")
    path.chmod(0o600)  # the CLI refuses a token file others can read
    return path


def self_signed_pair(
    directory: Path,
    name: str,
    *,
    days: tuple[int, int] = (-1, 30),
    ca: tuple[Any, Any] | None = None,
) -> tuple[Path, Path]:
    """A server certificate for localhost/127.0.0.1 (valid from days[0] to days[1] from now),
    signed by `ca` (key, certificate) or by a fresh CA of its own; its cert and key files."""
    now = datetime.datetime.now(datetime.timezone.utc)
    start, end = (now + datetime.timedelta(days=day) for day in days)
    if ca is None:
        ca = make_ca(
            "another CA", now - datetime.timedelta(days=400), now + datetime.timedelta(days=400)
        )
    key, cert = make_leaf(ca[0], ca[1], ["localhost", "127.0.0.1"], start, end)
    cert_path, key_path = directory / f"{name}.pem", directory / f"{name}.key"
    cert_path.write_bytes(cert_pem(cert) + cert_pem(ca[1]))
    key_path.write_bytes(key_pem(key))
    os.chmod(key_path, 0o600)
    return cert_path, key_path


def bearer(token: str) -> tuple[tuple[str, str | bytes], ...]:
    return (("authorization", f"Bearer {token}"),)


def stub(address: str, ca_pem: bytes) -> tuple[grpc.Channel, rpc.TailhubServiceStub]:
    channel = grpc.secure_channel(address, grpc.ssl_channel_credentials(ca_pem))
    return channel, rpc.TailhubServiceStub(channel)


def status_of(call: Callable[[], object]) -> grpc.StatusCode:
    """The status code a call ends with (OK when it returns)."""
    try:
        call()
    except grpc.RpcError as error:
        return error.code()
    return grpc.StatusCode.OK


@dataclass
class Remote:
    """A daemon with a TLS listener on 127.0.0.1, and the files a remote client uses."""

    daemon: DaemonProcess
    address: str
    tls: Tls
    # Where the CLI runs as if on another machine: a state directory with no daemon.
    elsewhere: Path

    def flags(self, token_file: Path | None) -> list[str]:
        """The CLI's flags for this daemon: its address, CA and (if given) token file."""
        token = ["--token-file", str(token_file)] if token_file else []
        return ["--server", self.address, "--ca-file", str(self.tls.ca), *token]

    def cli(
        self, token_file: Path | None, *args: str, input: bytes | None = None
    ) -> subprocess.CompletedProcess[bytes]:
        return run_cli(self.elsewhere, *self.flags(token_file), *args, input=input)
