"""Object tags through boto3: PutObjectTagging, GetObjectTagging, DeleteObjectTagging, and
x-amz-tagging on PutObject, CopyObject, CreateMultipartUpload and POST forms."""

from __future__ import annotations

from typing import Any

import pytest
import requests
from botocore.exceptions import ClientError

from tests.conftest import (
    LOCAL_ONLY,
    PUBLIC_BUCKET,
    READER_ACCESS_KEY,
    READER_SECRET_KEY,
    client,
)
from tests.s3errors import error_of


def tags_of(s3, bucket: str, key: str) -> list[tuple[str, str]]:
    tag_set = s3.get_object_tagging(Bucket=bucket, Key=key)["TagSet"]
    return [(tag["Key"], tag["Value"]) for tag in tag_set]


def tag_set(*pairs: tuple[str, str]) -> dict[str, Any]:
    return {"TagSet": [{"Key": key, "Value": value} for key, value in pairs]}


def tag_count(s3, bucket: str, key: str) -> str | None:
    headers = s3.head_object(Bucket=bucket, Key=key)["ResponseMetadata"]["HTTPHeaders"]
    return headers.get("x-amz-tagging-count")


def test_tags_round_trip_with_the_object(s3, bucket: str) -> None:
    put = s3.put_object(Bucket=bucket, Key="k", Body=b"x", Tagging="a=1&note=two%20words&e=")
    assert tags_of(s3, bucket, "k") == [("a", "1"), ("note", "two words"), ("e", "")]
    got = s3.get_object(Bucket=bucket, Key="k")
    assert got["TagCount"] == 3 and tag_count(s3, bucket, "k") == "3"
    # Replacing the tags leaves the object as it was.
    s3.put_object_tagging(Bucket=bucket, Key="k", Tagging=tag_set(("é/ü", "v:1 @x+y=z")))
    assert tags_of(s3, bucket, "k") == [("é/ü", "v:1 @x+y=z")]
    head = s3.head_object(Bucket=bucket, Key="k")
    assert (head["ETag"], head["LastModified"]) == (put["ETag"], got["LastModified"])
    s3.delete_object_tagging(Bucket=bucket, Key="k")
    assert tags_of(s3, bucket, "k") == [] and tag_count(s3, bucket, "k") is None
    # A write of the object replaces its tags.
    s3.put_object_tagging(Bucket=bucket, Key="k", Tagging=tag_set(("a", "1")))
    s3.put_object(Bucket=bucket, Key="k", Body=b"y")
    assert tags_of(s3, bucket, "k") == []
    # Multipart uploads take theirs at creation.
    upload_id = s3.create_multipart_upload(Bucket=bucket, Key="mp", Tagging="m=1")["UploadId"]
    part = s3.upload_part(Bucket=bucket, Key="mp", UploadId=upload_id, PartNumber=1, Body=b"p")
    s3.complete_multipart_upload(
        Bucket=bucket,
        Key="mp",
        UploadId=upload_id,
        MultipartUpload={"Parts": [{"PartNumber": 1, "ETag": part["ETag"]}]},
    )
    assert tags_of(s3, bucket, "mp") == [("m", "1")]


def test_copy_keeps_or_replaces_tags(s3, bucket: str) -> None:
    s3.put_object(Bucket=bucket, Key="src", Body=b"x", Tagging="a=1")
    source = {"Bucket": bucket, "Key": "src"}
    s3.copy_object(Bucket=bucket, Key="copied", CopySource=source, Tagging="ignored=1")
    assert tags_of(s3, bucket, "copied") == [("a", "1")]
    s3.copy_object(
        Bucket=bucket, Key="retagged", CopySource=source, TaggingDirective="REPLACE", Tagging="b=2"
    )
    assert tags_of(s3, bucket, "retagged") == [("b", "2")]
    s3.copy_object(Bucket=bucket, Key="bare", CopySource=source, TaggingDirective="REPLACE")
    assert tags_of(s3, bucket, "bare") == []
    # Metadata and tags have a directive each.
    s3.copy_object(
        Bucket=bucket,
        Key="src",
        CopySource=source,
        MetadataDirective="REPLACE",
        Metadata={"m": "1"},
    )
    assert tags_of(s3, bucket, "src") == [("a", "1")]


