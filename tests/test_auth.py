"""Authentication and authorisation: each failure has its S3 code and stores nothing."""

from __future__ import annotations

import base64
import hashlib
import hmac
import time
from datetime import UTC, datetime, timedelta
from unittest import mock
from urllib.parse import quote, urlencode, urlsplit

import botocore.config
import pytest
import requests
from botocore.exceptions import ClientError
from lxml import etree

from tests.conftest import (
    LOCAL,
    LOCAL_ONLY,
    PUBLIC_BUCKET,
    ROOT_ACCESS_KEY,
    ROOT_SECRET_KEY,
    UPSTREAM,
    client,
)
from tests.rawhttp import RawResponse, presign, request_head, send_raw, sign, signed_chunks
from tests.s3errors import code_of

# Protocol behaviour: the sealed profile (local disk underneath) adds nothing here.
GATEWAY_PROFILES = [LOCAL, UPSTREAM]


def assert_absent(s3, bucket: str, key: str) -> None:
    with pytest.raises(ClientError) as excinfo:
        s3.head_object(Bucket=bucket, Key=key)
    assert excinfo.value.response["ResponseMetadata"]["HTTPStatusCode"] == 404


def xml_error(content: bytes) -> dict[str, str]:
    root = etree.fromstring(content)
    return {child.tag: child.text or "" for child in root}


def test_wrong_secret_is_signature_mismatch(gateway, s3, bucket: str) -> None:
    bad = client(gateway.endpoint, secret_key="not-the-secret")
    with pytest.raises(ClientError) as excinfo:
        bad.put_object(Bucket=bucket, Key="k", Body=b"x")
    assert code_of(excinfo) == "SignatureDoesNotMatch"
    error = excinfo.value.response["Error"]
    assert error["CanonicalRequest"].startswith("PUT\n/")
    assert error["StringToSign"].startswith("AWS4-HMAC-SHA256\n")
    assert ROOT_SECRET_KEY not in str(excinfo.value.response)
    assert_absent(s3, bucket, "k")


def test_unknown_access_key(gateway, s3, bucket: str) -> None:
    stranger = client(gateway.endpoint, access_key="NOSUCHKEY", secret_key="whatever-secret")
    with pytest.raises(ClientError) as excinfo:
        stranger.put_object(Bucket=bucket, Key="k", Body=b"x")
    assert code_of(excinfo) == "InvalidAccessKeyId"
    assert_absent(s3, bucket, "k")


def test_skewed_clock(gateway, s3, bucket: str) -> None:
    skewed = client(gateway.endpoint, retries={"max_attempts": 1})
    past = datetime.now(UTC) - timedelta(minutes=20)

    def clock(remove_tzinfo: bool = True) -> datetime:
        return past.replace(tzinfo=None) if remove_tzinfo else past

    # botocore signs with the AWS CRT when awscrt is installed, else in Python: skew both.
    with (
        mock.patch("botocore.auth.get_current_datetime", clock),
        mock.patch("botocore.crt.auth.get_current_datetime", clock),
        pytest.raises(ClientError) as excinfo,
    ):
        skewed.put_object(Bucket=bucket, Key="k", Body=b"x")
    assert code_of(excinfo) == "RequestTimeTooSkewed"
    assert_absent(s3, bucket, "k")


def test_presigned_v4_get_and_put(gateway, bucket: str) -> None:
    signer = client(gateway.endpoint, signature_version="s3v4")
    put_url = signer.generate_presigned_url(
        "put_object", Params={"Bucket": bucket, "Key": "pre signed+key"}, ExpiresIn=300
    )
    assert "X-Amz-Signature=" in put_url
    assert requests.put(put_url, data=b"via presign", timeout=10).status_code == 200
    get_url = signer.generate_presigned_url(
        "get_object", Params={"Bucket": bucket, "Key": "pre signed+key"}, ExpiresIn=300
    )
    response = requests.get(get_url, timeout=10)
    assert response.status_code == 200
    assert response.content == b"via presign"


def test_presigned_default_boto3_url(gateway, s3, bucket: str) -> None:
    """boto3's default presigned URL (SigV2 query auth with a custom endpoint) works too."""
    s3.put_object(Bucket=bucket, Key="default presign", Body=b"v2")
    url = s3.generate_presigned_url(
        "get_object", Params={"Bucket": bucket, "Key": "default presign"}, ExpiresIn=300
    )
    response = requests.get(url, timeout=10)
    assert response.status_code == 200, response.text
    assert response.content == b"v2"


