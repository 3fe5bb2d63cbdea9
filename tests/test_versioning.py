"""S3 versioning through live gateways: PutBucketVersioning, versions kept by overwrites and
deletes, delete markers, versionId on reads, deletes and copies, ListObjectVersions, the
Suspended state's null version, with boto3 and aws-cli.

Tests where storage matters (the bytes of a replaced version must survive) run on every
profile; protocol-only ones on the local profile.
"""

from __future__ import annotations

import os
import uuid
from pathlib import Path
from typing import Any
from urllib.parse import quote
from xml.etree import ElementTree

import pytest
import requests
from botocore.exceptions import ClientError

from tests.conftest import (
    LOCAL,
    PUBLIC_BUCKET,
    READER_ACCESS_KEY,
    READER_SECRET_KEY,
    VERSIONED_BUCKET,
    S3Client,
    client,
    db_fetch,
    on_profile,
)
from tests.test_awscli import AwsCli, cli_env
from tests.test_variants import error_code, image_of, signed
from tests.unit.variants import images

# Above limits.inline_max_size: the versions are blobs (or upstream objects).
BODY_SIZE = 20_000
LOCAL_ONLY = on_profile(LOCAL)
NS = "{http://s3.amazonaws.com/doc/2006-03-01/}"


def enable(s3: S3Client, bucket: str, status: str = "Enabled") -> None:
    s3.put_bucket_versioning(Bucket=bucket, VersioningConfiguration={"Status": status})


def put(s3: S3Client, bucket: str, key: str, body: bytes | None = None) -> tuple[str, bytes]:
    body = os.urandom(BODY_SIZE) if body is None else body
    return s3.put_object(Bucket=bucket, Key=key, Body=body).get("VersionId", ""), body


def read(s3: S3Client, bucket: str, key: str, version_id: str | None = None) -> bytes:
    extra = {"VersionId": version_id} if version_id else {}
    return s3.get_object(Bucket=bucket, Key=key, **extra)["Body"].read()


def versions_page(s3: S3Client, bucket: str, **query: str) -> ElementTree.Element:
    """A ListObjectVersions document as sent (boto3 splits its one sequence of versions and
    delete markers into two lists, losing their order)."""
    encoded = "".join(f"&{name}={quote(value, safe='')}" for name, value in query.items())
    response = signed(s3.meta.endpoint_url, "GET", f"/{bucket}?versions{encoded}")
    assert response.status_code == 200, response.text
    return ElementTree.fromstring(response.content)


def entries(document: ElementTree.Element) -> list[tuple[str, str, bool, bool]]:
    """(key, version id, is latest, is a delete marker) of each entry, in document order."""
    found = []
    for element in document:
        tag = element.tag.removeprefix(NS)
        if tag in ("Version", "DeleteMarker"):
            found.append(
                (
                    text(element, "Key"),
                    text(element, "VersionId"),
                    text(element, "IsLatest") == "true",
                    tag == "DeleteMarker",
                )
            )
    return found


def text(element: ElementTree.Element, name: str) -> str:
    return element.findtext(NS + name) or ""


def versions_of(s3: S3Client, bucket: str, **query: str) -> list[tuple[str, str, bool, bool]]:
    return entries(versions_page(s3, bucket, **query))


def missing(call: Any, **kw: Any) -> ClientError:
    with pytest.raises(ClientError) as excinfo:
        call(**kw)
    return excinfo.value


