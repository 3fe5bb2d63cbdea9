"""Who is asking (SigV4 header, presigned query, or anonymous) and may they."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from gateway.api.context import CREDENTIALS, S3Request
from gateway.meta.buckets import Bucket
from gateway.s3 import errors, sigv4


def authenticate(req: S3Request) -> None:
    """Verify the request's signature (if any) and set its credential; raises S3Error."""
    http = req.http
    headers = {name.lower(): ",".join(http.headers.getall(name)) for name in http.headers}
    view = sigv4.HttpRequestView(http.method, req.raw_path, req.raw_query, headers)
    auth = sigv4.parse_auth(view)
    if auth is None:
        return
    credential = http.app[CREDENTIALS].get(auth.access_key)
    if credential is None:
        raise errors.InvalidAccessKeyId(AWSAccessKeyId=auth.access_key)
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
    req.auth = auth
    req.credential = credential


def require_read(req: S3Request, bucket: Bucket) -> None:
    if req.credential is None:
        if not bucket.public_read:
            raise errors.AccessDenied()
    elif not req.credential.can_read(bucket.name):
        raise errors.AccessDenied()


def require_write(req: S3Request, bucket_name: str) -> None:
    if req.credential is None or not req.credential.can_write(bucket_name):
        raise errors.AccessDenied()


def require_signed(req: S3Request) -> None:
    if req.credential is None:
        raise errors.AccessDenied()
