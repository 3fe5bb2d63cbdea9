"""Object operations through boto3: PutObject, GetObject, HeadObject, DeleteObject(s), Copy."""

from __future__ import annotations

import base64
import hashlib
import io
import os
from datetime import UTC, datetime, timedelta
from email.header import decode_header, make_header

import pytest
from botocore.exceptions import ClientError

from tests.conftest import client, longest_key
from tests.rawhttp import request_head, send_raw, sign
from tests.s3errors import code_of, status_of


def test_put_get_round_trip_with_metadata_and_headers(s3, bucket: str) -> None:
    body = os.urandom(100_000)
    put = s3.put_object(
        Bucket=bucket,
        Key="photos/cat.jpg",
        Body=body,
        ContentType="image/jpeg",
        Metadata={"camera": "x100", "note": "hello world"},
        CacheControl="max-age=60",
        ContentDisposition='attachment; filename="cat.jpg"',
        ContentLanguage="en",
        ContentEncoding="identity",
    )
    assert put["ETag"] == f'"{hashlib.md5(body).hexdigest()}"'
    got = s3.get_object(Bucket=bucket, Key="photos/cat.jpg")
    assert got["Body"].read() == body
    assert got["ETag"] == put["ETag"]
    assert got["ContentType"] == "image/jpeg"
    assert got["ContentLength"] == len(body)
    assert got["Metadata"] == {"camera": "x100", "note": "hello world"}
    assert got["CacheControl"] == "max-age=60"
    assert got["ContentDisposition"] == 'attachment; filename="cat.jpg"'
    assert got["ContentLanguage"] == "en"
    assert got["ContentEncoding"] == "identity"
    head = s3.head_object(Bucket=bucket, Key="photos/cat.jpg")
    assert head["ContentLength"] == len(body)
    assert head["ETag"] == put["ETag"]
    assert head["Metadata"] == got["Metadata"]
    assert head["LastModified"] == got["LastModified"]


def _encoded_word(text: str) -> str:
    return f"=?UTF-8?B?{base64.b64encode(text.encode()).decode()}?="


def test_metadata_beyond_ascii_round_trips_rfc2047_encoded(gateway, s3, bucket: str) -> None:
    """As S3: encoded-words are decoded before storing, and a value that is not plain ASCII
    comes back as one UTF-8 encoded-word, whatever the charset it was sent in."""
    s3.put_object(
        Bucket=bucket,
        Key="k",
        Body=b"x",
        Metadata={
            "word": _encoded_word("café 中"),
            "quoted": "=?iso-8859-1?q?caf=E9?=",
            "plain": "caf=e ?= ascii",
        },
    )
    metadata = s3.head_object(Bucket=bucket, Key="k")["Metadata"]
    assert metadata == {
        "word": _encoded_word("café 中"),
        "quoted": _encoded_word("café"),
        "plain": "caf=e ?= ascii",
    }
    assert str(make_header(decode_header(metadata["word"]))) == "café 中"
    # Raw UTF-8 header bytes (boto3 refuses to send them; other clients do).
    url = f"{gateway.endpoint}/{bucket}/raw"
    headers = sign("PUT", url, hashlib.sha256(b"x").hexdigest(), {"x-amz-meta-utf8": "café"})
    head = request_head("PUT", f"/{bucket}/raw", {**headers, "Content-Length": "1"})
    assert b"caf\xc3\xa9" in head
    assert send_raw("127.0.0.1", gateway.port, head, b"x").status == 200
    got = s3.get_object(Bucket=bucket, Key="raw")
    assert got["Metadata"] == {"utf8": _encoded_word("café")}


def test_default_content_type_and_empty_object(s3, bucket: str) -> None:
    s3.put_object(Bucket=bucket, Key="empty", Body=b"")
    got = s3.get_object(Bucket=bucket, Key="empty")
    assert got["Body"].read() == b""
    assert got["ContentType"] == "binary/octet-stream"
    assert got["ETag"] == '"d41d8cd98f00b204e9800998ecf8427e"'


