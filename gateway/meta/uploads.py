"""Queries on the uploads and upload_parts tables: multipart upload state.

Every statement that changes an upload's parts, completes it or aborts it first locks the
upload's row, so they serialise per upload: a part cannot land in an upload that is being
completed or aborted, and two uploads of one part number cannot both keep their blob.
"""

from __future__ import annotations

import os
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime

import asyncpg

from gateway.errors import BucketGoneError, UploadGoneError
from gateway.meta import garbage, quotas, rollup
from gateway.meta.garbage import BlobLostError
from gateway.meta.object_rows import (
    Chunk,
    ObjectMetadata,
    ObjectRecord,
    commit_object,
    prefix_upper_bound,
)


@dataclass(frozen=True)
class Upload:
    upload_id: uuid.UUID
    bucket: str
    key: str
    initiated: datetime
    content_type: str
    # What the completed object will carry (its checksums are computed at completion).
    metadata: ObjectMetadata
    checksum_algorithm: str | None
    checksum_type: str | None
    owner: str | None
    # For an upload kept upstream: the profile, the upstream key and the upstream upload id.
    profile: str | None = None
    storage_key: str | None = None
    storage_upload_id: str | None = None


@dataclass(frozen=True)
class Part:
    part_number: int
    size: int
    etag: str
    profile: str
    storage_key: str
    last_modified: datetime
    checksums: dict[str, str] = field(default_factory=dict)
    # A part of an upstream multipart upload: the upstream's ETag of it. Such a part has no
    # blob of its own; the upstream upload holds it.
    storage_etag: str | None = None


_UPLOAD_COLUMNS = (
    "upload_id, bucket, key, initiated, content_type, metadata, checksum_algorithm,"
    " checksum_type, owner, profile, storage_key, storage_upload_id"
)
_PART_COLUMNS = (
    "part_number, size, etag, profile, storage_key, last_modified, checksums, storage_etag"
)

# Deletes an upload's part rows (all, or those not in $2) and lists their blobs as garbage.
_DISCARD_PARTS = (
    "WITH gone AS (DELETE FROM upload_parts WHERE upload_id = $1"
    " AND NOT (part_number = ANY($2::int[])) RETURNING profile, storage_key, storage_etag)"
    " INSERT INTO garbage (profile, storage_key) SELECT profile, storage_key FROM gone"
    " WHERE storage_etag IS NULL ON CONFLICT DO NOTHING"
)


def new_upload_id() -> uuid.UUID:
    """A UUIDv7 (RFC 9562 §5.7): ids sort in creation order, as S3 lists uploads of a key."""
    millis = time.time_ns() // 1_000_000
    rand = int.from_bytes(os.urandom(10), "big")
    value = (millis & (2**48 - 1)) << 80
    value |= 0x7 << 76 | (rand >> 62 & 0xFFF) << 64
    value |= 0b10 << 62 | rand & (2**62 - 1)
    return uuid.UUID(int=value)


def parse_upload_id(value: str) -> uuid.UUID | None:
    """The upload id a client sent, if it is one this gateway could have issued."""
    try:
        parsed = uuid.UUID(value)
    except ValueError:
        return None
    return parsed if str(parsed) == value else None


def _upload(row: asyncpg.Record) -> Upload:
    values = dict(row)
    return Upload(**{**values, "metadata": ObjectMetadata.from_json(values["metadata"])})


def _part(row: asyncpg.Record) -> Part:
    return Part(**dict(row))


async def create_upload(conn: asyncpg.Connection | asyncpg.Pool, upload: Upload) -> None:
    """Record a new upload; BucketGoneError if its bucket was deleted meanwhile."""
    try:
        await _insert_upload(conn, upload)
    except asyncpg.ForeignKeyViolationError as e:
        if e.constraint_name != "uploads_bucket_fkey":
            raise
        raise BucketGoneError(upload.bucket) from None


async def _insert_upload(conn: asyncpg.Connection | asyncpg.Pool, upload: Upload) -> None:
    await conn.execute(
        f"INSERT INTO uploads ({_UPLOAD_COLUMNS})"
        " VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)",
        upload.upload_id,
        upload.bucket,
        upload.key,
        upload.initiated,
        upload.content_type,
        upload.metadata.to_json(),
        upload.checksum_algorithm,
        upload.checksum_type,
        upload.owner,
        upload.profile,
        upload.storage_key,
        upload.storage_upload_id,
    )


async def get_upload(
    conn: asyncpg.Connection | asyncpg.Pool, bucket: str, key: str, upload_id: uuid.UUID
) -> Upload | None:
    row = await conn.fetchrow(
        f"SELECT {_UPLOAD_COLUMNS} FROM uploads WHERE upload_id = $1 AND bucket = $2 AND key = $3",
        upload_id,
        bucket,
        key,
    )
    return _upload(row) if row else None


async def _lock_upload(
    conn: asyncpg.Connection, bucket: str, key: str, upload_id: uuid.UUID
) -> Upload | None:
    row = await conn.fetchrow(
        f"SELECT {_UPLOAD_COLUMNS} FROM uploads"
        " WHERE upload_id = $1 AND bucket = $2 AND key = $3 FOR NO KEY UPDATE",
        upload_id,
        bucket,
        key,
    )
    return _upload(row) if row else None


