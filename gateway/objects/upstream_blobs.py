"""Objects of an upstream profile with transforms (encryption): each object, part and variant
a blob under a generated key in the upstream bucket, written and committed exactly as on a
local profile (gateway.objects.local); the upstream never holds an object's plaintext under its
own key.

Objects that were already in the bucket in plaintext under their 1:1 keys (written before the
profile was encrypted, or by other tools) are still adopted and read in place. A write or a
delete of such a key also deletes the plaintext object, so a deleted object can never come
back through adoption.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Sequence

from gateway.errors import KeyNotStorableError
from gateway.meta import object_rows
from gateway.meta.buckets import Bucket
from gateway.meta.object_rows import ObjectRecord
from gateway.meta.uploads import Upload
from gateway.objects.backend import Completion, IncomingBody, NewObject, Resources, WriteTerms
from gateway.objects.local import LocalBackend
from gateway.objects.reading import Segment
from gateway.objects.upstream import UpstreamBackend
from gateway.storage.upstream import UpstreamStore


class UpstreamBlobBackend(LocalBackend):
    seals_customer_keys = True

    def __init__(
        self,
        profile: str,
        resources: Resources,
        upstream: UpstreamStore,
        locks: asyncio.Semaphore,
    ) -> None:
        super().__init__(profile, resources)
        self.upstream = upstream
        # Objects found in place under their own keys are the plain upstream profile's.
        self._in_place = UpstreamBackend(profile, resources, upstream, locks)

    async def adopt(self, bucket: Bucket, key: str) -> ObjectRecord | None:
        return await self._in_place.adopt(bucket, key)

    async def reconcile(self, record: ObjectRecord) -> None:
        if record.storage_etag is not None:
            await self._in_place.reconcile(record)

    async def put(self, new: NewObject, body: IncomingBody, terms: WriteTerms) -> ObjectRecord:
        replaced = await object_rows.get_object(self.pool, new.bucket, new.key)
        record = await super().put(new, body, terms)
        await self._drop_in_place(replaced)
        return record

    async def _copy_shared(
        self,
        new: NewObject,
        source: ObjectRecord,
        segments: Sequence[Segment],
        terms: WriteTerms,
    ) -> ObjectRecord | None:
        # A copy through the bytes goes through put, which drops the plaintext itself.
        replaced = await object_rows.get_object(self.pool, new.bucket, new.key)
        record = await super()._copy_shared(new, source, segments, terms)
        if record is not None:
            await self._drop_in_place(replaced)
        return record

    async def complete_upload(self, upload: Upload, completion: Completion) -> ObjectRecord:
        replaced = await object_rows.get_object(self.pool, upload.bucket, upload.key)
        record = await super().complete_upload(upload, completion)
        await self._drop_in_place(replaced)
        return record

    async def delete(self, bucket: str, key: str, expected: uuid.UUID | None = None) -> bool:
        try:
            # Deletes the plaintext object under the 1:1 key, if any, and the row, with the
            # key locked so no adoption comes between.
            return await self._in_place.delete(bucket, key, expected)
        except KeyNotStorableError:
            # No 1:1 key: nothing in place to delete.
            return await super().delete(bucket, key, expected)

    async def _drop_in_place(self, replaced: ObjectRecord | None) -> None:
        """Delete the plaintext object a write replaced, once its row no longer names it."""
        if replaced is not None and replaced.storage_etag is not None:
            assert replaced.storage_key is not None
            await self.upstream.delete(replaced.storage_key)
