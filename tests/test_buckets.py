"""Bucket operations through boto3."""

from __future__ import annotations

import uuid

import pytest
from botocore.exceptions import ClientError

from tests.s3errors import code_of, error_of


def test_create_list_head_delete(s3) -> None:
    name = f"bucket-{uuid.uuid4().hex[:12]}"
    s3.create_bucket(Bucket=name)
    assert name in [b["Name"] for b in s3.list_buckets()["Buckets"]]
    head = s3.head_bucket(Bucket=name)
    assert head["ResponseMetadata"]["HTTPHeaders"]["x-amz-bucket-region"] == "us-east-1"
    assert s3.get_bucket_location(Bucket=name)["LocationConstraint"] is None
    s3.delete_bucket(Bucket=name)
    assert name not in [b["Name"] for b in s3.list_buckets()["Buckets"]]
    with pytest.raises(ClientError) as excinfo:
        s3.head_bucket(Bucket=name)
    assert excinfo.value.response["ResponseMetadata"]["HTTPStatusCode"] == 404


def test_create_twice_is_already_owned(s3, bucket: str) -> None:
    with pytest.raises(ClientError) as excinfo:
        s3.create_bucket(Bucket=bucket)
    assert code_of(excinfo) == "BucketAlreadyOwnedByYou"
    assert excinfo.value.response["ResponseMetadata"]["HTTPStatusCode"] == 409


@pytest.mark.parametrize(
    "name",
    ["ab", "a" * 64, "UpperCase", "under_score", "-leading", "trailing-", "two..dots",
     "192.168.1.1", "xn--punycode", "bucket-s3alias", "_gateway"],
)  # fmt: skip
def test_invalid_bucket_names(s3, name: str) -> None:
    with pytest.raises(ClientError) as excinfo:
        s3.create_bucket(Bucket=name)
    assert code_of(excinfo) == "InvalidBucketName"
    assert name not in [b["Name"] for b in s3.list_buckets()["Buckets"]]


def test_delete_non_empty_bucket(s3, bucket: str) -> None:
    s3.put_object(Bucket=bucket, Key="keep", Body=b"1")
    with pytest.raises(ClientError) as excinfo:
        s3.delete_bucket(Bucket=bucket)
    assert code_of(excinfo) == "BucketNotEmpty"
    assert s3.get_object(Bucket=bucket, Key="keep")["Body"].read() == b"1"


def test_missing_bucket(s3) -> None:
    for call in (
        lambda: s3.list_objects_v2(Bucket="no-such-bucket-here"),
        lambda: s3.put_object(Bucket="no-such-bucket-here", Key="k", Body=b"x"),
        lambda: s3.delete_bucket(Bucket="no-such-bucket-here"),
        lambda: s3.get_bucket_location(Bucket="no-such-bucket-here"),
    ):
        with pytest.raises(ClientError) as excinfo:
            call()
        assert code_of(excinfo) == "NoSuchBucket"


def test_location_constraint_must_match_region(s3) -> None:
    name = f"bucket-{uuid.uuid4().hex[:12]}"
    with pytest.raises(ClientError) as excinfo:
        s3.create_bucket(Bucket=name, CreateBucketConfiguration={"LocationConstraint": "eu-west-1"})
    assert code_of(excinfo) == "InvalidLocationConstraint"


def test_get_bucket_versioning_says_never_enabled(s3, bucket: str) -> None:
    answer = s3.get_bucket_versioning(Bucket=bucket)
    assert "Status" not in answer and "MFADelete" not in answer
    with pytest.raises(ClientError) as excinfo:
        s3.get_bucket_versioning(Bucket=f"{bucket}-missing")
    assert error_of(excinfo) == (404, "NoSuchBucket")
    # Enabling it is not offered: refused, never ignored.
    with pytest.raises(ClientError) as excinfo:
        s3.put_bucket_versioning(Bucket=bucket, VersioningConfiguration={"Status": "Enabled"})
    assert error_of(excinfo) == (501, "NotImplemented")
