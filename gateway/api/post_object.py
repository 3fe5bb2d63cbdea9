"""POST Object: a browser's upload through an HTML form, ``POST /bucket`` with a
multipart/form-data body whose fields carry the key, the object's headers and a signed policy
(what boto3's ``generate_presigned_post`` and the S3 docs' HTML form make).

The fields before the file are read (at most MAX_FIELDS_SIZE bytes), the policy's signature
and conditions are checked, and only then is the file part streamed to storage through the
bucket's backend, like a PutObject body: never held in memory, refused while it streams once it
outgrows the policy's content-length-range or max_object_size, and nothing stored on any
refusal. Fields after the file are ignored, as S3 does.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from urllib.parse import quote, urlencode, urlsplit

from aiohttp import BodyPartReader, ClientPayloadError, MultipartReader, web
from aiohttp.http_exceptions import HttpProcessingError
from multidict import CIMultiDict

from gateway.api import auth
from gateway.api.body import send_continue
from gateway.api.common import recent_bucket
from gateway.api.context import S3Request
from gateway.api.objects import STORED_HEADERS, write_object
from gateway.config import CredentialConfig
from gateway.s3 import checksums, errors, names, post_policy, xmlbody
from gateway.s3.checksums import BodyDigests
from gateway.s3.post_policy import PostPolicy
from gateway.s3.xml import post_response

# S3's limit on the form fields that precede the file.
MAX_FIELDS_SIZE = 20 * 1024
_FILE_CHUNK = 256 * 1024
_SUCCESS_STATUSES = {"200": 200, "201": 201, "204": 204}
# Fields that make a form a signed one, which then must carry its policy.
_SIGNATURE_FIELDS = frozenset(
    {"x-amz-signature", "x-amz-credential", "signature", "awsaccesskeyid"}
)


async def post_object(req: S3Request) -> web.StreamResponse:
    assert req.bucket is not None
    content_type = req.headers.get("Content-Type", "")
    if not content_type.lower().startswith("multipart/form-data"):
        raise errors.PreconditionFailed(
            Condition="Bucket POST must be of the enclosure-type multipart/form-data"
        )
    idle = req.config.limits.body_idle_timeout_seconds
    try:
        reader = MultipartReader(req.headers, req.http.content)
    except (AssertionError, ValueError):
        raise errors.MalformedPOSTRequest() from None
    await send_continue(req)
    fields, file_part = await _read_fields(reader, idle)
    if file_part is None:
        raise errors.InvalidArgument(
            "POST requires exactly one file upload per request.", ArgumentName="file"
        )
    if "key" not in fields:
        raise errors.InvalidArgument(
            "Bucket POST must contain a field named 'key'.  If it is specified, please check"
            " the order of the fields.",
            ArgumentName="key",
        )
    # Authorised before the bucket is looked up, as PutObject is: a form signed by nobody
    # who may write here learns nothing about the bucket.
    policy = _authorised_policy(req, fields)
    post_policy.check_fields(policy, fields, req.bucket, datetime.now(UTC))
    bucket = await recent_bucket(req, req.bucket)
    key = fields["key"].replace("${filename}", file_part.filename or "")
    names.validate_key(key)
    limits = req.config.limits
    low, high = policy.size_range() or (0, limits.max_object_size)
    body = FormFile(reader, file_part, fields, low, min(high, limits.max_object_size), idle)
    record = await write_object(req, bucket, key, _object_headers(fields), body)
    return _answer(req, fields, bucket.name, key, record.etag)


@contextlib.asynccontextmanager
async def _receiving(idle: float, malformed: type[errors.S3Error]) -> AsyncIterator[None]:
    """A read of the form: the client's idleness, a cut connection and what aiohttp finds
    wrong with the multipart body (``malformed``) become the S3 errors they mean."""
    try:
        async with asyncio.timeout(idle):
            yield
    except TimeoutError:
        raise errors.RequestTimeout() from None
    except ClientPayloadError:
        raise errors.IncompleteBody() from None
    except (ValueError, HttpProcessingError):
        raise malformed() from None


async def _read_fields(
    reader: MultipartReader, idle: float
) -> tuple[dict[str, str], BodyPartReader | None]:
    """The form's fields before its file (lower-case names, the first of repeated ones), and
    the file part, positioned at its first byte; None when the form has no file."""
    fields: dict[str, str] = {}
    size = 0
    while True:
        async with _receiving(idle, errors.MalformedPOSTRequest):
            part = await reader.next()
        if part is None:
            return fields, None
        if not isinstance(part, BodyPartReader) or not part.name:
            raise errors.MalformedPOSTRequest()
        name = part.name.lower()
        if name == "file":
            return fields, part
        value = bytearray()
        while chunk := await _chunk(part, 4096, idle):
            size += len(chunk)
            if size > MAX_FIELDS_SIZE:
                raise errors.MaxPostPreDataLengthExceeded()
            value += chunk
        try:
            fields.setdefault(name, value.decode("utf-8"))
        except UnicodeDecodeError:
            raise errors.MalformedPOSTRequest() from None


async def _chunk(part: BodyPartReader, size: int, idle: float) -> bytes:
    chunk = b""
    async with _receiving(idle, errors.MalformedPOSTRequest):
        chunk = await part.read_chunk(size)
    return chunk


def _authorised_policy(req: S3Request, fields: dict[str, str]) -> PostPolicy:
    """The form's policy, once its signature is checked and its signer may write here."""
    if "policy" not in fields:
        if _SIGNATURE_FIELDS.intersection(fields):
            raise errors.InvalidArgument(
                "Bucket POST must contain a field named 'policy'.  If it is specified, please"
                " check the order of the fields.",
                ArgumentName="policy",
            )
        # An unsigned form: an anonymous write, which no bucket here allows.
        raise errors.AccessDenied()
    encoded = fields["policy"]
    if "x-amz-signature" in fields:
        credential = _verify_v4(req, fields, encoded)
    elif "signature" in fields and "awsaccesskeyid" in fields:
        credential = auth.credential_of(req, fields["awsaccesskeyid"])
        expected = post_policy.signature_v2(encoded, credential.secret_key)
        if not hmac.compare_digest(expected, fields["signature"]):
            raise errors.SignatureDoesNotMatch(AWSAccessKeyId=credential.access_key)
    else:
        raise errors.InvalidArgument(
            "Bucket POST must contain a field named 'x-amz-signature' (or 'signature' and"
            " 'AWSAccessKeyId').",
            ArgumentName="x-amz-signature",
        )
    policy = post_policy.parse_policy(encoded)
    req.credential = credential
    assert req.bucket is not None
    auth.require_write(req, req.bucket)
    return policy


