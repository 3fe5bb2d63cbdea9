"""Multipart uploads: CreateMultipartUpload, UploadPart, UploadPartCopy,
CompleteMultipartUpload, AbortMultipartUpload, ListParts, ListMultipartUploads.

Each part is a blob of its own, fsynced when uploaded. Completing an upload copies no bytes:
the object becomes the ordered list of its part blobs (object_chunks), swapped in with the
object row in one transaction, so completion takes time in the number of parts, not bytes.

In-progress uploads belong to writers: every operation here needs a write grant on the bucket.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from dataclasses import replace
from datetime import UTC, datetime
from urllib.parse import quote

from aiohttp import web

from gateway.api import auth, reader, upstream
from gateway.api.body import BodyDigests, RequestBody
from gateway.api.common import StagedBlob, get_bucket, read_small_body
from gateway.api.context import S3Request
from gateway.api.copysource import copy_source_segments
from gateway.api.listing import common_prefix
from gateway.api.objects import (
    content_type_from_headers,
    metadata_from_headers,
    object_key,
    precheck_write,
    write_check,
    write_precondition,
)
from gateway.meta import uploads
from gateway.meta.buckets import Bucket
from gateway.meta.objects import Chunk, ObjectRecord, prefix_upper_bound
from gateway.meta.uploads import ListedUpload, Part, Upload
from gateway.s3 import checksums, errors, multipart, xmlbody
from gateway.s3.multipart import MAX_LISTED, UploadedPart
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
from gateway.storage import hash_off_loop
from gateway.storage.upstream import UpstreamChangedError, UpstreamMissingError, UpstreamStore

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


async def _open_upload(req: S3Request, bucket: Bucket, key: str) -> Upload:
    upload_id = _upload_id(req)
    upload = await uploads.get_upload(req.pool, bucket.name, key, upload_id)
    if upload is None:
        raise errors.NoSuchUpload(UploadId=str(upload_id))
    return upload


async def create_multipart_upload(req: S3Request) -> web.StreamResponse:
    key = object_key(req)
    bucket = await _writable_bucket(req)
    headers = req.headers
    algorithm = headers.get("x-amz-checksum-algorithm")
    kind = multipart.checksum_type(algorithm, headers.get("x-amz-checksum-type"))
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
    store = upstream.store_of(req, bucket.profile)
    if store is None:
        await uploads.create_upload(req.pool, upload)
    else:
        upload = await _create_upstream_upload(req, store, bucket, upload)
    response_headers = {}
    if upload.checksum_algorithm is not None and kind is not None:
        response_headers["x-amz-checksum-algorithm"] = upload.checksum_algorithm
        response_headers["x-amz-checksum-type"] = kind
    body = initiate_multipart_upload_result(bucket.name, key, str(upload.upload_id))
    return web.Response(body=body, content_type="application/xml", headers=response_headers)


async def _create_upstream_upload(
    req: S3Request, store: UpstreamStore, bucket: Bucket, upload: Upload
) -> Upload:
    """An upload mapped onto one of the upstream's own, so its completion is native there."""
    upstream_key = store.object_key(bucket.name, upload.key)
    attributes = upstream.attributes(upload.content_type, upload.metadata)
    storage_upload_id = await store.create_upload(upstream_key, attributes)
    upload = replace(
        upload,
        profile=bucket.profile,
        storage_key=upstream_key,
        storage_upload_id=storage_upload_id,
    )
    try:
        await uploads.create_upload(req.pool, upload)
    except BaseException:
        await store.abort_upload(upstream_key, storage_upload_id)
        raise
    return upload


def _upstream_upload(req: S3Request, upload: Upload) -> tuple[UpstreamStore, str, str] | None:
    """(store, upstream key, upstream upload id) of an upload kept upstream."""
    if upload.storage_upload_id is None or upload.profile is None:
        return None
    store = upstream.store_of(req, upload.profile)
    if store is None or upload.storage_key is None:
        raise errors.ServiceUnavailable(
            f"The storage profile {upload.profile!r} of this upload is not configured."
        )
    return store, upload.storage_key, upload.storage_upload_id


