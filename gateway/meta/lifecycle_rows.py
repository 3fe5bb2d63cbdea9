"""What lifecycle rules act on, read in pages of one bucket's key range, and the removals of
non-current versions and delete markers they make.

Pages are keyset scans of the tables' key indexes, each its own short statement, so a pass
over a large bucket holds no long transaction.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

import asyncpg

from gateway.meta import object_rows
from gateway.meta.object_rows import lock_key, prefix_upper_bound


@dataclass(frozen=True)
class Version:
    """A version a rule may act on."""

    key: str
    version_id: uuid.UUID
    null_version: bool
    size: int
    tags: tuple[tuple[str, str], ...]
    # When it was written (a current version) or stopped being current (any other).
    since: datetime
    delete_marker: bool = False
    # Where it sits among its key's versions, newest first (a page starts after one).
    seq: int = 0
    # How many non-current versions of its key are newer.
    newer: int = 0
    # A delete marker that is its key's current version: no non-current version.
    current_marker: bool = False
    # ... and its key's only version: ExpiredObjectDeleteMarker removes it.
    lone_marker: bool = False


def _tags(value: list[list[str]] | None) -> tuple[tuple[str, str], ...]:
    return tuple((key, tag_value) for key, tag_value in value or ())


async def current_versions(
    conn: asyncpg.Connection | asyncpg.Pool, bucket: str, prefix: str, after: str | None, limit: int
) -> list[Version]:
    """Up to ``limit`` current versions under ``prefix``, by key, after the key ``after``."""
    rows = await conn.fetch(
        "SELECT key, version_id, null_version, size, metadata->'tags' AS tags,"
        " last_modified AS since FROM objects"
        " WHERE bucket = $1 AND key >= $2 AND ($3::text IS NULL OR key < $3)"
        " AND key IS DISTINCT FROM $4 ORDER BY key LIMIT $5",
        bucket,
        after if after is not None else prefix,
        prefix_upper_bound(prefix),
        after,
        limit,
    )
    return [Version(**{**row, "tags": _tags(row["tags"])}) for row in rows]


# Every row of object_versions, with what tells a non-current version from a delete marker
# that is its key's current version (the newest row of a key with no current row).
_VERSIONS = (
    "SELECT key, version_id, null_version, size, tags, since, delete_marker, seq,"
    " newer - (marker_current AND newer > 0)::int AS newer,"
    " marker_current AND newer = 0 AS current_marker,"
    " marker_current AND newer = 0 AND NOT older AS lone_marker"
    " FROM (SELECT v.key, v.version_id, v.null_version, v.size, v.metadata->'tags' AS tags,"
    "  v.noncurrent_since AS since, v.delete_marker, v.seq,"
    "  (SELECT count(*) FROM object_versions n WHERE n.bucket = v.bucket AND n.key = v.key"
    "   AND n.seq > v.seq) AS newer,"
    "  EXISTS (SELECT 1 FROM object_versions p WHERE p.bucket = v.bucket AND p.key = v.key"
    "   AND p.seq < v.seq) AS older,"
    "  NOT EXISTS (SELECT 1 FROM objects o WHERE o.bucket = v.bucket AND o.key = v.key)"
    "  AND (SELECT t.delete_marker FROM object_versions t WHERE t.bucket = v.bucket"
    "   AND t.key = v.key ORDER BY t.seq DESC LIMIT 1) AS marker_current"
    " FROM object_versions v WHERE {where}) page"
)
_VERSIONS_PAGE = _VERSIONS.format(
    where="v.bucket = $1 AND v.key >= $2 AND ($3::text IS NULL OR v.key < $3)"
    " AND ($4::text IS NULL OR v.key > $4 OR v.seq < $5) ORDER BY v.key, v.seq DESC LIMIT $6"
)
_ONE_VERSION = _VERSIONS.format(where="v.version_id = $1")


async def other_versions(
    conn: asyncpg.Connection | asyncpg.Pool,
    bucket: str,
    prefix: str,
    after: Version | None,
    limit: int,
) -> list[Version]:
    """Up to ``limit`` versions under ``prefix`` that are not current objects (non-current
    versions and delete markers), by key and newest first, after ``after``."""
    rows = await conn.fetch(
        _VERSIONS_PAGE,
        bucket,
        after.key if after is not None else prefix,
        prefix_upper_bound(prefix),
        after.key if after is not None else None,
        after.seq if after is not None else 0,
        limit,
    )
    return [Version(**{**row, "tags": _tags(row["tags"])}) for row in rows]


async def remove_version(
    conn: asyncpg.Connection, bucket: str, version: Version, still_due: Callable[[Version], bool]
) -> bool:
    """Remove ``version`` (a non-current version, or a lone delete marker) for good, as
    DeleteObject with its versionId does, if, seen again with its key locked, it is where the
    page found it and ``still_due``; False, with nothing removed, if a request has changed
    that meanwhile (a newer version deleted, this one made current again)."""
    async with conn.transaction():
        await lock_key(conn, bucket, version.key)
        row = await conn.fetchrow(_ONE_VERSION, version.version_id)
        if row is None:
            return False
        now = Version(**{**row, "tags": _tags(row["tags"])})
        if now.seq != version.seq or not still_due(now):
            return False
        outcome = await object_rows.delete_version(
            conn, bucket, version.key, None if now.null_version else now.version_id
        )
        return outcome != "none"
