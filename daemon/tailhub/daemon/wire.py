"""Hand encoding of the hot message, `SubscribeResponse{chunk}`, and a cache to share it.

Subscribers reading the same range (all of them at the live edge; those behind, once their
chunks fall on the shared grid) get one encoding, the exact bytes protobuf would produce (a
test holds this), which the server sends untouched.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterable

_CHUNK_FIELD = b"\x0a"  # SubscribeResponse.chunk: field 1, length-delimited
_OFFSET_FIELD = b"\x08"  # Chunk.offset: field 1, varint
_DATA_FIELD = b"\x12"  # Chunk.data: field 2, length-delimited


def _varint(value: int) -> bytes:
    out = bytearray()
    while value > 0x7F:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def encode_chunk(offset: int, data: bytes) -> bytes:
    """SubscribeResponse(chunk=Chunk(offset=offset, data=data)), serialized."""
    # proto3 leaves out fields at their default value; so do we, to be byte-identical.
    inner_head = (_OFFSET_FIELD + _varint(offset) if offset else b"") + (
        _DATA_FIELD + _varint(len(data)) if data else b""
    )
    inner_length = len(inner_head) + len(data)
    return b"".join((_CHUNK_FIELD, _varint(inner_length), inner_head, data))


# What an entry costs beyond its encoded bytes (measured with tracemalloc, 64-bit CPython
# 3.11): the bytes object's header, the key (a tuple of three ints) and the ordered dict's
# slot and link, about 300 bytes. Counting only the encoded bytes let a cache of 16 MiB hold
# 140,000 chunks of a short job's 100 bytes, about 50 MB (issue 16, item 20).
ENTRY_OVERHEAD = 300


class EncodedChunkCache:
    """Recently encoded chunks, bounded in the memory they take (their bytes plus each entry's
    overhead), least recently used out first."""

    def __init__(self, max_bytes: int) -> None:
        self._max_bytes = max_bytes
        self._bytes = 0
        self._entries: OrderedDict[tuple[int, int, int], bytes] = OrderedDict()

    def get(self, key: tuple[int, int, int]) -> bytes | None:
        encoded = self._entries.get(key)
        if encoded is not None:
            self._entries.move_to_end(key)
        return encoded

    def put(self, key: tuple[int, int, int], encoded: bytes) -> None:
        cost = len(encoded) + ENTRY_OVERHEAD
        if cost > self._max_bytes or key in self._entries:
            return
        self._entries[key] = encoded
        self._bytes += cost
        while self._bytes > self._max_bytes:
            _, dropped = self._entries.popitem(last=False)
            self._bytes -= len(dropped) + ENTRY_OVERHEAD

    def forget(self, job_ids: Iterable[int]) -> None:
        """Drops the chunks of jobs that were removed: nobody can ask for them again. Left to
        the least-recently-used rule, a removed job's chunks stayed until 16 MiB of others
        came after them: under churn, ~40,000 short jobs' chunks, the daemon's RSS growing
        ~350 B a launch long after --max-ended-jobs was reached (issue 16, item 20)."""
        gone = set(job_ids)
        if not gone:
            return
        # One pass over every entry, once per removal pass (not per job): a cache holds a few
        # tens of thousands at most, and the retention policy removes jobs by the hundred.
        for key in [key for key in self._entries if key[0] in gone]:
            self._bytes -= len(self._entries.pop(key)) + ENTRY_OVERHEAD

    def job_ids(self) -> set[int]:
        """The jobs that have chunks here."""
        return {job_id for job_id, _, _ in self._entries}
