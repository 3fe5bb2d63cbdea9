"""Derivatives no preset makes any more, and old failed-render records, removed.

A derivative's variant key names its preset and the hash of the preset's spec, so editing a
preset (or removing it) leaves the derivatives made before unreachable, taking storage. Each
janitor pass records the stored keys its own presets do not make as stale, and clears those
they do make; a key stays stale only while no running gateway makes it (during a rolling
reload, a gateway still on the old presets clears its keys at every pass), and its derivatives
are deleted once it has been stale for limits.stale_variant_seconds, which must be longer than
the janitor interval for that to hold. Blobs go to the intent log with their rows, in batches
of BATCH per statement.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Sequence
from collections.abc import Set as AbstractSet

import asyncpg

from gateway.meta import derivatives
from gateway.meta.derivatives import Removed

BATCH = 500


async def retire_stale_variants(
    pool: asyncpg.Pool, live_keys: AbstractSet[str], stale_seconds: float
) -> Removed:
    """Note which stored keys ``live_keys`` (this gateway's presets) leave stale, then delete
    the derivatives of the keys stale for ``stale_seconds``."""
    stored = await derivatives.stored_variant_keys(pool)
    async with pool.acquire() as conn:
        await derivatives.note_stale_keys(conn, stored, live_keys)
    removed = Removed(0, 0)
    for key in await derivatives.stale_keys(pool, stale_seconds):
        removed = _sum(removed, await remove_all(pool, [key], None))
        await derivatives.forget_stale_key(pool, key)
    return removed


async def remove_all(
    pool: asyncpg.Pool, variant_keys: Sequence[str], version_ids: Sequence[uuid.UUID] | None
) -> Removed:
    """Delete every derivative with one of ``variant_keys`` (of one of ``version_ids``),
    BATCH per statement."""
    removed = Removed(0, 0)
    while True:
        batch = await derivatives.remove(pool, variant_keys, version_ids, BATCH)
        removed = _sum(removed, batch)
        if batch.derivatives < BATCH:
            return removed


async def remove_old_failures(pool: asyncpg.Pool, older_than_seconds: float) -> int:
    """Delete the failed-render records past the back-off ceiling, BATCH per statement."""
    removed = 0
    while True:
        batch = await derivatives.remove_old_failures(pool, older_than_seconds, BATCH)
        removed += batch
        if batch < BATCH:
            return removed


async def bucket_version_ids(pool: asyncpg.Pool, bucket: str) -> AsyncIterator[list[uuid.UUID]]:
    """The ids of ``bucket``'s versions, current and not, BATCH at a time (keyset pages)."""
    after: str | None = None
    while True:
        rows = await pool.fetch(
            "SELECT key, version_id FROM objects WHERE bucket = $1"
            " AND key > coalesce($2, '') ORDER BY key LIMIT $3",
            bucket,
            after,
            BATCH,
        )
        if rows:
            yield [row["version_id"] for row in rows]
            after = rows[-1]["key"]
        if len(rows) < BATCH:
            break
    after_seq = 0
    after = None
    while True:
        rows = await pool.fetch(
            "SELECT key, seq, version_id FROM object_versions WHERE bucket = $1"
            " AND key >= coalesce($2, '') AND ($2::text IS NULL OR key > $2 OR seq < $3)"
            " ORDER BY key, seq DESC LIMIT $4",
            bucket,
            after,
            after_seq,
            BATCH,
        )
        if rows:
            yield [row["version_id"] for row in rows]
            after, after_seq = rows[-1]["key"], rows[-1]["seq"]
        if len(rows) < BATCH:
            return


def _sum(one: Removed, other: Removed) -> Removed:
    return Removed(one.derivatives + other.derivatives, one.bytes + other.bytes)
