"""Objects of a local profile: each object, part and variant a blob under a generated name,
listed in the intent log until its row claims it; small objects kept in their rows.

A write's blob is complete and durable before its row is swapped in, so a reader sees the old
object or the new one, never part of either; a multipart completion copies no bytes (the
object becomes the ordered list of its part blobs).
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import replace
from datetime import UTC, datetime

from gateway.errors import BucketGoneError, QuotaExceededError, UploadGoneError
from gateway.meta import object_rows, uploads
from gateway.meta.object_rows import ObjectRecord
from gateway.meta.uploads import Part, Upload
from gateway.objects.backend import (
    Completion,
    IncomingBody,
    NewObject,
    ObjectBackend,
    WriteTerms,
    assembled,
)
from gateway.objects.reading import Segment
from gateway.objects.staging import StagedBlob
from gateway.storage import customer_keys
from gateway.storage.chunked import ChunkedStore


class LocalBackend(ObjectBackend):
    async def put(self, new: NewObject, body: IncomingBody, terms: WriteTerms) -> ObjectRecord:
        await self.precheck(new, terms)
        # An object sealed with a client's key is never kept in its row, in plaintext.
        inline_max = 0 if customer_keys.current().write else self.inline_max_size
        if inline_max and body.length is not None and body.length <= inline_max:
            # A small object: its bytes go in its row, one transaction and no blob.
            data = b"".join([piece async for piece in body])
            body.digests.update(data)
            record = self._record(new, body, len(data), body.verify(), inline_data=data)
            await self._commit(record, terms)
            return record
        async with StagedBlob(self.resources, self.profile, body.digests.update) as blob:
            await blob.write_all(aiter(body))
            checksums = body.verify()
            size = await blob.commit()
            record = self._record(new, body, size, checksums, storage_key=blob.storage_key)
            blob.row_commit_started = True
            try:
                await self._commit(record, terms)
            except (BucketGoneError, QuotaExceededError):
                blob.row_commit_started = False  # nothing committed: the blob can go at once
                raise
        return record

    async def copy(
        self,
        new: NewObject,
        source: ObjectRecord,
        segments: Sequence[Segment],
        terms: WriteTerms,
    ) -> ObjectRecord:
        shared = await self._copy_shared(new, source, segments, terms)
        if shared is not None:
            return shared
        return await super().copy(new, source, segments, terms)

    async def _copy_shared(
        self,
        new: NewObject,
        source: ObjectRecord,
        segments: Sequence[Segment],
        terms: WriteTerms,
    ) -> ObjectRecord | None:
        """A whole single-part object of this profile copied as new references to its shared
        chunks (dedup), writing no byte; None where that cannot be done."""
        store = self.store
        whole = len(segments) == 1 and segments[0].length == source.size == sum(
            segment.length for segment in segments
        )
        if not (
            isinstance(store, ChunkedStore)
            and source.profile == self.profile
            and source.storage_key is not None
            and source.parts_count is None
            and source.metadata.customer_key is None
            and customer_keys.current().write is None
            and whole
        ):
            return None
        await self.precheck(new, terms)
        storage_key = await self.resources.reserve.take(self.profile)
        # Unused, the key stays listed and the janitor clears it.
        if not await store.clone(source.storage_key, storage_key):
            return None
        # The same bytes: the source's MD5 ETag and checksums hold for the copy.
        metadata = new.metadata.with_checksums(source.checksums)
        record = replace(new, metadata=metadata).record(
            self.profile, source.size, source.etag, storage_key=storage_key
        )
        await self._commit(record, terms)
        return record

    def _record(
        self,
        new: NewObject,
        body: IncomingBody,
        size: int,
        checksums: dict[str, str],
        storage_key: str | None = None,
        inline_data: bytes | None = None,
    ) -> ObjectRecord:
        metadata = new.metadata.with_checksums(checksums)
        return replace(new, metadata=metadata).record(
            self.profile,
            size,
            body.digests.etag,
            storage_key=storage_key,
            inline_data=inline_data,
        )

    async def _commit(self, record: ObjectRecord, terms: WriteTerms) -> None:
        async with self.pool.acquire() as conn:
            await object_rows.commit_object(
                conn, record, terms.check(record.key), eager=terms.eager
            )

    async def delete(self, bucket: str, key: str, expected: uuid.UUID | None = None) -> bool:
        async with self.pool.acquire() as conn:
            return await object_rows.delete_object(conn, bucket, key, expected)

    async def upload_part(self, upload: Upload, part_number: int, body: IncomingBody) -> Part:
        async with StagedBlob(self.resources, self.profile, body.digests.update) as blob:
            await blob.write_all(aiter(body))
            checksums = body.verify()
            size = await blob.commit()
            part = Part(
                part_number=part_number,
                size=size,
                etag=body.digests.etag,
                profile=self.profile,
                storage_key=blob.storage_key,
                last_modified=datetime.now(UTC),
                checksums=checksums,
            )
            blob.row_commit_started = True
            async with self.pool.acquire() as conn:
                try:
                    await uploads.commit_part(
                        conn, upload.bucket, upload.key, upload.upload_id, part
                    )
                except (UploadGoneError, QuotaExceededError):
                    # Aborted or completed meanwhile, or refused: nothing references the blob.
                    blob.row_commit_started = False
                    raise
        return part

    async def complete_upload(self, upload: Upload, completion: Completion) -> ObjectRecord:
        version_id, now = uuid.uuid4(), datetime.now(UTC)

        def assemble(
            locked: Upload, parts: list[Part]
        ) -> tuple[ObjectRecord, list[object_rows.Chunk]]:
            return assembled(locked, parts, completion, self.profile, version_id, now)

        terms = completion.terms
        async with self.pool.acquire() as conn:
            return await uploads.complete_upload(
                conn,
                upload.bucket,
                upload.key,
                upload.upload_id,
                assemble,
                terms.check(upload.key),
                terms.eager,
            )
