"""The quota check made before a write's body moves: a refusal costs the client no transfer.
The row commit checks again, exactly (gateway.meta.quotas)."""

from __future__ import annotations

from gateway.api.context import S3Request
from gateway.api.middleware import quota_exceeded
from gateway.meta import bucket_usage, object_rows, quotas
from gateway.meta.buckets import Bucket


async def check_room(
    req: S3Request, bucket: Bucket, key: str | None, size: int | None, objects: int = 1
) -> None:
    """QuotaExceeded if adding ``objects`` objects of ``size`` bytes (None: not known yet,
    only the commit checks them) would pass the bucket's quota. Where it would, the object
    ``key`` replaces is looked up and counted out: a replace that does not grow usage fits
    even at a full quota. Buckets without a quota pay nothing."""
    quota = bucket.quota
    if quota is None:
        return
    size = size or 0
    usage = await bucket_usage.usage_of(req.pool, bucket.name)
    over = quotas.excess(quota, usage, objects, size)
    if over is not None and key is not None:
        replaced = await object_rows.object_size(req.pool, bucket.name, key)
        if replaced is not None:
            over = quotas.excess(quota, usage, 0, size - replaced)
    if over is not None:
        raise quota_exceeded(bucket.name, *over)