def test_versions_survive_overwrites_and_deletes(s3: S3Client, bucket: str) -> None:
    """On every profile: each overwrite keeps the bytes it replaces, a delete writes a marker,
    and removing versions brings the newest remaining one back."""
    assert "Status" not in s3.get_bucket_versioning(Bucket=bucket)
    enable(s3, bucket)
    assert s3.get_bucket_versioning(Bucket=bucket)["Status"] == "Enabled"
    key = "docs/report.bin"
    v1, body1 = put(s3, bucket, key)
    v2, body2 = put(s3, bucket, key)
    assert v1 != v2 and "null" not in (v1, v2)
    assert read(s3, bucket, key) == body2
    assert read(s3, bucket, key, v1) == body1
    head = s3.head_object(Bucket=bucket, Key=key, VersionId=v1)
    assert (head["VersionId"], head["ContentLength"]) == (v1, BODY_SIZE)
    ranged = s3.get_object(Bucket=bucket, Key=key, VersionId=v1, Range="bytes=10-19")
    assert ranged["Body"].read() == body1[10:20]

    deleted = s3.delete_object(Bucket=bucket, Key=key)
    marker = deleted["VersionId"]
    assert deleted["DeleteMarker"] is True
    error = missing(s3.get_object, Bucket=bucket, Key=key)
    assert error_of_client(error) == (404, "NoSuchKey")
    headers = error.response["ResponseMetadata"]["HTTPHeaders"]
    assert (headers["x-amz-delete-marker"], headers["x-amz-version-id"]) == ("true", marker)
    error = missing(s3.get_object, Bucket=bucket, Key=key, VersionId=marker)
    assert error_of_client(error) == (405, "MethodNotAllowed")
    assert error.response["ResponseMetadata"]["HTTPHeaders"]["x-amz-delete-marker"] == "true"
    assert s3.list_objects_v2(Bucket=bucket).get("Contents", []) == []
    assert versions_of(s3, bucket) == [
        (key, marker, True, True),
        (key, v2, False, False),
        (key, v1, False, False),
    ]
    assert read(s3, bucket, key, v2) == body2

    # Deleting the marker restores the newest version; deleting that one, the one before.
    restored = s3.delete_object(Bucket=bucket, Key=key, VersionId=marker)
    assert (restored["VersionId"], restored["DeleteMarker"]) == (marker, True)
    assert read(s3, bucket, key) == body2
    gone = s3.delete_object(Bucket=bucket, Key=key, VersionId=v2)
    assert gone["VersionId"] == v2 and "DeleteMarker" not in gone
    assert read(s3, bucket, key) == body1
    assert [e["Key"] for e in s3.list_objects_v2(Bucket=bucket)["Contents"]] == [key]
    assert versions_of(s3, bucket) == [(key, v1, True, False)]
    error = missing(s3.get_object, Bucket=bucket, Key=key, VersionId=v2)
    assert error_of_client(error) == (404, "NoSuchVersion")

    # An overwrite after the restore still keeps what it replaces.
    v3, body3 = put(s3, bucket, key)
    assert read(s3, bucket, key, v1) == body1 and read(s3, bucket, key) == body3
    s3.delete_object(Bucket=bucket, Key=key, VersionId=v1)
    s3.delete_object(Bucket=bucket, Key=key, VersionId=v3)
    assert versions_of(s3, bucket) == []
    s3.delete_bucket(Bucket=bucket)


def error_of_client(error: ClientError) -> tuple[int, str]:
    return error.response["ResponseMetadata"]["HTTPStatusCode"], error.response["Error"]["Code"]


def test_multipart_and_copies_of_versions(s3: S3Client, bucket: str) -> None:
    """On every profile: a completed upload and a copy are versions like any write; a copy or
    a part copy may take any version as its source."""
    enable(s3, bucket)
    v1, body1 = put(s3, bucket, "source")
    put(s3, bucket, "source")
    copied = s3.copy_object(
        Bucket=bucket, Key="copy", CopySource={"Bucket": bucket, "Key": "source", "VersionId": v1}
    )
    assert copied["CopySourceVersionId"] == v1 and copied["VersionId"] not in (v1, "null")
    assert read(s3, bucket, "copy") == body1

    upload = s3.create_multipart_upload(Bucket=bucket, Key="copy")["UploadId"]
    part = s3.upload_part_copy(
        Bucket=bucket,
        Key="copy",
        UploadId=upload,
        PartNumber=1,
        CopySource={"Bucket": bucket, "Key": "source", "VersionId": v1},
        CopySourceRange="bytes=0-9999",
    )
    done = s3.complete_multipart_upload(
        Bucket=bucket,
        Key="copy",
        UploadId=upload,
        MultipartUpload={"Parts": [{"PartNumber": 1, "ETag": part["CopyPartResult"]["ETag"]}]},
    )
    assert read(s3, bucket, "copy") == body1[:10000]
    assert read(s3, bucket, "copy", copied["VersionId"]) == body1
    listed = [entry[1] for entry in versions_of(s3, bucket, prefix="copy")]
    assert listed == [done["VersionId"], copied["VersionId"]]


