"""Planning reads: which stretch of which part blob holds which bytes of a multipart object,
and the bytes of an object kept in its row."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

import pytest

from gateway.meta.object_rows import Chunk, ObjectRecord
from gateway.objects.reading import Segment, object_segments, read_stored, slice_chunks

# Parts of 10, 10 and 5 bytes: the object is 25 bytes long.
CHUNKS = [
    Chunk(1, 0, 10, "p", "a", '"a"'),
    Chunk(2, 10, 10, "p", "b", '"b"'),
    Chunk(4, 20, 5, "p", "c", '"c"'),
]


def overlapping(start: int, length: int) -> list[Chunk]:
    """What the chunk query returns for that range."""
    end = start + length
    return [c for c in CHUNKS if c.start_offset < end and c.start_offset + c.size > start]


@pytest.mark.parametrize(
    ("start", "length", "expected"),
    [
        (0, 25, [("a", 0, 10), ("b", 0, 10), ("c", 0, 5)]),
        (0, 10, [("a", 0, 10)]),
        (9, 2, [("a", 9, 1), ("b", 0, 1)]),  # straddles the first boundary
        (10, 1, [("b", 0, 1)]),
        (5, 18, [("a", 5, 5), ("b", 0, 10), ("c", 0, 3)]),
        (24, 1, [("c", 4, 1)]),
        (19, 2, [("b", 9, 1), ("c", 0, 1)]),
    ],
)
def test_slice(start: int, length: int, expected: list[tuple[str, int, int]]) -> None:
    segments = slice_chunks(overlapping(start, length), start, length)
    assert segments == [Segment("p", key, offset, size) for key, offset, size in expected]


@pytest.mark.parametrize(
    ("chunks", "start", "length"),
    [
        ([], 0, 5),  # the version is gone: replaced since its row was read
        ([CHUNKS[0], CHUNKS[2]], 0, 25),  # a gap
        ([CHUNKS[1]], 5, 10),  # starts before the first chunk returned
        (CHUNKS[:2], 0, 25),  # ends short
    ],
)
def test_incomplete_cover_is_none(chunks: list[Chunk], start: int, length: int) -> None:
    assert slice_chunks(chunks, start, length) is None


def test_empty_chunks_are_skipped() -> None:
    chunks = [Chunk(1, 0, 10, "p", "a", '"a"'), Chunk(2, 10, 0, "p", "e", '"e"')]
    assert slice_chunks(chunks, 0, 10) == [Segment("p", "a", 0, 10)]


# An object kept in its row: its segment carries the bytes.
INLINE = ObjectRecord(
    bucket="b",
    key="k",
    version_id=uuid.uuid4(),
    size=10,
    etag='"e"',
    content_type="text/plain",
    profile="p",
    storage_key=None,
    last_modified=datetime(2026, 1, 1, tzinfo=UTC),
    inline_data=b"0123456789",
)


@pytest.mark.parametrize(("start", "length"), [(0, 10), (3, 4), (9, 1), (0, 0)])
async def test_an_inline_object_reads_from_its_row(start: int, length: int) -> None:
    # No query and no store: the row's bytes are at hand.
    segments = await object_segments(None, INLINE, start, length)  # type: ignore[arg-type]
    assert segments is not None
    read = b"".join([piece async for piece in read_stored({}, segments)])
    assert read == INLINE.inline_data[start : start + length]
