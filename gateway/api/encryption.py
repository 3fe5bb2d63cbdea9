"""Server-side encryption as S3 clients ask for it and see it: a profile with ``encryption``
encrypts every object (SSE-S3, ``AES256``); elsewhere, a request for encryption is refused
rather than answered as if it were kept. A client's own key (SSE-C) seals the objects written
with it on any profile whose blobs the gateway writes (not an upstream kept in place)."""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import os
from collections.abc import Mapping

from aiohttp import web

from gateway.api.context import CONFIG, S3_REQUEST, S3Request
from gateway.meta.buckets import Bucket
from gateway.meta.object_rows import ObjectMetadata, ObjectRecord
from gateway.objects.backend import ObjectBackend
from gateway.s3 import errors
from gateway.storage import customer_keys
from gateway.storage.sealing import KEY_SIZE

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
    if req.customer_key_md5 is not None:
        response.headers[CUSTOMER_PREFIX + "algorithm"] = AES256
        response.headers[CUSTOMER_PREFIX + "key-MD5"] = req.customer_key_md5
    elif request.app[CONFIG].storage_profiles[req.profile].encryption is not None:
        response.headers[SSE_HEADER] = AES256


CUSTOMER_PREFIX = "x-amz-server-side-encryption-customer-"
COPY_SOURCE_CUSTOMER_PREFIX = "x-amz-copy-source-server-side-encryption-customer-"


def customer_key(
    req: S3Request, prefix: str = CUSTOMER_PREFIX, headers: Mapping[str, str] | None = None
) -> bytes | None:
    """The client's own key (SSE-C) the request carries under ``prefix``, checked as S3 does;
    None without one."""
    headers = req.headers if headers is None else headers
    algorithm = headers.get(prefix + "algorithm")
    key_text = headers.get(prefix + "key")
    key_md5 = headers.get(prefix + "key-MD5")
    if algorithm is None and key_text is None and key_md5 is None:
        return None
    if algorithm is None:
        raise errors.InvalidArgument(
            "Requests specifying Server Side Encryption with Customer provided keys must"
            " provide a valid encryption algorithm.",
            ArgumentName=prefix + "algorithm",
        )
    if algorithm != AES256:
        raise errors.InvalidArgument(
            "The encryption algorithm specified is not valid.",
            ArgumentName=prefix + "algorithm",
            ArgumentValue=algorithm,
        )
    try:
        key = base64.b64decode(key_text or "", validate=True)
    except binascii.Error:
        key = b""
    if len(key) != KEY_SIZE:
        raise errors.InvalidArgument(
            "The secret key was invalid for the specified algorithm.",
            ArgumentName=prefix + "key",
        )
    if key_md5 is None or not hmac.compare_digest(key_md5, _md5_b64(key)):
        raise errors.InvalidArgument(
            "The calculated MD5 hash of the key did not match the hash that was provided.",
            ArgumentName=prefix + "key-MD5",
        )
    if not req.http.secure and not req.config.allow_sse_c_over_http:
        raise errors.InvalidRequest(
            "Requests specifying Server Side Encryption with Customer provided keys must be"
            " made over a secure connection."
        )
    return key


def _md5_b64(key: bytes) -> str:
    return base64.b64encode(hashlib.md5(key).digest()).decode()


def _mac(salt: bytes, key: bytes) -> str:
    return base64.b64encode(hmac.digest(salt, key, "sha256")).decode()


def key_record(key: bytes) -> dict[str, str]:
    """What an object sealed with ``key`` keeps to check later keys: a salt and a MAC."""
    salt = os.urandom(16)
    return {"salt": base64.b64encode(salt).decode(), "mac": _mac(salt, key)}


def for_write(
    req: S3Request,
    bucket: Bucket,
    backend: ObjectBackend,
    headers: Mapping[str, str] | None = None,
) -> dict[str, str] | None:
    """The SSE-C key of the request (or of ``headers``: a POST form's fields), set for the
    write; the record to store with the object."""
    headers = req.headers if headers is None else headers
    key = customer_key(req, headers=headers)
    if key is None:
        return None
    if headers.get(SSE_HEADER) is not None:
        raise errors.InvalidArgument(
            "Server Side Encryption with Customer provided key is incompatible with the"
            " encryption method specified.",
            ArgumentName=SSE_HEADER,
        )
    if not backend.seals_customer_keys:
        raise errors.NotImplemented(
            f"Bucket {bucket.name} keeps objects in place in its upstream storage, where"
            " customer-provided encryption keys cannot be applied."
        )
    customer_keys.use(write=key)
    req.customer_key_md5 = _md5_b64(key)
    return key_record(key)


def for_read(req: S3Request, record: ObjectRecord, prefix: str = CUSTOMER_PREFIX) -> None:
    """Check the key a read of ``record`` brings against the one it was sealed with, as S3
    does (400 without one, 403 with another), and set it for the read."""
    key = _matching_key(
        req,
        record.metadata.customer_key,
        prefix,
        "The encryption parameters are not applicable to this object.",
        "The object was stored using a form of Server Side Encryption. The correct"
        " parameters must be provided to retrieve the object.",
    )
    if key is None:
        return
    customer_keys.use(read=key)
    if prefix == CUSTOMER_PREFIX:
        req.customer_key_md5 = _md5_b64(key)


def for_part(req: S3Request, upload_metadata: ObjectMetadata) -> None:
    """A part of an upload begun with a client's key must bring the same key (set for its
    write); one begun without must bring none."""
    key = _matching_key(
        req,
        upload_metadata.customer_key,
        CUSTOMER_PREFIX,
        "The multipart upload was not initiated with customer-provided encryption.",
        "The multipart upload was initiated with customer-provided encryption: every part"
        " must carry the same key.",
    )
    if key is None:
        return
    customer_keys.use(write=key)
    req.customer_key_md5 = _md5_b64(key)


def _matching_key(
    req: S3Request,
    expected: Mapping[str, str] | None,
    prefix: str,
    not_applicable: str,
    missing: str,
) -> bytes | None:
    """The request's key if it matches ``expected`` (a salt and MAC); None when neither has
    one; else the S3 error (400 for a key too many or too few, 403 for another key)."""
    key = customer_key(req, prefix)
    if expected is None:
        if key is not None:
            raise errors.InvalidRequest(not_applicable)
        return None
    if key is None:
        raise errors.InvalidRequest(missing)
    salt = base64.b64decode(expected["salt"])
    if not hmac.compare_digest(_mac(salt, key), expected["mac"]):
        raise errors.AccessDenied("Access Denied")
    return key
