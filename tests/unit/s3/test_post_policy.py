"""POST Object policies: parsing, conditions and signatures, checked against what boto3's
generate_presigned_post makes."""

from __future__ import annotations

import base64
import json
from datetime import UTC, datetime, timedelta
from typing import Any

import boto3
import pytest
from botocore.config import Config

from gateway.s3 import errors, post_policy
from gateway.s3.post_policy import Condition, PostPolicy, check_fields, parse_policy

AK = "GWTESTPOSTKEY"
SECRET = "gateway-test-post-secret/+="
REGION = "us-east-1"
NOW = datetime(2026, 5, 1, 12, 0, tzinfo=UTC)
LATER = NOW + timedelta(hours=1)


def encode(document: Any) -> str:
    return base64.b64encode(json.dumps(document).encode()).decode()


def policy(*conditions: Any, expiration: str = "2026-05-01T13:00:00.000Z") -> PostPolicy:
    return parse_policy(encode({"expiration": expiration, "conditions": list(conditions)}))


def presigned_post(signature_version: str | None, **kwargs: Any) -> dict[str, Any]:
    config = Config(signature_version=signature_version) if signature_version else None
    s3 = boto3.client(
        "s3",
        endpoint_url="http://127.0.0.1:9000",
        region_name=REGION,
        aws_access_key_id=AK,
        aws_secret_access_key=SECRET,
        config=config,
    )
    presigned: dict[str, Any] = s3.generate_presigned_post("photos", "in/${filename}", **kwargs)
    return presigned


def test_parses_what_boto3_makes() -> None:
    presigned = presigned_post(
        "s3v4",
        Fields={"acl": "public-read"},
        Conditions=[{"acl": "public-read"}, ["content-length-range", "1", 1000]],
    )
    parsed = parse_policy(presigned["fields"]["policy"])
    assert parsed.expiration > datetime.now(UTC)
    assert Condition("eq", "bucket", "photos") in parsed.conditions
    assert Condition("starts-with", "key", "in/") in parsed.conditions
    assert Condition("eq", "acl", "public-read") in parsed.conditions
    assert parsed.size_range() == (1, 1000)


def test_sigv4_signature_is_botocores() -> None:
    fields = presigned_post("s3v4")["fields"]
    access_key, date, region, service, terminator = fields["x-amz-credential"].split("/")
    assert (access_key, region, service, terminator) == (AK, REGION, "s3", "aws4_request")
    assert fields["x-amz-algorithm"] == post_policy.V4_ALGORITHM
    expected = post_policy.signature_v4(fields["policy"], SECRET, date, region)
    assert expected == fields["x-amz-signature"]
    assert post_policy.signature_v4(fields["policy"], SECRET + "x", date, region) != expected


def test_sigv2_signature_is_botocores() -> None:
    fields = presigned_post(None)["fields"]
    assert fields["AWSAccessKeyId"] == AK
    assert post_policy.signature_v2(fields["policy"], SECRET) == fields["signature"]


@pytest.mark.parametrize(
    ("encoded", "message"),
    [
        ("not base64!", "Invalid JSON."),
        (base64.b64encode(b"not json").decode(), "Invalid JSON."),
        (encode(["a list"]), "Invalid JSON."),
        (encode({"conditions": []}), "Policy missing expiration."),
        (encode({"expiration": "tomorrow", "conditions": []}), "Invalid 'expiration' value"),
        (encode({"expiration": "2026-05-01T13:00:00Z"}), "Policy missing conditions."),
        (
            encode({"expiration": "2026-05-01T13:00:00Z", "conditions": [{"a": "1", "b": "2"}]}),
            "exactly one property",
        ),
        (
            encode({"expiration": "2026-05-01T13:00:00Z", "conditions": [{"a": 1}]}),
            "must be a string",
        ),
        (
            encode({"expiration": "2026-05-01T13:00:00Z", "conditions": [["in", "$a", "b"]]}),
            "Invalid condition operator: in",
        ),
        (
            encode({"expiration": "2026-05-01T13:00:00Z", "conditions": [["eq", "key", "b"]]}),
            "must start with $",
        ),
        (
            encode({"expiration": "2026-05-01T13:00:00Z", "conditions": [["eq", "$key"]]}),
            "Invalid eq condition.",
        ),
        (
            encode({"expiration": "2026-05-01T13:00:00Z", "conditions": ["key"]}),
            "Invalid Condition.",
        ),
        (
            encode(
                {
                    "expiration": "2026-05-01T13:00:00Z",
                    "conditions": [["content-length-range", "one", 10]],
                }
            ),
            "bounds must be integers",
        ),
        (
            encode(
                {
                    "expiration": "2026-05-01T13:00:00Z",
                    "conditions": [["content-length-range", True, 10]],
                }
            ),
            "bounds must be integers",
        ),
        (
            encode(
                {
                    "expiration": "2026-05-01T13:00:00Z",
                    "conditions": [["content-length-range", 10, 1]],
                }
            ),
            "Invalid content-length-range.",
        ),
    ],
)
def test_malformed_policies_are_invalid_policy_documents(encoded: str, message: str) -> None:
    with pytest.raises(errors.S3Error) as raised:
        parse_policy(encoded)
    assert raised.value.code == "InvalidPolicyDocument"
    assert message in raised.value.message


