"""SigV2 presigned URLs, as botocore and aws-cli generate them for a custom endpoint."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from unittest import mock
from urllib.parse import urlsplit

import boto3
import pytest
from botocore.auth import HmacV1QueryAuth
from botocore.config import Config

from gateway.s3 import errors, sigv2, sigv4
from gateway.s3.sigv2 import QueryAuthV2, check_expiry, parse_query_auth, verify
from gateway.s3.sigv4 import HttpRequestView

AK = "GWTESTV2KEY"
SECRET = "gateway-test-v2-secret/+="
PATH_ENDPOINT = "http://127.0.0.1:9000"
VIRTUAL_ENDPOINT = "http://s3.localtest:9000"
BUCKET = "bk1"


def client(virtual: bool = False, **config: Any) -> Any:
    # No signature_version: the point is what boto3 does by default for a custom endpoint.
    return boto3.client(
        "s3",
        endpoint_url=VIRTUAL_ENDPOINT if virtual else PATH_ENDPOINT,
        region_name="us-east-1",
        aws_access_key_id=AK,
        aws_secret_access_key=SECRET,
        config=Config(s3={"addressing_style": "virtual" if virtual else "path"}, **config),
    )


def view(method: str, url: str, headers: dict[str, str] | None = None) -> HttpRequestView:
    """What the server sees when an HTTP client sends ``url`` unchanged."""
    parts = urlsplit(url)
    lowered = {name.lower(): value for name, value in (headers or {}).items()}
    lowered.setdefault("host", parts.netloc)
    return HttpRequestView(method, parts.path, parts.query, lowered)


def host_bucket(req: HttpRequestView) -> str | None:
    host = req.headers["host"].partition(":")[0]
    suffix = "." + urlsplit(VIRTUAL_ENDPOINT).hostname  # type: ignore[operator]
    return host.removesuffix(suffix) if host.endswith(suffix) else None


@pytest.fixture
def signed_strings() -> Iterator[list[str]]:
    """The strings botocore signs, to compare with ours byte for byte."""
    seen: list[str] = []
    original = HmacV1QueryAuth.sign_string

    def record(self: HmacV1QueryAuth, string_to_sign: str) -> str:
        seen.append(string_to_sign)
        return original(self, string_to_sign)

    with mock.patch.object(HmacV1QueryAuth, "sign_string", record):
        yield seen


def verified(req: HttpRequestView, secret: str = SECRET) -> QueryAuthV2:
    assert sigv4.parse_auth(req) is None  # the caller's cue to try SigV2
    auth = parse_query_auth(req)
    assert auth is not None
    assert auth.access_key == AK
    check_expiry(auth, datetime.now(UTC))
    verify(req, auth, secret, host_bucket(req))
    return auth


AWKWARD_KEYS = [
    "plain.txt",
    "with space",
    "plus+sign",
    "percent%25literal%",
    "double//slash",
    "/leading-slash",
    "trailing/",
    "../up/./dot",
    "unicode-ünï/日本語/🙂",
    "reserved !$&'()*,;=:@[]~?#",
]

GET_EXTRAS: list[dict[str, str]] = [
    {},
    {"ResponseContentType": "text/plain; charset=utf-8"},
    {
        "ResponseContentDisposition": 'attachment; filename="ü b+c%.txt"',
        "ResponseCacheControl": "no-cache",
        "ResponseExpires": "Thu, 01 Dec 1994 16:00:00 GMT",
    },
    {"VersionId": "3/L4kqtJlcpXroDTDmJ+rmSpXd3dIbrHY+MTRCxf3vjVBH40Nr8X8gdRQBpUMLUo"},
]


@pytest.mark.parametrize("virtual", [False, True], ids=["path", "virtual"])
@pytest.mark.parametrize("extras", GET_EXTRAS, ids=lambda e: ",".join(e) or "plain")
@pytest.mark.parametrize("key", AWKWARD_KEYS, ids=lambda key: key[:30])
def test_get_object(
    key: str, extras: dict[str, str], virtual: bool, signed_strings: list[str]
) -> None:
    url = client(virtual).generate_presigned_url(
        "get_object", Params={"Bucket": BUCKET, "Key": key, **extras}, ExpiresIn=300
    )
    assert "AWSAccessKeyId=" in url  # boto3 still presigns SigV2 for a custom endpoint
    req = view("GET", url)
    assert sigv2.string_to_sign(req, host_bucket(req)) == signed_strings[-1]
    auth = verified(req)
    assert abs(auth.expires - (datetime.now(UTC).timestamp() + 300)) < 60


@pytest.mark.parametrize("virtual", [False, True], ids=["path", "virtual"])
@pytest.mark.parametrize("key", AWKWARD_KEYS, ids=lambda key: key[:30])
def test_head_object(key: str, virtual: bool, signed_strings: list[str]) -> None:
    url = client(virtual).generate_presigned_url(
        "head_object", Params={"Bucket": BUCKET, "Key": key, "VersionId": "v 1+2"}
    )
    req = view("HEAD", url)
    assert sigv2.string_to_sign(req, host_bucket(req)) == signed_strings[-1]
    verified(req)
    # The method is signed.
    with pytest.raises(errors.SignatureDoesNotMatch):
        verified(view("GET", url))


PUT_PARAMS = {
    "ContentType": "image/png",
    "ACL": "public-read",
    "Metadata": {"note": " a b+c%/ ", "a": "1"},
    "StorageClass": "STANDARD",
}


@pytest.mark.parametrize("virtual", [False, True], ids=["path", "virtual"])
@pytest.mark.parametrize("key", AWKWARD_KEYS, ids=lambda key: key[:30])
def test_put_object(key: str, virtual: bool, signed_strings: list[str]) -> None:
    s3 = client(virtual)
    plain = s3.generate_presigned_url("put_object", Params={"Bucket": BUCKET, "Key": key})
    verified(view("PUT", plain))

    url = s3.generate_presigned_url(
        "put_object", Params={"Bucket": BUCKET, "Key": key, **PUT_PARAMS}
    )
    req = view("PUT", url)
    assert sigv2.string_to_sign(req, host_bucket(req)) == signed_strings[-1]
    # botocore moved the signed headers into the query; a client sends the URL alone.
    verified(req)
    assert sigv2.headers_from_query(req) == {
        "content-type": "image/png",
        "x-amz-acl": "public-read",
        "x-amz-meta-note": " a b+c%/ ",
        "x-amz-meta-a": "1",
        "x-amz-storage-class": "STANDARD",
    }
    # Or it sends them as headers too, as S3's documentation has it.
    sent = {"Content-Type": "image/png", "x-amz-acl": " public-read "}
    req = view("PUT", url, sent)
    verified(req)
    assert "content-type" not in sigv2.headers_from_query(req)
    # A header that differs from what was signed fails.
    with pytest.raises(errors.SignatureDoesNotMatch):
        verified(view("PUT", url, {"Content-Type": "text/html"}))
    with pytest.raises(errors.SignatureDoesNotMatch):
        verified(view("PUT", url, {"x-amz-acl": "public-read-write"}))
    with pytest.raises(errors.SignatureDoesNotMatch):
        verified(view("PUT", url, {"x-amz-meta-extra": "x"}))


@pytest.mark.parametrize("virtual", [False, True], ids=["path", "virtual"])
@pytest.mark.parametrize(
    ("operation", "params"),
    [
        ("list_objects_v2", {"Prefix": "a b+/", "Delimiter": "/"}),
        ("list_objects", {"Marker": "ü"}),
        ("get_bucket_acl", {}),
        ("get_bucket_versioning", {}),
        ("list_object_versions", {"KeyMarker": "k", "VersionIdMarker": "v+1"}),
        ("list_multipart_uploads", {}),
        ("get_object_acl", {"Key": "a b/c"}),
        ("get_object_tagging", {"Key": "k", "VersionId": "v/1"}),
        ("upload_part", {"Key": "k", "UploadId": "up+id/==", "PartNumber": 3}),
        ("list_parts", {"Key": "k", "UploadId": "up id"}),
        ("create_multipart_upload", {"Key": "k", "ContentType": "text/plain"}),
    ],
)
def test_other_operations(
    operation: str, params: dict[str, Any], virtual: bool, signed_strings: list[str]
) -> None:
    url = client(virtual).generate_presigned_url(operation, Params={"Bucket": BUCKET, **params})
    method = {"upload_part": "PUT", "create_multipart_upload": "POST"}.get(operation, "GET")
    req = view(method, url)
    assert sigv2.string_to_sign(req, host_bucket(req)) == signed_strings[-1]
    verified(req)


def test_bucket_path_is_signed_with_a_trailing_slash() -> None:
    url = client().generate_presigned_url("list_objects_v2", Params={"Bucket": BUCKET})
    req = view("GET", url)
    assert req.raw_path == f"/{BUCKET}"
    assert sigv2.string_to_sign(req, None).endswith(f"\n/{BUCKET}/")
    verified(req)


def test_aws_cli_presign() -> None:
    aws = Path(sys.executable).with_name("aws")
    if not aws.exists():
        pytest.skip("aws-cli not installed")
    env = {
        **os.environ,
        "AWS_ACCESS_KEY_ID": AK,
        "AWS_SECRET_ACCESS_KEY": SECRET,
        "AWS_CONFIG_FILE": os.devnull,
        "AWS_SHARED_CREDENTIALS_FILE": os.devnull,
    }
    env.pop("AWS_PROFILE", None)
    out = subprocess.run(
        [
            *(str(aws), "s3", "presign", f"s3://{BUCKET}/dir/a b+c ü"),
            *("--endpoint-url", PATH_ENDPOINT, "--region", "us-east-1", "--expires-in", "600"),
        ],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    url = out.stdout.strip()
    assert "AWSAccessKeyId=" in url
    verified(view("GET", url))


# --- failures -------------------------------------------------------------------------------


def presigned_get(key: str = "a b+c", **params: str) -> str:
    return client().generate_presigned_url(
        "get_object", Params={"Bucket": BUCKET, "Key": key, **params}, ExpiresIn=300
    )


def test_no_sigv2_params_is_anonymous() -> None:
    assert parse_query_auth(HttpRequestView("GET", "/b/k", "", {})) is None
    assert parse_query_auth(HttpRequestView("GET", "/b/k", "prefix=x&Expires=5", {})) is None


def test_wrong_secret(signed_strings: list[str]) -> None:
    req = view("GET", presigned_get(ResponseContentType="text/plain"))
    auth = parse_query_auth(req)
    assert auth is not None
    with pytest.raises(errors.SignatureDoesNotMatch) as caught:
        verify(req, auth, "not-the-secret", None)
    extra = caught.value.extra
    assert caught.value.status == 403
    assert extra["AWSAccessKeyId"] == AK
    assert extra["SignatureProvided"] == auth.signature
    assert extra["StringToSign"] == signed_strings[-1]
    assert extra["StringToSignBytes"] == signed_strings[-1].encode().hex(" ")


@pytest.mark.parametrize(
    "tamper",
    [
        lambda r: replace(r, raw_path=r.raw_path + "x"),
        lambda r: replace(r, raw_path=r.raw_path.replace("%20", "+")),
        lambda r: replace(
            r, raw_query=r.raw_query.replace("text%2Fplain", "text%2Fhtml"), query=None
        ),
        lambda r: replace(r, raw_query=r.raw_query + "&response-content-language=de", query=None),
        lambda r: replace(r, raw_query=r.raw_query + "&x-amz-acl=public-read", query=None),
        lambda r: replace(r, raw_query=r.raw_query.replace("Expires=", "Expires=1"), query=None),
        # A sub-resource name spelt with percent-escapes is still a signed sub-resource.
        lambda r: replace(
            r, raw_query=r.raw_query + "&%72esponse-content-disposition=inline", query=None
        ),
        lambda r: replace(r, raw_query=r.raw_query + "&versionI%64=null", query=None),
        lambda r: replace(r, headers={**r.headers, "content-md5": "1B2M2Y8AsgTpgAmY7PhCfg=="}),
    ],
)
def test_tampered_url_fails(tamper: Callable[[HttpRequestView], HttpRequestView]) -> None:
    req = view("GET", presigned_get(ResponseContentType="text/plain"))
    verified(req)
    bad = tamper(req)
    auth = parse_query_auth(bad)
    assert auth is not None
    with pytest.raises(errors.SignatureDoesNotMatch):
        verify(bad, auth, SECRET, None)


def test_unsigned_query_params_are_ignored() -> None:
    # As in S3: only sub-resources are part of the signed resource.
    req = view("GET", presigned_get())
    verified(HttpRequestView(req.method, req.raw_path, req.raw_query + "&foo=bar", req.headers))


def test_virtual_host_bucket_is_signed() -> None:
    url = client(virtual=True).generate_presigned_url(
        "get_object", Params={"Bucket": BUCKET, "Key": "k"}
    )
    req = view("GET", url)
    auth = parse_query_auth(req)
    assert auth is not None
    verify(req, auth, SECRET, BUCKET)
    with pytest.raises(errors.SignatureDoesNotMatch):
        verify(req, auth, SECRET, "other-bucket")
    with pytest.raises(errors.SignatureDoesNotMatch):
        verify(req, auth, SECRET, None)


def test_expired() -> None:
    auth = QueryAuthV2(access_key=AK, signature="x", expires=1795290696)
    expires_at = datetime(2026, 11, 21, 19, 51, 36, tzinfo=UTC)
    assert expires_at.timestamp() == auth.expires
    check_expiry(auth, expires_at)
    with pytest.raises(errors.AccessDenied) as caught:
        check_expiry(auth, expires_at + timedelta(seconds=1))
    assert caught.value.message == "Request has expired"
    assert caught.value.extra == {
        "Expires": "2026-11-21T19:51:36Z",
        "ServerTime": "2026-11-21T19:51:37Z",
    }


def test_expired_url_from_boto3() -> None:
    req = view("GET", presigned_get())
    auth = parse_query_auth(req)
    assert auth is not None
    now = datetime.now(UTC)
    check_expiry(auth, now)
    with pytest.raises(errors.AccessDenied):
        check_expiry(auth, now + timedelta(seconds=301 + 60))


REQUIRED = (
    "Query-string authentication requires the Signature, Expires and AWSAccessKeyId parameters"
)


@pytest.mark.parametrize(
    ("query", "message"),
    [
        (f"AWSAccessKeyId={AK}", REQUIRED),
        ("Signature=abc%3D", REQUIRED),
        (f"AWSAccessKeyId={AK}&Signature=abc%3D", REQUIRED),
        (f"AWSAccessKeyId={AK}&Expires=1795290696", REQUIRED),
        ("Signature=abc%3D&Expires=1795290696", REQUIRED),
        (f"AWSAccessKeyId={AK}&Signature=&Expires=1795290696", REQUIRED),
        ("AWSAccessKeyId=&Signature=abc&Expires=1795290696", REQUIRED),
        (
            f"AWSAccessKeyId={AK}&Signature=abc&Expires=soon",
            "Invalid date (should be seconds since epoch): soon",
        ),
        (
            f"AWSAccessKeyId={AK}&Signature=abc&Expires=-5",
            "Invalid date (should be seconds since epoch): -5",
        ),
    ],
)
def test_partial_or_malformed_query(query: str, message: str) -> None:
    with pytest.raises(errors.AccessDenied) as caught:
        parse_query_auth(HttpRequestView("GET", "/bk1/k", query, {"host": "h"}))
    assert caught.value.message == message
    assert caught.value.status == 403


def test_signature_is_percent_decoded() -> None:
    auth = parse_query_auth(
        HttpRequestView("GET", "/b/k", "AWSAccessKeyId=A&Signature=a%2Bb%2F%3D&Expires=7", {})
    )
    assert auth == QueryAuthV2(access_key="A", signature="a+b/=", expires=7)


@pytest.mark.parametrize("value", ["a%0D%0AX-Injected:%201", "a%01b", "%00"])
def test_query_headers_with_control_characters_are_refused(value: str) -> None:
    req = view("PUT", presigned_get() + f"&x-amz-meta-note={value}")
    with pytest.raises(errors.InvalidArgument):
        sigv2.headers_from_query(req)


def test_query_headers_keep_utf8_metadata() -> None:
    req = view("PUT", presigned_get() + "&x-amz-meta-note=caf%C3%A9")
    assert sigv2.headers_from_query(req)["x-amz-meta-note"] == "caf\u00e9"
