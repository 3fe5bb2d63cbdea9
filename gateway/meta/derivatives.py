"""Queries on the derivatives table: one row per (object version, variant key).

A row is ``pending`` while some gateway renders it, ``ready`` once its blob is stored, and
``failed`` with the error to answer until ``next_retry_at``. A pending row's ``next_retry_at``
is the end of the renderer's lease, short and renewed while the render runs: if that gateway
dies, another may claim the row seconds later. ``attempts`` counts claims and doubles as the
claim's fencing token: a renderer whose lease was taken over can no longer mark the row ready
or failed, so one derivative is stored at most once however many gateways race for it.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from collections.abc import Set as AbstractSet
from dataclasses import dataclass
from datetime import datetime
from enum import Enum

import asyncpg

from gateway.meta import garbage
from gateway.meta.garbage import BlobLostError

_FIELDS = (
    "version_id",
    "variant_key",
    "status",
    "profile",
    "storage_key",
    "size",
    "etag",
    "content_type",
    "error",
    "attempts",
    "next_retry_at",
    "rendered_at",
)


def columns(alias: str = "", prefix: str = "") -> str:
    """The select list of a Derivative; ``alias`` qualifies the table, ``prefix`` renames the
    columns (to read one from a join whose other tables share column names)."""
    table = f"{alias}." if alias else ""
    names = [f"{table}{name} AS {prefix}{name}" for name in _FIELDS]
    # By the database's clock, the one every gateway shares.
    names.append(f"extract(epoch FROM {table}next_retry_at - now())::float8 AS {prefix}retry_in")
    return ", ".join(names)


def from_columns(values: dict[str, object], prefix: str) -> Derivative | None:
    """The Derivative ``columns(alias, prefix)`` selected into ``values`` (popped); None when
    an outer join found no row."""
    fields = {name: values.pop(prefix + name) for name in (*_FIELDS, "retry_in")}
    if fields["variant_key"] is None:
        return None
    return Derivative(**fields)  # type: ignore[arg-type]


_COLUMNS = columns()


@dataclass(frozen=True)
class Derivative:
    version_id: uuid.UUID
    variant_key: str
    status: str
    profile: str | None
    storage_key: str | None
    size: int | None
    etag: str | None
    content_type: str | None
    error: str | None
    attempts: int
    next_retry_at: datetime | None
    # When it became ready: its Last-Modified (NULL in rows made before schema version 3).
    rendered_at: datetime | None = None
    # Seconds from the query to next_retry_at (negative once it has passed).
    retry_in: float | None = None

    def retry_after(self) -> float | None:
        """Seconds a failed row's recorded error still stands; None once it may be retried."""
        if self.status != "failed" or self.retry_in is None or self.retry_in <= 0:
            return None
        return self.retry_in


@dataclass(frozen=True)
class StoredBlob:
    profile: str
    storage_key: str
    size: int
    etag: str
    content_type: str
    # The renderer's clock, so the answer it gives at once and the row agree; None: the
    # database's.
    rendered_at: datetime | None = None
    # The bytes, for a render answered while they are being stored (storage_key is then
    # empty); None once stored.
    data: bytes | None = None


class Outcome(Enum):
    """What became of a renderer's attempt to record its result."""

    RECORDED = "recorded"
    # The lease ran out and another gateway claimed the row: its result counts, not ours.
    SUPERSEDED = "superseded"
    # The object version was overwritten or deleted meanwhile: there is nothing to attach to.
    SOURCE_GONE = "source gone"


def _derivative(row: asyncpg.Record) -> Derivative:
    return Derivative(**dict(row))


async def get(
    conn: asyncpg.Connection | asyncpg.Pool, version_id: uuid.UUID, variant_key: str
) -> Derivative | None:
    row = await conn.fetchrow(
        f"SELECT {_COLUMNS} FROM derivatives WHERE version_id = $1 AND variant_key = $2",
        version_id,
        variant_key,
    )
    return _derivative(row) if row else None


