"""Canned ACLs through the S3 API: public-read objects in private buckets, public-read buckets,
GetBucketAcl/GetObjectAcl, AccessControlPolicy bodies, and what cannot be honoured refused.

Anonymous requests are plain HTTP: what a browser or curl sends."""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import uuid
from pathlib import Path
from typing import Any

import botocore
import pytest
import requests
from botocore.exceptions import ClientError

from tests.conftest import (
    LOCAL,
    PUBLIC_BUCKET,
    READER_ACCESS_KEY,
    READER_SECRET_KEY,
    REGION,
    ROOT_ACCESS_KEY,
    ROOT_SECRET_KEY,
    UPSTREAM,
    GatewayProcess,
    S3Client,
    client,
)
from tests.rawhttp import sign
from tests.s3cmd import s3cmd_runner
from tests.s3errors import error_of
from tests.test_awscli import AwsCli, cli_env
from tests.unit.variants import images

# Protocol behaviour: the sealed profile (local disk underneath) adds nothing here.
GATEWAY_PROFILES = [LOCAL, UPSTREAM]

ALL_USERS = "http://acs.amazonaws.com/groups/global/AllUsers"


def anonymous_get(gateway: GatewayProcess, path: str, method: str = "GET") -> requests.Response:
    return requests.request(method, gateway.endpoint + path, timeout=10)


def error_code(response: requests.Response) -> str:
    return response.text.split("<Code>")[1].split("</Code>")[0]


def public_grants(acl: dict[str, Any]) -> list[str]:
    return [
        grant["Permission"] for grant in acl["Grants"] if grant["Grantee"].get("URI") == ALL_USERS
    ]


def test_public_read_object_in_a_private_bucket(
    gateway: GatewayProcess, s3: S3Client, bucket: str
) -> None:
    photo = images.encode(images.marked(), "JPEG")
    s3.put_object(Bucket=bucket, Key="open/cat.jpg", Body=photo, ACL="public-read")
    s3.put_object(Bucket=bucket, Key="closed.jpg", Body=photo)

    response = anonymous_get(gateway, f"/{bucket}/open/cat.jpg")
    assert response.status_code == 200 and response.content == photo
    assert anonymous_get(gateway, f"/{bucket}/open/cat.jpg", "HEAD").status_code == 200
    variant = anonymous_get(gateway, f"/{bucket}/open/cat.jpg?variant=thumb")
    assert variant.status_code == 200, variant.text
    assert variant.headers["Content-Type"] == "image/webp"

    # The rest of the bucket stays closed: its objects, its variants, its listing, and
    # whether a key exists at all.
    for path in ("/closed.jpg", "/closed.jpg?variant=thumb", "/missing.jpg", "/", "?list-type=2"):
        refused = anonymous_get(gateway, f"/{bucket}{path}")
        assert refused.status_code == 403, path
        assert error_code(refused) == "AccessDenied"

    acl = s3.get_object_acl(Bucket=bucket, Key="open/cat.jpg")
    assert public_grants(acl) == ["READ"]
    assert [g["Permission"] for g in acl["Grants"] if g["Grantee"]["Type"] == "CanonicalUser"] == [
        "FULL_CONTROL"
    ]
    assert public_grants(s3.get_object_acl(Bucket=bucket, Key="closed.jpg")) == []


def test_put_object_acl_opens_and_closes(
    gateway: GatewayProcess, s3: S3Client, bucket: str
) -> None:
    s3.put_object(Bucket=bucket, Key="doc.txt", Body=b"words")
    etag = s3.head_object(Bucket=bucket, Key="doc.txt")["ETag"]
    assert anonymous_get(gateway, f"/{bucket}/doc.txt").status_code == 403

    s3.put_object_acl(Bucket=bucket, Key="doc.txt", ACL="public-read")
    assert anonymous_get(gateway, f"/{bucket}/doc.txt").content == b"words"
    # An ACL is no new version: same bytes, same ETag.
    assert s3.head_object(Bucket=bucket, Key="doc.txt")["ETag"] == etag

    s3.put_object_acl(Bucket=bucket, Key="doc.txt", ACL="private")
    assert anonymous_get(gateway, f"/{bucket}/doc.txt").status_code == 403

    # An AccessControlPolicy body, as s3cmd setacl sends: read the ACL, add AllUsers READ.
    policy = s3.get_object_acl(Bucket=bucket, Key="doc.txt")
    policy.pop("ResponseMetadata")
    policy["Grants"].append({"Grantee": {"Type": "Group", "URI": ALL_USERS}, "Permission": "READ"})
    s3.put_object_acl(Bucket=bucket, Key="doc.txt", AccessControlPolicy=policy)
    assert anonymous_get(gateway, f"/{bucket}/doc.txt").status_code == 200

    # An overwrite without an ACL is private again, as in S3.
    s3.put_object(Bucket=bucket, Key="doc.txt", Body=b"new words")
    assert anonymous_get(gateway, f"/{bucket}/doc.txt").status_code == 403

    with pytest.raises(ClientError) as missing:
        s3.put_object_acl(Bucket=bucket, Key="nothing.txt", ACL="public-read")
    assert error_of(missing) == (404, "NoSuchKey")


