"""Blobs kept as fixed-size chunks, each chunk a blob of the store wrapped (a local directory,
an upstream bucket, or another transform), optionally stored once for every blob that holds
the same bytes.

The chunk map lives in Postgres (gateway.meta.chunks). A chunk is written under a fresh key
of the wrapped store, listed in the garbage log until the row that uses it is recorded; with
dedup, a chunk is identified by a keyed hash of its bytes (the key is a secret of the
profile, so chunk hashes say nothing of the contents) and shared by reference count. The
blob's own key, which the caller lists in the log while it writes (as StagedBlob does),
names no blob of the wrapped store: deleting it releases the chunks, so the janitor's
deletion of a write cut short at any point leaves no chunk unaccounted for.

A key without a chunk map was written before the profile was chunked: it is read and
deleted in the wrapped store as it is.
"""

from __future__ import annotations

import asyncio
import hmac
import secrets
from collections import deque
from collections.abc import AsyncIterator, Callable
from functools import partial
from pathlib import Path

import asyncpg

from gateway.config import ChunkingConfig
from gateway.meta import chunks, garbage
from gateway.meta.chunks import ChunkPlace, Placement
from gateway.storage import BlobStore, customer_keys, hash_off_loop

# The profile secret that keys chunk hashes.
HASH_KEY_PURPOSE = "chunk-hash"
HASH_KEY_SIZE = 32
# Chunks looked up per query of a read: a long read of small chunks pages through its map
# instead of holding all of it.
CHUNKS_PER_QUERY = 1000


class ChunkedStore:
    """A BlobStore whose blobs are chunk maps over ``inner`` (see the module)."""

    def __init__(
        self, pool: asyncpg.Pool, profile: str, inner: BlobStore, chunk_size: int, dedup: bool
    ) -> None:
        self.profile = profile
        self.inner = inner
        self.chunk_size = chunk_size
        self.dedup = dedup
        self.pool = pool
        self._hash_key: bytes | None = None

    def new_key(self) -> str:
        return self.inner.new_key()

    async def create(
        self, storage_key: str, on_data: Callable[[bytes], None] | None = None
    ) -> ChunkedWriter:
        # A chunk sealed with a client's own key (SSE-C) opens for that key only: never shared.
        shared = self.dedup and customer_keys.current().write is None
        hash_key = await self._chunk_hash_key() if shared else None
        return ChunkedWriter(self, storage_key, on_data, hash_key)

    async def _chunk_hash_key(self) -> bytes:
        if self._hash_key is None:
            self._hash_key = await chunks.profile_secret(
                self.pool, self.profile, HASH_KEY_PURPOSE, secrets.token_bytes(HASH_KEY_SIZE)
            )
        return self._hash_key

    async def read(
        self, storage_key: str, start: int, length: int, etag: str | None = None
    ) -> AsyncIterator[bytes]:
        end = start + length
        found = await chunks.chunk_map(
            self.pool, self.profile, storage_key, start, end, CHUNKS_PER_QUERY
        )
        if found is None:
            async for data in self.inner.read(storage_key, start, length, etag):
                yield data
            return
        size, places = found
        if end > size:
            raise OSError(f"blob {storage_key} is shorter than its metadata says")
        position = start
        while position < end:
            if not places:
                # Its rows went while it was read: the blob was deleted.
                raise OSError(f"blob {storage_key} has no chunk at {position}")
            for place in places:
                if place.start_offset > position:
                    raise OSError(f"blob {storage_key} has no chunk at {position}")
                count = min(end, place.start_offset + place.size) - position
                async for data in self.inner.read(
                    place.chunk_key, position - place.start_offset, count
                ):
                    yield data
                position += count
            if position < end:
                found = await chunks.chunk_map(
                    self.pool, self.profile, storage_key, position, end, CHUNKS_PER_QUERY
                )
                places = found[1] if found is not None else []

    def _plain_file(self, storage_key: str) -> Path | None:
        """The file of a blob written before the profile was chunked (a chunked blob has no
        blob of its own in the wrapped store); None if there is none."""
        path = self.inner.local_path(storage_key)
        return path if path is not None and path.exists() else None

    def read_now(self, storage_key: str, start: int, length: int) -> bytes | None:
        if self._plain_file(storage_key) is None:
            return None
        return self.inner.read_now(storage_key, start, length)

    def local_path(self, storage_key: str) -> Path | None:
        return self._plain_file(storage_key)

    async def clone(self, source_key: str, storage_key: str) -> bool:
        """Make ``storage_key`` (listed in garbage) a blob of the same bytes as ``source_key``
        without writing any: only where every chunk of the source is shared (dedup)."""
        if not self.dedup:
            return False
        return await chunks.clone_blob(self.pool, self.profile, source_key, storage_key)

    async def delete(self, storage_key: str) -> None:
        """Release a chunked blob (its chunks are deleted a grace period later, once no blob
        uses them); any other key is a blob of the wrapped store: a chunk the janitor
        collects, or a blob written before the profile was chunked."""
        if not await chunks.release_blob(self.pool, self.profile, storage_key):
            await self.inner.delete(storage_key)


