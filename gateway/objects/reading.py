"""An object's bytes: its one blob, the part blobs of a completed multipart upload in order,
or the bytes kept in its row.

Reads are planned as segments (a stretch of one blob), so a range spanning parts is served
part by part, and a local blob can be sent with sendfile (gateway.api.streaming).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass

import asyncpg

from gateway.meta import object_rows
from gateway.meta.object_rows import Chunk, ObjectRecord
from gateway.storage import BlobStore

# A multipart object's row and its chunks are read by separate queries; if the object is
# replaced in between, the read starts over (a few times, then the client is asked to retry).
READ_ATTEMPTS = 3


@dataclass(frozen=True)
class Segment:
    """``length`` bytes of one blob, from ``offset`` within it."""

    profile: str
    storage_key: str
    offset: int
    length: int
    # The version of an upstream object kept in place that the read must get.
    etag: str | None = None
    # The bytes of an object kept in its row (no blob: storage_key is empty).
    data: bytes | None = None

    def inline(self) -> bytes | None:
        """This segment's bytes when they are at hand, else None."""
        if self.data is None:
            return None
        return self.data[self.offset : self.offset + self.length]


def slice_chunks(chunks: Sequence[Chunk], start: int, length: int) -> list[Segment] | None:
    """The segments holding bytes [start, start + length) of a multipart object.

    ``chunks`` are the object's chunks overlapping that range, in order. None when they do not
    cover it without a gap: the object was replaced between reading its row and its chunks.
    """
    segments = []
    position, end = start, start + length
    for chunk in chunks:
        if chunk.size == 0:
            continue
        if chunk.start_offset > position or chunk.start_offset + chunk.size <= position:
            return None
        take = min(end, chunk.start_offset + chunk.size) - position
        segments.append(
            Segment(chunk.profile, chunk.storage_key, position - chunk.start_offset, take)
        )
        position += take
        if position == end:
            break
    return segments if position == end else None


async def object_segments(
    conn: asyncpg.Connection | asyncpg.Pool, record: ObjectRecord, start: int, length: int
) -> list[Segment] | None:
    """The segments of bytes [start, start + length); None if the object has been replaced."""
    if length == 0:
        return []
    if record.inline_data is not None:
        return [Segment(record.profile, "", start, length, data=record.inline_data)]
    if record.storage_key is not None:
        return [Segment(record.profile, record.storage_key, start, length, record.storage_etag)]
    chunks = await object_rows.get_chunks(conn, record.version_id, start, start + length)
    return slice_chunks(chunks, start, length)


def chunk_segments(chunk: Chunk) -> list[Segment]:
    return [Segment(chunk.profile, chunk.storage_key, 0, chunk.size)] if chunk.size else []


async def read_small(stores: Mapping[str, BlobStore], segments: Sequence[Segment]) -> bytes:
    """The bytes of a small read in one piece: at once where the store can, else streamed."""
    pieces = []
    for segment in segments:
        data = segment.inline()
        if data is None:
            store = stores[segment.profile]
            data = store.read_now(segment.storage_key, segment.offset, segment.length)
        if data is None:
            data = b"".join([chunk async for chunk in read_stored(stores, [segment])])
        pieces.append(data)
    return pieces[0] if len(pieces) == 1 else b"".join(pieces)


async def read_stored(
    stores: Mapping[str, BlobStore], segments: Sequence[Segment]
) -> AsyncIterator[bytes]:
    """The segments' bytes in order."""
    for segment in segments:
        inline = segment.inline()
        if inline is not None:
            yield inline
            continue
        store = stores[segment.profile]
        async for data in store.read(
            segment.storage_key, segment.offset, segment.length, segment.etag
        ):
            yield data
