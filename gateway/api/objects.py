"""Object operations: PutObject, GetObject, HeadObject, DeleteObject, DeleteObjects, CopyObject."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any

import asyncpg
from aiohttp import web
from multidict import CIMultiDict

from gateway.api import auth, copysource, reader, upstream
from gateway.api.body import BodyDigests, RequestBody
from gateway.api.common import StagedBlob, get_bucket, http_date, read_small_body, recent_bucket
from gateway.api.context import LOOKUPS, S3Request
from gateway.api.middleware import SENT_RESPONSE
from gateway.api.reader import Segment
from gateway.meta import objects
from gateway.meta.buckets import Bucket
from gateway.meta.objects import DEFAULT_CONTENT_TYPE, Chunk, ObjectRecord
from gateway.s3 import checksums, conditions, errors, multipart, names, ranges, versions, xmlbody
from gateway.s3.conditions import Conditions, Precondition
from gateway.s3.query import has_control_characters
from gateway.s3.xml import DeleteError, copy_object_result, delete_result
from gateway.s3.xmlbody import ObjectIdentifier
from gateway.storage.local import INLINE_READ_MAX
from gateway.storage.upstream import UpstreamChangedError, UpstreamMissingError, UpstreamStore

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


def metadata_from_headers(req: S3Request, headers: Mapping[str, str]) -> dict[str, Any]:
    user = {}
    size = 0
    for name, value in headers.items():
        lower = name.lower()
        if lower.startswith(META_PREFIX):
            user[lower[len(META_PREFIX) :]] = value
            size += len(lower) - len(META_PREFIX) + len(value.encode())
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
    return {"user": user, "headers": stored}


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
        headers[META_PREFIX + name] = value
    return headers


async def readable_object(req: S3Request) -> tuple[Bucket, ObjectRecord]:
    assert req.bucket is not None
    key = object_key(req)
    bucket, record = await req.app[LOOKUPS].lookup(req.bucket, key)
    if bucket is not None and record is None:
        auth.require_read(req, bucket)
        versions.check_version_id(req.query.get("versionId"), key)
        record = await upstream.adopt(req, bucket, key)
    return readable(req, key, bucket, record)


def readable(
    req: S3Request, key: str, bucket: Bucket | None, record: ObjectRecord | None
) -> tuple[Bucket, ObjectRecord]:
    """The looked-up bucket and object if the requester may read them, else the S3 error.

    A request for another version than the current one ("null") reads nothing.
    """
    if bucket is None:
        raise errors.NoSuchBucket(BucketName=req.bucket or "")
    auth.require_read(req, bucket)
    versions.check_version_id(req.query.get("versionId"), key)
    if record is None:
        raise errors.NoSuchKey(Key=key)
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
    part_number = multipart.parse_part_number(raw)
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
    exists, chunk = await objects.get_chunk(req.pool, record.version_id, part_number)
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
    for _attempt in range(reader.READ_ATTEMPTS):
        _, record = await readable_object(req)
        check_read_conditions(req, record.etag, record.last_modified)
        headers = object_headers(record)
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
                segments = reader.chunk_segments(part)
            else:
                segments = await reader.object_segments(req.pool, record, start, length)
                if segments is None:
                    continue
        status = 206 if byte_range else 200
        return ObjectRead(status, headers, length, segments, record)
    raise reader.object_changed()


async def head_object(req: S3Request) -> web.StreamResponse:
    return await answer_read(req, await plan_read(req, with_segments=False))


async def get_object(req: S3Request) -> web.StreamResponse:
    for _attempt in range(reader.READ_ATTEMPTS):
        read = await plan_read(req, with_segments=True)
        try:
            return await answer_read(req, read)
        except (UpstreamChangedError, UpstreamMissingError):
            if read.record is None or req.http.get(SENT_RESPONSE) is not None:
                raise
            # Another tool replaced or deleted the object upstream: record that, then read
            # what is there now.
            await upstream.reconcile(req, read.record)
    raise reader.object_changed()


async def answer_read(req: S3Request, read: ObjectRead) -> web.StreamResponse:
    """The response of a planned GET (with segments) or HEAD (without)."""
    if read.segments is None:
        # A StreamResponse keeps the Content-Length we set (a Response would count its empty
        # body).
        response = web.StreamResponse(status=read.status, headers=read.headers)
        response.content_length = read.length
        return response
    if read.length <= INLINE_READ_MAX:
        body = await reader.read_small(req, read.segments)
        return web.Response(status=read.status, body=body, headers=read.headers)
    response = web.StreamResponse(status=read.status, headers=read.headers)
    response.content_length = read.length
    await reader.send_segments(req, response, read.segments)
    return response


def write_precondition(req: S3Request) -> Conditions | None:
    cond = Conditions.from_headers(req.headers)
    if cond.if_match is None and cond.if_none_match is None:
        return None
    return cond


# Sees the ETag of the object a write replaces (None: none), raises to refuse the write.
WriteCheck = Callable[[str | None], None]


def write_check(cond: Conditions | None, key: str) -> WriteCheck | None:
    """What a conditional write checks against the ETag it replaces; None for a plain write
    (which then commits without a round trip to look)."""
    if cond is None:
        return None

    def check(current_etag: str | None) -> None:
        outcome = conditions.evaluate_write(cond, current_etag)
        if outcome is Precondition.MISSING:
            raise errors.NoSuchKey(Key=key)
        if outcome is Precondition.FAILED:
            raise errors.PreconditionFailed(
                Condition="If-Match" if cond.if_match is not None else "If-None-Match"
            )

    return check


async def precheck_write(
    req: S3Request, bucket: str, key: str, check: WriteCheck | None
) -> ObjectRecord | None:
    """The object a conditional write replaces, checked before any byte moves, so a refusal
    is fast (the check runs again under the row lock); None, without a look, for a plain
    write."""
    if check is None:
        return None
    current = await objects.get_object(req.pool, bucket, key)
    check(current.etag if current else None)
    return current


async def put_object(req: S3Request) -> web.StreamResponse:
    assert req.bucket is not None
    key = object_key(req)
    auth.require_write(req, req.bucket)
    bucket = await recent_bucket(req, req.bucket)
    headers = req.headers
    metadata = metadata_from_headers(req, headers)
    cond = write_precondition(req)
    check = write_check(cond, key)
    current = await precheck_write(req, bucket.name, key, check)
    body = RequestBody(req, max_size=req.config.limits.max_object_size)
    eager = req.eager_presets(bucket.name)
    store = upstream.store_of(req, bucket.profile)
    if store is not None:
        record = await _put_upstream(
            req, store, bucket, key, body, metadata, upstream.write_conditions(cond, current)
        )
        await upstream.commit(req, store, record, check, eager)
    else:
        record = await _put_local(req, bucket, key, body, metadata, check, eager)
    if eager:
        req.eager_enqueued()
    return web.Response(
        headers={"ETag": record.etag, **checksums.response_headers(metadata["checksums"])}
    )


def _new_record(
    bucket: Bucket, key: str, size: int, etag: str, content_type: str, metadata: dict[str, Any]
) -> ObjectRecord:
    """A single-part object's row, before its storage is filled in."""
    return ObjectRecord(
        bucket=bucket.name,
        key=key,
        version_id=uuid.uuid4(),
        size=size,
        etag=etag,
        content_type=content_type,
        profile=bucket.profile,
        storage_key=None,
        last_modified=datetime.now(UTC),
        metadata=metadata,
    )


