"""Checking that each of many followers got exactly the log's bytes, at about the cost of one.

Every follower of a client process stands at a node: the sha256 of the bytes it has received so
far. A chunk (its offset and its payload as it came, raw bytes or base64 text) takes the
follower to a child node: those bytes plus the chunk's. Followers that receive the same chunks
share their nodes, so the process decodes and hashes each chunk once and only compares the
others' payloads with it (a memcmp); followers whose chunks differ fork, and pay for their own.
A node's links are let go once no follower stands at it or can still reach it (stands at a node
before it on its chain), so memory follows the spread between the slowest and fastest follower,
not the log's length.

The digest a follower ends with is the sha256 of everything it received, whatever the sharing:
decoding is deterministic, and a payload is reused only when it is equal byte for byte.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from bench.writer import LINE_BYTES, timestamp_at

if TYPE_CHECKING:
    from hashlib import _Hash


@dataclass(eq=False)
class Node:
    """Where followers stand: the digest of what they received."""

    digest: _Hash | None
    followers: int = 0  # standing here
    reachable: bool = False  # a follower may still arrive (from a node before it)
    links: dict[int, Link] = field(default_factory=dict)  # by the next chunk's offset

    def hexdigest(self) -> str:
        assert self.digest is not None, "a node someone stands at keeps its digest"
        return self.digest.hexdigest()


@dataclass(eq=False)
class Link:
    """A chunk as received, and what it decoded to."""

    payload: bytes
    child: Node
    size: int  # decoded bytes
    written: float | None  # the write time of its first whole `bench.writer` line


class Chains:
    """The nodes of one process's followers; `decode` turns a payload into the log's bytes
    (ValueError for one that is not a payload)."""

    def __init__(self, decode: Callable[[bytes], bytes]) -> None:
        self._decode = decode
        self._root = Node(hashlib.sha256())

    def start(self) -> Node:
        """A follower's first node (nothing received). Call it for every follower before any
        follower's first step: the root's links are let go once nobody stands there."""
        self._root.followers += 1
        return self._root

    def step(
        self, node: Node, offset: int, source: bytes | bytearray, start: int, end: int
    ) -> Link:
        """Moves a follower at `node` past the chunk at `offset`, whose payload is
        `source[start:end]` (compared in place: a payload taken before is not copied again);
        the link it took."""
        link = node.links.get(offset)
        if (
            link is None
            or len(link.payload) != end - start
            or not source.startswith(link.payload, start)
        ):
            payload = bytes(source[start:end])
            data = self._decode(payload)  # (a payload it refuses changes nothing)
            if link is not None:  # another chunking: the newer is kept, the older let go
                link.child.reachable = False
                self._close(link.child)
            assert node.digest is not None, "a node someone stands at keeps its digest"
            digest = node.digest.copy()
            digest.update(data)
            written = timestamp_at(data, -offset % LINE_BYTES)
            link = Link(payload, Node(digest, reachable=True), len(data), written)
            node.links[offset] = link
        link.child.followers += 1
        node.followers -= 1
        self._close(node)
        return link

    @staticmethod
    def _close(node: Node) -> None:
        closing = [node]
        while closing:
            each = closing.pop()
            if each.followers or each.reachable or each.digest is None:
                continue
            # Nobody here and nobody before it: nobody will ever take its links again.
            each.digest = None
            for link in each.links.values():
                link.child.reachable = False
                closing.append(link.child)
            each.links.clear()