EXPIRED = (403, "AccessDenied", "Request has expired")


@LOCAL_ONLY
@pytest.mark.parametrize(
    ("expires", "signed_ago", "expected"),
    [
        # Zero is no malformed value to S3 but a URL valid for no time: expired on arrival.
        (0, timedelta(0), EXPIRED),
        (60, timedelta(minutes=10), EXPIRED),
        (604800, timedelta(days=7, seconds=1), EXPIRED),
        (
            -7,
            timedelta(0),
            (400, "AuthorizationQueryParametersError", "X-Amz-Expires must be non-negative"),
        ),
        (
            604801,
            timedelta(0),
            (
                400,
                "AuthorizationQueryParametersError",
                "X-Amz-Expires must be less than a week (in seconds); that is, the given "
                "X-Amz-Expires must be less than 604800 seconds",
            ),
        ),
    ],
)
def test_presigned_expiry(
    gateway,
    s3,
    bucket: str,
    expires: int,
    signed_ago: timedelta,
    expected: tuple[int, str, str],
) -> None:
    """S3's answers to an X-Amz-Expires out of range or past; the PUT stores nothing."""
    key = f"presigned{expires}"
    url = presign(
        "PUT", f"{gateway.endpoint}/{bucket}/{key}", expires, datetime.now(UTC) - signed_ago
    )
    response = requests.put(url, data=b"late", timeout=10)
    error = xml_error(response.content)
    assert (response.status_code, error["Code"], error["Message"]) == expected
    if expected == EXPIRED:
        assert error["X-Amz-Expires"] == str(expires)
        assert {"Expires", "ServerTime"} <= error.keys()
    assert_absent(s3, bucket, key)


@LOCAL_ONLY
def test_presigned_url_lasts_its_week(gateway, s3, bucket: str) -> None:
    """Clock skew limits do not shorten a presigned URL: a week's URL works to its end."""
    s3.put_object(Bucket=bucket, Key="old", Body=b"still here")
    signed = datetime.now(UTC) - timedelta(days=7) + timedelta(minutes=1)
    url = presign("GET", f"{gateway.endpoint}/{bucket}/old", 604800, signed)
    response = requests.get(url, timeout=10)
    assert response.status_code == 200, response.text
    assert response.content == b"still here"


def test_tampered_presigned_url(gateway, bucket: str) -> None:
    signer = client(gateway.endpoint, signature_version="s3v4")
    url = signer.generate_presigned_url(
        "put_object", Params={"Bucket": bucket, "Key": "k"}, ExpiresIn=300
    )
    response = requests.put(url.replace("/k?", "/other?"), data=b"x", timeout=10)
    assert response.status_code == 403
    assert xml_error(response.content)["Code"] == "SignatureDoesNotMatch"


def test_anonymous_access(gateway, s3, bucket: str) -> None:
    s3.put_object(Bucket=bucket, Key="private", Body=b"secret")
    response = requests.get(f"{gateway.endpoint}/{bucket}/private", timeout=10)
    assert response.status_code == 403
    assert xml_error(response.content)["Code"] == "AccessDenied"
    response = requests.put(f"{gateway.endpoint}/{bucket}/new", data=b"x", timeout=10)
    assert response.status_code == 403
    assert_absent(s3, bucket, "new")
    response = requests.get(f"{gateway.endpoint}/{bucket}", timeout=10)
    assert response.status_code == 403
    assert requests.get(f"{gateway.endpoint}/", timeout=10).status_code == 403


def test_anonymous_read_of_public_bucket(gateway, s3) -> None:
    s3.put_object(Bucket=PUBLIC_BUCKET, Key="cat.txt", Body=b"meow", ContentType="text/plain")
    response = requests.get(f"{gateway.endpoint}/{PUBLIC_BUCKET}/cat.txt", timeout=10)
    assert response.status_code == 200
    assert response.content == b"meow"
    assert response.headers["Content-Type"] == "text/plain"
    head = requests.head(f"{gateway.endpoint}/{PUBLIC_BUCKET}/cat.txt", timeout=10)
    assert head.headers["Content-Length"] == "4"
    anonymous = client(gateway.endpoint, signature_version=botocore.UNSIGNED)
    listed = anonymous.list_objects_v2(Bucket=PUBLIC_BUCKET)
    assert "cat.txt" in [o["Key"] for o in listed["Contents"]]
    # Reads only: anonymous writes and deletes are refused.
    response = requests.put(f"{gateway.endpoint}/{PUBLIC_BUCKET}/cat.txt", data=b"x", timeout=10)
    assert response.status_code == 403
    response = requests.delete(f"{gateway.endpoint}/{PUBLIC_BUCKET}/cat.txt", timeout=10)
    assert response.status_code == 403
    assert s3.get_object(Bucket=PUBLIC_BUCKET, Key="cat.txt")["Body"].read() == b"meow"
    # response-* overrides need a signed request.
    response = requests.get(
        f"{gateway.endpoint}/{PUBLIC_BUCKET}/cat.txt?response-content-type=x/y", timeout=10
    )
    assert response.status_code == 400