async def _put_upstream(
    req: S3Request,
    store: UpstreamStore,
    bucket: Bucket,
    key: str,
    body: RequestBody,
    metadata: dict[str, Any],
    conditions: dict[str, str],
) -> ObjectRecord:
    upstream_key = store.object_key(bucket.name, key)
    content_type = content_type_from_headers(req.headers)

    def verify() -> bytes:
        metadata["checksums"] = body.verify()
        return body.digests.md5.digest()

    size, storage_etag = await upstream.write(
        store,
        upstream_key,
        aiter(body),
        body.digests.update,
        upstream.attributes(content_type, metadata),
        verify,
        conditions,
    )
    record = _new_record(bucket, key, size, body.digests.etag, content_type, metadata)
    return replace(record, storage_key=upstream_key, storage_etag=storage_etag)


async def _commit_new(
    req: S3Request, record: ObjectRecord, check: WriteCheck | None, eager: list[str]
) -> None:
    """Commit the row of a new local object; NoSuchBucket if its bucket is gone (nothing was
    committed then)."""
    async with req.pool.acquire() as conn:
        try:
            await objects.commit_object(conn, record, check, eager=eager)
        except asyncpg.ForeignKeyViolationError as e:
            if e.constraint_name != "objects_bucket_fkey":
                raise
            # The bucket was deleted after this process last looked it up.
            raise errors.NoSuchBucket(BucketName=record.bucket) from None


