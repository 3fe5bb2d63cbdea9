"""ACLs: PutBucketAcl, GetBucketAcl, PutObjectAcl, GetObjectAcl.

An ACL here is private or public-read (gateway.s3.acl). A bucket's public-read lets anyone
list it, as in S3; an object's lets anyone read it and its variants, even in a private bucket.
Bucket ACLs are kept in the bucket's settings, object ACLs in the object's metadata row.
"""

from __future__ import annotations

from aiohttp import web

from gateway.api import auth
from gateway.api.common import get_bucket, read_small_body
from gateway.api.context import LOOKUPS, S3Request
from gateway.api.objects import object_key
from gateway.meta import buckets, object_rows
from gateway.meta.buckets import Bucket
from gateway.s3 import acl, errors, versions, xmlbody
from gateway.s3.acl import PRIVATE, PUBLIC_READ
from gateway.s3.xml import access_control_policy


async def _requested_acl(req: S3Request, bucket: Bucket) -> str:
    """The ACL a Put*Acl request asks for: its canned header or grant headers, or its
    AccessControlPolicy body, never both."""
    from_headers = acl.acl_from_headers(req.headers)
    body = await read_small_body(req)
    if from_headers is not None:
        if body.strip():
            raise errors.UnexpectedContent(
                "This request does not support content: the ACL is given by its headers."
            )
        return from_headers
    if not body.strip():
        raise errors.MissingSecurityHeader(
            "An ACL needs an x-amz-acl header or an AccessControlPolicy body.",
            MissingHeaderName="x-amz-acl",
        )
    grants = xmlbody.parse_access_control_policy(body)
    return acl.acl_from_grants(grants, owners={bucket.owner, req.owner_id})


def _bucket_is_public(bucket: Bucket) -> bool:
    return bucket.public_read or bucket.acl == PUBLIC_READ


async def get_bucket_acl(req: S3Request) -> web.StreamResponse:
    assert req.bucket is not None
    auth.require_signed(req)
    bucket = await get_bucket(req, req.bucket)
    auth.require_list(req, bucket)
    body = access_control_policy(bucket.owner, _bucket_is_public(bucket))
    return web.Response(body=body, content_type="application/xml")


async def put_bucket_acl(req: S3Request) -> web.StreamResponse:
    assert req.bucket is not None
    auth.require_write(req, req.bucket)
    bucket = await get_bucket(req, req.bucket)
    requested = await _requested_acl(req, bucket)
    configured = req.config.buckets.get(bucket.name)
    if requested == PRIVATE and configured is not None and configured.public_listing:
        raise errors.InvalidRequest(
            f"Bucket {bucket.name} is public by the gateway's configuration file"
            " (public_read: true); change it there."
        )
    value = None if requested == PRIVATE else requested
    if not await buckets.set_setting(req.pool, bucket.name, "acl", value):
        raise errors.NoSuchBucket(BucketName=bucket.name)
    return web.Response()


async def get_object_acl(req: S3Request) -> web.StreamResponse:
    assert req.bucket is not None
    auth.require_signed(req)
    assert req.credential is not None
    bucket, record = await current_object(req, adopt=req.credential.can_read(req.bucket))
    auth.require_object_read(req, bucket, object_key(req), record)
    if record is None:
        raise errors.NoSuchKey(Key=object_key(req))
    body = access_control_policy(bucket.owner, record.metadata.acl == PUBLIC_READ)
    return web.Response(body=body, content_type="application/xml")


async def put_object_acl(req: S3Request) -> web.StreamResponse:
    assert req.bucket is not None
    auth.require_write(req, req.bucket)
    bucket, record = await current_object(req, adopt=True)
    if record is None:
        raise errors.NoSuchKey(Key=object_key(req))
    requested = await _requested_acl(req, bucket)
    if not await object_rows.set_acl(req.pool, bucket.name, record.key, requested):
        raise errors.NoSuchKey(Key=record.key)
    return web.Response()


async def current_object(
    req: S3Request, adopt: bool
) -> tuple[Bucket, object_rows.ObjectRecord | None]:
    """The bucket and current object the request names; with ``adopt``, one stored in the
    upstream by another tool is adopted first."""
    assert req.bucket is not None
    key = object_key(req)
    bucket, record = await req.app[LOOKUPS].lookup(req.bucket, key)
    if bucket is None:
        raise errors.NoSuchBucket(BucketName=req.bucket)
    req.found_bucket = bucket
    if record is None and adopt:
        record = await req.backend(bucket.profile).adopt(bucket, key)
    current = (record.version_id, record.null_version) if record is not None else None
    versions.check_current(req.query.get("versionId"), key, current)
    return bucket, record
