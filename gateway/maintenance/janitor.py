"""The janitor: deletes the blobs the garbage log lists, once their grace period is over."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping

import asyncpg

from gateway.meta import garbage
from gateway.storage import BlobStore

log = logging.getLogger(__name__)

BATCH = 500


async def collect_garbage(
    pool: asyncpg.Pool, stores: Mapping[str, BlobStore], grace_seconds: int
) -> int:
    """Delete every blob listed for longer than the grace period; returns how many."""
    removed = 0
    while True:
        async with pool.acquire() as conn, conn.transaction():
            # Rows stay locked while their blobs are deleted, so another janitor skips them
            # and the row goes only once the blob is gone.
            entries = await garbage.take_expired(conn, grace_seconds, BATCH)
            for profile, storage_key in entries:
                store = stores.get(profile)
                if store is None:
                    log.warning("garbage in unknown storage profile %r kept", profile)
                    continue
                await store.delete(storage_key)
                await garbage.remove(conn, profile, storage_key)
                removed += 1
        if len(entries) < BATCH:
            return removed


async def run_janitor(
    pool: asyncpg.Pool, stores: Mapping[str, BlobStore], grace_seconds: int, interval: float
) -> None:
    while True:
        try:
            removed = await collect_garbage(pool, stores, grace_seconds)
            if removed:
                log.info("janitor removed %d blobs", removed)
        except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError):
            log.warning("janitor pass failed; retrying later", exc_info=True)
        await asyncio.sleep(interval)