async def claim(
    pool: asyncpg.Pool,
    version_id: uuid.UUID,
    variant_key: str,
    lease_seconds: float,
) -> tuple[int | None, Derivative | None]:
    """Try to become the one renderer of this derivative, in one statement (and its
    transaction).

    Succeeds when there is no row, or a failed row whose back-off is over, or a pending row
    whose lease ran out. Returns (the attempt number, to pass back when recording the result;
    None if not claimed, the row as it stood then). The row may be None when not claimed: a
    concurrent claim committed after this statement's snapshot; ask again.
    """
    async with pool.acquire() as connection, connection.transaction():
        # A claim lost to a crash costs a second render at most, so its commit does not wait
        # for the WAL to reach the disk: the first request of a variant waits on it.
        await connection.execute("SET LOCAL synchronous_commit = off")
        row = await connection.fetchrow(
            "WITH claimed AS ("
            " INSERT INTO derivatives (version_id, variant_key, status, attempts, next_retry_at)"
            " VALUES ($1, $2, 'pending', 1, now() + make_interval(secs => $3))"
            " ON CONFLICT (version_id, variant_key) DO UPDATE SET status = 'pending',"
            " attempts = derivatives.attempts + 1, next_retry_at = EXCLUDED.next_retry_at"
            " WHERE derivatives.status <> 'ready' AND derivatives.next_retry_at <= now()"
            " RETURNING attempts)"
            f" SELECT (SELECT attempts FROM claimed) AS claimed, {_COLUMNS}"
            " FROM (SELECT 1) AS one LEFT JOIN derivatives"
            " ON version_id = $1 AND variant_key = $2",
            version_id,
            variant_key,
            float(lease_seconds),
        )
    assert row is not None
    values = dict(row)
    attempt = values.pop("claimed")
    if attempt is not None:
        return attempt, None
    return None, Derivative(**values) if values["variant_key"] is not None else None


async def renew(
    conn: asyncpg.Connection | asyncpg.Pool,
    version_id: uuid.UUID,
    variant_key: str,
    attempt: int,
    lease_seconds: float,
) -> bool:
    """Extend the lease of claim ``attempt`` to ``lease_seconds`` from now; False when the
    claim is no longer held (its result recorded, or taken over after it ran out)."""
    renewed = await conn.fetchval(
        "UPDATE derivatives SET next_retry_at = now() + make_interval(secs => $4)"
        " WHERE version_id = $1 AND variant_key = $2 AND status = 'pending' AND attempts = $3"
        " RETURNING 1",
        version_id,
        variant_key,
        attempt,
        float(lease_seconds),
    )
    return bool(renewed)


async def mark_ready(
    conn: asyncpg.Connection,
    bucket: str,
    key: str,
    version_id: uuid.UUID,
    variant_key: str,
    attempt: int,
    blob: StoredBlob,
) -> Outcome:
    """Record the stored blob, in one transaction that also takes it out of the garbage log.

    The version's row (current or not) is share-locked first, so an overwrite or delete of
    that version waits for this commit and then retires the derivative with its blob (or
    keeps both, versioned); if the version is already gone, nothing is recorded and the blob
    stays in the garbage log.
    """
    async with conn.transaction():
        live = await conn.fetchval(
            "SELECT 1 FROM objects WHERE bucket = $1 AND key = $2 AND version_id = $3 FOR SHARE",
            bucket,
            key,
            version_id,
        )
        if not live:
            # A version that is no longer current is kept in object_versions (versioning).
            live = await conn.fetchval(
                "SELECT 1 FROM object_versions WHERE bucket = $1 AND key = $2"
                " AND version_id = $3 AND NOT delete_marker FOR SHARE",
                bucket,
                key,
                version_id,
            )
        if not live:
            await conn.execute(
                "DELETE FROM derivatives WHERE version_id = $1 AND variant_key = $2"
                " AND status = 'pending' AND attempts = $3",
                version_id,
                variant_key,
                attempt,
            )
            return Outcome.SOURCE_GONE
        updated = await conn.fetchval(
            "UPDATE derivatives SET status = 'ready', profile = $4, storage_key = $5, size = $6,"
            " etag = $7, content_type = $8, error = NULL, next_retry_at = NULL,"
            " rendered_at = coalesce($9, now())"
            " WHERE version_id = $1 AND variant_key = $2 AND status = 'pending'"
            " AND attempts = $3 RETURNING 1",
            version_id,
            variant_key,
            attempt,
            blob.profile,
            blob.storage_key,
            blob.size,
            blob.etag,
            blob.content_type,
            blob.rendered_at,
        )
        if not updated:
            return Outcome.SUPERSEDED
        if not await garbage.claim(conn, blob.profile, blob.storage_key):
            raise BlobLostError(blob.storage_key)
        return Outcome.RECORDED


