"""Pieces several operations share: bucket lookup, HTTP dates, small XML bodies."""

from __future__ import annotations

from datetime import UTC, datetime

from gateway.api.body import RequestBody
from gateway.api.context import RECENT_BUCKETS, S3Request
from gateway.meta import buckets
from gateway.meta.buckets import Bucket
from gateway.s3 import errors


async def get_bucket(req: S3Request, name: str) -> Bucket:
    bucket = await buckets.get_bucket(req.pool, name)
    if bucket is None:
        raise errors.NoSuchBucket(BucketName=name)
    req.found_bucket = bucket
    req.profile = bucket.profile
    return bucket


def refuse_if_configured(req: S3Request, bucket: Bucket, setting: str, what: str) -> None:
    """Refuse an API change of a bucket setting that the YAML sets (``buckets.<name>.<setting>``):
    there the file is the only source, so a deploy never silently undoes it."""
    configured = req.config.buckets.get(bucket.name)
    if configured is not None and getattr(configured, setting) is not None:
        raise errors.InvalidRequest(
            f"The {what} of bucket {bucket.name} is set in the gateway's configuration file;"
            " change it there."
        )


async def recent_bucket(req: S3Request, name: str) -> Bucket:
    """The bucket as this process saw it a moment ago: for a write whose row commit checks
    that the bucket still exists (see RecentBuckets)."""
    bucket = await req.app[RECENT_BUCKETS].get(req.pool, name)
    if bucket is None:
        raise errors.NoSuchBucket(BucketName=name)
    # Not req.found_bucket: its CORS rules may be a moment old, and a rule change applies at
    # once, so the answer's CORS headers come from a lookup of their own.
    req.profile = bucket.profile
    return bucket


_WEEKDAYS = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")
_MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")


def http_date(moment: datetime) -> str:
    """RFC 9110 IMF-fixdate, as email.utils.format_datetime(usegmt=True) writes it, at
    half its cost (every GET and HEAD sends one)."""
    t = moment.astimezone(UTC)
    return (
        f"{_WEEKDAYS[t.weekday()]}, {t.day:02d} {_MONTHS[t.month - 1]} {t.year:04d}"
        f" {t.hour:02d}:{t.minute:02d}:{t.second:02d} GMT"
    )


async def read_small_body(
    req: S3Request, limit: int | None = None, checksum_headers: bool = True
) -> bytes:
    """A request document (e.g. DeleteObjects XML), size-capped and verified like any body.

    ``limit`` defaults to limits.max_xml_body; ``checksum_headers`` as for RequestBody.
    """
    body = RequestBody(
        req,
        max_size=req.config.limits.max_xml_body if limit is None else limit,
        checksum_headers=checksum_headers,
    )
    parts = [piece async for piece in body]
    data = b"".join(parts)
    body.digests.update(data)
    body.verify()
    return data
