"""Reading the kernel's TCP tables for the cap on one address's connections (peer_cap.py);
the cap at work, on a real daemon: tests/e2e/test_listener_abuse.py."""

from __future__ import annotations

import pytest

from tailhub.daemon.peer_cap import Connection, established, over_the_cap
from tailhub.daemon.peer_groups import peer_address


def row(local: str, remote: str, state: str, inode: int) -> str:
    """A line of /proc/net/tcp{,6}: addresses as the kernel writes them (host byte order)."""
    return f"   0: {local} {remote} {state} 00000000:00000000 00:00000000 00000000  0  0 {inode} 1"


LISTEN_ON_8080 = "0100007F:1F90"  # 127.0.0.1, port 0x1F90
TCP = [
    row(LISTEN_ON_8080, "00000000:0000", "0A", 100),  # the listening socket
    row(LISTEN_ON_8080, "0100007F:D431", "01", 201),  # from 127.0.0.1
    row(LISTEN_ON_8080, "0200000A:D432", "01", 202),  # from 10.0.0.2
    row("0100007F:1F91", "0200000A:D433", "01", 203),  # another port
    row(LISTEN_ON_8080, "0200000A:D434", "06", 204),  # TIME_WAIT
    "   5: garbage",
]
V6_LOCAL = "00000000000000000000000001000000:1F90"  # [::1]:8080
TCP6 = [
    row(V6_LOCAL, "00000000000000000000000001000000:D435", "01", 301),  # from ::1
    row(V6_LOCAL, "0000000000000000FFFF00000200000A:D436", "01", 302),  # ::ffff:10.0.0.2
    # 2001:db8::1 and 2001:db8::ff:0:2, one /64: one peer
    row(V6_LOCAL, "B80D0120000000000000000001000000:D437", "01", 303),
    row(V6_LOCAL, "B80D012000000000FF00000002000000:D438", "01", 304),
    row(V6_LOCAL, "B80D0120010000000000000001000000:D439", "01", 305),  # 2001:db8:0:1::1
]


def test_only_established_connections_to_the_ports_are_counted_by_their_peer() -> None:
    assert list(established(TCP, {8080})) == [
        Connection("127.0.0.1", 201),
        Connection("10.0.0.2", 202),
    ]
    # A v4 peer on a dual-stack listener counts as the same address as over v4.
    # An IPv6 peer counts by its /64: before, one host with a /64 (2**64 addresses) could take
    # a new address for each connection and hold every slot of the listener.
    assert list(established(TCP6, {8080})) == [
        Connection("::1", 301),
        Connection("10.0.0.2", 302),
        Connection("2001:db8::/64", 303),
        Connection("2001:db8::/64", 304),
        Connection("2001:db8:0:1::/64", 305),
    ]


def test_a_peer_past_the_cap_loses_its_newest_connections() -> None:
    connections = [Connection("10.0.0.2", inode) for inode in (9, 3, 7, 5)]
    connections.append(Connection("10.0.0.3", 4))
    assert over_the_cap(connections, 2) == {"10.0.0.2": [7, 9]}
    assert over_the_cap(connections, 4) == {}


@pytest.mark.parametrize(
    ("peer", "address"),
    [
        ("ipv4:10.1.2.3:5555", "10.1.2.3"),
        ("ipv6:[2001:db8::1]:5555", "2001:db8::/64"),
        ("ipv6:[2001:db8::ff:2%eth0]:5555", "2001:db8::/64"),
        ("ipv6:[::ffff:10.1.2.3]:5555", "10.1.2.3"),
        ("ipv6:[::1]:5555", "::1"),
        ("unix:/run/x.sock", "unix:/run/x.sock"),
    ],
)
def test_a_grpc_peer_is_its_address_an_ipv6_one_by_its_64(peer: str, address: str) -> None:
    # The same peers as the connection cap's, for the limit on failed authentications.
    assert peer_address(peer) == address
