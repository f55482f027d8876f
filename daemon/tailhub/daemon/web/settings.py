"""The web view's settings (`--http-listen` and its limits), checked before anything is bound.

Loopback: plain http. Any other address: https with the daemon's certificate (`--tls-cert`,
`--tls-key`, as `--listen` uses), or refused at start: a session cookie and every log would
cross the network in the clear.
"""

from __future__ import annotations

import ssl
from dataclasses import dataclass
from pathlib import Path

from tailhub.daemon.config import format_host_port
from tailhub.daemon.listeners import ListenAddress, TlsMaterial, load_tls, parse_address

DEFAULT_MAX_STREAMS = 1000
DEFAULT_MAX_STREAMS_PER_SESSION = 100
# A comment line on an idle event stream this often: proxies and browsers keep it open.
DEFAULT_HEARTBEAT_SECONDS = 15.0
# Connections open at once, in all and from one address (connections.py): far below the
# daemon's descriptors, whose budget keeps them aside.
DEFAULT_MAX_CONNECTIONS = 1024
DEFAULT_MAX_CONNECTIONS_PER_PEER = 64
# From accept (the TLS handshake included) to a whole request head; again for each next
# request on a kept-alive connection.
DEFAULT_REQUEST_SECONDS = 10.0


@dataclass(frozen=True)
class WebSettings:
    address: ListenAddress
    tls: TlsMaterial | None
    max_streams: int = DEFAULT_MAX_STREAMS
    max_streams_per_session: int = DEFAULT_MAX_STREAMS_PER_SESSION
    heartbeat_interval: float = DEFAULT_HEARTBEAT_SECONDS
    max_connections: int = DEFAULT_MAX_CONNECTIONS
    max_connections_per_peer: int = DEFAULT_MAX_CONNECTIONS_PER_PEER
    request_timeout: float = DEFAULT_REQUEST_SECONDS
    # Made from the same files as `tls` (client certificates required with --tls-client-ca).
    ssl_context: ssl.SSLContext | None = None

    def __post_init__(self) -> None:
        if self.max_streams < 1 or self.max_streams_per_session < 1:
            raise ValueError("the web view's stream limits must be at least 1")
        if self.heartbeat_interval <= 0:
            raise ValueError("the web view's heartbeat interval must be positive")
        if self.max_connections < 1 or self.max_connections_per_peer < 1:
            raise ValueError("the web view's connection limits must be at least 1")
        if self.request_timeout <= 0:
            raise ValueError("the web view's request timeout must be positive")

    @property
    def scheme(self) -> str:
        return "http" if self.tls is None else "https"


def web_settings(
    http_listen: str | None,
    *,
    cert: str | None,
    key: str | None,
    client_ca: str | None,
    max_streams: int = DEFAULT_MAX_STREAMS,
    max_streams_per_session: int = DEFAULT_MAX_STREAMS_PER_SESSION,
    heartbeat_interval: float = DEFAULT_HEARTBEAT_SECONDS,
    max_connections: int = DEFAULT_MAX_CONNECTIONS,
    max_connections_per_peer: int = DEFAULT_MAX_CONNECTIONS_PER_PEER,
    request_timeout: float = DEFAULT_REQUEST_SECONDS,
) -> WebSettings | None:
    """The web view asked for, its TLS files read when it needs them; ValueError for an
    address it cannot serve that way, ListenerError for a TLS file."""
    if http_listen is None:
        return None
    address = parse_address(http_listen)
    tls = context = None
    if not address.is_loopback:
        if not cert or not key:
            raise ValueError(
                f"--http-listen {address} is not a loopback address: the web view needs TLS "
                "there (--tls-cert/--tls-key, made by `tailhub daemon tls-init`), or listen "
                "on 127.0.0.1 and reach it through an SSH tunnel"
            )
        ca = Path(client_ca) if client_ca else None
        tls = load_tls(Path(cert), Path(key), ca)
        context = _context(Path(cert), Path(key), ca)
    return WebSettings(
        address,
        tls,
        max_streams,
        max_streams_per_session,
        heartbeat_interval,
        max_connections,
        max_connections_per_peer,
        request_timeout,
        context,
    )


def _context(cert: Path, key: Path, client_ca: Path | None) -> ssl.SSLContext:
    """The listener's TLS from the files `load_tls` checked (a key only its owner reads)."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(cert, key)
    if client_ca is not None:
        context.load_verify_locations(cafile=client_ca)
        context.verify_mode = ssl.CERT_REQUIRED
    return context


def shown_host(settings: WebSettings) -> str:
    """The host a browser on this machine or another one opens: this machine's name for a
    wildcard address."""
    host = settings.address.host
    if host in ("0.0.0.0", "::"):  # noqa: S104 - named, not bound, here
        import socket

        host = socket.getfqdn()
    return host


def shown_address(settings: WebSettings, port: int) -> str:
    """`http(s)://HOST:PORT` as a browser on this machine or another one opens it."""
    return f"{settings.scheme}://{format_host_port(shown_host(settings), port)}"
