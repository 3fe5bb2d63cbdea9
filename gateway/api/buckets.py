"""Bucket operations: CreateBucket, DeleteBucket, HeadBucket, GetBucketLocation,
GetBucketVersioning, PutBucketVersioning, ListBuckets."""

from __future__ import annotations

from aiohttp import web

from gateway.api import auth
from gateway.api.common import get_bucket, read_small_body, refuse_if_configured
from gateway.api.context import RECENT_BUCKETS, S3Request
from gateway.api.listing import decode_token, encode_token
from gateway.meta import buckets
from gateway.s3 import acl, errors, names, versions, xmlbody
from gateway.s3.acl import PRIVATE
from gateway.s3.xml import list_all_my_buckets, location_constraint, versioning_configuration

# ListBuckets' page size once a client pages (S3's default and largest).
MAX_BUCKETS = 10000
_PAGING_PARAMETERS = ("max-buckets", "continuation-token", "prefix", "bucket-region")


def _max_buckets(raw: str | None) -> int:
    try:
        value = int(raw) if raw is not None else MAX_BUCKETS
    except ValueError:
        value = 0
    if not 1 <= value <= MAX_BUCKETS:
        raise errors.InvalidArgument(
            f"Argument max-buckets must be an integer between 1 and {MAX_BUCKETS}",
            ArgumentName="max-buckets",
            ArgumentValue=raw or "",
        )
    return value


async def list_buckets(req: S3Request) -> web.StreamResponse:
    """ListBuckets: every bucket the credential may read, in name order; paged (max-buckets,
    continuation-token, prefix, bucket-region) once the client asks for any of those, as S3
    pages them."""
    auth.require_signed(req)
    assert req.credential is not None
    query = req.query
    prefix = query.get("prefix")
    token = query.get("continuation-token")
    after = decode_token(token) if token else None
    region = query.get("bucket-region")
    found = await buckets.list_buckets(req.pool)
    visible = [
        (b.name, b.created_at)
        for b in found
        if req.credential.can_read(b.name)
        and b.name.startswith(prefix or "")
        and (after is None or b.name > after)
        # Every bucket of a gateway is in its one region.
        and region in (None, req.config.region)
    ]
    next_token = None
    if any(name in query for name in _PAGING_PARAMETERS):
        limit = _max_buckets(query.get("max-buckets"))
        if len(visible) > limit:
            visible = visible[:limit]
            next_token = encode_token(visible[-1][0])
    body = list_all_my_buckets(req.owner_id, visible, req.config.region, prefix, next_token)
    return web.Response(body=body, content_type="application/xml")


async def create_bucket(req: S3Request) -> web.StreamResponse:
    assert req.bucket is not None
    names.validate_bucket_name(req.bucket)
    auth.require_write(req, req.bucket)
    body = await read_small_body(req)
    location = xmlbody.parse_create_bucket_configuration(body) if body.strip() else None
    region = req.config.region
    # S3 rejects an explicit us-east-1 constraint and any constraint naming another region.
    if location is not None and (location != region or location == "us-east-1"):
        raise errors.InvalidLocationConstraint(
            f"The specified location-constraint is not valid: {location}",
            LocationConstraint=location,
        )
    config = req.config.buckets.get(req.bucket)
    profile = config.profile if config else req.config.default_profile
    public_read = config.public_listing if config else False
    bucket_acl = acl.acl_from_headers(req.headers) or PRIVATE
    created = await buckets.create_bucket(
        req.pool, req.bucket, profile, public_read, req.owner_id, bucket_acl
    )
    # Every credential of one gateway is one account, as with MinIO's users of one server.
    if created is None and region != "us-east-1":
        raise errors.BucketAlreadyOwnedByYou(BucketName=req.bucket)
    # In us-east-1 S3 answers creating a bucket one already owns with 200 and changes nothing
    # (its legacy behaviour, which tools that "ensure" a bucket rely on).
    return web.Response(headers={"Location": f"/{req.bucket}"})


async def delete_bucket(req: S3Request) -> web.StreamResponse:
    assert req.bucket is not None
    auth.require_write(req, req.bucket)
    async with req.pool.acquire() as conn:
        try:
            existed = await buckets.delete_bucket(conn, req.bucket)
        except buckets.BucketNotEmptyError:
            raise errors.BucketNotEmpty(BucketName=req.bucket) from None
    req.app[RECENT_BUCKETS].forget(req.bucket)
    if not existed:
        raise errors.NoSuchBucket(BucketName=req.bucket)
    return web.Response(status=204)


async def head_bucket(req: S3Request) -> web.StreamResponse:
    assert req.bucket is not None
    bucket = await get_bucket(req, req.bucket)
    auth.require_list(req, bucket)
    return web.Response(headers={"x-amz-bucket-region": req.config.region})


async def get_bucket_versioning(req: S3Request) -> web.StreamResponse:
    """Enabled, Suspended, or no Status for a bucket whose versioning was never enabled."""
    assert req.bucket is not None
    auth.require_signed(req)
    bucket = await get_bucket(req, req.bucket)
    auth.require_list(req, bucket)
    body = versioning_configuration(bucket.versioning)
    return web.Response(body=body, content_type="application/xml")


async def put_bucket_versioning(req: S3Request) -> web.StreamResponse:
    """Enable or suspend versioning; MFA delete is not implemented."""
    assert req.bucket is not None
    auth.require_write(req, req.bucket)
    bucket = await get_bucket(req, req.bucket)
    refuse_if_configured(req, bucket, "versioning", "versioning state")
    status, mfa_delete = xmlbody.parse_versioning_configuration(await read_small_body(req))
    if (mfa_delete is not None and mfa_delete != "Disabled") or "x-amz-mfa" in req.headers:
        raise errors.NotImplemented("This gateway does not implement MFA delete.")
    if status not in versions.STATES:
        # S3 refuses any other status, and a body without one.
        raise errors.MalformedXML()
    if not await buckets.set_setting(req.pool, bucket.name, "versioning", status):
        raise errors.NoSuchBucket(BucketName=bucket.name)
    # Writes of this process see the new state at once (others within RecentBuckets' ttl).
    req.app[RECENT_BUCKETS].forget(bucket.name)
    return web.Response()


async def get_bucket_location(req: S3Request) -> web.StreamResponse:
    assert req.bucket is not None
    bucket = await get_bucket(req, req.bucket)
    auth.require_location(req, bucket)
    return web.Response(body=location_constraint(req.config.region), content_type="application/xml")