def test_acl_on_copy_and_multipart(gateway: GatewayProcess, s3: S3Client, bucket: str) -> None:
    s3.put_object(Bucket=bucket, Key="source.txt", Body=b"source", ACL="public-read")
    # A copy does not take its source's ACL.
    s3.copy_object(Bucket=bucket, Key="plain-copy.txt", CopySource=f"{bucket}/source.txt")
    assert anonymous_get(gateway, f"/{bucket}/plain-copy.txt").status_code == 403
    s3.copy_object(
        Bucket=bucket, Key="open-copy.txt", CopySource=f"{bucket}/source.txt", ACL="public-read"
    )
    assert anonymous_get(gateway, f"/{bucket}/open-copy.txt").content == b"source"

    upload = s3.create_multipart_upload(Bucket=bucket, Key="parts.bin", ACL="public-read")
    part = s3.upload_part(
        Bucket=bucket, Key="parts.bin", UploadId=upload["UploadId"], PartNumber=1, Body=b"p" * 10
    )
    s3.complete_multipart_upload(
        Bucket=bucket,
        Key="parts.bin",
        UploadId=upload["UploadId"],
        MultipartUpload={"Parts": [{"PartNumber": 1, "ETag": part["ETag"]}]},
    )
    assert anonymous_get(gateway, f"/{bucket}/parts.bin").content == b"p" * 10


def test_public_read_bucket_lists_but_does_not_open_objects(
    gateway: GatewayProcess, s3: S3Client
) -> None:
    name = f"acl-{uuid.uuid4().hex[:12]}"
    s3.create_bucket(Bucket=name, ACL="public-read")
    try:
        s3.put_object(Bucket=name, Key="a.txt", Body=b"a")
        assert public_grants(s3.get_bucket_acl(Bucket=name)) == ["READ"]
        anonymous = client(gateway.endpoint, signature_version=botocore.UNSIGNED)
        assert [o["Key"] for o in anonymous.list_objects_v2(Bucket=name)["Contents"]] == ["a.txt"]
        # As in S3, a bucket's READ is the listing: the objects keep their own ACL.
        assert anonymous_get(gateway, f"/{name}/a.txt").status_code == 403
        # Who may list may learn that a key is missing.
        assert error_code(anonymous_get(gateway, f"/{name}/none.txt")) == "NoSuchKey"

        s3.put_bucket_acl(Bucket=name, ACL="private")
        assert public_grants(s3.get_bucket_acl(Bucket=name)) == []
        with pytest.raises(ClientError) as refused:
            anonymous.list_objects_v2(Bucket=name)
        assert error_of(refused) == (403, "AccessDenied")
    finally:
        s3.delete_object(Bucket=name, Key="a.txt")
        s3.delete_bucket(Bucket=name)


def test_bucket_public_by_configuration(s3: S3Client) -> None:
    assert public_grants(s3.get_bucket_acl(Bucket=PUBLIC_BUCKET)) == ["READ"]
    with pytest.raises(ClientError) as refused:
        s3.put_bucket_acl(Bucket=PUBLIC_BUCKET, ACL="private")
    assert error_of(refused) == (400, "InvalidRequest")
    assert public_grants(s3.get_bucket_acl(Bucket=PUBLIC_BUCKET)) == ["READ"]