@LOCAL_ONLY
def test_post_form_tagging_field(s3, bucket: str) -> None:
    document = "<Tagging><TagSet><Tag><Key>k</Key><Value>v w</Value></Tag></TagSet></Tagging>"
    presigned = s3.generate_presigned_post(
        bucket, "form.txt", Fields={"tagging": document}, Conditions=[{"tagging": document}]
    )
    response = requests.post(
        presigned["url"], data=presigned["fields"], files={"file": ("f", b"x")}, timeout=10
    )
    assert response.status_code == 204, response.text
    assert tags_of(s3, bucket, "form.txt") == [("k", "v w")]


@LOCAL_ONLY
@pytest.mark.parametrize(
    ("tags", "expected"),
    [
        ([(f"k{n}", "v") for n in range(11)], (400, "BadRequest")),
        ([("k" * 129, "v")], (400, "InvalidTag")),
        ([("k", "v" * 257)], (400, "InvalidTag")),
        ([("k", "1"), ("k", "2")], (400, "InvalidTag")),
        ([("a*b", "v")], (400, "InvalidTag")),
        ([("k", "v#")], (400, "InvalidTag")),
        ([("aws:k", "v")], (400, "InvalidTag")),
    ],
)
def test_tag_limits(s3, bucket: str, tags: list[tuple[str, str]], expected: tuple) -> None:
    s3.put_object(Bucket=bucket, Key="k", Body=b"x", Tagging="kept=1")
    with pytest.raises(ClientError) as excinfo:
        s3.put_object_tagging(Bucket=bucket, Key="k", Tagging=tag_set(*tags))
    assert error_of(excinfo) == expected
    assert tags_of(s3, bucket, "k") == [("kept", "1")]
    header = "&".join(f"{key}={value}" for key, value in tags).replace("#", "%23")
    with pytest.raises(ClientError) as excinfo:
        s3.put_object(Bucket=bucket, Key="k", Body=b"y", Tagging=header)
    assert error_of(excinfo) == expected
    assert s3.get_object(Bucket=bucket, Key="k")["Body"].read() == b"x"


@LOCAL_ONLY
def test_tagging_edges_and_permissions(gateway, s3, bucket: str) -> None:
    # At the limits, in Unicode characters.
    widest = tag_set(*[(f"{n}" + "é" * 127, "ü" * 256) for n in range(10)])
    s3.put_object(Bucket=bucket, Key="k", Body=b"x")
    s3.put_object_tagging(Bucket=bucket, Key="k", Tagging=widest)
    assert len(tags_of(s3, bucket, "k")) == 10
    for call in (
        lambda: s3.get_object_tagging(Bucket=bucket, Key="missing"),
        lambda: s3.put_object_tagging(Bucket=bucket, Key="missing", Tagging=tag_set()),
        lambda: s3.delete_object_tagging(Bucket=bucket, Key="missing"),
    ):
        with pytest.raises(ClientError) as excinfo:
            call()
        assert error_of(excinfo) == (404, "NoSuchKey")
    # A bucket's tags are not served.
    with pytest.raises(ClientError) as excinfo:
        s3.put_bucket_tagging(Bucket=bucket, Tagging=tag_set(("a", "1")))
    assert error_of(excinfo) == (501, "NotImplemented")
    # Reading tags needs a read grant, setting them a write grant: a public bucket shows its
    # objects to anyone, not their tags.
    s3.put_object(Bucket=PUBLIC_BUCKET, Key="tagged", Body=b"x", Tagging="secret=1")
    reader = client(gateway.endpoint, READER_ACCESS_KEY, READER_SECRET_KEY)
    assert tags_of(reader, PUBLIC_BUCKET, "tagged") == [("secret", "1")]
    for call in (
        lambda: reader.put_object_tagging(Bucket=PUBLIC_BUCKET, Key="tagged", Tagging=tag_set()),
        lambda: reader.delete_object_tagging(Bucket=PUBLIC_BUCKET, Key="tagged"),
    ):
        with pytest.raises(ClientError) as excinfo:
            call()
        assert error_of(excinfo) == (403, "AccessDenied")
    anonymous = requests.get(f"{gateway.endpoint}/{PUBLIC_BUCKET}/tagged?tagging", timeout=10)
    assert anonymous.status_code == 403
    assert requests.get(f"{gateway.endpoint}/{PUBLIC_BUCKET}/tagged", timeout=10).ok
    assert tags_of(s3, PUBLIC_BUCKET, "tagged") == [("secret", "1")]
    s3.delete_object(Bucket=PUBLIC_BUCKET, Key="tagged")