def test_large_object_streams_both_ways(s3, bucket: str) -> None:
    body = os.urandom(20 * 1024 * 1024 + 17)
    s3.put_object(Bucket=bucket, Key="large", Body=body)
    got = s3.get_object(Bucket=bucket, Key="large")["Body"].read()
    assert hashlib.sha256(got).digest() == hashlib.sha256(body).digest()


def test_overwrite_replaces_object(s3, bucket: str) -> None:
    s3.put_object(Bucket=bucket, Key="k", Body=b"first", Metadata={"v": "1"})
    s3.put_object(Bucket=bucket, Key="k", Body=b"second version")
    got = s3.get_object(Bucket=bucket, Key="k")
    assert got["Body"].read() == b"second version"
    assert got["Metadata"] == {}


@pytest.mark.parametrize(
    ("header", "expected", "content_range"),
    [
        ("bytes=0-9", slice(0, 10), "bytes 0-9/1000"),
        ("bytes=990-", slice(990, 1000), "bytes 990-999/1000"),
        ("bytes=-5", slice(995, 1000), "bytes 995-999/1000"),
        ("bytes=500-5000", slice(500, 1000), "bytes 500-999/1000"),
        ("bytes=999-999", slice(999, 1000), "bytes 999-999/1000"),
    ],
)
def test_ranges(s3, bucket: str, header: str, expected: slice, content_range: str) -> None:
    body = os.urandom(1000)
    s3.put_object(Bucket=bucket, Key="ranged", Body=body)
    got = s3.get_object(Bucket=bucket, Key="ranged", Range=header)
    assert got["ResponseMetadata"]["HTTPStatusCode"] == 206
    assert got["ContentRange"] == content_range
    assert got["Body"].read() == body[expected]


def test_range_on_large_object_uses_file_path(s3, bucket: str) -> None:
    body = os.urandom(3 * 1024 * 1024)
    s3.put_object(Bucket=bucket, Key="big", Body=body)
    got = s3.get_object(Bucket=bucket, Key="big", Range="bytes=1000000-2999999")
    assert got["Body"].read() == body[1_000_000:3_000_000]


@pytest.mark.parametrize("header", ["bytes=1000-", "bytes=5000-6000"])
def test_unsatisfiable_range(s3, bucket: str, header: str) -> None:
    s3.put_object(Bucket=bucket, Key="small", Body=b"x" * 1000)
    with pytest.raises(ClientError) as excinfo:
        s3.get_object(Bucket=bucket, Key="small", Range=header)
    assert code_of(excinfo) == "InvalidRange"
    assert status_of(excinfo) == 416


def test_invalid_range_syntax_returns_whole_object(s3, bucket: str) -> None:
    s3.put_object(Bucket=bucket, Key="k", Body=b"abc")
    got = s3.get_object(Bucket=bucket, Key="k", Range="bytes=z-q")
    assert got["ResponseMetadata"]["HTTPStatusCode"] == 200
    assert got["Body"].read() == b"abc"


def test_conditional_get(s3, bucket: str) -> None:
    put = s3.put_object(Bucket=bucket, Key="c", Body=b"conditional")
    etag = put["ETag"]
    modified = s3.head_object(Bucket=bucket, Key="c")["LastModified"]
    assert s3.get_object(Bucket=bucket, Key="c", IfMatch=etag)["Body"].read() == b"conditional"
    with pytest.raises(ClientError) as excinfo:
        s3.get_object(Bucket=bucket, Key="c", IfMatch='"00000000000000000000000000000000"')
    assert status_of(excinfo) == 412
    assert code_of(excinfo) == "PreconditionFailed"
    with pytest.raises(ClientError) as excinfo:
        s3.get_object(Bucket=bucket, Key="c", IfNoneMatch=etag)
    assert status_of(excinfo) == 304
    with pytest.raises(ClientError) as excinfo:
        s3.get_object(Bucket=bucket, Key="c", IfModifiedSince=modified)
    assert status_of(excinfo) == 304
    past = modified - timedelta(days=1)
    with pytest.raises(ClientError) as excinfo:
        s3.get_object(Bucket=bucket, Key="c", IfUnmodifiedSince=past)
    assert status_of(excinfo) == 412
    # RFC 9110 §13.2.2 as S3 documents it: If-Match true wins over If-Unmodified-Since false.
    got = s3.get_object(Bucket=bucket, Key="c", IfMatch=etag, IfUnmodifiedSince=past)
    assert got["Body"].read() == b"conditional"
    # If-None-Match false with If-Modified-Since true -> 304.
    with pytest.raises(ClientError) as excinfo:
        s3.get_object(Bucket=bucket, Key="c", IfNoneMatch=etag, IfModifiedSince=past)
    assert status_of(excinfo) == 304
    with pytest.raises(ClientError) as excinfo:
        s3.head_object(Bucket=bucket, Key="c", IfNoneMatch=etag)
    assert status_of(excinfo) == 304


