"""Queries on the objects and object_chunks tables, and the row swap that commits a write."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import asyncpg

from gateway.errors import BucketGoneError
from gateway.meta import buckets, derivatives, garbage, quotas, rollup
from gateway.meta.buckets import Bucket
from gateway.meta.db import DatabaseUnavailableError
from gateway.meta.garbage import BlobLostError
from gateway.s3.acl import PRIVATE

# S3's Content-Type of an object written without one.
DEFAULT_CONTENT_TYPE = "binary/octet-stream"
# What S3 reports for the checksum of an object that says nothing else.
FULL_OBJECT = "FULL_OBJECT"


@dataclass(frozen=True)
class ObjectMetadata:
    """What an object carries besides its bytes (the ``metadata`` jsonb column)."""

    # x-amz-meta-* without the prefix.
    user: Mapping[str, str] = field(default_factory=dict)
    # Standard headers stored with the object (Cache-Control, Content-Disposition, ...).
    headers: Mapping[str, str] = field(default_factory=dict)
    # x-amz-checksum-* values by algorithm (CRC32, SHA256, ...).
    checksums: Mapping[str, str] = field(default_factory=dict)
    # COMPOSITE or FULL_OBJECT, for a multipart object's checksum; None: FULL_OBJECT.
    checksum_type: str | None = None
    # The object's canned ACL (gateway.s3.acl): public-read lets anyone read it.
    acl: str = PRIVATE
    # Sealed with a client's own key (SSE-C): a salt and the key's HMAC under it, to check the
    # key a read brings (the key itself is never stored).
    customer_key: Mapping[str, str] | None = None
    # The multipart upload completed into this version: a repeated CompleteMultipartUpload
    # (a client retrying after a lost answer) is answered from it while the version lives.
    upload_id: str | None = None
    # The object's tags (key, value) in the order they were given; a write replaces them.
    tags: tuple[tuple[str, str], ...] = ()

    @classmethod
    def from_json(cls, value: Mapping[str, Any] | None) -> ObjectMetadata:
        value = value or {}
        return cls(
            user=value.get("user", {}),
            headers=value.get("headers", {}),
            checksums=value.get("checksums", {}),
            checksum_type=value.get("checksum_type"),
            acl=value.get("acl", PRIVATE),
            customer_key=value.get("sse_c"),
            upload_id=value.get("upload_id"),
            tags=tuple((tag_key, tag_value) for tag_key, tag_value in value.get("tags", ())),
        )

    def with_checksums(
        self, checksums: Mapping[str, str], checksum_type: str | None = None
    ) -> ObjectMetadata:
        return dataclasses.replace(self, checksums=checksums, checksum_type=checksum_type)

    def to_json(self) -> dict[str, Any]:
        value: dict[str, Any] = {"user": dict(self.user), "headers": dict(self.headers)}
        if self.checksums:
            value["checksums"] = dict(self.checksums)
        if self.checksum_type is not None:
            value["checksum_type"] = self.checksum_type
        if self.acl != PRIVATE:
            value["acl"] = self.acl
        if self.customer_key is not None:
            value["sse_c"] = dict(self.customer_key)
        if self.upload_id is not None:
            value["upload_id"] = self.upload_id
        if self.tags:
            # A list of pairs, not an object: jsonb would reorder the keys.
            value["tags"] = [list(tag) for tag in self.tags]
        return value


@dataclass(frozen=True)
class ObjectRecord:
    bucket: str
    key: str
    version_id: uuid.UUID
    size: int
    etag: str
    content_type: str
    profile: str
    # None for a multipart object, whose bytes are its chunks.
    storage_key: str | None
    last_modified: datetime
    metadata: ObjectMetadata = field(default_factory=ObjectMetadata)
    # How many parts a multipart object was completed from; None for a single-part object.
    parts_count: int | None = None
    # An object kept in place upstream: the upstream's ETag of it (see schema.sql).
    storage_etag: str | None = None
    # A small object's bytes, kept in its row instead of a blob (storage_key is then None).
    inline_data: bytes | None = None
    # The version S3 calls "null" (written while the bucket was unversioned or suspended).
    null_version: bool = True
    # A delete marker (a row of object_versions only): no bytes, no object.
    delete_marker: bool = False

    @property
    def user_metadata(self) -> Mapping[str, str]:
        return self.metadata.user

    @property
    def headers(self) -> Mapping[str, str]:
        return self.metadata.headers

    @property
    def checksums(self) -> Mapping[str, str]:
        return self.metadata.checksums

    @property
    def checksum_type(self) -> str:
        return self.metadata.checksum_type or FULL_OBJECT


def _record(values: Mapping[str, Any]) -> ObjectRecord:
    """The record of an objects (or object_versions) row (its columns by name)."""
    return ObjectRecord(**{**values, "metadata": ObjectMetadata.from_json(values["metadata"])})


@dataclass(frozen=True)
class ListedVersion:
    """An entry of ListObjectVersions: a version or a delete marker."""

    key: str
    version_id: uuid.UUID
    null_version: bool
    delete_marker: bool
    is_latest: bool
    # Where it sits among its key's versions: CURRENT_SEQ for the current one, else lower
    # for older ones.
    seq: int
    size: int
    etag: str
    last_modified: datetime


# The position of a key's current version among its versions (object_versions.seq is lower).
CURRENT_SEQ = 2**63 - 1


@dataclass(frozen=True)
class Chunk:
    """One part blob of a multipart object: bytes [start_offset, start_offset + size)."""

    part_number: int
    start_offset: int
    size: int
    profile: str
    storage_key: str
    etag: str
    checksums: dict[str, str] = field(default_factory=dict)
    storage_etag: str | None = None


@dataclass(frozen=True)
class ListedObject:
    key: str
    size: int
    etag: str
    last_modified: datetime


_COLUMNS = (
    "bucket, key, version_id, size, etag, content_type, profile, storage_key, last_modified,"
    " metadata, parts_count, storage_etag"
)
_CHUNK_COLUMNS = (
    "part_number, start_offset, size, profile, storage_key, etag, checksums, storage_etag"
)


async def get_object(
    conn: asyncpg.Connection | asyncpg.Pool, bucket: str, key: str
) -> ObjectRecord | None:
    row = await conn.fetchrow(
        f"SELECT {_COLUMNS}, inline_data, null_version FROM objects WHERE bucket = $1 AND key = $2",
        bucket,
        key,
    )
    return _record(row) if row else None


async def object_size(conn: asyncpg.Connection | asyncpg.Pool, bucket: str, key: str) -> int | None:
    """The size of the object ``key``; None if there is none."""
    size = await conn.fetchval(
        "SELECT size FROM objects WHERE bucket = $1 AND key = $2", bucket, key
    )
    return None if size is None else int(size)


@dataclass(frozen=True)
class Expected:
    """The row a write was based on, for a commit that must find it still in place: its
    version id, or None for "no object"."""

    version_id: uuid.UUID | None


async def commit_object(
    conn: asyncpg.Connection,
    record: ObjectRecord,
    check_current: Callable[[str | None], None] | None = None,
    chunks: Sequence[Chunk] = (),
    eager: Sequence[str] = (),
    expected: Expected | None = None,
    quota: bool = True,
) -> bool:
    """Swap in ``record`` as the live object in one transaction.

    A single-part object's blob leaves the garbage log; a multipart object's ``chunks`` are
    inserted (their blobs were claimed by upload_parts rows, which the caller deletes in the
    same transaction). Every blob of the row it replaces enters the log, with its derivatives.
    ``check_current`` sees the ETag of the object being replaced (None: none) while its row is
    locked, so conditional writes cannot race; it raises to abort. ``eager`` names the variant
    presets to render in the background: their jobs commit with the object, so none is lost
    and none outlives a write that failed.

    ``expected``: the row the write was based on; if another has taken its place, nothing is
    committed and False is returned.

    ``quota``: refuse (QuotaExceededError, nothing committed) a row that grows its bucket's
    usage past its quota; False only for a row that records what storage already holds.

    The swap itself is the server-side function gateway_swap_object (schema.sql): a write with
    nothing to check in between commits in one round trip. BucketGoneError if the bucket was
    deleted meanwhile (nothing is committed then).
    """
    try:
        if check_current is None and expected is None and not chunks:
            await _swap(conn, record, eager, quota)
            return True
        async with conn.transaction():
            current = await _locked_row(conn, record.bucket, record.key)
            if expected is not None and expected.version_id != (current and current["version_id"]):
                return False
            if check_current is not None:
                check_current(current["etag"] if current else None)
            await _swap(conn, record, eager, quota)
            if chunks:
                await _insert_chunks(conn, record.version_id, chunks)
            return True
    except asyncpg.ForeignKeyViolationError as e:
        if e.constraint_name != "objects_bucket_fkey":
            raise
        raise BucketGoneError(record.bucket) from None


def _row_values(record: ObjectRecord) -> tuple[Any, ...]:
    """The record's values in the order of _COLUMNS (and of gateway_swap_object's first
    parameters)."""
    return (
        record.bucket,
        record.key,
        record.version_id,
        record.size,
        record.etag,
        record.content_type,
        record.profile,
        record.storage_key,
        record.last_modified,
        record.metadata.to_json(),
        record.parts_count,
        record.storage_etag,
    )


async def _swap(
    conn: asyncpg.Connection, record: ObjectRecord, eager: Sequence[str], quota: bool
) -> None:
    try:
        outcome = await conn.fetchval(
            "SELECT gateway_swap_object("
            "$1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16)",
            *_row_values(record),
            record.inline_data,
            list(eager),
            quota,
            record.null_version,
        )
    except asyncpg.PostgresError as exc:
        if not quotas.refused(exc):
            raise
        raise quotas.exceeded(exc, record.bucket) from None
    if outcome == "lost":
        raise BlobLostError(record.storage_key)


async def _locked_row(conn: asyncpg.Connection, bucket: str, key: str) -> asyncpg.Record | None:
    """The ETag and version id of the key's row, with the key locked until the transaction
    ends. FOR UPDATE cannot lock a row that does not exist yet: two first writes of a key
    would both see none, and the later would replace the earlier without retiring its blobs
    (and both would pass If-None-Match: *). So the writers of the key itself are serialised."""
    await lock_key(conn, bucket, key)
    return await conn.fetchrow(
        "SELECT etag, version_id FROM objects WHERE bucket = $1 AND key = $2 FOR UPDATE",
        bucket,
        key,
    )


async def lock_key(conn: asyncpg.Connection, bucket: str, key: str) -> None:
    """Serialise the writers of one key until the transaction ends."""
    await conn.execute(
        "SELECT pg_advisory_xact_lock(hashtextextended($1 || '/' || $2, 0))", bucket, key
    )


async def _insert_chunks(
    conn: asyncpg.Connection, version_id: uuid.UUID, chunks: Sequence[Chunk]
) -> None:
    # One statement for up to 10,000 parts: completion time is one round trip, not one per part.
    await conn.execute(
        f"INSERT INTO object_chunks (version_id, {_CHUNK_COLUMNS})"
        " SELECT $1, n, o, s, p, k, e, c::jsonb, u"
        " FROM unnest($2::int[], $3::bigint[], $4::bigint[], $5::text[], $6::text[],"
        " $7::text[], $8::text[], $9::text[]) AS t (n, o, s, p, k, e, c, u)",
        version_id,
        [chunk.part_number for chunk in chunks],
        [chunk.start_offset for chunk in chunks],
        [chunk.size for chunk in chunks],
        [chunk.profile for chunk in chunks],
        [chunk.storage_key for chunk in chunks],
        [chunk.etag for chunk in chunks],
        [json.dumps(chunk.checksums) for chunk in chunks],
        [chunk.storage_etag for chunk in chunks],
    )


async def delete_object(
    conn: asyncpg.Connection, bucket: str, key: str, expected: uuid.UUID | None = None
) -> bool:
    """Delete the row and list its blobs as garbage (gateway_delete_object); False if there
    was no such object, or (``expected``) the current version is another one."""
    return bool(
        await conn.fetchval("SELECT gateway_delete_object($1, $2, $3)", bucket, key, expected)
    )


async def versioned(conn: asyncpg.Connection, bucket: str) -> bool:
    """Whether versioning has been enabled on ``bucket`` (as of now, not of a cached row)."""
    return bool(
        await conn.fetchval("SELECT settings ? 'versioning' FROM buckets WHERE name = $1", bucket)
    )


async def is_current(
    conn: asyncpg.Connection, bucket: str, key: str, version_id: uuid.UUID
) -> bool:
    """Whether ``version_id`` is the key's current version, with the key locked until the
    transaction ends so that no write can change that meanwhile."""
    await lock_key(conn, bucket, key)
    found = await conn.fetchval(
        "SELECT version_id FROM objects WHERE bucket = $1 AND key = $2", bucket, key
    )
    return bool(found == version_id)


async def relocate(conn: asyncpg.Connection, record: ObjectRecord, storage_key: str) -> bool:
    """Point the current row ``record`` (an object kept in place upstream) at a copy of its
    bytes, the blob ``storage_key``, which leaves the garbage log; False, with nothing
    changed, if the row is no longer that version in place."""
    async with conn.transaction():
        moved = await conn.execute(
            "UPDATE objects SET storage_key = $4, storage_etag = NULL"
            " WHERE bucket = $1 AND key = $2 AND version_id = $3 AND storage_etag IS NOT NULL",
            record.bucket,
            record.key,
            record.version_id,
            storage_key,
        )
        if moved != "UPDATE 1":
            return False
        if not await garbage.claim(conn, record.profile, storage_key):
            raise BlobLostError(storage_key)
    return True


async def delete_key(
    conn: asyncpg.Connection, bucket: str, key: str, marker: uuid.UUID, null_marker: bool
) -> None:
    """DeleteObject on a versioned (or suspended) bucket: a delete marker ``marker`` becomes
    the key's newest version (gateway_delete_key)."""
    try:
        await conn.execute(
            "SELECT gateway_delete_key($1, $2, $3, $4)", bucket, key, marker, null_marker
        )
    except asyncpg.ForeignKeyViolationError:
        raise BucketGoneError(bucket) from None