async def mark_failed(
    conn: asyncpg.Connection | asyncpg.Pool,
    version_id: uuid.UUID,
    variant_key: str,
    attempt: int,
    error: str,
    retry_seconds: float,
    source: tuple[str, str] | None = None,
) -> Outcome:
    """Record a failed render, answered as ``error`` until ``retry_seconds`` from now.

    ``source`` (bucket, key): record nothing, and drop the claim, if that object is no longer
    this version. A claim can land just after the version was retired (the row was read
    before the overwrite); without this its failure would stay behind with no object.
    """
    updated = await conn.fetchval(
        "WITH live AS (SELECT $6::text IS NULL OR EXISTS (SELECT 1 FROM objects"
        " WHERE bucket = $6 AND key = $7 AND version_id = $1) OR EXISTS (SELECT 1"
        " FROM object_versions WHERE bucket = $6 AND key = $7 AND version_id = $1) AS yes),"
        " dropped AS (DELETE FROM derivatives WHERE version_id = $1 AND variant_key = $2"
        " AND status = 'pending' AND attempts = $3 AND NOT (SELECT yes FROM live))"
        " UPDATE derivatives SET status = 'failed', error = $4,"
        " next_retry_at = now() + make_interval(secs => $5)"
        " WHERE version_id = $1 AND variant_key = $2 AND status = 'pending' AND attempts = $3"
        " AND (SELECT yes FROM live) RETURNING 1",
        version_id,
        variant_key,
        attempt,
        error,
        float(retry_seconds),
        source[0] if source else None,
        source[1] if source else None,
    )
    return Outcome.RECORDED if updated else Outcome.SUPERSEDED


async def release(
    conn: asyncpg.Connection | asyncpg.Pool, version_id: uuid.UUID, variant_key: str, attempt: int
) -> None:
    """Give a claim back without a result (the render never ran: overload, shutdown), so the
    next request may claim it at once; the attempt does not count towards the back-off."""
    await conn.execute(
        "UPDATE derivatives SET attempts = attempts - 1, next_retry_at = now()"
        " WHERE version_id = $1 AND variant_key = $2 AND status = 'pending' AND attempts = $3",
        version_id,
        variant_key,
        attempt,
    )


# The distinct variant keys of all derivatives: a skip scan of derivatives_by_variant_key, one
# index probe per key however many rows share it.
_STORED_KEYS = (
    "WITH RECURSIVE found AS ("
    " (SELECT variant_key FROM derivatives ORDER BY variant_key LIMIT 1)"
    " UNION ALL"
    " SELECT (SELECT d.variant_key FROM derivatives d WHERE d.variant_key > found.variant_key"
    "  ORDER BY d.variant_key LIMIT 1) FROM found WHERE found.variant_key IS NOT NULL"
    ") SELECT variant_key FROM found WHERE variant_key IS NOT NULL"
)


async def stored_variant_keys(conn: asyncpg.Connection | asyncpg.Pool) -> list[str]:
    """Every variant key some derivative has."""
    return [row["variant_key"] for row in await conn.fetch(_STORED_KEYS)]


async def note_stale_keys(
    conn: asyncpg.Connection, stored: Sequence[str], live: AbstractSet[str]
) -> None:
    """Record as stale (from now, unless already) the ``stored`` keys a gateway's presets do
    not make, and as no longer stale the ``live`` ones they do."""
    async with conn.transaction():
        await conn.execute(
            "DELETE FROM stale_variant_keys WHERE variant_key = ANY($1::text[])", sorted(live)
        )
        await conn.execute(
            "INSERT INTO stale_variant_keys (variant_key) SELECT unnest($1::text[])"
            " ON CONFLICT DO NOTHING",
            [key for key in stored if key not in live],
        )


