"""Chunked blobs over a local directory, against real Postgres: round trips, ranges, shared
chunks and their reference counts, and the promise of the garbage log through aborts, crashes
and concurrent writers: every chunk file is used by a row or listed, and none that a row uses
is ever deleted."""

from __future__ import annotations

import asyncio
import hashlib
import os
import tracemalloc
import uuid
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import asyncpg
import pytest

from gateway.maintenance.janitor import collect_garbage
from gateway.meta import chunks, garbage
from gateway.meta.chunks import chunk_stats
from gateway.meta.garbage import BlobLostError
from gateway.storage import chunked
from gateway.storage.chunked import ChunkedStore, ChunkedWriter
from gateway.storage.local import LocalBlobStore
from tests.conftest import create_database, migrated_pool

CHUNK = 64 * 1024
# Pieces of a write that do not divide the chunk size: chunks are cut inside them.
PIECE = 10_000


@pytest.fixture(scope="module")
def chunk_dsn(pg_server_dsn: str) -> str:
    return create_database(pg_server_dsn)


@pytest.fixture
async def pool(chunk_dsn: str) -> AsyncIterator[asyncpg.Pool]:
    async with migrated_pool(chunk_dsn, "chunks", "unused", 20) as pool:
        yield pool


class SpyStore(LocalBlobStore):
    """A local store that records the keys it is asked to read."""

    def __init__(self, root: Path) -> None:
        super().__init__(root)
        self.reads: list[str] = []

    def read(
        self, storage_key: str, start: int, length: int, etag: str | None = None
    ) -> AsyncIterator[bytes]:
        self.reads.append(storage_key)
        return super().read(storage_key, start, length, etag)


@pytest.fixture
def inner(tmp_path: Path) -> AsyncIterator[SpyStore]:
    store = SpyStore(tmp_path / "blobs")
    yield store
    store.close()


def make_store(pool: asyncpg.Pool, inner: LocalBlobStore, dedup: bool) -> ChunkedStore:
    # A profile per store: each test sees only its own rows.
    return ChunkedStore(pool, "p" + uuid.uuid4().hex[:12], inner, CHUNK, dedup)


def files(inner: LocalBlobStore) -> set[str]:
    """The storage keys of every file under the store's root (``<key>.tmp`` too)."""
    return {name.removesuffix(".tmp") for _, _, names in os.walk(inner.root) for name in names}


async def listed(store: ChunkedStore) -> set[str]:
    rows = await store.pool.fetch(
        "SELECT storage_key FROM garbage WHERE profile = $1", store.profile
    )
    return {row["storage_key"] for row in rows}


async def used(store: ChunkedStore) -> set[str]:
    rows = await store.pool.fetch(
        "SELECT chunk_key FROM blob_chunks WHERE profile = $1"
        " UNION SELECT storage_key FROM chunk_blobs WHERE profile = $1 AND stored",
        store.profile,
    )
    return {row["chunk_key"] for row in rows}


async def assert_accounted(store: ChunkedStore, inner: LocalBlobStore) -> None:
    """No file is unaccounted for, and every chunk a row uses is there."""
    present = files(inner)
    in_use = await used(store)
    assert present <= in_use | await listed(store)
    assert in_use <= present


async def put(
    store: ChunkedStore,
    data: bytes,
    on_data: Callable[[bytes], None] | None = None,
    piece: int = PIECE,
) -> str:
    """Write a blob as a gateway does: its key listed while it is written, then claimed by
    the row that references it."""
    key = store.new_key()
    await garbage.add(store.pool, store.profile, key)
    writer = await store.create(key, on_data)
    for offset in range(0, len(data), piece):
        await writer.write(data[offset : offset + piece])
    await writer.flush()
    await writer.commit()
    assert writer.size == len(data)
    async with store.pool.acquire() as conn:
        assert await garbage.claim(conn, store.profile, key)
    return key


async def read(store: ChunkedStore, key: str, start: int, length: int) -> bytes:
    return b"".join([data async for data in store.read(key, start, length)])


async def retire(store: ChunkedStore, *keys: str) -> None:
    """What deleting the objects of ``keys`` does: list them in the garbage log."""
    for key in keys:
        await garbage.add(store.pool, store.profile, key)


async def collect(store: ChunkedStore) -> None:
    """Run the janitor (no grace period) until the log is empty."""
    for _ in range(10):
        await collect_garbage(store.pool, {store.profile: store}, 0)
        if not await listed(store):
            return
    raise AssertionError("the garbage log does not empty")


