"""Static websites: PutBucketWebsite, GetBucketWebsite, DeleteBucketWebsite, and the website
hosts (``<bucket>.<website domain>``) that serve a bucket as a site, as S3's website
endpoints do.

On a website host a request is anonymous, GET or HEAD, and answered in HTML: "/" and "/dir/"
serve the index document, "/dir" is redirected to "/dir/" when "dir/<index>" exists, and a
path that names nothing readable serves the error document with the error's status. Whether
anonymous readers may read a key is decided by the same code as for GetObject (public
buckets, policies, object ACLs), which is reused here for the read itself: Range, conditional
requests, ETags and variants behave as on the S3 API host.

A bucket's website configuration comes from the YAML (``buckets.<name>.website``) when it
sets one, and then only from there; otherwise from PutBucketWebsite, kept in Postgres.
"""

from __future__ import annotations

import dataclasses
from urllib.parse import quote

from aiohttp import web
from multidict import CIMultiDict, CIMultiDictProxy

from gateway.api import auth, objects, variants
from gateway.api.common import get_bucket, read_small_body, refuse_if_configured
from gateway.api.context import LOOKUPS, S3Request
from gateway.api.middleware import REQUEST_ID
from gateway.meta import buckets
from gateway.meta.buckets import Bucket
from gateway.s3 import errors, query, xmlbody
from gateway.s3.website import WebsiteConfiguration, error_page
from gateway.s3.xml import website_configuration

# Request headers the error document is read without: it answers whatever was asked.
_READ_CONDITIONS = (
    "range",
    "if-match",
    "if-none-match",
    "if-modified-since",
    "if-unmodified-since",
)


def bucket_website(req: S3Request, bucket: Bucket) -> WebsiteConfiguration | None:
    """The website configuration that applies to ``bucket``; None: none."""
    configured = req.config.buckets.get(bucket.name)
    if configured is not None and configured.website is not None:
        return configured.website.configuration()
    return bucket.website


async def put_bucket_website(req: S3Request) -> web.StreamResponse:
    assert req.bucket is not None
    auth.require_write(req, req.bucket)
    bucket = await get_bucket(req, req.bucket)
    refuse_if_configured(req, bucket, "website", "website configuration")
    config = xmlbody.parse_website_configuration(await read_small_body(req))
    if not await buckets.set_setting(req.pool, bucket.name, "website", config.to_json()):
        raise errors.NoSuchBucket(BucketName=bucket.name)
    return web.Response()


async def get_bucket_website(req: S3Request) -> web.StreamResponse:
    assert req.bucket is not None
    auth.require_write(req, req.bucket)
    bucket = await get_bucket(req, req.bucket)
    config = bucket_website(req, bucket)
    if config is None:
        raise errors.NoSuchWebsiteConfiguration(BucketName=bucket.name)
    return web.Response(body=website_configuration(config), content_type="application/xml")


async def delete_bucket_website(req: S3Request) -> web.StreamResponse:
    assert req.bucket is not None
    auth.require_write(req, req.bucket)
    bucket = await get_bucket(req, req.bucket)
    refuse_if_configured(req, bucket, "website", "website configuration")
    if not await buckets.set_setting(req.pool, bucket.name, "website", None):
        raise errors.NoSuchBucket(BucketName=bucket.name)
    return web.Response(status=204)


async def serve(req: S3Request) -> web.StreamResponse:
    """A request on a website host."""
    if req.http.method not in ("GET", "HEAD"):
        error = errors.MethodNotAllowed("GET, HEAD")
        return _error_page(req, error, error.headers())
    try:
        return await _serve(req)
    except errors.S3Error as error:
        if error.status == 304:
            raise
        return _error_page(req, error, error.headers())


async def _serve(req: S3Request) -> web.StreamResponse:
    assert req.bucket is not None
    bucket = await get_bucket(req, req.bucket)
    config = bucket_website(req, bucket)
    if config is None:
        raise errors.NoSuchWebsiteConfiguration(BucketName=bucket.name)
    path_key = req.key or ""
    try:
        return await _read(req, config.key_of(path_key))
    except errors.S3Error as error:
        if error.code not in ("NoSuchKey", "AccessDenied"):
            raise
        folder_index = config.directory_index(path_key)
        if folder_index is not None and await _readable(req, bucket, folder_index):
            # "/dir" names a folder with an index: the browser must ask for "/dir/", so that
            # the page's relative links resolve inside it.
            return web.Response(status=302, headers={"Location": f"/{quote(path_key)}/"})
        if config.error_key is None:
            raise
        try:
            return await _error_document(req, config.error_key, error.status)
        except errors.S3Error:
            raise error from None


async def _read(req: S3Request, key: str) -> web.StreamResponse:
    req.key = key
    if "variant" in req.query:
        if req.http.method == "HEAD":
            return await variants.head_object_variant(req)
        return await variants.get_object_variant(req)
    if req.http.method == "HEAD":
        return await objects.head_object(req)
    return await objects.get_object(req)


async def _readable(req: S3Request, bucket: Bucket, key: str) -> bool:
    _, record = await req.app[LOOKUPS].lookup(bucket.name, key)
    if record is None:
        return False
    try:
        auth.require_object_read(req, bucket, key, record)
    except errors.AccessDenied:
        return False
    return True


async def _error_document(req: S3Request, key: str, status: int) -> web.StreamResponse:
    """The error document as the answer, with the status of the error it stands for."""
    headers = CIMultiDict(
        (name, value) for name, value in req.headers.items() if name.lower() not in _READ_CONDITIONS
    )
    document_req = dataclasses.replace(
        req, key=key, query=query.EMPTY, headers=CIMultiDictProxy(headers)
    )
    read = await objects.plan_read(document_req, with_segments=req.http.method != "HEAD")
    return await objects.answer_read(document_req, dataclasses.replace(read, status=status))


def _error_page(
    req: S3Request, error: errors.S3Error, headers: dict[str, str]
) -> web.StreamResponse:
    extra = {name: value for name, value in error.extra.items() if name in ("BucketName", "Key")}
    if error.code == "NoSuchKey" and req.key is not None:
        extra["Key"] = req.key
    page = error_page(error.status, error.code, error.message, req.http[REQUEST_ID], **extra)
    response = web.Response(status=error.status, headers=headers)
    if req.http.method != "HEAD":
        response.text = page
        response.content_type = "text/html"
        response.charset = "utf-8"
    return response
