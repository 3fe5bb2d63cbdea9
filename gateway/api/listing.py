"""ListObjects (v1), ListObjectsV2, ListObjectVersions and ListMultipartUploads: prefix,
delimiter, pagination, encoding-type. The paging itself is gateway.api.paging's, the same for
all four."""

from __future__ import annotations

import base64
import binascii
import uuid

import asyncpg
from aiohttp import web

from gateway.api import auth
from gateway.api.common import get_bucket
from gateway.api.context import S3Request
from gateway.api.paging import Fetch, Marker, Page, common_prefix, paginate
from gateway.meta import object_rows, uploads
from gateway.meta.object_rows import ListedObject, ListedVersion, prefix_upper_bound
from gateway.meta.uploads import ListedUpload
from gateway.s3 import errors, multipart_rules, names, versions
from gateway.s3.multipart_rules import MAX_LISTED
from gateway.s3.xml import (
    Listing,
    ListingEntry,
    UploadEntry,
    UploadListing,
    VersionEntry,
    VersionListing,
    encoding_url,
    list_multipart_uploads_result,
    list_objects_v1,
    list_objects_v2,
    list_versions_result,
)

MAX_KEYS = 1000


def _objects(
    pool: asyncpg.Pool, bucket: str, prefix: str, delimiter: str | None
) -> Fetch[str, ListedObject]:
    """A bucket's objects for the paginator; an object's position is its key."""

    async def fetch(after: str | None, start: str, limit: int) -> tuple[list[ListedObject], bool]:
        key, inclusive = (start, True) if after is None else (after, False)
        if delimiter is None:
            found = await object_rows.list_objects(pool, bucket, prefix, key, inclusive, limit)
            return found, False
        return await object_rows.list_rolled_up(
            pool, bucket, prefix, delimiter, key, inclusive, limit
        )

    return fetch


async def _objects_page(
    req: S3Request, prefix: str, delimiter: str | None, cursor: str | None, max_keys: int
) -> Page[ListedObject]:
    """One page of ListObjects(V2), resuming after ``cursor`` (a key or a common prefix)."""
    assert req.bucket is not None
    if max_keys == 0:
        # S3 answers max-keys=0 with an empty page that is not truncated, however full the bucket.
        return Page()
    marker = Marker(cursor, cursor) if cursor is not None else None
    fetch = _objects(req.pool, req.bucket, prefix, delimiter)
    return await paginate(fetch, prefix, delimiter, marker, max_keys)


def _max_keys(req: S3Request) -> int:
    raw = req.query.get("max-keys")
    if raw is None:
        return MAX_KEYS
    try:
        value = int(raw)
    except ValueError:
        value = -1
    if value < 0:
        raise errors.InvalidArgument(
            "Provided max-keys not an integer or within integer range",
            ArgumentName="max-keys",
            ArgumentValue=raw,
        )
    return min(value, MAX_KEYS)


def encode_token(cursor: str) -> str:
    return base64.urlsafe_b64encode(cursor.encode("utf-8", "surrogatepass")).decode("ascii")


def decode_token(token: str) -> str:
    try:
        cursor = base64.urlsafe_b64decode(token.encode("ascii")).decode("utf-8")
        names.check_text("continuation-token", cursor)
        return cursor
    except (binascii.Error, UnicodeError, ValueError, errors.InvalidArgument):
        raise errors.InvalidArgument(
            "The continuation token provided is incorrect",
            ArgumentName="continuation-token",
            ArgumentValue=token,
        ) from None


def _listing(
    req: S3Request, page: Page[ListedObject], prefix: str, delimiter: str | None, max_keys: int
) -> Listing:
    assert req.bucket is not None
    return Listing(
        bucket=req.bucket,
        prefix=prefix,
        delimiter=delimiter,
        max_keys=max_keys,
        contents=[
            ListingEntry(row.key, row.last_modified, row.etag, row.size) for row in page.entries
        ],
        common_prefixes=page.common_prefixes,
        is_truncated=page.is_truncated,
        encoding_url=encoding_url(req.query.get("encoding-type")),
        owner_id=req.owner_id,
    )