def test_an_expiration_without_a_zone_is_utc() -> None:
    assert policy(expiration="2026-05-01T13:00:00").expiration == LATER


BOTO3_LIKE = (
    {"bucket": "photos"},
    ["starts-with", "$key", "in/"],
    ["starts-with", "$Content-Type", ""],
    ["eq", "$x-amz-meta-owner", "ada"],
    ["content-length-range", 1, 10],
)
FIELDS = {"key": "in/${filename}", "content-type": "image/png", "x-amz-meta-owner": "ada"}


@pytest.mark.parametrize(
    ("fields", "bucket", "message"),
    [
        (FIELDS, "photos", None),
        # An empty starts-with prefix allows anything, an absent field too.
        ({**FIELDS, "content-type": ""}, "photos", None),
        # Never checked: the signature's own fields, the file, x-ignore-*.
        ({**FIELDS, "policy": "p", "signature": "s", "x-ignore-me": "1"}, "photos", None),
        (
            FIELDS,
            "videos",
            'Policy Condition failed: ["eq", "$bucket", "photos"]',
        ),
        (
            {**FIELDS, "key": "out/x"},
            "photos",
            'Policy Condition failed: ["starts-with", "$key", "in/"]',
        ),
        (
            {k: v for k, v in FIELDS.items() if k != "key"},
            "photos",
            'Policy Condition failed: ["starts-with", "$key", "in/"]',
        ),
        (
            {**FIELDS, "x-amz-meta-owner": "Ada"},
            "photos",
            'Policy Condition failed: ["eq", "$x-amz-meta-owner", "ada"]',
        ),
        (
            {**FIELDS, "x-amz-meta-extra": "1", "acl": "public-read"},
            "photos",
            "Extra input fields: acl, x-amz-meta-extra",
        ),
    ],
)
def test_conditions(fields: dict[str, str], bucket: str, message: str | None) -> None:
    parsed = policy(*BOTO3_LIKE)
    if message is None:
        check_fields(parsed, fields, bucket, NOW)
        return
    with pytest.raises(errors.S3Error) as raised:
        check_fields(parsed, fields, bucket, NOW)
    assert (raised.value.code, raised.value.status) == ("AccessDenied", 403)
    assert raised.value.message == f"Invalid according to Policy: {message}"


def test_field_names_compare_case_insensitively() -> None:
    parsed = policy({"Content-Type": "text/plain"}, ["eq", "$X-Amz-Meta-A", "1"])
    check_fields(parsed, {"content-type": "text/plain", "x-amz-meta-a": "1"}, "b", NOW)


def test_an_expired_policy_is_refused_whatever_its_conditions() -> None:
    parsed = policy(["starts-with", "$key", ""])
    check_fields(parsed, {"key": "a"}, "b", LATER - timedelta(seconds=1))
    with pytest.raises(errors.S3Error) as raised:
        check_fields(parsed, {"key": "a"}, "b", LATER)
    assert raised.value.code == "AccessDenied"
    assert raised.value.message == "Invalid according to Policy: Policy expired."


def test_the_last_size_range_applies() -> None:
    assert policy().size_range() is None
    parsed = policy(["content-length-range", 0, 5], ["content-length-range", "2", "9"])
    assert parsed.size_range() == (2, 9)
