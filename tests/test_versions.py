"""versionId on every operation that takes one, while buckets are unversioned.

As on an unversioned S3 bucket, "null" addresses the current object and any other version id is
refused: 400 InvalidArgument when no version could have that id, 404 NoSuchVersion when one
could. Above all, a request naming another version never reads, deletes or copies the current
object in its place: each test checks the object is still there, byte for byte, afterwards.
Bodies are above limits.inline_max_size, so the objects are blobs (or upstream objects).
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable
from typing import Any
from urllib.parse import quote

import pytest
import requests
from botocore.exceptions import ClientError

from tests.conftest import S3Client, db_fetch
from tests.s3errors import error_of
from tests.test_variants import error_code, image_of, signed
from tests.unit.variants import images

BODY_SIZE = 20_000
KEY = "docs/report.bin"


def internal_version(dsn: str, bucket: str, key: str) -> str:
    """The version_id of the object's row: an id the gateway keeps but never hands out."""
    rows = db_fetch(
        dsn, "SELECT version_id FROM objects WHERE bucket = $1 AND key = $2", bucket, key
    )
    return str(rows[0]["version_id"])


def fixed(version_id: str) -> Callable[[str, str, str], str]:
    return lambda dsn, bucket, key: version_id


# An id of the shape AWS hands out: not one this gateway could have issued.
AWS_SHAPED = "3HL4kqtJlcpXroDTDmJ+rmSpXd3dIbrHY"

# name -> (the version id, given the gateway's database, bucket and key; status; error code)
OTHER_VERSIONS: dict[str, tuple[Callable[[str, str, str], str], int, str]] = {
    "malformed": (fixed(AWS_SHAPED), 400, "InvalidArgument"),
    "empty": (fixed(""), 400, "InvalidArgument"),
    "unknown": (lambda dsn, bucket, key: str(uuid.uuid4()), 404, "NoSuchVersion"),
    "row-version": (internal_version, 404, "NoSuchVersion"),
}


@pytest.fixture(params=OTHER_VERSIONS, ids=list(OTHER_VERSIONS))
def other_version(request: pytest.FixtureRequest) -> tuple[Callable[..., str], int, str]:
    return OTHER_VERSIONS[request.param]


def put_body(s3: S3Client, bucket: str, key: str = KEY) -> bytes:
    body = os.urandom(BODY_SIZE)
    s3.put_object(Bucket=bucket, Key=key, Body=body)
    return body


def assert_intact(s3: S3Client, bucket: str, body: bytes, key: str = KEY) -> None:
    assert s3.get_object(Bucket=bucket, Key=key)["Body"].read() == body
    listed = s3.list_objects_v2(Bucket=bucket, Prefix=key).get("Contents", [])
    assert [entry["Key"] for entry in listed] == [key]


def test_delete_naming_another_version_deletes_nothing(
    s3: S3Client, bucket: str, gateway_dsn: str, other_version: tuple[Any, int, str]
) -> None:
    make, status, code = other_version
    body = put_body(s3, bucket)
    version_id = make(gateway_dsn, bucket, KEY)
    with pytest.raises(ClientError) as excinfo:
        s3.delete_object(Bucket=bucket, Key=KEY, VersionId=version_id)
    assert error_of(excinfo) == (status, code)
    if code == "NoSuchVersion":
        error = excinfo.value.response["Error"]
        assert (error["Key"], error["VersionId"]) == (KEY, version_id)
    assert_intact(s3, bucket, body)


def test_delete_of_the_null_version_deletes_the_object(s3: S3Client, bucket: str) -> None:
    put_body(s3, bucket)
    s3.delete_object(Bucket=bucket, Key=KEY, VersionId="null")
    with pytest.raises(ClientError) as excinfo:
        s3.head_object(Bucket=bucket, Key=KEY)
    assert error_of(excinfo)[0] == 404
    assert s3.list_objects_v2(Bucket=bucket).get("Contents", []) == []


def test_reads_naming_another_version_read_nothing(
    s3: S3Client, bucket: str, gateway_dsn: str, other_version: tuple[Any, int, str]
) -> None:
    make, status, code = other_version
    body = put_body(s3, bucket)
    version_id = make(gateway_dsn, bucket, KEY)
    for extra in ({}, {"PartNumber": 1}, {"Range": "bytes=0-99"}):
        with pytest.raises(ClientError) as excinfo:
            s3.get_object(Bucket=bucket, Key=KEY, VersionId=version_id, **extra)
        assert error_of(excinfo) == (status, code), extra
        with pytest.raises(ClientError) as excinfo:
            s3.head_object(Bucket=bucket, Key=KEY, VersionId=version_id, **extra)
        assert error_of(excinfo)[0] == status, extra
    assert_intact(s3, bucket, body)


def test_reads_of_the_null_version_read_the_object(s3: S3Client, bucket: str) -> None:
    body = put_body(s3, bucket)
    got = s3.get_object(Bucket=bucket, Key=KEY, VersionId="null")
    assert got["Body"].read() == body
    assert s3.head_object(Bucket=bucket, Key=KEY, VersionId="null")["ContentLength"] == BODY_SIZE
    part = s3.get_object(Bucket=bucket, Key=KEY, VersionId="null", PartNumber=1)
    assert part["Body"].read() == body


def test_another_version_of_a_missing_key_is_refused_too(s3: S3Client, bucket: str) -> None:
    with pytest.raises(ClientError) as excinfo:
        s3.get_object(Bucket=bucket, Key="nothing-here", VersionId=str(uuid.uuid4()))
    assert error_of(excinfo) == (404, "NoSuchVersion")
    with pytest.raises(ClientError) as excinfo:
        s3.get_object(Bucket=bucket, Key="nothing-here", VersionId="null")
    assert error_of(excinfo) == (404, "NoSuchKey")