class ChunkedWriter:
    """Cuts the bytes written into chunks and stores each once it is full, while the next
    arrives: memory holds the chunk being stored, the one being cut and hashed, and what has
    arrived of the next."""

    def __init__(
        self,
        store: ChunkedStore,
        storage_key: str,
        on_data: Callable[[bytes], None] | None,
        hash_key: bytes | None,
    ) -> None:
        self.storage_key = storage_key
        self.size = 0
        self._store = store
        self._on_data = on_data
        self._hash_key = hash_key
        # The pieces as written: memoryviews, so cutting a chunk off one copies nothing.
        self._pending: deque[memoryview] = deque()
        self._pending_size = 0
        # Bytes at the head of _pending that flush has passed through on_data already.
        self._fed = 0
        self._seq = 0
        self._offset = 0
        self._storing: asyncio.Task[None] | None = None

    async def write(self, data: bytes) -> None:
        if not data:
            return
        self.size += len(data)
        self._pending.append(memoryview(data))
        self._pending_size += len(data)
        while self._pending_size >= self._store.chunk_size:
            await self._cut(self._store.chunk_size)

    def _take(self, size: int) -> bytes:
        pieces = []
        needed = size
        while needed:
            piece = self._pending[0]
            if len(piece) > needed:
                pieces.append(piece[:needed])
                self._pending[0] = piece[needed:]
                break
            pieces.append(self._pending.popleft())
            needed -= len(piece)
        self._pending_size -= size
        return b"".join(pieces)

    def _digest(self, fed: int, chunk: bytes) -> bytes | None:
        """Pass the bytes of ``chunk`` past ``fed`` through on_data; the chunk's keyed hash
        when chunks are deduplicated."""
        if self._on_data is not None and fed < len(chunk):
            self._on_data(chunk[fed:] if fed else chunk)
        if self._hash_key is None:
            return None
        return hmac.digest(self._hash_key, chunk, "sha256")

    async def _cut(self, size: int) -> None:
        """Cut the next chunk off the pending bytes and start storing it once the previous
        one is stored (one at a time, so a blob repeating a chunk finds it stored)."""
        chunk = self._take(size)
        fed, self._fed = min(self._fed, size), max(0, self._fed - size)
        chunk_hash = None
        if self._hash_key is not None or (self._on_data is not None and fed < size):
            chunk_hash = await hash_off_loop(partial(self._digest, fed), chunk)
        await self._wait_storing()
        self._storing = asyncio.create_task(
            self._store_chunk(self._seq, self._offset, chunk, chunk_hash)
        )
        self._seq += 1
        self._offset += size

    async def _store_chunk(
        self, seq: int, offset: int, data: bytes, chunk_hash: bytes | None
    ) -> None:
        """Store chunk ``seq`` and record it; with a hash, only a reference to the stored one
        if the same bytes are stored already."""
        store = self._store
        place = ChunkPlace(offset, len(data), store.inner.new_key())
        placement = Placement.PRIVATE
        if chunk_hash is None:
            await garbage.add(store.pool, store.profile, place.chunk_key)
        else:
            placement = await chunks.place_chunk(
                store.pool, store.profile, self.storage_key, seq, place, chunk_hash
            )
            if placement is Placement.REFERENCED:
                return
        writer = await store.inner.create(place.chunk_key, None)
        try:
            await writer.write(data)
            await writer.commit()
        except BaseException:
            # The key stays listed (a shared chunk's row may name it): the janitor deletes
            # whatever part of it was written.
            await writer.abort()
            raise
        shared_hash = chunk_hash if placement is Placement.SHARED else None
        await chunks.record_chunk(
            store.pool, store.profile, self.storage_key, seq, place, shared_hash
        )

    async def _wait_storing(self) -> None:
        if self._storing is not None:
            storing, self._storing = self._storing, None
            await storing

    async def flush(self) -> None:
        await self._wait_storing()
        if self._on_data is None or self._fed == self._pending_size:
            return
        tail = self._take(self._pending_size)
        self._pending.append(memoryview(tail))
        self._pending_size = len(tail)
        await hash_off_loop(self._on_data, tail[self._fed :])
        self._fed = len(tail)

    async def commit(self) -> None:
        await self.flush()
        if self._pending_size:
            await self._cut(self._pending_size)
        await self._wait_storing()
        await chunks.finish_blob(self._store.pool, self._store.profile, self.storage_key, self.size)

    async def abort(self) -> None:
        """Stop, and release what was recorded: the chunks written enter the garbage log."""
        self._pending.clear()
        self._pending_size = 0
        storing, self._storing = self._storing, None
        if storing is not None:
            storing.cancel()
            await asyncio.wait([storing])
            # Retrieved, so a store that had failed is not reported again as unhandled.
            if not storing.cancelled():
                storing.exception()
        await chunks.release_blob(self._store.pool, self._store.profile, self.storage_key)


def chunked(
    pool: asyncpg.Pool, profile: str, inner: BlobStore, config: ChunkingConfig
) -> ChunkedStore:
    """The store of a profile configured with ``chunking``, over its ``inner`` store."""
    return ChunkedStore(pool, profile, inner, config.chunk_size, config.dedup)
