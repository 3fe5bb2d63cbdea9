"""`gateway presign`: URLs for objects and variants of private buckets, signed with the
configured credentials, that a browser or curl can use as they are."""

from __future__ import annotations

import time
from typing import Any

import requests

from tests.conftest import LOCAL, READER_ACCESS_KEY, UPSTREAM, GatewayProcess, S3Client, client
from tests.unit.variants import images

# Protocol behaviour: the sealed profile (local disk underneath) adds nothing here.
GATEWAY_PROFILES = [LOCAL, UPSTREAM]


def presign(gateway: GatewayProcess, *arguments: str) -> str:
    result = gateway.command("presign", *arguments)
    assert result.returncode == 0, result.stderr
    return result.stdout.strip()


def error_code(response: requests.Response) -> str:
    return response.text.split("<Code>")[1].split("</Code>")[0]


def test_presigned_variant_of_a_private_object(
    gateway: GatewayProcess, bucket: str, s3: S3Client
) -> None:
    photo = images.encode(images.marked(), "JPEG")
    s3.put_object(Bucket=bucket, Key="photos/a cat.jpg", Body=photo)
    assert (
        requests.get(f"{gateway.endpoint}/{bucket}/photos/a cat.jpg", timeout=10).status_code == 403
    )

    url = presign(gateway, f"s3://{bucket}/photos/a cat.jpg", "--variant", "thumb")
    response = requests.get(url, timeout=30)
    assert response.status_code == 200, response.text
    assert response.headers["Content-Type"] == "image/webp"
    assert images.decode(response.content).size == (64, 64)

    # The variant is signed: the same signature for another preset is refused.
    tampered = url.replace("variant=thumb", "variant=small")
    assert error_code(requests.get(tampered, timeout=10)) == "SignatureDoesNotMatch"

    plain = presign(gateway, f"s3://{bucket}/photos/a cat.jpg")
    assert requests.get(plain, timeout=10).content == photo


def test_presigned_put_and_expiry(gateway: GatewayProcess, bucket: str, s3: S3Client) -> None:
    url = presign(gateway, f"s3://{bucket}/upload.txt", "--method", "PUT")
    assert requests.put(url, data=b"uploaded", timeout=10).status_code == 200
    assert s3.get_object(Bucket=bucket, Key="upload.txt")["Body"].read() == b"uploaded"

    short = presign(gateway, f"s3://{bucket}/upload.txt", "--expires", "1")
    time.sleep(2)
    response = requests.get(short, timeout=10)
    assert (response.status_code, error_code(response)) == (403, "AccessDenied")


def test_presign_with_a_configured_credential(gateway: GatewayProcess) -> None:
    # The reader may read the public bucket only; its URL for another bucket is refused.
    url = presign(gateway, "s3://elsewhere/key.txt", "--access-key", READER_ACCESS_KEY)
    assert error_code(requests.get(url, timeout=10)) in ("AccessDenied", "NoSuchBucket")
    unknown = gateway.command("presign", "s3://b/k", "--access-key", "NOSUCHKEY")
    assert unknown.returncode == 2 and "no credential" in unknown.stderr
    for wrong in (["s3://bucket-only"], ["s3://b/k", "--expires", "0"]):
        assert gateway.command("presign", *wrong).returncode == 2


def test_boto3_presigned_variant_as_the_readme_shows(
    gateway: GatewayProcess, bucket: str, s3: S3Client
) -> None:
    s3.put_object(Bucket=bucket, Key="cat.jpg", Body=images.encode(images.marked(), "JPEG"))
    signer = client(gateway.endpoint, signature_version="s3v4")

    def add_variant(request: Any, **_: Any) -> None:
        separator = "&" if "?" in request.url else "?"
        request.url += f"{separator}variant=thumb"

    signer.meta.events.register("before-sign.s3.GetObject", add_variant)
    url = signer.generate_presigned_url(
        "get_object", Params={"Bucket": bucket, "Key": "cat.jpg"}, ExpiresIn=3600
    )
    response = requests.get(url, timeout=30)
    assert response.status_code == 200, response.text
    assert response.headers["Content-Type"] == "image/webp"