async def delete_version(
    conn: asyncpg.Connection, bucket: str, key: str, version_id: uuid.UUID | None
) -> str:
    """Remove one version for good (None: the null version), its blobs to the garbage log:
    'none' if there is no such version, else 'marker' or 'object', what it was
    (gateway_delete_version)."""
    return str(
        await conn.fetchval(
            "SELECT gateway_delete_version($1, $2, $3, $4)",
            bucket,
            key,
            version_id or uuid.UUID(int=0),
            version_id is None,
        )
    )


_VERSION_COLUMNS = (
    "bucket, key, version_id, size, etag, content_type, profile, storage_key, last_modified,"
    " metadata, parts_count, storage_etag, inline_data, null_version"
)


async def get_version(
    conn: asyncpg.Connection | asyncpg.Pool,
    bucket: str,
    key: str,
    version_id: uuid.UUID | None,
) -> ObjectRecord | None:
    """The version of ``key`` with that id (None: the null version), current or not; a
    delete marker's record has ``delete_marker`` set. None if there is none."""
    row = await conn.fetchrow(
        f"(SELECT {_VERSION_COLUMNS}, false AS delete_marker FROM objects"
        " WHERE bucket = $1 AND key = $2"
        " AND CASE WHEN $4 THEN null_version ELSE version_id = $3 AND NOT null_version END)"
        " UNION ALL"
        f" (SELECT {_VERSION_COLUMNS}, delete_marker FROM object_versions"
        " WHERE bucket = $1 AND key = $2"
        " AND CASE WHEN $4 THEN null_version ELSE version_id = $3 AND NOT null_version END)"
        " LIMIT 1",
        bucket,
        key,
        version_id or uuid.UUID(int=0),
        version_id is None,
    )
    return _record(row) if row else None


