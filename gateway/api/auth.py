"""Who is asking (SigV4 header, presigned query, or anonymous) and may they."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from multidict import CIMultiDict, CIMultiDictProxy

from gateway.api.context import KEY_DIRECTORY, S3Request
from gateway.config import CredentialConfig
from gateway.meta.buckets import Bucket
from gateway.meta.key_directory import DirectoryStale
from gateway.meta.object_rows import ObjectRecord
from gateway.s3 import errors, sigv2, sigv4
from gateway.s3.acl import PUBLIC_READ


def credential_of(req: S3Request, access_key: str) -> CredentialConfig:
    """The credential an access key names: the YAML's (and root's) first, then the
    database's (`gateway keys`); unknown, revoked and expired keys alike are
    InvalidAccessKeyId."""
    credential = req.snapshot.credentials.get(access_key)
    if credential is None:
        try:
            credential = req.http.app[KEY_DIRECTORY].get(access_key)
        except DirectoryStale:
            raise errors.ServiceUnavailable(
                "The access keys cannot be confirmed right now; try again shortly."
            ) from None
    if credential is None:
        raise errors.InvalidAccessKeyId(AWSAccessKeyId=access_key)
    return credential


def authenticate(req: S3Request) -> None:
    """Verify the request's signature (if any) and set its credential; raises S3Error."""
    http = req.http
    headers: dict[str, str] = {}
    for name, value in http.headers.items():
        lower = name.lower()
        # Repeated headers are signed as one, their values joined with commas.
        headers[lower] = f"{headers[lower]},{value}" if lower in headers else value
    view = sigv4.HttpRequestView(http.method, req.raw_path, req.raw_query, headers, req.query)
    auth = sigv4.parse_auth(view)
    if auth is None:
        _authenticate_v2(req, view)
        return
    credential = credential_of(req, auth.access_key)
    region = req.config.region
    if auth.region != region:
        malformed = (
            errors.AuthorizationQueryParametersError
            if auth.presigned
            else errors.AuthorizationHeaderMalformed
        )
        raise malformed(
            f"The authorization header is malformed; the region '{auth.region}' is wrong;"
            f" expecting '{region}'",
            Region=region,
        )
    skew = timedelta(seconds=req.config.limits.clock_skew_seconds)
    sigv4.check_time(auth, datetime.now(UTC), skew)
    req.signing_key = sigv4.verify(view, auth, credential.secret_key)
    unsigned = sigv4.unsigned_amz_headers(view, auth)
    if unsigned:
        raise errors.AccessDenied(
            "There were headers present in the request which were not signed",
            HeadersNotSigned=", ".join(unsigned),
        )
    req.auth = auth
    req.credential = credential


def _authenticate_v2(req: S3Request, view: sigv4.HttpRequestView) -> None:
    """SigV2 presigned URLs: what boto3 and aws-cli generate by default for custom endpoints.

    Header-signed SigV2 stays refused (sigv4.parse_auth raises); query URLs are read-only
    capabilities handed to browsers and curl, so they must keep working.
    """
    auth = sigv2.parse_query_auth(view)
    if auth is None:
        return
    credential = credential_of(req, auth.access_key)
    sigv2.check_expiry(auth, datetime.now(UTC))
    sigv2.verify(view, auth, credential.secret_key, req.bucket if req.virtual_host else None)
    req.credential = credential
    # botocore moves signed Content-Type and x-amz-* headers of a presigned PUT into the query.
    extra = sigv2.headers_from_query(view)
    if extra:
        merged = CIMultiDict(req.headers)
        for name, value in extra.items():
            merged.setdefault(name, value)
        req.headers = CIMultiDictProxy(merged)


def _anonymous_may_list(bucket: Bucket) -> bool:
    policy = bucket.policy
    return bucket.public_read or bucket.acl == PUBLIC_READ or bool(policy and policy.list_bucket)


def _anonymous_may_read(req: S3Request, bucket: Bucket, key: str) -> bool:
    """Whether anyone may read ``key`` whatever the object's own ACL says."""
    if bucket.public_read:
        return True
    configured = req.config.buckets.get(bucket.name)
    if configured is not None and configured.public_read == "objects":
        return True
    policy = bucket.policy
    return policy is not None and policy.allows_read(key)


def require_list(req: S3Request, bucket: Bucket) -> None:
    """ListObjects, HeadBucket: the bucket's grant, or a public bucket (YAML
    ``public_read: true``, a public-read bucket ACL, or a policy's ListBucket), which admits
    everyone, signed or not, as S3's AllUsers does."""
    if req.credential is not None and req.credential.can_read(bucket.name):
        return
    if not _anonymous_may_list(bucket):
        raise errors.AccessDenied()


def require_object_read(
    req: S3Request, bucket: Bucket, key: str, record: ObjectRecord | None
) -> None:
    """GetObject, HeadObject, a variant, a copy source: the bucket's grant, a public bucket or
    policy, or the object's public-read ACL (which lets in everyone, signed or not, as S3's
    AllUsers grant does).

    A missing key (``record`` None) is let through, to be answered NoSuchKey, only to those
    who could have read it or may list the bucket: others learn nothing from a 403.
    """
    if req.credential is not None and req.credential.can_read(bucket.name):
        return
    if _anonymous_may_read(req, bucket, key):
        return
    if record is None:
        if _anonymous_may_list(bucket):
            return
    elif record.metadata.acl == PUBLIC_READ:
        return
    raise errors.AccessDenied()


def require_location(req: S3Request, bucket: Bucket) -> None:
    """GetBucketLocation: the bucket's grant, or a policy that allows it to everyone."""
    if req.credential is not None and req.credential.can_read(bucket.name):
        return
    policy = bucket.policy
    if policy is None or not policy.get_location:
        raise errors.AccessDenied()


def require_write(req: S3Request, bucket_name: str) -> None:
    if req.credential is None or not req.credential.can_write(bucket_name):
        raise errors.AccessDenied()


def require_signed(req: S3Request) -> None:
    if req.credential is None:
        raise errors.AccessDenied()