async def commit_part(
    conn: asyncpg.Connection, bucket: str, key: str, upload_id: uuid.UUID, part: Part
) -> None:
    """Record an uploaded part; UploadGoneError (blob left in the garbage log) if the upload
    is gone, QuotaExceededError (likewise) if its bytes would pass the bucket's quota.

    The part's blob leaves the garbage log; the blob of a part it replaces enters it.
    """
    async with conn.transaction():
        if await _lock_upload(conn, bucket, key, upload_id) is None:
            raise UploadGoneError(str(upload_id))
        if part.storage_etag is None and not await garbage.claim(
            conn, part.profile, part.storage_key
        ):
            raise BlobLostError(part.storage_key)
        old = await conn.fetchrow(
            "SELECT size, profile, storage_key, storage_etag FROM upload_parts"
            " WHERE upload_id = $1 AND part_number = $2",
            upload_id,
            part.part_number,
        )
        await conn.execute(
            f"INSERT INTO upload_parts (upload_id, {_PART_COLUMNS})"
            " VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)"
            " ON CONFLICT (upload_id, part_number) DO UPDATE SET size = EXCLUDED.size,"
            " etag = EXCLUDED.etag, profile = EXCLUDED.profile,"
            " storage_key = EXCLUDED.storage_key, last_modified = EXCLUDED.last_modified,"
            " checksums = EXCLUDED.checksums, storage_etag = EXCLUDED.storage_etag",
            upload_id,
            part.part_number,
            part.size,
            part.etag,
            part.profile,
            part.storage_key,
            part.last_modified,
            part.checksums,
            part.storage_etag,
        )
        if old is not None and old["storage_etag"] is None:
            await garbage.add(conn, old["profile"], old["storage_key"])
        grown = part.size - (old["size"] if old is not None else 0)
        try:
            await conn.execute("SELECT gateway_check_quota($1, 0, $2)", bucket, grown)
        except asyncpg.PostgresError as exc:
            if not quotas.refused(exc):
                raise
            raise quotas.exceeded(exc, bucket) from None


async def list_parts(
    conn: asyncpg.Connection | asyncpg.Pool, upload_id: uuid.UUID, after: int, limit: int
) -> list[Part]:
    rows = await conn.fetch(
        f"SELECT {_PART_COLUMNS} FROM upload_parts"
        " WHERE upload_id = $1 AND part_number > $2 ORDER BY part_number LIMIT $3",
        upload_id,
        after,
        limit,
    )
    return [_part(row) for row in rows]


# Given the upload and all its parts, the object to commit and its chunks; raises to refuse.
Assemble = Callable[[Upload, list[Part]], tuple[ObjectRecord, list[Chunk]]]


async def complete_upload(
    conn: asyncpg.Connection,
    bucket: str,
    key: str,
    upload_id: uuid.UUID,
    assemble: Assemble,
    check_current: Callable[[str | None], None] | None = None,
    eager: Sequence[str] = (),
    quota: bool = True,
) -> ObjectRecord:
    """Turn an upload into the live object in one transaction; UploadGoneError if there is
    no upload. ``quota``: as for commit_object.

    The chosen parts' blobs pass from upload_parts rows to object_chunks rows without ever
    being unreferenced; parts left out of the object go to the garbage log. ``eager``: as for
    commit_object. ``assemble`` runs with the upload locked, so the parts it is given cannot
    change until the object is committed.
    """
    async with conn.transaction():
        upload = await _lock_upload(conn, bucket, key, upload_id)
        if upload is None:
            raise UploadGoneError(str(upload_id))
        rows = await conn.fetch(
            f"SELECT {_PART_COLUMNS} FROM upload_parts WHERE upload_id = $1", upload_id
        )
        record, chunks = assemble(upload, [_part(row) for row in rows])
        # The parts go before the object comes, so the quota check of its row sees their
        # bytes leave as its own arrive.
        await conn.execute(_DISCARD_PARTS, upload_id, [chunk.part_number for chunk in chunks])
        await conn.execute("DELETE FROM upload_parts WHERE upload_id = $1", upload_id)
        await commit_object(conn, record, check_current, chunks, eager, quota=quota)
        await conn.execute("DELETE FROM uploads WHERE upload_id = $1", upload_id)
        return record


async def abort_upload(
    conn: asyncpg.Connection, bucket: str, key: str, upload_id: uuid.UUID
) -> None:
    """Delete the upload and list its parts' blobs as garbage; UploadGoneError if there is no
    upload."""
    async with conn.transaction():
        if await _lock_upload(conn, bucket, key, upload_id) is None:
            raise UploadGoneError(str(upload_id))
        await _discard(conn, upload_id)


async def _discard(conn: asyncpg.Connection, upload_id: uuid.UUID) -> None:
    await conn.execute(_DISCARD_PARTS, upload_id, [])
    await conn.execute("DELETE FROM uploads WHERE upload_id = $1", upload_id)