@LOCAL_ONLY
def test_suspended_writes_replace_the_null_version(s3: S3Client, bucket: str) -> None:
    unversioned, body0 = put(s3, bucket, "k")
    assert unversioned == ""  # no x-amz-version-id before versioning was ever enabled
    enable(s3, bucket)
    v1, _ = put(s3, bucket, "k")
    assert read(s3, bucket, "k", "null") == body0
    enable(s3, bucket, "Suspended")
    assert s3.get_bucket_versioning(Bucket=bucket)["Status"] == "Suspended"
    null1, body1 = put(s3, bucket, "k")
    assert null1 == "null"
    # The pre-versioning null version was replaced; the Enabled one was kept.
    assert versions_of(s3, bucket) == [("k", "null", True, False), ("k", v1, False, False)]
    null2, body2 = put(s3, bucket, "k")
    assert null2 == "null" and read(s3, bucket, "k", "null") == body2
    assert versions_of(s3, bucket) == [("k", "null", True, False), ("k", v1, False, False)]
    deleted = s3.delete_object(Bucket=bucket, Key="k")
    assert (deleted["VersionId"], deleted["DeleteMarker"]) == ("null", True)
    assert versions_of(s3, bucket) == [("k", "null", True, True), ("k", v1, False, False)]
    # Removing the null delete marker brings the enabled-era version back.
    s3.delete_object(Bucket=bucket, Key="k", VersionId="null")
    assert versions_of(s3, bucket) == [("k", v1, True, False)]
    assert read(s3, bucket, "k") != body1
    assert error_of_client(missing(s3.get_object, Bucket=bucket, Key="k", VersionId="null")) == (
        404,
        "NoSuchVersion",
    )


@LOCAL_ONLY
def test_list_object_versions_pages(s3: S3Client, bucket: str) -> None:
    enable(s3, bucket)
    ids: dict[str, list[str]] = {}
    for key in ("a", "dir/x", "dir/y", "z+z"):
        ids[key] = [put(s3, bucket, key, key.encode() * n)[0] for n in (1, 2, 3)]
    marker = s3.delete_object(Bucket=bucket, Key="dir/y")["VersionId"]
    every = [
        ("a", ids["a"][2], True, False),
        ("a", ids["a"][1], False, False),
        ("a", ids["a"][0], False, False),
        ("dir/x", ids["dir/x"][2], True, False),
        ("dir/x", ids["dir/x"][1], False, False),
        ("dir/x", ids["dir/x"][0], False, False),
        ("dir/y", marker, True, True),
        ("dir/y", ids["dir/y"][2], False, False),
        ("dir/y", ids["dir/y"][1], False, False),
        ("dir/y", ids["dir/y"][0], False, False),
        ("z+z", ids["z+z"][2], True, False),
        ("z+z", ids["z+z"][1], False, False),
        ("z+z", ids["z+z"][0], False, False),
    ]
    assert versions_of(s3, bucket) == every

    # Paged by key-marker and version-id-marker, 4 at a time, as clients follow them.
    paged: list[Any] = []
    markers: dict[str, str] = {}
    while True:
        page = versions_page(s3, bucket, **{"max-keys": "4"}, **markers)
        assert len(entries(page)) <= 4
        paged += entries(page)
        if text(page, "IsTruncated") != "true":
            break
        markers = {
            "key-marker": text(page, "NextKeyMarker"),
            "version-id-marker": text(page, "NextVersionIdMarker"),
        }
    assert paged == every
    # boto3's paginator follows the same markers.
    pages = s3.get_paginator("list_object_versions").paginate(
        Bucket=bucket, PaginationConfig={"PageSize": 5}
    )
    assert sum(len(p.get("Versions", [])) + len(p.get("DeleteMarkers", [])) for p in pages) == 13
    # key-marker alone starts after every version of that key.
    assert versions_of(s3, bucket, **{"key-marker": "dir/x"}) == every[6:]

    rolled = s3.list_object_versions(Bucket=bucket, Delimiter="/")
    assert [p["Prefix"] for p in rolled["CommonPrefixes"]] == ["dir/"]
    assert {v["Key"] for v in rolled["Versions"]} == {"a", "z+z"}
    assert "DeleteMarkers" not in rolled
    inside = s3.list_object_versions(Bucket=bucket, Prefix="dir/", Delimiter="/", MaxKeys=2)
    assert inside["IsTruncated"] and inside["NextKeyMarker"] == "dir/x"

    # boto3 asks for url encoding itself, and decodes.
    decoded = s3.list_object_versions(Bucket=bucket, Prefix="z")
    assert {v["Key"] for v in decoded["Versions"]} == {"z+z"}
    raw = versions_page(s3, bucket, **{"encoding-type": "url", "prefix": "z"})
    assert text(raw, "EncodingType") == "url"
    assert {key for key, *_ in entries(raw)} == {"z%2Bz"}