def test_conditional_put(s3, bucket: str) -> None:
    s3.put_object(Bucket=bucket, Key="once", Body=b"1", IfNoneMatch="*")
    with pytest.raises(ClientError) as excinfo:
        s3.put_object(Bucket=bucket, Key="once", Body=b"2", IfNoneMatch="*")
    assert code_of(excinfo) == "PreconditionFailed"
    assert s3.get_object(Bucket=bucket, Key="once")["Body"].read() == b"1"


def test_conditional_copy(s3, bucket: str) -> None:
    """If-Match / If-None-Match on CopyObject's destination, as on PutObject."""
    s3.put_object(Bucket=bucket, Key="src", Body=b"source")
    taken = s3.put_object(Bucket=bucket, Key="taken", Body=b"taken")["ETag"]
    source = f"{bucket}/src"
    with pytest.raises(ClientError) as excinfo:
        s3.copy_object(Bucket=bucket, Key="taken", CopySource=source, IfNoneMatch="*")
    assert (status_of(excinfo), code_of(excinfo)) == (412, "PreconditionFailed")
    wrong = '"00000000000000000000000000000000"'
    with pytest.raises(ClientError) as excinfo:
        s3.copy_object(Bucket=bucket, Key="taken", CopySource=source, IfMatch=wrong)
    assert (status_of(excinfo), code_of(excinfo)) == (412, "PreconditionFailed")
    with pytest.raises(ClientError) as excinfo:
        s3.copy_object(Bucket=bucket, Key="missing", CopySource=source, IfMatch=taken)
    assert (status_of(excinfo), code_of(excinfo)) == (404, "NoSuchKey")
    assert s3.get_object(Bucket=bucket, Key="taken")["Body"].read() == b"taken"
    s3.copy_object(Bucket=bucket, Key="taken", CopySource=source, IfMatch=taken)
    s3.copy_object(Bucket=bucket, Key="new", CopySource=source, IfNoneMatch="*")
    for key in ("taken", "new"):
        assert s3.get_object(Bucket=bucket, Key=key)["Body"].read() == b"source"


def test_response_overrides(s3, bucket: str) -> None:
    s3.put_object(Bucket=bucket, Key="doc", Body=b"{}", ContentType="application/json")
    got = s3.get_object(
        Bucket=bucket,
        Key="doc",
        ResponseContentType="text/plain",
        ResponseContentDisposition="attachment",
        ResponseCacheControl="no-cache",
        ResponseContentLanguage="fr",
        ResponseExpires=datetime(2030, 1, 1, tzinfo=UTC),
        ResponseContentEncoding="identity",
    )
    assert got["ContentType"] == "text/plain"
    assert got["ContentDisposition"] == "attachment"
    assert got["CacheControl"] == "no-cache"
    assert got["ContentLanguage"] == "fr"
    assert got["ContentEncoding"] == "identity"


def once(gateway):
    """boto3 without retries: it retries BadDigest (blaming the network) with back-off."""
    return client(gateway.endpoint, retries={"max_attempts": 1})


