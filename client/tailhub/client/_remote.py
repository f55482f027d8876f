"""Daemons reached over TCP (`tailhub --server HOST:PORT,...`): the channel, the token, and a
clear line when the connection cannot be made (no daemon, an untrusted certificate, TLS on
one side only)."""

from __future__ import annotations

import dataclasses
import os
import re
import socket
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, NamedTuple

import grpc

from tailhub.client import exit_codes
from tailhub.client._credential_files import read_credential as _read
from tailhub.client._errors import AccessDenied, DaemonUnreachable, TailhubError

SERVER_ENV = "TAILHUB_SERVER"
TOKEN_ENV = "TAILHUB_TOKEN"  # noqa: S105 - the name of a variable
CA_ENV = "TAILHUB_CA"
# How long a first connection may take before it is given up (a daemon behind a slow link).
CONNECT_TIMEOUT = 10.0
# Client keepalive: ping an idle connection every 30 s (the daemon accepts down to 10 s) and
# drop it when no answer comes within 10 s, so a follower notices a daemon whose host vanished
# and reconnects instead of waiting forever.
KEEPALIVE_OPTIONS = [
    ("grpc.keepalive_time_ms", 30_000),
    ("grpc.keepalive_timeout_ms", 10_000),
    ("grpc.http2.ping_timeout_ms", 10_000),  # else gRPC waits 60 s for the answer
    ("grpc.keepalive_permit_without_calls", 1),
    ("grpc.http2.max_pings_without_data", 0),
]


class SecureConnectionError(TailhubError):
    """The TLS connection cannot be made: an untrusted certificate, TLS on one side only."""

    exit_code = exit_codes.TLS_FAILED


@dataclass(frozen=True)
class Target:
    """Where a remote daemon is and how to prove who we are to it."""

    address: str  # HOST:PORT, [IPv6]:PORT
    host: str
    port: int
    token: str | None
    ca_pem: bytes | None = None  # None with TLS: the system's trusted CAs
    client_cert_pem: bytes | None = None
    client_key_pem: bytes | None = None
    insecure: bool = False
    ca_file: str | None = None
    client_cert_file: str | None = None
    client_key_file: str | None = None

    def channel(self, options: list[tuple[str, Any]]) -> grpc.Channel:
        every = [*options, *KEEPALIVE_OPTIONS]
        if self.insecure:
            return grpc.insecure_channel(self.address, options=every)
        credentials = grpc.ssl_channel_credentials(
            root_certificates=self.ca_pem,
            private_key=self.client_key_pem,
            certificate_chain=self.client_cert_pem,
        )
        return grpc.secure_channel(self.address, credentials, options=every)


def target_from(
    server: str,
    *,
    token_file: str | None,
    ca_file: str | None,
    client_cert: str | None = None,
    client_key: str | None = None,
    insecure: bool = False,
    environ: Mapping[str, str] = os.environ,
) -> Target:
    """A target from the global flags (and TAILHUB_TOKEN, TAILHUB_CA); ValueError (usage)
    for flags that do not fit, TailhubError for a file that cannot be read."""
    address = _address(server, insecure)
    _check_tls_flags(ca_file, client_cert, client_key, insecure)
    token = _token(token_file, environ)
    ca = ca_file or environ.get(CA_ENV) or None
    ca_pem = _ca_pem(ca) if ca and not insecure else None
    if client_cert and client_key:
        _check_client_pair(client_cert, client_key)
    return Target(
        address=str(address),
        host=address.host,
        port=address.port,
        token=token,
        ca_pem=ca_pem,
        client_cert_pem=_read(client_cert, "client certificate") if client_cert else None,
        client_key_pem=_read(client_key, "client key") if client_key else None,
        insecure=insecure,
        ca_file=ca,
        client_cert_file=client_cert,
        client_key_file=client_key,
    )


def _check_tls_flags(
    ca_file: str | None, client_cert: str | None, client_key: str | None, insecure: bool
) -> None:
    """ValueError (usage) for TLS flags that do not go together."""
    if insecure and (ca_file or client_cert or client_key):
        raise ValueError("--insecure means no TLS: leave out --ca-file and client certificates")
    if bool(client_cert) != bool(client_key):
        raise ValueError("--client-cert and --client-key go together")


