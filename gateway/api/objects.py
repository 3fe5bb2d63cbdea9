"""Object operations: PutObject, GetObject, HeadObject, DeleteObject, DeleteObjects, CopyObject."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace
from datetime import datetime

from aiohttp import web
from multidict import CIMultiDict

from gateway.api import auth, copysource, encryption, quotas
from gateway.api.body import RequestBody
from gateway.api.common import get_bucket, http_date, read_small_body, recent_bucket
from gateway.api.context import LOOKUPS, STORES, S3Request
from gateway.api.middleware import SENT_RESPONSE, s3_error_of
from gateway.api.streaming import send_segments
from gateway.api.versioning import requested_version, version_headers
from gateway.errors import ObjectChangedError, StoredObjectChangedError
from gateway.meta import object_rows
from gateway.meta.buckets import Bucket
from gateway.meta.object_rows import DEFAULT_CONTENT_TYPE, Chunk, ObjectMetadata, ObjectRecord
from gateway.objects import reading
from gateway.objects.backend import IncomingBody, NewObject, WriteTerms
from gateway.objects.reading import Segment
from gateway.s3 import (
    acl,
    checksums,
    conditions,
    errors,
    mime,
    multipart_rules,
    names,
    ranges,
    tagging,
    versions,
    xmlbody,
)
from gateway.s3.acl import PRIVATE
from gateway.s3.conditions import Conditions, Precondition
from gateway.s3.query import has_control_characters
from gateway.s3.xml import Deleted, DeleteError, copy_object_result, delete_result
from gateway.storage.local import INLINE_READ_MAX

# Standard headers stored with an object and returned on GET/HEAD.
STORED_HEADERS = (
    "cache-control",
    "content-disposition",
    "content-encoding",
    "content-language",
    "expires",
)
# response-* query parameters and the header each overrides (GetObject).
RESPONSE_OVERRIDES = {
    "response-content-type": "Content-Type",
    "response-content-language": "Content-Language",
    "response-expires": "Expires",
    "response-cache-control": "Cache-Control",
    "response-content-disposition": "Content-Disposition",
    "response-content-encoding": "Content-Encoding",
}
META_PREFIX = "x-amz-meta-"


def object_key(req: S3Request) -> str:
    assert req.key is not None
    names.validate_key(req.key)
    return req.key


def metadata_from_headers(req: S3Request, headers: Mapping[str, str]) -> ObjectMetadata:
    user = {}
    size = 0
    for name, value in headers.items():
        lower = name.lower()
        if lower.startswith(META_PREFIX):
            value = mime.stored_value(value)
            user[lower[len(META_PREFIX) :]] = value
            size += len(lower) - len(META_PREFIX) + len(value.encode("utf-8", "surrogatepass"))
    if size > req.config.limits.max_metadata_size:
        raise errors.MetadataTooLarge(
            Size=str(size), MaxSizeAllowed=str(req.config.limits.max_metadata_size)
        )
    stored = {}
    for name in STORED_HEADERS:
        header = headers.get(name)
        if name == "content-encoding" and header is not None:
            # aws-chunked describes the transfer, not the object.
            codings = [c.strip() for c in header.split(",") if c.strip().lower() != "aws-chunked"]
            header = ", ".join(codings) or None
        if header is not None:
            stored[name] = header
    tagging_header = headers.get("x-amz-tagging")
    return ObjectMetadata(
        user=user,
        headers=stored,
        acl=acl.acl_from_headers(headers) or PRIVATE,
        tags=tagging.from_header(tagging_header) if tagging_header is not None else (),
    )


def content_type_from_headers(headers: Mapping[str, str]) -> str:
    return headers.get("Content-Type") or DEFAULT_CONTENT_TYPE


def object_headers(record: ObjectRecord) -> CIMultiDict[str]:
    headers: CIMultiDict[str] = CIMultiDict()
    headers["ETag"] = record.etag
    headers["Last-Modified"] = http_date(record.last_modified)
    headers["Content-Type"] = record.content_type
    headers["Accept-Ranges"] = "bytes"
    for name, value in record.headers.items():
        headers[name] = value
    for name, value in record.user_metadata.items():
        headers[META_PREFIX + name] = mime.header_value(value)
    if record.metadata.tags:
        headers["x-amz-tagging-count"] = str(len(record.metadata.tags))
    return headers


async def readable_object(req: S3Request) -> tuple[Bucket, ObjectRecord]:
    assert req.bucket is not None
    key = object_key(req)
    bucket, record = await req.app[LOOKUPS].lookup(req.bucket, key)
    if bucket is not None and record is None and req.query.get("versionId", "null") == "null":
        # Adopted objects are private: only who could read them anyway makes the upstream
        # look.
        auth.require_object_read(req, bucket, key, None)
        record = await req.backend(bucket.profile).adopt(bucket, key)
    return await readable(req, key, bucket, record)


async def readable(
    req: S3Request, key: str, bucket: Bucket | None, record: ObjectRecord | None
) -> tuple[Bucket, ObjectRecord]:
    """The looked-up bucket and the version the request names (``record``: the current
    one) if the requester may read them, else the S3 error."""
    if bucket is None:
        raise errors.NoSuchBucket(BucketName=req.bucket or "")
    req.found_bucket = bucket
    req.profile = bucket.profile
    auth.require_object_read(req, bucket, key, record)
    named = await requested_version(req, bucket, key, record, req.query.get("versionId"))
    if named is not record:
        auth.require_object_read(req, bucket, key, named)
    record = named
    encryption.for_read(req, record)
    if record.metadata.customer_key is not None and "variant" in req.query:
        raise errors.InvalidRequest(
            "Variants are not available for objects encrypted with customer-provided keys."
        )
    return bucket, record


def check_read_conditions(
    req: S3Request, etag: str, last_modified: datetime, headers: Mapping[str, str] | None = None
) -> None:
    """Raise 412 or 304 as the request's conditional headers decide for this representation.

    ``headers``: what a 304 must repeat besides the validators (Cache-Control, Vary).
    """
    cond = Conditions.from_headers(req.headers)
    outcome, header = conditions.decide(cond, etag, last_modified)
    if outcome is Precondition.FAILED:
        raise errors.PreconditionFailed(Condition=header or "")
    if outcome is Precondition.NOT_MODIFIED:
        raise _NotModified(etag, last_modified, headers or {})


class _NotModified(errors.S3Error):
    code = "NotModified"
    status = 304
    default_message = "Not Modified"

    def __init__(self, etag: str, last_modified: datetime, extra: Mapping[str, str]) -> None:
        super().__init__()
        self._headers = {**extra, "ETag": etag, "Last-Modified": http_date(last_modified)}

    def headers(self) -> dict[str, str]:
        # RFC 9110 §15.4.5: a 304 repeats the validators, and Cache-Control and Vary.
        return dict(self._headers)


def apply_overrides(req: S3Request, headers: CIMultiDict[str]) -> None:
    overrides = {name: req.query[name] for name in RESPONSE_OVERRIDES if name in req.query}
    if not overrides:
        return
    if req.credential is None:
        raise errors.InvalidRequest(
            "Request specific response headers cannot be used for anonymous GET requests."
        )
    for name, value in overrides.items():
        # A header value cannot carry control characters (CR/LF would split the response).
        if has_control_characters(value):
            raise errors.InvalidArgument(
                f"Invalid value for {name}",
                ArgumentName=name,
                ArgumentValue=value.encode("unicode_escape").decode("ascii"),
            )
        headers[RESPONSE_OVERRIDES[name]] = value


@dataclass(frozen=True)
class ObjectRead:
    """What a GET or HEAD answers: status, headers, and the segments of the body."""

    status: int
    headers: CIMultiDict[str]
    length: int
    # None for HEAD.
    segments: list[Segment] | None
    # The object read, when the body is the object's own (not a variant's).
    record: ObjectRecord | None = None


def _requested_part(req: S3Request) -> int | None:
    raw = req.query.get("partNumber")
    if raw is None:
        return None
    part_number = multipart_rules.parse_part_number(raw)
    if "Range" in req.headers:
        raise errors.InvalidRequest(
            "Cannot specify both Range header and partNumber query parameter"
        )
    return part_number


async def _part_range(
    req: S3Request, record: ObjectRecord, part_number: int
) -> tuple[ranges.ByteRange | None, Chunk | None] | None:
    """(the bytes of that part, its chunk); None if the object was replaced meanwhile.

    A single-part object has one part, the whole object.
    """
    if record.parts_count is None:
        if part_number != 1:
            raise errors.InvalidPartNumber(PartNumberRequested=str(part_number))
        return (ranges.ByteRange(0, record.size - 1) if record.size else None), None
    exists, chunk = await object_rows.get_chunk(req.pool, record.version_id, part_number)
    if not exists:
        return None
    if chunk is None:
        raise errors.InvalidPartNumber(PartNumberRequested=str(part_number))
    if chunk.size == 0:
        return None, chunk
    end = chunk.start_offset + chunk.size - 1
    return ranges.ByteRange(chunk.start_offset, end), chunk


async def plan_read(req: S3Request, with_segments: bool) -> ObjectRead:
    part_number = _requested_part(req)
    checksum_mode = req.headers.get("x-amz-checksum-mode", "").upper() == "ENABLED"
    for _attempt in range(reading.READ_ATTEMPTS):
        bucket, record = await readable_object(req)
        check_read_conditions(req, record.etag, record.last_modified)
        headers = object_headers(record)
        headers.update(version_headers(bucket, record))
        part: Chunk | None = None
        if part_number is None:
            byte_range = ranges.parse_range(req.headers.get("Range"), record.size)
            whole = byte_range is None
        else:
            found = await _part_range(req, record, part_number)
            if found is None:
                continue
            byte_range, part = found
            whole = part is None
            if record.parts_count is not None:
                headers["x-amz-mp-parts-count"] = str(record.parts_count)
        start, length = (byte_range.start, byte_range.length) if byte_range else (0, record.size)
        if byte_range is not None:
            headers["Content-Range"] = byte_range.content_range(record.size)
        if checksum_mode and whole:
            headers.update(checksums.response_headers(record.checksums, record.checksum_type))
        elif checksum_mode and part is not None:
            # A part's own checksum lets the client verify the bytes of that part.
            headers.update(checksums.response_headers(part.checksums))
        apply_overrides(req, headers)
        segments = None
        if with_segments:
            if part is not None and record.storage_key is None:
                segments = reading.chunk_segments(part)
            else:
                segments = await reading.object_segments(req.pool, record, start, length)
                if segments is None:
                    continue
        status = 206 if byte_range else 200
        return ObjectRead(status, headers, length, segments, record)
    raise ObjectChangedError()


async def head_object(req: S3Request) -> web.StreamResponse:
    return await answer_read(req, await plan_read(req, with_segments=False))


async def get_object(req: S3Request) -> web.StreamResponse:
    for _attempt in range(reading.READ_ATTEMPTS):
        read = await plan_read(req, with_segments=True)
        try:
            return await answer_read(req, read)
        except StoredObjectChangedError:
            if read.record is None or req.http.get(SENT_RESPONSE) is not None:
                raise
            # Another tool replaced or deleted the object in storage: record that, then read
            # what is there now.
            await req.backend(read.record.profile).reconcile(read.record)
    raise ObjectChangedError()


async def answer_read(req: S3Request, read: ObjectRead) -> web.StreamResponse:
    """The response of a planned GET (with segments) or HEAD (without)."""
    if read.segments is None:
        # A StreamResponse keeps the Content-Length we set (a Response would count its empty
        # body).
        response = web.StreamResponse(status=read.status, headers=read.headers)
        response.content_length = read.length
        return response
    if read.length <= INLINE_READ_MAX:
        body = await reading.read_small(req.app[STORES], read.segments)
        return web.Response(status=read.status, body=body, headers=read.headers)
    response = web.StreamResponse(status=read.status, headers=read.headers)
    response.content_length = read.length
    await send_segments(req, response, read.segments)
    return response


async def put_object(req: S3Request) -> web.StreamResponse:
    assert req.bucket is not None
    key = object_key(req)
    auth.require_write(req, req.bucket)
    bucket = await recent_bucket(req, req.bucket)
    body = RequestBody(req, max_size=req.config.limits.max_object_size)
    record = await write_object(req, bucket, key, req.headers, body)
    return web.Response(
        headers={
            "ETag": record.etag,
            **checksums.response_headers(record.checksums),
            **version_headers(bucket, record),
        }
    )


async def write_object(
    req: S3Request, bucket: Bucket, key: str, headers: Mapping[str, str], body: IncomingBody
) -> ObjectRecord:
    """Store ``body`` as ``key``: the write of PutObject and of POST Object (whose form fields
    are its ``headers``). ``headers`` say the object's content type, stored headers,
    x-amz-meta-* metadata, ACL (x-amz-acl) and any If-Match / If-None-Match."""
    encryption.check_requested(req, bucket, headers)
    backend = req.backend(bucket.profile)
    sealed_with = encryption.for_write(req, bucket, backend, headers)
    metadata = replace(metadata_from_headers(req, headers), customer_key=sealed_with)
    # Before the first byte is read (the answer then closes the connection).
    await quotas.check_room(req, bucket, key, body.length)
    new = NewObject(
        bucket.name,
        key,
        content_type_from_headers(headers),
        metadata,
        null_version=not versions.keeps_versions(bucket.versioning),
    )
    cond = conditions.write_conditions(headers)
    # Variants of an object only its owner's key opens are never rendered.
    eager = req.eager_presets(bucket.name) if sealed_with is None else ()
    record = await backend.put(new, body, WriteTerms(cond, eager))
    if eager:
        req.eager_enqueued()
    return record


async def delete_object(req: S3Request) -> web.StreamResponse:
    assert req.bucket is not None
    key = object_key(req)
    auth.require_write(req, req.bucket)
    bucket = await get_bucket(req, req.bucket)
    version_id = req.query.get("versionId")
    headers = await _delete(req, bucket, key, versions.parse_version_id(version_id))
    # Deleting a missing key succeeds, as in S3.
    return web.Response(status=204, headers=headers)


async def _delete(
    req: S3Request, bucket: Bucket, key: str, ref: versions.VersionRef | None
) -> dict[str, str]:
    """Delete ``key`` (``ref``: one version of it, for good) as S3 does on the bucket's
    versioning state; the response headers that say what was deleted or written."""
    backend = req.backend(bucket.profile)
    if ref is not None:
        if bucket.versioning is None and ref.version_id is not None:
            # Never versioned: there is no version but the null one.
            raise errors.NoSuchVersion(Key=key, VersionId=str(ref.version_id))
        outcome = await backend.delete_version(bucket.name, key, ref.version_id)
        if outcome == "none":
            if ref.version_id is not None:
                raise errors.NoSuchVersion(Key=key, VersionId=str(ref.version_id))
            return {}
        if bucket.versioning is None:
            return {}
        headers = {"x-amz-version-id": str(ref.version_id or versions.NULL_VERSION)}
        if outcome == "marker":
            headers["x-amz-delete-marker"] = "true"
        return headers
    if bucket.versioning is None:
        await backend.delete(bucket.name, key)
        return {}
    null_marker = not versions.keeps_versions(bucket.versioning)
    marker = await backend.delete_key(bucket.name, key, null_marker)
    assert marker is not None  # no expected version: always written
    return {
        "x-amz-delete-marker": "true",
        "x-amz-version-id": versions.version_id_text(marker, null_marker),
    }


async def delete_objects(req: S3Request) -> web.StreamResponse:
    assert req.bucket is not None
    auth.require_write(req, req.bucket)
    bucket = await get_bucket(req, req.bucket)
    quiet, targets = xmlbody.parse_delete_objects(await read_small_body(req))
    deleted: list[Deleted] = []
    failed: list[DeleteError] = []
    for target in targets:
        try:
            names.validate_key(target.key)
            ref = versions.parse_version_id(target.version_id, "VersionId")
            headers = await _delete(req, bucket, target.key, ref)
        except Exception as exc:
            error = s3_error_of(exc)
            if error is None:
                raise
            failed.append(DeleteError(target.key, error.code, error.message, target.version_id))
            continue
        marker = "x-amz-delete-marker" in headers
        written = headers.get("x-amz-version-id") if marker else None
        deleted.append(Deleted(target, marker, written))
    body = delete_result(deleted, failed, quiet)
    return web.Response(body=body, content_type="application/xml")


async def copy_object(req: S3Request) -> web.StreamResponse:
    assert req.bucket is not None
    key = object_key(req)
    headers = req.headers
    auth.require_write(req, req.bucket)
    bucket = await get_bucket(req, req.bucket)
    encryption.check_requested(req, bucket, headers)
    backend = req.backend(bucket.profile)
    sealed_with = encryption.for_write(req, bucket, backend)
    source_bucket, source, segments = await copysource.copy_source_segments(req, None)
    directive = headers.get("x-amz-metadata-directive", "COPY").upper()
    if directive not in ("COPY", "REPLACE"):
        raise errors.InvalidArgument(
            "Unknown metadata directive.",
            ArgumentName="x-amz-metadata-directive",
            ArgumentValue=directive,
        )
    tagging_directive = headers.get("x-amz-tagging-directive", "COPY").upper()
    if tagging_directive not in ("COPY", "REPLACE"):
        raise errors.InvalidArgument(
            "Unknown tagging directive.",
            ArgumentName="x-amz-tagging-directive",
            ArgumentValue=tagging_directive,
        )
    if directive == "REPLACE":
        metadata = metadata_from_headers(req, headers)
        new = NewObject(bucket.name, key, content_type_from_headers(headers), metadata)
    else:
        if (source.bucket, source.key) == (bucket.name, key) and not sealed_with:
            raise errors.InvalidRequest(
                "This copy request is illegal because it is trying to copy an object to itself"
                " without changing the object's metadata, storage class, website redirect"
                " location or encryption attributes."
            )
        # As in S3, the copy does not take the source's ACL: private unless the request says.
        metadata = ObjectMetadata(
            user=source.user_metadata,
            headers=source.headers,
            acl=acl.acl_from_headers(headers) or PRIVATE,
        )
        new = NewObject(bucket.name, key, source.content_type, metadata)
    # The tags go by their own directive: the source's, or x-amz-tagging's (none without it).
    tags = source.metadata.tags
    if tagging_directive == "REPLACE":
        tagging_header = headers.get("x-amz-tagging")
        tags = tagging.from_header(tagging_header) if tagging_header is not None else ()
    new = replace(
        new,
        metadata=replace(new.metadata, customer_key=sealed_with, tags=tags),
        null_version=not versions.keeps_versions(bucket.versioning),
    )
    cond = conditions.write_conditions(headers)
    await quotas.check_room(req, bucket, key, sum(segment.length for segment in segments))
    eager = req.eager_presets(bucket.name) if sealed_with is None else ()
    record = await backend.copy(new, source, segments, WriteTerms(cond, eager))
    if eager:
        req.eager_enqueued()
    body = copy_object_result(record.etag, record.last_modified, record.checksums)
    response_headers = version_headers(bucket, record)
    if source_bucket.versioning is not None:
        response_headers["x-amz-copy-source-version-id"] = versions.version_id_text(
            source.version_id, source.null_version
        )
    return web.Response(body=body, content_type="application/xml", headers=response_headers)
