"""POST Object: browser uploads with a signed policy, as boto3's generate_presigned_post makes
them (SigV2 by default for a custom endpoint, SigV4 when configured), posted as a browser's
form would be; every refusal is S3's XML error and stores nothing."""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import socket
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import botocore.config
import pytest
import requests
from botocore.auth import S3SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials

from tests.conftest import (
    GATEWAY_ENV,
    LOCAL_ONLY,
    READER_ACCESS_KEY,
    READER_SECRET_KEY,
    REGION,
    ROOT_ACCESS_KEY,
    ROOT_SECRET_KEY,
    UPSTREAM,
    GatewayProcess,
    S3Client,
    client,
    create_database,
    run_gateway,
    unaccounted_blobs,
)

MIB = 1024 * 1024


def post(
    presigned: dict[str, Any],
    data: bytes,
    filename: str = "photo.jpg",
    extra: dict[str, str] | None = None,
) -> requests.Response:
    """The form a browser posts: the policy's fields, then the file."""
    fields = {**presigned["fields"], **(extra or {})}
    return requests.post(
        presigned["url"], data=fields, files={"file": (filename, data)}, timeout=60
    )


def error_code(response: requests.Response) -> str:
    return response.text.split("<Code>")[1].split("</Code>")[0]


def keys(s3: S3Client, bucket: str) -> list[str]:
    return [o["Key"] for o in s3.list_objects_v2(Bucket=bucket).get("Contents", [])]


@pytest.fixture
def signer_v4(gateway: GatewayProcess) -> S3Client:
    return client(gateway.endpoint, signature_version="s3v4")


def test_default_boto3_form_uploads_a_file(s3: S3Client, bucket: str) -> None:
    presigned = s3.generate_presigned_post(bucket, "uploads/${filename}")
    assert "signature" in presigned["fields"]  # SigV2: boto3's default here
    response = post(presigned, b"hello from a form", filename="hello.txt")
    assert response.status_code == 204, response.text
    assert response.headers["ETag"] == f'"{hashlib.md5(b"hello from a form").hexdigest()}"'
    assert response.headers["Location"].endswith(f"/{bucket}/uploads/hello.txt")
    stored = s3.get_object(Bucket=bucket, Key="uploads/hello.txt")
    assert stored["Body"].read() == b"hello from a form"


def test_sigv4_form_with_metadata_acl_and_201(
    gateway: GatewayProcess, s3: S3Client, signer_v4: S3Client, bucket: str
) -> None:
    fields = {
        "acl": "public-read",
        "Content-Type": "image/png",
        "x-amz-meta-owner": "ada",
        "success_action_status": "201",
        "Cache-Control": "max-age=60",
    }
    conditions: list[Any] = [
        {"acl": "public-read"},
        ["starts-with", "$Content-Type", "image/"],
        ["eq", "$x-amz-meta-owner", "ada"],
        {"success_action_status": "201"},
        ["starts-with", "$Cache-Control", ""],
        ["content-length-range", 1, 1024],
    ]
    presigned = signer_v4.generate_presigned_post(
        bucket, "avatars/ada.png", Fields=fields, Conditions=conditions
    )
    assert presigned["fields"]["x-amz-algorithm"] == "AWS4-HMAC-SHA256"
    response = post(presigned, b"\x89PNG fake")
    assert response.status_code == 201, response.text
    assert "<Key>avatars/ada.png</Key>" in response.text
    assert f"<Bucket>{bucket}</Bucket>" in response.text
    head = s3.head_object(Bucket=bucket, Key="avatars/ada.png")
    assert head["ContentType"] == "image/png"
    assert head["Metadata"] == {"owner": "ada"}
    assert head["CacheControl"] == "max-age=60"
    public = requests.get(f"{gateway.endpoint}/{bucket}/avatars/ada.png", timeout=10)
    assert public.status_code == 200 and public.content == b"\x89PNG fake"