async def _put_local(
    req: S3Request,
    bucket: Bucket,
    key: str,
    body: RequestBody,
    metadata: dict[str, Any],
    check: WriteCheck | None,
    eager: list[str],
) -> ObjectRecord:
    inline_max = req.config.limits.inline_max_size
    if inline_max and body.length is not None and body.length <= inline_max:
        # A small object: its bytes go in its row, one transaction and no blob.
        data = b"".join([piece async for piece in body])
        body.digests.update(data)
        metadata["checksums"] = body.verify()
        content_type = content_type_from_headers(req.headers)
        record = _new_record(bucket, key, len(data), body.digests.etag, content_type, metadata)
        record = replace(record, inline_data=data)
        await _commit_new(req, record, check, eager)
        return record
    async with StagedBlob(req, bucket.profile, body.digests.update) as blob:
        await blob.write_all(aiter(body))
        metadata["checksums"] = body.verify()
        assert blob.writer is not None
        await blob.writer.commit()
        record = _new_record(
            bucket,
            key,
            blob.writer.size,
            body.digests.etag,
            content_type_from_headers(req.headers),
            metadata,
        )
        record = replace(record, storage_key=blob.storage_key)
        blob.row_commit_started = True
        try:
            await _commit_new(req, record, check, eager)
        except errors.NoSuchBucket:
            blob.row_commit_started = False  # nothing committed: the blob can go at once
            raise
    return record


async def delete_object(req: S3Request) -> web.StreamResponse:
    assert req.bucket is not None
    key = object_key(req)
    auth.require_write(req, req.bucket)
    bucket = await get_bucket(req, req.bucket)
    # Only the current object can be deleted: a request naming any other version must not
    # delete it in that version's place.
    versions.check_version_id(req.query.get("versionId"), key)
    await _delete(req, bucket, key)
    # Deleting a missing key succeeds, as in S3.
    return web.Response(status=204)


async def _delete(req: S3Request, bucket: Bucket, key: str) -> None:
    store = upstream.store_of(req, bucket.profile)
    if store is not None:
        await upstream.delete(req, store, bucket.name, key)
        return
    async with req.pool.acquire() as conn:
        await objects.delete_object(conn, bucket.name, key)


async def delete_objects(req: S3Request) -> web.StreamResponse:
    assert req.bucket is not None
    auth.require_write(req, req.bucket)
    bucket = await get_bucket(req, req.bucket)
    quiet, targets = xmlbody.parse_delete_objects(await read_small_body(req))
    deleted: list[ObjectIdentifier] = []
    failed: list[DeleteError] = []
    for target in targets:
        try:
            names.validate_key(target.key)
            versions.check_version_id(target.version_id, target.key, "VersionId")
            await _delete(req, bucket, target.key)
        except errors.S3Error as error:
            failed.append(DeleteError(target.key, error.code, error.message, target.version_id))
            continue
        deleted.append(target)
    body = delete_result(deleted, failed, quiet)
    return web.Response(body=body, content_type="application/xml")