async def abort_abandoned(
    conn: asyncpg.Connection, older_than_seconds: float, limit: int
) -> list[Upload]:
    """Abort up to ``limit`` uploads initiated longer ago than that; returns them, so the
    caller can abort the upstream uploads of those kept upstream.

    SKIP LOCKED: uploads a request is working on, or another janitor is aborting, wait for
    a later pass.
    """
    async with conn.transaction():
        rows = await conn.fetch(
            f"SELECT {_UPLOAD_COLUMNS} FROM uploads"
            " WHERE initiated < now() - make_interval(secs => $1)"
            " ORDER BY initiated LIMIT $2 FOR UPDATE SKIP LOCKED",
            float(older_than_seconds),
            limit,
        )
        for row in rows:
            await _discard(conn, row["upload_id"])
        return [_upload(row) for row in rows]


async def uploads_started_before(
    conn: asyncpg.Connection | asyncpg.Pool,
    bucket: str,
    prefix: str,
    cutoff: datetime,
    after: Upload | None,
    limit: int,
) -> list[Upload]:
    """Up to ``limit`` multipart uploads under ``prefix`` initiated before ``cutoff``, by key
    and upload id, after ``after``."""
    rows = await conn.fetch(
        f"SELECT {_UPLOAD_COLUMNS} FROM uploads"
        " WHERE bucket = $1 AND (key, upload_id) > ($2, $3) AND ($4::text IS NULL OR key < $4)"
        " AND initiated < $5 ORDER BY key, upload_id LIMIT $6",
        bucket,
        after.key if after is not None else prefix,
        after.upload_id if after is not None else uuid.UUID(int=0),
        prefix_upper_bound(prefix),
        cutoff,
        limit,
    )
    return [_upload(row) for row in rows]


@dataclass(frozen=True)
class ListedUpload:
    key: str
    upload_id: uuid.UUID
    initiated: datetime
    checksum_algorithm: str | None
    checksum_type: str | None
    owner: str | None


async def list_uploads(
    conn: asyncpg.Connection | asyncpg.Pool,
    bucket: str,
    prefix: str,
    upper: str | None,
    after: tuple[str, uuid.UUID] | None,
    start: str,
    limit: int,
) -> list[ListedUpload]:
    """Uploads with keys in [max(start, prefix), upper), after ``after`` (key, upload id),
    ordered by key and upload id (initiation order within a key)."""
    rows = await conn.fetch(
        "SELECT key, upload_id, initiated, checksum_algorithm, checksum_type, owner"
        " FROM uploads WHERE bucket = $1 AND key >= $2 AND ($3::text IS NULL OR key < $3)"
        ' AND ($4::text IS NULL OR (key, upload_id) > ($4::text COLLATE "C", $5::uuid))'
        " ORDER BY key, upload_id LIMIT $6",
        bucket,
        max(start, prefix),
        upper,
        after[0] if after else None,
        after[1] if after else None,
        limit,
    )
    return [ListedUpload(**dict(row)) for row in rows]


_LISTED_UPLOAD = ["key", "upload_id", "initiated", "checksum_algorithm", "checksum_type", "owner"]
_UPLOADS_WALK = rollup.walk_query(
    "uploads",
    _LISTED_UPLOAD,
    ["key", "upload_id"],
    first="bucket = $1 AND key >= $2 AND ($3::text IS NULL OR key < $3)"
    ' AND ($4::text IS NULL OR (key, upload_id) > ($4::text COLLATE "C", $5::uuid))',
    after="bucket = $1 AND (key, upload_id) > (w.key, w.upload_id)"
    " AND ($3::text IS NULL OR key < $3)",
    skip=rollup.skip_expression("$7", "$8", "$9"),
    limit="$6::int",
)


async def list_uploads_rolled_up(
    conn: asyncpg.Connection | asyncpg.Pool,
    bucket: str,
    prefix: str,
    delimiter: str,
    after: tuple[str, uuid.UUID] | None,
    start: str,
    limit: int,
) -> tuple[list[ListedUpload], bool]:
    """Like list_uploads, but only the first upload of each common prefix, in one round trip
    (see gateway.meta.rollup and objects.list_rolled_up, whose flag this returns too)."""
    rows = await conn.fetch(
        _UPLOADS_WALK,
        bucket,
        max(start, prefix),
        prefix_upper_bound(prefix),
        after[0] if after else None,
        after[1] if after else None,
        limit,
        prefix,
        delimiter,
        prefix_upper_bound(delimiter),
    )
    stopped = bool(rows) and rows[-1]["skip"] is None
    return [ListedUpload(*row[:6]) for row in rows], stopped


def chunks_from_parts(parts: Sequence[Part]) -> list[Chunk]:
    """The chunks of an object made of ``parts`` in this order: each starts where the last
    ended."""
    chunks = []
    offset = 0
    for part in parts:
        chunks.append(
            Chunk(
                part_number=part.part_number,
                start_offset=offset,
                size=part.size,
                profile=part.profile,
                storage_key=part.storage_key,
                etag=part.etag,
                checksums=part.checksums,
                storage_etag=part.storage_etag,
            )
        )
        offset += part.size
    return chunks