def _token(token_file: str | None, environ: Mapping[str, str]) -> str | None:
    """The bearer token: --token-file's, else $TAILHUB_TOKEN's, else none."""
    token: str | None
    if token_file:
        token = _read(token_file, "token file", private=True).decode("utf-8", "replace").strip()
        if not token:
            raise TailhubError(f"the token file {token_file} is empty")
    else:
        token = environ.get(TOKEN_ENV, "").strip() or None
    if token is not None and not _TOKEN_TEXT.fullmatch(token):
        # It could not even travel as a header; a daemon would refuse it anyway.
        where = f"the token file {token_file}" if token_file else TOKEN_ENV
        raise AccessDenied(f"{where} does not hold a tailhub token (printable ASCII only)")
    return token


def _ca_pem(ca_file: str) -> bytes:
    """The CA file's certificates; TailhubError when it holds none."""
    ca_pem = _read(ca_file, "CA file")
    if _PEM_CERTIFICATE not in ca_pem:
        raise TailhubError(f"the CA file {ca_file} holds no PEM certificate")
    return ca_pem


# A cluster has a handful of daemons; a longer list is a mistake (or someone's 100 kB flag).
MAX_SERVERS = 64


def targets_from(
    servers: str,
    *,
    token_file: str | None,
    ca_file: str | None,
    client_cert: str | None = None,
    client_key: str | None = None,
    insecure: bool = False,
    environ: Mapping[str, str] = os.environ,
) -> list[Target]:
    """The targets of `--server HOST:PORT,HOST:PORT,...`, in the list's order (the order of
    preference), all with the same token, CA and client certificate."""
    from tailhub.daemon.limits import shown

    given = servers.split(",", MAX_SERVERS)
    if len(given) > MAX_SERVERS:
        raise ValueError(f"--server lists more than {MAX_SERVERS} daemons")
    if not all(part.strip() for part in given):
        raise ValueError(f"--server {shown(servers)}: an empty entry (HOST:PORT,HOST:PORT,...)")
    first = target_from(
        given[0].strip(),
        token_file=token_file,
        ca_file=ca_file,
        client_cert=client_cert,
        client_key=client_key,
        insecure=insecure,
        environ=environ,
    )
    targets = [first]
    for part in given[1:]:
        address = _address(part.strip(), insecure)
        if str(address) in (target.address for target in targets):
            raise ValueError(f"--server lists {address} twice")
        targets.append(
            dataclasses.replace(first, address=str(address), host=address.host, port=address.port)
        )
    return targets


def _address(server: str, insecure: bool) -> ListenAddress:
    """One HOST:PORT of --server, checked; ValueError saying what is wrong."""
    from tailhub.daemon.listeners import parse_address

    try:
        address = parse_address(server, examples="build1.example.com:7443, [::1]:7443")
    except ValueError as error:
        raise ValueError(f"--server {error}") from None
    if address.port == 0:
        raise ValueError(f"--server {server!r}: give the daemon's port")
    if insecure and not address.is_loopback:
        raise ValueError(
            f"--insecure is for a daemon on this machine's loopback only ({server} is not): "
            "over a network the token and logs would travel in the clear"
        )
    return address


_TOKEN_TEXT = re.compile(r"[\x21-\x7e]+")
_PEM_CERTIFICATE = b"-----BEGIN CERTIFICATE-----"


def _check_client_pair(cert_file: str, key_file: str) -> None:
    """The client certificate and key load, and belong together (else gRPC's core prints
    its own lines and the handshake fails without saying why)."""
    import ssl

    try:
        ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT).load_cert_chain(cert_file, key_file)
    except ssl.SSLError as error:
        raise TailhubError(
            f"--client-cert {cert_file} and --client-key {key_file} are not a certificate "
            f"and its key ({error.reason or error})"
        ) from None
    except OSError as error:
        raise TailhubError(
            f"cannot read --client-cert/--client-key: {error.strerror or error}"
        ) from None


class _Details(NamedTuple):
    method: str
    timeout: float | None
    metadata: Any
    credentials: grpc.CallCredentials | None
    wait_for_ready: bool | None
    compression: grpc.Compression | None


if TYPE_CHECKING:  # generic in the stubs only
    import ssl

    from tailhub.daemon.listeners import ListenAddress

    _UnaryUnary = grpc.UnaryUnaryClientInterceptor[Any, Any]
    _UnaryStream = grpc.UnaryStreamClientInterceptor[Any, Any]
