"""What each storage profile holds, for `gateway stats` (an aggregate: run on demand only)."""

from __future__ import annotations

from dataclasses import dataclass

import asyncpg

from gateway.meta import chunks


@dataclass(frozen=True)
class ProfileUsage:
    objects: int
    # What clients see: the sizes of the objects.
    object_bytes: int
    # Every blob's bytes: objects, parts of uploads in progress and stored variants (and, on a
    # chunked profile, blobs released but not yet collected).
    logical_bytes: int
    # What storage holds for them: less where chunks are shared (dedup); encryption adds its
    # tags (16 bytes per 64 KiB), not counted here.
    stored_bytes: int


async def profile_usage(conn: asyncpg.Pool, profile: str, chunked: bool) -> ProfileUsage:
    row = await conn.fetchrow(
        "SELECT"
        " (SELECT count(*) FROM objects WHERE profile = $1) AS objects,"
        " (SELECT coalesce(sum(size), 0) FROM objects WHERE profile = $1)::bigint AS bytes,"
        " (SELECT coalesce(sum(size), 0) FROM upload_parts WHERE profile = $1)::bigint AS parts,"
        " (SELECT coalesce(sum(size), 0) FROM derivatives"
        "  WHERE profile = $1 AND storage_key IS NOT NULL)::bigint AS variants",
        profile,
    )
    logical = row["bytes"] + row["parts"] + row["variants"]
    stored = logical
    if chunked:
        logical, stored = await chunks.chunk_stats(conn, profile)
    return ProfileUsage(row["objects"], row["bytes"], logical, stored)