def test_sigv2_header_gets_clear_error(gateway, bucket: str) -> None:
    response = requests.get(
        f"{gateway.endpoint}/{bucket}",
        headers={"Authorization": "AWS AKIDEXAMPLE:frJIUN8DYpKDtOLCwo//yllqDzg="},
        timeout=10,
    )
    assert response.status_code == 400
    error = xml_error(response.content)
    assert error["Code"] == "InvalidRequest"
    assert "AWS4-HMAC-SHA256" in error["Message"]


def _streaming_put(
    gateway, bucket: str, key: str, chunks: list[bytes], tamper: bool, encoding: bool = True
):
    url = f"{gateway.endpoint}/{bucket}/{key}"
    decoded = sum(len(c) for c in chunks)
    headers = {"x-amz-decoded-content-length": str(decoded)}
    if encoding:
        headers["Content-Encoding"] = "aws-chunked"
    signed = sign("PUT", url, "STREAMING-AWS4-HMAC-SHA256-PAYLOAD", headers)
    body = signed_chunks(signed, chunks, ROOT_SECRET_KEY)
    if tamper:
        # Flip one payload byte of the second chunk: its signature no longer matches.
        index = body.index(chunks[1][:16]) + 3
        body = body[:index] + bytes([body[index] ^ 1]) + body[index + 1 :]
    signed["Content-Length"] = str(len(body))
    head = request_head("PUT", f"/{bucket}/{key}", signed)
    return send_raw("127.0.0.1", gateway.port, head, body)


def test_signed_chunked_upload(gateway, s3, bucket: str) -> None:
    chunks = [b"a" * 65536, b"b" * 65536, b"c" * 1000]
    response = _streaming_put(gateway, bucket, "chunked", chunks, tamper=False)
    assert response.status == 200, response.body
    got = s3.get_object(Bucket=bucket, Key="chunked")
    assert got["Body"].read() == b"".join(chunks)
    assert got["ETag"] == f'"{hashlib.md5(b"".join(chunks)).hexdigest()}"'
    # Content-Encoding: aws-chunked describes the transfer, not the object.
    assert "ContentEncoding" not in got


def test_signed_chunks_without_content_encoding(gateway, s3, bucket: str) -> None:
    """restic and others omit Content-Encoding: aws-chunked; x-amz-content-sha256 says it."""
    chunks = [b"r" * 70000, b"s" * 10]
    response = _streaming_put(gateway, bucket, "restic", chunks, tamper=False, encoding=False)
    assert response.status == 200, response.body
    assert s3.get_object(Bucket=bucket, Key="restic")["Body"].read() == b"".join(chunks)


def test_tampered_chunk_signature(gateway, s3, bucket: str) -> None:
    chunks = [b"a" * 65536, b"b" * 65536, b"c" * 1000]
    response = _streaming_put(gateway, bucket, "tampered", chunks, tamper=True)
    assert response.status == 403
    assert b"<Code>SignatureDoesNotMatch</Code>" in response.body
    assert_absent(s3, bucket, "tampered")


def test_signed_payload_hash_mismatch(gateway, s3, bucket: str) -> None:
    url = f"{gateway.endpoint}/{bucket}/hashed"
    signed = sign("PUT", url, hashlib.sha256(b"promised").hexdigest())
    signed["Content-Length"] = "9"
    response = send_raw(
        "127.0.0.1", gateway.port, request_head("PUT", f"/{bucket}/hashed", signed), b"delivered"
    )
    assert response.status == 400
    assert b"<Code>XAmzContentSHA256Mismatch</Code>" in response.body
    assert_absent(s3, bucket, "hashed")


def _raw_get(gateway, path_and_query: str) -> RawResponse:
    head = request_head("GET", path_and_query, {"Host": f"127.0.0.1:{gateway.port}"})
    return send_raw("127.0.0.1", gateway.port, head, b"")


def _path_and_query(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.path}?{parts.query}"


HTML = b"<html><script>document.title='owned'</script></html>"


