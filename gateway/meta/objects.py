"""Queries on the objects table, and the row swap that commits a write."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import asyncpg

from gateway.meta import garbage
from gateway.meta.buckets import Bucket


@dataclass(frozen=True)
class ObjectRecord:
    bucket: str
    key: str
    version_id: uuid.UUID
    size: int
    etag: str
    content_type: str
    profile: str
    storage_key: str
    last_modified: datetime
    # {"user": {...}, "headers": {...}, "checksums": {...}}
    metadata: dict[str, Any] = field(default_factory=dict)

    @property
    def user_metadata(self) -> dict[str, str]:
        return self.metadata.get("user", {})

    @property
    def headers(self) -> dict[str, str]:
        return self.metadata.get("headers", {})

    @property
    def checksums(self) -> dict[str, str]:
        return self.metadata.get("checksums", {})


@dataclass(frozen=True)
class ListedObject:
    key: str
    size: int
    etag: str
    last_modified: datetime


_COLUMNS = (
    "bucket, key, version_id, size, etag, content_type, profile, storage_key, last_modified,"
    " metadata"
)


class BlobLostError(Exception):
    """The intent-log entry of a blob vanished before its row committed (an upload outlived the
    garbage grace period and the janitor removed the blob)."""


async def get_object(
    conn: asyncpg.Connection | asyncpg.Pool, bucket: str, key: str
) -> ObjectRecord | None:
    row = await conn.fetchrow(
        f"SELECT {_COLUMNS} FROM objects WHERE bucket = $1 AND key = $2", bucket, key
    )
    return ObjectRecord(**dict(row)) if row else None


async def commit_object(
    conn: asyncpg.Connection,
    record: ObjectRecord,
    check_current: Callable[[str | None], None] | None = None,
) -> None:
    """Swap in ``record`` as the live object in one transaction.

    Its blob leaves the garbage log; the blob of the row it replaces enters it.
    ``check_current`` sees the ETag of the object being replaced (None: none) while its row is
    locked, so conditional writes cannot race; it raises to abort.
    """
    async with conn.transaction():
        if not await garbage.claim(conn, record.profile, record.storage_key):
            raise BlobLostError(record.storage_key)
        old = await conn.fetchrow(
            "SELECT profile, storage_key, etag FROM objects"
            " WHERE bucket = $1 AND key = $2 FOR UPDATE",
            record.bucket,
            record.key,
        )
        if check_current is not None:
            check_current(old["etag"] if old else None)
        await conn.execute(
            f"INSERT INTO objects ({_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)"
            " ON CONFLICT (bucket, key) DO UPDATE SET version_id = EXCLUDED.version_id,"
            " size = EXCLUDED.size, etag = EXCLUDED.etag, content_type = EXCLUDED.content_type,"
            " profile = EXCLUDED.profile, storage_key = EXCLUDED.storage_key,"
            " last_modified = EXCLUDED.last_modified, metadata = EXCLUDED.metadata",
            record.bucket,
            record.key,
            record.version_id,
            record.size,
            record.etag,
            record.content_type,
            record.profile,
            record.storage_key,
            record.last_modified,
            record.metadata,
        )
        if old is not None:
            await garbage.add(conn, old["profile"], old["storage_key"])


async def delete_object(conn: asyncpg.Connection, bucket: str, key: str) -> bool:
    """Delete the row and list its blob as garbage; False if there was no such object."""
    async with conn.transaction():
        old = await conn.fetchrow(
            "DELETE FROM objects WHERE bucket = $1 AND key = $2 RETURNING profile, storage_key",
            bucket,
            key,
        )
        if old is None:
            return False
        await garbage.add(conn, old["profile"], old["storage_key"])
        return True


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


async def lookup(
    conn: asyncpg.Connection | asyncpg.Pool, bucket: str, key: str
) -> tuple[Bucket | None, ObjectRecord | None]:
    """The bucket and the object in one round trip (the hot path of every GET)."""
    row = await conn.fetchrow(
        "SELECT b.name AS b_name, b.created_at AS b_created_at, b.profile AS b_profile,"
        " b.public_read AS b_public_read, b.owner AS b_owner, o.bucket, o.key, o.version_id,"
        " o.size, o.etag, o.content_type, o.profile, o.storage_key, o.last_modified, o.metadata"
        " FROM buckets b LEFT JOIN objects o ON o.bucket = b.name AND o.key = $2"
        " WHERE b.name = $1",
        bucket,
        key,
    )
    if row is None:
        return None, None
    values = dict(row)
    found = Bucket(
        name=values.pop("b_name"),
        created_at=values.pop("b_created_at"),
        profile=values.pop("b_profile"),
        public_read=values.pop("b_public_read"),
        owner=values.pop("b_owner"),
    )
    return found, ObjectRecord(**values) if values["key"] is not None else None