async def copy_object(req: S3Request) -> web.StreamResponse:
    assert req.bucket is not None
    key = object_key(req)
    headers = req.headers
    auth.require_write(req, req.bucket)
    bucket = await get_bucket(req, req.bucket)
    source, segments = await copysource.copy_source_segments(req, None)
    directive = headers.get("x-amz-metadata-directive", "COPY").upper()
    if directive not in ("COPY", "REPLACE"):
        raise errors.InvalidArgument(
            "Unknown metadata directive.",
            ArgumentName="x-amz-metadata-directive",
            ArgumentValue=directive,
        )
    if directive == "REPLACE":
        metadata = metadata_from_headers(req, headers)
        content_type = content_type_from_headers(headers)
    else:
        if (source.bucket, source.key) == (bucket.name, key):
            raise errors.InvalidRequest(
                "This copy request is illegal because it is trying to copy an object to itself"
                " without changing the object's metadata, storage class, website redirect"
                " location or encryption attributes."
            )
        metadata = {"user": source.user_metadata, "headers": source.headers}
        content_type = source.content_type
    check = write_check(write_precondition(req), key)
    await precheck_write(req, bucket.name, key, check)
    eager = req.eager_presets(bucket.name)
    store = upstream.store_of(req, bucket.profile)
    if store is not None:
        record = await _copy_upstream(
            req, store, bucket, key, source, segments, content_type, metadata
        )
        await upstream.commit(req, store, record, check, eager)
    else:
        record = await _copy_local(
            req, bucket, key, source, segments, content_type, metadata, check, eager
        )
    if eager:
        req.eager_enqueued()
    body = copy_object_result(record.etag, record.last_modified, record.checksums)
    return web.Response(body=body, content_type="application/xml")


async def _copy_upstream(
    req: S3Request,
    store: UpstreamStore,
    bucket: Bucket,
    key: str,
    source: ObjectRecord,
    segments: list[Segment],
    content_type: str,
    metadata: dict[str, Any],
) -> ObjectRecord:
    upstream_key = store.object_key(bucket.name, key)
    attributes = upstream.attributes(content_type, metadata)
    if source.profile != bucket.profile or source.storage_key is None or not source.storage_etag:
        # From another profile: the bytes pass through the gateway.
        digests = _copy_digests(source)
        size, storage_etag = await upstream.write(
            store,
            upstream_key,
            reader.read_segments(req, segments),
            digests.update,
            attributes,
            digests.md5.digest,
            {},
        )
        metadata.update(_copied_checksums(digests))
        record = _new_record(bucket, key, size, digests.etag, content_type, metadata)
        return replace(record, storage_key=upstream_key, storage_etag=storage_etag)
    try:
        storage_etag = await store.copy(
            source.storage_key, source.storage_etag, source.size, upstream_key, attributes
        )
    except (UpstreamChangedError, UpstreamMissingError):
        await upstream.reconcile(req, source)
        raise reader.object_changed() from None
    # The same bytes: a single-part source's ETag (its MD5) and checksums hold for the copy.
    single = source.parts_count is None and "-" not in source.etag
    if single:
        metadata["checksums"] = source.checksums
    etag = source.etag if single else storage_etag
    record = _new_record(bucket, key, source.size, etag, content_type, metadata)
    return replace(record, storage_key=upstream_key, storage_etag=storage_etag)


def _copy_digests(source: ObjectRecord) -> BodyDigests:
    algorithms: list[str | None] = [*source.checksums] or [None]
    return BodyDigests(sha256=False, checksum_algorithm=algorithms[0])


def _copied_checksums(digests: BodyDigests) -> dict[str, Any]:
    if digests.checksum is None or digests.checksum_algorithm is None:
        return {}
    return {"checksums": {digests.checksum_algorithm: digests.checksum.digest_b64()}}


async def _copy_local(
    req: S3Request,
    bucket: Bucket,
    key: str,
    source: ObjectRecord,
    segments: list[Segment],
    content_type: str,
    metadata: dict[str, Any],
    check: WriteCheck | None,
    eager: list[str],
) -> ObjectRecord:
    digests = _copy_digests(source)
    async with StagedBlob(req, bucket.profile, digests.update) as blob:
        # A multipart source becomes a single-part copy: its parts are read in order.
        await blob.write_all(reader.read_segments(req, segments))
        assert blob.writer is not None
        await blob.writer.commit()
        metadata.update(_copied_checksums(digests))
        # A copy is a single-part object: its ETag is the MD5 of its bytes.
        record = _new_record(bucket, key, blob.writer.size, digests.etag, content_type, metadata)
        record = replace(record, storage_key=blob.storage_key)
        blob.row_commit_started = True
        async with req.pool.acquire() as conn:
            await objects.commit_object(conn, record, check, eager=eager)
    return record