def test_success_action_redirect(s3: S3Client, bucket: str) -> None:
    target = "https://site.example/done?from=form"
    presigned = s3.generate_presigned_post(
        bucket,
        "r.txt",
        Fields={"success_action_redirect": target},
        Conditions=[{"success_action_redirect": target}],
    )
    fields = presigned["fields"]
    response = requests.post(
        presigned["url"],
        data=fields,
        files={"file": ("r.txt", b"r")},
        allow_redirects=False,
        timeout=10,
    )
    assert response.status_code == 303
    location = response.headers["Location"]
    assert location.startswith(target + "&") and f"bucket={bucket}" in location
    assert "key=r.txt" in location and "etag=" in location


@pytest.mark.parametrize(
    ("case", "expected"),
    [
        ("other bucket", (403, "AccessDenied")),
        ("key outside prefix", (403, "AccessDenied")),
        ("extra field", (403, "AccessDenied")),
        ("condition on metadata", (403, "AccessDenied")),
        ("bad signature", (403, "SignatureDoesNotMatch")),
        ("unknown key", (403, "InvalidAccessKeyId")),
        ("too large", (400, "EntityTooLarge")),
        ("too small", (400, "EntityTooSmall")),
        ("read-only signer", (403, "AccessDenied")),
        ("no policy", (403, "AccessDenied")),
        ("no key", (400, "InvalidArgument")),
        ("no file", (400, "InvalidArgument")),
        ("bad policy", (400, "InvalidPolicyDocument")),
    ],
)
def test_refused_forms_store_nothing(
    gateway: GatewayProcess, s3: S3Client, bucket: str, case: str, expected: tuple[int, str]
) -> None:
    signer = s3
    if case == "unknown key":
        signer = client(gateway.endpoint, "NOSUCHKEYANYWHERE", "not-a-real-secret")
    if case == "read-only signer":
        signer = client(gateway.endpoint, READER_ACCESS_KEY, READER_SECRET_KEY)
    target_bucket = "some-other-bucket" if case == "other bucket" else bucket
    presigned = signer.generate_presigned_post(
        target_bucket,
        "in/${filename}",
        Fields={"x-amz-meta-tag": "a"},
        Conditions=[["content-length-range", 2, 10], {"x-amz-meta-tag": "a"}],
    )
    presigned["url"] = f"{gateway.endpoint}/{bucket}"
    fields = presigned["fields"]
    data = b"12345"
    if case == "key outside prefix":
        fields["key"] = "elsewhere/x.txt"
    elif case == "extra field":
        fields["x-amz-meta-unplanned"] = "surprise"
    elif case == "condition on metadata":
        fields["x-amz-meta-tag"] = "b"
    elif case == "bad signature":
        fields["signature"] = "AAAA" + fields["signature"][4:]
    elif case == "too large":
        data = b"x" * 11
    elif case == "too small":
        data = b"x"
    elif case == "no policy":
        fields = {"key": "in/anonymous.txt"}
    elif case == "no key":
        del fields["key"]
    elif case == "bad policy":
        # Signed as it should be, but no policy document.
        fields["policy"] = base64.b64encode(b"not json").decode()
        digest = hmac.new(ROOT_SECRET_KEY.encode(), fields["policy"].encode(), "sha1").digest()
        fields["signature"] = base64.b64encode(digest).decode()
    if case == "no file":
        response = requests.post(presigned["url"], files={**fields}, timeout=10)
    else:
        response = requests.post(
            presigned["url"], data=fields, files={"file": ("f.txt", data)}, timeout=10
        )
    assert (response.status_code, error_code(response)) == expected, response.text
    assert keys(s3, bucket) == []


def test_expired_policy(s3: S3Client, bucket: str) -> None:
    presigned = s3.generate_presigned_post(bucket, "late.txt", ExpiresIn=1)
    time.sleep(2)
    response = post(presigned, b"late")
    assert (response.status_code, error_code(response)) == (403, "AccessDenied")
    assert "Policy expired" in response.text
    assert keys(s3, bucket) == []


