"""Per-credential grants, as a matrix: each kind of grant against each kind of operation.

A gateway process over the same database and storage as `gateway` is configured with one
credential per grant on a target bucket: read, write, read-write, a "*" grant, and none (a grant
on another bucket only). Each credential then tries every operation on the target bucket, and
copies from a source bucket that only the "*" credential may read. What each may do follows
from its grant alone; whatever it may not do is AccessDenied and changes nothing.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from urllib.parse import quote

import pytest
import requests
from botocore.auth import S3SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials
from botocore.exceptions import ClientError

from tests.conftest import LOCAL, REGION, UPSTREAM, GatewayProcess, client
from tests.unit.variants import images

# Protocol behaviour: the sealed profile (local disk underneath) adds nothing here.
GATEWAY_PROFILES = [LOCAL, UPSTREAM]

ROLES = ["read", "write", "read-write", "star", "none"]
READERS = {"read", "read-write", "star"}
WRITERS = {"write", "read-write", "star"}


def access_key(role: str) -> str:
    return f"GWGRANT{role.upper().replace('-', '')}"


def secret_key(role: str) -> str:
    return f"grant-secret-of-{role}"


def fresh_bucket(role: str, token: str) -> str:
    return f"grants-new-{role}-{token}"


@dataclass
class Grants:
    process: GatewayProcess
    target: str  # the bucket every grant is about
    source: str  # a bucket only "star" (and root) may read
    token: str

    def fresh_bucket(self, role: str) -> str:
        """A bucket that does not exist yet, granted to ``role`` as the target is."""
        return fresh_bucket(role, self.token)

    def client(self, role: str):
        return client(
            self.process.endpoint,
            access_key(role),
            secret_key(role),
            retries={"total_max_attempts": 1},
        )


def credentials(target: str, fresh: dict[str, str]) -> list[dict[str, object]]:
    grants: dict[str, dict[str, str]] = {
        "read": {target: "read", fresh["read"]: "read"},
        "write": {target: "write", fresh["write"]: "write"},
        "read-write": {target: "read-write", fresh["read-write"]: "read-write"},
        "star": {"*": "read-write"},
        "none": {fresh["none"] + "-other": "read-write"},
    }
    return [
        {
            "access_key": access_key(role),
            "secret_key": secret_key(role),
            "buckets": grants[role],
        }
        for role in ROLES
    ]


@pytest.fixture(scope="module")
def grants(gateway: GatewayProcess, s3) -> Iterator[Grants]:
    token = uuid.uuid4().hex[:10]
    target, source = f"grants-{token}", f"grants-src-{token}"
    fresh = {role: fresh_bucket(role, token) for role in ROLES}
    process = gateway.sibling(
        gateway.config_path.with_name(f"gateway-grants-{token}.yaml"),
        credentials=credentials(target, fresh),
    )
    for name in (target, source):
        s3.create_bucket(Bucket=name)
    s3.put_object(Bucket=target, Key="object", Body=b"target bytes")
    s3.put_object(
        Bucket=target,
        Key="photo.jpg",
        Body=images.jpeg_with_orientation(1),
        ContentType="image/jpeg",
    )
    s3.put_object(Bucket=source, Key="secret", Body=b"source bytes only star may read")
    with process.running():
        yield Grants(process, target, source, token)


def denied(call) -> None:
    with pytest.raises(ClientError) as excinfo:
        call()
    response = excinfo.value.response
    assert response["ResponseMetadata"]["HTTPStatusCode"] == 403, response
    if excinfo.value.operation_name != "HeadObject":  # HEAD carries no error body
        assert response["Error"]["Code"] == "AccessDenied", response


def exists(s3, bucket: str, key: str) -> bool:
    try:
        s3.head_object(Bucket=bucket, Key=key)
    except ClientError as error:
        assert error.response["ResponseMetadata"]["HTTPStatusCode"] == 404
        return False
    return True


def variant_get(grants: Grants, role: str, key: str, preset: str) -> requests.Response:
    url = f"{grants.process.endpoint}/{grants.target}/{quote(key)}?variant={preset}"
    request = AWSRequest(method="GET", url=url)
    request.headers["x-amz-content-sha256"] = "UNSIGNED-PAYLOAD"
    credentials = Credentials(access_key(role), secret_key(role))
    S3SigV4Auth(credentials, "s3", REGION).add_auth(request)
    return requests.get(url, headers=dict(request.headers), timeout=60)


@pytest.mark.parametrize("role", ROLES)
def test_reads_follow_the_grant(grants: Grants, role: str) -> None:
    s3 = grants.client(role)
    calls = {
        "GetObject": lambda: s3.get_object(Bucket=grants.target, Key="object")["Body"].read(),
        "HeadObject": lambda: s3.head_object(Bucket=grants.target, Key="object"),
        "ListObjectsV2": lambda: s3.list_objects_v2(Bucket=grants.target),
        "ListObjects": lambda: s3.list_objects(Bucket=grants.target),
    }
    for call in calls.values():
        if role in READERS:
            call()
        else:
            denied(call)
    if role in READERS:
        assert s3.get_object(Bucket=grants.target, Key="object")["Body"].read() == b"target bytes"
        listed = s3.list_objects_v2(Bucket=grants.target)["Contents"]
        assert sorted(entry["Key"] for entry in listed) == ["object", "photo.jpg"]

    response = variant_get(grants, role, "photo.jpg", "small")
    if role in READERS:
        assert response.status_code == 200, response.text
        assert response.headers["Content-Type"] == "image/png"
    else:
        assert response.status_code == 403, response.text
        assert b"<Code>AccessDenied</Code>" in response.content


@pytest.mark.parametrize("role", ROLES)
def test_writes_follow_the_grant(grants: Grants, s3, role: str) -> None:
    mine = grants.client(role)
    key = f"written-by-{role}"
    put = lambda: mine.put_object(Bucket=grants.target, Key=key, Body=b"new")  # noqa: E731
    if role in WRITERS:
        put()
        assert s3.get_object(Bucket=grants.target, Key=key)["Body"].read() == b"new"
    else:
        denied(put)
        assert not exists(s3, grants.target, key)

    victim = f"victim-of-{role}"
    s3.put_object(Bucket=grants.target, Key=victim, Body=b"keep me unless allowed")
    delete = lambda: mine.delete_object(Bucket=grants.target, Key=victim)  # noqa: E731
    batch = lambda: mine.delete_objects(  # noqa: E731
        Bucket=grants.target, Delete={"Objects": [{"Key": victim}]}
    )
    if role in WRITERS:
        delete()
        assert not exists(s3, grants.target, victim)
    else:
        denied(delete)
        denied(batch)
        assert exists(s3, grants.target, victim)

    # Multipart uploads are writes too.
    create = lambda: mine.create_multipart_upload(Bucket=grants.target, Key=key)  # noqa: E731
    if role in WRITERS:
        upload_id = create()["UploadId"]
        mine.abort_multipart_upload(Bucket=grants.target, Key=key, UploadId=upload_id)
    else:
        denied(create)


@pytest.mark.parametrize("role", ROLES)
def test_create_bucket_follows_the_grant(grants: Grants, s3, role: str) -> None:
    mine = grants.client(role)
    fresh = grants.fresh_bucket(role)
    create = lambda: mine.create_bucket(Bucket=fresh)  # noqa: E731
    if role in WRITERS:
        create()
        s3.head_bucket(Bucket=fresh)
    else:
        denied(create)
        with pytest.raises(ClientError) as excinfo:
            s3.head_bucket(Bucket=fresh)
        assert excinfo.value.response["ResponseMetadata"]["HTTPStatusCode"] == 404
    # A bucket granted to no one but "*": only that credential may make it.
    other = f"grants-other-{role}-{grants.token}"
    create_other = lambda: mine.create_bucket(Bucket=other)  # noqa: E731
    if role == "star":
        create_other()
    else:
        denied(create_other)


@pytest.mark.parametrize("role", ROLES)
def test_copies_need_read_of_the_source_and_write_of_the_target(
    grants: Grants, s3, role: str
) -> None:
    """CopyObject and UploadPartCopy from a bucket the credential cannot read into one it can
    write are refused, and copy nothing; only "*", which may read the source, copies."""
    mine = grants.client(role)
    source = {"Bucket": grants.source, "Key": "secret"}
    key = f"copied-by-{role}"
    copy = lambda: mine.copy_object(Bucket=grants.target, Key=key, CopySource=source)  # noqa: E731
    if role == "star":
        copy()
        got = s3.get_object(Bucket=grants.target, Key=key)["Body"].read()
        assert got == b"source bytes only star may read"
    else:
        denied(copy)
        assert not exists(s3, grants.target, key)

    # The upload is root's, so every credential reaches the part copy itself.
    upload_id = s3.create_multipart_upload(Bucket=grants.target, Key=key + "-parts")["UploadId"]
    part_copy = lambda: mine.upload_part_copy(  # noqa: E731
        Bucket=grants.target,
        Key=key + "-parts",
        UploadId=upload_id,
        PartNumber=1,
        CopySource=source,
    )
    try:
        if role == "star":
            part_copy()
        else:
            denied(part_copy)
        parts = s3.list_parts(Bucket=grants.target, Key=key + "-parts", UploadId=upload_id)
        assert len(parts.get("Parts", [])) == (1 if role == "star" else 0)
    finally:
        s3.abort_multipart_upload(Bucket=grants.target, Key=key + "-parts", UploadId=upload_id)

    # Within the target bucket a copy needs both: the write-only credential cannot read it.
    inside = lambda: mine.copy_object(  # noqa: E731
        Bucket=grants.target,
        Key=key + "-inside",
        CopySource={"Bucket": grants.target, "Key": "object"},
    )
    if role in READERS & WRITERS:
        inside()
        assert s3.get_object(Bucket=grants.target, Key=key + "-inside")["Body"].read() == (
            b"target bytes"
        )
    else:
        denied(inside)
        assert not exists(s3, grants.target, key + "-inside")