async def newest_version(
    conn: asyncpg.Connection | asyncpg.Pool, bucket: str, key: str
) -> ObjectRecord | None:
    """The newest non-current version of ``key`` (a delete marker, when the key has no
    current version); None if it has none."""
    row = await conn.fetchrow(
        f"SELECT {_VERSION_COLUMNS}, delete_marker FROM object_versions"
        " WHERE bucket = $1 AND key = $2 ORDER BY seq DESC LIMIT 1",
        bucket,
        key,
    )
    return _record(row) if row else None


async def version_seq(
    conn: asyncpg.Connection | asyncpg.Pool, bucket: str, key: str, version_id: uuid.UUID | None
) -> int | None:
    """Where a version sits among its key's versions (see ListedVersion.seq); None if
    there is no such version."""
    found = await conn.fetchval(
        "SELECT CASE WHEN EXISTS (SELECT 1 FROM objects WHERE bucket = $1 AND key = $2"
        " AND CASE WHEN $4 THEN null_version ELSE version_id = $3 AND NOT null_version END)"
        " THEN $5::bigint ELSE (SELECT seq FROM object_versions WHERE bucket = $1 AND key = $2"
        " AND CASE WHEN $4 THEN null_version ELSE version_id = $3 AND NOT null_version END)"
        " END",
        bucket,
        key,
        version_id or uuid.UUID(int=0),
        version_id is None,
        CURRENT_SEQ,
    )
    return None if found is None else int(found)


