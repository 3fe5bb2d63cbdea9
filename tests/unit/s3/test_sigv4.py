"""SigV4 verification against AWS's published examples and botocore's own signers."""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime, timedelta
from unittest import mock
from urllib.parse import quote, urlsplit

import boto3
import pytest
from botocore.auth import S3SigV4Auth, S3SigV4QueryAuth
from botocore.awsrequest import AWSRequest
from botocore.config import Config
from botocore.credentials import Credentials
from botocore.utils import percent_encode_sequence

from gateway.s3 import errors, sigv4
from gateway.s3.query import parse_query
from gateway.s3.sigv4 import AuthRequest, HttpRequestView, check_time, parse_auth, verify

# Credentials and time of the examples in the S3 SigV4 documentation.
AK = "AKIAIOSFODNN7EXAMPLE"
SECRET = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"
DOC_TIME = datetime(2013, 5, 24, tzinfo=UTC)
EMPTY = hashlib.sha256(b"").hexdigest()
ENDPOINT = "https://s3.example.com"


def view(method: str, url: str, headers: dict[str, str | bytes]) -> HttpRequestView:
    parts = urlsplit(url)
    lowered = {
        name.lower(): value.decode() if isinstance(value, bytes) else value
        for name, value in headers.items()
    }
    lowered.setdefault("host", parts.netloc)  # the HTTP client adds it on the wire
    return HttpRequestView(method, parts.path, parts.query, lowered)


def botocore_signed(
    method: str,
    url: str,
    headers: dict[str, str] | None = None,
    *,
    presign_expires: int | None = None,
    when: datetime = DOC_TIME,
) -> HttpRequestView:
    """Sign with botocore's S3 signers at ``when``; return what the server would see."""
    request = AWSRequest(method=method, url=url, headers=headers or {})
    credentials = Credentials(AK, SECRET)
    if presign_expires is None:
        signer = S3SigV4Auth(credentials, "s3", "us-east-1")
    else:
        signer = S3SigV4QueryAuth(credentials, "s3", "us-east-1", expires=presign_expires)
    with mock.patch("botocore.auth.get_current_datetime", return_value=when.replace(tzinfo=None)):
        signer.add_auth(request)
    prepared = request.prepare()
    return view(prepared.method, prepared.url, dict(prepared.headers))


def verified(req: HttpRequestView, secret: str = SECRET) -> AuthRequest:
    auth = parse_auth(req)
    assert auth is not None
    verify(req, auth, secret)
    return auth


# --- AWS documentation examples -----------------------------------------------------------


def doc_get_object() -> HttpRequestView:
    return HttpRequestView(
        "GET",
        "/test.txt",
        "",
        {
            "host": "examplebucket.s3.amazonaws.com",
            "range": "bytes=0-9",
            "x-amz-content-sha256": EMPTY,
            "x-amz-date": "20130524T000000Z",
            "authorization": (
                f"AWS4-HMAC-SHA256 Credential={AK}/20130524/us-east-1/s3/aws4_request,"
                "SignedHeaders=host;range;x-amz-content-sha256;x-amz-date,"
                "Signature=f0e8bdb87c964420e857bd35b5d6ed310bd44f0170aba48dd91039c6036bdb41"
            ),
        },
    )


def test_doc_example_get_object() -> None:
    req = doc_get_object()
    auth = parse_auth(req)
    assert auth is not None
    assert auth.scope == "20130524/us-east-1/s3/aws4_request"
    assert auth.signed_headers == ("host", "range", "x-amz-content-sha256", "x-amz-date")
    assert auth.request_time == DOC_TIME
    canonical, missing = sigv4.canonical_request(req, auth)
    assert missing == []
    assert canonical == (
        "GET\n/test.txt\n\n"
        "host:examplebucket.s3.amazonaws.com\nrange:bytes=0-9\n"
        f"x-amz-content-sha256:{EMPTY}\nx-amz-date:20130524T000000Z\n\n"
        f"host;range;x-amz-content-sha256;x-amz-date\n{EMPTY}"
    )
    assert sigv4.string_to_sign(auth, canonical) == (
        "AWS4-HMAC-SHA256\n20130524T000000Z\n20130524/us-east-1/s3/aws4_request\n"
        "7344ae5b7ee6c3e7e6b0fe0640412a37625d1fbfff95c48bbb2dc43964946972"
    )
    key = verify(req, auth, SECRET)
    assert key == sigv4.signing_key(SECRET, "20130524", "us-east-1", "s3")