def test_access_is_decided_before_the_version(gateway, bucket: str, s3: S3Client) -> None:
    """An anonymous client learns nothing about a private bucket from a version id."""
    put_body(s3, bucket)
    for version_id in ("bogus", str(uuid.uuid4())):
        url = f"{gateway.endpoint}/{bucket}/{KEY}?versionId={version_id}"
        response = requests.get(url, timeout=30)
        assert (response.status_code, error_code(response)) == (403, "AccessDenied")


def test_variants_naming_another_version_render_nothing(
    gateway, s3: S3Client, bucket: str, gateway_dsn: str, other_version: tuple[Any, int, str]
) -> None:
    make, status, code = other_version
    s3.put_object(Bucket=bucket, Key="cat.jpg", Body=images.jpeg_with_orientation(1))
    version_id = make(gateway_dsn, bucket, "cat.jpg")
    for name in ("small", "first-original"):
        path = f"/{bucket}/cat.jpg?variant={name}&versionId={quote(version_id, safe='')}"
        response = signed(gateway.endpoint, "GET", path)
        assert (response.status_code, error_code(response)) == (status, code), name
        assert signed(gateway.endpoint, "HEAD", path).status_code == status, name
    rendered = db_fetch(
        gateway_dsn,
        "SELECT 1 FROM derivatives JOIN objects USING (version_id) WHERE bucket = $1",
        bucket,
    )
    assert rendered == []
    null = signed(gateway.endpoint, "GET", f"/{bucket}/cat.jpg?variant=small&versionId=null")
    assert image_of(null).width == 100


def test_delete_objects_refuses_other_versions_key_by_key(
    s3: S3Client, bucket: str, gateway_dsn: str
) -> None:
    keys = ("malformed", "unknown", "row", "null", "plain")
    bodies = {key: put_body(s3, bucket, key) for key in keys}
    row_version = internal_version(gateway_dsn, bucket, "row")
    unknown = str(uuid.uuid4())
    result = s3.delete_objects(
        Bucket=bucket,
        Delete={
            "Objects": [
                {"Key": "malformed", "VersionId": "not a version"},
                {"Key": "unknown", "VersionId": unknown},
                {"Key": "row", "VersionId": row_version},
                {"Key": "null", "VersionId": "null"},
                {"Key": "plain"},
            ]
        },
    )
    errors = {e["Key"]: (e["Code"], e.get("VersionId")) for e in result.get("Errors", [])}
    assert errors == {
        "malformed": ("InvalidArgument", "not a version"),
        "unknown": ("NoSuchVersion", unknown),
        "row": ("NoSuchVersion", row_version),
    }
    deleted = {e["Key"]: e.get("VersionId") for e in result["Deleted"]}
    assert deleted == {"null": "null", "plain": None}
    for key in ("malformed", "unknown", "row"):
        assert_intact(s3, bucket, bodies[key], key)
    listed = [entry["Key"] for entry in s3.list_objects_v2(Bucket=bucket)["Contents"]]
    assert listed == ["malformed", "row", "unknown"]


def test_copy_from_another_source_version_copies_nothing(
    s3: S3Client, bucket: str, gateway_dsn: str, other_version: tuple[Any, int, str]
) -> None:
    make, status, code = other_version
    body = put_body(s3, bucket)
    source = {"Bucket": bucket, "Key": KEY, "VersionId": make(gateway_dsn, bucket, KEY)}
    with pytest.raises(ClientError) as excinfo:
        s3.copy_object(Bucket=bucket, Key="copy", CopySource=source)
    assert error_of(excinfo) == (status, code)
    with pytest.raises(ClientError) as excinfo:
        s3.head_object(Bucket=bucket, Key="copy")
    assert error_of(excinfo)[0] == 404

    upload = s3.create_multipart_upload(Bucket=bucket, Key="assembled")["UploadId"]
    with pytest.raises(ClientError) as excinfo:
        s3.upload_part_copy(
            Bucket=bucket, Key="assembled", UploadId=upload, PartNumber=1, CopySource=source
        )
    assert error_of(excinfo) == (status, code)
    with pytest.raises(ClientError) as excinfo:
        s3.upload_part_copy(
            Bucket=bucket,
            Key="assembled",
            UploadId=upload,
            PartNumber=1,
            CopySource=source,
            CopySourceRange="bytes=0-99",
        )
    assert error_of(excinfo) == (status, code)
    assert s3.list_parts(Bucket=bucket, Key="assembled", UploadId=upload).get("Parts", []) == []
    s3.abort_multipart_upload(Bucket=bucket, Key="assembled", UploadId=upload)
    assert_intact(s3, bucket, body)


def test_copy_from_the_null_source_version_copies_the_object(s3: S3Client, bucket: str) -> None:
    body = put_body(s3, bucket)
    source = {"Bucket": bucket, "Key": KEY, "VersionId": "null"}
    s3.copy_object(Bucket=bucket, Key="copy", CopySource=source)
    assert s3.get_object(Bucket=bucket, Key="copy")["Body"].read() == body

    upload = s3.create_multipart_upload(Bucket=bucket, Key="assembled")["UploadId"]
    part = s3.upload_part_copy(
        Bucket=bucket, Key="assembled", UploadId=upload, PartNumber=1, CopySource=source
    )
    s3.complete_multipart_upload(
        Bucket=bucket,
        Key="assembled",
        UploadId=upload,
        MultipartUpload={"Parts": [{"PartNumber": 1, "ETag": part["CopyPartResult"]["ETag"]}]},
    )
    assert s3.get_object(Bucket=bucket, Key="assembled")["Body"].read() == body
