"""The opt-in TCP listeners (`tailhubd --listen HOST:PORT`): addresses, TLS files, keepalive.

They are served by a second gRPC server in the same process, which carries the token
interceptor (auth.py); the Unix socket's server stays the owner's, without one. Everything a
listener needs is read and checked before the daemon binds anything: an operator who asked
for a listener never gets a daemon silently without it.
"""

from __future__ import annotations

import errno
import ipaddress
import os
import socket
import ssl
import stat
from dataclasses import dataclass
from pathlib import Path

import grpc
import grpc.aio

from tailhub.daemon.config import LISTEN_EXAMPLES, format_host_port, parse_host_port
from tailhub.daemon.errors import ListenerError
from tailhub.daemon.limits import shown
from tailhub.daemon.peer_cap import DEFAULT_GRPC_CONNECTIONS_PER_PEER
from tailhub.daemon.statedir import open_to_others

# Exit codes of tailhubd (README's table): a listener's TLS files, or its address.
EXIT_TLS_FILES = 4
EXIT_ADDRESS = 5

# Keepalive: the server pings a connection idle for KEEPALIVE_TIME and drops it when no answer
# comes within KEEPALIVE_TIMEOUT, so a client that vanished without a FIN (cable pulled, laptop
# closed) holds its streams at most ~30 s. Clients ping every 30 s; the server accepts pings
# down to every 10 s (faster ones count as abuse and close the connection).
KEEPALIVE_TIME_MS = 20_000
KEEPALIVE_TIMEOUT_MS = 10_000
MIN_CLIENT_PING_INTERVAL_MS = 10_000
SERVER_KEEPALIVE_OPTIONS: list[tuple[str, int]] = [
    ("grpc.keepalive_time_ms", KEEPALIVE_TIME_MS),
    ("grpc.keepalive_timeout_ms", KEEPALIVE_TIMEOUT_MS),
    # gRPC's ping manager waits for any ping's answer this long (default 60 s), whatever
    # the keepalive timeout says: without it a dead client is dropped after 80 s, not 30.
    ("grpc.http2.ping_timeout_ms", KEEPALIVE_TIMEOUT_MS),
    ("grpc.keepalive_permit_without_calls", 1),
    ("grpc.http2.min_ping_interval_without_data_ms", MIN_CLIENT_PING_INTERVAL_MS),
    ("grpc.http2.max_pings_without_data", 0),
    # gRPC sets SO_REUSEPORT by default: a second daemon could then bind the same port and
    # silently take half the connections. A port in use must be an error.
    ("grpc.so_reuseport", 0),
]

DEFAULT_MAX_STREAMS = 10_000
# Log streams one token holds at once over the network (--max-streams-per-token).
DEFAULT_MAX_STREAMS_PER_TOKEN = 200
# What one connection may carry: gRPC's cap on a connection's streams counts streams reset but
# not yet let go, which is what an attacker without a token fills, and every stream so held
# costs the daemon's loop and gRPC's threads ahead of a token holder's calls. A token holder's
# ListJobs every 0.1 s beside 4 connections of bench/rapid_reset_client.py (15 s, 2 cores, side
# by side in one run) had a p50 of 4-23 ms at 8 per connection (6 runs), 6-58 ms at 12 (3),
# 9-75 ms at 16 (3) and 39-236 ms at 32 (6) (docs/performance.md). A client that needs more
# streams opens more connections (the CLI does: client/_servers.py, STREAMS_PER_CHANNEL).
MAX_STREAMS_PER_CONNECTION = 8
# Requests the C core holds before the server's loop has taken them (gRPC's default is 1000):
# enough that a few connections at their cap of streams do not crowd out the calls of others
# (at 500, 438 of a token holder's 616 calls were cancelled under attack), few enough that
# the queue stays small in memory (100,000 of them held 1 GiB). With the heap trim, 32
# attacking connections for 15 s peaked at 169-171 MiB at 2,500 and 201-224 at 5,000, with
# the token holder's calls shed alike (1-4 of about 130: bench/rapid_reset.py).
NETWORK_MAX_PENDING_REQUESTS = 2_500
UNARY_HEADROOM = 16
# TCP connections open at once on the --listen addresses, in all: each holds a descriptor and
# up to a connection's streams, so their number bounds the memory and descriptors that peers
# without a token can take. gRPC closes one past the cap at once. Kept within an eighth of the
# daemon's descriptors, which the job admission keeps aside (server.py). gRPC's Python server
# has no hook at accept: the cap per address is kept from outside it (peer_cap.py).
NETWORK_MAX_CONNECTIONS = 1024
SHARE_OF_DESCRIPTORS = 8
# A connection must have sent HTTP/2's preface and its SETTINGS (after TLS's handshake, with
# TLS) within this, else it is closed. gRPC's default is 120 s: 1,100 sockets that sent nothing
# held all 1,024 slots past 150 s, and token holders' calls failed UNAVAILABLE meanwhile. A
# client on a slow link does it in a few round trips.
HANDSHAKE_TIMEOUT_MS = 10_000
# A connection without any call for this long is closed (GOAWAY): slots held by clients that
# made their connection and then nothing. Keepalive pings do not count as calls; a follow does.
# The CLI's channel reconnects at its next call.
MAX_CONNECTION_IDLE_MS = 300_000