async def _start(req: S3Request) -> tuple[str, str | None, int]:
    assert req.bucket is not None
    bucket = await get_bucket(req, req.bucket)
    auth.require_list(req, bucket)
    prefix = req.query.get("prefix", "")
    delimiter = req.query.get("delimiter") or None
    for name in ("prefix", "delimiter", "start-after", "marker"):
        names.check_text(name, req.query.get(name, ""))
    return prefix, delimiter, _max_keys(req)


async def list_objects_v2_handler(req: S3Request) -> web.StreamResponse:
    prefix, delimiter, max_keys = await _start(req)
    token = req.query.get("continuation-token")
    start_after = req.query.get("start-after")
    if token is not None:
        cursor: str | None = decode_token(token)
    else:
        cursor = start_after or None
    page = await _objects_page(req, prefix, delimiter, cursor, max_keys)
    next_token = encode_token(page.last_key) if page.is_truncated and page.last_key else None
    body = list_objects_v2(
        _listing(req, page, prefix, delimiter, max_keys),
        continuation_token=token,
        next_continuation_token=next_token,
        start_after=start_after,
        fetch_owner=req.query.get("fetch-owner", "").lower() == "true",
    )
    return web.Response(body=body, content_type="application/xml")


async def list_objects_handler(req: S3Request) -> web.StreamResponse:
    prefix, delimiter, max_keys = await _start(req)
    marker = req.query.get("marker", "")
    page = await _objects_page(req, prefix, delimiter, marker or None, max_keys)
    # S3 returns NextMarker only with a delimiter; without one clients resume from the last key.
    next_marker = page.last_key if page.is_truncated and delimiter else None
    body = list_objects_v1(_listing(req, page, prefix, delimiter, max_keys), marker, next_marker)
    return web.Response(body=body, content_type="application/xml")


# Sorts after every upload id: "the uploads of keys after key-marker" as a (key, id) position.
_LAST_UPLOAD_ID = uuid.UUID(int=2**128 - 1)


def _uploads(
    pool: asyncpg.Pool, bucket: str, prefix: str, delimiter: str | None
) -> Fetch[tuple[str, uuid.UUID], ListedUpload]:
    """A bucket's in-progress uploads for the paginator, by key and then initiation."""
    upper = prefix_upper_bound(prefix)

    async def fetch(
        after: tuple[str, uuid.UUID] | None, start: str, limit: int
    ) -> tuple[list[ListedUpload], bool]:
        if delimiter is None:
            found = await uploads.list_uploads(pool, bucket, prefix, upper, after, start, limit)
            return found, False
        return await uploads.list_uploads_rolled_up(
            pool, bucket, prefix, delimiter, after, start, limit
        )

    return fetch


async def list_multipart_uploads(req: S3Request) -> web.StreamResponse:
    assert req.bucket is not None
    # In-progress uploads belong to writers, as in gateway.api.multipart.
    auth.require_write(req, req.bucket)
    bucket = await get_bucket(req, req.bucket)
    query = req.query
    prefix = query.get("prefix", "")
    delimiter = query.get("delimiter") or None
    max_uploads = min(
        multipart_rules.parse_list_argument(query.get("max-uploads"), "max-uploads", MAX_LISTED),
        MAX_LISTED,
    )
    url_encoded = encoding_url(query.get("encoding-type"))
    key_marker = query.get("key-marker", "")
    # Without a key-marker S3 ignores upload-id-marker.
    upload_id_marker = query.get("upload-id-marker", "") if key_marker else ""
    marker = None
    if key_marker:
        marker_id = _LAST_UPLOAD_ID
        if upload_id_marker:
            parsed = uploads.parse_upload_id(upload_id_marker)
            if parsed is None:
                raise errors.InvalidArgument(
                    "Invalid uploadId marker",
                    ArgumentName="upload-id-marker",
                    ArgumentValue=upload_id_marker,
                )
            marker_id = parsed
        marker = Marker(key_marker, (key_marker, marker_id))
    fetch = _uploads(req.pool, bucket.name, prefix, delimiter)
    page = await paginate(fetch, prefix, delimiter, marker, max_uploads)
    # Where the next page resumes: after the last upload, or after the last common prefix.
    next_key = next_id = None
    if isinstance(page.last, str):
        next_key, next_id = page.last, ""
    elif page.last is not None:
        next_key, next_id = page.last.key, str(page.last.upload_id)
    listing = UploadListing(
        bucket=bucket.name,
        prefix=prefix,
        delimiter=delimiter,
        key_marker=key_marker,
        upload_id_marker=upload_id_marker,
        next_key_marker=next_key,
        next_upload_id_marker=next_id,
        max_uploads=max_uploads,
        is_truncated=page.is_truncated,
        uploads=[
            UploadEntry(
                key=row.key,
                upload_id=str(row.upload_id),
                initiated=row.initiated,
                owner_id=row.owner or req.owner_id,
                checksum_algorithm=row.checksum_algorithm,
                checksum_type=row.checksum_type,
            )
            for row in page.entries
        ],
        common_prefixes=page.common_prefixes,
        encoding_url=url_encoded,
    )
    return web.Response(body=list_multipart_uploads_result(listing), content_type="application/xml")