# Both branches are ordered scans of their table's index from the page's first key, merged:
# a page reads no more rows of either than it returns. A non-current row is the latest only
# as a delete marker with nothing newer (the key has no current row).
_LIST_VERSIONS = (
    "SELECT * FROM ("
    " (SELECT key, version_id, null_version, false AS delete_marker, true AS is_latest,"
    f"  {CURRENT_SEQ}::bigint AS seq, size, etag, last_modified FROM objects"
    "  WHERE bucket = $1 AND key >= $2 AND ($3::text IS NULL OR key < $3)"
    "  AND ($4::text IS NULL OR key > $4)"
    "  ORDER BY key LIMIT $6)"
    " UNION ALL"
    " (SELECT key, version_id, null_version, delete_marker,"
    "  delete_marker AND NOT EXISTS (SELECT 1 FROM objects o WHERE o.bucket = v.bucket"
    "   AND o.key = v.key) AND NOT EXISTS (SELECT 1 FROM object_versions n"
    "   WHERE n.bucket = v.bucket AND n.key = v.key AND n.seq > v.seq),"
    "  seq, size, etag, last_modified FROM object_versions v"
    "  WHERE bucket = $1 AND key >= $2 AND ($3::text IS NULL OR key < $3)"
    "  AND ($4::text IS NULL OR key > $4 OR seq < $5)"
    "  ORDER BY key, seq DESC LIMIT $6)"
    ") merged ORDER BY key, seq DESC LIMIT $6"
)


