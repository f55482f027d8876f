"""What counts as one peer of the --listen ports, for the cap on its connections (peer_cap.py)
and the limit on its failed authentications (failed_auth.py), and of the web view's
(web/connections.py).

An IPv4 address is one peer. An IPv6 address counts by its /64: a host there is usually given
the whole /64, and could otherwise take a new address for every connection or guess (2**64 of
them) and never meet a per-address bound. An IPv4 address mapped into IPv6 (a dual-stack
listener) is the IPv4 address, and a loopback address is itself.
"""

from __future__ import annotations

import ipaddress


def address_group(address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> str:
    """The peer an address belongs to, as text: `10.1.2.3`, `2001:db8::/64`, `::1`."""
    if isinstance(address, ipaddress.IPv4Address):
        return str(address)
    if address.ipv4_mapped is not None:
        return str(address.ipv4_mapped)
    if address.is_loopback:
        return str(address)
    return str(ipaddress.IPv6Network(f"{address}/64", strict=False))


def host_group(host: str) -> str:
    """The peer of an address in text (`10.1.2.3`, `fe80::1%eth0`); the text itself when it
    is no IP address."""
    try:
        return address_group(ipaddress.ip_address(host.split("%", maxsplit=1)[0]))
    except ValueError:
        return host


def peer_address(peer: str) -> str:
    """The peer of gRPC's peer string (`ipv4:1.2.3.4:5`, `ipv6:[2001:db8::1]:5`); the string
    itself for anything else (a Unix socket)."""
    kind, _, rest = peer.partition(":")
    if kind not in ("ipv4", "ipv6"):
        return peer
    return host_group((rest.rpartition(":")[0] or rest).strip("[]"))
