"""The garbage intent log: storage keys of blobs that no row references (or not yet)."""

from __future__ import annotations

from collections.abc import Sequence

import asyncpg


class BlobLostError(Exception):
    """The intent-log entry of a blob vanished before its row committed (an upload outlived the
    garbage grace period and the janitor removed the blob)."""


async def add(conn: asyncpg.Connection | asyncpg.Pool, profile: str, storage_key: str) -> None:
    await conn.execute(
        "INSERT INTO garbage (profile, storage_key) VALUES ($1, $2) ON CONFLICT DO NOTHING",
        profile,
        storage_key,
    )


async def claim(conn: asyncpg.Connection, profile: str, storage_key: str) -> bool:
    """Remove a blob from the log because a row now references it; False if it was not listed."""
    result = await conn.execute(
        "DELETE FROM garbage WHERE profile = $1 AND storage_key = $2", profile, storage_key
    )
    return result == "DELETE 1"


async def take_expired(
    conn: asyncpg.Connection, grace_seconds: int, limit: int, profiles: Sequence[str]
) -> list[tuple[str, str]]:
    """Remove and return up to ``limit`` entries of ``profiles`` older than the grace period.

    The caller commits before deleting any blob: once an entry is gone, a late claim of it fails
    (the upload errs) instead of committing a row whose blob is then deleted. A crash between the
    commit and the deletion leaks a file, never an object. SKIP LOCKED lets several gateways
    collect at once; entries of profiles no longer configured are left alone.
    """
    rows = await conn.fetch(
        "DELETE FROM garbage WHERE (profile, storage_key) IN ("
        " SELECT profile, storage_key FROM garbage"
        " WHERE listed_at < now() - make_interval(secs => $1) AND profile = ANY($3::text[])"
        " ORDER BY listed_at LIMIT $2 FOR UPDATE SKIP LOCKED)"
        " RETURNING profile, storage_key",
        float(grace_seconds),
        limit,
        list(profiles),
    )
    return [(row["profile"], row["storage_key"]) for row in rows]


async def touch(conn: asyncpg.Connection | asyncpg.Pool, profile: str, storage_key: str) -> None:
    """Renew an entry whose blob is still being written, so no grace period runs out under it."""
    await conn.execute(
        "UPDATE garbage SET listed_at = now() WHERE profile = $1 AND storage_key = $2",
        profile,
        storage_key,
    )


async def remove(conn: asyncpg.Connection | asyncpg.Pool, profile: str, storage_key: str) -> None:
    await conn.execute(
        "DELETE FROM garbage WHERE profile = $1 AND storage_key = $2", profile, storage_key
    )
