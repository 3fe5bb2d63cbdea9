"""Objects and bytes per bucket, as schema.sql's trigger keeps them: a base row per bucket
plus the delta rows appended since the janitor last folded them in."""

from __future__ import annotations

import asyncpg


async def bucket_usage(pool: asyncpg.Pool) -> list[tuple[str, int, int]]:
    """(bucket, objects, bytes) of every bucket, exact as of one snapshot."""
    rows = await pool.fetch(
        "SELECT b.name, coalesce(u.objects, 0) + coalesce(d.objects, 0) AS objects,"
        " coalesce(u.bytes, 0) + coalesce(d.bytes, 0) AS bytes"
        " FROM buckets b"
        " LEFT JOIN bucket_usage u ON u.bucket = b.name"
        " LEFT JOIN (SELECT bucket, sum(objects)::bigint AS objects, sum(bytes)::bigint AS bytes"
        "  FROM bucket_usage_deltas GROUP BY bucket) d ON d.bucket = b.name"
        " ORDER BY b.name"
    )
    return [(row["name"], row["objects"], row["bytes"]) for row in rows]


async def fold_deltas(pool: asyncpg.Pool) -> int:
    """Move the delta rows into the per-bucket totals, in one transaction; returns how many.
    (Writers only append deltas, so they never wait on this.)"""
    async with pool.acquire() as conn, conn.transaction():
        return int(
            await conn.fetchval(
                "WITH gone AS (DELETE FROM bucket_usage_deltas RETURNING bucket, objects, bytes),"
                " sums AS (SELECT bucket, sum(objects)::bigint AS objects,"
                "  sum(bytes)::bigint AS bytes, count(*) AS n FROM gone GROUP BY bucket),"
                " merged AS (INSERT INTO bucket_usage (bucket, objects, bytes)"
                "  SELECT bucket, objects, bytes FROM sums"
                "  ON CONFLICT (bucket) DO UPDATE SET objects = bucket_usage.objects"
                "  + EXCLUDED.objects, bytes = bucket_usage.bytes + EXCLUDED.bytes)"
                " SELECT coalesce(sum(n), 0) FROM sums"
            )
        )
