"""CORS: PutBucketCors, GetBucketCors, DeleteBucketCors, the OPTIONS preflight, and the
headers every other request with an Origin gets.

A bucket's rules come from the YAML (``buckets.<name>.cors``) when it sets them, and then only
from there: PutBucketCors and DeleteBucketCors are refused for such a bucket, so a deploy
cannot silently undo the configuration. Otherwise they are the rules PutBucketCors stored in
Postgres, read afresh by each request, so every process applies a change at once.
"""

from __future__ import annotations

import logging

from aiohttp import web

from gateway.api import auth
from gateway.api.common import get_bucket, read_small_body, refuse_if_configured
from gateway.api.context import S3_REQUEST, S3Request
from gateway.meta import buckets
from gateway.meta.buckets import Bucket
from gateway.meta.db import DATABASE_ERRORS, DatabaseUnavailableError
from gateway.s3 import cors, errors, xmlbody
from gateway.s3.cors import CorsConfiguration
from gateway.s3.xml import cors_configuration

log = logging.getLogger(__name__)


def bucket_rules(req: S3Request, bucket: Bucket) -> CorsConfiguration | None:
    """The CORS rules that apply to ``bucket``; None: none."""
    configured = req.config.buckets.get(bucket.name)
    if configured is not None and configured.cors is not None:
        return configured.cors_configuration
    return bucket.cors


async def put_bucket_cors(req: S3Request) -> web.StreamResponse:
    assert req.bucket is not None
    auth.require_write(req, req.bucket)
    bucket = await get_bucket(req, req.bucket)
    refuse_if_configured(req, bucket, "cors", "CORS configuration")
    rules = xmlbody.parse_cors_configuration(await read_small_body(req))
    if not await buckets.set_setting(
        req.pool, bucket.name, "cors", [rule.to_json() for rule in rules]
    ):
        raise errors.NoSuchBucket(BucketName=bucket.name)
    return web.Response()


async def get_bucket_cors(req: S3Request) -> web.StreamResponse:
    assert req.bucket is not None
    auth.require_write(req, req.bucket)
    bucket = await get_bucket(req, req.bucket)
    rules = bucket_rules(req, bucket)
    if rules is None:
        raise errors.NoSuchCORSConfiguration(BucketName=bucket.name)
    return web.Response(body=cors_configuration(rules.rules), content_type="application/xml")


async def delete_bucket_cors(req: S3Request) -> web.StreamResponse:
    assert req.bucket is not None
    auth.require_write(req, req.bucket)
    bucket = await get_bucket(req, req.bucket)
    refuse_if_configured(req, bucket, "cors", "CORS configuration")
    if not await buckets.set_setting(req.pool, bucket.name, "cors", None):
        raise errors.NoSuchBucket(BucketName=bucket.name)
    return web.Response(status=204)


async def preflight(req: S3Request) -> web.StreamResponse:
    """OPTIONS: a browser asking whether a cross-origin request may be sent. No signature:
    browsers never sign a preflight."""
    origin = req.headers.get("Origin")
    if not origin:
        raise errors.BadRequest("Insufficient information. Origin request header needed.")
    method = req.headers.get("Access-Control-Request-Method", "")
    if method not in cors.METHODS:
        raise errors.BadRequest(f"Invalid Access-Control-Request-Method: {method or 'null'}")
    if req.bucket is None:
        raise errors.AccessForbidden("CORSResponse: Bucket not found")
    bucket = await buckets.get_bucket(req.pool, req.bucket)
    if bucket is None:
        raise errors.NoSuchBucket(BucketName=req.bucket)
    rules = bucket_rules(req, bucket)
    if rules is None:
        raise errors.AccessForbidden("CORSResponse: CORS is not enabled for this bucket.")
    requested = cors.requested_headers(req.headers.get("Access-Control-Request-Headers"))
    rule = cors.find_rule(rules.rules, origin, method, requested)
    if rule is None:
        raise errors.AccessForbidden(
            "CORSResponse: This CORS request is not allowed. This is usually because the"
            " evalution of Origin, request method / Access-Control-Request-Method or"
            " Access-Control-Request-Headers are not whitelisted by the resource's CORS spec.",
            Method=method,
            ResourceType="OBJECT" if req.key is not None else "BUCKET",
        )
    return web.Response(headers=cors.preflight_headers(rule, origin, method, requested))


def _credentialed(req: S3Request) -> bool:
    """Whether the browser sent credentials: a signature, or cookies."""
    headers = req.http.headers
    if "Authorization" in headers or "Cookie" in headers:
        return True
    return "X-Amz-Signature" in req.query or "Signature" in req.query


async def add_cors_headers(request: web.Request, response: web.StreamResponse) -> None:
    """on_response_prepare: the CORS headers of an actual request with an Origin, on every
    answer (errors and 304s included, so page scripts can read them)."""
    origin = request.headers.get("Origin")
    if not origin:
        return
    req = request.get(S3_REQUEST)
    # An origin that is not ASCII is no browser's, and could not be echoed in a header.
    if req is None or req.bucket is None or request.method == "OPTIONS" or not origin.isascii():
        return
    bucket = req.found_bucket
    if bucket is None:
        try:
            bucket = await buckets.get_bucket(req.pool, req.bucket)
        except (DatabaseUnavailableError, *DATABASE_ERRORS):
            # The answer goes out without CORS headers rather than not at all.
            log.debug("no CORS headers for %s: database unavailable", request.raw_path)
            return
        if bucket is None:
            return
    rules = bucket_rules(req, bucket)
    if rules is None:
        return
    headers = response.headers
    vary = headers.get("Vary")
    headers["Vary"] = cors.merge_vary(vary, cors.ACTUAL_VARY) if vary else cors.ACTUAL_VARY
    allowed = rules.actual_headers(origin, request.method, _credentialed(req))
    if allowed is not None:
        # No handler sets these headers: added without looking for earlier ones.
        headers.extend(allowed)
