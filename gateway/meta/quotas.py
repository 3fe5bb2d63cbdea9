"""Bucket quotas: the limits kept in a bucket's settings, and the usage they are checked
against (gateway.meta.bucket_usage: objects, their bytes and the bytes of multipart parts in
progress).

A write is checked twice: before its body moves, against its bucket's usage (cheap, but
concurrent writers may each see the same room), and as its row commits, by
gateway_check_quota under a per-bucket lock (exact: see README, "Quotas").
"""

from __future__ import annotations

import functools
import json
from dataclasses import dataclass

import asyncpg

from gateway.errors import QuotaExceededError
from gateway.meta.bucket_usage import Usage

# The SQLSTATE gateway_check_quota raises.
QUOTA_EXCEEDED = "GQ001"


@dataclass(frozen=True)
class Quota:
    max_bytes: int | None = None
    max_objects: int | None = None
    # Set from the configuration file, which then owns it (a reload without it removes it).
    from_config: bool = False

    def to_json(self) -> dict[str, object]:
        value: dict[str, object] = {}
        if self.max_bytes is not None:
            value["max_bytes"] = self.max_bytes
        if self.max_objects is not None:
            value["max_objects"] = self.max_objects
        if self.from_config:
            value["config"] = True
        return value


@functools.lru_cache(maxsize=256)
def parse_quota(document: str) -> Quota:
    """The quota of a bucket row's settings->'quota' text."""
    value = json.loads(document)
    return Quota(value.get("max_bytes"), value.get("max_objects"), bool(value.get("config")))


def excess(quota: Quota, usage: Usage, objects: int, size: int) -> tuple[str, int] | None:
    """(the limit's name, the limit) that adding ``objects`` objects and ``size`` bytes to
    ``usage`` would pass; None if it fits. What does not grow usage always fits."""
    max_objects, max_bytes = quota.max_objects, quota.max_bytes
    if objects > 0 and max_objects is not None and usage.objects + objects > max_objects:
        return "max_objects", max_objects
    if size > 0 and max_bytes is not None and usage.total_bytes + size > max_bytes:
        return "max_bytes", max_bytes
    return None


def refused(exc: asyncpg.PostgresError) -> bool:
    """Whether ``exc`` is gateway_check_quota's refusal."""
    return bool(exc.sqlstate == QUOTA_EXCEEDED)


def exceeded(exc: asyncpg.PostgresError, bucket: str) -> QuotaExceededError:
    """The refusal ``exc`` (see ``refused``) as the gateway's error."""
    limit = "max_objects" if getattr(exc, "message", "") == "objects" else "max_bytes"
    return QuotaExceededError(bucket, limit, int(getattr(exc, "detail", None) or 0))


async def set_quota(
    conn: asyncpg.Connection | asyncpg.Pool, bucket: str, quota: Quota | None
) -> bool:
    """Set (None: remove) a bucket's quota; False if there is no bucket. Writes check it as
    they commit from now on; before their bodies, once their gateway looks the bucket up
    again (within seconds)."""
    if quota is None:
        result = await conn.execute(
            "UPDATE buckets SET settings = settings - 'quota' WHERE name = $1", bucket
        )
    else:
        result = await conn.execute(
            "UPDATE buckets SET settings = jsonb_set(settings, '{quota}', $2::jsonb)"
            " WHERE name = $1",
            bucket,
            quota.to_json(),
        )
    return bool(result == "UPDATE 1")