def _verify_v4(req: S3Request, fields: dict[str, str], encoded: str) -> CredentialConfig:
    algorithm = fields.get("x-amz-algorithm", "")
    if algorithm != post_policy.V4_ALGORITHM:
        raise errors.InvalidArgument(
            f"Unsupported algorithm: {algorithm or 'none'}", ArgumentName="x-amz-algorithm"
        )
    scope = fields.get("x-amz-credential", "").split("/")
    amz_date = fields.get("x-amz-date", "")
    if len(scope) != 5 or scope[3:] != ["s3", "aws4_request"] or amz_date[:8] != scope[1]:
        raise errors.InvalidArgument(
            "The x-amz-credential and x-amz-date fields must name one signing scope.",
            ArgumentName="x-amz-credential",
            ArgumentValue=fields.get("x-amz-credential", ""),
        )
    access_key, date, region = scope[:3]
    if region != req.config.region:
        raise errors.InvalidArgument(
            f"The region '{region}' is wrong; expecting '{req.config.region}'",
            ArgumentName="x-amz-credential",
        )
    credential = auth.credential_of(req, access_key)
    expected = post_policy.signature_v4(encoded, credential.secret_key, date, region)
    if not hmac.compare_digest(expected, fields["x-amz-signature"].lower()):
        raise errors.SignatureDoesNotMatch(AWSAccessKeyId=access_key)
    return credential


