"""Bucket policies through boto3 (the public-read subset) and ``public_read: objects`` from the
YAML; anonymous requests are plain HTTP, as a browser sends them."""

from __future__ import annotations

import json

import botocore
import pytest
import requests
from botocore.exceptions import ClientError

from tests.conftest import LOCAL, OBJECTS_BUCKET, UPSTREAM, GatewayProcess, S3Client, client
from tests.s3errors import error_of
from tests.unit.variants import images

# Protocol behaviour: the sealed profile (local disk underneath) adds nothing here.
GATEWAY_PROFILES = [LOCAL, UPSTREAM]


def anonymous(gateway: GatewayProcess, path: str, method: str = "GET") -> requests.Response:
    return requests.request(method, gateway.endpoint + path, timeout=10)


def error_code(response: requests.Response) -> str:
    return response.text.split("<Code>")[1].split("</Code>")[0]


def mc_download_policy(bucket: str) -> dict[str, object]:
    """What ``mc anonymous set download`` writes."""
    return {
        "Version": "2012-10-17",
        "Statement": [
            {
                "Effect": "Allow",
                "Principal": {"AWS": ["*"]},
                "Action": ["s3:GetBucketLocation", "s3:ListBucket"],
                "Resource": [f"arn:aws:s3:::{bucket}"],
            },
            {
                "Effect": "Allow",
                "Principal": {"AWS": ["*"]},
                "Action": ["s3:GetObject"],
                "Resource": [f"arn:aws:s3:::{bucket}/*"],
            },
        ],
    }


def test_download_policy_opens_the_bucket(
    gateway: GatewayProcess, s3: S3Client, bucket: str
) -> None:
    photo = images.encode(images.marked(), "PNG")
    s3.put_object(Bucket=bucket, Key="a/cat.png", Body=photo)
    assert anonymous(gateway, f"/{bucket}/a/cat.png").status_code == 403

    document = json.dumps(mc_download_policy(bucket))
    s3.put_bucket_policy(Bucket=bucket, Policy=document)
    assert s3.get_bucket_policy(Bucket=bucket)["Policy"] == document

    assert anonymous(gateway, f"/{bucket}/a/cat.png").content == photo
    assert anonymous(gateway, f"/{bucket}/a/cat.png?variant=small").status_code == 200
    unsigned = client(gateway.endpoint, signature_version=botocore.UNSIGNED)
    assert [o["Key"] for o in unsigned.list_objects_v2(Bucket=bucket)["Contents"]] == ["a/cat.png"]
    assert unsigned.get_bucket_location(Bucket=bucket)["ResponseMetadata"]["HTTPStatusCode"] == 200
    assert error_code(anonymous(gateway, f"/{bucket}/a/none.png")) == "NoSuchKey"
    # Reads only: a policy for downloads lets nobody write.
    assert anonymous(gateway, f"/{bucket}/a/cat.png", "DELETE").status_code == 403
    assert anonymous(gateway, f"/{bucket}/new.txt", "PUT").status_code == 403

    s3.delete_bucket_policy(Bucket=bucket)
    assert anonymous(gateway, f"/{bucket}/a/cat.png").status_code == 403
    with pytest.raises(ClientError) as gone:
        s3.get_bucket_policy(Bucket=bucket)
    assert error_of(gone) == (404, "NoSuchBucketPolicy")


def test_prefix_policy_as_in_the_s3_docs(
    gateway: GatewayProcess, s3: S3Client, bucket: str
) -> None:
    s3.put_object(Bucket=bucket, Key="public/page.html", Body=b"<p>hi</p>")
    s3.put_object(Bucket=bucket, Key="private/notes.txt", Body=b"secret")
    s3.put_object(Bucket=bucket, Key="robots.txt", Body=b"User-agent: *")
    policy = {
        "Version": "2012-10-17",
        "Statement": [
            {
                "Sid": "PublicReadGetObject",
                "Effect": "Allow",
                "Principal": "*",
                "Action": "s3:GetObject",
                "Resource": [
                    f"arn:aws:s3:::{bucket}/public/*",
                    f"arn:aws:s3:::{bucket}/robots.txt",
                ],
            }
        ],
    }
    s3.put_bucket_policy(Bucket=bucket, Policy=json.dumps(policy))
    assert anonymous(gateway, f"/{bucket}/public/page.html").text == "<p>hi</p>"
    assert anonymous(gateway, f"/{bucket}/robots.txt").status_code == 200
    # A missing key under the open prefix is a 404; outside it, nothing is revealed.
    assert anonymous(gateway, f"/{bucket}/public/none.html").status_code == 404
    for path in ("/private/notes.txt", "/private/none.txt", "/robots.txt.bak", "/?list-type=2"):
        response = anonymous(gateway, f"/{bucket}{path}")
        assert (response.status_code, error_code(response)) == (403, "AccessDenied"), path


