"""Who is asking (SigV4 header, presigned query, or anonymous) and may they."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from multidict import CIMultiDict, CIMultiDictProxy

from gateway.api.context import CREDENTIALS, S3Request
from gateway.config import CredentialConfig
from gateway.meta.buckets import Bucket
from gateway.s3 import errors, sigv2, sigv4


def _credential(req: S3Request, access_key: str) -> CredentialConfig:
    credential = req.http.app[CREDENTIALS].get(access_key)
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
    credential = _credential(req, auth.access_key)
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
    credential = _credential(req, auth.access_key)
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
