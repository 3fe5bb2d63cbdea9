"""Objects of an upstream profile: kept in place in the upstream bucket under their own keys.

The upstream is written first and the row committed after; a read insists on the recorded
version (If-Match on the upstream ETag). Whatever another tool does to the upstream bucket is
noticed on the next GET: an unknown key is adopted, a changed or deleted object re-recorded.

Writers of one key may land upstream and commit in different orders; the row must end up
describing what the upstream holds. A single PutObject over a recorded version is sent on
the condition that the upstream still holds it (If-Match on its upstream ETag), and its row is
committed on the condition that the row is still that version: together, no other write came
in between, and nothing needs to be asked of the upstream. Any other write (a new key, whose
"no row" a DeleteObject in between could not change; a multipart body; a completion; a
server-side copy; a PutObject whose condition failed) is confirmed by a HEAD made with the key
locked: a single attempt with a short timeout, and at most half the database
pool's connections wait on such calls at once, so a slow upstream cannot take the connections
that buckets on other profiles need.

A bucket's quota is checked as the row of a new key commits: a refused write's object is
deleted upstream again. A write over an existing row has replaced that object upstream before
its row commits, which no refusal could undo: it is checked before its body only.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from dataclasses import replace
from datetime import UTC, datetime
from typing import TypeVar

import asyncpg

from gateway.errors import (
    KeyNotStorableError,
    ObjectChangedError,
    QuotaExceededError,
    UploadGoneError,
)
from gateway.meta import object_rows, uploads
from gateway.meta.buckets import Bucket
from gateway.meta.object_rows import (
    DEFAULT_CONTENT_TYPE,
    Chunk,
    Expected,
    ObjectMetadata,
    ObjectRecord,
)
from gateway.meta.uploads import Part, Upload
from gateway.objects.backend import (
    Completion,
    IncomingBody,
    NewObject,
    ObjectBackend,
    Resources,
    WriteTerms,
    assembled,
)
from gateway.objects.reading import Segment
from gateway.s3 import errors
from gateway.s3.conditions import Conditions
from gateway.s3.multipart_rules import MAX_PART_NUMBER
from gateway.storage import hash_off_loop
from gateway.storage.upstream import (
    ObjectAttributes,
    UpstreamChangedError,
    UpstreamMissingError,
    UpstreamObject,
    UpstreamStore,
    UpstreamWriter,
)

T = TypeVar("T")


def attributes(content_type: str, metadata: ObjectMetadata) -> ObjectAttributes:
    return ObjectAttributes(
        content_type=content_type, user_metadata=metadata.user, headers=metadata.headers
    )


def record_from_upstream(
    bucket: str, key: str, profile: str, found: UpstreamObject
) -> ObjectRecord:
    """The row of an object another tool wrote upstream, as the upstream describes it."""
    return ObjectRecord(
        bucket=bucket,
        key=key,
        version_id=uuid.uuid4(),
        size=found.size,
        etag=found.etag,
        content_type=found.content_type or DEFAULT_CONTENT_TYPE,
        profile=profile,
        storage_key=found.key,
        last_modified=found.last_modified.astimezone(UTC),
        metadata=ObjectMetadata(user=found.user_metadata, headers=found.headers),
        storage_etag=found.etag,
    )


def _refused(cond: Conditions | None) -> errors.S3Error:
    """The client's own condition failed upstream."""
    failed = "If-None-Match" if cond is not None and cond.if_none_match else "If-Match"
    return errors.PreconditionFailed(Condition=failed)


async def _hashed(chunks: AsyncIterator[bytes], body: IncomingBody) -> AsyncIterator[bytes]:
    """``chunks`` passed on as they come, hashed off the loop a batch at a time."""
    async for chunk in chunks:
        await hash_off_loop(body.digests.update, chunk)
        yield chunk