def test_content_md5(gateway, s3, bucket: str) -> None:
    body = b"checked body"
    good = base64.b64encode(hashlib.md5(body).digest()).decode()
    s3.put_object(Bucket=bucket, Key="md5", Body=body, ContentMD5=good)
    bad = base64.b64encode(hashlib.md5(b"other").digest()).decode()
    with pytest.raises(ClientError) as excinfo:
        once(gateway).put_object(Bucket=bucket, Key="md5-bad", Body=body, ContentMD5=bad)
    assert code_of(excinfo) == "BadDigest"
    with pytest.raises(ClientError) as excinfo:
        s3.head_object(Bucket=bucket, Key="md5-bad")
    assert status_of(excinfo) == 404
    with pytest.raises(ClientError) as excinfo:
        s3.put_object(Bucket=bucket, Key="md5-bad", Body=body, ContentMD5="not-base64!")
    assert code_of(excinfo) == "InvalidDigest"


@pytest.mark.parametrize("algorithm", ["CRC32", "CRC32C", "SHA1", "SHA256", "CRC64NVME"])
def test_checksums_over_tls_trailer(s3_tls, bucket: str, algorithm: str) -> None:
    """Over HTTPS botocore sends aws-chunked bodies with the checksum in a trailer."""
    body = os.urandom(300_000)
    put = s3_tls.put_object(Bucket=bucket, Key="sum", Body=body, ChecksumAlgorithm=algorithm)
    value = put[f"Checksum{algorithm}"]
    head = s3_tls.head_object(Bucket=bucket, Key="sum", ChecksumMode="ENABLED")
    assert head[f"Checksum{algorithm}"] == value
    got = s3_tls.get_object(Bucket=bucket, Key="sum", ChecksumMode="ENABLED")
    assert got["Body"].read() == body
    assert got[f"Checksum{algorithm}"] == value


def test_default_checksum_over_http_and_tls(s3, s3_tls, bucket: str) -> None:
    for client_, key in ((s3, "plain"), (s3_tls, "tls")):
        body = os.urandom(70_000)
        put = client_.put_object(Bucket=bucket, Key=key, Body=body)
        assert put["ChecksumCRC32"]
        got = client_.get_object(Bucket=bucket, Key=key, ChecksumMode="ENABLED")
        assert got["Body"].read() == body
        assert got["ChecksumCRC32"] == put["ChecksumCRC32"]


def test_wrong_checksum_header_is_bad_digest(gateway, s3, bucket: str) -> None:
    with pytest.raises(ClientError) as excinfo:
        once(gateway).put_object(
            Bucket=bucket, Key="bad-sum", Body=b"data", ChecksumCRC32="AAAAAA=="
        )
    assert code_of(excinfo) == "BadDigest"
    with pytest.raises(ClientError):
        s3.head_object(Bucket=bucket, Key="bad-sum")


def test_missing_key(s3, bucket: str) -> None:
    with pytest.raises(ClientError) as excinfo:
        s3.get_object(Bucket=bucket, Key="nope")
    assert code_of(excinfo) == "NoSuchKey"
    assert excinfo.value.response["Error"]["Key"] == "nope"
    with pytest.raises(ClientError) as excinfo:
        s3.head_object(Bucket=bucket, Key="nope")
    assert status_of(excinfo) == 404


def test_delete_object(s3, bucket: str) -> None:
    s3.put_object(Bucket=bucket, Key="gone", Body=b"x")
    assert s3.delete_object(Bucket=bucket, Key="gone")["ResponseMetadata"]["HTTPStatusCode"] == 204
    with pytest.raises(ClientError):
        s3.head_object(Bucket=bucket, Key="gone")
    # Deleting a missing key succeeds, as in S3.
    s3.delete_object(Bucket=bucket, Key="gone")


def test_delete_objects(s3, bucket: str) -> None:
    keys = [f"d/{i}" for i in range(10)]
    for key in keys:
        s3.put_object(Bucket=bucket, Key=key, Body=b"x")
    result = s3.delete_objects(
        Bucket=bucket, Delete={"Objects": [{"Key": k} for k in [*keys[:5], "missing"]]}
    )
    assert sorted(d["Key"] for d in result["Deleted"]) == sorted([*keys[:5], "missing"])
    quiet = s3.delete_objects(
        Bucket=bucket, Delete={"Objects": [{"Key": k} for k in keys[5:]], "Quiet": True}
    )
    assert "Deleted" not in quiet
    assert s3.list_objects_v2(Bucket=bucket)["KeyCount"] == 0