@LOCAL_ONLY
def test_delete_objects_with_versions(s3: S3Client, bucket: str) -> None:
    enable(s3, bucket)
    v1, _ = put(s3, bucket, "one")
    v2, body2 = put(s3, bucket, "one")
    put(s3, bucket, "two")
    unknown = str(uuid.uuid4())
    result = s3.delete_objects(
        Bucket=bucket,
        Delete={
            "Objects": [
                {"Key": "one", "VersionId": v1},
                {"Key": "two"},
                {"Key": "one", "VersionId": unknown},
                {"Key": "one", "VersionId": "not a version"},
            ]
        },
    )
    deleted = {(d["Key"], d.get("VersionId")): d for d in result["Deleted"]}
    assert set(deleted) == {("one", v1), ("two", None)}
    assert deleted[("two", None)]["DeleteMarker"] is True
    marker = deleted[("two", None)]["DeleteMarkerVersionId"]
    errors = {(e["Key"], e["VersionId"]): e["Code"] for e in result["Errors"]}
    assert errors == {
        ("one", unknown): "NoSuchVersion",
        ("one", "not a version"): "InvalidArgument",
    }
    assert read(s3, bucket, "one") == body2
    assert versions_of(s3, bucket, prefix="one") == [("one", v2, True, False)]
    result = s3.delete_objects(
        Bucket=bucket, Delete={"Objects": [{"Key": "two", "VersionId": marker}]}
    )
    assert result["Deleted"][0]["DeleteMarker"] is True
    assert s3.head_object(Bucket=bucket, Key="two")["ContentLength"] == BODY_SIZE


@LOCAL_ONLY
def test_variants_of_a_version(gateway: Any, s3: S3Client, bucket: str) -> None:
    enable(s3, bucket)
    first = s3.put_object(Bucket=bucket, Key="cat.jpg", Body=images.jpeg_with_orientation(1))
    s3.put_object(Bucket=bucket, Key="cat.jpg", Body=images.transparent_png((300, 60)))
    old = signed(
        gateway.endpoint, "GET", f"/{bucket}/cat.jpg?variant=small&versionId={first['VersionId']}"
    )
    assert old.headers["x-amz-version-id"] == first["VersionId"]
    current = signed(gateway.endpoint, "GET", f"/{bucket}/cat.jpg?variant=small")
    assert image_of(old).size != image_of(current).size
    marker = s3.delete_object(Bucket=bucket, Key="cat.jpg")["VersionId"]
    response = signed(
        gateway.endpoint, "GET", f"/{bucket}/cat.jpg?variant=small&versionId={marker}"
    )
    assert (response.status_code, error_code(response)) == (405, "MethodNotAllowed")
    again = signed(
        gateway.endpoint, "GET", f"/{bucket}/cat.jpg?variant=small&versionId={first['VersionId']}"
    )
    assert image_of(again).size == image_of(old).size


@LOCAL_ONLY
def test_usage_and_quota_count_every_version(s3: S3Client, bucket: str, gateway_dsn: str) -> None:
    enable(s3, bucket)
    put(s3, bucket, "k")
    put(s3, bucket, "k")
    s3.delete_object(Bucket=bucket, Key="k")

    def usage() -> tuple[int, int]:
        row = db_fetch(gateway_dsn, "SELECT * FROM gateway_bucket_usage($1)", bucket)[0]
        return row["objects"], row["bytes"]

    # Two versions stored; the delete marker holds nothing.
    assert usage() == (2, 2 * BODY_SIZE)
    db_fetch(
        gateway_dsn,
        "UPDATE buckets SET settings = jsonb_set(settings, '{quota}', $2::jsonb) WHERE name = $1",
        bucket,
        '{"max_objects": 2}',
    )
    error = missing(s3.put_object, Bucket=bucket, Key="other", Body=b"x" * BODY_SIZE)
    assert error_of_client(error)[0] == 403
    for entry in s3.list_object_versions(Bucket=bucket)["Versions"]:
        s3.delete_object(Bucket=bucket, Key="k", VersionId=entry["VersionId"])
    assert usage() == (0, 0)
    # Only the delete marker is left: the bucket is still not empty, as in S3.
    error = missing(s3.delete_bucket, Bucket=bucket)
    assert error_of_client(error) == (409, "BucketNotEmpty")


