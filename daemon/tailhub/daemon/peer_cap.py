"""A cap on the TCP connections one address holds on the --listen ports (--max-connections-per-
peer).

gRPC's Python server has no hook at accept, so the cap is kept from outside it: every
`CHECK_EVERY_S` the kernel's table of TCP sockets (/proc/net/tcp and tcp6) is read, the
established connections to the listen ports are counted by remote address, and when one address
holds more than the cap, the newest of them past it are shut down through the daemon's own
descriptor for each (found by socket inode in /proc/self/fd). gRPC then sees them end as if the
peer had closed them; their calls, if any, end UNAVAILABLE.

Without it one peer could hold all of gRPC's connections (listeners.NETWORK_MAX_CONNECTIONS)
and keep everyone else's new connections out for as long as it liked. With it, such a peer
holds them until the next check at most, and then only its share. A socket's inode is taken
from a counter, so a higher one is a newer connection: the ones a peer held first stay.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import os
import socket
import time
from collections import Counter, defaultdict
from collections.abc import Collection, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

from tailhub.daemon.faults import CONNECTION_CAP
from tailhub.daemon.peer_groups import address_group
from tailhub.daemon.supervisor import Supervisor

logger = logging.getLogger(__name__)

# The default of --max-connections-per-peer: a CI farm behind one NAT address runs many
# clients, each on one connection (a channel multiplexes its calls).
DEFAULT_GRPC_CONNECTIONS_PER_PEER = 128
CHECK_EVERY_S = 0.5
# A peer's connections closed are logged at most this often, with the count since.
LOG_EVERY_S = 60.0
_TABLES = (Path("/proc/net/tcp"), Path("/proc/net/tcp6"))
_ESTABLISHED = "01"
_FD_DIRECTORY = Path("/proc/self/fd")


@dataclass(frozen=True)
class Connection:
    peer: str  # the remote address's peer_groups.address_group
    inode: int


def _peer(hex_address: str) -> str:
    """The peer of an address in the kernel's hex form (each 32-bit word in host order): an
    IPv6 one by its /64 (peer_groups.py)."""
    raw = bytes.fromhex(hex_address)
    words = b"".join(raw[i : i + 4][::-1] for i in range(0, len(raw), 4))
    return address_group(ipaddress.ip_address(words))


def established(lines: Iterable[str], ports: Collection[int]) -> Iterator[Connection]:
    """The established connections to `ports` in the lines of a /proc/net/tcp{,6} table."""
    for line in lines:
        fields = line.split()
        if len(fields) < 10 or fields[3] != _ESTABLISHED:
            continue
        _, _, local_port = fields[1].partition(":")
        remote, _, _ = fields[2].partition(":")
        try:
            if int(local_port, 16) not in ports:
                continue
            yield Connection(_peer(remote), int(fields[9]))
        except ValueError:  # a line this parser does not know: never the daemon's problem
            continue


def over_the_cap(connections: Iterable[Connection], cap: int) -> dict[str, list[int]]:
    """Per peer past `cap`: the inodes of its newest connections past it."""
    by_peer: dict[str, list[int]] = defaultdict(list)
    for connection in connections:
        by_peer[connection.peer].append(connection.inode)
    return {peer: sorted(inodes)[cap:] for peer, inodes in by_peer.items() if len(inodes) > cap}


def _read_tables(ports: Collection[int]) -> list[Connection]:
    connections: list[Connection] = []
    for table in _TABLES:
        with contextlib.suppress(FileNotFoundError), table.open() as lines:  # (no IPv6: none)
            next(lines, None)  # the header
            connections.extend(established(lines, ports))
    return connections


def _socket_descriptors(inodes: Collection[int]) -> dict[int, int]:
    """The daemon's descriptors for sockets with those inodes: {inode: fd}."""
    found: dict[int, int] = {}
    wanted = {f"socket:[{inode}]": inode for inode in inodes}
    for name in os.listdir(_FD_DIRECTORY):
        with contextlib.suppress(OSError):  # closed meanwhile
            inode = wanted.get(os.readlink(_FD_DIRECTORY / name))
            if inode is not None:
                found[inode] = int(name)
    return found