@pytest.mark.parametrize(
    ("acl", "expected"),
    [
        ("authenticated-read", (501, "NotImplemented")),
        ("public-read-write", (501, "NotImplemented")),
        ("aws-exec-read", (501, "NotImplemented")),
    ],
)
def test_acl_that_cannot_be_honoured_is_refused(
    s3: S3Client, bucket: str, acl: str, expected: tuple[int, str]
) -> None:
    with pytest.raises(ClientError) as refused:
        s3.put_object(Bucket=bucket, Key="x.txt", Body=b"x", ACL=acl)
    assert error_of(refused) == expected
    with pytest.raises(ClientError):
        s3.head_object(Bucket=bucket, Key="x.txt")


def test_odd_acl_requests_over_http(gateway: GatewayProcess, s3: S3Client, bucket: str) -> None:
    def put(path: str, body: bytes = b"x", **headers: str) -> requests.Response:
        url = f"{gateway.endpoint}/{bucket}/{path}"
        signed = sign("PUT", url, hashlib.sha256(body).hexdigest(), headers)
        return requests.put(url, data=body, headers=signed, timeout=10)

    # An unknown canned ACL is an argument error; nothing is stored.
    response = put("bogus.txt", **{"x-amz-acl": "everyone-please"})
    assert (response.status_code, error_code(response)) == (400, "InvalidArgument")
    # bucket-owner-full-control is what every object here has already.
    assert put("owner.txt", **{"x-amz-acl": "bucket-owner-full-control"}).status_code == 200
    # A canned ACL and grant headers together are refused, as S3 does.
    response = put("both.txt", **{"x-amz-acl": "private", "x-amz-grant-read": f'uri="{ALL_USERS}"'})
    assert (response.status_code, error_code(response)) == (400, "InvalidRequest")
    # A grant to everyone is the same as public-read; a grant to someone else is not honoured.
    assert put("granted.txt", **{"x-amz-grant-read": f'uri="{ALL_USERS}"'}).status_code == 200
    assert anonymous_get(gateway, f"/{bucket}/granted.txt").status_code == 200
    response = put("other.txt", **{"x-amz-grant-read": 'id="someone-else"'})
    assert (response.status_code, error_code(response)) == (501, "NotImplemented")
    keys = [o["Key"] for o in s3.list_objects_v2(Bucket=bucket).get("Contents", [])]
    assert keys == ["granted.txt", "owner.txt"]

    # Put*Acl: a body that is no ACL, a grant to another account, neither header nor body.
    s3.put_object(Bucket=bucket, Key="a.txt", Body=b"a")
    response = put("a.txt?acl", b"<AccessControlPolicy><oops/>")
    assert (response.status_code, error_code(response)) == (400, "MalformedACLError")
    other = s3.get_object_acl(Bucket=bucket, Key="a.txt")
    other.pop("ResponseMetadata")
    other["Grants"].append(
        {"Grantee": {"Type": "CanonicalUser", "ID": "another-account"}, "Permission": "READ"}
    )
    with pytest.raises(ClientError) as refused:
        s3.put_object_acl(Bucket=bucket, Key="a.txt", AccessControlPolicy=other)
    assert error_of(refused) == (501, "NotImplemented")
    response = put("a.txt?acl", b"")
    assert (response.status_code, error_code(response)) == (400, "MissingSecurityHeader")
    assert public_grants(s3.get_object_acl(Bucket=bucket, Key="a.txt")) == []


def test_acls_cannot_be_changed_without_write_access(gateway: GatewayProcess, s3: S3Client) -> None:
    s3.put_object(Bucket=PUBLIC_BUCKET, Key="acl-target.txt", Body=b"t")
    url = f"{gateway.endpoint}/{PUBLIC_BUCKET}/acl-target.txt?acl"
    headers = {"x-amz-acl": "public-read"}
    # Anonymous, and a credential that may only read the bucket.
    assert error_code(requests.put(url, headers=headers, timeout=10)) == "AccessDenied"
    reader = client(gateway.endpoint, READER_ACCESS_KEY, READER_SECRET_KEY)
    with pytest.raises(ClientError) as refused:
        reader.put_object_acl(Bucket=PUBLIC_BUCKET, Key="acl-target.txt", ACL="public-read")
    assert error_of(refused) == (403, "AccessDenied")
    with pytest.raises(ClientError) as refused:
        reader.put_bucket_acl(Bucket=PUBLIC_BUCKET, ACL="public-read")
    assert error_of(refused) == (403, "AccessDenied")
    assert error_code(requests.get(url, timeout=10)) == "AccessDenied"