else:
    _UnaryUnary = grpc.UnaryUnaryClientInterceptor
    _UnaryStream = grpc.UnaryStreamClientInterceptor


class _Bearer(_UnaryUnary, _UnaryStream):
    """Adds `authorization: Bearer TOKEN` to every call (plaintext loopback included, where
    gRPC's call credentials are not allowed)."""

    def __init__(self, token: str) -> None:
        self._metadata = (("authorization", f"Bearer {token}"),)

    def _with_token(self, details: Any) -> _Details:
        return _Details(
            details.method,
            details.timeout,
            (*(details.metadata or ()), *self._metadata),
            details.credentials,
            details.wait_for_ready,
            details.compression,
        )

    def intercept_unary_unary(
        self, continuation: Callable[[Any, Any], Any], client_call_details: Any, request: Any
    ) -> Any:
        return continuation(self._with_token(client_call_details), request)

    def intercept_unary_stream(
        self, continuation: Callable[[Any, Any], Any], client_call_details: Any, request: Any
    ) -> Any:
        return continuation(self._with_token(client_call_details), request)


def with_token(channel: grpc.Channel, target: Target) -> grpc.Channel:
    if target.token is None:
        return channel
    return grpc.intercept_channel(channel, _Bearer(target.token))


def wait_connected(channel: grpc.Channel, target: Target, timeout: float = CONNECT_TIMEOUT) -> None:
    """Returns once the channel is connected; else raises one clear line saying why not."""
    changed = threading.Condition()
    states: list[grpc.ChannelConnectivity] = []

    def on_state(state: grpc.ChannelConnectivity) -> None:
        with changed:
            states.append(state)
            changed.notify_all()

    deadline = time.monotonic() + timeout
    channel.subscribe(on_state, try_to_connect=True)
    try:
        seen = 0
        while True:
            with changed:
                while len(states) == seen and time.monotonic() < deadline:
                    changed.wait(deadline - time.monotonic())
                news, seen = states[seen:], len(states)
            if grpc.ChannelConnectivity.READY in news:
                return
            # A failure may be passing (a daemon busy starting): only a cause found with
            # plain sockets ends the wait early.
            if grpc.ChannelConnectivity.TRANSIENT_FAILURE in news:
                problem = diagnose(target)
                if problem is not None:
                    raise problem
            if time.monotonic() >= deadline:
                raise diagnose(target) or DaemonUnreachable(
                    f"no tailhub daemon answered at {target.address} within {timeout:.0f}s"
                )
    finally:
        channel.unsubscribe(on_state)


def diagnose(target: Target) -> TailhubError | None:
    """Why a connection to `target` fails, found with plain sockets (gRPC only says it did);
    None when nothing is found wrong."""
    try:
        raw = socket.create_connection((target.host, target.port), timeout=5.0)
    except socket.gaierror as error:
        return DaemonUnreachable(f"cannot resolve {target.host!r} ({error.strerror})")
    except OSError as error:
        why = "no answer within 5 s" if isinstance(error, TimeoutError) else error.strerror
        return DaemonUnreachable(f"no tailhub daemon answers at {target.address} ({why})")
    with raw:
        raw.settimeout(5.0)
        if target.insecure:
            return _plaintext_refused(raw, target)
        return _tls_refused(raw, target)


def _plaintext_refused(raw: socket.socket, target: Target) -> TailhubError | None:
    import ssl  # only when a connection failed: the CLI's start stays light

    probe = ssl.create_default_context()
    probe.check_hostname = False
    probe.verify_mode = ssl.CERT_NONE
    try:
        with probe.wrap_socket(raw, server_hostname=target.host):
            pass
    except (ssl.SSLError, OSError):
        return None  # not TLS: the port speaks plaintext, as asked
    return SecureConnectionError(
        f"{target.address} speaks TLS: leave out --insecure and give the daemon's CA "
        "with --ca-file (or TAILHUB_CA)"
    )