def test_delete_objects_limit(s3, bucket: str) -> None:
    with pytest.raises(ClientError) as excinfo:
        s3.delete_objects(
            Bucket=bucket, Delete={"Objects": [{"Key": f"k{i}"} for i in range(1001)]}
        )
    assert code_of(excinfo) == "MalformedXML"


def test_delete_objects_reports_per_key_errors(s3, bucket: str) -> None:
    s3.put_object(Bucket=bucket, Key="ok", Body=b"x")
    result = s3.delete_objects(
        Bucket=bucket, Delete={"Objects": [{"Key": "ok"}, {"Key": "k" * 1025}]}
    )
    assert [d["Key"] for d in result["Deleted"]] == ["ok"]
    assert result["Errors"][0]["Code"] == "KeyTooLongError"


def test_copy_object_copy_and_replace(s3, bucket: str) -> None:
    s3.put_object(
        Bucket=bucket, Key="src key+%", Body=b"source", Metadata={"a": "1"}, ContentType="text/x"
    )
    copied = s3.copy_object(
        Bucket=bucket, Key="dst", CopySource={"Bucket": bucket, "Key": "src key+%"}
    )
    assert copied["CopyObjectResult"]["ETag"] == f'"{hashlib.md5(b"source").hexdigest()}"'
    got = s3.get_object(Bucket=bucket, Key="dst")
    assert got["Body"].read() == b"source"
    assert got["Metadata"] == {"a": "1"}
    assert got["ContentType"] == "text/x"
    s3.copy_object(
        Bucket=bucket,
        Key="dst2",
        CopySource={"Bucket": bucket, "Key": "src key+%"},
        MetadataDirective="REPLACE",
        Metadata={"b": "2"},
        ContentType="text/y",
    )
    got = s3.get_object(Bucket=bucket, Key="dst2")
    assert got["Metadata"] == {"b": "2"}
    assert got["ContentType"] == "text/y"


def test_copy_across_buckets_and_onto_itself(s3, bucket: str) -> None:
    other = f"{bucket}-other"[:63]
    s3.create_bucket(Bucket=other)
    s3.put_object(Bucket=bucket, Key="k", Body=b"payload")
    s3.copy_object(Bucket=other, Key="k", CopySource=f"{bucket}/k")
    assert s3.get_object(Bucket=other, Key="k")["Body"].read() == b"payload"
    with pytest.raises(ClientError) as excinfo:
        s3.copy_object(Bucket=bucket, Key="k", CopySource=f"{bucket}/k")
    assert code_of(excinfo) == "InvalidRequest"
    s3.copy_object(
        Bucket=bucket, Key="k", CopySource=f"{bucket}/k", MetadataDirective="REPLACE",
        Metadata={"new": "yes"},
    )  # fmt: skip
    assert s3.head_object(Bucket=bucket, Key="k")["Metadata"] == {"new": "yes"}


def test_copy_source_conditions(s3, bucket: str) -> None:
    etag = s3.put_object(Bucket=bucket, Key="src", Body=b"x")["ETag"]
    s3.copy_object(Bucket=bucket, Key="a", CopySource=f"{bucket}/src", CopySourceIfMatch=etag)
    for kwargs in (
        {"CopySourceIfMatch": '"ffffffffffffffffffffffffffffffff"'},
        {"CopySourceIfNoneMatch": etag},
        {"CopySourceIfUnmodifiedSince": datetime(2000, 1, 1, tzinfo=UTC)},
        {"CopySourceIfModifiedSince": datetime.now(UTC) + timedelta(days=1)},
    ):
        with pytest.raises(ClientError) as excinfo:
            s3.copy_object(Bucket=bucket, Key="b", CopySource=f"{bucket}/src", **kwargs)
        assert code_of(excinfo) == "PreconditionFailed", kwargs
    with pytest.raises(ClientError):
        s3.head_object(Bucket=bucket, Key="b")