def test_aws_s3_sync_with_public_read(gateway: GatewayProcess, bucket: str, tmp_path: Path) -> None:
    aws = AwsCli(gateway.endpoint, cli_env(tmp_path), None, True)
    site = tmp_path / "site"
    (site / "css").mkdir(parents=True)
    (site / "index.html").write_text("<h1>home</h1>")
    (site / "css" / "main.css").write_text("h1 {}")
    aws.run("s3", "sync", str(site), f"s3://{bucket}/", "--acl", "public-read")
    assert anonymous_get(gateway, f"/{bucket}/index.html").text == "<h1>home</h1>"
    assert anonymous_get(gateway, f"/{bucket}/css/main.css").text == "h1 {}"


def test_s3cmd_put_public(
    gateway: GatewayProcess, s3: S3Client, bucket: str, tmp_path: Path
) -> None:
    run = s3cmd_runner(gateway, tmp_path)
    site = tmp_path / "site"
    site.mkdir()
    page = site / "page.html"
    page.write_text("<p>public</p>")

    output = run("put", "-P", str(page), f"s3://{bucket}/page.html")
    assert "Public URL" in output
    assert anonymous_get(gateway, f"/{bucket}/page.html").text == "<p>public</p>"
    run("setacl", "--acl-private", f"s3://{bucket}/page.html")
    assert anonymous_get(gateway, f"/{bucket}/page.html").status_code == 403
    run("sync", "-P", f"{site}/", f"s3://{bucket}/synced/")
    assert anonymous_get(gateway, f"/{bucket}/synced/page.html").status_code == 200


def rclone_executable() -> str:
    path = shutil.which("rclone")
    if path is None:
        message = "rclone is not installed (apt-get install rclone, as .ci/run does)"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    return path


def test_rclone_with_public_read_acl(gateway: GatewayProcess, s3: S3Client, tmp_path: Path) -> None:
    """rclone's remote with `acl = public-read`: bucket creation, uploads (multipart too),
    server-side copies and the purge all succeed, and what it uploads is public."""
    rclone = rclone_executable()
    config = tmp_path / "rclone.conf"
    config.write_text(
        "[gw]\ntype = s3\nprovider = Other\n"
        f"access_key_id = {ROOT_ACCESS_KEY}\nsecret_access_key = {ROOT_SECRET_KEY}\n"
        f"endpoint = {gateway.endpoint}\nregion = {REGION}\nacl = public-read\n"
    )
    site = tmp_path / "site"
    (site / "img").mkdir(parents=True)
    (site / "index.html").write_text("<h1>rclone</h1>")
    big = os.urandom(12 * 1024 * 1024)
    (site / "img" / "big.bin").write_bytes(big)
    # rclone reads a CA bundle named in the environment, which it cannot use for plain HTTP.
    env = {k: v for k, v in os.environ.items() if k != "AWS_CA_BUNDLE"}

    def run(*args: str) -> None:
        result = subprocess.run(
            [rclone, "--config", str(config), *args],
            capture_output=True,
            text=True,
            timeout=120,
            env=env,
        )
        assert result.returncode == 0, result.stdout + result.stderr

    bucket = f"rclone-{uuid.uuid4().hex[:12]}"
    run("mkdir", f"gw:{bucket}")
    run("copy", str(site), f"gw:{bucket}", "--s3-upload-cutoff", "5M", "--s3-chunk-size", "5M")
    run("copyto", f"gw:{bucket}/index.html", f"gw:{bucket}/copy.html")
    assert anonymous_get(gateway, f"/{bucket}/index.html").text == "<h1>rclone</h1>"
    assert anonymous_get(gateway, f"/{bucket}/copy.html").text == "<h1>rclone</h1>"
    assert anonymous_get(gateway, f"/{bucket}/img/big.bin").content == big
    assert s3.head_object(Bucket=bucket, Key="img/big.bin")["ETag"].endswith('-3"')
    run("purge", f"gw:{bucket}")
    assert bucket not in [b["Name"] for b in s3.list_buckets()["Buckets"]]
