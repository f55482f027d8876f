from __future__ import annotations

import random

import pytest

from tailhub.daemon.wire import encode_chunk
from tailhub.v1 import tailhub_pb2 as pb

OFFSETS = [0, 1, 127, 128, 2**40]
SIZES = [0, 1, 300, 1024 * 1024]


@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize("offset", OFFSETS)
def test_hand_encoded_chunk_is_byte_identical_to_protobuf(offset: int, size: int) -> None:
    data = random.Random(offset * 31 + size).randbytes(size)
    expected = pb.SubscribeResponse(chunk=pb.Chunk(offset=offset, data=data)).SerializeToString()
    encoded = encode_chunk(offset, data)
    assert encoded == expected
    decoded = pb.SubscribeResponse.FromString(encoded)
    assert decoded.WhichOneof("message") == "chunk"
    assert (decoded.chunk.offset, decoded.chunk.data) == (offset, data)