def connection_cap(descriptor_limit: int | None) -> int:
    """The cap on --listen connections in all, within the daemon's descriptors."""
    if descriptor_limit is None:
        return NETWORK_MAX_CONNECTIONS
    return max(16, min(NETWORK_MAX_CONNECTIONS, descriptor_limit // SHARE_OF_DESCRIPTORS))


def network_limits(settings: NetworkSettings, connections: int) -> list[tuple[str, int]]:
    """gRPC core options that bound what a peer without a token can make the daemon hold.

    HTTP/2 rapid reset (HEADERS then RST_STREAM, stream after stream) opens streams that
    end before any handler sees them; with no cap per connection the core queued a request
    for each (4 connections held 2.3 GiB, and a token holder's call waited 3.4 s). Measured
    with bench/rapid_reset.py (4 connections, 15 s): a cap per connection (counting reset
    streams) kept the daemon under 160 MiB with a token holder's calls at 1 ms; a pending
    bound alone kept it at 140 MiB but crowded the token holder out (2.5 s). With both, the
    pending bound caps what many connections together can hold, and `connections` caps how
    many there are (connection_cap).
    """
    # Above the daemon's own cap on a token's streams (auth.StreamCaps) when that is lower,
    # which refuses the one too many with a message that names the cap (a connection at
    # gRPC's cap would only queue it, on the client); the headroom is for unary calls beside.
    per_connection = min(
        MAX_STREAMS_PER_CONNECTION,
        min(settings.max_streams, settings.max_streams_per_token) + UNARY_HEADROOM,
    )
    pending = NETWORK_MAX_PENDING_REQUESTS
    return [
        ("grpc.max_concurrent_streams", per_connection),
        # A stream the client reset still counts against that cap until the server has let
        # go of it: without this, resetting each stream at once sidesteps the cap.
        ("grpc.http.overload_protection", 1),
        ("grpc.server.max_pending_requests", pending),
        ("grpc.server.max_pending_requests_hard_limit", pending),
        ("grpc.max_allowed_incoming_connections", connections),
        ("grpc.server_handshake_timeout_ms", HANDSHAKE_TIMEOUT_MS),
        ("grpc.max_connection_idle_ms", MAX_CONNECTION_IDLE_MS),
    ]


@dataclass(frozen=True)
class ListenAddress:
    host: str
    port: int

    def __str__(self) -> str:
        return format_host_port(self.host, self.port)

    @property
    def is_loopback(self) -> bool:
        """An address of this machine only; a name only when everything it resolves to is."""
        if self.host.lower() == "localhost":
            try:
                found = socket.getaddrinfo(self.host, self.port, proto=socket.IPPROTO_TCP)
            except OSError:
                return False
            return bool(found) and all(_is_loopback(str(info[4][0])) for info in found)
        return _is_loopback(self.host)


def _is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def parse_address(text: str, examples: str = LISTEN_EXAMPLES) -> ListenAddress:
    """HOST:PORT, [IPv6]:PORT (the one syntax of every address flag); ValueError saying what
    is wrong."""
    host, port = parse_host_port(text, examples)
    if ":" in host:
        try:
            ipaddress.IPv6Address(host)
        except ValueError:
            raise ValueError(f"{shown(text)}: {host!r} is not an IPv6 address") from None
    return ListenAddress(host, port)


@dataclass(frozen=True)
class TlsMaterial:
    """PEM bytes read (and checked) once at start."""

    certificate_chain: bytes
    private_key: bytes
    client_ca: bytes | None
    # Where the certificate was read from (`tailhub doctor` names it when it expires).
    certificate_path: str = ""


@dataclass(frozen=True)
class NetworkSettings:
    addresses: tuple[ListenAddress, ...]
    tls: TlsMaterial | None
    max_streams: int = DEFAULT_MAX_STREAMS
    max_streams_per_token: int = DEFAULT_MAX_STREAMS_PER_TOKEN
    max_connections_per_peer: int = DEFAULT_GRPC_CONNECTIONS_PER_PEER


def network_settings(
    listen: tuple[str, ...],
    *,
    cert: str | None,
    key: str | None,
    client_ca: str | None,
    insecure: bool,
    max_streams: int = DEFAULT_MAX_STREAMS,
    max_streams_per_token: int = DEFAULT_MAX_STREAMS_PER_TOKEN,
    max_connections_per_peer: int = DEFAULT_GRPC_CONNECTIONS_PER_PEER,
    web: bool = False,
) -> NetworkSettings | None:
    """The listeners asked for on the command line, their TLS files read and checked;
    ValueError for flags that do not fit together, ListenerError for a file. With `web`
    (--http-listen), TLS flags without --listen are the web view's."""
    if not listen:
        if (cert or key or client_ca or insecure) and not web:
            raise ValueError(
                "--tls-cert, --tls-key, --tls-client-ca and --insecure go with --listen "
                "or --http-listen"
            )
        return None
    addresses = tuple(parse_address(text) for text in listen)
    limits = (max_streams, max_streams_per_token, max_connections_per_peer)
    if insecure:
        _check_plaintext(addresses, tls_flags=bool(cert or key or client_ca))
        return NetworkSettings(addresses, None, *limits)
    if not cert or not key:
        raise ValueError(
            "--listen needs --tls-cert and --tls-key (make them with `tailhub daemon tls-init`), "
            "or --insecure on a loopback address"
        )
    tls = load_tls(Path(cert), Path(key), Path(client_ca) if client_ca else None)
    return NetworkSettings(addresses, tls, *limits)


def _check_plaintext(addresses: tuple[ListenAddress, ...], *, tls_flags: bool) -> None:
    """--insecure: no TLS file given, and loopback addresses only; ValueError if not."""
    if tls_flags:
        raise ValueError("--insecure means no TLS: leave out --tls-cert/--tls-key/--tls-client-ca")
    for address in addresses:
        if not address.is_loopback:
            raise ValueError(
                f"--insecure is for loopback addresses only ({address} is not one): "
                "anyone on the path could read tokens and logs; use --tls-cert/--tls-key"
            )


def load_tls(cert: Path, key: Path, client_ca: Path | None) -> TlsMaterial:
    """Reads the PEM files, refusing a private key others can read and files that do not
    parse or do not belong together (checked by Python's ssl, as a client would)."""
    _check_key_file(key)
    certificate_chain = _read(cert, "certificate")
    private_key = _read(key, "private key")
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    try:
        context.load_cert_chain(cert, key)
    except ssl.SSLError as error:
        raise ListenerError(
            f"--tls-cert {cert} / --tls-key {key}: not a PEM certificate and its private key "
            f"({error.reason or error})",
            EXIT_TLS_FILES,
        ) from None
    ca_bytes = None
    if client_ca is not None:
        ca_bytes = _read(client_ca, "client CA")
        try:
            context.load_verify_locations(cafile=client_ca)
        except ssl.SSLError as error:
            raise ListenerError(
                f"--tls-client-ca {client_ca}: not a PEM certificate ({error.reason or error})",
                EXIT_TLS_FILES,
            ) from None
    return TlsMaterial(certificate_chain, private_key, ca_bytes, str(cert))


def _read(path: Path, what: str) -> bytes:
    try:
        data = path.read_bytes()
    except OSError as error:
        raise ListenerError(
            f"cannot read the TLS {what} {path}: {error.strerror or error}", EXIT_TLS_FILES
        ) from None
    if not data.strip():
        raise ListenerError(f"the TLS {what} {path} is empty", EXIT_TLS_FILES)
    return data


def _check_key_file(key: Path) -> None:
    """Like a state file: the key must be the user's (or root's) and nobody else's to read."""
    try:
        info = os.stat(key)
    except OSError as error:
        raise ListenerError(
            f"cannot read the TLS private key {key}: {error.strerror or error}", EXIT_TLS_FILES
        ) from None
    if not stat.S_ISREG(info.st_mode):
        raise ListenerError(f"the TLS private key {key} is not a regular file", EXIT_TLS_FILES)
    if info.st_uid not in (os.geteuid(), 0):
        raise ListenerError(
            f"refusing the TLS private key {key}: it is owned by uid {info.st_uid}, not by you",
            EXIT_TLS_FILES,
        )
    fault = open_to_others(info, key, secret=True)
    if fault is not None:
        raise ListenerError(f"refusing the TLS private key {key}: {fault}", EXIT_TLS_FILES)


def bind(server: grpc.aio.Server, settings: NetworkSettings) -> list[str]:
    """Adds every listener to `server` (not started); the addresses bound, with real ports."""
    credentials = None
    if settings.tls is not None:
        credentials = grpc.ssl_server_credentials(
            [(settings.tls.private_key, settings.tls.certificate_chain)],
            root_certificates=settings.tls.client_ca,
            require_client_auth=settings.tls.client_ca is not None,
        )
    bound = []
    for address in settings.addresses:
        text = str(address)
        refused = _refused(address)
        if refused is not None:
            raise ListenerError(f"cannot listen on {text}: {refused}", EXIT_ADDRESS)
        try:
            if credentials is None:
                port = server.add_insecure_port(text)
            else:
                port = server.add_secure_port(text, credentials)
        except RuntimeError:
            port = 0
        if port == 0:
            raise ListenerError(f"cannot listen on {text}: {_why_not(address)}", EXIT_ADDRESS)
        bound.append(str(ListenAddress(address.host, port)))
    return bound


def _refused(address: ListenAddress) -> str | None:
    """Why the kernel would refuse to bind `address` (in use, a privileged port), asked
    before gRPC tries: gRPC's core prints its own 'Failed to add port' line to stderr
    before ours otherwise, and the failure is said twice. None when it would bind (gRPC
    then binds it, or says why itself in the rare race where it was taken meanwhile)."""
    if address.port == 0:
        return None
    try:
        infos = socket.getaddrinfo(address.host, address.port, type=socket.SOCK_STREAM)
    except socket.gaierror as error:
        return f"cannot resolve {address.host!r} ({error.strerror})"
    failures = []
    for family, kind, proto, _, sockaddr in infos:
        with socket.socket(family, kind, proto) as probe:
            # As gRPC binds: a connection of the previous daemon in TIME_WAIT does not count.
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                probe.bind(sockaddr)
            except OSError as error:
                if error.errno == errno.EADDRINUSE:
                    return "the address is already in use (another daemon or program on it?)"
                if error.errno == errno.EACCES:
                    return f"{error.strerror} (ports below 1024 need privileges)"
                failures.append(error.strerror or str(error))
    # gRPC serves a name when one of its addresses binds (localhost without IPv6).
    return failures[0] if failures and len(failures) == len(infos) else None


def _why_not(address: ListenAddress) -> str:
    """gRPC only says it failed: ask the kernel why, with a socket of our own."""
    try:
        infos = socket.getaddrinfo(address.host, address.port, type=socket.SOCK_STREAM)
    except socket.gaierror as error:
        return f"cannot resolve {address.host!r} ({error.strerror})"
    for family, kind, proto, _, sockaddr in infos:
        with socket.socket(family, kind, proto) as probe:
            try:
                probe.bind(sockaddr)
            except OSError as error:
                if error.errno == errno.EADDRINUSE:
                    return "the address is already in use (another daemon or program on it?)"
                return error.strerror or str(error)
    return "gRPC could not bind it"


def describe(settings: NetworkSettings) -> str:
    if settings.tls is None:
        return "plaintext, loopback only (--insecure)"
    if settings.tls.client_ca is not None:
        return "TLS, client certificates required"
    return "TLS"