async def stale_keys(conn: asyncpg.Connection | asyncpg.Pool, for_seconds: float) -> list[str]:
    """The keys no running gateway has made for at least ``for_seconds``."""
    rows = await conn.fetch(
        "SELECT variant_key FROM stale_variant_keys"
        " WHERE since <= now() - make_interval(secs => $1) ORDER BY variant_key",
        float(for_seconds),
    )
    return [row["variant_key"] for row in rows]


async def forget_stale_key(conn: asyncpg.Connection | asyncpg.Pool, variant_key: str) -> None:
    """Drop a stale key whose derivatives are all gone."""
    await conn.execute(
        "DELETE FROM stale_variant_keys WHERE variant_key = $1"
        " AND NOT EXISTS (SELECT 1 FROM derivatives WHERE variant_key = $1)",
        variant_key,
    )


@dataclass(frozen=True)
class Removed:
    derivatives: int
    bytes: int


_SELECTED = "variant_key = ANY($1::text[]) AND ($2::uuid[] IS NULL OR version_id = ANY($2::uuid[]))"


async def remove(
    conn: asyncpg.Connection | asyncpg.Pool,
    variant_keys: Sequence[str],
    version_ids: Sequence[uuid.UUID] | None,
    limit: int,
) -> Removed:
    """Delete up to ``limit`` derivatives with one of ``variant_keys`` (and, given, of one of
    ``version_ids``), listing their blobs in the garbage log in the same statement. Rows a
    renderer holds are skipped (SKIP LOCKED); a render whose row is gone records nothing, its
    blob stays listed."""
    row = await conn.fetchrow(
        "WITH gone AS (DELETE FROM derivatives WHERE (version_id, variant_key) IN ("
        f" SELECT version_id, variant_key FROM derivatives WHERE {_SELECTED}"
        " LIMIT $3 FOR UPDATE SKIP LOCKED) RETURNING profile, storage_key, size),"
        " listed AS (INSERT INTO garbage (profile, storage_key)"
        " SELECT profile, storage_key FROM gone WHERE storage_key IS NOT NULL"
        " ON CONFLICT DO NOTHING)"
        " SELECT count(*) AS derivatives, coalesce(sum(size), 0)::bigint AS bytes FROM gone",
        list(variant_keys),
        list(version_ids) if version_ids is not None else None,
        limit,
    )
    assert row is not None
    return Removed(row["derivatives"], row["bytes"])


async def count(
    conn: asyncpg.Connection | asyncpg.Pool,
    variant_keys: Sequence[str],
    version_ids: Sequence[uuid.UUID] | None,
) -> Removed:
    """What ``remove`` would delete, all batches together."""
    row = await conn.fetchrow(
        "SELECT count(*) AS derivatives, coalesce(sum(size), 0)::bigint AS bytes"
        f" FROM derivatives WHERE {_SELECTED}",
        list(variant_keys),
        list(version_ids) if version_ids is not None else None,
    )
    assert row is not None
    return Removed(row["derivatives"], row["bytes"])


async def remove_old_failures(
    conn: asyncpg.Connection | asyncpg.Pool, older_than_seconds: float, limit: int
) -> int:
    """Delete up to ``limit`` failed-render records whose back-off ended longer ago than
    ``older_than_seconds`` (they hold no blob); the next request renders afresh."""
    found = await conn.fetchval(
        "WITH gone AS (DELETE FROM derivatives WHERE (version_id, variant_key) IN ("
        " SELECT version_id, variant_key FROM derivatives WHERE status = 'failed'"
        " AND next_retry_at < now() - make_interval(secs => $1)"
        " LIMIT $2 FOR UPDATE SKIP LOCKED) RETURNING 1)"
        " SELECT count(*) FROM gone",
        float(older_than_seconds),
        limit,
    )
    return int(found)
