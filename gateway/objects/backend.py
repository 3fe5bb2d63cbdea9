"""The interface every storage profile's backend implements: an operation per S3 object
operation, taking parsed requests and returning committed rows.

A backend owns the order of storage writes and row commits for its kind of storage; metadata
(gateway.meta) only ever runs database statements. A transform (encryption, chunking) is a
backend wrapping another.
"""

from __future__ import annotations

import uuid
from abc import ABC, abstractmethod
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Protocol

import asyncpg

from gateway.errors import ObjectChangedError
from gateway.meta import object_rows, uploads
from gateway.meta.buckets import Bucket
from gateway.meta.garbage import KeyReserve
from gateway.meta.object_rows import Chunk, ObjectMetadata, ObjectRecord
from gateway.meta.uploads import Part, Upload
from gateway.objects import reading
from gateway.objects.reading import Segment
from gateway.s3 import multipart_rules
from gateway.s3.checksums import BodyDigests
from gateway.s3.conditions import Conditions, WriteCheck, write_check
from gateway.s3.xmlbody import CompletedPart
from gateway.storage import BlobStore


@dataclass(frozen=True)
class Resources:
    """What backends share: the database pool, every profile's blob store (a copy may read
    from another profile), and the reserve of storage keys listed in the intent log."""

    pool: asyncpg.Pool
    stores: Mapping[str, BlobStore]
    reserve: KeyReserve
    garbage_grace_seconds: int
    # Objects up to this size are kept in their rows (0: never).
    inline_max_size: int = 0


class IncomingBody(Protocol):
    """The bytes of a write with their digests (a request body, or a copy's source): iterate
    it once, then ``verify`` says whether every digest matched and returns the checksums to
    store."""

    # The size announced before the first byte, if any.
    length: int | None
    # The Content-MD5 the client sent, for a storage that checks it too.
    content_md5: bytes | None
    digests: BodyDigests

    def __aiter__(self) -> AsyncIterator[bytes]: ...

    def verify(self) -> dict[str, str]: ...


class CopiedBody:
    """The bytes of a copy source's segments, hashed as they are read: the copy's MD5 and,
    with ``checksum_algorithm``, its checksum."""

    def __init__(
        self,
        stores: Mapping[str, BlobStore],
        segments: Sequence[Segment],
        checksum_algorithm: str | None,
    ) -> None:
        self._stores = stores
        self._segments = segments
        self.length: int | None = sum(segment.length for segment in segments)
        self.content_md5: bytes | None = None
        self.digests = BodyDigests(sha256=False, checksum_algorithm=checksum_algorithm)

    def __aiter__(self) -> AsyncIterator[bytes]:
        return reading.read_stored(self._stores, self._segments)

    def verify(self) -> dict[str, str]:
        digests = self.digests
        if digests.checksum is None or digests.checksum_algorithm is None:
            return {}
        return {digests.checksum_algorithm: digests.checksum.digest_b64()}


@dataclass(frozen=True)
class NewObject:
    """An object about to be written: where, and what it carries besides its bytes."""

    bucket: str
    key: str
    content_type: str
    metadata: ObjectMetadata = field(default_factory=ObjectMetadata)
    # Whether the object becomes the key's "null" version (the bucket's versioning is not
    # enabled), which replaces the null version; any other keeps the version it replaces.
    null_version: bool = True

    def record(
        self,
        profile: str,
        size: int,
        etag: str,
        storage_key: str | None = None,
        storage_etag: str | None = None,
        inline_data: bytes | None = None,
    ) -> ObjectRecord:
        """The row of this object once written (a new version)."""
        return ObjectRecord(
            bucket=self.bucket,
            key=self.key,
            version_id=uuid.uuid4(),
            size=size,
            etag=etag,
            content_type=self.content_type,
            profile=profile,
            storage_key=storage_key,
            last_modified=datetime.now(UTC),
            metadata=self.metadata,
            storage_etag=storage_etag,
            inline_data=inline_data,
            null_version=self.null_version,
        )


@dataclass(frozen=True)
class WriteTerms:
    """How a write may replace the object under its key."""

    # The request's If-Match / If-None-Match; None for a plain write.
    conditions: Conditions | None = None
    # Presets to render as soon as the object is committed.
    eager: Sequence[str] = ()

    def check(self, key: str) -> WriteCheck | None:
        return write_check(self.conditions, key)


@dataclass(frozen=True)
class Completion:
    """A CompleteMultipartUpload as the client asked for it."""

    requested: Sequence[CompletedPart]
    # x-amz-checksum-* the client expects of the whole object.
    declared_checksums: Mapping[str, str]
    terms: WriteTerms
    # As NewObject.null_version.
    null_version: bool = True