async def chunk_refs(store: ChunkedStore) -> list[int]:
    rows = await store.pool.fetch(
        "SELECT refs FROM chunk_blobs WHERE profile = $1 ORDER BY refs", store.profile
    )
    return [row["refs"] for row in rows]


async def assert_empty(store: ChunkedStore, inner: LocalBlobStore) -> None:
    assert files(inner) == set()
    for table in ("chunked_blobs", "blob_chunks", "chunk_blobs", "garbage"):
        count = await store.pool.fetchval(
            f"SELECT count(*) FROM {table} WHERE profile = $1", store.profile
        )
        assert count == 0, table


@pytest.mark.parametrize("dedup", [False, True])
@pytest.mark.parametrize("size", [0, 1, CHUNK - 1, CHUNK, CHUNK + 1, 3 * CHUNK + 12_345])
async def test_round_trip(pool, inner, size: int, dedup: bool) -> None:
    store = make_store(pool, inner, dedup)
    data = os.urandom(size)
    seen: list[bytes] = []
    key = await put(store, data, seen.append)
    assert b"".join(seen) == data
    assert await read(store, key, 0, size) == data
    assert len(files(inner)) == -(-size // CHUNK)
    await assert_accounted(store, inner)
    # A chunked blob has no file of its own: it is always read through its chunk map.
    assert store.local_path(key) is None
    assert store.read_now(key, 0, size) is None


async def test_every_range_is_its_slice(pool, inner) -> None:
    store = make_store(pool, inner, dedup=False)
    data = os.urandom(3 * CHUNK + 100)
    key = await put(store, data)
    points = sorted({0, 1, CHUNK - 1, CHUNK, CHUNK + 1, 2 * CHUNK - 3, 3 * CHUNK, len(data) - 1})
    for start in points:
        for length in (0, 1, 2, 7, CHUNK - 1, CHUNK, CHUNK + 2, 2 * CHUNK + 1, len(data)):
            length = min(length, len(data) - start)
            assert await read(store, key, start, length) == data[start : start + length]
    # Only the chunks that hold the range are read.
    inner.reads.clear()
    assert await read(store, key, CHUNK + 5, 10) == data[CHUNK + 5 : CHUNK + 15]
    assert len(inner.reads) == 1
    inner.reads.clear()
    assert await read(store, key, 2 * CHUNK - 1, 2) == data[2 * CHUNK - 1 : 2 * CHUNK + 1]
    assert len(inner.reads) == 2


async def test_a_long_read_pages_through_the_chunk_map(pool, inner, monkeypatch) -> None:
    monkeypatch.setattr(chunked, "CHUNKS_PER_QUERY", 2)
    store = make_store(pool, inner, dedup=False)
    data = os.urandom(5 * CHUNK + 1)
    key = await put(store, data)
    assert await read(store, key, 0, len(data)) == data
    assert await read(store, key, CHUNK + 3, 3 * CHUNK) == data[CHUNK + 3 : 4 * CHUNK + 3]


async def test_a_read_past_the_end_fails(pool, inner) -> None:
    store = make_store(pool, inner, dedup=False)
    key = await put(store, b"x" * 10)
    with pytest.raises(OSError):
        await read(store, key, 5, 6)


async def test_on_data_sees_every_byte_once_across_flushes(pool, inner) -> None:
    store = make_store(pool, inner, dedup=True)
    data = os.urandom(2 * CHUNK + 500)
    digest = hashlib.md5()
    key = store.new_key()
    await garbage.add(pool, store.profile, key)
    writer = await store.create(key, digest.update)
    # Flushed in the middle of a chunk, then written on: nothing is passed on twice.
    for cut in (100, CHUNK - 50, CHUNK + 10, 2 * CHUNK + 500):
        await writer.write(data[writer.size : cut])
        await writer.flush()
    await writer.commit()
    assert digest.digest() == hashlib.md5(data).digest()
    assert await read(store, key, 0, len(data)) == data


async def test_identical_blobs_share_their_chunks(pool, inner) -> None:
    store = make_store(pool, inner, dedup=True)
    data = os.urandom(3 * CHUNK)
    first = await put(store, data)
    second = await put(store, data, piece=CHUNK + 1)
    assert len(files(inner)) == 3
    assert await chunk_refs(store) == [2, 2, 2]
    assert await chunk_stats(pool, store.profile) == (2 * len(data), len(data))
    # Chunk names are keyed: not the plain hash of the bytes.
    hashes = {row["chunk_hash"] for row in await pool.fetch("SELECT chunk_hash FROM chunk_blobs")}
    assert hashlib.sha256(data[:CHUNK]).digest() not in hashes

    await retire(store, first)
    await collect(store)
    assert len(files(inner)) == 3
    assert await chunk_refs(store) == [1, 1, 1]
    assert await read(store, second, 0, len(data)) == data

    await store.delete(second)
    # Listed, not deleted: a reader may still be reading them.
    assert len(files(inner)) == 3
    assert await listed(store) == files(inner)
    await collect(store)
    await assert_empty(store, inner)


async def test_a_chunk_repeated_within_a_blob_is_stored_once(pool, inner) -> None:
    store = make_store(pool, inner, dedup=True)
    same, other = os.urandom(CHUNK), os.urandom(CHUNK)
    data = same + other + same + same
    key = await put(store, data)
    assert len(files(inner)) == 2
    assert await chunk_refs(store) == [1, 3]
    assert await read(store, key, CHUNK - 1, 3 * CHUNK) == data[CHUNK - 1 : 4 * CHUNK - 1]
    await retire(store, key)
    await collect(store)
    await assert_empty(store, inner)


async def test_without_dedup_every_chunk_is_its_own(pool, inner) -> None:
    store = make_store(pool, inner, dedup=False)
    data = os.urandom(3 * CHUNK)
    first, second = await put(store, data), await put(store, data)
    assert len(files(inner)) == 6
    assert await chunk_stats(pool, store.profile) == (2 * len(data), 2 * len(data))
    await retire(store, first, second)
    await collect(store)
    await assert_empty(store, inner)


async def test_the_hash_key_is_the_profiles_own(pool, inner) -> None:
    store = make_store(pool, inner, dedup=True)
    data = os.urandom(CHUNK)
    await put(store, data)
    # Another gateway's store of the same profile names the same bytes the same.
    again = ChunkedStore(pool, store.profile, inner, CHUNK, dedup=True)
    await put(again, data)
    assert await chunk_refs(store) == [2]
    other = make_store(pool, inner, dedup=True)
    await put(other, data)
    rows = await pool.fetch(
        "SELECT secret FROM profile_secrets WHERE profile = ANY($1::text[])",
        [store.profile, other.profile],
    )
    assert len({row["secret"] for row in rows}) == 2


@pytest.mark.parametrize("dedup", [False, True])
async def test_abort_releases_what_was_written(pool, inner, dedup: bool) -> None:
    store = make_store(pool, inner, dedup)
    shared = os.urandom(CHUNK)
    kept = await put(store, shared)
    key = store.new_key()
    await garbage.add(pool, store.profile, key)
    writer = await store.create(key)
    await writer.write(shared + os.urandom(CHUNK + 100))
    await writer.flush()
    await writer.abort()
    assert await pool.fetchval("SELECT count(*) FROM blob_chunks WHERE blob_key = $1", key) == 0
    await assert_accounted(store, inner)
    assert await read(store, kept, 0, CHUNK) == shared
    await collect(store)
    assert await read(store, kept, 0, CHUNK) == shared
    assert len(files(inner)) == 1
    await retire(store, kept)
    await collect(store)
    await assert_empty(store, inner)


@pytest.mark.parametrize("dedup", [False, True])
async def test_a_writer_that_dies_midway_leaves_nothing_behind(pool, inner, dedup: bool) -> None:
    store = make_store(pool, inner, dedup)
    data = os.urandom(3 * CHUNK)
    kept = await put(store, data[:CHUNK])
    key = store.new_key()
    await garbage.add(pool, store.profile, key)
    writer = await store.create(key)
    await writer.write(data + b"tail")
    await writer.flush()
    # The process dies here: no commit, no abort; the janitor finds the blob's key listed.
    await assert_accounted(store, inner)
    await collect(store)
    await assert_accounted(store, inner)
    assert len(files(inner)) == 1
    assert await read(store, kept, 0, CHUNK) == data[:CHUNK]
    await retire(store, kept)
    await collect(store)
    await assert_empty(store, inner)


class Died(BaseException):
    """The process stopping at this point."""


@pytest.mark.parametrize("dedup", [False, True])
async def test_death_between_a_chunk_write_and_its_row(
    pool, inner, monkeypatch, dedup: bool
) -> None:
    store = make_store(pool, inner, dedup)
    data = os.urandom(2 * CHUNK)

    async def die(*args: object) -> None:
        raise Died

    key = store.new_key()
    await garbage.add(pool, store.profile, key)
    writer: ChunkedWriter = await store.create(key)
    with monkeypatch.context() as patch:
        patch.setattr(chunks, "record_chunk", die)
        with pytest.raises(Died):
            # The second chunk waits for the first to be stored.
            await writer.write(data)
    # The first chunk's file is there, its row is not: its garbage entry accounts for it.
    assert len(files(inner)) == 1
    await assert_accounted(store, inner)
    if dedup:
        # Its bytes are not stored as far as anyone knows: a write of them stores its own copy.
        copy = await put(store, data)
        assert await read(store, copy, 0, len(data)) == data
        await retire(store, copy)
    await collect(store)
    await assert_empty(store, inner)
    if dedup:
        # Once collected, the hash is free again for a shared chunk.
        first, second = await put(store, data), await put(store, data)
        assert await chunk_refs(store) == [2, 2]
        await retire(store, first, second)
        await collect(store)
        await assert_empty(store, inner)


async def test_a_write_the_janitor_gave_up_on_fails(pool, inner) -> None:
    store = make_store(pool, inner, dedup=True)
    key = store.new_key()
    await garbage.add(pool, store.profile, key)
    writer = await store.create(key)
    await writer.write(os.urandom(CHUNK))
    await writer.flush()
    # The write outlived the grace period: the janitor takes the blob's entry.
    assert await garbage.start_collecting(pool, 0, 100, [store.profile]) == [(store.profile, key)]
    await writer.write(os.urandom(CHUNK))
    with pytest.raises(BlobLostError):
        await writer.commit()
    await store.delete(key)
    await garbage.forget(pool, [(store.profile, key)])
    await writer.abort()
    await assert_accounted(store, inner)
    await collect(store)
    await assert_empty(store, inner)


async def test_deleting_twice_or_a_missing_key_is_no_error(pool, inner) -> None:
    store = make_store(pool, inner, dedup=True)
    key = await put(store, os.urandom(CHUNK + 1))
    await store.delete(key)
    await store.delete(key)
    await store.delete(inner.new_key())
    await collect(store)
    await assert_empty(store, inner)


async def test_concurrent_writers_of_the_same_bytes(pool, inner) -> None:
    store = make_store(pool, inner, dedup=True)
    data = os.urandom(3 * CHUNK + 7)
    keys = await asyncio.gather(*(put(store, data) for _ in range(6)))
    for key in keys:
        assert await read(store, key, 0, len(data)) == data
    await assert_accounted(store, inner)
    logical, stored = await chunk_stats(pool, store.profile)
    assert logical == 6 * len(data)
    assert len(data) <= stored <= logical
    await retire(store, *keys[:3])
    await collect(store)
    for key in keys[3:]:
        assert await read(store, key, 0, len(data)) == data
    await retire(store, *keys[3:])
    await collect(store)
    await assert_empty(store, inner)


async def test_a_blob_from_before_chunking_is_used_as_it_is(pool, inner) -> None:
    store = make_store(pool, inner, dedup=True)
    key = inner.new_key()
    writer = await inner.create(key)
    await writer.write(b"written before chunking")
    await writer.commit()
    assert await read(store, key, 8, 6) == b"before"
    assert store.read_now(key, 0, 7) == b"written"
    assert store.local_path(key) == inner.local_path(key)
    await store.delete(key)
    assert files(inner) == set()
    assert store.local_path(key) is None


async def test_memory_stays_within_a_few_chunks(pool, inner) -> None:
    store = make_store(pool, inner, dedup=True)
    key = store.new_key()
    await garbage.add(pool, store.profile, key)
    writer = await store.create(key, hashlib.md5().update)
    # Nine pieces to a cycle, eight to a chunk: the chunks differ.
    pieces = [os.urandom(8 * 1024) for _ in range(9)]
    # Warm up (connections, executor threads), then measure a blob of 64 chunks.
    for piece in pieces * 2:
        await writer.write(piece)
    tracemalloc.start()
    try:
        for number in range(64 * CHUNK // len(pieces[0])):
            await writer.write(pieces[number % len(pieces)])
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    await writer.commit()
    # A few chunks (the one stored, the one cut, the pieces of the next, the local store's
    # own buffer), whatever the blob's size: not the 64 chunks written.
    assert peak < 10 * CHUNK