def test_doc_example_put_object_with_date_header() -> None:
    body_hash = hashlib.sha256(b"Welcome to Amazon S3.").hexdigest()
    req = HttpRequestView(
        "PUT",
        "/test%24file.text",
        "",
        {
            "host": "examplebucket.s3.amazonaws.com",
            "date": "Fri, 24 May 2013 00:00:00 GMT",
            "x-amz-date": "20130524T000000Z",
            "x-amz-storage-class": "REDUCED_REDUNDANCY",
            "x-amz-content-sha256": body_hash,
            "authorization": (
                f"AWS4-HMAC-SHA256 Credential={AK}/20130524/us-east-1/s3/aws4_request, "
                "SignedHeaders=date;host;x-amz-content-sha256;x-amz-date;x-amz-storage-class, "
                "Signature=98ad721746da40c64f1a55b78f14c238d841ea1380cd77a1b5971af0ece108bd"
            ),
        },
    )
    assert verified(req).payload_hash == body_hash


@pytest.mark.parametrize(
    ("query", "signature"),
    [
        ("lifecycle", "fea454ca298b7da1c68078a5d1bdbfbbe0d65c699e0f91ac7a200a0136783543"),
        ("max-keys=2&prefix=J", "34b48302e7b5fa45bde8084f4b7868a86f0a534bc59db6670ed5711ef69dc6f7"),
    ],
)
def test_doc_examples_bucket_queries(query: str, signature: str) -> None:
    req = HttpRequestView(
        "GET",
        "/",
        query,
        {
            "host": "examplebucket.s3.amazonaws.com",
            "x-amz-date": "20130524T000000Z",
            "x-amz-content-sha256": EMPTY,
            "authorization": (
                f"AWS4-HMAC-SHA256 Credential={AK}/20130524/us-east-1/s3/aws4_request,"
                f"SignedHeaders=host;x-amz-content-sha256;x-amz-date,Signature={signature}"
            ),
        },
    )
    verified(req)


def test_doc_example_presigned_url() -> None:
    req = HttpRequestView(
        "GET",
        "/test.txt",
        "X-Amz-Algorithm=AWS4-HMAC-SHA256"
        f"&X-Amz-Credential={AK}%2F20130524%2Fus-east-1%2Fs3%2Faws4_request"
        "&X-Amz-Date=20130524T000000Z&X-Amz-Expires=86400&X-Amz-SignedHeaders=host"
        "&X-Amz-Signature=aeeed9bbccd4d02ee5c0109b86d86835f995330da4c265957d157751f604d404",
        {"host": "examplebucket.s3.amazonaws.com"},
    )
    auth = verified(req)
    assert auth.presigned and auth.expires == 86400
    assert auth.payload_hash == "UNSIGNED-PAYLOAD"
    check_time(auth, DOC_TIME + timedelta(hours=23))
    with pytest.raises(errors.AccessDenied) as caught:
        check_time(auth, DOC_TIME + timedelta(days=1, seconds=1))
    assert caught.value.message == "Request has expired"
    assert caught.value.extra == {
        "X-Amz-Expires": "86400",
        "Expires": "2013-05-25T00:00:00Z",
        "ServerTime": "2013-05-25T00:00:01Z",
    }


# --- botocore-signed requests ---------------------------------------------------------------

AWKWARD_KEYS = [
    "plain.txt",
    "with space",
    "plus+sign",
    "percent%25literal%",
    "double//slash",
    "../up/../and/./dot",
    "trailing/",
    "unicode-ünï/日本語/🙂",
    "reserved !$&'()*,;=:@[]",
    "tilde~and-underscore_",
    "k" * 1024,
]