async def list_versions(
    conn: asyncpg.Connection | asyncpg.Pool,
    bucket: str,
    prefix: str,
    after: tuple[str, int] | None,
    start: str,
    limit: int,
) -> list[ListedVersion]:
    """Versions and delete markers with keys starting with ``prefix``, from ``start`` on
    or after the version at ``after`` (key, seq), by key and then newest first."""
    lower = max(start, prefix, after[0] if after else "")
    rows = await conn.fetch(
        _LIST_VERSIONS,
        bucket,
        lower,
        prefix_upper_bound(prefix),
        after[0] if after else None,
        after[1] if after else None,
        limit,
    )
    return [ListedVersion(**dict(row)) for row in rows]


async def set_acl(conn: asyncpg.Connection | asyncpg.Pool, bucket: str, key: str, acl: str) -> bool:
    """Set the current object's canned ACL; False when there is no object. Its bytes, ETag and
    Last-Modified stay as they are, as in S3."""
    if acl == PRIVATE:
        result = await conn.execute(
            "UPDATE objects SET metadata = metadata - 'acl' WHERE bucket = $1 AND key = $2",
            bucket,
            key,
        )
    else:
        result = await conn.execute(
            "UPDATE objects SET metadata = jsonb_set(metadata, '{acl}', to_jsonb($3::text))"
            " WHERE bucket = $1 AND key = $2",
            bucket,
            key,
            acl,
        )
    return bool(result == "UPDATE 1")


async def set_tags(
    conn: asyncpg.Connection | asyncpg.Pool, bucket: str, key: str, tags: Sequence[tuple[str, str]]
) -> bool:
    """Replace the current object's tags (none: delete them); False when there is no object.
    Its bytes, ETag and Last-Modified stay as they are, as in S3."""
    metadata = ObjectMetadata(tags=tuple(tags)).to_json()
    result = await conn.execute(
        "UPDATE objects SET metadata = CASE WHEN $3::jsonb ? 'tags'"
        " THEN jsonb_set(metadata, '{tags}', $3::jsonb -> 'tags') ELSE metadata - 'tags' END"
        " WHERE bucket = $1 AND key = $2",
        bucket,
        key,
        metadata,
    )
    return bool(result == "UPDATE 1")


async def adopt_object(conn: asyncpg.Connection | asyncpg.Pool, record: ObjectRecord) -> None:
    """Record an object found upstream that no row describes yet; a row written meanwhile
    (by a PutObject, or another adoption) wins."""
    await conn.execute(
        f"INSERT INTO objects ({_COLUMNS})"
        " SELECT $1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12"
        " WHERE EXISTS (SELECT 1 FROM buckets WHERE name = $1)"
        " ON CONFLICT (bucket, key) DO NOTHING",
        *_row_values(record),
    )


