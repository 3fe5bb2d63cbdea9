"""The janitor: aborts abandoned multipart uploads, and deletes the blobs the garbage log lists
once their grace period is over."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping

import asyncpg

from gateway.meta import garbage, uploads
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
            entries = await garbage.take_expired(conn, grace_seconds, BATCH, list(stores))
        for profile, storage_key in entries:
            try:
                await stores[profile].delete(storage_key)
            except OSError:
                # Listed again, so a later pass retries; never forgotten.
                log.warning("could not delete blob %s; retrying later", storage_key, exc_info=True)
                await garbage.add(pool, profile, storage_key)
                continue
            removed += 1
        if len(entries) < BATCH:
            return removed


async def abort_abandoned_uploads(pool: asyncpg.Pool, max_age_seconds: float) -> int:
    """Abort every multipart upload started longer ago than that; returns how many.

    Their parts' blobs enter the garbage log, to be deleted after the grace period like any.
    """
    aborted = 0
    while True:
        async with pool.acquire() as conn:
            count = await uploads.abort_abandoned(conn, max_age_seconds, BATCH)
        aborted += count
        if count < BATCH:
            return aborted


async def run_janitor(
    pool: asyncpg.Pool,
    stores: Mapping[str, BlobStore],
    grace_seconds: int,
    interval: float,
    abandoned_upload_seconds: float,
) -> None:
    while True:
        try:
            aborted = await abort_abandoned_uploads(pool, abandoned_upload_seconds)
            if aborted:
                log.info("janitor aborted %d abandoned multipart uploads", aborted)
            removed = await collect_garbage(pool, stores, grace_seconds)
            if removed:
                log.info("janitor removed %d blobs", removed)
        except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError):
            log.warning("janitor pass failed; retrying later", exc_info=True)
        await asyncio.sleep(interval)
