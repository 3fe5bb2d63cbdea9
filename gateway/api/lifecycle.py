"""Lifecycle configuration: PutBucketLifecycleConfiguration, GetBucketLifecycleConfiguration,
DeleteBucketLifecycle. The janitor applies the rules (gateway.maintenance.lifecycle).

A bucket's rules come from the YAML (``buckets.<name>.lifecycle``) when it sets them, and then
only from there; otherwise from PutBucketLifecycleConfiguration, kept in Postgres. Changing
them needs a write grant on the bucket, like every bucket configuration.
"""

from __future__ import annotations

from aiohttp import web

from gateway.api import auth
from gateway.api.common import get_bucket, read_small_body, refuse_if_configured
from gateway.api.context import S3Request
from gateway.meta import buckets
from gateway.meta.buckets import Bucket
from gateway.s3 import errors, xmlbody
from gateway.s3.lifecycle import LifecycleRule
from gateway.s3.xml import lifecycle_configuration


def bucket_lifecycle(req: S3Request, bucket: Bucket) -> tuple[LifecycleRule, ...] | None:
    """The rules that apply to ``bucket``; None: none."""
    configured = req.config.buckets.get(bucket.name)
    if configured is not None and configured.lifecycle_rules is not None:
        return configured.lifecycle_rules
    return bucket.lifecycle


async def put_bucket_lifecycle_configuration(req: S3Request) -> web.StreamResponse:
    assert req.bucket is not None
    auth.require_write(req, req.bucket)
    bucket = await get_bucket(req, req.bucket)
    refuse_if_configured(req, bucket, "lifecycle", "lifecycle configuration")
    rules = xmlbody.parse_lifecycle_configuration(await read_small_body(req))
    document = [rule.to_json() for rule in rules]
    if not await buckets.set_setting(req.pool, bucket.name, "lifecycle", document):
        raise errors.NoSuchBucket(BucketName=bucket.name)
    return web.Response()


async def get_bucket_lifecycle_configuration(req: S3Request) -> web.StreamResponse:
    assert req.bucket is not None
    auth.require_write(req, req.bucket)
    bucket = await get_bucket(req, req.bucket)
    rules = bucket_lifecycle(req, bucket)
    if rules is None:
        raise errors.NoSuchLifecycleConfiguration(BucketName=bucket.name)
    return web.Response(body=lifecycle_configuration(rules), content_type="application/xml")


async def delete_bucket_lifecycle(req: S3Request) -> web.StreamResponse:
    assert req.bucket is not None
    auth.require_write(req, req.bucket)
    bucket = await get_bucket(req, req.bucket)
    refuse_if_configured(req, bucket, "lifecycle", "lifecycle configuration")
    if not await buckets.set_setting(req.pool, bucket.name, "lifecycle", None):
        raise errors.NoSuchBucket(BucketName=bucket.name)
    return web.Response(status=204)
