"""Multipart uploads: CreateMultipartUpload, UploadPart, UploadPartCopy,
CompleteMultipartUpload, AbortMultipartUpload, ListParts (ListMultipartUploads is a listing:
gateway.api.listing).

How parts are stored and an upload becomes an object is the bucket's backend's
(gateway.objects); here requests are parsed and answered.

In-progress uploads belong to writers: every operation here needs a write grant on the bucket.
"""

from __future__ import annotations

import uuid
from dataclasses import replace
from datetime import UTC, datetime
from urllib.parse import quote

from aiohttp import web

from gateway.api import auth, encryption, quotas
from gateway.api.body import RequestBody
from gateway.api.common import get_bucket, read_small_body
from gateway.api.context import S3Request
from gateway.api.copysource import copy_source_segments
from gateway.api.objects import (
    content_type_from_headers,
    metadata_from_headers,
    object_key,
)
from gateway.api.versioning import version_headers
from gateway.errors import UploadGoneError
from gateway.meta import object_rows, uploads
from gateway.meta.buckets import Bucket
from gateway.meta.object_rows import ObjectRecord
from gateway.meta.uploads import Upload
from gateway.objects.backend import Completion, ObjectBackend, WriteTerms
from gateway.s3 import checksums, conditions, errors, multipart_rules, versions, xmlbody
from gateway.s3.multipart_rules import MAX_LISTED
from gateway.s3.xml import (
    PartEntry,
    PartListing,
    complete_multipart_upload_result,
    copy_part_result,
    initiate_multipart_upload_result,
    list_parts_result,
)

# 10,000 parts with ETags and checksums take about 1.5 MiB of XML: a completion body may be
# that large even when limits.max_xml_body is smaller.
COMPLETE_BODY_MIN_LIMIT = 4 * 1024**2


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
    encryption.check_requested(req, bucket, headers)
    sealed_with = encryption.for_write(req, bucket, req.backend(bucket.profile))
    algorithm = headers.get("x-amz-checksum-algorithm")
    kind = multipart_rules.checksum_type(algorithm, headers.get("x-amz-checksum-type"))
    upload = Upload(
        upload_id=uploads.new_upload_id(),
        bucket=bucket.name,
        key=key,
        initiated=datetime.now(UTC),
        content_type=content_type_from_headers(headers),
        metadata=replace(metadata_from_headers(req, headers), customer_key=sealed_with),
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
    encryption.for_part(req, upload.metadata)
    body = RequestBody(
        req,
        max_size=req.config.limits.max_object_size,
        upload_checksum=upload.checksum_algorithm,
    )
    await quotas.check_room(req, bucket, None, body.length, objects=0)
    part = await backend.upload_part(upload, part_number, body)
    return web.Response(headers={"ETag": part.etag, **checksums.response_headers(part.checksums)})


async def upload_part_copy(req: S3Request) -> web.StreamResponse:
    key = object_key(req)
    part_number = multipart_rules.parse_part_number(req.query.get("partNumber", ""))
    bucket = await _writable_bucket(req)
    upload, backend = await _open_upload(req, bucket, key)
    encryption.for_part(req, upload.metadata)
    _, source, segments = await copy_source_segments(
        req, req.headers.get("x-amz-copy-source-range")
    )
    size = sum(segment.length for segment in segments)
    await quotas.check_room(req, bucket, None, size, objects=0)
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
    upload_id = _upload_id(req)
    upload = await uploads.get_upload(req.pool, bucket.name, key, upload_id)
    if upload is None:
        record = await _completed_by(req, bucket, key, upload_id)
    else:
        backend = req.backend(upload.profile or bucket.profile)
        # Variants of an object only its owner's key opens are never rendered.
        eager = req.eager_presets(bucket.name) if upload.metadata.customer_key is None else ()
        terms = WriteTerms(cond, eager)
        completion = Completion(
            requested,
            _declared_object_checksums(req),
            terms,
            null_version=not versions.keeps_versions(bucket.versioning),
        )
        # The parts' bytes are counted already: the completion adds an object, unless it
        # replaces one.
        await quotas.check_room(req, bucket, key, 0)
        try:
            record = await backend.complete_upload(upload, completion)
        except UploadGoneError:
            # Completed by a concurrent attempt of the same client.
            record = await _completed_by(req, bucket, key, upload_id)
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
    headers = version_headers(bucket, record)
    return web.Response(body=body, content_type="application/xml", headers=headers)


async def _completed_by(
    req: S3Request, bucket: Bucket, key: str, upload_id: uuid.UUID
) -> ObjectRecord:
    """The object an earlier completion of this upload made, if it is still the current one:
    a client that lost the answer to its CompleteMultipartUpload retries it, and S3 answers
    the retry as it answered the first. Once the object is replaced or deleted, the upload is
    forgotten (NoSuchUpload)."""
    record = await object_rows.get_object(req.pool, bucket.name, key)
    if record is None or record.metadata.upload_id != str(upload_id):
        raise errors.NoSuchUpload(UploadId=str(upload_id))
    return record


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
