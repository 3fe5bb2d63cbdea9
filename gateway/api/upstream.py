"""Where object operations meet an upstream profile: objects kept in place under their own keys.

The upstream is written first and the row committed after, with the key locked and the write
confirmed still in place; a read insists on the recorded version (If-Match on the upstream
ETag). Whatever another tool does to the upstream bucket is noticed on the next GET: an unknown
key is adopted, a changed or deleted object re-recorded.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from typing import Any

from gateway.api.context import S3Request
from gateway.meta import objects
from gateway.meta.buckets import Bucket
from gateway.meta.objects import ObjectRecord
from gateway.s3 import errors
from gateway.s3.conditions import Conditions
from gateway.storage.upstream import (
    ObjectAttributes,
    UpstreamChangedError,
    UpstreamStore,
)


def store_of(req: S3Request, profile: str) -> UpstreamStore | None:
    store = req.store(profile)
    return store if isinstance(store, UpstreamStore) else None


def attributes(content_type: str, metadata: Mapping[str, Any]) -> ObjectAttributes:
    return ObjectAttributes(
        content_type=content_type,
        user_metadata=metadata.get("user", {}),
        headers=metadata.get("headers", {}),
    )


def write_conditions(cond: Conditions | None, current: ObjectRecord | None) -> dict[str, str]:
    """The request's If-Match / If-None-Match as the upstream must check them: on the object
    the upstream holds, so a conditional write stays atomic although it lands there first."""
    if cond is None:
        return {}
    if cond.if_none_match is not None:
        return {"IfNoneMatch": "*"}
    if cond.if_match is not None and current is not None and current.storage_etag:
        return {"IfMatch": current.storage_etag}
    return {}


async def write(
    store: UpstreamStore,
    upstream_key: str,
    chunks: AsyncIterator[bytes],
    on_data: Callable[[bytes], None],
    object_attributes: ObjectAttributes,
    verify: Callable[[], bytes | None],
    conditions: Mapping[str, str],
) -> tuple[int, str]:
    """Stream ``chunks`` to ``upstream_key``; ``verify`` runs once every byte has been hashed
    and before any becomes visible (it raises to refuse, or returns the body's MD5 for the
    upstream to check too). Returns (size, upstream ETag)."""
    writer = await store.create(upstream_key, on_data, object_attributes)
    try:
        async for chunk in chunks:
            await writer.write(chunk)
        await writer.flush()
        md5 = verify()
        try:
            await writer.commit(md5, conditions)
        except UpstreamChangedError:
            raise errors.PreconditionFailed(
                Condition="If-None-Match" if "IfNoneMatch" in conditions else "If-Match"
            ) from None
    except BaseException:
        await writer.abort()
        raise
    assert writer.etag is not None
    return writer.size, writer.etag


async def commit(
    req: S3Request,
    store: UpstreamStore,
    record: ObjectRecord,
    check: Callable[[str | None], None] | None = None,
    eager: list[str] | None = None,
) -> None:
    """Commit the row of an object just written upstream, unless a later write of the key
    has already replaced it there (that writer's row is the one to keep)."""
    assert record.storage_key is not None and record.storage_etag is not None
    confirm = still_in_place(store, record.storage_key, record.storage_etag)
    async with req.pool.acquire() as conn:
        await objects.commit_object(conn, record, check, (), eager or (), confirm)


def still_in_place(
    store: UpstreamStore, upstream_key: str, storage_etag: str
) -> Callable[[], Awaitable[bool]]:
    """Whether the upstream still holds the version just written (the row commit's check)."""

    async def check() -> bool:
        found = await store.head(upstream_key)
        return found is not None and found.etag == storage_etag

    return check


async def adopt(req: S3Request, bucket: Bucket, key: str) -> ObjectRecord | None:
    """The object ``key`` if the upstream has it though no row describes it: recorded now, so
    listings show it from then on."""
    store = store_of(req, bucket.profile)
    if store is None:
        return None
    try:
        upstream_key = store.object_key(bucket.name, key)
    except errors.S3Error:
        # A key no client object can have (reserved, or too long once prefixed).
        return None
    async with req.pool.acquire() as conn, conn.transaction():
        # With the key locked, as writes and deletes commit: a DeleteObject cannot come between
        # the HEAD and the row (which would bring a deleted object back into listings).
        await objects.lock_key(conn, bucket.name, key)
        found = await store.head(upstream_key)
        if found is None:
            return None
        record = objects.record_from_upstream(bucket.name, key, bucket.profile, found)
        await objects.adopt_object(conn, record)
    return await objects.get_object(req.pool, bucket.name, key)


async def reconcile(req: S3Request, record: ObjectRecord) -> None:
    """``record``'s upstream object is no longer the recorded version: record what the
    upstream holds now (or that it holds nothing), retiring the stale version's variants."""
    store = store_of(req, record.profile)
    if store is None or record.storage_key is None:
        return
    found = await store.head(record.storage_key)
    if found is not None and found.etag == record.storage_etag:
        return
    if found is None and not await store.is_gone(record.storage_key):
        # A HeadObject 404 while the listing still shows the key: try again later.
        raise errors.SlowDown("The upstream storage is settling. Please try again.")
    current = None
    if found is not None:
        current = objects.record_from_upstream(record.bucket, record.key, record.profile, found)
    async with req.pool.acquire() as conn:
        await objects.replace_version(conn, record, current)


async def delete(req: S3Request, store: UpstreamStore, bucket: str, key: str) -> None:
    """Delete the object upstream and its row, with the key locked so that no write of it can
    commit in between (a write confirmed after this finds its object gone and commits nothing)."""
    upstream_key = store.object_key(bucket, key)
    async with req.pool.acquire() as conn, conn.transaction():
        await objects.lock_key(conn, bucket, key)
        await store.delete(upstream_key)
        await objects.delete_object(conn, bucket, key)
