"""Bucket policies: PutBucketPolicy, GetBucketPolicy, DeleteBucketPolicy.

The subset gateway.s3.policy accepts: what makes a bucket or a prefix readable (and listable)
by everyone. The document is stored as sent, in the bucket's settings, and read by every
request of every process that looks the bucket up.
"""

from __future__ import annotations

from aiohttp import web

from gateway.api import auth
from gateway.api.common import get_bucket, read_small_body
from gateway.api.context import S3Request
from gateway.meta import buckets
from gateway.s3 import errors
from gateway.s3.policy import parse_policy


async def put_bucket_policy(req: S3Request) -> web.StreamResponse:
    assert req.bucket is not None
    auth.require_write(req, req.bucket)
    bucket = await get_bucket(req, req.bucket)
    body = await read_small_body(req)
    try:
        document = body.decode("utf-8")
    except UnicodeDecodeError:
        raise errors.MalformedPolicy("This policy contains invalid Json") from None
    parse_policy(document, bucket.name)
    if not await buckets.set_setting(req.pool, bucket.name, "policy", document):
        raise errors.NoSuchBucket(BucketName=bucket.name)
    return web.Response(status=204)


async def get_bucket_policy(req: S3Request) -> web.StreamResponse:
    assert req.bucket is not None
    auth.require_write(req, req.bucket)
    bucket = await get_bucket(req, req.bucket)
    if bucket.policy_document is None:
        raise errors.NoSuchBucketPolicy(BucketName=bucket.name)
    return web.Response(text=bucket.policy_document, content_type="application/json")


async def delete_bucket_policy(req: S3Request) -> web.StreamResponse:
    assert req.bucket is not None
    auth.require_write(req, req.bucket)
    bucket = await get_bucket(req, req.bucket)
    if not await buckets.set_setting(req.pool, bucket.name, "policy", None):
        raise errors.NoSuchBucket(BucketName=bucket.name)
    return web.Response(status=204)