@pytest.mark.parametrize("key", AWKWARD_KEYS, ids=lambda key: key[:40])
@pytest.mark.parametrize("presign", [False, True], ids=["header", "presigned"])
def test_botocore_awkward_keys(key: str, presign: bool) -> None:
    # botocore's serializer encodes keys this way before signing.
    url = f"{ENDPOINT}/bucket/{quote(key, safe='/~')}"
    headers = {"x-amz-content-sha256": EMPTY} if not presign else {}
    req = botocore_signed("GET", url, headers, presign_expires=3600 if presign else None)
    auth = verified(req)
    assert auth.presigned is presign


QUERIES = [
    {"prefix": "a b+c/d", "delimiter": "/"},
    {"prefix": "ünï 日本", "max-keys": "5"},
    {"marker": "100%", "list-type": "2", "encoding-type": "url"},
    {"prefix": "!*'();:@&=+$,/?#[]~"},
    {"uploads": ""},
    {"versionId": "3/L4kqtJlcpXroDTDmJ+rmSpXd3dIbrHY+MTRCxf3vjVBH40Nr8X8gdRQBpUMLUo"},
]


@pytest.mark.parametrize("params", QUERIES, ids=lambda p: ",".join(p))
@pytest.mark.parametrize("presign", [False, True], ids=["header", "presigned"])
def test_botocore_query_params(params: dict[str, str], presign: bool) -> None:
    url = f"{ENDPOINT}/bucket/key?{percent_encode_sequence(params)}"
    headers = {"x-amz-content-sha256": EMPTY} if not presign else {}
    verified(botocore_signed("GET", url, headers, presign_expires=60 if presign else None))


def test_lightly_encoded_wire_path_matches() -> None:
    # Some clients send reserved characters unencoded but sign the fully encoded form.
    key = "a=b(c)@d!e"
    req = botocore_signed(
        "GET", f"{ENDPOINT}/bucket/{quote(key, safe='')}", {"x-amz-content-sha256": EMPTY}
    )
    verified(HttpRequestView(req.method, f"/bucket/{key}", req.raw_query, req.headers))


def test_repeated_query_params_and_bare_names() -> None:
    url = f"{ENDPOINT}/bucket?b=2&a=2&a=1&versions"
    verified(botocore_signed("GET", url, {"x-amz-content-sha256": EMPTY}))
    assert sigv4.canonical_query(parse_query("b=2&a=2&a=1&versions")) == "a=1&a=2&b=2&versions="


@pytest.mark.parametrize(
    ("raw", "canonical"),
    [
        ("/a%2fb", "/a/b"),  # decoded once: an encoded slash is a slash, as SDKs send it
        ("/a%3d%3Db", "/a%3D%3Db"),  # hex upper-cased
        ("/a+b", "/a%2Bb"),
        ("/a%20b", "/a%20b"),
        ("/%7Euser/./x/../y//z", "/~user/./x/../y//z"),
        ("/caf%C3%A9", "/caf%C3%A9"),
    ],
)
def test_canonical_uri(raw: str, canonical: str) -> None:
    assert sigv4.canonical_uri(raw) == canonical


def test_header_values_are_trimmed_and_collapsed() -> None:
    req = botocore_signed(
        "PUT",
        f"{ENDPOINT}/bucket/key",
        {"x-amz-content-sha256": EMPTY, "x-amz-meta-note": "  several   inner  spaces "},
    )
    verified(req)
    headers = dict(req.headers, **{"x-amz-meta-note": "several inner spaces"})
    verified(HttpRequestView(req.method, req.raw_path, req.raw_query, headers))