async def _hashed(chunks: AsyncIterator[bytes], digests: BodyDigests) -> AsyncIterator[bytes]:
    """``chunks`` passed on as they come, hashed off the loop a batch at a time."""
    async for chunk in chunks:
        await hash_off_loop(digests.update, chunk)
        yield chunk


async def _upload_upstream_part(
    target: tuple[UpstreamStore, str, str],
    part_number: int,
    chunks: AsyncIterator[bytes],
    length: int,
    digests: BodyDigests,
    md5: bytes | None = None,
) -> tuple[int, str]:
    """Stream one part to the upstream upload; (size, upstream ETag). ``md5``: the part's
    Content-MD5 when the client sent one, for the upstream to check as well."""
    store, upstream_key, storage_upload_id = target
    try:
        etag = await store.upload_part(
            upstream_key, storage_upload_id, part_number, _hashed(chunks, digests), length, md5
        )
    except UpstreamMissingError:
        # Aborted (or completed) meanwhile.
        raise errors.NoSuchUpload() from None
    return length, etag


async def _commit_part(req: S3Request, blob: StagedBlob, upload: Upload, part: Part) -> None:
    blob.row_commit_started = True
    async with req.pool.acquire() as conn:
        committed = await uploads.commit_part(
            conn, upload.bucket, upload.key, upload.upload_id, part
        )
    if not committed:
        # Aborted or completed meanwhile: nothing references the blob, so it goes at once.
        blob.row_commit_started = False
        raise errors.NoSuchUpload(UploadId=str(upload.upload_id))


async def _record_upstream_part(req: S3Request, upload: Upload, part: Part) -> None:
    async with req.pool.acquire() as conn:
        committed = await uploads.commit_part(
            conn, upload.bucket, upload.key, upload.upload_id, part
        )
    if not committed:
        raise errors.NoSuchUpload(UploadId=str(upload.upload_id))


async def upload_part(req: S3Request) -> web.StreamResponse:
    key = object_key(req)
    part_number = multipart.parse_part_number(req.query.get("partNumber", ""))
    bucket = await _writable_bucket(req)
    # Checked before the body is read, so a part for a missing upload is never transferred.
    upload = await _open_upload(req, bucket, key)
    body = RequestBody(
        req,
        max_size=req.config.limits.max_object_size,
        upload_checksum=upload.checksum_algorithm,
    )
    target = _upstream_upload(req, upload)
    if target is not None:
        if body.length is None:
            raise errors.MissingContentLength()
        size, storage_etag = await _upload_upstream_part(
            target,
            part_number,
            aiter(body),
            body.length,
            body.digests,
            body.content_md5,
        )
        part_checksums = body.verify()
        part = Part(
            part_number=part_number,
            size=size,
            etag=body.digests.etag,
            profile=target[0].name,
            storage_key=target[1],
            last_modified=datetime.now(UTC),
            checksums=part_checksums,
            storage_etag=storage_etag,
        )
        await _record_upstream_part(req, upload, part)
        return web.Response(
            headers={"ETag": part.etag, **checksums.response_headers(part_checksums)}
        )
    async with StagedBlob(req, bucket.profile, body.digests.update) as blob:
        await blob.write_all(aiter(body))
        part_checksums = body.verify()
        assert blob.writer is not None
        await blob.writer.commit()
        part = Part(
            part_number=part_number,
            size=blob.writer.size,
            etag=body.digests.etag,
            profile=bucket.profile,
            storage_key=blob.storage_key,
            last_modified=datetime.now(UTC),
            checksums=part_checksums,
        )
        await _commit_part(req, blob, upload, part)
    return web.Response(headers={"ETag": part.etag, **checksums.response_headers(part_checksums)})


