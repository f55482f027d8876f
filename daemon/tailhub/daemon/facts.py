"""What a daemon tells about how it runs, beyond its jobs: its TCP listeners and their
certificates, its metrics address, its file descriptors and the space left for its logs.

GetDaemonStatus carries these so that `tailhub doctor` can judge a daemon it cannot look at
directly (one on another machine, or another user's view of /proc)."""

from __future__ import annotations

import contextlib
import os
import resource
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from tailhub.daemon.listeners import TlsMaterial

# ListenerFacts.security
PLAINTEXT = "plaintext"
TLS = "tls"
MUTUAL_TLS = "mutual-tls"
# ListenerFacts.kind: what a listener serves (`--listen`, `--http-listen`).
GRPC = "grpc"
WEB = "web"


@dataclass(frozen=True)
class ListenerFacts:
    """One TCP listener as bound."""

    address: str
    security: str
    # The --tls-cert file as read at start, and when its certificate stops being valid.
    certificate_path: str = ""
    certificate_not_after: float | None = None
    kind: str = GRPC


@dataclass(frozen=True)
class RunFacts:
    """How the daemon serves, fixed once its listeners are bound."""

    # Every TCP listener: the gRPC ones (`--listen`) and the web view's (`--http-listen`).
    listeners: tuple[ListenerFacts, ...] = ()
    max_streams: int = 0
    max_streams_per_token: int = 0
    metrics_addresses: tuple[str, ...] = ()

    @property
    def grpc_listeners(self) -> tuple[ListenerFacts, ...]:
        """Those serving the API (the web view only reads, and takes no token's jobs)."""
        return tuple(listener for listener in self.listeners if listener.kind == GRPC)


def listener_facts(
    tls: TlsMaterial | None, bound: Sequence[str], kind: str = GRPC
) -> tuple[ListenerFacts, ...]:
    """The listeners serving `tls` (None: plain), at the addresses they were bound to."""
    if tls is None:
        return tuple(ListenerFacts(address, PLAINTEXT, kind=kind) for address in bound)
    security = TLS if tls.client_ca is None else MUTUAL_TLS
    # Read from the bytes the listener serves, not the file: a certificate renewed on disk is
    # served only after a restart, and the expiry that matters is the one clients see.
    not_after = certificate_not_after(tls.certificate_chain)
    return tuple(
        ListenerFacts(address, security, tls.certificate_path, not_after, kind) for address in bound
    )


def certificate_not_after(pem: bytes) -> float | None:
    """The end of validity (Unix time) of the first certificate in `pem`; None if unreadable."""
    # Imported here: cryptography is slow to import, and only a TLS listener needs it.
    from cryptography import x509

    try:
        certificate = x509.load_pem_x509_certificate(pem)
    except ValueError:
        return None
    return certificate.not_valid_after_utc.timestamp()


@dataclass(frozen=True)
class HostFacts:
    """The daemon's descriptors and its logs' file system, now; None where unknown."""

    open_files: int | None
    max_open_files: int | None
    disk_free: int | None
    disk_total: int | None


def host_facts(logs: Path) -> HostFacts:
    """Reads them (blocking: a stalled file system stalls statvfs; call it off the loop)."""
    open_files = None
    with contextlib.suppress(OSError):
        # Minus the descriptor the listing itself holds open.
        open_files = len(os.listdir("/proc/self/fd")) - 1
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    disk_free = disk_total = None
    with contextlib.suppress(OSError):
        usage = os.statvfs(logs)
        # f_bavail, not f_bfree: the blocks reserved for root are not the daemon's to use.
        disk_free = usage.f_bavail * usage.f_frsize
        disk_total = usage.f_blocks * usage.f_frsize
    return HostFacts(
        open_files=open_files,
        max_open_files=None if soft == resource.RLIM_INFINITY else soft,
        disk_free=disk_free,
        disk_total=disk_total,
    )