def _object_headers(fields: dict[str, str]) -> CIMultiDict[str]:
    """The form's fields that a PutObject would send as headers."""
    headers: CIMultiDict[str] = CIMultiDict()
    for name, value in fields.items():
        # x-amz-server-side-encryption*: SSE-S3 and SSE-C, checked as on a PutObject.
        if name in ("content-type", *STORED_HEADERS) or name.startswith(
            ("x-amz-meta-", "x-amz-checksum-", "x-amz-server-side-encryption")
        ):
            headers[name] = value
    if "acl" in fields:
        headers["x-amz-acl"] = fields["acl"]
    if "tagging" in fields:
        # A Tagging document, where a PutObject sends the same set as x-amz-tagging.
        tags = xmlbody.parse_tagging(fields["tagging"].encode())
        headers["x-amz-tagging"] = urlencode(tags, quote_via=quote)
    return headers


class FormFile:
    """The form's file part as a write's body (gateway.objects.backend.IncomingBody)."""

    def __init__(
        self,
        reader: MultipartReader,
        part: BodyPartReader,
        fields: dict[str, str],
        low: int,
        high: int,
        idle: float,
    ) -> None:
        self.length: int | None = None
        self.content_md5: bytes | None = None
        self._reader = reader
        self._part = part
        self._low = low
        self._high = high
        self._idle = idle
        self.received = 0
        algorithm, self._expected = _declared_checksum(fields)
        self.digests = BodyDigests(sha256=False, checksum_algorithm=algorithm)

    async def __aiter__(self) -> AsyncIterator[bytes]:
        while chunk := await _chunk(self._part, _FILE_CHUNK, self._idle):
            self.received += len(chunk)
            if self.received > self._high:
                raise errors.EntityTooLarge(
                    "Your proposed upload exceeds the maximum allowed size",
                    MaxSizeAllowed=str(self._high),
                )
            yield chunk
        if self.received < self._low:
            raise errors.EntityTooSmall(
                ProposedSize=str(self.received), MinSizeAllowed=str(self._low)
            )
        # The file ends at a boundary, not where the body stopped: a form cut short is never
        # stored as if it were whole.
        async with _receiving(self._idle, errors.IncompleteBody):
            await self._reader.next()

    def verify(self) -> dict[str, str]:
        digests = self.digests
        if digests.checksum_algorithm is None or digests.checksum is None:
            return {}
        actual = digests.checksum.digest_b64()
        if self._expected is not None and self._expected != actual:
            raise errors.BadDigest(
                f"The {digests.checksum_algorithm} you specified did not match the calculated"
                " checksum."
            )
        return {digests.checksum_algorithm: actual}


def _declared_checksum(fields: dict[str, str]) -> tuple[str | None, str | None]:
    """(algorithm, expected value) of the form's x-amz-checksum-* fields."""
    for algorithm in checksums.ALGORITHMS:
        value = fields.get(checksums.header_name(algorithm))
        if value is not None:
            return algorithm, value.strip()
    announced = fields.get("x-amz-checksum-algorithm")
    if announced:
        name = announced.strip().upper()
        checksums.new_checksum(name)
        return name, None
    return None, None


def _answer(
    req: S3Request, fields: dict[str, str], bucket: str, key: str, etag: str
) -> web.StreamResponse:
    host = req.headers.get("Host", "")
    scheme = "https" if req.http.secure else "http"
    path = f"/{quote(key)}" if req.virtual_host else f"/{bucket}/{quote(key)}"
    location = f"{scheme}://{host}{path}"
    headers = {"ETag": etag, "Location": location}
    redirect = fields.get("success_action_redirect") or fields.get("redirect")
    if redirect and urlsplit(redirect).scheme in ("http", "https"):
        query = urlencode({"bucket": bucket, "key": key, "etag": etag})
        separator = "&" if urlsplit(redirect).query else "?"
        headers["Location"] = f"{redirect}{separator}{query}"
        return web.Response(status=303, headers=headers)
    status = _SUCCESS_STATUSES.get(fields.get("success_action_status", ""), 204)
    if status == 201:
        body = post_response(location, bucket, key, etag)
        return web.Response(status=201, body=body, headers=headers, content_type="application/xml")
    return web.Response(status=status, headers=headers)