def test_boto3_client_requests_verify() -> None:
    """The real client path: serializer, checksum trailer and signer together."""
    client = boto3.client(
        "s3",
        endpoint_url=ENDPOINT,
        region_name="us-east-1",
        aws_access_key_id=AK,
        aws_secret_access_key=SECRET,
        config=Config(signature_version="s3v4", s3={"addressing_style": "path"}),
    )
    sent: list[HttpRequestView] = []

    class Sent(Exception):
        pass

    def capture(request: AWSRequest, **_: object) -> None:
        sent.append(view(request.method, request.url, dict(request.headers)))
        raise Sent

    client.meta.events.register("before-send.s3", capture)
    calls = [
        lambda: client.put_object(Bucket="bucket", Key="dir/a b+c%d/ü", Body=b"data"),
        lambda: client.list_objects_v2(Bucket="bucket", Prefix="a b+/", Delimiter="/"),
        lambda: client.get_object(Bucket="bucket", Key="../x//y", Range="bytes=0-9"),
    ]
    for call in calls:
        with pytest.raises(Sent):
            call()
    for req in sent:
        verified(req)
    presigned_url = client.generate_presigned_url(
        "get_object", Params={"Bucket": "bucket", "Key": "a b+c"}, ExpiresIn=300
    )
    verified(view("GET", presigned_url, {}))


# --- failures -------------------------------------------------------------------------------


def test_wrong_secret_reports_canonical_request() -> None:
    req = doc_get_object()
    auth = parse_auth(req)
    assert auth is not None
    with pytest.raises(errors.SignatureDoesNotMatch) as caught:
        verify(req, auth, "not-the-secret")
    extra = caught.value.extra
    canonical, _ = sigv4.canonical_request(req, auth)
    assert list(extra) == [
        "AWSAccessKeyId",
        "StringToSign",
        "SignatureProvided",
        "StringToSignBytes",
        "CanonicalRequest",
        "CanonicalRequestBytes",
    ]
    assert extra["AWSAccessKeyId"] == AK
    assert extra["CanonicalRequest"] == canonical
    assert extra["CanonicalRequestBytes"].startswith("47 45 54 0a 2f")  # "GET\n/"
    assert bytes.fromhex(extra["StringToSignBytes"]).decode() == extra["StringToSign"]
    assert extra["SignatureProvided"] == auth.signature


def test_tampered_request_fails() -> None:
    req = doc_get_object()
    tampered = HttpRequestView("GET", "/test.txt", "", dict(req.headers, range="bytes=0-10"))
    with pytest.raises(errors.SignatureDoesNotMatch):
        verified(tampered)


def test_signed_header_missing_from_request() -> None:
    req = doc_get_object()
    headers = dict(req.headers)
    del headers["range"]
    with pytest.raises(errors.SignatureDoesNotMatch) as caught:
        verified(HttpRequestView("GET", "/test.txt", "", headers))
    assert "\nrange:\n" in caught.value.extra["CanonicalRequest"]


def with_authorization(value: str, **headers: str) -> HttpRequestView:
    base = {"host": "h", "x-amz-date": "20130524T000000Z", "x-amz-content-sha256": EMPTY}
    return HttpRequestView("GET", "/", "", {**base, **headers, "authorization": value})


CRED = f"Credential={AK}/20130524/us-east-1/s3/aws4_request"


