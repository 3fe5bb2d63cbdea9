"""The garbage intent log: storage keys of blobs that no row references (or not yet)."""

from __future__ import annotations

import asyncpg


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
    conn: asyncpg.Connection, grace_seconds: int, limit: int
) -> list[tuple[str, str]]:
    """Lock up to ``limit`` entries older than the grace period (call inside a transaction).

    SKIP LOCKED lets several gateways collect garbage at once without deleting a blob twice.
    """
    rows = await conn.fetch(
        "SELECT profile, storage_key FROM garbage"
        " WHERE listed_at < now() - make_interval(secs => $1)"
        " ORDER BY listed_at LIMIT $2 FOR UPDATE SKIP LOCKED",
        float(grace_seconds),
        limit,
    )
    return [(row["profile"], row["storage_key"]) for row in rows]


async def remove(conn: asyncpg.Connection | asyncpg.Pool, profile: str, storage_key: str) -> None:
    await conn.execute(
        "DELETE FROM garbage WHERE profile = $1 AND storage_key = $2", profile, storage_key
    )
