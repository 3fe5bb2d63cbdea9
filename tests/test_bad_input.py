"""Hostile and broken requests: each answered with its S3 error, nothing stored or corrupted."""

from __future__ import annotations

import base64
import contextlib
import hashlib
import os

import pytest
import requests
from botocore.exceptions import ClientError

from tests.conftest import LOCAL_ONLY
from tests.rawhttp import request_head, send_raw, sign

UNSIGNED = "UNSIGNED-PAYLOAD"


def assert_absent(s3, bucket: str, key: str) -> None:
    with pytest.raises(ClientError) as excinfo:
        s3.head_object(Bucket=bucket, Key=key)
    assert excinfo.value.response["ResponseMetadata"]["HTTPStatusCode"] == 404


def post_delete(gateway, bucket: str, body: bytes) -> requests.Response:
    url = f"{gateway.endpoint}/{bucket}?delete"
    md5 = base64.b64encode(hashlib.md5(body).digest()).decode()
    headers = sign("POST", url, hashlib.sha256(body).hexdigest(), {"Content-MD5": md5})
    return requests.post(url, data=body, headers=headers, timeout=10)


@pytest.mark.parametrize(
    "body",
    [
        b"<Delete><Object><Key>k</Key></Object>",
        b"not xml at all",
        b"<Delete></Delete>",
        b"<Wrong><Object><Key>k</Key></Object></Wrong>",
    ],
)
def test_malformed_delete_xml(gateway, s3, bucket: str, body: bytes) -> None:
    s3.put_object(Bucket=bucket, Key="k", Body=b"kept")
    response = post_delete(gateway, bucket, body)
    assert response.status_code == 400
    assert b"<Code>MalformedXML</Code>" in response.content
    assert s3.get_object(Bucket=bucket, Key="k")["Body"].read() == b"kept"


def test_xml_bomb_and_external_entity(gateway, s3, bucket: str) -> None:
    s3.put_object(Bucket=bucket, Key="k", Body=b"kept")
    bomb = (
        b'<?xml version="1.0"?><!DOCTYPE lolz [<!ENTITY lol "lol">'
        b'<!ENTITY lol2 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;">'
        b'<!ENTITY lol3 "&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;">]>'
        b"<Delete><Object><Key>&lol3;</Key></Object></Delete>"
    )
    external = (
        b'<?xml version="1.0"?><!DOCTYPE d [<!ENTITY x SYSTEM "file:///etc/passwd">]>'
        b"<Delete><Object><Key>&x;</Key></Object></Delete>"
    )
    for body in (bomb, external):
        response = post_delete(gateway, bucket, body)
        assert response.status_code == 400
        assert b"<Code>MalformedXML</Code>" in response.content
        assert b"root:" not in response.content
    assert s3.get_object(Bucket=bucket, Key="k")["Body"].read() == b"kept"


def test_oversized_xml_body(gateway, bucket: str) -> None:
    body = b"<Delete>" + b"<Object><Key>k</Key></Object>" * 60_000 + b"</Delete>"
    response = post_delete(gateway, bucket, body)
    assert response.status_code == 400
    assert b"<Code>EntityTooLarge</Code>" in response.content or b"MalformedXML" in response.content


def test_body_shorter_than_content_length(gateway, s3, bucket: str) -> None:
    """The client sends half its body and stalls: RequestTimeout, nothing stored."""
    url = f"{gateway.endpoint}/{bucket}/short"
    headers = sign("PUT", url, UNSIGNED)
    headers["Content-Length"] = "100000"
    head = request_head("PUT", f"/{bucket}/short", headers)
    response = send_raw("127.0.0.1", gateway.port, head, os.urandom(50_000))
    assert response.status == 400
    assert b"<Code>RequestTimeout</Code>" in response.body
    assert_absent(s3, bucket, "short")


def test_body_cut_off_by_disconnect(gateway, s3, bucket: str) -> None:
    """The client closes after half its body: no response can reach it, nothing is stored."""
    url = f"{gateway.endpoint}/{bucket}/cut"
    headers = sign("PUT", url, UNSIGNED)
    headers["Content-Length"] = "100000"
    head = request_head("PUT", f"/{bucket}/cut", headers)
    with contextlib.suppress(IndexError, ConnectionError):
        send_raw("127.0.0.1", gateway.port, head, os.urandom(50_000), close_write=True)
    assert_absent(s3, bucket, "cut")