class UpstreamBackend(ObjectBackend):
    trusts_recent_buckets = False
    seals_customer_keys = False

    def __init__(
        self, profile: str, resources: Resources, store: UpstreamStore, locks: asyncio.Semaphore
    ) -> None:
        super().__init__(profile, resources)
        self.upstream = store
        # Shared by every upstream profile: the connections that may wait on an upstream call
        # with a key locked.
        self._locks = locks

    @contextlib.asynccontextmanager
    async def _key_locked(self, bucket: str, key: str) -> AsyncIterator[asyncpg.Connection]:
        async with self._locks, self.pool.acquire() as conn, conn.transaction():
            await object_rows.lock_key(conn, bucket, key)
            yield conn

    async def _if_in_place(
        self, record: ObjectRecord, commit: Callable[[asyncpg.Connection], Awaitable[T]]
    ) -> T | None:
        """``commit`` with the key locked, if the upstream still holds the version just
        written; None when a later write has replaced it there (that writer's row is the one
        to keep)."""
        assert record.storage_key is not None
        async with self._key_locked(record.bucket, record.key) as conn:
            found = await self.upstream.head(record.storage_key, locked=True)
            if found is None or found.etag != record.storage_etag:
                return None
            return await commit(conn)

    async def _commit_confirmed(
        self, record: ObjectRecord, terms: WriteTerms, new_key: bool
    ) -> None:
        """Commit ``record`` if the upstream still holds it; ``new_key``: no row described
        the key when the write began, so its quota is checked (see the module's doc)."""

        async def commit(conn: asyncpg.Connection) -> bool:
            return await object_rows.commit_object(
                conn, record, terms.check(record.key), eager=terms.eager, quota=new_key
            )

        try:
            await self._if_in_place(record, commit)
        except QuotaExceededError:
            await self._withdraw(record)
            raise

    async def _withdraw(self, record: ObjectRecord) -> None:
        """Delete the object a refused write left upstream, unless another write has replaced
        it there since."""
        assert record.storage_key is not None
        async with self._key_locked(record.bucket, record.key):
            found = await self.upstream.head(record.storage_key, locked=True)
            if found is not None and found.etag == record.storage_etag:
                await self.upstream.delete(record.storage_key, locked=True)

    # Reading.

    async def adopt(self, bucket: Bucket, key: str) -> ObjectRecord | None:
        try:
            upstream_key = self.upstream.object_key(bucket.name, key)
        except KeyNotStorableError:
            # A key no client object can have (reserved, or too long once prefixed).
            return None
        # With the key locked, as writes and deletes commit: a DeleteObject cannot come between
        # the HEAD and the row (which would bring a deleted object back into listings).
        async with self._key_locked(bucket.name, key) as conn:
            found = await self.upstream.head(upstream_key, locked=True)
            if found is None:
                return None
            await object_rows.adopt_object(
                conn, record_from_upstream(bucket.name, key, self.profile, found)
            )
        return await object_rows.get_object(self.pool, bucket.name, key)

    async def reconcile(self, record: ObjectRecord) -> None:
        if record.storage_key is None:
            return
        found = await self.upstream.head(record.storage_key)
        if found is not None and found.etag == record.storage_etag:
            return
        if found is None and not await self.upstream.is_gone(record.storage_key):
            # A HeadObject 404 while the listing still shows the key: try again later.
            raise ObjectChangedError()
        current = None
        if found is not None:
            current = record_from_upstream(record.bucket, record.key, self.profile, found)
        async with self.pool.acquire() as conn:
            await object_rows.replace_version(conn, record, current)

    # Versions. The current version stays in place under its own key, where an overwrite or
    # a delete destroys it upstream; one that must outlive that (versioning) is first copied
    # server-side to a generated key, listed in the intent log before the copy, and its row
    # pointed there. The copy is a blob like a derivative: retired through the log.

    async def _preserved(
        self, bucket: str, key: str, null_replaced: bool, expected: uuid.UUID | None = None
    ) -> ObjectRecord | None:
        """The current version of ``key``, its bytes moved out of the way of a write or delete
        that keeps it as a non-current version (all but a null version ``null_replaced``);
        ``expected``: only if it is that version (a delete of it alone moves nothing else)."""
        current = await object_rows.get_object(self.pool, bucket, key)
        if (
            current is None
            or (expected is not None and current.version_id != expected)
            or current.storage_key is None
            or current.storage_etag is None
            or (null_replaced and current.null_version)
        ):
            return current
        blob_key = await self.resources.reserve.take(self.profile)
        try:
            await self.upstream.copy(
                current.storage_key,
                current.storage_etag,
                current.size,
                blob_key,
                attributes(current.content_type, current.metadata),
            )
        except (UpstreamChangedError, UpstreamMissingError):
            # Another tool changed it upstream: recorded as it is now, then tried again.
            await self.reconcile(current)
            raise ObjectChangedError() from None
        async with self.pool.acquire() as conn:
            # Unclaimed (the row moved on meanwhile), the copy stays listed and is collected.
            await object_rows.relocate(conn, current, blob_key)
        return await object_rows.get_object(self.pool, bucket, key)

    async def delete_key(
        self, bucket: str, key: str, null_marker: bool, expected: uuid.UUID | None = None
    ) -> uuid.UUID | None:
        await self._preserved(bucket, key, null_marker, expected)
        upstream_key = self.upstream.object_key(bucket, key)
        marker = uuid.uuid4()
        async with self._key_locked(bucket, key) as conn:
            if expected is not None and not await object_rows.is_current(
                conn, bucket, key, expected
            ):
                # Replaced meanwhile: a copy _preserved made stays listed and is collected.
                return None
            # No row names the object in place any more unless it is retired here: either way
            # it goes, so adoption can never bring a deleted key back.
            await self.upstream.delete(upstream_key, locked=True)
            await object_rows.delete_key(conn, bucket, key, marker, null_marker)
        return marker

    async def delete_version(self, bucket: str, key: str, version_id: uuid.UUID | None) -> str:
        async with self._key_locked(bucket, key) as conn:
            current = await object_rows.get_object(conn, bucket, key)
            named = current is not None and (
                current.null_version
                if version_id is None
                else current.version_id == version_id and not current.null_version
            )
            if named and current is not None and current.storage_etag is not None:
                assert current.storage_key is not None
                await self.upstream.delete(current.storage_key, locked=True)
            return await object_rows.delete_version(conn, bucket, key, version_id)

    # Objects.

    async def put(self, new: NewObject, body: IncomingBody, terms: WriteTerms) -> ObjectRecord:
        upstream_key = self.upstream.object_key(new.bucket, new.key)
        current = await self._preserved(new.bucket, new.key, new.null_version)
        check = terms.check(new.key)
        if check is not None:
            # Fast refusal; checked again when the row commits.
            check(current.etag if current else None)
        writer = await self.upstream.create(
            upstream_key, body.digests.update, attributes(new.content_type, new.metadata)
        )
        try:
            async for chunk in body:
                await writer.write(chunk)
            await writer.flush()
            checksums = body.verify()
            in_place = await self._commit_upstream(writer, body, current, terms.conditions)
        except BaseException:
            await writer.abort()
            raise
        assert writer.etag is not None
        metadata = new.metadata.with_checksums(checksums)
        record = replace(new, metadata=metadata).record(
            self.profile,
            writer.size,
            body.digests.etag,
            storage_key=upstream_key,
            storage_etag=writer.etag,
        )
        expected = Expected(current.version_id if current else None)
        async with self.pool.acquire() as conn:
            # In place over the version ``current`` describes: not a new key.
            if in_place and await object_rows.commit_object(
                conn, record, check, eager=terms.eager, expected=expected, quota=False
            ):
                return record
        await self._commit_confirmed(record, terms, new_key=current is None)
        return record

    async def _commit_upstream(
        self,
        writer: UpstreamWriter,
        body: IncomingBody,
        current: ObjectRecord | None,
        cond: Conditions | None,
    ) -> bool:
        """Make the written body visible upstream; True if it replaced exactly the version
        ``current`` describes (so the row can be committed without asking the upstream)."""
        md5 = body.digests.md5.digest()
        if current is None or not current.storage_etag or writer.is_multipart:
            # No version to pin the write to: a new key (a DeleteObject may come between the
            # upstream write and the row, which "no row" cannot tell), a row from another
            # layout, or a multipart body (a refused conditional completion would cost the
            # whole upload): written as asked, then confirmed.
            try:
                await writer.commit(md5, _client_conditions(cond, current))
            except (UpstreamChangedError, UpstreamMissingError):
                if cond is None:
                    raise
                raise _refused(cond) from None
            return False
        in_place = {"IfMatch": current.storage_etag}
        if cond is not None and cond.if_none_match is not None:
            in_place = {"IfNoneMatch": "*"}
        try:
            await writer.commit(md5, in_place)
            return True
        except (UpstreamChangedError, UpstreamMissingError):
            if cond is not None:
                # The client's condition was checked against the row; the upstream is the truth.
                raise _refused(cond) from None
        # The upstream holds another version than the row says (a concurrent writer, or
        # another tool): written unconditionally, then confirmed before the row commits.
        await writer.commit(md5, {})
        return False

    async def copy(
        self,
        new: NewObject,
        source: ObjectRecord,
        segments: Sequence[Segment],
        terms: WriteTerms,
    ) -> ObjectRecord:
        if source.profile != self.profile or source.storage_key is None or not source.storage_etag:
            # From another profile: the bytes pass through the gateway.
            return await super().copy(new, source, segments, terms)
        upstream_key = self.upstream.object_key(new.bucket, new.key)
        await self.precheck(new, terms)
        new_key = await self._preserved(new.bucket, new.key, new.null_version) is None
        try:
            storage_etag = await self.upstream.copy(
                source.storage_key,
                source.storage_etag,
                source.size,
                upstream_key,
                attributes(new.content_type, new.metadata),
            )
        except (UpstreamChangedError, UpstreamMissingError):
            await self.reconcile(source)
            raise ObjectChangedError() from None
        # The same bytes: a single-part source's ETag (its MD5) and checksums hold for the copy.
        single = source.parts_count is None and "-" not in source.etag
        metadata = new.metadata.with_checksums(source.checksums if single else {})
        record = replace(new, metadata=metadata).record(
            self.profile,
            source.size,
            source.etag if single else storage_etag,
            storage_key=upstream_key,
            storage_etag=storage_etag,
        )
        await self._commit_confirmed(record, terms, new_key)
        return record

    async def delete(self, bucket: str, key: str, expected: uuid.UUID | None = None) -> bool:
        """Delete the object upstream and its row, with the key locked so that no write of it
        can commit in between (a write confirmed after this finds its object gone)."""
        upstream_key = self.upstream.object_key(bucket, key)
        async with self._key_locked(bucket, key) as conn:
            if expected is not None and (
                not await object_rows.is_current(conn, bucket, key, expected)
                or await object_rows.versioned(conn, bucket)
            ):
                # Replaced since, or versioned since (a later pass keeps it as a version).
                return False
            await self.upstream.delete(upstream_key, locked=True)
            return await object_rows.delete_object(conn, bucket, key)

    # Multipart uploads: mapped onto the upstream's own, so a completion is native there.

    async def create_upload(self, upload: Upload) -> Upload:
        upstream_key = self.upstream.object_key(upload.bucket, upload.key)
        storage_upload_id = await self.upstream.create_upload(
            upstream_key, attributes(upload.content_type, upload.metadata)
        )
        upload = replace(
            upload,
            profile=self.profile,
            storage_key=upstream_key,
            storage_upload_id=storage_upload_id,
        )
        try:
            await uploads.create_upload(self.pool, upload)
        except BaseException:
            await self.upstream.abort_upload(upstream_key, storage_upload_id)
            raise
        return upload

    def _target(self, upload: Upload) -> tuple[str, str]:
        """(upstream key, upstream upload id) of an upload kept here."""
        if upload.storage_key is None or upload.storage_upload_id is None:
            # Created while the bucket was on another profile.
            raise UploadGoneError(str(upload.upload_id))
        return upload.storage_key, upload.storage_upload_id

    async def upload_part(self, upload: Upload, part_number: int, body: IncomingBody) -> Part:
        upstream_key, storage_upload_id = self._target(upload)
        if body.length is None:
            raise errors.MissingContentLength()
        try:
            storage_etag = await self.upstream.upload_part(
                upstream_key,
                storage_upload_id,
                part_number,
                _hashed(aiter(body), body),
                body.length,
                body.content_md5,
            )
        except UpstreamMissingError:
            # Aborted (or completed) meanwhile.
            raise UploadGoneError(str(upload.upload_id)) from None
        part = Part(
            part_number=part_number,
            size=body.length,
            etag=body.digests.etag,
            profile=self.profile,
            storage_key=upstream_key,
            last_modified=datetime.now(UTC),
            checksums=body.verify(),
            storage_etag=storage_etag,
        )
        await self._record_part(upload, part)
        return part

    async def _record_part(self, upload: Upload, part: Part) -> None:
        async with self.pool.acquire() as conn:
            await uploads.commit_part(conn, upload.bucket, upload.key, upload.upload_id, part)

    async def upload_part_copy(
        self, upload: Upload, part_number: int, source: ObjectRecord, segments: Sequence[Segment]
    ) -> Part:
        """Server-side from the same profile (when no checksum must be computed over the
        bytes), else streamed through the gateway."""
        if (
            source.profile != self.profile
            or source.storage_etag is None
            or upload.checksum_algorithm is not None
            or not segments
        ):
            return await super().upload_part_copy(upload, part_number, source, segments)
        upstream_key, storage_upload_id = self._target(upload)
        start = segments[0].offset
        length = sum(segment.length for segment in segments)
        try:
            etag = await self.upstream.upload_part_copy(
                upstream_key,
                storage_upload_id,
                part_number,
                segments[0].storage_key,
                source.storage_etag,
                start,
                start + length - 1,
            )
        except (UpstreamChangedError, UpstreamMissingError):
            await self.reconcile(source)
            raise ObjectChangedError() from None
        part = Part(
            part_number=part_number,
            size=length,
            etag=etag,
            profile=self.profile,
            storage_key=upstream_key,
            last_modified=datetime.now(UTC),
            storage_etag=etag,
        )
        await self._record_part(upload, part)
        return part

    async def complete_upload(self, upload: Upload, completion: Completion) -> ObjectRecord:
        upstream_key, storage_upload_id = self._target(upload)
        terms = completion.terms
        check = terms.check(upload.key)
        version_id, now = uuid.uuid4(), datetime.now(UTC)
        # Checked before the upstream completes, and again with the upload locked.
        parts = await uploads.list_parts(self.pool, upload.upload_id, 0, MAX_PART_NUMBER)
        planned, chunks = assembled(upload, parts, completion, self.profile, version_id, now)
        current = await self._preserved(upload.bucket, upload.key, completion.null_version)
        if check is not None:
            check(current.etag if current else None)
        try:
            storage_etag = await self.upstream.complete_upload(
                upstream_key,
                storage_upload_id,
                [(chunk.part_number, chunk.storage_etag or "") for chunk in chunks],
                _client_conditions(terms.conditions, current),
            )
        except UpstreamChangedError:
            raise _refused(terms.conditions) from None
        except UpstreamMissingError:
            # Gone upstream: aborted, or completed by an attempt whose answer was lost (the
            # call is retried), in which case the upstream holds exactly this object.
            found = await self.upstream.head(upstream_key)
            if found is None or found.etag != planned.etag:
                raise UploadGoneError(str(upload.upload_id)) from None
            storage_etag = found.etag

        def assemble(locked: Upload, parts: list[Part]) -> tuple[ObjectRecord, list[Chunk]]:
            return assembled(
                locked,
                parts,
                completion,
                self.profile,
                version_id,
                now,
                storage_key=upstream_key,
                storage_etag=storage_etag,
            )

        async def commit(conn: asyncpg.Connection) -> ObjectRecord:
            return await uploads.complete_upload(
                conn,
                upload.bucket,
                upload.key,
                upload.upload_id,
                assemble,
                check,
                terms.eager,
                quota=current is None,
            )

        confirmed = replace(planned, storage_key=upstream_key, storage_etag=storage_etag)
        try:
            record = await self._if_in_place(confirmed, commit)
        except QuotaExceededError:
            # The upload is complete upstream: its object goes again, and its rows with it.
            await self._withdraw(confirmed)
            async with self.pool.acquire() as conn:
                await uploads.abort_upload(conn, upload.bucket, upload.key, upload.upload_id)
            raise
        if record is None:
            # Replaced upstream by a later write already: this completion is superseded, and
            # the upload is done there; its rows go.
            async with self.pool.acquire() as conn:
                await uploads.abort_upload(conn, upload.bucket, upload.key, upload.upload_id)
            return confirmed
        return record

    async def release_upload(self, upload: Upload) -> None:
        # Called before the rows go: an upstream that cannot be reached leaves the upload to
        # retry.
        if upload.storage_key is not None and upload.storage_upload_id is not None:
            await self.upstream.abort_upload(upload.storage_key, upload.storage_upload_id)


def _client_conditions(cond: Conditions | None, current: ObjectRecord | None) -> Mapping[str, str]:
    """The request's If-Match / If-None-Match as the upstream must check them: on the object
    the upstream holds, so a conditional write stays atomic although it lands there first."""
    if cond is None:
        return {}
    if cond.if_none_match is not None:
        return {"IfNoneMatch": "*"}
    if cond.if_match is not None and current is not None and current.storage_etag:
        return {"IfMatch": current.storage_etag}
    return {}
