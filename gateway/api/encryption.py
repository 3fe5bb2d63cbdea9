"""Server-side encryption as S3 clients ask for it and see it: a profile with ``encryption``
encrypts every object (SSE-S3, ``AES256``); elsewhere, a request for encryption is refused
rather than answered as if it were kept."""

from __future__ import annotations

from collections.abc import Mapping

from aiohttp import web

from gateway.api.context import CONFIG, S3_REQUEST, S3Request
from gateway.meta.buckets import Bucket
from gateway.s3 import errors

SSE_HEADER = "x-amz-server-side-encryption"
AES256 = "AES256"
# What S3 also accepts, but through a KMS this gateway does not have.
_KMS = frozenset({"aws:kms", "aws:kms:dsse"})
# Sub-resources whose answers describe no object bytes.
_NOT_CONTENT = frozenset({"acl", "tagging", "uploads"})


def check_requested(req: S3Request, bucket: Bucket, headers: Mapping[str, str]) -> None:
    """Refuse a write whose x-amz-server-side-encryption this bucket cannot honour."""
    requested = headers.get(SSE_HEADER)
    if requested is None:
        return
    if requested in _KMS:
        raise errors.NotImplemented(
            "Server-side encryption with KMS keys is not supported; use AES256."
        )
    if requested != AES256:
        raise errors.InvalidArgument(
            "The encryption method specified is not supported.",
            ArgumentName=SSE_HEADER,
            ArgumentValue=requested,
        )
    if req.config.storage_profiles[bucket.profile].encryption is None:
        raise errors.InvalidArgument(
            f"Bucket {bucket.name} is not stored encrypted, so server-side encryption cannot be"
            " applied to this object. An administrator can enable encryption on the bucket's"
            " storage profile.",
            ArgumentName=SSE_HEADER,
            ArgumentValue=requested,
        )


async def add_encryption_header(request: web.Request, response: web.StreamResponse) -> None:
    """on_response_prepare: an object's bytes on an encrypted profile are answered as SSE-S3."""
    req = request.get(S3_REQUEST)
    if req is None or req.key is None or req.profile is None or response.status >= 300:
        return
    if request.method == "DELETE" or not _NOT_CONTENT.isdisjoint(req.query):
        return
    if request.app[CONFIG].storage_profiles[req.profile].encryption is not None:
        response.headers[SSE_HEADER] = AES256
