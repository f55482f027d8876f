"""The names the web view answers to: a request whose `Host` is not one of them is refused (421).

DNS rebinding: a page on an attacker's domain whose name they make resolve to 127.0.0.1 can
send requests to the web view from the victim's browser. SameSite=Strict keeps the session
cookie out of them, but the open paths (`/login`, `/static/`) would still answer, and a
browser's requests carry the attacker's name in `Host`. So only the listener's own names pass:
on loopback `127.0.0.1`, `localhost` and `[::1]`; elsewhere the address it listens on (this
machine's name for a wildcard, as `tailhub web` prints it) and the names and addresses of its
TLS certificate (a browser opens no other over https without a warning). Always with the
listener's port; without one only where the scheme's default port is the listener's.
"""

from __future__ import annotations

import ipaddress

from tailhub.daemon.web.settings import WebSettings, shown_host

LOOPBACK_NAMES = ("127.0.0.1", "localhost", "::1")
_DEFAULT_PORTS = {"http": 80, "https": 443}
# A browser's Host is a name and a port; anything longer is not one.
MAX_HOST_CHARS = 300


def normalized(name: str) -> str:
    """A host name or address as compared: lower case, no trailing dot, an IP address in its
    one canonical form (IPv6 without brackets)."""
    name = name.strip().lower().rstrip(".")
    if name.startswith("[") and name.endswith("]"):
        name = name[1:-1]
    try:
        return ipaddress.ip_address(name).compressed
    except ValueError:
        return name


def certificate_names(pem: bytes) -> set[str]:
    """The DNS names and IP addresses of the first certificate's subjectAltName in `pem`."""
    # Imported here: cryptography is slow to import, and only a TLS listener needs it.
    from cryptography import x509

    try:
        certificate = x509.load_pem_x509_certificate(pem)
        names = certificate.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except (ValueError, x509.ExtensionNotFound):
        return set()
    found = set(names.get_values_for_type(x509.DNSName))
    found |= {str(address) for address in names.get_values_for_type(x509.IPAddress)}
    return found


class HostCheck:
    """Whether a request's `Host` names this listener."""

    def __init__(self, settings: WebSettings, port: int) -> None:
        address = settings.address
        names = {address.host, shown_host(settings)}
        if address.is_loopback:
            names.update(LOOPBACK_NAMES)
        if settings.tls is not None:
            names |= certificate_names(settings.tls.certificate_chain)
        # Wildcards are where it listens, never a name a browser is sent to.
        self.names = frozenset(normalized(name) for name in names) - {"0.0.0.0", "::"}  # noqa: S104
        self.port = port
        self._bare = _DEFAULT_PORTS[settings.scheme] == port

    def allows(self, host: str | None) -> bool:
        if host is None or not host or len(host) > MAX_HOST_CHARS:
            return False
        name, port = _split(host)
        if port is None:
            if not self._bare:
                return False
        elif port != str(self.port):
            return False
        return normalized(name) in self.names


def _split(host: str) -> tuple[str, str | None]:
    """`NAME:PORT`, `[V6]:PORT`, `NAME` or `[V6]`, as (name, port or None)."""
    if host.startswith("["):
        name, bracket, rest = host.partition("]")
        if not bracket or (rest and not rest.startswith(":")):
            return "", None  # no name of ours
        return name + "]", rest[1:] if rest else None
    name, colon, port = host.rpartition(":")
    if not colon or ":" in name:  # no port, or a bare IPv6 address (not a valid Host)
        return host, None
    return name, port
