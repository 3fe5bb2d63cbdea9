"""Encryption at rest of one blob: envelope keys and AES-256-GCM in fixed-size segments.

Every blob gets a random 256-bit data key, kept only wrapped (AES key wrap, RFC 3394) by one
of the profile's master keys, so rotating a master key rewraps data keys and rewrites no data.
The blob's bytes are cut into SEGMENT_SIZE segments, each sealed on its own with AES-GCM:
nonce = the segment's index, associated data = the blob's identity, the index and whether it
is the last segment. So a range read opens only the segments it touches, and a segment moved
to another index or blob, a blob cut short after a segment boundary, or one byte changed
anywhere fails to open instead of yielding other plaintext. A data key seals one blob only,
which is what makes a counter nonce safe.

Pure: no I/O. All cryptography is the `cryptography` package's (OpenSSL).
"""

from __future__ import annotations

import os
import struct
from collections.abc import Mapping
from dataclasses import dataclass

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.keywrap import InvalidUnwrap, aes_key_unwrap, aes_key_wrap

KEY_SIZE = 32
SEGMENT_SIZE = 64 * 1024
TAG_SIZE = 16
SEALED_SEGMENT_SIZE = SEGMENT_SIZE + TAG_SIZE


class SealBroken(Exception):
    """Stored bytes that do not open: tampered with, truncated, reordered, or another blob's."""


@dataclass(frozen=True)
class WrappedKey:
    """A blob's data key as stored: which master key wrapped it, and the wrapped bytes."""

    key_id: str
    wrapped: bytes


class KeyRing:
    """A profile's master keys by id, and the one new data keys are wrapped with."""

    def __init__(self, keys: Mapping[str, bytes], active: str) -> None:
        for key_id, key in keys.items():
            if len(key) != KEY_SIZE:
                raise ValueError(f"master key {key_id!r} is {len(key)} bytes, not {KEY_SIZE}")
        if active not in keys:
            raise ValueError(f"the active master key {active!r} is not among the keys")
        self._keys = dict(keys)
        self.active = active

    def new_data_key(self) -> tuple[bytes, WrappedKey]:
        data_key = os.urandom(KEY_SIZE)
        return data_key, self.wrap(data_key)

    def wrap(self, data_key: bytes) -> WrappedKey:
        return WrappedKey(self.active, aes_key_wrap(self._keys[self.active], data_key))

    def unwrap(self, wrapped: WrappedKey) -> bytes:
        master = self._keys.get(wrapped.key_id)
        if master is None:
            raise SealBroken(f"master key {wrapped.key_id!r} is not configured")
        try:
            return aes_key_unwrap(master, wrapped.wrapped)
        except InvalidUnwrap:
            raise SealBroken(f"the data key does not unwrap with {wrapped.key_id!r}") from None

    def rewrap(self, wrapped: WrappedKey) -> WrappedKey:
        """The same data key wrapped with the active master key (rotation)."""
        if wrapped.key_id == self.active:
            return wrapped
        return self.wrap(self.unwrap(wrapped))


def sealed_size(size: int) -> int:
    """The stored size of a blob of ``size`` plaintext bytes (an empty blob is one empty,
    sealed segment, so that it cannot be cut short to nothing unnoticed)."""
    segments = max(1, -(-size // SEGMENT_SIZE))
    return size + segments * TAG_SIZE


def segment_count(size: int) -> int:
    return max(1, -(-size // SEGMENT_SIZE))


@dataclass(frozen=True)
class SealedSpan:
    """The stored bytes that hold plaintext bytes [start, start + length) of a blob."""

    first_segment: int
    # Offset and length of the sealed segments in the stored blob.
    offset: int
    length: int
    # Where the wanted plaintext starts within the first opened segment.
    skip: int


def sealed_span(start: int, length: int, size: int) -> SealedSpan:
    """The segments to fetch for plaintext bytes [start, start + length) of a blob of
    ``size`` plaintext bytes; ``length`` > 0 and the range within the blob."""
    if length <= 0 or start < 0 or start + length > size:
        raise ValueError(f"range {start}+{length} is not within {size} bytes")
    first = start // SEGMENT_SIZE
    last = (start + length - 1) // SEGMENT_SIZE
    offset = first * SEALED_SEGMENT_SIZE
    end = min((last + 1) * SEALED_SEGMENT_SIZE, sealed_size(size))
    return SealedSpan(first, offset, end - offset, start - first * SEGMENT_SIZE)


class Sealer:
    """Seals and opens the segments of one blob."""

    def __init__(self, data_key: bytes, identity: bytes) -> None:
        """``identity``: what names this blob for good (e.g. its storage key)."""
        self._aead = AESGCM(data_key)
        self._identity = identity

    def _nonce_and_data(self, index: int, last: bool) -> tuple[bytes, bytes]:
        nonce = struct.pack(">4xQ", index)
        return nonce, self._identity + struct.pack(">Q?", index, last)

    def seal(self, index: int, plaintext: bytes, last: bool) -> bytes:
        """Segment ``index``: SEGMENT_SIZE bytes, fewer only for the last."""
        if len(plaintext) > SEGMENT_SIZE or (not last and len(plaintext) != SEGMENT_SIZE):
            raise ValueError(f"segment {index} has {len(plaintext)} bytes")
        nonce, associated = self._nonce_and_data(index, last)
        return self._aead.encrypt(nonce, plaintext, associated)

    def open(self, index: int, sealed: bytes | memoryview, last: bool) -> bytes:
        nonce, associated = self._nonce_and_data(index, last)
        try:
            plaintext = self._aead.decrypt(nonce, sealed, associated)
        except InvalidTag:
            raise SealBroken(f"segment {index} does not open") from None
        if not last and len(plaintext) != SEGMENT_SIZE:
            raise SealBroken(f"segment {index} is short")
        return plaintext

    def open_span(self, span: SealedSpan, sealed: bytes, length: int, size: int) -> bytes:
        """The ``length`` plaintext bytes ``span`` covers, from its stored bytes, in a blob of
        ``size`` plaintext bytes (which fixes the last segment)."""
        if len(sealed) != span.length:
            raise SealBroken(f"expected {span.length} stored bytes, got {len(sealed)}")
        last = segment_count(size) - 1
        pieces = []
        for position in range(0, len(sealed), SEALED_SEGMENT_SIZE):
            index = span.first_segment + position // SEALED_SEGMENT_SIZE
            segment = sealed[position : position + SEALED_SEGMENT_SIZE]
            pieces.append(self.open(index, segment, index == last))
        plaintext = b"".join(pieces)
        return plaintext[span.skip : span.skip + length]


class SegmentWriter:
    """Plaintext in, sealed segments out, as a blob is written: at most one segment held."""

    def __init__(self, sealer: Sealer) -> None:
        self._sealer = sealer
        self._pending = bytearray()
        self._index = 0

    def feed(self, data: bytes) -> list[bytes]:
        """The segments ``data`` completes, sealed (the last one waits for ``finish``)."""
        self._pending += data
        sealed = []
        # A full segment is sealed only once more bytes follow: the last may be a full one.
        while len(self._pending) > SEGMENT_SIZE:
            segment = bytes(self._pending[:SEGMENT_SIZE])
            sealed.append(self._sealer.seal(self._index, segment, last=False))
            del self._pending[:SEGMENT_SIZE]
            self._index += 1
        return sealed

    def finish(self) -> bytes:
        """The last segment, sealed."""
        return self._sealer.seal(self._index, bytes(self._pending), last=True)
