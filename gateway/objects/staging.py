"""A blob written under a fresh storage key that the intent log lists until a row claims it:
the one protocol for object writes, parts and rendered variants."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable

from gateway.meta import garbage
from gateway.meta.db import DATABASE_ERRORS
from gateway.objects.backend import Resources
from gateway.storage import BlobWriter

log = logging.getLogger(__name__)


class StagedBlob:
    """Use as ``async with StagedBlob(...) as blob``: write, ``commit``, then mark
    ``row_commit_started`` before committing the row that claims it. Any failure before that
    deletes the blob (and its log entry) at once instead of waiting for the janitor.
    """

    def __init__(
        self,
        resources: Resources,
        profile: str,
        on_data: Callable[[bytes], None] | None = None,
    ) -> None:
        self._resources = resources
        self.profile = profile
        self._store = resources.stores[profile]
        self.storage_key = ""
        self._on_data = on_data
        self._writer: BlobWriter | None = None
        # Set before the row commit starts: from then on a failure is ambiguous (the commit may
        # have landed), so the blob is left to the janitor, which deletes it only if unclaimed.
        self.row_commit_started = False
        self._heartbeat: asyncio.Task[None] | None = None

    async def __aenter__(self) -> StagedBlob:
        # The intent is durable before the first byte is written.
        self.storage_key = await self._resources.reserve.take(self.profile)
        self._writer = await self._store.create(self.storage_key, self._on_data)
        self._heartbeat = asyncio.create_task(self._keep_listed())
        return self

    async def _keep_listed(self) -> None:
        """Renew the log entry while the write lasts: a slow upload must not outlive the
        janitor's grace period and lose its blob mid-write."""
        interval = max(1.0, self._resources.garbage_grace_seconds / 3)
        while True:
            await asyncio.sleep(interval)
            try:
                await garbage.touch(self._resources.pool, self.profile, self.storage_key)
            except (OSError, *DATABASE_ERRORS):
                log.warning("could not renew the log entry of %s", self.storage_key)

    async def write_all(self, chunks: AsyncIterator[bytes]) -> None:
        assert self._writer is not None
        async for chunk in chunks:
            await self._writer.write(chunk)
        await self._writer.flush()

    async def commit(self) -> int:
        """Make the blob durable; its size."""
        assert self._writer is not None
        await self._writer.commit()
        return self._writer.size

    async def __aexit__(self, exc_type: object, exc: object, tb: object) -> None:
        if self._heartbeat is not None:
            self._heartbeat.cancel()
        if exc_type is None:
            return
        # A lost log entry is not ambiguous: no row can reference the blob.
        if self.row_commit_started and not isinstance(exc, garbage.BlobLostError):
            return
        await asyncio.shield(self.discard())

    async def discard(self) -> None:
        """Delete the blob and its log entry: no row references it (else the janitor will)."""
        try:
            if self._writer is not None:
                await self._writer.abort()
            await self._store.delete(self.storage_key)
            await garbage.remove(self._resources.pool, self.profile, self.storage_key)
        except Exception:
            # The log entry stays; the janitor will collect the blob.
            log.warning("could not discard blob %s at once", self.storage_key, exc_info=True)
