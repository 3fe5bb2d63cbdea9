"""Sealed blobs: round trips, range reads, and every way stored bytes can be altered."""

from __future__ import annotations

import os

import pytest

from gateway.storage.sealing import (
    KEY_SIZE,
    SEALED_SEGMENT_SIZE,
    SEGMENT_SIZE,
    KeyRing,
    SealBroken,
    Sealer,
    SegmentWriter,
    sealed_size,
    sealed_span,
)

MASTER_1 = bytes(range(32))
MASTER_2 = bytes(range(32, 64))


def seal_blob(sealer: Sealer, plaintext: bytes, piece: int = 10_000) -> bytes:
    writer = SegmentWriter(sealer)
    sealed = b"".join(
        b"".join(writer.feed(plaintext[i : i + piece])) for i in range(0, len(plaintext), piece)
    )
    return sealed + writer.finish()


@pytest.mark.parametrize(
    "size", [0, 1, SEGMENT_SIZE - 1, SEGMENT_SIZE, SEGMENT_SIZE + 1, 3 * SEGMENT_SIZE + 17]
)
def test_round_trip_and_every_range(size: int) -> None:
    plaintext = os.urandom(size)
    sealer = Sealer(os.urandom(KEY_SIZE), b"blob-1")
    sealed = seal_blob(sealer, plaintext)
    assert len(sealed) == sealed_size(size)
    if size == 0:
        assert sealer.open(0, sealed, last=True) == b""
        return
    for start, length in [(0, size), (size - 1, 1), (size // 2, size - size // 2), (0, 1)]:
        span = sealed_span(start, length, size)
        stored = sealed[span.offset : span.offset + span.length]
        assert sealer.open_span(span, stored, length, size) == plaintext[start : start + length]


def test_a_range_fetches_only_its_segments() -> None:
    size = 10 * SEGMENT_SIZE
    span = sealed_span(3 * SEGMENT_SIZE + 5, 100, size)
    assert (span.first_segment, span.offset, span.length) == (
        3,
        3 * SEALED_SEGMENT_SIZE,
        SEALED_SEGMENT_SIZE,
    )
    across = sealed_span(SEGMENT_SIZE - 1, 2, size)
    assert across.length == 2 * SEALED_SEGMENT_SIZE


def test_tampering_is_detected() -> None:
    plaintext = os.urandom(3 * SEGMENT_SIZE + 10)
    size = len(plaintext)
    sealer = Sealer(os.urandom(KEY_SIZE), b"blob-1")
    sealed = bytearray(seal_blob(sealer, plaintext))
    whole = sealed_span(0, size, size)

    flipped = bytearray(sealed)
    flipped[SEALED_SEGMENT_SIZE + 100] ^= 1
    with pytest.raises(SealBroken):
        sealer.open_span(whole, bytes(flipped), size, size)

    # Two segments swapped.
    first, second = (
        sealed[:SEALED_SEGMENT_SIZE],
        sealed[SEALED_SEGMENT_SIZE : 2 * SEALED_SEGMENT_SIZE],
    )
    swapped = second + first + sealed[2 * SEALED_SEGMENT_SIZE :]
    with pytest.raises(SealBroken):
        sealer.open_span(whole, bytes(swapped), size, size)

    # Cut after a segment boundary, the blob's recorded size cut to match: the segment that
    # now comes last was not sealed as the last.
    cut = bytes(sealed[: 3 * SEALED_SEGMENT_SIZE])
    with pytest.raises(SealBroken):
        sealer.open_span(
            sealed_span(0, 3 * SEGMENT_SIZE, 3 * SEGMENT_SIZE),
            cut,
            3 * SEGMENT_SIZE,
            3 * SEGMENT_SIZE,
        )

    # Another blob's segment, under the same key.
    key = os.urandom(KEY_SIZE)
    mine, theirs = Sealer(key, b"blob-1"), Sealer(key, b"blob-2")
    with pytest.raises(SealBroken):
        theirs.open(0, mine.seal(0, b"abc", last=True), last=True)


def test_key_ring_wraps_rotates_and_refuses() -> None:
    ring = KeyRing({"k1": MASTER_1}, active="k1")
    data_key, wrapped = ring.new_data_key()
    assert wrapped.key_id == "k1" and data_key not in wrapped.wrapped
    rotated = KeyRing({"k1": MASTER_1, "k2": MASTER_2}, active="k2")
    rewrapped = rotated.rewrap(wrapped)
    assert rewrapped.key_id == "k2" and rotated.unwrap(rewrapped) == data_key
    # After rotation the old master key can go.
    assert KeyRing({"k2": MASTER_2}, active="k2").unwrap(rewrapped) == data_key
    with pytest.raises(SealBroken):
        KeyRing({"k2": MASTER_2}, active="k2").unwrap(wrapped)
    with pytest.raises(SealBroken):
        KeyRing({"k1": MASTER_2}, active="k1").unwrap(wrapped)
    with pytest.raises(ValueError):
        KeyRing({"k1": b"short"}, active="k1")
    with pytest.raises(ValueError):
        KeyRing({"k1": MASTER_1}, active="k9")
