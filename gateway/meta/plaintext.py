"""What an encrypted profile still stores in plaintext: blobs written before it was encrypted
(their storage keys, or those of their chunks, have no row in blob_keys) and objects kept in
their rows."""

from __future__ import annotations

import uuid
from dataclasses import dataclass

import asyncpg

# A blob stored in plaintext: one without a data key, or a chunked one (whose own key names no
# stored bytes) with a chunk that has none.
_PLAIN = (
    "(NOT EXISTS (SELECT 1 FROM chunked_blobs c"
    " WHERE c.profile = t.profile AND c.blob_key = t.storage_key)"
    " AND NOT EXISTS (SELECT 1 FROM blob_keys k"
    " WHERE k.profile = t.profile AND k.storage_key = t.storage_key))"
    " OR EXISTS (SELECT 1 FROM blob_chunks b"
    " WHERE b.profile = t.profile AND b.blob_key = t.storage_key"
    " AND NOT EXISTS (SELECT 1 FROM blob_keys k"
    " WHERE k.profile = b.profile AND k.storage_key = b.chunk_key))"
)
# Objects whose bytes are one blob or their row (an upstream multipart object kept in place is
# one upstream object too: its chunk rows then only describe its parts).
_PLAIN_OBJECTS = (
    f"t.profile = $1 AND (t.inline_data IS NOT NULL OR (t.storage_key IS NOT NULL AND ({_PLAIN})))"
)
# Parts of multipart objects, each its own generated blob.
_PLAIN_CHUNKS = f"t.profile = $1 AND t.storage_etag IS NULL AND ({_PLAIN})"


@dataclass(frozen=True)
class PlainBlob:
    """One object (``part_number`` None) or one part of a multipart object, in plaintext."""

    profile: str
    version_id: uuid.UUID
    size: int
    storage_key: str | None
    storage_etag: str | None = None
    inline_data: bytes | None = None
    bucket: str = ""
    key: str = ""
    part_number: int | None = None


async def plain_objects(
    pool: asyncpg.Pool, profile: str, after: tuple[str, str], limit: int
) -> list[PlainBlob]:
    rows = await pool.fetch(
        "SELECT bucket, key, version_id, size, storage_key, storage_etag, inline_data"
        f" FROM objects t WHERE {_PLAIN_OBJECTS} AND (bucket, key) > ($2, $3)"
        " ORDER BY bucket, key LIMIT $4",
        profile,
        *after,
        limit,
    )
    return [
        PlainBlob(
            profile,
            row["version_id"],
            row["size"],
            row["storage_key"],
            row["storage_etag"],
            row["inline_data"],
            bucket=row["bucket"],
            key=row["key"],
        )
        for row in rows
    ]


async def plain_chunks(
    pool: asyncpg.Pool, profile: str, after: tuple[uuid.UUID, int], limit: int
) -> list[PlainBlob]:
    rows = await pool.fetch(
        "SELECT version_id, part_number, size, storage_key FROM object_chunks t"
        f" WHERE {_PLAIN_CHUNKS} AND (version_id, part_number) > ($2, $3)"
        " ORDER BY version_id, part_number LIMIT $4",
        profile,
        *after,
        limit,
    )
    return [
        PlainBlob(
            profile,
            row["version_id"],
            row["size"],
            row["storage_key"],
            part_number=row["part_number"],
        )
        for row in rows
    ]


async def plain_bytes(pool: asyncpg.Pool, profile: str) -> int:
    """What --encrypt-existing has to write (for its progress bar)."""
    return int(
        await pool.fetchval(
            f"SELECT coalesce((SELECT sum(size) FROM objects t WHERE {_PLAIN_OBJECTS}), 0)"
            f" + coalesce((SELECT sum(size) FROM object_chunks t WHERE {_PLAIN_CHUNKS}), 0)",
            profile,
        )
    )


async def swap_blob(conn: asyncpg.Connection, blob: PlainBlob, sealed_key: str) -> bool:
    """Point the row that still names ``blob`` at its sealed copy, listing the plaintext in the
    intent log; False if the row changed meanwhile."""
    if blob.part_number is None:
        result = await conn.execute(
            "UPDATE objects SET storage_key = $4, storage_etag = NULL, inline_data = NULL"
            " WHERE bucket = $1 AND key = $2 AND version_id = $3",
            blob.bucket,
            blob.key,
            blob.version_id,
            sealed_key,
        )
    else:
        result = await conn.execute(
            "UPDATE object_chunks SET storage_key = $3"
            " WHERE version_id = $1 AND part_number = $2 AND storage_key = $4",
            blob.version_id,
            blob.part_number,
            sealed_key,
            blob.storage_key,
        )
    if result.split()[-1] != "1":
        return False
    if blob.storage_key is not None:
        await conn.execute(
            "INSERT INTO garbage (profile, storage_key) VALUES ($1, $2) ON CONFLICT DO NOTHING",
            blob.profile,
            blob.storage_key,
        )
    return True


async def drop_plain_variants(pool: asyncpg.Pool, profile: str) -> int:
    """Forget the stored variants in plaintext (they render again, sealed), their blobs listed
    in the intent log; how many."""
    result = await pool.execute(
        "WITH gone AS (DELETE FROM derivatives t WHERE t.profile = $1"
        f" AND t.storage_key IS NOT NULL AND ({_PLAIN}) RETURNING t.profile, t.storage_key)"
        " INSERT INTO garbage (profile, storage_key) SELECT profile, storage_key FROM gone"
        " ON CONFLICT DO NOTHING",
        profile,
    )
    return int(result.split()[-1])
