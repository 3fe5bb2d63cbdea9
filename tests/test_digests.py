"""A body that does not match its digest is refused with BadDigest and stores nothing.

Whatever the size: kept in its row, written as a blob, and, on the upstream profile, sent as
one PutObject or as an upstream multipart upload (bodies above ``part_size``), which must then
be aborted there. And whichever way the digest arrives: Content-MD5, an x-amz-checksum-*
header, or the trailer of an aws-chunked body. Each time the object's previous version is
still the one served, in Postgres and upstream.
"""

from __future__ import annotations

import base64
import hashlib
import os
import zlib
from collections.abc import Callable

import pytest
from botocore.exceptions import ClientError

from gateway.config import LimitsConfig, UpstreamProfile
from tests.conftest import (
    UPSTREAM,
    UPSTREAM_BUCKET,
    GatewayProcess,
    client,
    db_fetch,
    unaccounted_blobs,
    upstream_key,
)
from tests.rawhttp import request_head, send_raw, sign

INLINE_MAX = LimitsConfig().inline_max_size
# The test gateways keep the default part size of an upstream profile.
PART_SIZE = UpstreamProfile.model_fields["part_size"].default
MiB = 1024 * 1024

SIZES = {"inline": 12, "blob": INLINE_MAX + 1, "parts": PART_SIZE + MiB}


def crc32_b64(data: bytes) -> str:
    return base64.b64encode(zlib.crc32(data).to_bytes(4, "big")).decode()


def md5_b64(data: bytes) -> str:
    return base64.b64encode(hashlib.md5(data).digest()).decode()


def no_retries(gateway: GatewayProcess):
    """boto3 retries BadDigest (it blames the network) with back-off: one attempt is the test."""
    return client(gateway.endpoint, retries={"max_attempts": 1})


def put_with_wrong_content_md5(gateway: GatewayProcess, s3, bucket: str, key: str, body: bytes):
    no_retries(gateway).put_object(
        Bucket=bucket, Key=key, Body=body, ContentMD5=md5_b64(body + b"!")
    )


def put_with_wrong_checksum_header(gateway: GatewayProcess, s3, bucket: str, key: str, body: bytes):
    no_retries(gateway).put_object(
        Bucket=bucket, Key=key, Body=body, ChecksumCRC32=crc32_b64(body + b"!")
    )


def put_with_wrong_trailer(gateway: GatewayProcess, s3, bucket: str, key: str, body: bytes):
    """aws-chunked with the checksum in a trailer (what current SDKs send by default), the
    trailer's CRC32 that of other bytes. Raw HTTP: no SDK sends a wrong trailer."""
    url = f"{gateway.endpoint}/{bucket}/{key}"
    headers = sign(
        "PUT",
        url,
        "STREAMING-UNSIGNED-PAYLOAD-TRAILER",
        {
            "Content-Encoding": "aws-chunked",
            "x-amz-decoded-content-length": str(len(body)),
            "x-amz-trailer": "x-amz-checksum-crc32",
        },
    )
    framed = b""
    for start in range(0, len(body), 64 * 1024):
        chunk = body[start : start + 64 * 1024]
        framed += f"{len(chunk):x}\r\n".encode() + chunk + b"\r\n"
    framed += f"0\r\nx-amz-checksum-crc32:{crc32_b64(body + b'!')}\r\n\r\n".encode()
    headers["Content-Length"] = str(len(framed))
    response = send_raw(
        "127.0.0.1", gateway.port, request_head("PUT", f"/{bucket}/{key}", headers), framed
    )
    assert response.status == 400, (response.status, response.body[:500])
    assert b"<Code>BadDigest</Code>" in response.body, response.body[:500]


WRONG_DIGESTS: dict[str, Callable[..., None]] = {
    "content-md5": put_with_wrong_content_md5,
    "checksum-header": put_with_wrong_checksum_header,
    "chunked-trailer": put_with_wrong_trailer,
}


@pytest.mark.parametrize("size_name", SIZES)
@pytest.mark.parametrize("how", WRONG_DIGESTS)
def test_wrong_digest_stores_nothing(
    request: pytest.FixtureRequest, gateway: GatewayProcess, s3, bucket: str, how, size_name
) -> None:
    size = SIZES[size_name]
    if size_name == "parts" and gateway.profile != UPSTREAM:
        pytest.skip("part_size is a setting of upstream profiles")
    key = "digest"
    previous = os.urandom(size)
    put = s3.put_object(Bucket=bucket, Key=key, Body=previous)
    (before,) = db_fetch(
        gateway.dsn, "SELECT * FROM objects WHERE bucket = $1 AND key = $2", bucket, key
    )

    body = os.urandom(size)
    try:
        WRONG_DIGESTS[how](gateway, s3, bucket, key, body)
    except ClientError as error:
        assert error.response["Error"]["Code"] == "BadDigest"
        assert error.response["ResponseMetadata"]["HTTPStatusCode"] == 400
    else:
        if how != "chunked-trailer":
            pytest.fail("a wrong digest was accepted")

    # The previous version is the one recorded and served.
    (after,) = db_fetch(
        gateway.dsn, "SELECT * FROM objects WHERE bucket = $1 AND key = $2", bucket, key
    )
    assert dict(after) == dict(before)
    got = s3.get_object(Bucket=bucket, Key=key)
    assert got["ETag"] == put["ETag"]
    assert got["Body"].read() == previous
    if gateway.profile != UPSTREAM:
        assert unaccounted_blobs(gateway, gateway.dsn) == []
        return
    upstream = request.getfixturevalue("upstream_s3")
    stored = upstream_key(bucket, key)
    held = upstream.get_object(Bucket=UPSTREAM_BUCKET, Key=stored)
    assert held["ETag"] == before["storage_etag"]
    assert held["Body"].read() == previous
    # Nothing left half-written upstream: a multipart upload is aborted, not abandoned.
    uploads = upstream.list_multipart_uploads(Bucket=UPSTREAM_BUCKET, Prefix=stored)
    assert uploads.get("Uploads", []) == []