async def adopt_objects(conn: asyncpg.Connection, records: Sequence[ObjectRecord]) -> int:
    """Record many objects found upstream in one statement (``gateway import``); rows that
    exist already win. Returns how many were added."""
    result = await conn.execute(
        f"INSERT INTO objects ({_COLUMNS})"
        " SELECT b, k, v, s, e, ct, p, sk, m, md::jsonb, NULL, se"
        " FROM unnest($1::text[], $2::text[], $3::uuid[], $4::bigint[], $5::text[],"
        " $6::text[], $7::text[], $8::text[], $9::timestamptz[], $10::text[], $11::text[])"
        " AS u (b, k, v, s, e, ct, p, sk, m, md, se)"
        " ON CONFLICT (bucket, key) DO NOTHING",
        [record.bucket for record in records],
        [record.key for record in records],
        [record.version_id for record in records],
        [record.size for record in records],
        [record.etag for record in records],
        [record.content_type for record in records],
        [record.profile for record in records],
        [record.storage_key for record in records],
        [record.last_modified for record in records],
        [json.dumps(record.metadata.to_json()) for record in records],
        [record.storage_etag for record in records],
    )
    return int(result.rsplit(" ", 1)[-1])


async def replace_version(
    conn: asyncpg.Connection, stale: ObjectRecord, current: ObjectRecord | None
) -> None:
    """Bring the row of an object changed upstream by another tool up to date: ``current``
    (None: it was deleted there) replaces ``stale``, unless the row moved on meanwhile."""
    async with conn.transaction():
        row = await _locked_row(conn, stale.bucket, stale.key)
        if row is None or row["version_id"] != stale.version_id:
            return
        if current is None:
            await delete_object(conn, stale.bucket, stale.key)
        else:
            await _swap(conn, current, (), quota=False)


def _chunk(row: asyncpg.Record) -> Chunk:
    return Chunk(**dict(row))


async def get_chunks(
    conn: asyncpg.Connection | asyncpg.Pool, version_id: uuid.UUID, start: int, end: int
) -> list[Chunk]:
    """The chunks of an object version holding any of bytes [start, end), in object order.

    Empty when the version is gone (replaced or deleted since its row was read).
    """
    rows = await conn.fetch(
        f"SELECT {_CHUNK_COLUMNS} FROM object_chunks WHERE version_id = $1"
        " AND start_offset < $3 AND start_offset + size > $2 ORDER BY part_number",
        version_id,
        start,
        end,
    )
    return [_chunk(row) for row in rows]


async def get_chunk(
    conn: asyncpg.Connection | asyncpg.Pool, version_id: uuid.UUID, part_number: int
) -> tuple[bool, Chunk | None]:
    """(whether the version still has chunks, the chunk of that part number if any)."""
    rows = await conn.fetch(
        f"SELECT {_CHUNK_COLUMNS} FROM object_chunks WHERE version_id = $1"
        " AND part_number IN ($2, (SELECT min(part_number) FROM object_chunks"
        " WHERE version_id = $1))",
        version_id,
        part_number,
    )
    found = [_chunk(row) for row in rows if row["part_number"] == part_number]
    return bool(rows), found[0] if found else None


async def list_objects(
    conn: asyncpg.Connection | asyncpg.Pool,
    bucket: str,
    prefix: str,
    start: str,
    inclusive: bool,
    limit: int,
) -> list[ListedObject]:
    """Keys starting with ``prefix`` from ``start`` on, in UTF-8 byte order (collation "C")."""
    # Both bounds are index-range conditions, so a narrow prefix never scans the whole bucket.
    lower = max(start, prefix)
    upper = prefix_upper_bound(prefix)
    op = ">=" if inclusive or (lower == prefix and start < prefix) else ">"
    rows = await conn.fetch(
        "SELECT key, size, etag, last_modified FROM objects"
        f" WHERE bucket = $1 AND key {op} $2 AND ($3::text IS NULL OR key < $3)"
        " ORDER BY key LIMIT $4",
        bucket,
        lower,
        upper,
        limit,
    )
    return [ListedObject(*row) for row in rows]


def _objects_walk(op: str) -> str:
    return rollup.walk_query(
        "objects",
        ["key", "size", "etag", "last_modified"],
        ["key"],
        first=f"bucket = $1 AND key {op} $2 AND ($3::text IS NULL OR key < $3)",
        after="bucket = $1 AND key > w.key AND ($3::text IS NULL OR key < $3)",
        skip=rollup.skip_expression("$5", "$6", "$7"),
        limit="$4::int",
    )


