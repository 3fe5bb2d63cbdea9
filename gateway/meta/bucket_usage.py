"""Objects and bytes per bucket, as schema.sql's triggers keep them: a base row per bucket
plus the delta rows appended since the janitor last folded them in."""

from __future__ import annotations

from dataclasses import dataclass

import asyncpg


@dataclass(frozen=True)
class Usage:
    objects: int
    # Bytes of the objects.
    bytes: int
    # Bytes of multipart parts not yet completed into objects.
    upload_bytes: int

    @property
    def total_bytes(self) -> int:
        """What a quota's max_bytes limits."""
        return self.bytes + self.upload_bytes


async def usage_of(conn: asyncpg.Connection | asyncpg.Pool, bucket: str) -> Usage:
    """One bucket's usage now: its totals and its pending deltas, in one indexed query."""
    row = await conn.fetchrow("SELECT * FROM gateway_bucket_usage($1)", bucket)
    return Usage(row["objects"], row["bytes"], row["upload_bytes"])


async def usage_by_bucket(conn: asyncpg.Connection | asyncpg.Pool) -> dict[str, Usage]:
    """Every bucket's usage, exact as of one snapshot."""
    rows = await conn.fetch(
        "SELECT b.name, u.* FROM buckets b CROSS JOIN LATERAL gateway_bucket_usage(b.name) u"
    )
    return {row["name"]: Usage(row["objects"], row["bytes"], row["upload_bytes"]) for row in rows}


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
    (Writers only append deltas, so they never wait on this. Rows a quota check is folding
    are left to it: SKIP LOCKED, so this never waits on a check that waits on it.)"""
    async with pool.acquire() as conn, conn.transaction():
        return int(
            await conn.fetchval(
                "WITH gone AS (DELETE FROM bucket_usage_deltas WHERE id IN"
                "  (SELECT id FROM bucket_usage_deltas FOR UPDATE SKIP LOCKED)"
                "  RETURNING bucket, objects, bytes, upload_bytes),"
                " sums AS (SELECT bucket, sum(objects)::bigint AS objects,"
                "  sum(bytes)::bigint AS bytes, sum(upload_bytes)::bigint AS upload_bytes,"
                "  count(*) AS n FROM gone GROUP BY bucket),"
                " merged AS (INSERT INTO bucket_usage (bucket, objects, bytes, upload_bytes)"
                "  SELECT bucket, objects, bytes, upload_bytes FROM sums"
                "  ON CONFLICT (bucket) DO UPDATE SET objects = bucket_usage.objects"
                "  + EXCLUDED.objects, bytes = bucket_usage.bytes + EXCLUDED.bytes,"
                "  upload_bytes = bucket_usage.upload_bytes + EXCLUDED.upload_bytes)"
                " SELECT coalesce(sum(n), 0) FROM sums"
            )
        )
