"""`gateway import BUCKET`: record every object already in an upstream prefix, so an existing
bucket can be put behind the gateway.

The upstream is listed in key order a page at a time; each page's objects are described by
HeadObject (content type and user metadata are not in a listing) a few at a time, then inserted
in one statement together with the checkpoint, so an interrupted import resumes after the last
page it recorded. Rows that exist already (objects written through the gateway) are kept.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import asyncpg

from gateway.meta import imports, object_rows
from gateway.meta.buckets import Bucket
from gateway.meta.object_rows import ObjectRecord
from gateway.objects.upstream import record_from_upstream
from gateway.s3 import errors, names
from gateway.storage.upstream import UpstreamObject, UpstreamStore, has_dot_segment

PAGE = 1000


async def _describe(
    store: UpstreamStore, listed: list[UpstreamObject], concurrency: int
) -> list[UpstreamObject]:
    """The HeadObject of each listed object (those deleted meanwhile are left out)."""
    limit = asyncio.Semaphore(concurrency)

    async def head(entry: UpstreamObject) -> UpstreamObject | None:
        async with limit:
            return await store.head(entry.key)

    found = await asyncio.gather(*(head(entry) for entry in listed))
    return [entry for entry in found if entry is not None]


def _gateway_key(store: UpstreamStore, prefix: str, upstream_key: str) -> str | None:
    """The object key an upstream key stands for; None for keys no client object can have."""
    if store.is_reserved(upstream_key) or has_dot_segment(upstream_key):
        # Another tool may keep such a key, but the gateway never addresses it (see
        # UpstreamStore.object_key).
        return None
    key = upstream_key[len(prefix) :]
    try:
        names.validate_key(key)
    except errors.S3Error:
        return None
    return key


async def import_bucket(
    pool: asyncpg.Pool,
    store: UpstreamStore,
    bucket: Bucket,
    concurrency: int = 16,
    progress: Callable[[int, int], None] | None = None,
) -> tuple[int, int]:
    """Record the objects under the bucket's upstream prefix; returns (listed, added).

    ``progress`` is called after each page with the objects listed and added by it.
    """
    prefix = store.bucket_prefix(bucket.name)
    state = await imports.resume_point(pool, bucket.name)
    after = state.last_key or ""
    listed_total = added_total = 0
    while True:
        page, more = await store.list_page(prefix, max(after, prefix), PAGE)
        if not page:
            break
        wanted = [entry for entry in page if _gateway_key(store, prefix, entry.key) is not None]
        records: list[ObjectRecord] = []
        for found in await _describe(store, wanted, concurrency):
            key = _gateway_key(store, prefix, found.key)
            assert key is not None
            records.append(record_from_upstream(bucket.name, key, bucket.profile, found))
        after = page[-1].key
        async with pool.acquire() as conn, conn.transaction():
            added = await object_rows.adopt_objects(conn, records) if records else 0
            await imports.advance(conn, bucket.name, after, added)
        listed_total += len(page)
        added_total += added
        if progress is not None:
            progress(len(page), added)
        if not more:
            break
    await imports.finish(pool, bucket.name)
    return listed_total, added_total