_OBJECTS_WALK = {op: _objects_walk(op) for op in (">", ">=")}


async def list_rolled_up(
    conn: asyncpg.Connection | asyncpg.Pool,
    bucket: str,
    prefix: str,
    delimiter: str,
    start: str,
    inclusive: bool,
    limit: int,
) -> tuple[list[ListedObject], bool]:
    """Like list_objects, but only the first key of each common prefix (rolled up on
    ``delimiter`` after ``prefix``), in one round trip: see gateway.meta.rollup.

    The flag: whether the walk stopped at a common prefix with no upper bound to skip to (a
    delimiter of only U+10FFFF), so the caller resumes past it itself.
    """
    lower = max(start, prefix)
    op = ">=" if inclusive or (lower == prefix and start < prefix) else ">"
    rows = await conn.fetch(
        _OBJECTS_WALK[op],
        bucket,
        lower,
        prefix_upper_bound(prefix),
        limit,
        prefix,
        delimiter,
        prefix_upper_bound(delimiter),
    )
    stopped = bool(rows) and rows[-1]["skip"] is None
    return [ListedObject(*row[:4]) for row in rows], stopped


def prefix_upper_bound(prefix: str) -> str | None:
    """The smallest string greater than every string that starts with ``prefix``.

    UTF-8 byte order is code point order, so incrementing the last code point works; None
    means "no upper bound" (empty prefix, or only U+10FFFF characters).
    """
    while prefix:
        last = ord(prefix[-1])
        if last < 0x10FFFF:
            successor = last + 1 if not 0xD800 <= last + 1 <= 0xDFFF else 0xE000
            return prefix[:-1] + chr(successor)
        prefix = prefix[:-1]
    return None


_LOOKUP = (
    f"SELECT {buckets.columns('b', 'b_')},"
    " o.bucket, o.key, o.version_id,"
    " o.size, o.etag, o.content_type, o.profile, o.storage_key, o.last_modified, o.metadata,"
    " o.parts_count, o.storage_etag, o.inline_data, o.null_version"
)


async def lookup(
    conn: asyncpg.Connection | asyncpg.Pool, bucket: str, key: str
) -> tuple[Bucket | None, ObjectRecord | None]:
    """The bucket and the object in one round trip (the hot path of every GET)."""
    row = await conn.fetchrow(
        f"{_LOOKUP} FROM buckets b LEFT JOIN objects o ON o.bucket = b.name AND o.key = $2"
        " WHERE b.name = $1",
        bucket,
        key,
    )
    return _looked_up(row)


LookedUp = tuple[Bucket | None, ObjectRecord | None, "derivatives.Derivative | None"]

# LIMIT 1 keeps each subquery a primary-key probe per target: flattened into joins, the planner
# may scan every bucket, or a whole bucket's objects, when statistics are stale.
_LOOKUP_MANY = (
    " FROM unnest($1::text[], $2::text[], $3::text[]) WITH ORDINALITY AS t (bucket, key,"
    " variant_key, i)"
    " JOIN LATERAL (SELECT * FROM buckets WHERE name = t.bucket LIMIT 1) b ON true"
    " LEFT JOIN LATERAL (SELECT * FROM objects"
    "  WHERE objects.bucket = t.bucket AND objects.key = t.key LIMIT 1) o ON true"
)
_OBJECTS_MANY = f"{_LOOKUP}, t.i{_LOOKUP_MANY}"
_VARIANTS_MANY = (
    f"{_LOOKUP}, {derivatives.columns('d', 'd_')}, t.i{_LOOKUP_MANY}"
    " LEFT JOIN LATERAL (SELECT * FROM derivatives WHERE derivatives.version_id = o.version_id"
    "  AND derivatives.variant_key = t.variant_key LIMIT 1) d ON true"
)


async def lookup_many(
    conn: asyncpg.Connection | asyncpg.Pool, targets: Sequence[tuple[str, str, str | None]]
) -> list[LookedUp]:
    """``lookup_variant`` of each (bucket, key, variant key or None) in one round trip, in
    order; the derivatives are joined only when some target names one."""
    variants = any(variant_key is not None for _, _, variant_key in targets)
    rows = await conn.fetch(
        _VARIANTS_MANY if variants else _OBJECTS_MANY,
        [bucket for bucket, _, _ in targets],
        [key for _, key, _ in targets],
        [variant_key for _, _, variant_key in targets],
    )
    found: list[LookedUp] = [(None, None, None)] * len(targets)
    for row in rows:
        values = dict(row)
        index = values.pop("i") - 1
        derivative = derivatives.from_columns(values, "d_") if variants else None
        found[index] = (*_looked_up(values), derivative)
    return found