@pytest.mark.parametrize(
    ("authorization", "error", "message_part"),
    [
        (f"AWS {AK}:frJIUN8DYpKDtOLCwo//yllqDzg=", errors.InvalidRequest, "AWS4-HMAC-SHA256"),
        (f"AWS4-HMAC-SHA1 {CRED}", errors.InvalidArgument, "Unsupported Authorization Type"),
        (
            f"AWS4-HMAC-SHA256 {CRED}, SignedHeaders=host",
            errors.AuthorizationHeaderMalformed,
            "three",
        ),
        (
            f"AWS4-HMAC-SHA256 Credential={AK}/20130524/us-east-1/s3, "
            "SignedHeaders=host, Signature=0",
            errors.AuthorizationHeaderMalformed,
            "mal-formed",
        ),
        (
            f"AWS4-HMAC-SHA256 Credential={AK}/20130524/us-east-1/ec2/aws4_request, "
            "SignedHeaders=host, Signature=0",
            errors.AuthorizationHeaderMalformed,
            'incorrect service "ec2"',
        ),
        (
            f"AWS4-HMAC-SHA256 Credential={AK}/20130524/us-east-1/s3/aws5_request, "
            "SignedHeaders=host, Signature=0",
            errors.AuthorizationHeaderMalformed,
            "incorrect terminal",
        ),
        (
            f"AWS4-HMAC-SHA256 Credential={AK}/20130525/us-east-1/s3/aws4_request, "
            "SignedHeaders=host, Signature=0",
            errors.AuthorizationHeaderMalformed,
            "Date is not the same as X-Amz-Date",
        ),
        (
            f"AWS4-HMAC-SHA256 {CRED}, SignedHeaders=x-amz-date, Signature=0",
            errors.AuthorizationHeaderMalformed,
            "host",
        ),
    ],
)
def test_malformed_authorization_header(authorization: str, error: type, message_part: str) -> None:
    with pytest.raises(error) as caught:
        parse_auth(with_authorization(authorization))
    assert message_part in caught.value.message


def test_header_auth_requires_content_sha256_and_date() -> None:
    auth_value = f"AWS4-HMAC-SHA256 {CRED},SignedHeaders=host,Signature=0"
    req = with_authorization(auth_value)
    del req.headers["x-amz-content-sha256"]  # type: ignore[attr-defined]
    with pytest.raises(errors.InvalidRequest) as caught:
        parse_auth(req)
    assert caught.value.message == "Missing required header for this request: x-amz-content-sha256"

    req = with_authorization(auth_value)
    del req.headers["x-amz-date"]  # type: ignore[attr-defined]
    with pytest.raises(errors.AccessDenied):
        parse_auth(req)

    with pytest.raises(errors.InvalidArgument):
        parse_auth(with_authorization(auth_value, **{"x-amz-content-sha256": "nonsense"}))


def test_botocore_signing_with_date_header() -> None:
    # Given a Date header, botocore signs with it instead of adding x-amz-date.
    url = f"{ENDPOINT}/bucket/key"
    req = botocore_signed("GET", url, {"Date": "x", "x-amz-content-sha256": EMPTY})
    assert "x-amz-date" not in req.headers
    assert verified(req).request_time == DOC_TIME


def test_date_header_when_no_x_amz_date() -> None:
    req = with_authorization(f"AWS4-HMAC-SHA256 {CRED},SignedHeaders=host;date,Signature=0")
    del req.headers["x-amz-date"]  # type: ignore[attr-defined]
    req.headers["date"] = "Fri, 24 May 2013 00:00:00 GMT"  # type: ignore[index]
    auth = parse_auth(req)
    assert auth is not None
    assert auth.amz_date == "20130524T000000Z"
    assert auth.request_time == DOC_TIME


SIGV2_QUERY = f"AWSAccessKeyId={AK}&Expires=1&Signature=x"


@pytest.mark.parametrize("query", ["prefix=x", SIGV2_QUERY, "Signature=x", "AWSAccessKeyId=x"])
def test_anonymous_and_sigv2_query_are_not_sigv4(query: str) -> None:
    # SigV2 presigned URLs are the sigv2 module's to parse (and to reject when partial).
    assert parse_auth(HttpRequestView("GET", "/b/k", query, {"host": "h"})) is None


@pytest.mark.parametrize("query", ["X-Amz-Algorithm=AWS4-HMAC-SHA256", SIGV2_QUERY])
def test_header_and_query_auth_together(query: str) -> None:
    req = doc_get_object()
    both = HttpRequestView("GET", "/test.txt", query, req.headers)
    with pytest.raises(errors.InvalidArgument) as caught:
        parse_auth(both)
    assert caught.value.message.startswith("Only one auth mechanism allowed")


