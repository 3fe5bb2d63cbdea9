"""GetObject and HeadObject with ``?variant=NAME``: an image variant of the object.

A variant is a derivative object: made on its first request (gateway.variants.service), stored
in the source's storage profile, then served like any object, with its own ETag, Content-Type,
Content-Length and Last-Modified, Range and conditional requests. Its identity is (object
version, preset spec, format class) and nothing else: not who signed the request, not the other
query parameters, not the Accept header as sent (it is reduced to a format class first), so
every client asking for the same thing shares one render and one blob.
"""

from __future__ import annotations

import time

from aiohttp import web
from multidict import CIMultiDict

from gateway import metrics
from gateway.api import objects
from gateway.api.common import http_date
from gateway.api.context import BACKENDS, LOOKUPS, RECORD, VARIANTS, RequestRecord, S3Request
from gateway.api.objects import ObjectRead
from gateway.api.versioning import version_headers
from gateway.meta import derivatives
from gateway.meta.derivatives import StoredBlob
from gateway.meta.object_rows import ObjectRecord
from gateway.objects.reading import Segment
from gateway.objects.sources import variant_source
from gateway.s3 import errors, ranges
from gateway.variants.presets import Preset
from gateway.variants.service import known

# The original answered in place of a variant still rendering (on_miss: original): a cache
# keeping it under the variant's URL would serve the original long after the variant exists.
ORIGINAL_CACHE_CONTROL = "no-store"


async def get_object_variant(req: S3Request) -> web.StreamResponse:
    return await _answer(req, with_body=True)


async def head_object_variant(req: S3Request) -> web.StreamResponse:
    return await _answer(req, with_body=False)


async def _answer(req: S3Request, with_body: bool) -> web.StreamResponse:
    if "partNumber" in req.query:
        raise errors.InvalidRequest("A variant has no parts: do not combine partNumber with it.")
    assert req.bucket is not None
    key = objects.object_key(req)
    catalog = req.snapshot.presets
    # The preset is known before the object is looked up, so the derivative comes in the same
    # query; an unknown preset is still answered after NoSuchBucket, AccessDenied, NoSuchKey.
    preset: Preset | None = None
    refusal: errors.S3Error | None = None
    try:
        preset = catalog.resolve(req.bucket, req.query["variant"])
    except errors.S3Error as error:
        refusal = error
    format_class = preset.format_class(req.headers.get("Accept"), catalog.avif) if preset else None
    variant_key = preset.variant_key(format_class) if preset and format_class else None
    found, current, row = await req.app[LOOKUPS].lookup_variant(req.bucket, key, variant_key)
    bucket, record = await objects.readable(req, key, found, current)
    if record is not current and variant_key is not None:
        # ?versionId= named another version: its own derivative.
        row = await derivatives.get(req.pool, record.version_id, variant_key)
    if preset is None or format_class is None:
        assert refusal is not None
        raise refusal
    # A failed render in its back-off raises its recorded error here, on_miss original or
    # not: the original is not served in its place (it may be the very file that is too
    # large, or no image at all).
    noted = req.http[RECORD]
    noted.variant = preset.name
    try:
        variant = known(row)
        result = "hit"
        if variant is None:
            service = req.app[VARIANTS]
            source = variant_source(req.app[BACKENDS], record)
            if preset.on_miss == "original":
                service.prefetch(source, preset, format_class)
                result = "original"
            else:
                started = time.monotonic()
                try:
                    variant = await service.answer(source, preset, format_class)
                finally:
                    noted.render_ms = round((time.monotonic() - started) * 1000, 2)
                result = "render"
    except errors.S3Error:
        _count_variant(noted, "error")
        raise
    _count_variant(noted, result)
    if variant is None:
        return await _original(req, with_body)
    read = _plan(req, record, preset, variant, with_body)
    # The version the variant is made of, as a GET of the object names it.
    read.headers.update(version_headers(bucket, record))
    return await objects.answer_read(req, read)


def _count_variant(noted: RequestRecord, result: str) -> None:
    noted.variant_result = result
    counted = metrics.current()
    if counted is not None:
        counted.variant_requests(result).inc()


async def _original(req: S3Request, with_body: bool) -> web.StreamResponse:
    read = await objects.plan_read(req, with_segments=with_body)
    read.headers["Cache-Control"] = ORIGINAL_CACHE_CONTROL
    return await objects.answer_read(req, read)


def _plan(
    req: S3Request,
    record: ObjectRecord,
    preset: Preset,
    variant: StoredBlob,
    with_body: bool,
) -> ObjectRead:
    # The variant changes when its source does, and when it is made again (a changed preset):
    # whichever is later, so If-Modified-Since never hides a new rendering.
    last_modified = record.last_modified
    if variant.rendered_at is not None:
        last_modified = max(last_modified, variant.rendered_at)
    # What a 304 repeats as well (RFC 9110 §15.4.5).
    shared: dict[str, str] = {}
    cache_control = preset.cache_control or record.headers.get("cache-control")
    if cache_control:
        shared["Cache-Control"] = cache_control
    if preset.negotiated:
        shared["Vary"] = "Accept"
    objects.check_read_conditions(req, variant.etag, last_modified, shared)
    headers: CIMultiDict[str] = CIMultiDict(shared)
    headers["ETag"] = variant.etag
    headers["Last-Modified"] = http_date(last_modified)
    headers["Content-Type"] = variant.content_type
    headers["Accept-Ranges"] = "bytes"
    byte_range = ranges.parse_range(req.headers.get("Range"), variant.size)
    start, length = (byte_range.start, byte_range.length) if byte_range else (0, variant.size)
    if byte_range is not None:
        headers["Content-Range"] = byte_range.content_range(variant.size)
    objects.apply_overrides(req, headers)
    segments = None
    if with_body:
        segments = (
            [Segment(variant.profile, variant.storage_key, start, length, data=variant.data)]
            if length
            else []
        )
    return ObjectRead(206 if byte_range else 200, headers, length, segments)
