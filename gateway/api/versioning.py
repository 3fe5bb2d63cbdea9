"""Versions in operations: which version a request names, and the headers that name one."""

from __future__ import annotations

from gateway.api.common import http_date
from gateway.api.context import S3Request
from gateway.meta import object_rows
from gateway.meta.buckets import Bucket
from gateway.meta.object_rows import ObjectRecord
from gateway.s3 import errors, versions


def version_headers(bucket: Bucket, record: ObjectRecord) -> dict[str, str]:
    """x-amz-version-id (and x-amz-delete-marker) of a version, as S3 sends them: only on a
    bucket whose versioning has been enabled at some point."""
    if bucket.versioning is None:
        return {}
    headers = {"x-amz-version-id": versions.version_id_text(record.version_id, record.null_version)}
    if record.delete_marker:
        headers["x-amz-delete-marker"] = "true"
    return headers


async def requested_version(
    req: S3Request,
    bucket: Bucket,
    key: str,
    current: ObjectRecord | None,
    version_id: str | None,
    argument: str = "versionId",
) -> ObjectRecord:
    """The version ``version_id`` names (None: the current one, ``current``), for a read;
    NoSuchKey, NoSuchVersion, or 405 for a delete marker, as S3 answers."""
    ref = versions.parse_version_id(version_id, argument)
    if ref is None or (
        current is not None
        and (ref.is_null if current.null_version else ref.version_id == current.version_id)
    ):
        if current is None:
            raise await _no_such_key(req, bucket, key)
        return current
    if bucket.versioning is None:
        # Never versioned: the current object is the only version there is, the null one.
        if ref.is_null:
            raise errors.NoSuchKey(Key=key)
        raise errors.NoSuchVersion(Key=key, VersionId=version_id or "")
    found = await object_rows.get_version(req.pool, bucket.name, key, ref.version_id)
    if found is None:
        raise errors.NoSuchVersion(Key=key, VersionId=version_id or "")
    if found.delete_marker:
        refusal = errors.MethodNotAllowed("DELETE")
        refusal.added_headers = {
            **version_headers(bucket, found),
            "Last-Modified": http_date(found.last_modified),
        }
        raise refusal
    return found


async def _no_such_key(req: S3Request, bucket: Bucket, key: str) -> errors.S3Error:
    """NoSuchKey; for a key whose newest version is a delete marker, with that marker's
    headers, as S3 answers."""
    error = errors.NoSuchKey(Key=key)
    if bucket.versioning is not None:
        newest = await object_rows.newest_version(req.pool, bucket.name, key)
        if newest is not None and newest.delete_marker:
            error.added_headers = version_headers(bucket, newest)
    return error