async def upload_part_copy(req: S3Request) -> web.StreamResponse:
    key = object_key(req)
    part_number = multipart.parse_part_number(req.query.get("partNumber", ""))
    bucket = await _writable_bucket(req)
    upload = await _open_upload(req, bucket, key)
    source, segments = await copy_source_segments(req, req.headers.get("x-amz-copy-source-range"))
    digests = BodyDigests(sha256=False, checksum_algorithm=upload.checksum_algorithm)
    target = _upstream_upload(req, upload)
    if target is not None:
        part = await _copy_upstream_part(req, target, upload, part_number, source, segments)
        body = copy_part_result(part.etag, part.last_modified, part.checksums)
        return web.Response(body=body, content_type="application/xml")
    async with StagedBlob(req, bucket.profile, digests.update) as blob:
        await blob.write_all(reader.read_segments(req, segments))
        assert blob.writer is not None
        await blob.writer.commit()
        part_checksums = {}
        if digests.checksum is not None and upload.checksum_algorithm is not None:
            part_checksums[upload.checksum_algorithm] = digests.checksum.digest_b64()
        part = Part(
            part_number=part_number,
            size=blob.writer.size,
            etag=digests.etag,
            profile=bucket.profile,
            storage_key=blob.storage_key,
            last_modified=datetime.now(UTC),
            checksums=part_checksums,
        )
        await _commit_part(req, blob, upload, part)
    body = copy_part_result(part.etag, part.last_modified, part_checksums)
    return web.Response(body=body, content_type="application/xml")


