"""Object operations: PutObject, GetObject, HeadObject, DeleteObject, DeleteObjects, CopyObject."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any
from urllib.parse import unquote

from aiohttp import web
from multidict import CIMultiDict

from gateway.api import auth
from gateway.api.body import BodyDigests, RequestBody
from gateway.api.common import StagedBlob, get_bucket, http_date, read_small_body
from gateway.api.context import S3Request
from gateway.meta import objects
from gateway.meta.buckets import Bucket
from gateway.meta.objects import ObjectRecord
from gateway.s3 import checksums, conditions, errors, names, ranges, xmlbody
from gateway.s3.conditions import Conditions, Precondition
from gateway.s3.xml import DeleteError, copy_object_result, delete_result
from gateway.storage.local import INLINE_READ_MAX

DEFAULT_CONTENT_TYPE = "binary/octet-stream"
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


def _object_key(req: S3Request) -> str:
    assert req.key is not None
    names.validate_key(req.key)
    return req.key


def _metadata_from_headers(req: S3Request, headers: Mapping[str, str]) -> dict[str, Any]:
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
        value = headers.get(name)
        if name == "content-encoding" and value is not None:
            # aws-chunked describes the transfer, not the object.
            codings = [c.strip() for c in value.split(",") if c.strip().lower() != "aws-chunked"]
            value = ", ".join(codings) or None
        if value is not None:
            stored[name] = value
    return {"user": user, "headers": stored}


def _content_type(headers: Mapping[str, str]) -> str:
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


def _checksum_headers(record: ObjectRecord) -> dict[str, str]:
    found = {checksums.header_name(alg): value for alg, value in record.checksums.items()}
    if found:
        found["x-amz-checksum-type"] = "FULL_OBJECT"
    return found


async def _readable_object(req: S3Request) -> tuple[Bucket, ObjectRecord]:
    assert req.bucket is not None
    key = _object_key(req)
    bucket, record = await objects.lookup(req.pool, req.bucket, key)
    if bucket is None:
        raise errors.NoSuchBucket(BucketName=req.bucket)
    auth.require_read(req, bucket)
    if record is None:
        raise errors.NoSuchKey(Key=key)
    return bucket, record


def _check_read_conditions(req: S3Request, record: ObjectRecord) -> None:
    cond = Conditions.from_headers(req.headers)
    outcome, header = conditions.decide(cond, record.etag, record.last_modified)
    if outcome is Precondition.FAILED:
        raise errors.PreconditionFailed(Condition=header or "")
    if outcome is Precondition.NOT_MODIFIED:
        raise _NotModified(record)


class _NotModified(errors.S3Error):
    code = "NotModified"
    status = 304
    default_message = "Not Modified"

    def __init__(self, record: ObjectRecord) -> None:
        super().__init__()
        self.record = record

    def headers(self) -> dict[str, str]:
        # RFC 9110 §15.4.5: a 304 repeats the validators.
        return {"ETag": self.record.etag, "Last-Modified": http_date(self.record.last_modified)}


def _apply_overrides(req: S3Request, headers: CIMultiDict[str]) -> None:
    overrides = {name: req.query[name] for name in RESPONSE_OVERRIDES if name in req.query}
    if not overrides:
        return
    if req.credential is None:
        raise errors.InvalidRequest(
            "Request specific response headers cannot be used for anonymous GET requests."
        )
    for name, value in overrides.items():
        headers[RESPONSE_OVERRIDES[name]] = value


def _prepare_read(
    req: S3Request, record: ObjectRecord
) -> tuple[int, ranges.ByteRange | None, CIMultiDict[str]]:
    _check_read_conditions(req, record)
    headers = object_headers(record)
    byte_range = ranges.parse_range(req.headers.get("Range"), record.size)
    if byte_range is not None:
        headers["Content-Range"] = byte_range.content_range(record.size)
        length = byte_range.length
    else:
        length = record.size
        if req.headers.get("x-amz-checksum-mode", "").upper() == "ENABLED":
            headers.update(_checksum_headers(record))
    _apply_overrides(req, headers)
    return length, byte_range, headers


async def head_object(req: S3Request) -> web.StreamResponse:
    _, record = await _readable_object(req)
    length, byte_range, headers = _prepare_read(req, record)
    # A StreamResponse keeps the Content-Length we set (a Response would count its empty body).
    response = web.StreamResponse(status=206 if byte_range else 200, headers=headers)
    response.content_length = length
    return response


async def get_object(req: S3Request) -> web.StreamResponse:
    _, record = await _readable_object(req)
    length, byte_range, headers = _prepare_read(req, record)
    start = byte_range.start if byte_range else 0
    status = 206 if byte_range else 200
    store = req.store(record.profile)
    if length <= INLINE_READ_MAX:
        body = b"".join([chunk async for chunk in store.read(record.storage_key, start, length)])
        return web.Response(status=status, body=body, headers=headers)
    response = web.StreamResponse(status=status, headers=headers)
    response.content_length = length
    path = store.local_path(record.storage_key)
    transport = req.http.transport
    if path is None or transport is None:
        await response.prepare(req.http)
        async for chunk in store.read(record.storage_key, start, length):
            await response.write(chunk)
    else:
        loop = asyncio.get_running_loop()
        # Opened before the headers go out, so a missing blob is still a clean error response.
        with await loop.run_in_executor(None, open, path, "rb") as handle:
            await response.prepare(req.http)
            await loop.sendfile(transport, handle, start, length)
    await response.write_eof()
    return response


def _write_precondition(req: S3Request) -> Conditions | None:
    cond = Conditions.from_headers(req.headers)
    if cond.if_match is None and cond.if_none_match is None:
        return None
    return cond


def _check_write(cond: Conditions | None, key: str) -> Any:
    def check(current_etag: str | None) -> None:
        if cond is None:
            return
        outcome = conditions.evaluate_write(cond, current_etag)
        if outcome is Precondition.MISSING:
            raise errors.NoSuchKey(Key=key)
        if outcome is Precondition.FAILED:
            raise errors.PreconditionFailed(
                Condition="If-Match" if cond.if_match is not None else "If-None-Match"
            )

    return check


async def put_object(req: S3Request) -> web.StreamResponse:
    assert req.bucket is not None
    key = _object_key(req)
    auth.require_write(req, req.bucket)
    bucket = await get_bucket(req, req.bucket)
    headers = req.headers
    metadata = _metadata_from_headers(req, headers)
    cond = _write_precondition(req)
    check = _check_write(cond, key)
    if cond is not None:
        # Fail fast before the body is transferred; checked again under the row lock.
        current = await objects.get_object(req.pool, bucket.name, key)
        check(current.etag if current else None)
    body = RequestBody(req, max_size=req.config.limits.max_object_size)
    async with StagedBlob(req, bucket.profile, body.digests.update) as blob:
        await blob.write_all(aiter(body))
        metadata["checksums"] = body.verify()
        assert blob.writer is not None
        await blob.writer.commit()
        record = ObjectRecord(
            bucket=bucket.name,
            key=key,
            version_id=uuid.uuid4(),
            size=blob.writer.size,
            etag=body.digests.etag,
            content_type=_content_type(headers),
            profile=bucket.profile,
            storage_key=blob.storage_key,
            last_modified=datetime.now(UTC),
            metadata=metadata,
        )
        blob.row_commit_started = True
        async with req.pool.acquire() as conn:
            await objects.commit_object(conn, record, check)
    response_headers = {"ETag": record.etag}
    for algorithm, value in metadata["checksums"].items():
        response_headers[checksums.header_name(algorithm)] = value
    return web.Response(headers=response_headers)


async def delete_object(req: S3Request) -> web.StreamResponse:
    assert req.bucket is not None
    key = _object_key(req)
    auth.require_write(req, req.bucket)
    bucket = await get_bucket(req, req.bucket)
    async with req.pool.acquire() as conn:
        await objects.delete_object(conn, bucket.name, key)
    # Deleting a missing key succeeds, as in S3.
    return web.Response(status=204)


async def delete_objects(req: S3Request) -> web.StreamResponse:
    assert req.bucket is not None
    auth.require_write(req, req.bucket)
    bucket = await get_bucket(req, req.bucket)
    quiet, targets = xmlbody.parse_delete_objects(await read_small_body(req))
    deleted: list[str] = []
    failed: list[DeleteError] = []
    async with req.pool.acquire() as conn:
        for target in targets:
            try:
                names.validate_key(target.key)
            except errors.S3Error as error:
                failed.append(DeleteError(target.key, error.code, error.message))
                continue
            await objects.delete_object(conn, bucket.name, target.key)
            deleted.append(target.key)
    body = delete_result(deleted, failed, quiet)
    return web.Response(body=body, content_type="application/xml")


def _parse_copy_source(value: str) -> tuple[str, str]:
    source = unquote(value.partition("?")[0]).lstrip("/")
    bucket, _, key = source.partition("/")
    if not bucket or not key:
        raise errors.InvalidArgument(
            "Copy Source must mention the source bucket and key: sourcebucket/sourcekey",
            ArgumentName="x-amz-copy-source",
            ArgumentValue=value,
        )
    return bucket, key


async def copy_object(req: S3Request) -> web.StreamResponse:
    assert req.bucket is not None
    key = _object_key(req)
    headers = req.headers
    source_bucket, source_key = _parse_copy_source(headers["x-amz-copy-source"])
    names.validate_key(source_key)
    auth.require_write(req, req.bucket)
    bucket = await get_bucket(req, req.bucket)
    found_bucket, source = await objects.lookup(req.pool, source_bucket, source_key)
    if found_bucket is None:
        raise errors.NoSuchBucket(BucketName=source_bucket)
    auth.require_read(req, found_bucket)
    if source is None:
        raise errors.NoSuchKey(Key=source_key)
    conditions.check_copy_source(
        Conditions.from_headers(headers, prefix="x-amz-copy-source-"),
        source.etag,
        source.last_modified,
    )
    directive = headers.get("x-amz-metadata-directive", "COPY").upper()
    if directive not in ("COPY", "REPLACE"):
        raise errors.InvalidArgument(
            "Unknown metadata directive.",
            ArgumentName="x-amz-metadata-directive",
            ArgumentValue=directive,
        )
    if directive == "REPLACE":
        metadata = _metadata_from_headers(req, headers)
        content_type = _content_type(headers)
    else:
        if (source_bucket, source_key) == (bucket.name, key):
            raise errors.InvalidRequest(
                "This copy request is illegal because it is trying to copy an object to itself"
                " without changing the object's metadata, storage class, website redirect"
                " location or encryption attributes."
            )
        metadata = {"user": source.user_metadata, "headers": source.headers}
        content_type = source.content_type
    algorithms = list(source.checksums) or [None]
    digests = BodyDigests(sha256=False, checksum_algorithm=algorithms[0])
    check = _check_write(_write_precondition(req), key)
    source_store = req.store(source.profile)
    async with StagedBlob(req, bucket.profile, digests.update) as blob:
        await blob.write_all(source_store.read(source.storage_key, 0, source.size))
        assert blob.writer is not None
        await blob.writer.commit()
        if digests.checksum is not None and digests.checksum_algorithm is not None:
            metadata["checksums"] = {digests.checksum_algorithm: digests.checksum.digest_b64()}
        record = ObjectRecord(
            bucket=bucket.name,
            key=key,
            version_id=uuid.uuid4(),
            size=blob.writer.size,
            # A copy is a single-part object: its ETag is the MD5 of its bytes.
            etag=digests.etag,
            content_type=content_type,
            profile=bucket.profile,
            storage_key=blob.storage_key,
            last_modified=datetime.now(UTC),
            metadata=metadata,
        )
        blob.row_commit_started = True
        async with req.pool.acquire() as conn:
            await objects.commit_object(conn, record, check)
    body = copy_object_result(record.etag, record.last_modified, metadata.get("checksums", {}))
    return web.Response(body=body, content_type="application/xml")
