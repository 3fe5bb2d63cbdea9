"""Bucket operations through boto3."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import boto3
import pytest
from botocore.exceptions import ClientError

from tests.conftest import (
    LOCAL,
    LOCAL_ONLY,
    ROOT_ACCESS_KEY,
    ROOT_SECRET_KEY,
    UPSTREAM,
    GatewayProcess,
)
from tests.s3errors import code_of, error_of
from tests.test_listing import signed_get

# Protocol behaviour: the sealed profile (local disk underneath) adds nothing here.
GATEWAY_PROFILES = [LOCAL, UPSTREAM]


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


@LOCAL_ONLY
def test_create_owned_bucket_again_in_us_east_1(s3, bucket: str) -> None:
    """S3's legacy us-east-1 answer, which tools that "ensure" a bucket rely on: 200, and
    nothing changes (here: not its ACL, not its objects)."""
    s3.put_object(Bucket=bucket, Key="keep", Body=b"1")
    again = s3.create_bucket(Bucket=bucket, ACL="public-read")
    assert again["ResponseMetadata"]["HTTPStatusCode"] == 200
    grants = s3.get_bucket_acl(Bucket=bucket)["Grants"]
    assert [grant["Permission"] for grant in grants] == ["FULL_CONTROL"]
    assert s3.get_object(Bucket=bucket, Key="keep")["Body"].read() == b"1"


@pytest.fixture(scope="module")
def elsewhere(
    local_gateway: GatewayProcess, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[GatewayProcess]:
    """A gateway in another region than us-east-1."""
    process = local_gateway.sibling(
        tmp_path_factory.mktemp("elsewhere") / "gateway.yaml", region="eu-west-1"
    )
    with process.running():
        yield process


def test_create_owned_bucket_again_elsewhere_is_already_owned(elsewhere) -> None:
    s3 = boto3.client(
        "s3",
        endpoint_url=elsewhere.endpoint,
        aws_access_key_id=ROOT_ACCESS_KEY,
        aws_secret_access_key=ROOT_SECRET_KEY,
        region_name="eu-west-1",
    )
    name = f"bucket-{uuid.uuid4().hex[:12]}"
    where = {"LocationConstraint": "eu-west-1"}
    s3.create_bucket(Bucket=name, CreateBucketConfiguration=where)
    with pytest.raises(ClientError) as excinfo:
        s3.create_bucket(Bucket=name, CreateBucketConfiguration=where)
    assert error_of(excinfo) == (409, "BucketAlreadyOwnedByYou")
    assert s3.list_buckets(Prefix=name)["Buckets"][0]["BucketRegion"] == "eu-west-1"
    s3.delete_bucket(Bucket=name)


@LOCAL_ONLY
def test_list_buckets_pages(gateway, s3) -> None:
    prefix = f"page-{uuid.uuid4().hex[:8]}-"
    names = [f"{prefix}{n}" for n in ("a", "b", "c")]
    for name in names:
        s3.create_bucket(Bucket=name)
    # Without paging parameters: every bucket, and no token.
    everything = s3.list_buckets()
    assert set(names) <= {b["Name"] for b in everything["Buckets"]}
    assert "ContinuationToken" not in everything and "Prefix" not in everything
    first = s3.list_buckets(Prefix=prefix, MaxBuckets=2)
    assert [b["Name"] for b in first["Buckets"]] == names[:2]
    assert first["Prefix"] == prefix
    second = s3.list_buckets(
        Prefix=prefix, MaxBuckets=2, ContinuationToken=first["ContinuationToken"]
    )
    assert [b["Name"] for b in second["Buckets"]] == names[2:]
    assert "ContinuationToken" not in second
    pages = s3.get_paginator("list_buckets").paginate(Prefix=prefix, MaxBuckets=1)
    assert [b["Name"] for page in pages for b in page["Buckets"]] == names
    assert len(s3.list_buckets(Prefix=prefix, BucketRegion="us-east-1")["Buckets"]) == 3
    assert s3.list_buckets(Prefix=prefix, BucketRegion="eu-west-1")["Buckets"] == []
    for query in ("max-buckets=0", "max-buckets=10001", "max-buckets=x"):
        response = signed_get(gateway, "/", query)
        assert response.status_code == 400
        assert b"<Code>InvalidArgument</Code>" in response.content
    with pytest.raises(ClientError) as excinfo:
        s3.list_buckets(ContinuationToken="%%%not-a-token")
    assert error_of(excinfo) == (400, "InvalidArgument")
    for name in names:
        s3.delete_bucket(Bucket=name)


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
    # Enabling it is tested in tests/test_versioning.py; of a missing bucket, refused.
    with pytest.raises(ClientError) as excinfo:
        s3.put_bucket_versioning(
            Bucket=f"{bucket}-missing", VersioningConfiguration={"Status": "Enabled"}
        )
    assert error_of(excinfo) == (404, "NoSuchBucket")
