"""Multipart uploads: CreateMultipartUpload, UploadPart, UploadPartCopy,
CompleteMultipartUpload, AbortMultipartUpload, ListParts, ListMultipartUploads.

How parts are stored and an upload becomes an object is the bucket's backend's
(gateway.objects); here requests are parsed and answered.

In-progress uploads belong to writers: every operation here needs a write grant on the bucket.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from urllib.parse import quote

from aiohttp import web

from gateway.api import auth
from gateway.api.body import RequestBody
from gateway.api.common import get_bucket, read_small_body
from gateway.api.context import S3Request
from gateway.api.copysource import copy_source_segments
from gateway.api.listing import common_prefix
from gateway.api.objects import (
    content_type_from_headers,
    metadata_from_headers,
    object_key,
)
from gateway.meta import uploads
from gateway.meta.buckets import Bucket
from gateway.meta.object_rows import prefix_upper_bound
from gateway.meta.uploads import ListedUpload, Upload
from gateway.objects.backend import Completion, ObjectBackend, WriteTerms
from gateway.s3 import checksums, conditions, errors, multipart_rules, xmlbody
from gateway.s3.multipart_rules import MAX_LISTED
from gateway.s3.xml import (
    PartEntry,
    PartListing,
    UploadEntry,
    UploadListing,
    complete_multipart_upload_result,
    copy_part_result,
    encoding_url,
    initiate_multipart_upload_result,
    list_multipart_uploads_result,
    list_parts_result,
)

# 10,000 parts with ETags and checksums take about 1.5 MiB of XML: a completion body may be
# that large even when limits.max_xml_body is smaller.
COMPLETE_BODY_MIN_LIMIT = 4 * 1024**2
# Sorts after every upload id: "the uploads of keys after key-marker" as a (key, id) cursor.
_LAST_UPLOAD_ID = uuid.UUID(int=2**128 - 1)


async def _writable_bucket(req: S3Request) -> Bucket:
    assert req.bucket is not None
    auth.require_write(req, req.bucket)
    return await get_bucket(req, req.bucket)


def _upload_id(req: S3Request) -> uuid.UUID:
    raw = req.query.get("uploadId", "")
    upload_id = uploads.parse_upload_id(raw)
    if upload_id is None:
        raise errors.NoSuchUpload(UploadId=raw)
    return upload_id


async def _open_upload(req: S3Request, bucket: Bucket, key: str) -> tuple[Upload, ObjectBackend]:
    """The upload the request names, and the backend of the profile it was created in."""
    upload_id = _upload_id(req)
    upload = await uploads.get_upload(req.pool, bucket.name, key, upload_id)
    if upload is None:
        raise errors.NoSuchUpload(UploadId=str(upload_id))
    return upload, req.backend(upload.profile or bucket.profile)


async def create_multipart_upload(req: S3Request) -> web.StreamResponse:
    key = object_key(req)
    bucket = await _writable_bucket(req)
    headers = req.headers
    algorithm = headers.get("x-amz-checksum-algorithm")
    kind = multipart_rules.checksum_type(algorithm, headers.get("x-amz-checksum-type"))
    upload = Upload(
        upload_id=uploads.new_upload_id(),
        bucket=bucket.name,
        key=key,
        initiated=datetime.now(UTC),
        content_type=content_type_from_headers(headers),
        metadata=metadata_from_headers(req, headers),
        checksum_algorithm=algorithm.strip().upper() if algorithm else None,
        checksum_type=kind,
        owner=req.owner_id,
    )
    upload = await req.backend(bucket.profile).create_upload(upload)
    response_headers = {}
    if upload.checksum_algorithm is not None and kind is not None:
        response_headers["x-amz-checksum-algorithm"] = upload.checksum_algorithm
        response_headers["x-amz-checksum-type"] = kind
    body = initiate_multipart_upload_result(bucket.name, key, str(upload.upload_id))
    return web.Response(body=body, content_type="application/xml", headers=response_headers)


async def upload_part(req: S3Request) -> web.StreamResponse:
    key = object_key(req)
    part_number = multipart_rules.parse_part_number(req.query.get("partNumber", ""))
    bucket = await _writable_bucket(req)
    # Checked before the body is read, so a part for a missing upload is never transferred.
    upload, backend = await _open_upload(req, bucket, key)
    body = RequestBody(
        req,
        max_size=req.config.limits.max_object_size,
        upload_checksum=upload.checksum_algorithm,
    )
    part = await backend.upload_part(upload, part_number, body)
    return web.Response(headers={"ETag": part.etag, **checksums.response_headers(part.checksums)})


async def upload_part_copy(req: S3Request) -> web.StreamResponse:
    key = object_key(req)
    part_number = multipart_rules.parse_part_number(req.query.get("partNumber", ""))
    bucket = await _writable_bucket(req)
    upload, backend = await _open_upload(req, bucket, key)
    source, segments = await copy_source_segments(req, req.headers.get("x-amz-copy-source-range"))
    part = await backend.upload_part_copy(upload, part_number, source, segments)
    body = copy_part_result(part.etag, part.last_modified, part.checksums)
    return web.Response(body=body, content_type="application/xml")


def _declared_object_checksums(req: S3Request) -> dict[str, str]:
    """x-amz-checksum-* of a CompleteMultipartUpload: what the client expects of the object."""
    declared = {}
    for name, value in req.headers.items():
        algorithm = checksums.algorithm_from_header(name)
        if algorithm is not None:
            declared[algorithm] = value.strip()
    return declared


async def complete_multipart_upload(req: S3Request) -> web.StreamResponse:
    key = object_key(req)
    bucket = await _writable_bucket(req)
    limit = max(req.config.limits.max_xml_body, COMPLETE_BODY_MIN_LIMIT)
    requested = xmlbody.parse_complete_multipart_upload(
        await read_small_body(req, limit=limit, checksum_headers=False)
    )
    cond = conditions.write_conditions(req.headers)
    upload, backend = await _open_upload(req, bucket, key)
    eager = req.eager_presets(bucket.name)
    completion = Completion(requested, _declared_object_checksums(req), WriteTerms(cond, eager))
    record = await backend.complete_upload(upload, completion)
    if eager:
        req.eager_enqueued()
    host = req.headers.get("Host", "")
    path = f"/{quote(key)}" if req.virtual_host else f"/{bucket.name}/{quote(key)}"
    body = complete_multipart_upload_result(
        f"{req.http.scheme}://{host}{path}",
        bucket.name,
        key,
        record.etag,
        record.checksums,
        record.metadata.checksum_type,
    )
    return web.Response(body=body, content_type="application/xml")


async def abort_multipart_upload(req: S3Request) -> web.StreamResponse:
    key = object_key(req)
    bucket = await _writable_bucket(req)
    upload, backend = await _open_upload(req, bucket, key)
    await backend.abort_upload(upload)
    return web.Response(status=204)


async def list_parts(req: S3Request) -> web.StreamResponse:
    key = object_key(req)
    bucket = await _writable_bucket(req)
    upload, _ = await _open_upload(req, bucket, key)
    query = req.query
    max_parts = min(
        multipart_rules.parse_list_argument(query.get("max-parts"), "max-parts", MAX_LISTED),
        MAX_LISTED,
    )
    marker = multipart_rules.parse_list_argument(
        query.get("part-number-marker"), "part-number-marker", 0
    )
    parts = await uploads.list_parts(req.pool, upload.upload_id, marker, max_parts + 1)
    truncated = len(parts) > max_parts
    parts = parts[:max_parts]
    listing = PartListing(
        bucket=bucket.name,
        key=key,
        upload_id=str(upload.upload_id),
        owner_id=upload.owner or req.owner_id,
        part_number_marker=marker,
        next_part_number_marker=parts[-1].part_number if parts else None,
        max_parts=max_parts,
        is_truncated=truncated,
        parts=[
            PartEntry(part.part_number, part.last_modified, part.etag, part.size, part.checksums)
            for part in parts
        ],
        checksum_algorithm=upload.checksum_algorithm,
        checksum_type=upload.checksum_type,
    )
    return web.Response(body=list_parts_result(listing), content_type="application/xml")


async def _collect_uploads(
    req: S3Request,
    bucket: str,
    prefix: str,
    delimiter: str | None,
    after: tuple[str, uuid.UUID] | None,
    max_uploads: int,
) -> tuple[list[ListedUpload], list[str], bool]:
    """One page: (uploads, common prefixes, truncated), resuming after ``after``."""
    found: list[ListedUpload] = []
    prefixes: list[str] = []
    upper = prefix_upper_bound(prefix)
    start = ""
    if after is not None:
        rolled_up = common_prefix(after[0], prefix, delimiter)
        if rolled_up is not None:
            # A marker inside a common prefix: that prefix was listed already.
            past_prefix = prefix_upper_bound(rolled_up)
            if past_prefix is None:
                return found, prefixes, False
            after, start = None, past_prefix
    if delimiter is None:
        wanted = max_uploads + 1
        rows = await uploads.list_uploads(req.pool, bucket, prefix, upper, after, start, wanted)
        return rows[:max_uploads], prefixes, len(rows) == wanted
    while True:
        wanted = max_uploads - len(found) - len(prefixes) + 1
        rows, stopped = await uploads.list_uploads_rolled_up(
            req.pool, bucket, prefix, delimiter, after, start, wanted
        )
        for row in rows:
            if len(found) + len(prefixes) == max_uploads:
                return found, prefixes, True
            rolled_up = common_prefix(row.key, prefix, delimiter)
            if rolled_up is None:
                found.append(row)
            else:
                prefixes.append(rolled_up)
        if not stopped:
            return found, prefixes, False
        # Only past a delimiter of U+10FFFF characters: the walk cannot skip such a prefix.
        next_start = prefix_upper_bound(prefixes[-1])
        if next_start is None:
            return found, prefixes, False
        after, start = None, next_start


async def list_multipart_uploads(req: S3Request) -> web.StreamResponse:
    bucket = await _writable_bucket(req)
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
    after = None
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
        after = (key_marker, marker_id)
    found, prefixes, truncated = await _collect_uploads(
        req, bucket.name, prefix, delimiter, after, max_uploads
    )
    # Where the next page resumes: after the last upload, or after the last common prefix.
    next_key = next_id = None
    last_upload = (found[-1].key, str(found[-1].upload_id)) if found else None
    if prefixes and (last_upload is None or prefixes[-1] > last_upload[0]):
        next_key, next_id = prefixes[-1], ""
    elif last_upload is not None:
        next_key, next_id = last_upload
    listing = UploadListing(
        bucket=bucket.name,
        prefix=prefix,
        delimiter=delimiter,
        key_marker=key_marker,
        upload_id_marker=upload_id_marker,
        next_key_marker=next_key,
        next_upload_id_marker=next_id,
        max_uploads=max_uploads,
        is_truncated=truncated,
        uploads=[
            UploadEntry(
                key=row.key,
                upload_id=str(row.upload_id),
                initiated=row.initiated,
                owner_id=row.owner or req.owner_id,
                checksum_algorithm=row.checksum_algorithm,
                checksum_type=row.checksum_type,
            )
            for row in found
        ],
        common_prefixes=prefixes,
        encoding_url=url_encoded,
    )
    return web.Response(body=list_multipart_uploads_result(listing), content_type="application/xml")