def test_not_a_form(gateway: GatewayProcess, bucket: str) -> None:
    response = requests.post(f"{gateway.endpoint}/{bucket}", data=b"x", timeout=10)
    assert (response.status_code, error_code(response)) == (412, "PreconditionFailed")
    response = requests.post(
        f"{gateway.endpoint}/{bucket}",
        data=b"--x\r\nnot a part at all",
        headers={"Content-Type": "multipart/form-data; boundary=x"},
        timeout=10,
    )
    assert response.status_code == 400


def test_truncated_upload_stores_nothing(
    gateway: GatewayProcess, s3: S3Client, bucket: str
) -> None:
    presigned = s3.generate_presigned_post(bucket, "cut.bin")
    boundary = "----cut" + uuid.uuid4().hex
    parts = [
        f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n{value}\r\n'
        for name, value in presigned["fields"].items()
    ]
    head = "".join(parts) + (
        f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="cut.bin"\r\n'
        "Content-Type: application/octet-stream\r\n\r\n"
    )
    body = head.encode() + b"x" * 100_000
    with socket.create_connection(("127.0.0.1", gateway.port), timeout=10) as sock:
        sock.sendall(
            (
                f"POST /{bucket} HTTP/1.1\r\nHost: 127.0.0.1:{gateway.port}\r\n"
                f"Content-Type: multipart/form-data; boundary={boundary}\r\n"
                f"Content-Length: {len(body) + 1_000_000}\r\n\r\n"
            ).encode()
            + body
        )
        sock.shutdown(socket.SHUT_WR)
        answer = sock.recv(65536)
    assert answer.startswith(b"HTTP/1.1 400") or answer == b""
    assert keys(s3, bucket) == []
    if gateway.profile != UPSTREAM:
        # Its blob, written as the file streamed, is in the garbage log, never orphaned.
        assert unaccounted_blobs(gateway, gateway.dsn) == []


def test_form_without_its_closing_boundary_stores_nothing(
    gateway: GatewayProcess, s3: S3Client, bucket: str
) -> None:
    """A whole HTTP body whose form stops inside the file: the file's end is unknown."""
    presigned = s3.generate_presigned_post(bucket, "open-ended.txt")
    boundary = "----open" + uuid.uuid4().hex
    body = "".join(
        f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n{value}\r\n'
        for name, value in presigned["fields"].items()
    ) + (
        f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="f.txt"\r\n\r\n'
        "the file goes on and then the body just ends"
    )
    response = requests.post(
        presigned["url"],
        data=body.encode(),
        headers={"Content-Type": f"multipart/form-data; boundary={boundary}"},
        timeout=10,
    )
    assert (response.status_code, error_code(response)) == (400, "IncompleteBody")
    assert keys(s3, bucket) == []