def test_sigv2_percent_encoded_overrides_are_signed(gateway, s3, bucket: str) -> None:
    """Overrides spelt with percent-escapes are sub-resources like any other: unsigned, refused.

    Served as text/html and inline from the gateway's origin, an uploaded text file would run
    as a page there (stored XSS).
    """
    s3.put_object(Bucket=bucket, Key="note.txt", Body=HTML, ContentType="text/plain")
    url = s3.generate_presigned_url(
        "get_object", Params={"Bucket": bucket, "Key": "note.txt"}, ExpiresIn=300
    )
    assert "Signature=" in url and "X-Amz-Signature" not in url  # SigV2, boto3's default
    plain = _raw_get(gateway, _path_and_query(url))
    assert plain.status == 200 and plain.headers["content-type"] == "text/plain"
    attack = _path_and_query(url) + (
        "&%72esponse-content-type=text/html&%72esponse-content-disposition=inline"
    )
    response = _raw_get(gateway, attack)
    assert response.status == 403, response
    assert xml_error(response.body)["Code"] == "SignatureDoesNotMatch"
    assert "text/html" not in response.headers.get("content-type", "")


def test_sigv2_encoded_duplicate_cannot_replace_a_signed_override(gateway, s3, bucket) -> None:
    s3.put_object(Bucket=bucket, Key="page.txt", Body=HTML, ContentType="text/plain")
    url = s3.generate_presigned_url(
        "get_object",
        Params={"Bucket": bucket, "Key": "page.txt", "ResponseContentDisposition": "attachment"},
        ExpiresIn=300,
    )
    pinned = _raw_get(gateway, _path_and_query(url))
    assert pinned.status == 200 and pinned.headers["content-disposition"] == "attachment"
    parts = urlsplit(url)
    for query in (
        f"%72esponse-content-disposition=inline&{parts.query}",
        f"{parts.query}&%72esponse-content-disposition=inline",
        f"response-content-disposition=inline&{parts.query}",
    ):
        response = _raw_get(gateway, f"{parts.path}?{query}")
        assert response.status == 400, response
        assert xml_error(response.body)["Code"] == "InvalidArgument"
        assert "inline" not in response.headers.get("content-disposition", "")


def _sigv2_url(gateway, method: str, path: str, amz_headers: dict[str, str]) -> str:
    """A SigV2 query URL signed here, independently of the gateway, carrying headers."""
    expires = str(int(time.time()) + 300)
    lines = [method, "", "", expires]
    lines += [f"{name}:{value}" for name, value in sorted(amz_headers.items())]
    to_sign = "\n".join([*lines, path])
    digest = hmac.new(ROOT_SECRET_KEY.encode(), to_sign.encode(), hashlib.sha1).digest()
    query = {
        "AWSAccessKeyId": ROOT_ACCESS_KEY,
        "Expires": expires,
        "Signature": base64.b64encode(digest).decode(),
        **amz_headers,
    }
    return f"{gateway.endpoint}{path}?{urlencode(query, quote_via=quote)}"


@pytest.mark.parametrize("value", ["a\r\nX-Injected: 1", "bell\x07", "nul\x00"])
def test_sigv2_query_headers_with_control_characters_are_refused(
    gateway, s3, bucket: str, value: str
) -> None:
    """A signed header carried in the query is held to the rules of a real header.

    Stored as metadata, a CR/LF value made every later GET and HEAD of the object fail.
    """
    key = "meta-in-query"
    s3.put_object(Bucket=bucket, Key=key, Body=b"before")
    url = _sigv2_url(gateway, "PUT", f"/{bucket}/{key}", {"x-amz-meta-note": value})
    response = requests.put(url, data=b"after", timeout=10)
    assert response.status_code == 400, response.text
    assert xml_error(response.content)["Code"] == "InvalidArgument"
    assert s3.get_object(Bucket=bucket, Key=key)["Body"].read() == b"before"


def test_sigv2_query_headers_are_applied(gateway, s3, bucket: str) -> None:
    url = _sigv2_url(
        gateway, "PUT", f"/{bucket}/q", {"x-amz-meta-note": "caf\u00e9", "x-amz-acl": "private"}
    )
    assert requests.put(url, data=b"body", timeout=10).status_code == 200
    note = s3.head_object(Bucket=bucket, Key="q")["Metadata"]["note"]
    # Sent back RFC 2047 encoded, as S3 returns a value beyond ASCII.
    assert note == "=?UTF-8?B?Y2Fmw6k=?="