def test_copy_missing_source(s3, bucket: str) -> None:
    with pytest.raises(ClientError) as excinfo:
        s3.copy_object(Bucket=bucket, Key="a", CopySource=f"{bucket}/missing")
    assert code_of(excinfo) == "NoSuchKey"


def test_key_too_long(gateway, s3, bucket: str) -> None:
    longest = longest_key(gateway, bucket)
    with pytest.raises(ClientError) as excinfo:
        s3.put_object(Bucket=bucket, Key="k" * (longest + 1), Body=b"x")
    assert code_of(excinfo) == "KeyTooLongError"
    s3.put_object(Bucket=bucket, Key="k" * longest, Body=b"x")
    assert s3.get_object(Bucket=bucket, Key="k" * longest)["Body"].read() == b"x"


@pytest.mark.parametrize(
    "key",
    ["with space", "plus+sign", "per%cent", "double//slash", "/leading", "ünïcødé/日本語",
     "emoji-😀", "trailing/", "a?b=c&d", "semi;colon", "tilde~", "hash#frag"],
)  # fmt: skip
def test_awkward_keys(s3, bucket: str, key: str) -> None:
    s3.put_object(Bucket=bucket, Key=key, Body=key.encode())
    assert s3.get_object(Bucket=bucket, Key=key)["Body"].read() == key.encode()
    assert [o["Key"] for o in s3.list_objects_v2(Bucket=bucket)["Contents"]] == [key]
    s3.delete_object(Bucket=bucket, Key=key)
    assert s3.list_objects_v2(Bucket=bucket)["KeyCount"] == 0


def test_upload_fileobj_and_download(s3, bucket: str, tmp_path) -> None:
    body = os.urandom(3 * 1024 * 1024)
    s3.upload_fileobj(io.BytesIO(body), bucket, "transfer")
    target = tmp_path / "out"
    s3.download_file(bucket, "transfer", str(target))
    assert target.read_bytes() == body


def test_virtual_host_style(gateway, s3, bucket: str) -> None:
    """Requests addressed as <bucket>.<base domain> reach the same bucket."""
    import requests
    from botocore.auth import S3SigV4Auth
    from botocore.awsrequest import AWSRequest
    from botocore.credentials import Credentials

    from tests.conftest import ROOT_ACCESS_KEY, ROOT_SECRET_KEY

    s3.put_object(Bucket=bucket, Key="vhost/key", Body=b"virtual")
    host = f"{bucket}.s3.localtest:{gateway.port}"
    request = AWSRequest(method="GET", url=f"http://{host}/vhost/key")
    request.headers["x-amz-content-sha256"] = "UNSIGNED-PAYLOAD"
    S3SigV4Auth(Credentials(ROOT_ACCESS_KEY, ROOT_SECRET_KEY), "s3", "us-east-1").add_auth(request)
    headers = {**dict(request.headers), "Host": host}
    response = requests.get(f"{gateway.endpoint}/vhost/key", headers=headers, timeout=10)
    assert response.status_code == 200, response.text
    assert response.content == b"virtual"


def test_reader_credential_cannot_write(gateway) -> None:
    from tests.conftest import PUBLIC_BUCKET, READER_ACCESS_KEY, READER_SECRET_KEY

    reader = client(gateway.endpoint, READER_ACCESS_KEY, READER_SECRET_KEY)
    reader.list_objects_v2(Bucket=PUBLIC_BUCKET)
    with pytest.raises(ClientError) as excinfo:
        reader.put_object(Bucket=PUBLIC_BUCKET, Key="nope", Body=b"x")
    assert code_of(excinfo) == "AccessDenied"
    with pytest.raises(ClientError) as excinfo:
        reader.create_bucket(Bucket="reader-made-this")
    assert code_of(excinfo) == "AccessDenied"
    assert [b["Name"] for b in reader.list_buckets()["Buckets"]] == [PUBLIC_BUCKET]