def _rss(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


@LOCAL_ONLY
def test_large_file_streams_with_bounded_memory(
    gateway: GatewayProcess, s3: S3Client, bucket: str
) -> None:
    assert gateway.process is not None
    pid = gateway.process.pid
    presigned = s3.generate_presigned_post(bucket, "big.bin")
    boundary = "----big" + uuid.uuid4().hex
    block = os.urandom(MIB)
    size = 96 * MIB

    def form() -> Iterator[bytes]:
        for name, value in presigned["fields"].items():
            yield (
                f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n{value}\r\n'
            ).encode()
        yield (
            f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="big.bin"'
            "\r\n\r\n"
        ).encode()
        for _ in range(size // MIB):
            yield block
        yield f"\r\n--{boundary}--\r\n".encode()

    baseline = _rss(pid)
    peak = baseline
    done = threading.Event()

    def sample() -> None:
        nonlocal peak
        while not done.is_set():
            peak = max(peak, _rss(pid))
            time.sleep(0.01)

    sampler = threading.Thread(target=sample)
    sampler.start()
    try:
        response = requests.post(
            presigned["url"],
            data=form(),
            headers={"Content-Type": f"multipart/form-data; boundary={boundary}"},
            timeout=120,
        )
    finally:
        done.set()
        sampler.join()
    assert response.status_code == 204, response.text
    assert s3.head_object(Bucket=bucket, Key="big.bin")["ContentLength"] == size
    # Bounded by the reader's chunks and the writer's buffers, not by the file.
    assert peak - baseline < 32 * MIB, (baseline, peak)
    got = s3.get_object(Bucket=bucket, Key="big.bin", Range="bytes=0-1048575")["Body"].read()
    assert got == block


def test_cors_applies_to_form_uploads(s3: S3Client, bucket: str) -> None:
    origin = "https://forms.example"
    rule = {"AllowedOrigins": [origin], "AllowedMethods": ["POST"], "ExposeHeaders": ["ETag"]}
    s3.put_bucket_cors(Bucket=bucket, CORSConfiguration={"CORSRules": [rule]})
    presigned = s3.generate_presigned_post(bucket, "cors.txt")
    fields = presigned["fields"]
    for data, status in ((b"ok", 204), (None, 400)):
        files = {"file": ("cors.txt", data)} if data is not None else {"not-file": ("x", b"x")}
        response = requests.post(
            presigned["url"], data=fields, files=files, headers={"Origin": origin}, timeout=10
        )
        assert response.status_code == status
        assert response.headers["Access-Control-Allow-Origin"] == origin
        assert response.headers["Access-Control-Expose-Headers"] == "ETag"


def encoded_form(
    fields: dict[str, str], filename: str, data: bytes, after: dict[str, str] | None = None
) -> tuple[bytes, dict[str, str]]:
    """A form as a browser encodes it, with ``after``'s fields following the file; (body,
    headers)."""
    boundary = "----form" + uuid.uuid4().hex

    def field(name: str, value: str) -> bytes:
        return (
            f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n{value}\r\n'
        ).encode()

    body = b"".join(field(name, value) for name, value in fields.items())
    body += (
        f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="{filename}"'
        "\r\nContent-Type: application/octet-stream\r\n\r\n"
    ).encode()
    body += data + b"\r\n"
    body += b"".join(field(name, value) for name, value in (after or {}).items())
    body += f"--{boundary}--\r\n".encode()
    return body, {"Content-Type": f"multipart/form-data; boundary={boundary}"}


@pytest.mark.parametrize(("asked", "status"), [("200", 200), ("204", 204), ("302", 204)])
def test_success_action_status(s3: S3Client, bucket: str, asked: str, status: int) -> None:
    """200 and 204 answer an empty body; a value S3 does not know means its default, 204."""
    presigned = s3.generate_presigned_post(
        bucket,
        "status.txt",
        Fields={"success_action_status": asked},
        Conditions=[{"success_action_status": asked}],
    )
    response = post(presigned, b"status")
    assert response.status_code == status, response.text
    assert response.content == b""
    assert response.headers["ETag"] == f'"{hashlib.md5(b"status").hexdigest()}"'
    assert s3.get_object(Bucket=bucket, Key="status.txt")["Body"].read() == b"status"


def test_virtual_host_style_form(gateway: GatewayProcess, s3: S3Client, bucket: str) -> None:
    presigned = s3.generate_presigned_post(bucket, "vh/${filename}")
    host = f"{bucket}.s3.localtest:{gateway.port}"
    response = requests.post(
        f"{gateway.endpoint}/",
        headers={"Host": host},
        data=presigned["fields"],
        files={"file": ("v h.txt", b"virtual")},
        timeout=10,
    )
    assert response.status_code == 204, response.text
    assert response.headers["Location"] == f"http://{host}/vh/v%20h.txt"
    assert s3.get_object(Bucket=bucket, Key="vh/v h.txt")["Body"].read() == b"virtual"


@pytest.mark.parametrize(
    ("acl", "expected"),
    [
        ("private", (204, None)),
        ("public-read-write", (501, "NotImplemented")),
        ("no-such-acl", (400, "InvalidArgument")),
    ],
)
def test_acl_field(
    gateway: GatewayProcess, s3: S3Client, bucket: str, acl: str, expected: tuple[int, str | None]
) -> None:
    """private and public-read are honoured; any other ACL is refused, never ignored."""
    presigned = s3.generate_presigned_post(
        bucket, "acl.txt", Fields={"acl": acl}, Conditions=[{"acl": acl}]
    )
    response = post(presigned, b"acl")
    status, code = expected
    assert response.status_code == status, response.text
    if code is None:
        anonymous = requests.get(f"{gateway.endpoint}/{bucket}/acl.txt", timeout=10)
        assert anonymous.status_code == 403
        assert s3.get_object_acl(Bucket=bucket, Key="acl.txt")["Grants"][0]["Permission"] == (
            "FULL_CONTROL"
        )
    else:
        assert error_code(response) == code
        assert keys(s3, bucket) == []


def test_checksum_fields_are_verified_and_stored(
    s3: S3Client, signer_v4: S3Client, bucket: str
) -> None:
    data = b"checked bytes"
    right = base64.b64encode(hashlib.sha256(data).digest()).decode()
    wrong = base64.b64encode(hashlib.sha256(b"other bytes").digest()).decode()
    for key, value in (("right.bin", right), ("wrong.bin", wrong)):
        presigned = signer_v4.generate_presigned_post(
            bucket,
            key,
            Fields={"x-amz-checksum-sha256": value},
            Conditions=[{"x-amz-checksum-sha256": value}],
        )
        response = post(presigned, data)
        if value == right:
            assert response.status_code == 204, response.text
        else:
            assert (response.status_code, error_code(response)) == (400, "BadDigest")
    head = s3.head_object(Bucket=bucket, Key="right.bin", ChecksumMode="ENABLED")
    assert head["ChecksumSHA256"] == right
    assert keys(s3, bucket) == ["right.bin"]


def test_fields_after_the_file_are_ignored(
    gateway: GatewayProcess, s3: S3Client, bucket: str
) -> None:
    """As in S3: neither refused as extra fields nor stored."""
    presigned = s3.generate_presigned_post(bucket, "late-fields.txt")
    body, headers = encoded_form(
        presigned["fields"],
        "late-fields.txt",
        b"the file",
        after={"x-amz-meta-late": "1", "Content-Type": "text/html"},
    )
    response = requests.post(presigned["url"], data=body, headers=headers, timeout=10)
    assert response.status_code == 204, response.text
    head = s3.head_object(Bucket=bucket, Key="late-fields.txt")
    assert head["Metadata"] == {} and head["ContentType"] == "binary/octet-stream"
    assert s3.get_object(Bucket=bucket, Key="late-fields.txt")["Body"].read() == b"the file"


def test_fields_before_the_file_are_bounded(s3: S3Client, bucket: str) -> None:
    presigned = s3.generate_presigned_post(bucket, "padded.txt")
    response = post(presigned, b"p", extra={"x-ignore-padding": "p" * (21 * 1024)})
    assert (response.status_code, error_code(response)) == (400, "MaxPostPreDataLengthExceeded")
    assert keys(s3, bucket) == []


@pytest.mark.parametrize(
    ("case", "expected"),
    [
        ("bad signature", (403, "SignatureDoesNotMatch")),
        ("unknown key", (403, "InvalidAccessKeyId")),
        ("other region", (400, "InvalidArgument")),
        ("other algorithm", (400, "InvalidArgument")),
        ("scope and date disagree", (400, "InvalidArgument")),
        ("no policy", (400, "InvalidArgument")),
        ("no signature", (400, "InvalidArgument")),
        ("no such bucket", (404, "NoSuchBucket")),
    ],
)
def test_refused_sigv4_forms_store_nothing(
    gateway: GatewayProcess, s3: S3Client, bucket: str, case: str, expected: tuple[int, str]
) -> None:
    region = "eu-west-1" if case == "other region" else REGION
    access_key, secret_key = (
        ("NOSUCHKEYANYWHERE", "not-a-real-secret")
        if case == "unknown key"
        else (ROOT_ACCESS_KEY, ROOT_SECRET_KEY)
    )
    signer = boto3.client(
        "s3",
        endpoint_url=gateway.endpoint,
        aws_access_key_id=access_key,
        aws_secret_access_key=secret_key,
        region_name=region,
        config=botocore.config.Config(signature_version="s3v4"),
    )
    target = f"gone-{uuid.uuid4().hex[:12]}" if case == "no such bucket" else bucket
    presigned = signer.generate_presigned_post(target, "v4.txt")
    fields = presigned["fields"]
    if case == "bad signature":
        fields["x-amz-signature"] = "0" * 64
    elif case == "other algorithm":
        fields["x-amz-algorithm"] = "AWS4-HMAC-SHA1"
    elif case == "scope and date disagree":
        fields["x-amz-date"] = "19990101T000000Z"
    elif case == "no policy":
        del fields["policy"]
    elif case == "no signature":
        del fields["x-amz-signature"]
    response = post(presigned, b"v4")
    assert (response.status_code, error_code(response)) == expected, response.text
    assert keys(s3, bucket) == []


def test_size_limits_hold_for_files_stored_as_blobs(tmp_path: Path, pg_server_dsn: str) -> None:
    """limits.max_object_size and content-length-range, on files too big to live in their row:
    refused while they stream, and no blob is left that nothing accounts for."""
    dsn = create_database(pg_server_dsn)
    limits = {
        "max_object_size": 256 * 1024,
        "garbage_grace_seconds": 3600,
        "body_idle_timeout_seconds": 2,
    }
    with run_gateway(tmp_path / "gateway", dsn, {}, GATEWAY_ENV, limits=limits) as gateway:
        s3 = client(gateway.endpoint)
        s3.create_bucket(Bucket="limited")
        unlimited = s3.generate_presigned_post("limited", "big.bin")
        response = post(unlimited, b"x" * (256 * 1024 + 1))
        assert (response.status_code, error_code(response)) == (400, "EntityTooLarge")
        assert "<MaxSizeAllowed>262144</MaxSizeAllowed>" in response.text
        ranged = s3.generate_presigned_post(
            "limited", "ranged.bin", Conditions=[["content-length-range", 0, 64 * 1024]]
        )
        response = post(ranged, b"x" * (128 * 1024))
        assert (response.status_code, error_code(response)) == (400, "EntityTooLarge")
        assert keys(s3, "limited") == []
        assert unaccounted_blobs(gateway, dsn) == []
        # At the limit, the same form is stored.
        assert post(unlimited, b"x" * (256 * 1024)).status_code == 204
        assert s3.head_object(Bucket="limited", Key="big.bin")["ContentLength"] == 256 * 1024


def test_a_form_is_signed_by_its_policy_not_its_headers(
    gateway: GatewayProcess, s3: S3Client, bucket: str
) -> None:
    """Whatever else a form's request carries (a stray Authorization header, a presigned
    query), its policy says who signed it."""
    presigned = s3.generate_presigned_post(bucket, "signed-by-policy.txt")
    response = requests.post(
        f"{presigned['url']}?X-Amz-Signature=junk",
        headers={"Authorization": "AWS4-HMAC-SHA256 Credential=junk"},
        data=presigned["fields"],
        files={"file": ("f.txt", b"by policy")},
        timeout=10,
    )
    assert response.status_code == 204, response.text
    got = s3.get_object(Bucket=bucket, Key="signed-by-policy.txt")["Body"].read()
    assert got == b"by policy"
    # Without a policy, even a valid header signature is no licence to write through a form.
    body, headers = encoded_form({"key": "by-header.txt"}, "f.txt", b"x")
    signed = AWSRequest("POST", f"{gateway.endpoint}/{bucket}", data=body, headers=headers)
    S3SigV4Auth(Credentials(ROOT_ACCESS_KEY, ROOT_SECRET_KEY), "s3", REGION).add_auth(signed)
    response = requests.post(signed.url, data=body, headers=dict(signed.headers), timeout=10)
    assert (response.status_code, error_code(response)) == (403, "AccessDenied")
    assert keys(s3, bucket) == ["signed-by-policy.txt"]
