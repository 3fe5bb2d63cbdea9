"""The chunk map of chunked profiles (gateway.storage.chunked): the chunks each blob is made
of, and the deduplicated chunks with their reference counts.

A chunk's key is listed in the garbage log before the chunk is written, and the transaction
that records it claims the entry. A blob's rows are recorded while the blob's own key is
still listed (the writer holds that entry's row lock as it adds them), so the janitor's
deletion of the blob finds every chunk of a write cut short. A row that stops using a chunk
lists it again in the transaction that deletes the row (a shared chunk once its last
reference goes): the janitor deletes it a grace period later, never under a reader.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from enum import Enum

import asyncpg

from gateway.meta import garbage
from gateway.meta.garbage import BlobLostError


@dataclass(frozen=True, slots=True)
class ChunkPlace:
    """Where the bytes [start_offset, start_offset + size) of a blob are kept."""

    start_offset: int
    size: int
    chunk_key: str


class Placement(Enum):
    """What became of a chunk with a hash (see ``place_chunk``)."""

    # The same bytes are stored already: the blob references them, nothing is written.
    REFERENCED = "referenced"
    # To be written as the shared chunk of its hash.
    SHARED = "shared"
    # To be written as the blob's own: another write is storing the shared one right now.
    PRIVATE = "private"


async def profile_secret(pool: asyncpg.Pool, profile: str, purpose: str, candidate: bytes) -> bytes:
    """The profile's secret for ``purpose``, shared by every gateway: ``candidate`` if this
    is its first use."""
    await pool.execute(
        "INSERT INTO profile_secrets (profile, purpose, secret) VALUES ($1, $2, $3)"
        " ON CONFLICT DO NOTHING",
        profile,
        purpose,
        candidate,
    )
    secret: bytes = await pool.fetchval(
        "SELECT secret FROM profile_secrets WHERE profile = $1 AND purpose = $2", profile, purpose
    )
    return secret


async def _hold_blob_entry(conn: asyncpg.Connection, profile: str, blob_key: str) -> None:
    """Lock the garbage entry of a blob being written until the transaction ends: the janitor
    skips a locked entry, so it cannot start deleting the blob while rows are added to it.
    BlobLostError if it already has (the write outlived the grace period)."""
    collecting = await conn.fetchval(
        "SELECT collecting FROM garbage WHERE profile = $1 AND storage_key = $2 FOR SHARE",
        profile,
        blob_key,
    )
    if collecting is None or collecting:
        raise BlobLostError(f"blob {blob_key} is no longer listed while it is written")


async def _insert_chunk(
    conn: asyncpg.Connection,
    profile: str,
    blob_key: str,
    seq: int,
    place: ChunkPlace,
    chunk_hash: bytes | None,
) -> None:
    await conn.execute(
        "INSERT INTO blob_chunks"
        " (profile, blob_key, seq, start_offset, size, chunk_key, chunk_hash)"
        " VALUES ($1, $2, $3, $4, $5, $6, $7)",
        profile,
        blob_key,
        seq,
        place.start_offset,
        place.size,
        place.chunk_key,
        chunk_hash,
    )


async def place_chunk(
    pool: asyncpg.Pool,
    profile: str,
    blob_key: str,
    seq: int,
    place: ChunkPlace,
    chunk_hash: bytes,
) -> Placement:
    """Chunk ``seq`` of a blob, with bytes of ``chunk_hash``, about to be written under
    ``place.chunk_key``: if those bytes are stored already, record the blob's reference to
    them instead (REFERENCED). Else list the key in garbage, and make it the shared chunk of
    the hash (SHARED) unless another write is storing that one now (PRIVATE: no waiting on it
    across its storage I/O)."""
    async with pool.acquire() as conn, conn.transaction():
        await _hold_blob_entry(conn, profile, blob_key)
        # Locked: a release cannot drop the last reference between this and the increment.
        row = await conn.fetchrow(
            "SELECT storage_key, stored FROM chunk_blobs"
            " WHERE profile = $1 AND chunk_hash = $2 FOR UPDATE",
            profile,
            chunk_hash,
        )
        if row is not None and row["stored"]:
            await conn.execute(
                "UPDATE chunk_blobs SET refs = refs + 1 WHERE profile = $1 AND chunk_hash = $2",
                profile,
                chunk_hash,
            )
            stored = ChunkPlace(place.start_offset, place.size, row["storage_key"])
            await _insert_chunk(conn, profile, blob_key, seq, stored, chunk_hash)
            return Placement.REFERENCED
        shared = row is None and await conn.fetchval(
            "INSERT INTO chunk_blobs (profile, chunk_hash, storage_key, size)"
            " VALUES ($1, $2, $3, $4) ON CONFLICT DO NOTHING RETURNING true",
            profile,
            chunk_hash,
            place.chunk_key,
            place.size,
        )
        await garbage.add(conn, profile, place.chunk_key)
    return Placement.SHARED if shared else Placement.PRIVATE


async def record_chunk(
    pool: asyncpg.Pool,
    profile: str,
    blob_key: str,
    seq: int,
    place: ChunkPlace,
    chunk_hash: bytes | None,
) -> None:
    """Record chunk ``seq`` of a blob, just written under ``place.chunk_key`` (listed in
    garbage): claim the entry and, for a shared chunk (``chunk_hash`` given), mark it stored
    with this row as its first reference. BlobLostError if the janitor has started deleting
    the chunk or the blob."""
    async with pool.acquire() as conn, conn.transaction():
        await _hold_blob_entry(conn, profile, blob_key)
        if not await garbage.claim(conn, profile, place.chunk_key):
            raise BlobLostError(f"chunk {place.chunk_key} is no longer listed")
        if chunk_hash is not None:
            marked = await conn.execute(
                "UPDATE chunk_blobs SET stored = true, refs = refs + 1"
                " WHERE profile = $1 AND chunk_hash = $2 AND storage_key = $3",
                profile,
                chunk_hash,
                place.chunk_key,
            )
            # Its row goes only with its entry, so this is the claim failing by another name;
            # a reference without the row would leave the chunk unlisted when the blob goes.
            if marked != "UPDATE 1":
                raise BlobLostError(f"chunk {place.chunk_key} is no longer listed")
        await _insert_chunk(conn, profile, blob_key, seq, place, chunk_hash)


async def finish_blob(pool: asyncpg.Pool, profile: str, blob_key: str, size: int) -> None:
    """Mark a blob whose chunks are all recorded as complete: from now on it can be read."""
    async with pool.acquire() as conn, conn.transaction():
        await _hold_blob_entry(conn, profile, blob_key)
        await conn.execute(
            "INSERT INTO chunked_blobs (profile, blob_key, size) VALUES ($1, $2, $3)",
            profile,
            blob_key,
            size,
        )


async def clone_blob(pool: asyncpg.Pool, profile: str, source_key: str, blob_key: str) -> bool:
    """Make ``blob_key`` (listed in garbage, as a blob being written) a complete blob of the
    same shared chunks as the complete blob ``source_key``, writing no chunk; False if the
    source is not such a blob or has a chunk of its own (not shared)."""
    async with pool.acquire() as conn, conn.transaction():
        await _hold_blob_entry(conn, profile, blob_key)
        # Share-locked: the source cannot be released until its chunks have this reference
        # too (a release locks this row before the chunks, as here, so they cannot deadlock).
        size = await conn.fetchval(
            "SELECT size FROM chunked_blobs WHERE profile = $1 AND blob_key = $2 FOR SHARE",
            profile,
            source_key,
        )
        if size is None:
            return False
        hashes = await conn.fetch(
            "SELECT chunk_hash FROM blob_chunks WHERE profile = $1 AND blob_key = $2",
            profile,
            source_key,
        )
        if any(row["chunk_hash"] is None for row in hashes):
            return False
        uses = Counter(row["chunk_hash"] for row in hashes)
        await conn.execute(
            "SELECT 1 FROM chunk_blobs WHERE profile = $1 AND chunk_hash = ANY($2::bytea[])"
            " ORDER BY chunk_hash FOR UPDATE",
            profile,
            list(uses),
        )
        await conn.execute(
            "UPDATE chunk_blobs SET refs = refs + used.count"
            " FROM unnest($2::bytea[], $3::bigint[]) AS used (chunk_hash, count)"
            " WHERE chunk_blobs.profile = $1 AND chunk_blobs.chunk_hash = used.chunk_hash",
            profile,
            list(uses),
            list(uses.values()),
        )
        await conn.execute(
            "INSERT INTO blob_chunks"
            " (profile, blob_key, seq, start_offset, size, chunk_key, chunk_hash)"
            " SELECT profile, $3, seq, start_offset, size, chunk_key, chunk_hash"
            " FROM blob_chunks WHERE profile = $1 AND blob_key = $2",
            profile,
            source_key,
            blob_key,
        )
        await conn.execute(
            "INSERT INTO chunked_blobs (profile, blob_key, size) VALUES ($1, $2, $3)",
            profile,
            blob_key,
            size,
        )
    return True


async def release_blob(pool: asyncpg.Pool, profile: str, blob_key: str) -> bool:
    """Drop a chunked blob, complete or not, in one transaction: its rows go, and the chunks
    no row uses any more enter the garbage log. False if ``blob_key`` has no chunk map (a blob
    of the wrapped store); a shared chunk left unstored by a crash under that key is
    forgotten, so its hash can be stored again."""
    async with pool.acquire() as conn, conn.transaction():
        header = await conn.fetchval(
            "DELETE FROM chunked_blobs WHERE profile = $1 AND blob_key = $2 RETURNING true",
            profile,
            blob_key,
        )
        rows = await conn.fetch(
            "DELETE FROM blob_chunks WHERE profile = $1 AND blob_key = $2"
            " RETURNING chunk_key, chunk_hash",
            profile,
            blob_key,
        )
        if header is None and not rows:
            await conn.execute(
                "DELETE FROM chunk_blobs WHERE profile = $1 AND storage_key = $2 AND NOT stored",
                profile,
                blob_key,
            )
            return False
        unused = [row["chunk_key"] for row in rows if row["chunk_hash"] is None]
        uses = Counter(row["chunk_hash"] for row in rows if row["chunk_hash"] is not None)
        if uses:
            unused += await _drop_references(conn, profile, uses)
        await conn.execute(
            "INSERT INTO garbage (profile, storage_key) SELECT $1, unnest($2::text[])"
            " ON CONFLICT DO NOTHING",
            profile,
            unused,
        )
    return True


async def _drop_references(
    conn: asyncpg.Connection, profile: str, uses: Counter[bytes]
) -> list[str]:
    """Take ``uses`` off the reference counts; the keys of the chunks left unreferenced,
    whose rows are deleted."""
    # Locked in hash order, so releases sharing chunks cannot deadlock; and an increment
    # cannot slip in between the count reaching zero and the row's deletion.
    rows = await conn.fetch(
        "SELECT chunk_hash, refs, storage_key FROM chunk_blobs"
        " WHERE profile = $1 AND chunk_hash = ANY($2::bytea[]) ORDER BY chunk_hash FOR UPDATE",
        profile,
        list(uses),
    )
    emptied = [row for row in rows if row["refs"] <= uses[row["chunk_hash"]]]
    kept = [row for row in rows if row["refs"] > uses[row["chunk_hash"]]]
    await conn.execute(
        "DELETE FROM chunk_blobs WHERE profile = $1 AND chunk_hash = ANY($2::bytea[])",
        profile,
        [row["chunk_hash"] for row in emptied],
    )
    await conn.execute(
        "UPDATE chunk_blobs SET refs = refs - used.count"
        " FROM unnest($2::bytea[], $3::bigint[]) AS used (chunk_hash, count)"
        " WHERE chunk_blobs.profile = $1 AND chunk_blobs.chunk_hash = used.chunk_hash",
        profile,
        [row["chunk_hash"] for row in kept],
        [uses[row["chunk_hash"]] for row in kept],
    )
    return [row["storage_key"] for row in emptied]


async def chunk_map(
    pool: asyncpg.Pool, profile: str, blob_key: str, start: int, end: int, limit: int
) -> tuple[int, list[ChunkPlace]] | None:
    """A complete blob's size, and up to ``limit`` of its chunks in order from the one that
    holds byte ``start`` to the last that begins before ``end``; None if the blob has no
    chunk map (a blob of the wrapped store, or not complete)."""
    rows = await pool.fetch(
        "SELECT header.size AS blob_size, chunk.start_offset, chunk.size, chunk.chunk_key"
        " FROM chunked_blobs header LEFT JOIN LATERAL ("
        "  SELECT start_offset, size, chunk_key FROM blob_chunks"
        "  WHERE profile = $1 AND blob_key = $2 AND start_offset < $4 AND start_offset >= ("
        "   SELECT coalesce(max(start_offset), 0) FROM blob_chunks"
        "   WHERE profile = $1 AND blob_key = $2 AND start_offset <= $3)"
        "  ORDER BY start_offset LIMIT $5"
        " ) chunk ON true"
        " WHERE header.profile = $1 AND header.blob_key = $2",
        profile,
        blob_key,
        start,
        end,
        limit,
    )
    if not rows:
        return None
    places = [
        ChunkPlace(row["start_offset"], row["size"], row["chunk_key"])
        for row in rows
        if row["chunk_key"] is not None
    ]
    return rows[0]["blob_size"], places


async def has_chunked_blobs(conn: asyncpg.Connection | asyncpg.Pool, profile: str) -> bool:
    return bool(
        await conn.fetchval(
            "SELECT EXISTS (SELECT 1 FROM chunked_blobs WHERE profile = $1)", profile
        )
    )


async def chunk_stats(conn: asyncpg.Connection | asyncpg.Pool, profile: str) -> tuple[int, int]:
    """The bytes a chunked profile's blobs hold, and the bytes its chunks take in storage
    (less, where chunks are shared)."""
    row = await conn.fetchrow(
        "SELECT"
        " (SELECT coalesce(sum(size), 0) FROM blob_chunks WHERE profile = $1)::bigint"
        "  AS logical,"
        " (SELECT coalesce(sum(size), 0) FROM blob_chunks"
        "  WHERE profile = $1 AND chunk_hash IS NULL)::bigint"
        " + (SELECT coalesce(sum(size), 0) FROM chunk_blobs WHERE profile = $1 AND stored)::bigint"
        "  AS stored",
        profile,
    )
    return row["logical"], row["stored"]