_Pending = tuple[str, str, str | None, asyncio.Future[LookedUp]]


class BatchedLookups:
    """``lookup`` and ``lookup_variant`` for concurrent requests, those of one turn of the
    event loop in one query.

    Under load most of a GET's cost is the round trip of its lookup, not the lookup itself;
    the requests that arrive together share one. Each query still starts after its requests
    arrived, so it sees every write acknowledged before any of them was sent.
    """

    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool
        self._pending: list[_Pending] = []
        self._running: set[asyncio.Task[None]] = set()

    async def lookup(self, bucket: str, key: str) -> tuple[Bucket | None, ObjectRecord | None]:
        found, record, _ = await self.lookup_variant(bucket, key, None)
        return found, record

    async def lookup_variant(self, bucket: str, key: str, variant_key: str | None) -> LookedUp:
        loop = asyncio.get_running_loop()
        if not self._pending:
            # After the callbacks already queued: the other requests of this turn join.
            loop.call_soon(self._send)
        future = loop.create_future()
        self._pending.append((bucket, key, variant_key, future))
        return await future

    def _send(self) -> None:
        batch, self._pending = self._pending, []
        task = asyncio.get_running_loop().create_task(self._answer(batch))
        self._running.add(task)
        task.add_done_callback(self._running.discard)

    async def _answer(self, batch: list[_Pending]) -> None:
        try:
            await self._resolve(batch)
        except BaseException as exc:
            # Whatever went wrong, no request is left waiting for an answer that will never
            # come: those still waiting get the error (or are cancelled with the batch).
            for *_, future in batch:
                if not future.done():
                    if isinstance(exc, asyncio.CancelledError):
                        future.cancel()
                    else:
                        future.set_exception(exc)
            if not isinstance(exc, Exception):
                raise

    async def _resolve(self, batch: list[_Pending]) -> None:
        if len(batch) > 1:
            try:
                results = await lookup_many(self._pool, [(b, k, v) for b, k, v, _ in batch])
            except DatabaseUnavailableError:
                # Asking each alone would only fail each again, more slowly.
                raise
            except (asyncpg.PostgresError, asyncpg.InterfaceError):
                # One target may be what failed it (a name Postgres refuses): each is
                # asked alone, so it fails only its own request.
                pass
            else:
                for (*_, future), result in zip(batch, results, strict=True):
                    # A request that went away stopped waiting (its future is cancelled).
                    if not future.done():
                        future.set_result(result)
                return
        for bucket, key, variant_key, future in batch:
            try:
                result = await lookup_variant(self._pool, bucket, key, variant_key)
            except DatabaseUnavailableError:
                raise
            except Exception as e:
                if not future.done():
                    future.set_exception(e)
            else:
                if not future.done():
                    future.set_result(result)


async def lookup_variant(
    conn: asyncpg.Connection | asyncpg.Pool, bucket: str, key: str, variant_key: str | None
) -> LookedUp:
    """The bucket, the object and its derivative ``variant_key`` in one round trip (the hot
    path of a variant GET: a rendered variant costs no more queries than the object)."""
    row = await conn.fetchrow(
        f"{_LOOKUP}, {derivatives.columns('d', 'd_')}"
        " FROM buckets b LEFT JOIN objects o ON o.bucket = b.name AND o.key = $2"
        " LEFT JOIN derivatives d ON d.version_id = o.version_id AND d.variant_key = $3"
        " WHERE b.name = $1",
        bucket,
        key,
        variant_key,
    )
    if row is None:
        return None, None, None
    values = dict(row)
    derivative = derivatives.from_columns(values, "d_")
    found, record = _looked_up(values)
    return found, record, derivative


def _looked_up(
    row: asyncpg.Record | dict[str, Any] | None,
) -> tuple[Bucket | None, ObjectRecord | None]:
    if row is None:
        return None, None
    values = dict(row)
    found = Bucket.from_columns(values, "b_")
    return found, _record(values) if values["key"] is not None else None
