"""The source of CopyObject and UploadPartCopy: x-amz-copy-source, its x-amz-copy-source-if-*
conditions and, for a part, its x-amz-copy-source-range."""

from __future__ import annotations

from urllib.parse import unquote

from gateway.api import auth, encryption
from gateway.api.context import S3Request
from gateway.api.versioning import requested_version
from gateway.errors import ObjectChangedError
from gateway.meta import object_rows
from gateway.meta.buckets import Bucket
from gateway.meta.object_rows import ObjectRecord
from gateway.objects import reading
from gateway.objects.reading import Segment
from gateway.s3 import conditions, errors, names, ranges
from gateway.s3.conditions import Conditions
from gateway.s3.query import parse_query


def parse_copy_source(value: str) -> tuple[str, str, str | None]:
    """(bucket, key, version id or None) of an x-amz-copy-source: ``bucket/key``, URL-encoded,
    optionally followed by ``?versionId=ID``."""
    path, _, query = value.partition("?")
    source = unquote(path).lstrip("/")
    bucket, _, key = source.partition("/")
    if not bucket or not key:
        raise errors.InvalidArgument(
            "Copy Source must mention the source bucket and key: sourcebucket/sourcekey",
            ArgumentName="x-amz-copy-source",
            ArgumentValue=value,
        )
    return bucket, key, parse_query(query).get("versionId")


async def copy_source(req: S3Request) -> tuple[Bucket, ObjectRecord]:
    """The bucket and the object version x-amz-copy-source names (its versionId, else the
    current one), once the caller may read it and it meets the x-amz-copy-source-if-*
    conditions."""
    headers = req.headers
    source_bucket, source_key, version_id = parse_copy_source(headers["x-amz-copy-source"])
    names.validate_key(source_key)
    found_bucket, source = await object_rows.lookup(req.pool, source_bucket, source_key)
    if found_bucket is None:
        raise errors.NoSuchBucket(BucketName=source_bucket)
    auth.require_object_read(req, found_bucket, source_key, source)
    named = await requested_version(
        req, found_bucket, source_key, source, version_id, "x-amz-copy-source"
    )
    if named is not source:
        auth.require_object_read(req, found_bucket, source_key, named)
    source = named
    conditions.check_copy_source(
        Conditions.from_headers(headers, prefix="x-amz-copy-source-"),
        source.etag,
        source.last_modified,
    )
    encryption.for_read(req, source, encryption.COPY_SOURCE_CUSTOMER_PREFIX)
    return found_bucket, source


async def copy_source_segments(
    req: S3Request, range_header: str | None
) -> tuple[Bucket, ObjectRecord, list[Segment]]:
    """The copy source's bucket, the source and the segments of the bytes to copy (all, or
    ``range_header``'s)."""
    for _attempt in range(reading.READ_ATTEMPTS):
        source_bucket, source = await copy_source(req)
        if range_header is None:
            start, length = 0, source.size
        else:
            byte_range = ranges.parse_copy_source_range(range_header, source.size)
            start, length = byte_range.start, byte_range.length
        if length > req.config.limits.max_object_size:
            raise errors.InvalidRequest(
                "The specified copy source is larger than the maximum allowable size for a copy"
                f" source: {req.config.limits.max_object_size}"
            )
        segments = await reading.object_segments(req.pool, source, start, length)
        if segments is not None:
            return source_bucket, source, segments
    raise ObjectChangedError()
