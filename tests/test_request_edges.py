"""Requests at the edges of addressing, dates and XML: each gets S3's answer, never a 500."""

from __future__ import annotations

import re

import pytest
import requests
from lxml import etree

from tests.conftest import LOCAL, LOCAL_ONLY, PUBLIC_BUCKET, UPSTREAM
from tests.rawhttp import EMPTY_SHA256, request_head, send_raw, sign, sign_s3

# Protocol behaviour: the sealed profile (local disk underneath) adds nothing here.
GATEWAY_PROFILES = [LOCAL, UPSTREAM]

NS = "{http://s3.amazonaws.com/doc/2006-03-01/}"


def error_code(content: bytes) -> str:
    return etree.fromstring(content).findtext("Code") or ""


def test_encoded_slash_stays_in_the_bucket_name(gateway, s3, bucket: str) -> None:
    """``/b%2Fk`` names a bucket "b/k" (invalid), never object k of bucket b: a proxy in front
    that filters by path prefix must not be bypassed by spelling the slash encoded."""
    s3.put_object(Bucket=bucket, Key="doc.txt", Body=b"private")
    url = f"{gateway.endpoint}/{bucket}%2Fdoc.txt"
    response = requests.get(url, headers=sign("GET", url, EMPTY_SHA256), timeout=10)
    assert response.status_code == 400, response.text
    assert error_code(response.content) == "InvalidBucketName"
    assert b"private" not in response.content
    # Anonymous, on a public bucket: the same.
    s3.put_object(Bucket=PUBLIC_BUCKET, Key="edge/doc.txt", Body=b"public")
    response = requests.get(f"{gateway.endpoint}/{PUBLIC_BUCKET}%2Fedge/doc.txt", timeout=10)
    assert response.status_code == 400
    assert error_code(response.content) == "InvalidBucketName"
    # Encoded slashes in the key are the key's own.
    s3.put_object(Bucket=PUBLIC_BUCKET, Key="edge/a/b", Body=b"ab")
    response = requests.get(f"{gateway.endpoint}/{PUBLIC_BUCKET}/edge%2Fa%2Fb", timeout=10)
    assert response.status_code == 200 and response.content == b"ab"


def test_gateway_endpoints_belong_to_the_bare_host(gateway, s3) -> None:
    bare = requests.get(f"{gateway.endpoint}/_gateway/health", timeout=10)
    assert bare.status_code == 200 and bare.text == "ok\n"
    host = f"{PUBLIC_BUCKET}.s3.localtest:{gateway.port}"
    # On a bucket's host the path is a key of that bucket: here, one that does not exist.
    response = requests.get(
        f"{gateway.endpoint}/_gateway/health", headers={"Host": host}, timeout=10
    )
    assert response.status_code == 404, response.text
    assert error_code(response.content) == "NoSuchKey"
    assert "ok" not in response.text


@pytest.mark.parametrize(
    "date",
    [
        "Fri, 31 Dec 9999 23:59:59 -1400",
        "Fri, 31 Dec 9999 23:59:59 +0000",
        "not a date",
    ],
)
def test_edge_of_calendar_date_header(gateway, bucket: str, date: str) -> None:
    """A Date header the calendar cannot hold once converted to UTC is refused, not a 500."""
    authorization = (
        "AWS4-HMAC-SHA256 Credential=GWTESTROOTKEY/99991231/us-east-1/s3/aws4_request, "
        "SignedHeaders=date;host;x-amz-content-sha256, Signature=" + "0" * 64
    )
    head = request_head(
        "GET",
        f"/{bucket}/k",
        {
            "Host": f"127.0.0.1:{gateway.port}",
            "Date": date,
            "x-amz-content-sha256": EMPTY_SHA256,
            "Authorization": authorization,
        },
    )
    response = send_raw("127.0.0.1", gateway.port, head, b"")
    assert response.status == 403, response
    assert error_code(response.body) in ("AccessDenied", "RequestTimeTooSkewed")


def test_far_future_presigned_date(gateway, bucket: str) -> None:
    query = (
        "X-Amz-Algorithm=AWS4-HMAC-SHA256"
        "&X-Amz-Credential=GWTESTROOTKEY%2F99991231%2Fus-east-1%2Fs3%2Faws4_request"
        "&X-Amz-Date=99991231T235959Z&X-Amz-Expires=604800&X-Amz-SignedHeaders=host"
        "&X-Amz-Signature=" + "0" * 64
    )
    response = requests.get(f"{gateway.endpoint}/{bucket}/k?{query}", timeout=10)
    assert response.status_code == 403, response.text
    assert error_code(response.content) == "RequestTimeTooSkewed"


def _signed(gateway, method: str, path: str, query: str) -> requests.Response:
    url = f"{gateway.endpoint}{path}?{query}"
    return requests.request(method, url, headers=sign_s3(method, url), timeout=10)


def _unescape(text: bytes) -> str:
    """XML character data with numeric references, decoded as an XML 1.1 parser would."""

    def reference(found: re.Match[str]) -> str:
        number = found.group(1)
        return chr(int(number[1:], 16) if number.startswith("x") else int(number))

    named = {"&lt;": "<", "&gt;": ">", "&amp;": "&"}
    decoded = re.sub(r"&#(x[0-9A-Fa-f]+|[0-9]+);", reference, text.decode())
    return re.sub(r"&(lt|gt|amp);", lambda found: named[found.group()], decoded)


# moto, the test upstream, answers 500 to an upload of such a key.
@LOCAL_ONLY
def test_control_characters_in_keys_round_trip_as_character_references(gateway, bucket) -> None:
    """Where a document offers no url encoding, S3 writes what XML 1.0 cannot carry as character
    references; a replacement character would name another key."""
    key = "ctl\x01\x1f\r\tkey<&>"
    path = f"/{bucket}/" + requests.utils.quote(key, safe="")
    created = _signed(gateway, "POST", path, "uploads")
    assert created.status_code == 200, created.text
    assert b"\xef\xbf\xbd" not in created.content  # no U+FFFD
    assert b"<Key>ctl&#x1;&#x1F;&#13;\tkey&lt;&amp;&gt;</Key>" in created.content
    upload_id = re.search(rb"<UploadId>([^<]+)</UploadId>", created.content).group(1).decode()
    assert _unescape(re.search(rb"<Key>([^<]*)</Key>", created.content).group(1)) == key
    parts = _signed(gateway, "GET", path, f"uploadId={upload_id}")
    assert parts.status_code == 200, parts.text
    assert b"<Key>ctl&#x1;&#x1F;&#13;\tkey&lt;&amp;&gt;</Key>" in parts.content
    assert _signed(gateway, "DELETE", path, f"uploadId={upload_id}").status_code == 204


def test_plain_keys_are_written_plainly(gateway, bucket: str) -> None:
    created = _signed(gateway, "POST", f"/{bucket}/caf%C3%A9", "uploads")
    assert "<Key>caf\u00e9</Key>".encode() in created.content
    upload_id = re.search(rb"<UploadId>([^<]+)</UploadId>", created.content).group(1).decode()
    assert etree.fromstring(created.content).findtext(f"{NS}Key") == "caf\u00e9"
    _signed(gateway, "DELETE", f"/{bucket}/caf%C3%A9", f"uploadId={upload_id}")