def _versions(
    pool: asyncpg.Pool, bucket: str, prefix: str, delimiter: str | None
) -> Fetch[tuple[str, int], ListedVersion]:
    """A bucket's versions for the paginator, by key and then newest first.

    With a delimiter a batch ends at the first version that rolls up into a common prefix
    (reported as a stop), so the paginator goes on past that prefix: one query per common
    prefix, where object listings walk past many in one (gateway.meta.rollup).
    """

    async def fetch(
        after: tuple[str, int] | None, start: str, limit: int
    ) -> tuple[list[ListedVersion], bool]:
        found = await object_rows.list_versions(pool, bucket, prefix, after, start, limit)
        if delimiter is None:
            return found, False
        for index, entry in enumerate(found):
            if common_prefix(entry.key, prefix, delimiter) is not None:
                return found[: index + 1], True
        return found, False

    return fetch


async def list_object_versions(req: S3Request) -> web.StreamResponse:
    """ListObjectVersions: every version and delete marker, current or not, with prefix,
    delimiter, key-marker and version-id-marker paging, max-keys and encoding-type."""
    prefix, delimiter, max_keys = await _start(req)
    assert req.bucket is not None
    query = req.query
    url_encoded = encoding_url(query.get("encoding-type"))
    key_marker = query.get("key-marker", "")
    names.check_text("key-marker", key_marker)
    # Without a key-marker S3 ignores version-id-marker.
    version_id_marker = query.get("version-id-marker", "") if key_marker else ""
    marker = None
    if key_marker:
        # After every version of key-marker, unless a version of it is named.
        seq = -1
        if version_id_marker:
            ref = versions.parse_version_id(version_id_marker, "version-id-marker")
            assert ref is not None
            found = await object_rows.version_seq(req.pool, req.bucket, key_marker, ref.version_id)
            if found is None:
                raise errors.InvalidArgument(
                    "Invalid version id specified",
                    ArgumentName="version-id-marker",
                    ArgumentValue=version_id_marker,
                )
            seq = found
        marker = Marker(key_marker, (key_marker, seq))
    page: Page[ListedVersion] = Page()
    if max_keys:
        fetch = _versions(req.pool, req.bucket, prefix, delimiter)
        page = await paginate(fetch, prefix, delimiter, marker, max_keys)
    # Where the next page resumes: after the last version, or after the last common prefix.
    next_key = next_id = None
    if page.is_truncated:
        if isinstance(page.last, str):
            next_key = page.last
        elif page.last is not None:
            next_key = page.last.key
            next_id = versions.version_id_text(page.last.version_id, page.last.null_version)
    listing = VersionListing(
        bucket=req.bucket,
        prefix=prefix,
        delimiter=delimiter,
        key_marker=key_marker,
        version_id_marker=version_id_marker,
        next_key_marker=next_key,
        next_version_id_marker=next_id,
        max_keys=max_keys,
        is_truncated=page.is_truncated,
        versions=[
            VersionEntry(
                key=row.key,
                version_id=versions.version_id_text(row.version_id, row.null_version),
                is_latest=row.is_latest,
                last_modified=row.last_modified,
                delete_marker=row.delete_marker,
                etag=row.etag,
                size=row.size,
            )
            for row in page.entries
        ],
        common_prefixes=page.common_prefixes,
        encoding_url=url_encoded,
        owner_id=req.owner_id,
    )
    return web.Response(body=list_versions_result(listing), content_type="application/xml")