def _tls_refused(raw: socket.socket, target: Target) -> TailhubError | None:
    import ssl  # only when a connection failed: the CLI's start stays light

    context = ssl.create_default_context(
        cadata=target.ca_pem.decode("ascii", "replace") if target.ca_pem else None
    )
    if target.client_cert_pem is not None:
        context.load_cert_chain(*_client_pair_files(target))
    try:
        with context.wrap_socket(raw, server_hostname=target.host) as tls:
            # A gRPC server speaks first after the handshake (its SETTINGS); one that wants
            # a client certificate closes the connection here instead (after TLS 1.3's
            # handshake, BoringSSL sends no alert).
            closed = tls.recv(1) == b""
    except ssl.SSLError as error:
        return _tls_failure(error, target)
    except TimeoutError:
        return None
    except OSError:
        return _no_tls(target)
    if not closed:
        return None
    given = "" if target.client_cert_pem is None else " (not the one given)"
    return SecureConnectionError(
        f"{target.address} closed the TLS connection at once: it wants a client certificate "
        f"signed by its CA{given}: --client-cert/--client-key"
    )


def _tls_failure(error: ssl.SSLError, target: Target) -> TailhubError:
    import ssl

    if isinstance(error, ssl.SSLCertVerificationError) and error.verify_code in _OUT_OF_DATE:
        return _out_of_date(error.verify_code, target)
    if isinstance(error, ssl.SSLCertVerificationError):
        ca_hint = (
            f" (the CA in {target.ca_file} did not sign it)"
            if target.ca_file
            else "; give the CA that signed it with --ca-file (or TAILHUB_CA)"
        )
        return SecureConnectionError(
            f"the certificate of {target.address} is not trusted: "
            f"{error.verify_message or error.reason}{ca_hint}"
        )
    if error.reason in ("WRONG_VERSION_NUMBER", "RECORD_LAYER_FAILURE", "PACKET_LENGTH_TOO_LONG"):
        return _no_tls(target)
    return SecureConnectionError(
        f"the TLS connection to {target.address} failed: {error.reason or error}"
    )


# OpenSSL's X509_V_ERR_CERT_NOT_YET_VALID and X509_V_ERR_CERT_HAS_EXPIRED: reported only once
# the chain led to a CA the client trusts, so the CA did sign it; the dates are what is wrong.
_NOT_YET_VALID, _EXPIRED = 9, 10
_OUT_OF_DATE = (_NOT_YET_VALID, _EXPIRED)


def _out_of_date(verify_code: int, target: Target) -> TailhubError:
    """Names the certificate's own date, read from a second look at it (unverified: only to
    say when it stopped, or starts, being valid)."""
    expired = verify_code == _EXPIRED
    date = _certificate_date(target, not_after=expired)
    if expired:
        when = f"expired on {date}" if date else "has expired"
        return SecureConnectionError(
            f"the certificate of {target.address} {when} (it is signed by a CA you trust; "
            "the daemon's owner must renew it and restart tailhubd)"
        )
    when = f"until {date}" if date else "yet"
    return SecureConnectionError(
        f"the certificate of {target.address} is not valid {when} "
        "(check this machine's clock, and the daemon's)"
    )


def _certificate_date(target: Target, *, not_after: bool) -> str | None:
    import ssl

    try:
        pem = ssl.get_server_certificate((target.host, target.port), timeout=5.0)
        # Imported here: cryptography is slow to import, and only this error needs it.
        from cryptography import x509

        certificate = x509.load_pem_x509_certificate(pem.encode("ascii"))
    except (OSError, ValueError):
        return None
    when = certificate.not_valid_after_utc if not_after else certificate.not_valid_before_utc
    return f"{when:%Y-%m-%d %H:%M} UTC"


def _client_pair_files(target: Target) -> tuple[str, str]:
    """Python's ssl loads a client certificate from files only: the ones given."""
    return (target.client_cert_file or "", target.client_key_file or "")


def _no_tls(target: Target) -> TailhubError:
    return SecureConnectionError(
        f"{target.address} does not speak TLS (a daemon started with --insecure? then add "
        "--insecure, on a loopback address only)"
    )


def targets_of(params: Mapping[str, Any]) -> list[Target] | None:
    """The remote daemons the CLI's global flags name (or TAILHUB_SERVER); None: the socket's."""
    server = params.get("server")
    if not server:
        for flag in ("token_file", "ca_file", "client_cert", "client_key", "insecure"):
            if params.get(flag):
                raise ValueError(f"--{flag.replace('_', '-')} goes with --server HOST:PORT")
        return None
    return targets_from(
        server,
        token_file=params.get("token_file"),
        ca_file=params.get("ca_file"),
        client_cert=params.get("client_cert"),
        client_key=params.get("client_key"),
        insecure=bool(params.get("insecure")),
    )