PRESIGN_BASE = {
    "X-Amz-Algorithm": "AWS4-HMAC-SHA256",
    "X-Amz-Credential": f"{AK}/20130524/us-east-1/s3/aws4_request",
    "X-Amz-Date": "20130524T000000Z",
    "X-Amz-Expires": "86400",
    "X-Amz-SignedHeaders": "host",
    "X-Amz-Signature": "0" * 64,
}


@pytest.mark.parametrize(
    ("changes", "message_part"),
    [
        ({"X-Amz-Algorithm": "AWS4-HMAC-SHA1"}, "X-Amz-Algorithm only supports"),
        ({"X-Amz-Credential": None}, "requires the X-Amz-Algorithm"),
        (
            {"X-Amz-Expires": "604801"},
            "X-Amz-Expires must be less than a week (in seconds); that is, the given "
            "X-Amz-Expires must be less than 604800 seconds",
        ),
        ({"X-Amz-Expires": "-1"}, "X-Amz-Expires must be non-negative"),
        ({"X-Amz-Expires": "soon"}, "should be a number"),
        ({"X-Amz-Expires": "\u0663"}, "should be a number"),  # ARABIC-INDIC DIGIT THREE
        ({"X-Amz-Date": "2013-05-24T00:00:00Z"}, "ISO8601"),
        ({"X-Amz-Date": "20130525T000000Z"}, "Invalid credential date"),
        ({"X-Amz-Credential": f"{AK}/20130524/us-east-1/sqs/aws4_request"}, "incorrect service"),
        ({"X-Amz-Credential": f"{AK}/20130524/us-east-1"}, "mal-formed"),
        ({"X-Amz-SignedHeaders": "range"}, "host"),
    ],
)
def test_malformed_presigned_query(changes: dict[str, str | None], message_part: str) -> None:
    params = {**PRESIGN_BASE, **changes}
    query = percent_encode_sequence({k: v for k, v in params.items() if v is not None})
    with pytest.raises(errors.AuthorizationQueryParametersError) as caught:
        parse_auth(HttpRequestView("GET", "/b/k", query, {"host": "h"}))
    assert message_part in caught.value.message


# --- time -----------------------------------------------------------------------------------


def test_header_auth_skew() -> None:
    auth = parse_auth(doc_get_object())
    assert auth is not None
    check_time(auth, DOC_TIME + timedelta(minutes=15))
    check_time(auth, DOC_TIME - timedelta(minutes=15))
    for now in (DOC_TIME + timedelta(minutes=15, seconds=1), DOC_TIME - timedelta(minutes=16)):
        with pytest.raises(errors.RequestTimeTooSkewed) as caught:
            check_time(auth, now)
    assert caught.value.extra == {
        "RequestTime": "20130524T000000Z",
        "ServerTime": "2013-05-23T23:44:00Z",
        "MaxAllowedSkewMilliseconds": "900000",
    }


def test_presigned_time_window() -> None:
    now = datetime(2024, 1, 2, 3, 4, 5, tzinfo=UTC)
    req = botocore_signed("GET", f"{ENDPOINT}/b/k", presign_expires=600, when=now)
    auth = verified(req)
    assert auth.request_time == now
    check_time(auth, now - timedelta(minutes=15))  # signer clock slightly ahead: fine
    check_time(auth, now + timedelta(seconds=600))
    with pytest.raises(errors.RequestTimeTooSkewed):
        check_time(auth, now - timedelta(minutes=16))
    with pytest.raises(errors.AccessDenied):
        check_time(auth, now + timedelta(seconds=601))


def test_presigned_for_no_time_is_expired() -> None:
    """X-Amz-Expires=0 parses (S3 does not call it malformed) and has expired on arrival."""
    now = datetime(2024, 1, 2, 3, 4, 5, tzinfo=UTC)
    auth = verified(botocore_signed("GET", f"{ENDPOINT}/b/k", presign_expires=0, when=now))
    assert auth.expires == 0
    with pytest.raises(errors.AccessDenied) as caught:
        check_time(auth, now + timedelta(milliseconds=1))
    assert caught.value.message == "Request has expired"
    assert caught.value.extra["X-Amz-Expires"] == "0"