class ObjectBackend(ABC):
    """The objects of one storage profile."""

    # Whether a write may start from a bucket this process looked up a moment ago: its row
    # commit finds a bucket deleted meanwhile and leaves nothing behind. Not where bytes land
    # in place before the row commits (upstream): a write there looks the bucket up afresh.
    trusts_recent_buckets = True
    # Whether a write may be sealed with a client's own key (SSE-C): only where the gateway
    # writes blobs through the profile's store.
    seals_customer_keys = True

    def __init__(self, profile: str, resources: Resources) -> None:
        self.profile = profile
        self.resources = resources
        self.pool = resources.pool
        self.store = resources.stores[profile]
        # Objects up to this size are kept in their rows (0: never).
        self.inline_max_size = resources.inline_max_size

    async def precheck(self, new: NewObject, terms: WriteTerms) -> ObjectRecord | None:
        """The object a conditional write replaces, checked before any byte moves so that a
        refusal is fast (the check runs again when the row commits); None, without a look,
        for a plain write."""
        check = terms.check(new.key)
        if check is None:
            return None
        current = await object_rows.get_object(self.pool, new.bucket, new.key)
        check(current.etag if current else None)
        return current

    # Reading.

    async def segments(self, record: ObjectRecord, start: int, length: int) -> list[Segment]:
        """The segments of bytes [start, start + length) of ``record``'s version;
        ObjectChangedError if it is replaced meanwhile (after a few attempts)."""
        found = await reading.object_segments(self.pool, record, start, length)
        if found is None:
            raise ObjectChangedError()
        return found

    async def adopt(self, bucket: Bucket, key: str) -> ObjectRecord | None:
        """The object ``key`` if the storage holds it though no row describes it (recorded
        now); None where storage cannot hold objects no row describes."""
        return None

    async def reconcile(self, record: ObjectRecord) -> None:
        """``record``'s bytes were found changed or gone in storage: record what is there now.
        Only storage that other tools may write can change under a row."""
        return None

    # Objects.

    @abstractmethod
    async def put(self, new: NewObject, body: IncomingBody, terms: WriteTerms) -> ObjectRecord:
        """Store ``body`` as the new version of ``new``; the committed row."""

    async def copy(
        self,
        new: NewObject,
        source: ObjectRecord,
        segments: Sequence[Segment],
        terms: WriteTerms,
    ) -> ObjectRecord:
        """Store the bytes of ``source``'s ``segments`` as ``new`` (a single-part object whose
        ETag is their MD5, keeping the source's checksum algorithm)."""
        algorithm = next(iter(source.checksums), None)
        body = CopiedBody(self.resources.stores, segments, algorithm)
        return await self.put(new, body, terms)

    @abstractmethod
    async def delete(self, bucket: str, key: str, expected: uuid.UUID | None = None) -> bool:
        """Delete the object (its blobs go to the intent log); a missing one is no error.
        ``expected``: only while that version is the current one. False: nothing deleted."""

    async def delete_key(
        self, bucket: str, key: str, null_marker: bool, expected: uuid.UUID | None = None
    ) -> uuid.UUID | None:
        """DeleteObject on a versioned bucket: the current version becomes non-current (or,
        both null, is retired) and a delete marker, the null version with ``null_marker``,
        the key's newest version; the marker's id. ``expected``: only while that version is
        the current one (None, nothing done, when it is not)."""
        marker = uuid.uuid4()
        async with self.pool.acquire() as conn, conn.transaction():
            if expected is not None and not await object_rows.is_current(
                conn, bucket, key, expected
            ):
                return None
            await object_rows.delete_key(conn, bucket, key, marker, null_marker)
        return marker

    async def delete_version(self, bucket: str, key: str, version_id: uuid.UUID | None) -> str:
        """Remove one version for good (None: the null version): 'none', 'marker' or
        'object' (see object_rows.delete_version)."""
        async with self.pool.acquire() as conn:
            return await object_rows.delete_version(conn, bucket, key, version_id)

    # Multipart uploads.

    async def create_upload(self, upload: Upload) -> Upload:
        await uploads.create_upload(self.pool, upload)
        return upload

    @abstractmethod
    async def upload_part(self, upload: Upload, part_number: int, body: IncomingBody) -> Part:
        """Store one part; the recorded part (replacing any of the same number)."""

    async def upload_part_copy(
        self, upload: Upload, part_number: int, source: ObjectRecord, segments: Sequence[Segment]
    ) -> Part:
        body = CopiedBody(self.resources.stores, segments, upload.checksum_algorithm)
        return await self.upload_part(upload, part_number, body)

    @abstractmethod
    async def complete_upload(self, upload: Upload, completion: Completion) -> ObjectRecord:
        """Make the upload the object under its key; the committed row."""

    async def abort_upload(self, upload: Upload) -> None:
        await self.release_upload(upload)
        async with self.pool.acquire() as conn:
            await uploads.abort_upload(conn, upload.bucket, upload.key, upload.upload_id)

    async def release_upload(self, upload: Upload) -> None:
        """Release what an aborted upload holds outside its rows (part blobs are listed in
        the intent log by the rows' removal, so there is nothing here by default)."""
        return None


def assembled(
    upload: Upload,
    parts: Sequence[Part],
    completion: Completion,
    profile: str,
    version_id: uuid.UUID,
    now: datetime,
    storage_key: str | None = None,
    storage_etag: str | None = None,
) -> tuple[ObjectRecord, list[Chunk]]:
    """The object an upload's ``parts`` make as ``completion`` chooses them, and its chunks."""
    by_number = {part.part_number: part for part in parts}
    assembly = multipart_rules.assemble(
        completion.requested,
        {
            part.part_number: multipart_rules.UploadedPart(
                part.part_number, part.etag, part.size, part.checksums
            )
            for part in parts
        },
        upload.checksum_algorithm,
        upload.checksum_type,
        completion.declared_checksums,
    )
    chunks = uploads.chunks_from_parts([by_number[part.part_number] for part in assembly.parts])
    metadata = replace(
        upload.metadata,
        checksums=assembly.checksums,
        checksum_type=assembly.checksum_type,
        upload_id=str(upload.upload_id),
    )
    record = ObjectRecord(
        bucket=upload.bucket,
        key=upload.key,
        version_id=version_id,
        size=assembly.size,
        etag=assembly.etag,
        content_type=upload.content_type,
        profile=profile,
        storage_key=storage_key,
        last_modified=now,
        metadata=metadata,
        parts_count=len(chunks),
        storage_etag=storage_etag,
        null_version=completion.null_version,
    )
    return record, chunks
