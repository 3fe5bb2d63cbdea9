"""Multipart uploads through boto3 and aws-cli against a live gateway.

Covers the transfer managers' round trips (HTTP and HTTPS, where parts arrive aws-chunked with
checksum trailers), the S3 ETag and checksum rules, reads across part boundaries, the error
codes of every refusal, and the intent-log promise: every blob file is referenced by a row or
listed in `garbage`, whatever an upload's fate.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import io
import os
import uuid
import zlib
from pathlib import Path
from typing import Any

import pytest
import requests
from boto3.s3.transfer import TransferConfig
from botocore.exceptions import ClientError
from lxml import etree

from gateway.maintenance.janitor import abort_abandoned_uploads
from gateway.meta.db import create_pool
from tests.conftest import LOCAL_ONLY, GatewayProcess, db_fetch, unaccounted_blobs
from tests.rawhttp import sign_s3
from tests.s3errors import code_of, status_of
from tests.test_awscli import AwsCli, cli_env

MiB = 1024 * 1024
PART_NUMBER_MESSAGE = "Part number must be an integer between 1 and 10000, inclusive"


def split(data: bytes, size: int) -> list[bytes]:
    return [data[start : start + size] for start in range(0, len(data), size)]


def s3_etag(parts: list[bytes]) -> str:
    """S3's multipart ETag, computed independently of the gateway's code."""
    digests = b"".join(hashlib.md5(part).digest() for part in parts)
    return f'"{hashlib.md5(digests).hexdigest()}-{len(parts)}"'


def crc32_b64(data: bytes) -> str:
    return base64.b64encode(zlib.crc32(data).to_bytes(4, "big")).decode()


def start_upload(s3, bucket: str, key: str, parts: list[bytes], **create: Any) -> tuple[str, list]:
    """Create an upload and send ``parts`` as parts 1..N; (upload id, completion list)."""
    upload_id = s3.create_multipart_upload(Bucket=bucket, Key=key, **create)["UploadId"]
    algorithm = create.get("ChecksumAlgorithm")
    # Parts must use the upload's algorithm (boto3 would pick CRC32 for them otherwise).
    extra = {"ChecksumAlgorithm": algorithm} if algorithm else {}
    done = []
    for number, body in enumerate(parts, 1):
        response = s3.upload_part(
            Bucket=bucket, Key=key, UploadId=upload_id, PartNumber=number, Body=body, **extra
        )
        entry = {"PartNumber": number, "ETag": response["ETag"]}
        if algorithm:
            entry[f"Checksum{algorithm}"] = response[f"Checksum{algorithm}"]
        done.append(entry)
    return upload_id, done


def complete(s3, bucket: str, key: str, upload_id: str, parts: list, **extra: Any) -> dict:
    return s3.complete_multipart_upload(
        Bucket=bucket, Key=key, UploadId=upload_id, MultipartUpload={"Parts": parts}, **extra
    )


def multipart_object(s3, bucket: str, key: str, parts: list[bytes], **create: Any) -> dict:
    upload_id, done = start_upload(s3, bucket, key, parts, **create)
    return complete(s3, bucket, key, upload_id, done)


def garbage_keys(dsn: str) -> set[str]:
    return {row["storage_key"] for row in db_fetch(dsn, "SELECT storage_key FROM garbage")}


# Round trips with the transfer managers.


@pytest.mark.parametrize("client_name", ["s3", "s3_tls"])
def test_upload_fileobj_download_file(
    request: pytest.FixtureRequest, client_name: str, bucket: str, tmp_path: Path
) -> None:
    s3 = request.getfixturevalue(client_name)
    config = TransferConfig(multipart_threshold=5 * MiB, multipart_chunksize=5 * MiB)
    data = os.urandom(17 * MiB + 123)
    s3.upload_fileobj(io.BytesIO(data), bucket, "big.bin", Config=config)

    head = s3.head_object(Bucket=bucket, Key="big.bin")
    assert head["ContentLength"] == len(data)
    assert head["ETag"] == s3_etag(split(data, 5 * MiB))
    target = tmp_path / "big.bin"
    s3.download_file(bucket, "big.bin", str(target), Config=config)
    assert hashlib.sha256(target.read_bytes()).digest() == hashlib.sha256(data).digest()

    # The transfer manager asked for CRC32: a composite checksum of the part checksums.
    got = s3.get_object(Bucket=bucket, Key="big.bin", ChecksumMode="ENABLED")
    part_crcs = b"".join(zlib.crc32(part).to_bytes(4, "big") for part in split(data, 5 * MiB))
    assert got["ChecksumCRC32"] == f"{crc32_b64(part_crcs)}-4"
    assert got["ChecksumType"] == "COMPOSITE"
    assert got["Body"].read() == data


@pytest.fixture(params=["http", "https"])
def aws(request: pytest.FixtureRequest, tmp_path: Path, gateway: GatewayProcess) -> AwsCli:
    if request.param == "http":
        return AwsCli(gateway.endpoint, cli_env(tmp_path), None, True)
    tls_gateway: GatewayProcess = request.getfixturevalue("tls_gateway")
    ca_bundle: str = request.getfixturevalue("ca_bundle")
    return AwsCli(tls_gateway.endpoint, cli_env(tmp_path), ca_bundle, ca_bundle)


def test_awscli_cp_large_file(aws: AwsCli, s3, bucket: str, tmp_path: Path) -> None:
    # Above aws-cli's 8 MiB multipart threshold: 8 MiB parts, sent in parallel.
    data = os.urandom(64 * MiB + 5)
    source = tmp_path / "source.bin"
    source.write_bytes(data)
    aws.run("s3", "cp", str(source), f"s3://{bucket}/large.bin")
    head = s3.head_object(Bucket=bucket, Key="large.bin")
    assert head["ContentLength"] == len(data)
    assert head["ETag"] == s3_etag(split(data, 8 * MiB))

    target = tmp_path / "target.bin"
    aws.run("s3", "cp", f"s3://{bucket}/large.bin", str(target))
    assert hashlib.sha256(target.read_bytes()).digest() == hashlib.sha256(data).digest()


# Reads of multipart objects.


@pytest.fixture
def three_parts(s3, bucket: str) -> bytes:
    """An object of parts 5 MiB, 5 MiB and 1 MiB + 7 bytes, stored under "mp"."""
    parts = [os.urandom(5 * MiB), os.urandom(5 * MiB), os.urandom(MiB + 7)]
    result = multipart_object(s3, bucket, "mp", parts, ContentType="video/mp4")
    assert result["ETag"] == s3_etag(parts)
    return b"".join(parts)


@pytest.mark.parametrize(
    ("first", "last"),
    [
        (5 * MiB - 10, 5 * MiB + 9),  # a few bytes either side of the first boundary
        (5 * MiB - 1, 5 * MiB),  # the last byte of part 1 and the first of part 2
        (100, 11 * MiB + 6),  # all three parts, sent with sendfile
        (5 * MiB - 100, 10 * MiB + 100),
        (10 * MiB, 10 * MiB),  # the first byte of the last part
        (0, 0),
        (11 * MiB + 6, 11 * MiB + 6),  # the very last byte
    ],
)
def test_range_across_parts(s3, bucket: str, three_parts: bytes, first: int, last: int) -> None:
    got = s3.get_object(Bucket=bucket, Key="mp", Range=f"bytes={first}-{last}")
    assert got["ContentRange"] == f"bytes {first}-{last}/{len(three_parts)}"
    assert got["Body"].read() == three_parts[first : last + 1]


def test_suffix_and_open_ranges_and_whole(s3, bucket: str, three_parts: bytes) -> None:
    tail = s3.get_object(Bucket=bucket, Key="mp", Range="bytes=-1048590")["Body"].read()
    assert tail == three_parts[-1048590:]
    rest = s3.get_object(Bucket=bucket, Key="mp", Range=f"bytes={5 * MiB - 3}-")
    assert rest["Body"].read() == three_parts[5 * MiB - 3 :]
    whole = s3.get_object(Bucket=bucket, Key="mp")
    assert whole["ContentType"] == "video/mp4"
    assert whole["Body"].read() == three_parts


def test_part_number_get_and_head(s3, bucket: str, three_parts: bytes) -> None:
    size = len(three_parts)
    head = s3.head_object(Bucket=bucket, Key="mp", PartNumber=2)
    assert head["ResponseMetadata"]["HTTPStatusCode"] == 206
    assert head["ContentLength"] == 5 * MiB
    assert head["PartsCount"] == 3
    assert head["ContentRange"] == f"bytes {5 * MiB}-{10 * MiB - 1}/{size}"
    got = s3.get_object(Bucket=bucket, Key="mp", PartNumber=3)
    assert got["PartsCount"] == 3
    assert got["ContentRange"] == f"bytes {10 * MiB}-{size - 1}/{size}"
    assert got["Body"].read() == three_parts[10 * MiB :]
    assert got["ETag"] == head["ETag"]

    with pytest.raises(ClientError) as excinfo:
        s3.get_object(Bucket=bucket, Key="mp", PartNumber=4)
    assert code_of(excinfo) == "InvalidPartNumber"
    assert status_of(excinfo) == 416
    with pytest.raises(ClientError) as excinfo:
        s3.head_object(Bucket=bucket, Key="mp", PartNumber=10001)
    assert status_of(excinfo) == 400

    # A single-part object is one part: part 1 is all of it.
    s3.put_object(Bucket=bucket, Key="single", Body=b"0123456789")
    single = s3.get_object(Bucket=bucket, Key="single", PartNumber=1)
    assert single["ResponseMetadata"]["HTTPStatusCode"] == 206
    assert single["ContentRange"] == "bytes 0-9/10"
    assert single["Body"].read() == b"0123456789"
    assert "PartsCount" not in single
    with pytest.raises(ClientError) as excinfo:
        s3.get_object(Bucket=bucket, Key="single", PartNumber=2)
    assert code_of(excinfo) == "InvalidPartNumber"


def test_copy_object_of_multipart_source(s3, bucket: str, three_parts: bytes) -> None:
    result = s3.copy_object(Bucket=bucket, Key="copy", CopySource={"Bucket": bucket, "Key": "mp"})
    # A copy is a single-part object: its ETag is the MD5 of its bytes.
    etag = f'"{hashlib.md5(three_parts).hexdigest()}"'
    assert result["CopyObjectResult"]["ETag"] == etag
    got = s3.get_object(Bucket=bucket, Key="copy")
    assert got["Body"].read() == three_parts
    assert got["ContentType"] == "video/mp4"
    assert "PartsCount" not in s3.head_object(Bucket=bucket, Key="copy", PartNumber=1)


def test_upload_part_copy_with_ranges(s3, bucket: str, three_parts: bytes) -> None:
    small = os.urandom(3000)
    s3.put_object(Bucket=bucket, Key="small", Body=small)
    upload_id = s3.create_multipart_upload(Bucket=bucket, Key="assembled")["UploadId"]
    # Part 1 crosses the boundary between the source's parts 1 and 2.
    first = s3.upload_part_copy(
        Bucket=bucket, Key="assembled", UploadId=upload_id, PartNumber=1,
        CopySource={"Bucket": bucket, "Key": "mp"},
        CopySourceRange=f"bytes={MiB}-{6 * MiB + 99}",
    )["CopyPartResult"]  # fmt: skip
    second = s3.upload_part_copy(
        Bucket=bucket, Key="assembled", UploadId=upload_id, PartNumber=2,
        CopySource={"Bucket": bucket, "Key": "small"}, CopySourceRange="bytes=10-1009",
        CopySourceIfMatch=f'"{hashlib.md5(small).hexdigest()}"',
    )["CopyPartResult"]  # fmt: skip
    expected = [three_parts[MiB : 6 * MiB + 100], small[10:1010]]
    assert first["ETag"] == f'"{hashlib.md5(expected[0]).hexdigest()}"'

    with pytest.raises(ClientError) as excinfo:
        s3.upload_part_copy(
            Bucket=bucket, Key="assembled", UploadId=upload_id, PartNumber=3,
            CopySource={"Bucket": bucket, "Key": "small"}, CopySourceRange="bytes=10-3000",
        )  # fmt: skip
    assert code_of(excinfo) == "InvalidArgument"
    with pytest.raises(ClientError) as excinfo:
        s3.upload_part_copy(
            Bucket=bucket, Key="assembled", UploadId=upload_id, PartNumber=3,
            CopySource={"Bucket": bucket, "Key": "small"}, CopySourceIfMatch='"nope"',
        )  # fmt: skip
    assert code_of(excinfo) == "PreconditionFailed"

    parts = [
        {"PartNumber": 1, "ETag": first["ETag"]},
        {"PartNumber": 2, "ETag": second["ETag"]},
    ]
    result = complete(s3, bucket, "assembled", upload_id, parts)
    assert result["ETag"] == s3_etag(expected)
    assert s3.get_object(Bucket=bucket, Key="assembled")["Body"].read() == b"".join(expected)


# Checksums and metadata.


def test_metadata_and_sha256_composite_checksum(s3, bucket: str) -> None:
    parts = [os.urandom(5 * MiB), os.urandom(1234)]
    upload_id, done = start_upload(
        s3, bucket, "doc", parts, ChecksumAlgorithm="SHA256",
        ContentType="text/plain", Metadata={"owner": "zoe"}, CacheControl="no-cache",
    )  # fmt: skip
    assert all("ChecksumSHA256" in entry for entry in done)
    result = complete(s3, bucket, "doc", upload_id, done)
    part_sums = b"".join(hashlib.sha256(part).digest() for part in parts)
    expected = base64.b64encode(hashlib.sha256(part_sums).digest()).decode() + "-2"
    assert result["ChecksumSHA256"] == expected
    head = s3.head_object(Bucket=bucket, Key="doc", ChecksumMode="ENABLED")
    assert head["ChecksumSHA256"] == expected
    assert head["ContentType"] == "text/plain"
    assert head["Metadata"] == {"owner": "zoe"}
    assert head["CacheControl"] == "no-cache"


def test_full_object_crc32(s3, bucket: str) -> None:
    parts = [os.urandom(5 * MiB), os.urandom(777)]
    upload_id, done = start_upload(
        s3, bucket, "full", parts, ChecksumAlgorithm="CRC32", ChecksumType="FULL_OBJECT"
    )
    result = complete(s3, bucket, "full", upload_id, done)
    assert result["ChecksumCRC32"] == crc32_b64(b"".join(parts))
    assert result["ChecksumType"] == "FULL_OBJECT"
    # botocore verifies a full-object checksum against the body it receives.
    got = s3.get_object(Bucket=bucket, Key="full", ChecksumMode="ENABLED")
    assert got["ChecksumCRC32"] == crc32_b64(b"".join(parts))
    assert got["Body"].read() == b"".join(parts)


def test_part_checksum_mismatch_is_refused(s3, bucket: str) -> None:
    upload_id = s3.create_multipart_upload(Bucket=bucket, Key="k", ChecksumAlgorithm="SHA256")[
        "UploadId"
    ]
    with pytest.raises(ClientError) as excinfo:
        s3.upload_part(
            Bucket=bucket, Key="k", UploadId=upload_id, PartNumber=1, Body=b"data",
            ChecksumSHA256=base64.b64encode(hashlib.sha256(b"other").digest()).decode(),
        )  # fmt: skip
    assert code_of(excinfo) == "BadDigest"
    with pytest.raises(ClientError) as excinfo:
        s3.upload_part(
            Bucket=bucket, Key="k", UploadId=upload_id, PartNumber=1, Body=b"data",
            ChecksumAlgorithm="CRC32C",
        )  # fmt: skip
    assert code_of(excinfo) == "InvalidRequest"


def test_conditional_complete(s3, bucket: str) -> None:
    s3.put_object(Bucket=bucket, Key="taken", Body=b"first")
    upload_id, done = start_upload(s3, bucket, "taken", [b"second"])
    with pytest.raises(ClientError) as excinfo:
        complete(s3, bucket, "taken", upload_id, done, IfNoneMatch="*")
    assert code_of(excinfo) == "PreconditionFailed"
    # The refusal left the upload intact: it can still complete unconditionally.
    complete(s3, bucket, "taken", upload_id, done)
    assert s3.get_object(Bucket=bucket, Key="taken")["Body"].read() == b"second"


def test_repeated_complete_answers_as_the_first(s3, bucket: str) -> None:
    """A client that lost the answer to its CompleteMultipartUpload retries it: the repeat
    answers 200 with the first result while the object it made is the current one, then
    NoSuchUpload once that object is replaced or deleted."""
    upload_id, done = start_upload(s3, bucket, "retried", [b"made"], ChecksumAlgorithm="CRC32")
    first = complete(s3, bucket, "retried", upload_id, done)
    again = complete(s3, bucket, "retried", upload_id, done)
    fields = ("ETag", "ChecksumCRC32", "ChecksumType", "Key", "Bucket", "Location")
    assert {name: again.get(name) for name in fields} == {name: first.get(name) for name in fields}
    assert s3.get_object(Bucket=bucket, Key="retried")["Body"].read() == b"made"
    # The id belongs to that key only.
    with pytest.raises(ClientError) as excinfo:
        complete(s3, bucket, "other", upload_id, done)
    assert code_of(excinfo) == "NoSuchUpload"
    # Aborting a completed upload is no retry of anything.
    with pytest.raises(ClientError) as excinfo:
        s3.abort_multipart_upload(Bucket=bucket, Key="retried", UploadId=upload_id)
    assert code_of(excinfo) == "NoSuchUpload"
    s3.put_object(Bucket=bucket, Key="retried", Body=b"replaced")
    with pytest.raises(ClientError) as excinfo:
        complete(s3, bucket, "retried", upload_id, done)
    assert code_of(excinfo) == "NoSuchUpload"
    assert s3.get_object(Bucket=bucket, Key="retried")["Body"].read() == b"replaced"
    upload_id, done = start_upload(s3, bucket, "deleted", [b"x"])
    complete(s3, bucket, "deleted", upload_id, done)
    s3.delete_object(Bucket=bucket, Key="deleted")
    with pytest.raises(ClientError) as excinfo:
        complete(s3, bucket, "deleted", upload_id, done)
    assert code_of(excinfo) == "NoSuchUpload"


# Refusals.


def test_wrong_part_etag_is_invalid_part(s3, bucket: str) -> None:
    upload_id, done = start_upload(s3, bucket, "k", [os.urandom(5 * MiB), b"tail"])
    done[1]["ETag"] = '"' + "0" * 32 + '"'
    with pytest.raises(ClientError) as excinfo:
        complete(s3, bucket, "k", upload_id, done)
    assert code_of(excinfo) == "InvalidPart"
    missing = [done[0], {"PartNumber": 3, "ETag": done[0]["ETag"]}]
    with pytest.raises(ClientError) as excinfo:
        complete(s3, bucket, "k", upload_id, missing)
    assert code_of(excinfo) == "InvalidPart"


def test_parts_out_of_order(s3, bucket: str) -> None:
    upload_id, done = start_upload(s3, bucket, "k", [os.urandom(5 * MiB), os.urandom(5 * MiB)])
    with pytest.raises(ClientError) as excinfo:
        complete(s3, bucket, "k", upload_id, list(reversed(done)))
    assert code_of(excinfo) == "InvalidPartOrder"
    with pytest.raises(ClientError) as excinfo:
        complete(s3, bucket, "k", upload_id, [done[0], done[0]])
    assert code_of(excinfo) == "InvalidPartOrder"


def test_small_middle_part_is_entity_too_small(s3, bucket: str) -> None:
    parts = [os.urandom(5 * MiB), os.urandom(5 * MiB - 1), b"last"]
    upload_id, done = start_upload(s3, bucket, "k", parts)
    with pytest.raises(ClientError) as excinfo:
        complete(s3, bucket, "k", upload_id, done)
    assert code_of(excinfo) == "EntityTooSmall"
    # Leaving the small part out is allowed; parts not listed are discarded.
    result = complete(s3, bucket, "k", upload_id, [done[0], done[2]])
    assert result["ETag"] == s3_etag([parts[0], parts[2]])
    assert s3.get_object(Bucket=bucket, Key="k")["Body"].read() == parts[0] + parts[2]


def test_no_such_upload(s3, bucket: str) -> None:
    upload_id, done = start_upload(s3, bucket, "k", [b"only"])
    s3.abort_multipart_upload(Bucket=bucket, Key="k", UploadId=upload_id)
    for unknown in [upload_id, str(uuid.uuid4()), "not-an-upload-id"]:
        with pytest.raises(ClientError) as excinfo:
            complete(s3, bucket, "k", unknown, done)
        assert code_of(excinfo) == "NoSuchUpload"
        with pytest.raises(ClientError) as excinfo:
            s3.abort_multipart_upload(Bucket=bucket, Key="k", UploadId=unknown)
        assert code_of(excinfo) == "NoSuchUpload"
    with pytest.raises(ClientError) as excinfo:
        s3.upload_part(Bucket=bucket, Key="k", UploadId=upload_id, PartNumber=2, Body=b"x")
    assert code_of(excinfo) == "NoSuchUpload"

    # An upload id only works with its own key (a completed one: see
    # test_repeated_complete_answers_as_the_first).
    upload_id, done = start_upload(s3, bucket, "k", [b"only"])
    with pytest.raises(ClientError) as excinfo:
        complete(s3, bucket, "other-key", upload_id, done)
    assert code_of(excinfo) == "NoSuchUpload"


@pytest.mark.parametrize("part_number", [0, 10001])
def test_part_number_out_of_range(s3, bucket: str, part_number: int) -> None:
    upload_id = s3.create_multipart_upload(Bucket=bucket, Key="k")["UploadId"]
    with pytest.raises(ClientError) as excinfo:
        s3.upload_part(
            Bucket=bucket, Key="k", UploadId=upload_id, PartNumber=part_number, Body=b"x"
        )
    assert code_of(excinfo) == "InvalidArgument"
    assert excinfo.value.response["Error"]["Message"] == PART_NUMBER_MESSAGE


# Listings.


def test_list_parts_pagination(s3, bucket: str) -> None:
    upload_id = s3.create_multipart_upload(Bucket=bucket, Key="k")["UploadId"]
    numbers = [1, 2, 4, 7, 9]
    for number in numbers:
        s3.upload_part(
            Bucket=bucket, Key="k", UploadId=upload_id, PartNumber=number, Body=b"p" * number
        )
    page = s3.list_parts(Bucket=bucket, Key="k", UploadId=upload_id, MaxParts=2)
    assert [part["PartNumber"] for part in page["Parts"]] == [1, 2]
    assert page["IsTruncated"] is True
    assert page["NextPartNumberMarker"] == 2
    page = s3.list_parts(Bucket=bucket, Key="k", UploadId=upload_id, MaxParts=2, PartNumberMarker=2)
    assert [part["PartNumber"] for part in page["Parts"]] == [4, 7]
    assert [part["Size"] for part in page["Parts"]] == [4, 7]
    page = s3.list_parts(Bucket=bucket, Key="k", UploadId=upload_id, MaxParts=2, PartNumberMarker=7)
    assert [part["PartNumber"] for part in page["Parts"]] == [9]
    assert page["IsTruncated"] is False

    paginator = s3.get_paginator("list_parts")
    pages = paginator.paginate(
        Bucket=bucket, Key="k", UploadId=upload_id, PaginationConfig={"PageSize": 2}
    )
    listed = [part for page in pages for part in page["Parts"]]
    assert [part["PartNumber"] for part in listed] == numbers
    assert listed[2]["ETag"] == f'"{hashlib.md5(b"pppp").hexdigest()}"'


def test_list_multipart_uploads_pagination(s3, bucket: str) -> None:
    keys = ["a/1", "a/2", "b", "b", "c/x/y", "d"]
    ids = [s3.create_multipart_upload(Bucket=bucket, Key=key)["UploadId"] for key in keys]
    expected = list(zip(keys, ids, strict=True))

    seen = []
    marker: dict[str, str] = {}
    while True:
        page = s3.list_multipart_uploads(Bucket=bucket, MaxUploads=2, **marker)
        seen += [(upload["Key"], upload["UploadId"]) for upload in page["Uploads"]]
        if not page["IsTruncated"]:
            break
        marker = {"KeyMarker": page["NextKeyMarker"], "UploadIdMarker": page["NextUploadIdMarker"]}
    # Key order, and initiation order within a key.
    assert seen == expected

    top = s3.list_multipart_uploads(Bucket=bucket, Delimiter="/")
    assert [upload["Key"] for upload in top["Uploads"]] == ["b", "b", "d"]
    assert [prefix["Prefix"] for prefix in top["CommonPrefixes"]] == ["a/", "c/"]
    inside = s3.list_multipart_uploads(Bucket=bucket, Prefix="a/")
    assert [upload["Key"] for upload in inside["Uploads"]] == ["a/1", "a/2"]

    paginator = s3.get_paginator("list_multipart_uploads")
    pages = list(paginator.paginate(Bucket=bucket, Delimiter="/", PaginationConfig={"PageSize": 1}))
    assert [u["Key"] for page in pages for u in page.get("Uploads", [])] == ["b", "b", "d"]
    assert [p["Prefix"] for page in pages for p in page.get("CommonPrefixes", [])] == ["a/", "c/"]

    s3.abort_multipart_upload(Bucket=bucket, Key="b", UploadId=ids[2])
    after = s3.list_multipart_uploads(Bucket=bucket, KeyMarker="a/2")
    assert [(u["Key"], u["UploadId"]) for u in after["Uploads"]] == expected[3:]


def test_list_multipart_uploads_encoding_type(gateway: GatewayProcess, s3, bucket: str) -> None:
    """url is the one encoding-type, as for ListObjects: any other is InvalidArgument."""
    s3.create_multipart_upload(Bucket=bucket, Key="a b+c")
    listed = s3.list_multipart_uploads(Bucket=bucket, EncodingType="url")
    # Asked for explicitly, boto3 leaves the keys as sent: url encoded.
    assert [upload["Key"] for upload in listed["Uploads"]] == ["a%20b%2Bc"]
    url = f"{gateway.endpoint}/{bucket}?uploads&encoding-type=base64"
    refused = requests.get(url, headers=sign_s3("GET", url), timeout=30)
    assert refused.status_code == 400, refused.text
    document = etree.fromstring(refused.content)
    assert document.findtext("Code") == "InvalidArgument"
    assert document.findtext("ArgumentName") == "encoding-type"
    assert document.findtext("ArgumentValue") == "base64"


# The intent log: blob files of the local profile and the garbage log of them.


@LOCAL_ONLY
def test_abort_and_replace_leave_no_unlisted_blob(
    s3, bucket: str, gateway: GatewayProcess, gateway_dsn: str
) -> None:
    upload_id, _ = start_upload(s3, bucket, "k", [b"one", b"two", b"three"])
    replaced = db_fetch(
        gateway_dsn,
        "SELECT storage_key FROM upload_parts WHERE upload_id = $1 AND part_number = 2",
        uuid.UUID(upload_id),
    )[0]["storage_key"]
    # Uploading a part number again replaces the part: the old blob becomes garbage.
    s3.upload_part(Bucket=bucket, Key="k", UploadId=upload_id, PartNumber=2, Body=b"TWO")
    assert replaced in garbage_keys(gateway_dsn)
    parts = db_fetch(
        gateway_dsn,
        "SELECT storage_key FROM upload_parts WHERE upload_id = $1",
        uuid.UUID(upload_id),
    )
    assert len(parts) == 3

    s3.abort_multipart_upload(Bucket=bucket, Key="k", UploadId=upload_id)
    assert {row["storage_key"] for row in parts} <= garbage_keys(gateway_dsn)
    assert s3.list_multipart_uploads(Bucket=bucket).get("Uploads", []) == []
    assert unaccounted_blobs(gateway, gateway_dsn) == []


@LOCAL_ONLY
def test_overwrite_and_delete_retire_every_part(
    s3, bucket: str, gateway: GatewayProcess, gateway_dsn: str
) -> None:
    def chunk_keys() -> set[str]:
        rows = db_fetch(
            gateway_dsn,
            "SELECT c.storage_key FROM object_chunks c JOIN objects o USING (version_id)"
            " WHERE o.bucket = $1 AND o.key = 'k'",
            bucket,
        )
        return {row["storage_key"] for row in rows}

    multipart_object(s3, bucket, "k", [os.urandom(5 * MiB), b"tail"])
    first = chunk_keys()
    assert len(first) == 2
    s3.put_object(Bucket=bucket, Key="k", Body=b"plain now")
    assert first <= garbage_keys(gateway_dsn)
    assert chunk_keys() == set()

    multipart_object(s3, bucket, "k", [os.urandom(5 * MiB), b"tail"])
    second = chunk_keys()
    s3.delete_object(Bucket=bucket, Key="k")
    assert second <= garbage_keys(gateway_dsn)
    assert unaccounted_blobs(gateway, gateway_dsn) == []


@LOCAL_ONLY
def test_janitor_aborts_abandoned_uploads(s3, bucket: str, gateway_dsn: str) -> None:
    old_id, _ = start_upload(s3, bucket, "old", [b"stale part"])
    new_id, _ = start_upload(s3, bucket, "new", [b"fresh part"])
    (part,) = db_fetch(
        gateway_dsn, "SELECT storage_key FROM upload_parts WHERE upload_id = $1", uuid.UUID(old_id)
    )
    db_fetch(
        gateway_dsn,
        "UPDATE uploads SET initiated = now() - interval '2 days' WHERE upload_id = $1",
        uuid.UUID(old_id),
    )

    async def run() -> int:
        pool = await create_pool(gateway_dsn, 1, 2)
        try:
            return await abort_abandoned_uploads(pool, {}, 86400)
        finally:
            await pool.close()

    assert asyncio.run(run()) >= 1
    assert part["storage_key"] in garbage_keys(gateway_dsn)
    listed = s3.list_multipart_uploads(Bucket=bucket).get("Uploads", [])
    assert [upload["UploadId"] for upload in listed] == [new_id]