async def _copy_upstream_part(
    req: S3Request,
    target: tuple[UpstreamStore, str, str],
    upload: Upload,
    part_number: int,
    source: ObjectRecord,
    segments: list[reader.Segment],
) -> Part:
    """A part copied upstream: server-side from the same profile (when no checksum must be
    computed over its bytes), else streamed through the gateway."""
    store, upstream_key, storage_upload_id = target
    length = sum(segment.length for segment in segments)
    digests = BodyDigests(sha256=False, checksum_algorithm=upload.checksum_algorithm)
    part_checksums: dict[str, str] = {}
    if (
        source.profile == store.name
        and source.storage_etag is not None
        and upload.checksum_algorithm is None
        and segments
    ):
        start = segments[0].offset
        try:
            etag = await store.upload_part_copy(
                upstream_key,
                storage_upload_id,
                part_number,
                segments[0].storage_key,
                source.storage_etag,
                start,
                start + length - 1,
            )
        except (UpstreamChangedError, UpstreamMissingError):
            await upstream.reconcile(req, source)
            raise reader.object_changed() from None
        storage_etag = part_etag = etag
    else:
        _, storage_etag = await _upload_upstream_part(
            target,
            part_number,
            reader.read_segments(req, segments),
            length,
            digests,
        )
        part_etag = digests.etag
        if digests.checksum is not None and upload.checksum_algorithm is not None:
            part_checksums[upload.checksum_algorithm] = digests.checksum.digest_b64()
    part = Part(
        part_number=part_number,
        size=length,
        etag=part_etag,
        profile=store.name,
        storage_key=upstream_key,
        last_modified=datetime.now(UTC),
        checksums=part_checksums,
        storage_etag=storage_etag,
    )
    await _record_upstream_part(req, upload, part)
    return part


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
    upload_id = _upload_id(req)
    limit = max(req.config.limits.max_xml_body, COMPLETE_BODY_MIN_LIMIT)
    requested = xmlbody.parse_complete_multipart_upload(
        await read_small_body(req, limit=limit, checksum_headers=False)
    )
    cond = write_precondition(req)
    check = write_check(cond, key)
    declared = _declared_object_checksums(req)
    version_id = uuid.uuid4()
    now = datetime.now(UTC)
    # For an upload kept upstream, once completed there: its upstream key and ETag.
    in_place: dict[str, str] = {}

    def assemble(upload: Upload, parts: list[Part]) -> tuple[ObjectRecord, list[Chunk]]:
        # Runs with the upload locked: the parts cannot change until the object is committed.
        by_number = {part.part_number: part for part in parts}
        uploaded = {
            part.part_number: UploadedPart(part.part_number, part.etag, part.size, part.checksums)
            for part in parts
        }
        chosen = multipart.select_parts(requested, uploaded)
        metadata = dict(upload.metadata)
        algorithm, kind = upload.checksum_algorithm, upload.checksum_type
        if algorithm is not None and kind is not None:
            value = multipart.object_checksum(algorithm, kind, chosen)
            if value is not None:
                metadata["checksums"] = {algorithm: value}
                metadata["checksum_type"] = kind
        stored = metadata.get("checksums", {})
        for name, expected in declared.items():
            if name in stored and stored[name] != expected:
                raise errors.BadDigest(
                    f"The {name} you specified did not match the calculated checksum."
                )
        chunks = uploads.chunks_from_parts([by_number[part.part_number] for part in chosen])
        record = ObjectRecord(
            bucket=bucket.name,
            key=key,
            version_id=version_id,
            size=sum(chunk.size for chunk in chunks),
            etag=multipart.multipart_etag([part.etag for part in chosen]),
            content_type=upload.content_type,
            profile=upload.profile or bucket.profile,
            storage_key=in_place.get("key"),
            last_modified=now,
            metadata=metadata,
            parts_count=len(chunks),
            storage_etag=in_place.get("etag"),
        )
        return record, chunks

    confirm = None
    upload = await _open_upload(req, bucket, key)
    target = _upstream_upload(req, upload)
    if target is not None:
        store, upstream_key, storage_upload_id = target
        # Checked before the upstream completes, and again with the upload locked.
        parts = await uploads.list_parts(req.pool, upload_id, 0, multipart.MAX_PART_NUMBER)
        planned, chunks = assemble(upload, parts)
        current = await precheck_write(req, bucket.name, key, check)
        try:
            storage_etag = await store.complete_upload(
                upstream_key,
                storage_upload_id,
                [(chunk.part_number, chunk.storage_etag or "") for chunk in chunks],
                upstream.write_conditions(cond, current),
            )
        except UpstreamChangedError:
            raise errors.PreconditionFailed(
                Condition="If-None-Match" if cond and cond.if_none_match else "If-Match"
            ) from None
        except UpstreamMissingError:
            # Gone upstream: aborted, or completed by an attempt whose answer was lost (the
            # call is retried), in which case the upstream holds exactly this object.
            found = await store.head(upstream_key)
            if found is None or found.etag != planned.etag:
                raise errors.NoSuchUpload(UploadId=str(upload_id)) from None
            storage_etag = found.etag
        in_place.update(key=upstream_key, etag=storage_etag)
        confirm = upstream.still_in_place(store, upstream_key, storage_etag)
    eager = req.eager_presets(bucket.name)
    async with req.pool.acquire() as conn:
        record = await uploads.complete_upload(
            conn, bucket.name, key, upload_id, assemble, check, eager, confirm
        )
    if record is None:
        raise errors.NoSuchUpload(UploadId=str(upload_id))
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
        record.metadata.get("checksum_type"),
    )
    return web.Response(body=body, content_type="application/xml")


async def abort_multipart_upload(req: S3Request) -> web.StreamResponse:
    key = object_key(req)
    bucket = await _writable_bucket(req)
    upload = await _open_upload(req, bucket, key)
    upload_id = upload.upload_id
    target = _upstream_upload(req, upload)
    if target is not None:
        # Upstream first: an upstream that cannot be reached leaves the upload to retry.
        store, upstream_key, storage_upload_id = target
        await store.abort_upload(upstream_key, storage_upload_id)
    async with req.pool.acquire() as conn:
        if not await uploads.abort_upload(conn, bucket.name, key, upload_id):
            raise errors.NoSuchUpload(UploadId=str(upload_id))
    return web.Response(status=204)


async def list_parts(req: S3Request) -> web.StreamResponse:
    key = object_key(req)
    bucket = await _writable_bucket(req)
    upload = await _open_upload(req, bucket, key)
    query = req.query
    max_parts = min(
        multipart.parse_list_argument(query.get("max-parts"), "max-parts", MAX_LISTED), MAX_LISTED
    )
    marker = multipart.parse_list_argument(query.get("part-number-marker"), "part-number-marker", 0)
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
        multipart.parse_list_argument(query.get("max-uploads"), "max-uploads", MAX_LISTED),
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
