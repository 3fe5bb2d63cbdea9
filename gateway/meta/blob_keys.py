"""The wrapped data keys of an encrypted profile's blobs (see blob_keys in schema.sql)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import asyncpg

from gateway.storage.customer_keys import CUSTOMER_KEY_ID


@dataclass(frozen=True)
class BlobKey:
    storage_key: str
    key_id: str
    wrapped_key: bytes
    # The blob's plaintext size.
    size: int


async def record(conn: asyncpg.Connection | asyncpg.Pool, profile: str, key: BlobKey) -> None:
    await conn.execute(
        "INSERT INTO blob_keys (profile, storage_key, key_id, wrapped_key, size)"
        " VALUES ($1, $2, $3, $4, $5)",
        profile,
        key.storage_key,
        key.key_id,
        key.wrapped_key,
        key.size,
    )


async def get(
    conn: asyncpg.Connection | asyncpg.Pool, profile: str, storage_key: str
) -> BlobKey | None:
    row = await conn.fetchrow(
        "SELECT key_id, wrapped_key, size FROM blob_keys WHERE profile = $1 AND storage_key = $2",
        profile,
        storage_key,
    )
    if row is None:
        return None
    return BlobKey(storage_key, row["key_id"], row["wrapped_key"], row["size"])


async def has_master_keyed(conn: asyncpg.Connection | asyncpg.Pool, profile: str) -> bool:
    """Whether some blob of ``profile`` has a data key wrapped by a master key."""
    return bool(
        await conn.fetchval(
            "SELECT EXISTS (SELECT 1 FROM blob_keys WHERE profile = $1 AND key_id <> $2)",
            profile,
            CUSTOMER_KEY_ID,
        )
    )


async def wrapped_by_others(
    conn: asyncpg.Connection | asyncpg.Pool, profile: str, active: str, after: str, limit: int
) -> list[BlobKey]:
    """Up to ``limit`` keys not wrapped by ``active`` (nor by a client's own key, which only
    that client can rewrap), in storage-key order after ``after``."""
    rows = await conn.fetch(
        "SELECT storage_key, key_id, wrapped_key, size FROM blob_keys"
        " WHERE profile = $1 AND key_id <> $2 AND key_id <> $5 AND storage_key > $3"
        " ORDER BY storage_key LIMIT $4",
        profile,
        active,
        after,
        limit,
        CUSTOMER_KEY_ID,
    )
    return [BlobKey(r["storage_key"], r["key_id"], r["wrapped_key"], r["size"]) for r in rows]


async def count_wrapped_by_others(
    conn: asyncpg.Connection | asyncpg.Pool, profile: str, active: str
) -> int:
    return int(
        await conn.fetchval(
            "SELECT count(*) FROM blob_keys WHERE profile = $1 AND key_id <> $2 AND key_id <> $3",
            profile,
            active,
            CUSTOMER_KEY_ID,
        )
    )


async def rewrap(
    conn: asyncpg.Connection | asyncpg.Pool,
    profile: str,
    replaced: Sequence[tuple[BlobKey, BlobKey]],
) -> int:
    """Store each (old, new) pair's new wrapping where the row still holds the old one (a
    concurrent rotation may have got there first); how many rows changed."""
    if not replaced:
        return 0
    result = await conn.execute(
        "UPDATE blob_keys AS k SET key_id = n.key_id, wrapped_key = n.wrapped_key"
        " FROM unnest($2::text[], $3::text[], $4::text[], $5::bytea[])"
        "   AS n(storage_key, old_key_id, key_id, wrapped_key)"
        " WHERE k.profile = $1 AND k.storage_key = n.storage_key"
        "   AND k.key_id = n.old_key_id",
        profile,
        [old.storage_key for old, _ in replaced],
        [old.key_id for old, _ in replaced],
        [new.key_id for _, new in replaced],
        [new.wrapped_key for _, new in replaced],
    )
    return int(result.split()[-1])
