"""AWS Signature Version 2 verification for S3 presigned (query-string) URLs only.

boto3's ``generate_presigned_url`` and ``aws s3 presign`` still produce SigV2 query URLs for a
custom endpoint, so these must work; SigV2 Authorization headers stay rejected by ``sigv4``.
Reference: the S3 guide "Signing and authenticating REST requests" (query string request
authentication alternative). The string to sign matches botocore's ``HmacV1QueryAuth`` byte for
byte, since that is the client whose URLs this exists for.

Flow for the caller, when ``sigv4.parse_auth`` returned None: ``parse_query_auth`` (None means
anonymous) -> look up the access key -> ``check_expiry`` -> ``verify``. A URL may carry signed
headers in its query (see ``headers_from_query``); the caller should apply them as headers.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
from dataclasses import dataclass
from datetime import UTC, datetime

from gateway.s3.errors import AccessDenied, InvalidArgument, SignatureDoesNotMatch
from gateway.s3.query import SIGNED_SUBRESOURCES, Query, has_control_characters
from gateway.s3.sigv4 import HttpRequestView, iso_extended

_REQUIRED = (
    "Query-string authentication requires the Signature, Expires and AWSAccessKeyId parameters"
)
_EPOCH_SECONDS = re.compile(r"[0-9]{1,18}")  # not \d, which also matches non-ASCII digits
_STANDARD_HEADERS = ("content-md5", "content-type")


@dataclass(frozen=True)
class QueryAuthV2:
    """What a SigV2 presigned URL claims about itself, before any secret is involved."""

    access_key: str
    signature: str  # base64, as decoded from the query
    expires: int  # epoch seconds


def parse_query_auth(req: HttpRequestView) -> QueryAuthV2 | None:
    """The SigV2 query claims; None when the query has neither AWSAccessKeyId nor Signature."""
    params = req.query
    if "AWSAccessKeyId" not in params and "Signature" not in params:
        return None
    access_key = params.get("AWSAccessKeyId")
    signature = params.get("Signature")
    expires = params.get("Expires")
    if not access_key or not signature or expires is None:
        raise AccessDenied(_REQUIRED)
    if not _EPOCH_SECONDS.fullmatch(expires):
        # S3's wording for a non-numeric Expires.
        raise AccessDenied(f"Invalid date (should be seconds since epoch): {expires}")
    return QueryAuthV2(access_key=access_key, signature=signature, expires=int(expires))


def check_expiry(auth: QueryAuthV2, now: datetime) -> None:
    """Reject the URL once ``now`` (aware) is past its Expires."""
    if now.timestamp() > auth.expires:
        raise AccessDenied(
            "Request has expired",
            Expires=iso_extended(datetime.fromtimestamp(auth.expires, UTC)),
            ServerTime=iso_extended(now),
        )


def headers_from_query(req: HttpRequestView) -> dict[str, str]:
    """Signed headers the URL carries in its query and the request does not send.

    botocore moves Content-Type, Content-MD5 and x-amz-* headers (e.g. x-amz-acl, metadata) of a
    presigned request into the query, and S3 then takes them from there. They are covered by the
    signature, so the caller should treat them as request headers. Lower-case names. A value no
    header could carry (CR, LF, other controls) is refused, as the HTTP parser refuses it in a
    header: stored as metadata it would break every later response that repeats it.
    """
    found: dict[str, str] = {}
    for query_name, value in req.query.pairs:
        name = query_name.lower()
        if (name in _STANDARD_HEADERS or name.startswith("x-amz-")) and name not in req.headers:
            value = value or ""
            if has_control_characters(value):
                raise InvalidArgument(
                    f"Invalid value for the header {name} carried in the query",
                    ArgumentName=name,
                    ArgumentValue=value.encode("unicode_escape").decode("ascii"),
                )
            found.setdefault(name, value)  # first occurrence, as for auth fields
    return found


def string_to_sign(req: HttpRequestView, bucket_from_host: str | None) -> str:
    """METHOD, Content-MD5, Content-Type, Expires, x-amz-* headers, then the resource."""
    return _string_to_sign(req, _resource_paths(req, bucket_from_host)[0])


def verify(
    req: HttpRequestView, auth: QueryAuthV2, secret_key: str, bucket_from_host: str | None
) -> None:
    """Check the URL's signature; ``bucket_from_host`` is the bucket of a virtual-host request."""
    candidates = [_string_to_sign(req, path) for path in _resource_paths(req, bucket_from_host)]
    provided = _bytes(auth.signature)
    for to_sign in candidates:
        if hmac.compare_digest(_sign(secret_key, to_sign), provided):
            return
    raise SignatureDoesNotMatch(
        AWSAccessKeyId=auth.access_key,
        StringToSign=candidates[0],
        SignatureProvided=auth.signature,
        StringToSignBytes=_bytes(candidates[0]).hex(" "),
    )


def _string_to_sign(req: HttpRequestView, path: str) -> str:
    headers = _signed_headers(req)
    expires = req.query.get("Expires", "")
    lines = [
        req.method.upper(),
        headers.get("content-md5", ""),
        headers.get("content-type", ""),
        expires,
    ]
    lines += [
        f"{name}:{value}" for name, value in sorted(headers.items()) if name.startswith("x-amz-")
    ]
    return "\n".join([*lines, path + _subresources(req.query)])


def _signed_headers(req: HttpRequestView) -> dict[str, str]:
    """Content-MD5, Content-Type and x-amz-* values: headers first, else the query's copies."""
    merged = {
        name: value
        for name, value in req.headers.items()
        if name in _STANDARD_HEADERS or name.startswith("x-amz-")
    }
    merged.update(headers_from_query(req))
    # botocore strips each value; repeated headers arrive already joined with ','.
    return {name: value.strip() for name, value in merged.items()}


def _resource_paths(req: HttpRequestView, bucket_from_host: str | None) -> list[str]:
    """The path part of the signed resource: botocore's form first, then any accepted variant.

    botocore signs the percent-encoded path it put in the URL, prefixed with the bucket when that
    went into the host, and a bucket itself as ``/bucket/`` whatever the addressing style. A
    path-style ``/bucket`` signed literally (as other SigV2 clients do) is accepted too.
    """
    if bucket_from_host is not None:
        return [f"/{bucket_from_host}{req.raw_path}"]
    if req.raw_path.count("/") == 1 and len(req.raw_path) > 1:
        return [req.raw_path + "/", req.raw_path]
    return [req.raw_path]


def _subresources(query: Query) -> str:
    """``?a&b=v`` for the signed sub-resources present, or ''.

    Names and values are compared decoded: botocore compares raw names, but writes these names
    unencoded, so the two agree on its URLs, and an encoded spelling cannot slip past unsigned.
    """
    found = []
    for name, value in query.pairs:
        if name in SIGNED_SUBRESOURCES:
            found.append((name, name if value is None else f"{name}={value}"))
    if not found:
        return ""
    found.sort(key=lambda item: item[0])
    return "?" + "&".join(text for _, text in found)


def _sign(secret_key: str, to_sign: str) -> bytes:
    digest = hmac.new(secret_key.encode("utf-8"), _bytes(to_sign), hashlib.sha1).digest()
    return base64.b64encode(digest)


def _bytes(text: str) -> bytes:
    # Paths and header values may carry undecodable bytes as surrogates; sign what was sent.
    return text.encode("utf-8", "surrogateescape")
