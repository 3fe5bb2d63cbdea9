"""CORS: PutBucketCors / GetBucketCors / DeleteBucketCors through boto3, rules from the YAML,
the OPTIONS preflight, and the headers of actual requests, errors and 304s included."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator

import pytest
import requests
from botocore.exceptions import ClientError

from tests.conftest import CORS_BUCKET, CORS_SITE, LOCAL, UPSTREAM, GatewayProcess, S3Client
from tests.rawhttp import sign
from tests.s3errors import error_of
from tests.unit.variants import images

# Protocol behaviour: the sealed profile (local disk underneath) adds nothing here.
GATEWAY_PROFILES = [LOCAL, UPSTREAM]

ORIGIN = "https://app.example"
RULES = [
    {
        "ID": "app",
        "AllowedOrigins": [ORIGIN, "https://*.app.example"],
        "AllowedMethods": ["GET", "PUT", "HEAD"],
        "AllowedHeaders": ["Content-Type", "x-amz-*"],
        "ExposeHeaders": ["ETag", "x-amz-request-id"],
        "MaxAgeSeconds": 300,
    },
    {"AllowedOrigins": ["*"], "AllowedMethods": ["GET"]},
]


@pytest.fixture
def cors_bucket(s3: S3Client, bucket: str) -> Iterator[str]:
    s3.put_bucket_cors(Bucket=bucket, CORSConfiguration={"CORSRules": RULES})
    s3.put_object(Bucket=bucket, Key="a.txt", Body=b"hello")
    yield bucket
    s3.delete_object(Bucket=bucket, Key="a.txt")


def preflight(
    gateway: GatewayProcess, path: str, origin: str | None, method: str | None, headers: str = ""
) -> requests.Response:
    sent = {}
    if origin is not None:
        sent["Origin"] = origin
    if method is not None:
        sent["Access-Control-Request-Method"] = method
    if headers:
        sent["Access-Control-Request-Headers"] = headers
    return requests.options(gateway.endpoint + path, headers=sent, timeout=10)


def error_code(response: requests.Response) -> str:
    return response.text.split("<Code>")[1].split("</Code>")[0]


def test_cors_rules_round_trip_through_the_api(s3: S3Client, cors_bucket: str) -> None:
    rules = s3.get_bucket_cors(Bucket=cors_bucket)["CORSRules"]
    assert rules == RULES
    s3.delete_bucket_cors(Bucket=cors_bucket)
    with pytest.raises(ClientError) as excinfo:
        s3.get_bucket_cors(Bucket=cors_bucket)
    assert error_of(excinfo) == (404, "NoSuchCORSConfiguration")


@pytest.mark.parametrize(
    ("rules", "expected"),
    [
        ([{"AllowedOrigins": ["*"], "AllowedMethods": ["PATCH"]}], (400, "InvalidRequest")),
        (
            [{"AllowedOrigins": ["https://*.*.example"], "AllowedMethods": ["GET"]}],
            (400, "InvalidRequest"),
        ),
        ([{"AllowedOrigins": ["*"], "AllowedMethods": ["GET"]}] * 101, (400, "MalformedXML")),
    ],
)
def test_refused_rules_change_nothing(
    s3: S3Client, cors_bucket: str, rules: list[dict[str, object]], expected: tuple[int, str]
) -> None:
    with pytest.raises(ClientError) as excinfo:
        s3.put_bucket_cors(Bucket=cors_bucket, CORSConfiguration={"CORSRules": rules})
    assert error_of(excinfo) == expected
    assert s3.get_bucket_cors(Bucket=cors_bucket)["CORSRules"] == RULES


def test_malformed_cors_xml(gateway: GatewayProcess, s3: S3Client, cors_bucket: str) -> None:
    for body in (b"<CORSConfiguration><CORSRule>", b"<NotCORS/>", b"<CORSConfiguration/>"):
        url = f"{gateway.endpoint}/{cors_bucket}?cors"
        headers = sign("PUT", url, hashlib.sha256(body).hexdigest())
        response = requests.put(url, data=body, headers=headers, timeout=10)
        assert (response.status_code, error_code(response)) == (400, "MalformedXML"), body
    assert s3.get_bucket_cors(Bucket=cors_bucket)["CORSRules"] == RULES


def test_yaml_rules_are_read_only_through_the_api(s3: S3Client) -> None:
    rules = s3.get_bucket_cors(Bucket=CORS_BUCKET)["CORSRules"]
    assert rules[0]["AllowedOrigins"] == [CORS_SITE]
    assert rules[0]["MaxAgeSeconds"] == 600
    for call in (
        lambda: s3.put_bucket_cors(
            Bucket=CORS_BUCKET,
            CORSConfiguration={"CORSRules": [{"AllowedOrigins": ["*"], "AllowedMethods": ["PUT"]}]},
        ),
        lambda: s3.delete_bucket_cors(Bucket=CORS_BUCKET),
    ):
        with pytest.raises(ClientError) as excinfo:
            call()
        assert error_of(excinfo) == (400, "InvalidRequest")
    assert s3.get_bucket_cors(Bucket=CORS_BUCKET)["CORSRules"] == rules


def test_a_matching_preflight_is_answered_without_a_signature(
    gateway: GatewayProcess, cors_bucket: str
) -> None:
    response = preflight(
        gateway, f"/{cors_bucket}/a.txt", ORIGIN, "PUT", "Content-Type, X-Amz-Date"
    )
    assert response.status_code == 200
    assert response.headers["Access-Control-Allow-Origin"] == ORIGIN
    assert response.headers["Access-Control-Allow-Methods"] == "GET, PUT, HEAD"
    assert response.headers["Access-Control-Allow-Headers"] == "content-type, x-amz-date"
    assert response.headers["Access-Control-Max-Age"] == "300"
    assert "Origin" in response.headers["Vary"]
    # A wildcard origin pattern; and the catch-all rule answers "*" for GET.
    wildcard = preflight(gateway, f"/{cors_bucket}/a.txt", "https://x.app.example", "PUT")
    assert wildcard.headers["Access-Control-Allow-Origin"] == "https://x.app.example"
    anyone = preflight(
        gateway, f"/{cors_bucket}/missing?variant=thumb", "https://else.example", "GET"
    )
    assert anyone.status_code == 200
    assert anyone.headers["Access-Control-Allow-Origin"] == "*"


@pytest.mark.parametrize(
    ("origin", "method", "headers", "expected"),
    [
        ("https://else.example", "PUT", "", (403, "AccessForbidden")),
        (ORIGIN, "DELETE", "", (403, "AccessForbidden")),
        (ORIGIN, "PUT", "Authorization", (403, "AccessForbidden")),
        (None, "GET", "", (400, "BadRequest")),
        (ORIGIN, None, "", (400, "BadRequest")),
        (ORIGIN, "PATCH", "", (400, "BadRequest")),
    ],
)
def test_refused_preflights(
    gateway: GatewayProcess,
    cors_bucket: str,
    origin: str | None,
    method: str | None,
    headers: str,
    expected: tuple[int, str],
) -> None:
    response = preflight(gateway, f"/{cors_bucket}/a.txt", origin, method, headers)
    assert (response.status_code, error_code(response)) == expected
    assert "Access-Control-Allow-Origin" not in response.headers


def test_a_bucket_without_rules_refuses_preflights(gateway: GatewayProcess, bucket: str) -> None:
    response = preflight(gateway, f"/{bucket}/a.txt", ORIGIN, "GET")
    assert (response.status_code, error_code(response)) == (403, "AccessForbidden")
    assert "not enabled" in response.text


def test_actual_requests_get_cors_headers(
    gateway: GatewayProcess, s3: S3Client, cors_bucket: str
) -> None:
    url = s3.generate_presigned_url("get_object", Params={"Bucket": cors_bucket, "Key": "a.txt"})
    response = requests.get(url, headers={"Origin": ORIGIN}, timeout=10)
    assert response.status_code == 200
    # Signed, so credentialed: the origin itself, never "*".
    assert response.headers["Access-Control-Allow-Origin"] == ORIGIN
    assert response.headers["Access-Control-Allow-Credentials"] == "true"
    assert response.headers["Access-Control-Expose-Headers"] == "ETag, x-amz-request-id"
    assert "Origin" in response.headers["Vary"]
    etag = response.headers["ETag"]
    # A 304 and an error carry them too, so page scripts can read them.
    cached = requests.get(url, headers={"Origin": ORIGIN, "If-None-Match": etag}, timeout=10)
    assert cached.status_code == 304
    assert cached.headers["Access-Control-Allow-Origin"] == ORIGIN
    missing = s3.generate_presigned_url(
        "get_object", Params={"Bucket": cors_bucket, "Key": "missing"}
    )
    gone = requests.get(missing, headers={"Origin": ORIGIN}, timeout=10)
    assert (gone.status_code, error_code(gone)) == (404, "NoSuchKey")
    assert gone.headers["Access-Control-Allow-Origin"] == ORIGIN
    # A PUT from the page.
    put_url = s3.generate_presigned_url(
        "put_object", Params={"Bucket": cors_bucket, "Key": "from-page.txt"}
    )
    put = requests.put(put_url, data=b"typed", headers={"Origin": ORIGIN}, timeout=10)
    assert put.status_code == 200
    assert put.headers["Access-Control-Allow-Origin"] == ORIGIN
    # An origin no rule allows: no CORS headers (the browser then refuses the answer).
    other = requests.get(url, headers={"Origin": "https://else.example"}, timeout=10)
    assert other.status_code == 200
    assert "Access-Control-Allow-Origin" in other.headers  # the catch-all "*" GET rule
    head = requests.head(url, headers={"Origin": "https://else.example"}, timeout=10)
    assert "Access-Control-Allow-Origin" not in head.headers
    assert "Origin" in head.headers["Vary"]
    # Without an Origin nothing is added.
    plain = requests.get(url, timeout=10)
    assert "Access-Control-Allow-Origin" not in plain.headers
    s3.delete_object(Bucket=cors_bucket, Key="from-page.txt")


def test_a_rule_change_applies_at_once(
    gateway: GatewayProcess, s3: S3Client, cors_bucket: str
) -> None:
    assert preflight(gateway, f"/{cors_bucket}/a.txt", ORIGIN, "DELETE").status_code == 403
    rules = [{"AllowedOrigins": [ORIGIN], "AllowedMethods": ["DELETE"]}]
    s3.put_bucket_cors(Bucket=cors_bucket, CORSConfiguration={"CORSRules": rules})
    assert preflight(gateway, f"/{cors_bucket}/a.txt", ORIGIN, "DELETE").status_code == 200
    assert preflight(gateway, f"/{cors_bucket}/a.txt", ORIGIN, "GET").status_code == 403


def test_anonymous_variants_of_a_configured_bucket(gateway: GatewayProcess, s3: S3Client) -> None:
    s3.put_object(
        Bucket=CORS_BUCKET,
        Key="cat.jpg",
        Body=images.jpeg_with_orientation(1),
        ContentType="image/jpeg",
    )
    base = f"{gateway.endpoint}/{CORS_BUCKET}/cat.jpg"
    for query in ("?variant=thumb", "?variant=auto", "?variant=first-original", ""):
        response = requests.get(base + query, headers={"Origin": CORS_SITE}, timeout=30)
        assert response.status_code == 200, query
        # Anonymous, but the rule names the origin: it is echoed.
        assert response.headers["Access-Control-Allow-Origin"] == CORS_SITE, query
        assert response.headers["Access-Control-Expose-Headers"] == "ETag, Content-Length"
        vary = response.headers["Vary"]
        assert "Origin" in vary, query
        if query == "?variant=auto":
            assert "Accept" in vary
        anyone = requests.get(base + query, headers={"Origin": "https://else.example"}, timeout=30)
        assert anyone.headers["Access-Control-Allow-Origin"] == "*", query


def test_a_rule_change_applies_at_once_to_writes(
    gateway: GatewayProcess, s3: S3Client, bucket: str
) -> None:
    """A write's answer carries the rules of the moment, even right after another write to
    the bucket (which may let the next write skip looking the bucket up)."""
    put_url = s3.generate_presigned_url("put_object", Params={"Bucket": bucket, "Key": "w.txt"})
    presigned = s3.generate_presigned_post(bucket, "form.txt")

    def write() -> list[requests.Response]:
        headers = {"Origin": ORIGIN}
        put = requests.put(put_url, data=b"w", headers=headers, timeout=10)
        form = requests.post(
            presigned["url"],
            data=presigned["fields"],
            files={"file": ("form.txt", b"f")},
            headers=headers,
            timeout=10,
        )
        assert (put.status_code, form.status_code) == (200, 204)
        return [put, form]

    assert all("Access-Control-Allow-Origin" not in r.headers for r in write())
    rules = [{"AllowedOrigins": [ORIGIN], "AllowedMethods": ["PUT", "POST"]}]
    s3.put_bucket_cors(Bucket=bucket, CORSConfiguration={"CORSRules": rules})
    assert all(r.headers.get("Access-Control-Allow-Origin") == ORIGIN for r in write())