def _shut_down(fd: int, inode: int) -> bool:
    """Shuts down the socket at `fd` if it is still the one with `inode` (the descriptor may
    have been closed and taken again since it was listed); True if it was."""
    try:
        duplicate = os.dup(fd)
    except OSError:
        return False
    try:
        if os.fstat(duplicate).st_ino != inode:
            return False
        with socket.socket(fileno=duplicate) as held:
            duplicate = -1  # the socket object closes it
            with contextlib.suppress(OSError):  # already shut down by the peer
                held.shutdown(socket.SHUT_RDWR)
        return True
    finally:
        if duplicate >= 0:
            os.close(duplicate)


def enforce(ports: Collection[int], cap: int) -> tuple[dict[str, int], Counter[str]]:
    """One check (blocking: it reads /proc): shuts down each peer's connections past `cap`;
    how many were shut down, per peer, and how many each held."""
    connections = _read_tables(ports)
    held = Counter(connection.peer for connection in connections)
    if max(held.values(), default=0) <= cap:  # (every round but an attack's)
        return {}, held
    excess = over_the_cap(connections, cap)
    descriptors = _socket_descriptors([inode for inodes in excess.values() for inode in inodes])
    closed: dict[str, int] = {}
    for peer, inodes in excess.items():
        count = sum(
            _shut_down(descriptors[inode], inode) for inode in inodes if inode in descriptors
        )
        if count:
            closed[peer] = count
    return closed, held


class PeerCap:
    """Keeps the cap while the daemon serves (an essential task: supervisor.py)."""

    def __init__(self, ports: Collection[int], cap: int, total: int) -> None:
        self.ports = frozenset(ports)
        self.cap = cap
        # gRPC's cap on the listeners' connections in all (listeners.connection_cap).
        self.total = total
        self._full_logged_at = float("-inf")
        self._unlogged: dict[str, int] = defaultdict(int)
        self._logged_at: dict[str, float] = {}
        self._task: asyncio.Task[None] | None = None
        self._essentials = Supervisor()

    def start(self, essentials: Supervisor) -> None:
        self._essentials = essentials
        self._task = essentials.spawn(self._run(), name=CONNECTION_CAP)

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(CHECK_EVERY_S)
            # Off the loop: the table holds every socket of the network namespace.
            closed, held = await asyncio.to_thread(enforce, self.ports, self.cap)
            self._log(closed, time.monotonic())
            self._tell_full(held, time.monotonic())

    def _log(self, closed: dict[str, int], now: float) -> None:
        # Bounded: only peers logged within the last LOG_EVERY_S are remembered.
        for peer in [peer for peer, at in self._logged_at.items() if now - at >= LOG_EVERY_S]:
            del self._logged_at[peer]
        for peer, count in closed.items():
            self._unlogged[peer] += count
        for peer, count in list(self._unlogged.items()):
            if now - self._logged_at.get(peer, float("-inf")) < LOG_EVERY_S:
                continue
            logger.warning(
                "closed %d connection(s) from %s past its %d on the --listen ports "
                "(--max-connections-per-peer)",
                count,
                peer,
                self.cap,
            )
            self._logged_at[peer] = now
            del self._unlogged[peer]

    def _tell_full(self, held: Counter[str], now: float) -> None:
        """Says, at most once a minute, when every connection gRPC allows is open: new ones,
        a token holder's too, are closed at once until some end (many addresses, each within
        its cap, can hold them all)."""
        if sum(held.values()) < self.total or now - self._full_logged_at < LOG_EVERY_S:
            return
        self._full_logged_at = now
        most = ", ".join(f"{peer} {count}" for peer, count in held.most_common(5))
        logger.warning(
            "all %d connections the --listen ports take are open, from %d address(es) (most: "
            "%s); new ones are closed at once until some end",
            self.total,
            len(held),
            most,
        )

    async def close(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            await self._essentials.cancel([task])
