"""Pieces several operations share: bucket lookup, small XML bodies, staged blob writes."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime

from gateway.api.body import RequestBody
from gateway.api.context import KEY_RESERVE, RECENT_BUCKETS, S3Request
from gateway.meta import buckets, garbage
from gateway.meta.buckets import Bucket
from gateway.meta.db import DATABASE_ERRORS
from gateway.s3 import errors
from gateway.storage import BlobWriter

log = logging.getLogger(__name__)


async def get_bucket(req: S3Request, name: str) -> Bucket:
    bucket = await buckets.get_bucket(req.pool, name)
    if bucket is None:
        raise errors.NoSuchBucket(BucketName=name)
    return bucket


async def recent_bucket(req: S3Request, name: str) -> Bucket:
    """The bucket as this process saw it a moment ago: for a write whose row commit checks
    that the bucket still exists (see RecentBuckets)."""
    bucket = await req.app[RECENT_BUCKETS].get(req.pool, name)
    if bucket is None:
        raise errors.NoSuchBucket(BucketName=name)
    return bucket


_WEEKDAYS = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")
_MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")


def http_date(moment: datetime) -> str:
    """RFC 9110 IMF-fixdate, as email.utils.format_datetime(usegmt=True) writes it, at
    half its cost (every GET and HEAD sends one)."""
    t = moment.astimezone(UTC)
    return (
        f"{_WEEKDAYS[t.weekday()]}, {t.day:02d} {_MONTHS[t.month - 1]} {t.year:04d}"
        f" {t.hour:02d}:{t.minute:02d}:{t.second:02d} GMT"
    )


async def read_small_body(
    req: S3Request, limit: int | None = None, checksum_headers: bool = True
) -> bytes:
    """A request document (e.g. DeleteObjects XML), size-capped and verified like any body.

    ``limit`` defaults to limits.max_xml_body; ``checksum_headers`` as for RequestBody.
    """
    body = RequestBody(
        req,
        max_size=req.config.limits.max_xml_body if limit is None else limit,
        checksum_headers=checksum_headers,
    )
    parts = [piece async for piece in body]
    data = b"".join(parts)
    body.digests.update(data)
    body.verify()
    return data


class StagedBlob:
    """A blob written under a fresh storage key that the garbage log lists until a row claims it.

    Use as ``async with StagedBlob(...) as blob``: any failure before the row commits deletes
    the blob (and its log entry) at once instead of waiting for the janitor.
    """

    def __init__(self, req: S3Request, profile: str, on_data: Callable[[bytes], None]) -> None:
        self._req = req
        self.profile = profile
        self._store = req.store(profile)
        self.storage_key = ""
        self._on_data = on_data
        self.writer: BlobWriter | None = None
        # Set before the row commit starts: from then on a failure is ambiguous (the commit may
        # have landed), so the blob is left to the janitor, which deletes it only if unclaimed.
        self.row_commit_started = False
        self._heartbeat: asyncio.Task[None] | None = None

    async def __aenter__(self) -> StagedBlob:
        # The intent is durable before the first byte is written.
        self.storage_key = await self._req.app[KEY_RESERVE].take(self.profile)
        self.writer = await self._store.create(self.storage_key, self._on_data)
        self._heartbeat = asyncio.create_task(self._keep_listed())
        return self

    async def _keep_listed(self) -> None:
        """Renew the log entry while the upload lasts: a slow upload must not outlive the
        janitor's grace period and lose its blob mid-write."""
        interval = max(1.0, self._req.config.limits.garbage_grace_seconds / 3)
        while True:
            await asyncio.sleep(interval)
            try:
                await garbage.touch(self._req.pool, self.profile, self.storage_key)
            except (OSError, *DATABASE_ERRORS):
                log.warning("could not renew the log entry of %s", self.storage_key)

    async def write_all(self, chunks: AsyncIterator[bytes]) -> None:
        assert self.writer is not None
        async for chunk in chunks:
            await self.writer.write(chunk)
        await self.writer.flush()

    async def __aexit__(self, exc_type: object, exc: object, tb: object) -> None:
        if self._heartbeat is not None:
            self._heartbeat.cancel()
        if exc_type is None:
            return
        # A lost log entry is not ambiguous: no row can reference the blob.
        if self.row_commit_started and not isinstance(exc, garbage.BlobLostError):
            return
        try:
            if self.writer is not None:
                await self.writer.abort()
            await self._store.delete(self.storage_key)
            await garbage.remove(self._req.pool, self.profile, self.storage_key)
        except Exception:
            # The log entry stays; the janitor will collect the blob.
            log.warning("could not discard blob %s at once", self.storage_key, exc_info=True)