@LOCAL_ONLY
def test_versioning_configuration_errors(s3: S3Client, bucket: str) -> None:
    assert s3.get_bucket_versioning(Bucket=VERSIONED_BUCKET)["Status"] == "Enabled"
    error = missing(enable, s3=s3, bucket=VERSIONED_BUCKET, status="Suspended")
    assert error_of_client(error) == (400, "InvalidRequest")
    error = missing(
        s3.put_bucket_versioning,
        Bucket=bucket,
        VersioningConfiguration={"Status": "Enabled", "MFADelete": "Enabled"},
    )
    assert error_of_client(error) == (501, "NotImplemented")
    error = missing(enable, s3=s3, bucket=bucket, status="Sometimes")
    assert error_of_client(error) == (400, "MalformedXML")
    assert "Status" not in s3.get_bucket_versioning(Bucket=bucket)


@LOCAL_ONLY
def test_aws_cli_versioning_commands(
    s3: S3Client, bucket: str, tmp_path: Path, gateway: Any
) -> None:
    aws = AwsCli(gateway.endpoint, cli_env(tmp_path), None, True)
    aws.run(
        "s3api", "put-bucket-versioning", "--bucket", bucket,
        "--versioning-configuration", "Status=Enabled",
    )  # fmt: skip
    assert aws.json("s3api", "get-bucket-versioning", "--bucket", bucket)["Status"] == "Enabled"
    v1, body1 = put(s3, bucket, "file.bin")
    put(s3, bucket, "file.bin")
    listed = aws.json("s3api", "list-object-versions", "--bucket", bucket)
    assert [v["VersionId"] for v in listed["Versions"]][1] == v1
    target = tmp_path / "out.bin"
    aws.run(
        "s3api", "get-object", "--bucket", bucket, "--key", "file.bin",
        "--version-id", v1, str(target),
    )  # fmt: skip
    assert target.read_bytes() == body1
    out = aws.json(
        "s3api", "delete-object", "--bucket", bucket, "--key", "file.bin", "--version-id", v1
    )
    assert out["VersionId"] == v1
    listed = aws.json("s3api", "list-object-versions", "--bucket", bucket)
    assert v1 not in [v["VersionId"] for v in listed["Versions"]]


@LOCAL_ONLY
def test_versions_are_guarded_like_the_objects(gateway: Any, s3: S3Client, bucket: str) -> None:
    """Attacks over HTTP: no anonymous or read-only client may change a bucket's versioning,
    list its versions or remove one; a version keeps its own ACL."""
    enable(s3, bucket)
    private_version, _ = put(s3, bucket, "k")
    s3.put_object(Bucket=bucket, Key="k", Body=b"public now", ACL="public-read")
    body = b"<VersioningConfiguration><Status>Suspended</Status></VersioningConfiguration>"
    for method, path, data in (
        ("PUT", f"/{bucket}?versioning", body),
        ("GET", f"/{bucket}?versioning", None),
        ("GET", f"/{bucket}?versions", None),
        ("DELETE", f"/{bucket}/k?versionId={private_version}", None),
        ("GET", f"/{bucket}/k?versionId={private_version}", None),
    ):
        response = requests.request(method, gateway.endpoint + path, data=data, timeout=30)
        assert (response.status_code, error_code(response)) == (403, "AccessDenied"), path
    # The current version is public; the older one is not.
    public = requests.get(f"{gateway.endpoint}/{bucket}/k", timeout=30)
    assert public.content == b"public now"
    assert s3.get_bucket_versioning(Bucket=bucket)["Status"] == "Enabled"
    assert read(s3, bucket, "k", private_version)

    reader = client(gateway.endpoint, READER_ACCESS_KEY, READER_SECRET_KEY)
    for call, kw in (
        (enable, {"s3": reader, "bucket": PUBLIC_BUCKET}),
        (reader.delete_object, {"Bucket": PUBLIC_BUCKET, "Key": "k", "VersionId": "null"}),
        (reader.list_object_versions, {"Bucket": bucket}),
    ):
        assert error_of_client(missing(call, **kw)) == (403, "AccessDenied")
    assert "Status" not in s3.get_bucket_versioning(Bucket=PUBLIC_BUCKET)