@pytest.mark.parametrize(
    ("statement", "expected"),
    [
        ({"Effect": "Deny"}, (501, "NotImplemented")),
        ({"Principal": {"AWS": "arn:aws:iam::111122223333:root"}}, (501, "NotImplemented")),
        ({"Action": "s3:PutObject"}, (501, "NotImplemented")),
        ({"Action": "s3:*"}, (501, "NotImplemented")),
        ({"Condition": {"IpAddress": {"aws:SourceIp": "10.0.0.0/8"}}}, (501, "NotImplemented")),
        ({"Resource": "arn:aws:s3:::some-other-bucket/*"}, (400, "MalformedPolicy")),
        ({"Action": "ec2:DescribeInstances"}, (400, "MalformedPolicy")),
        ({"Effect": "Maybe"}, (400, "MalformedPolicy")),
        ({"Principal": None}, (400, "MalformedPolicy")),
    ],
)
def test_policies_that_cannot_be_honoured_are_refused(
    s3: S3Client, bucket: str, statement: dict[str, object], expected: tuple[int, str]
) -> None:
    base: dict[str, object] = {
        "Effect": "Allow",
        "Principal": "*",
        "Action": "s3:GetObject",
        "Resource": f"arn:aws:s3:::{bucket}/*",
    }
    merged = {**base, **statement}
    if merged["Principal"] is None:
        del merged["Principal"]
    policy = {"Version": "2012-10-17", "Statement": [merged]}
    with pytest.raises(ClientError) as refused:
        s3.put_bucket_policy(Bucket=bucket, Policy=json.dumps(policy))
    assert error_of(refused) == expected
    # Nothing half-applied.
    with pytest.raises(ClientError) as none:
        s3.get_bucket_policy(Bucket=bucket)
    assert error_of(none) == (404, "NoSuchBucketPolicy")


def test_malformed_policy_documents(gateway: GatewayProcess, s3: S3Client, bucket: str) -> None:
    for document in ("not json", "[1, 2]", '{"Version": "2012-10-17"}', "{" + " " * 21000 + "}"):
        with pytest.raises(ClientError) as refused:
            s3.put_bucket_policy(Bucket=bucket, Policy=document)
        assert error_of(refused) == (400, "MalformedPolicy"), document[:20]


def test_policy_needs_write_access(gateway: GatewayProcess, s3: S3Client, bucket: str) -> None:
    document = json.dumps(mc_download_policy(bucket))
    url = f"{gateway.endpoint}/{bucket}?policy"
    response = requests.put(url, data=document, timeout=10)
    assert (response.status_code, error_code(response)) == (403, "AccessDenied")
    assert error_code(requests.get(url, timeout=10)) == "AccessDenied"
    assert error_code(requests.delete(url, timeout=10)) == "AccessDenied"
    with pytest.raises(ClientError):
        s3.get_bucket_policy(Bucket=bucket)


def test_public_read_objects_from_the_configuration(gateway: GatewayProcess, s3: S3Client) -> None:
    photo = images.encode(images.marked(), "JPEG")
    s3.put_object(Bucket=OBJECTS_BUCKET, Key="img/cat.jpg", Body=photo)
    assert anonymous(gateway, f"/{OBJECTS_BUCKET}/img/cat.jpg").content == photo
    assert anonymous(gateway, f"/{OBJECTS_BUCKET}/img/cat.jpg", "HEAD").status_code == 200
    assert anonymous(gateway, f"/{OBJECTS_BUCKET}/img/cat.jpg?variant=thumb").status_code == 200
    assert anonymous(gateway, f"/{OBJECTS_BUCKET}/img/none.jpg").status_code == 404
    # No anonymous listing, and no anonymous writes.
    for path in ("/", "/?list-type=2&prefix=img/"):
        response = anonymous(gateway, f"/{OBJECTS_BUCKET}{path}")
        assert (response.status_code, error_code(response)) == (403, "AccessDenied")
    assert anonymous(gateway, f"/{OBJECTS_BUCKET}/img/cat.jpg", "DELETE").status_code == 403
    assert anonymous(gateway, f"/{OBJECTS_BUCKET}/img/cat.jpg", "HEAD").status_code == 200