def test_chunked_body_shorter_than_declared(gateway, s3, bucket: str) -> None:
    url = f"{gateway.endpoint}/{bucket}/short-chunked"
    headers = sign(
        "PUT",
        url,
        "STREAMING-UNSIGNED-PAYLOAD-TRAILER",
        {
            "Content-Encoding": "aws-chunked",
            "x-amz-decoded-content-length": "1000",
            "x-amz-trailer": "x-amz-checksum-crc32",
        },
    )
    body = b"3e8\r\n" + b"a" * 500
    headers["Content-Length"] = str(len(body))
    head = request_head("PUT", f"/{bucket}/short-chunked", headers)
    response = send_raw("127.0.0.1", gateway.port, head, body)
    assert response.status == 400
    assert b"<Code>IncompleteBody</Code>" in response.body
    assert_absent(s3, bucket, "short-chunked")


def test_missing_content_length(gateway, s3, bucket: str) -> None:
    url = f"{gateway.endpoint}/{bucket}/no-length"
    headers = sign("PUT", url, UNSIGNED)
    response = send_raw(
        "127.0.0.1", gateway.port, request_head("PUT", f"/{bucket}/no-length", headers), b""
    )
    assert response.status == 411
    assert b"<Code>MissingContentLength</Code>" in response.body


def test_object_over_size_limit_is_refused_before_upload(gateway, s3, bucket: str) -> None:
    url = f"{gateway.endpoint}/{bucket}/huge"
    headers = sign("PUT", url, UNSIGNED, {"Expect": "100-continue"})
    headers["Content-Length"] = str(6 * 1024**4)
    response = send_raw(
        "127.0.0.1", gateway.port, request_head("PUT", f"/{bucket}/huge", headers), b""
    )
    assert response.status == 400
    assert b"<Code>EntityTooLarge</Code>" in response.body
    assert_absent(s3, bucket, "huge")


@LOCAL_ONLY
def test_expect_values(gateway, s3, bucket: str) -> None:
    """100-continue is answered once the request is accepted; other values are ignored."""
    for expect in ("100-continue", "something-else"):
        url = f"{gateway.endpoint}/{bucket}/expect"
        headers = sign("PUT", url, UNSIGNED, {"Expect": expect})
        headers["Content-Length"] = "5"
        head = request_head("PUT", f"/{bucket}/expect", headers)
        response = send_raw("127.0.0.1", gateway.port, head, b"hello")
        # A 100 Continue interim response may precede the final one.
        assert response.status in (100, 200)
        assert s3.get_object(Bucket=bucket, Key="expect")["Body"].read() == b"hello"
        s3.delete_object(Bucket=bucket, Key="expect")


def test_unsupported_subresource_is_not_implemented(s3, bucket: str) -> None:
    s3.put_object(Bucket=bucket, Key="k", Body=b"kept")
    with pytest.raises(ClientError) as excinfo:
        s3.put_object_legal_hold(Bucket=bucket, Key="k", LegalHold={"Status": "ON"})
    assert excinfo.value.response["Error"]["Code"] == "NotImplemented"
    assert s3.get_object(Bucket=bucket, Key="k")["Body"].read() == b"kept"


def test_method_not_allowed(gateway, bucket: str) -> None:
    url = f"{gateway.endpoint}/{bucket}/k"
    headers = sign("PATCH", url, UNSIGNED)
    response = requests.patch(url, headers=headers, timeout=10)
    assert response.status_code == 405
    assert b"<Code>MethodNotAllowed</Code>" in response.content


def test_errors_carry_request_id(gateway, bucket: str) -> None:
    response = requests.get(f"{gateway.endpoint}/{bucket}/missing", timeout=10)
    request_id = response.headers["x-amz-request-id"]
    assert f"<RequestId>{request_id}</RequestId>".encode() in response.content
    assert b"Traceback" not in response.content
