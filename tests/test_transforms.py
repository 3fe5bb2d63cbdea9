"""Storage transforms (encryption, chunking with dedup), driven through a live gateway with
boto3 and aws-cli.

One gateway serves a bucket per profile: local plain, encrypted, chunked, and encrypted +
chunked (dedup); upstream (moto) encrypted, and encrypted + chunked (dedup). Behaviour must be
the same on every bucket; on the encrypted ones, storage holds no plaintext and altered bytes
never reach a client; identical chunks are stored once.
"""

from __future__ import annotations

import base64
import hashlib
import io
import os
import subprocess
import sys
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import botocore.exceptions
import pytest
import requests
import yaml
from PIL import Image

from tests.conftest import (
    GATEWAY_ENV,
    REGION,
    ROOT_ACCESS_KEY,
    ROOT_SECRET_KEY,
    UPSTREAM_ACCESS_KEY,
    UPSTREAM_SECRET_KEY,
    VARIANT_PRESETS,
    GatewayProcess,
    MotoServer,
    S3Client,
    client,
    create_database,
    db_fetch,
    run_gateway,
)
from tests.s3errors import error_of

PLAIN = "plain-local"
SEALED = "sealed-local"
SEALED_UPSTREAM = "sealed-upstream"
CHUNKED = "chunked-local"
SEALED_CHUNKED = "sealed-chunked-local"
SEALED_CHUNKED_UPSTREAM = "sealed-chunked-upstream"
BUCKETS = {
    PLAIN: "tf-plain",
    SEALED: "tf-sealed",
    SEALED_UPSTREAM: "tf-sealed-up",
    CHUNKED: "tf-chunked",
    SEALED_CHUNKED: "tf-sealed-chunked",
    SEALED_CHUNKED_UPSTREAM: "tf-sealed-chunked-up",
}
ENCRYPTED = [SEALED, SEALED_UPSTREAM, SEALED_CHUNKED, SEALED_CHUNKED_UPSTREAM]
UPSTREAM_PROFILES = [SEALED_UPSTREAM, SEALED_CHUNKED_UPSTREAM]
# Where each local profile keeps its blobs, under the data directory.
LOCAL_PATHS = {
    PLAIN: "plain",
    SEALED: "sealed",
    CHUNKED: "chunked",
    SEALED_CHUNKED: "sealed-chunked",
}
# Small chunks, so that a few hundred KiB make several.
CHUNK_SIZE = 64 * 1024
UPSTREAM_PREFIX = "sealed-tests/"
UPSTREAM_BLOBS = "_sealed-tests/blobs/"
UPSTREAM_CHUNKED_BLOBS = "_sealed-chunked-tests/blobs/"
KEY_1 = os.urandom(32)
KEY_2 = os.urandom(32)
ENV = {
    **GATEWAY_ENV,
    "UPSTREAM_ACCESS_KEY": UPSTREAM_ACCESS_KEY,
    "UPSTREAM_SECRET_KEY": UPSTREAM_SECRET_KEY,
    "TF_KEY_1": base64.b64encode(KEY_1).decode(),
    "TF_KEY_2": KEY_2.hex(),
}
# A run of bytes no test object has by chance: found in storage, it is a leak.
MARKER = b"PLAINTEXT-MARKER-7f3a9c-"
# What the gateway logs of a blob that does not open (the traceback of a body cut short, too).
LAZY_PRESETS = [name for name in VARIANT_PRESETS if not VARIANT_PRESETS[name].get("eager")]
FAILED_CHECK = pytest.mark.gateway_log(r"failed its integrity check", r"failed mid-body")


def encryption(active: str = "k1", keys: tuple[str, ...] = ("k1",)) -> dict[str, object]:
    refs = {"k1": "${TF_KEY_1}", "k2": "${TF_KEY_2}"}
    return {"active_key": active, "keys": {key: refs[key] for key in keys}}


def upstream_profile(moto: MotoServer, blobs: str, **transforms: object) -> dict[str, object]:
    return {
        "type": "upstream",
        "endpoint_url": moto.endpoint,
        "region": REGION,
        "bucket": moto.bucket,
        "prefix": UPSTREAM_PREFIX + "{bucket}/",
        "variants_prefix": blobs,
        "addressing_style": "path",
        "access_key": "${UPSTREAM_ACCESS_KEY}",
        "secret_key": "${UPSTREAM_SECRET_KEY}",
        **transforms,
    }


def storage(moto: MotoServer) -> dict[str, object]:
    sealed = encryption()
    chunking = {"chunk_size": CHUNK_SIZE, "dedup": True}
    local = {profile: {"type": "local", "path": path} for profile, path in LOCAL_PATHS.items()}
    local[SEALED]["encryption"] = sealed
    local[CHUNKED]["chunking"] = {"chunk_size": CHUNK_SIZE}
    local[SEALED_CHUNKED] |= {"encryption": sealed, "chunking": chunking}
    return {
        "storage_profiles": {
            "default": {"type": "local", "path": "blobs"},
            **local,
            SEALED_UPSTREAM: upstream_profile(moto, UPSTREAM_BLOBS, encryption=sealed),
            SEALED_CHUNKED_UPSTREAM: upstream_profile(
                moto, UPSTREAM_CHUNKED_BLOBS, encryption=sealed, chunking=chunking
            ),
        },
        # No eager preset: a background render must not race the tests that alter blobs.
        "buckets": {
            name: {"profile": profile, "variants": LAZY_PRESETS}
            for profile, name in BUCKETS.items()
        },
    }


@pytest.fixture(scope="module")
def transforms_gateway(
    tmp_root: Path, pg_server_dsn: str, moto_server: MotoServer
) -> Iterator[GatewayProcess]:
    dsn = create_database(pg_server_dsn)
    with run_gateway(tmp_root / "transforms", dsn, storage(moto_server), ENV) as process:
        yield process


@pytest.fixture(scope="module")
def s3(transforms_gateway: GatewayProcess) -> S3Client:
    return client(transforms_gateway.endpoint)


@pytest.fixture(params=list(BUCKETS))
def profile(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def bucket(profile: str) -> str:
    return BUCKETS[profile]


def body_of(size: int, seed: str) -> bytes:
    """``size`` bytes, the marker at the start of every 4 KiB, the rest varied."""
    block = MARKER + hashlib.sha256(seed.encode()).digest() * 128
    return (block[:4096] * (size // 4096 + 1))[:size]


def new_key() -> str:
    return f"obj-{uuid.uuid4().hex[:12]}"


SIZES = [0, 1, 65535, 65536, 65537, 3 * 1024 * 1024 + 17]


@pytest.mark.parametrize("size", SIZES)
def test_round_trip_with_plaintext_size_and_etag(
    s3: S3Client, profile: str, bucket: str, size: int
) -> None:
    key, data = new_key(), body_of(size, str(size))
    put = s3.put_object(Bucket=bucket, Key=key, Body=data)
    md5 = f'"{hashlib.md5(data).hexdigest()}"'
    assert put["ETag"] == md5
    head = s3.head_object(Bucket=bucket, Key=key)
    assert head["ContentLength"] == size
    assert head["ETag"] == md5
    got = s3.get_object(Bucket=bucket, Key=key)
    assert got["Body"].read() == data
    expected = "AES256" if profile in ENCRYPTED else None
    assert put.get("ServerSideEncryption") == expected
    assert head.get("ServerSideEncryption") == expected
    assert got.get("ServerSideEncryption") == expected


RANGES = [
    (0, 0),
    (0, 65535),
    (65535, 65536),
    (65536, 65536 * 2 - 1),
    (100, 300_000),
    (1_000_000, 3 * 1024 * 1024 + 16),
    (3 * 1024 * 1024, 3 * 1024 * 1024 + 16),
]


def test_ranges_cross_segment_boundaries(s3: S3Client, bucket: str) -> None:
    key, data = new_key(), body_of(3 * 1024 * 1024 + 17, "ranges")
    s3.put_object(Bucket=bucket, Key=key, Body=data)
    for first, last in RANGES:
        got = s3.get_object(Bucket=bucket, Key=key, Range=f"bytes={first}-{last}")
        assert got["Body"].read() == data[first : last + 1], (first, last)
        assert got["ContentRange"] == f"bytes {first}-{last}/{len(data)}"
    suffix = s3.get_object(Bucket=bucket, Key=key, Range="bytes=-70000")
    assert suffix["Body"].read() == data[-70000:]


def test_conditional_reads(s3: S3Client, bucket: str) -> None:
    key, data = new_key(), body_of(70_000, "conditional")
    etag = s3.put_object(Bucket=bucket, Key=key, Body=data)["ETag"]
    with pytest.raises(botocore.exceptions.ClientError) as caught:
        s3.get_object(Bucket=bucket, Key=key, IfNoneMatch=etag)
    assert caught.value.response["ResponseMetadata"]["HTTPStatusCode"] == 304
    assert s3.get_object(Bucket=bucket, Key=key, IfMatch=etag)["Body"].read() == data


def test_checksums_are_of_the_plaintext(s3: S3Client, bucket: str) -> None:
    key, data = new_key(), body_of(200_000, "checksum")
    s3.put_object(Bucket=bucket, Key=key, Body=data, ChecksumAlgorithm="SHA256")
    head = s3.head_object(Bucket=bucket, Key=key, ChecksumMode="ENABLED")
    assert head["ChecksumSHA256"] == base64.b64encode(hashlib.sha256(data).digest()).decode()


def test_multipart_and_part_copy(s3: S3Client, bucket: str) -> None:
    key, source_key = new_key(), new_key()
    first, second = body_of(5 * 1024 * 1024, "part-1"), body_of(5 * 1024 * 1024 + 3, "part-2")
    source = body_of(300_000, "copied-part")
    s3.put_object(Bucket=bucket, Key=source_key, Body=source)
    upload = s3.create_multipart_upload(Bucket=bucket, Key=key)["UploadId"]
    etag1 = s3.upload_part(Bucket=bucket, Key=key, UploadId=upload, PartNumber=1, Body=first)
    etag2 = s3.upload_part(Bucket=bucket, Key=key, UploadId=upload, PartNumber=2, Body=second)
    etag3 = s3.upload_part_copy(
        Bucket=bucket,
        Key=key,
        UploadId=upload,
        PartNumber=3,
        CopySource={"Bucket": bucket, "Key": source_key},
        CopySourceRange="bytes=1000-200999",
    )["CopyPartResult"]
    parts = [
        {"PartNumber": 1, "ETag": etag1["ETag"]},
        {"PartNumber": 2, "ETag": etag2["ETag"]},
        {"PartNumber": 3, "ETag": etag3["ETag"]},
    ]
    done = s3.complete_multipart_upload(
        Bucket=bucket, Key=key, UploadId=upload, MultipartUpload={"Parts": parts}
    )
    assert done["ETag"].endswith('-3"')
    whole = first + second + source[1000:201000]
    assert s3.get_object(Bucket=bucket, Key=key)["Body"].read() == whole
    boundary = len(first)
    got = s3.get_object(Bucket=bucket, Key=key, Range=f"bytes={boundary - 10}-{boundary + 9}")
    assert got["Body"].read() == whole[boundary - 10 : boundary + 10]


@pytest.mark.parametrize("source_profile", list(BUCKETS))
def test_copy_object_between_profiles(s3: S3Client, bucket: str, source_profile: str) -> None:
    source_key, key = new_key(), new_key()
    data = body_of(150_000, "copy")
    s3.put_object(Bucket=BUCKETS[source_profile], Key=source_key, Body=data)
    copied = s3.copy_object(
        Bucket=bucket, Key=key, CopySource={"Bucket": BUCKETS[source_profile], "Key": source_key}
    )
    assert copied["CopyObjectResult"]["ETag"] == f'"{hashlib.md5(data).hexdigest()}"'
    assert s3.get_object(Bucket=bucket, Key=key)["Body"].read() == data


def test_variants_render_from_plaintext(s3: S3Client, bucket: str) -> None:
    image = io.BytesIO()
    Image.new("RGB", (300, 200), (200, 30, 30)).save(image, "PNG")
    key = new_key() + ".png"
    s3.put_object(Bucket=bucket, Key=key, Body=image.getvalue(), ContentType="image/png")
    url = s3.generate_presigned_url("get_object", Params={"Bucket": bucket, "Key": key})
    answer = requests.get(url + "&variant=small", timeout=30)
    assert answer.status_code == 200, answer.text
    assert Image.open(io.BytesIO(answer.content)).size == (100, 67)
    again = requests.get(url + "&variant=small", timeout=30)
    assert again.content == answer.content


def test_sse_requests(s3: S3Client, profile: str, bucket: str) -> None:
    key = new_key()
    if profile in ENCRYPTED:
        put = s3.put_object(Bucket=bucket, Key=key, Body=b"x", ServerSideEncryption="AES256")
        assert put["ServerSideEncryption"] == "AES256"
    else:
        with pytest.raises(botocore.exceptions.ClientError) as caught:
            s3.put_object(Bucket=bucket, Key=key, Body=b"x", ServerSideEncryption="AES256")
        assert error_of(caught) == (400, "InvalidArgument")
        with pytest.raises(botocore.exceptions.ClientError) as caught:
            s3.head_object(Bucket=bucket, Key=key)
        assert caught.value.response["ResponseMetadata"]["HTTPStatusCode"] == 404
    with pytest.raises(botocore.exceptions.ClientError) as caught:
        s3.put_object(Bucket=bucket, Key=new_key(), Body=b"x", ServerSideEncryption="aws:kms")
    assert error_of(caught) == (501, "NotImplemented")
    with pytest.raises(botocore.exceptions.ClientError) as caught:
        s3.create_multipart_upload(Bucket=bucket, Key=new_key(), ServerSideEncryption="AES512")
    assert error_of(caught) == (400, "InvalidArgument")


def aws_cli(
    endpoint: str, directory: Path, ca_bundle: Path | None = None
) -> Callable[..., subprocess.CompletedProcess[str]]:
    """`aws s3 ...` against ``endpoint`` with the root credential and no other configuration."""
    env = {
        **os.environ,
        "AWS_ACCESS_KEY_ID": ROOT_ACCESS_KEY,
        "AWS_SECRET_ACCESS_KEY": ROOT_SECRET_KEY,
        "AWS_DEFAULT_REGION": REGION,
        "AWS_CONFIG_FILE": str(directory / "none"),
        **({"AWS_CA_BUNDLE": str(ca_bundle)} if ca_bundle else {}),
    }

    def aws(*arguments: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            ["aws", "--endpoint-url", endpoint, "s3", *arguments],
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )

    return aws


def test_aws_cli_sse(transforms_gateway: GatewayProcess, tmp_path: Path) -> None:
    source = tmp_path / "file.bin"
    data = body_of(9 * 1024 * 1024, "awscli")
    source.write_bytes(data)
    target = f"s3://{BUCKETS[SEALED]}/awscli.bin"
    aws = aws_cli(transforms_gateway.endpoint, tmp_path)

    copied = aws("cp", "--sse", "AES256", str(source), target)
    assert copied.returncode == 0, copied.stderr
    back = tmp_path / "back.bin"
    fetched = aws("cp", target, str(back))
    assert fetched.returncode == 0, fetched.stderr
    assert back.read_bytes() == data
    refused = aws("cp", "--sse", "AES256", str(source), f"s3://{BUCKETS[PLAIN]}/awscli.bin")
    assert refused.returncode != 0
    assert "InvalidArgument" in refused.stderr


def stored_files(gateway: GatewayProcess, profile: str) -> list[Path]:
    root = gateway.data_dir / LOCAL_PATHS[profile]
    return [path for path in root.rglob("*") if path.is_file()]


def test_storage_holds_no_plaintext(
    s3: S3Client, transforms_gateway: GatewayProcess, moto_server: MotoServer
) -> None:
    for profile in [*ENCRYPTED, PLAIN, CHUNKED]:
        bucket = BUCKETS[profile]
        s3.put_object(Bucket=bucket, Key=new_key(), Body=body_of(200_000, "leak"))
        s3.put_object(Bucket=bucket, Key=new_key(), Body=MARKER + b"small")
    for profile in [SEALED, SEALED_CHUNKED]:
        files = stored_files(transforms_gateway, profile)
        assert files and not [path for path in files if MARKER in path.read_bytes()], profile
    # The control: the same objects on the unencrypted profiles are found by the same search.
    for profile in [PLAIN, CHUNKED]:
        files = stored_files(transforms_gateway, profile)
        assert any(MARKER in path.read_bytes() for path in files), profile
    upstream = moto_server.client()
    for prefix in (UPSTREAM_BLOBS, UPSTREAM_CHUNKED_BLOBS):
        listed = upstream.list_objects_v2(Bucket=moto_server.bucket, Prefix=prefix)
        keys = [entry["Key"] for entry in listed.get("Contents", [])]
        assert keys
        for key in keys:
            stored = upstream.get_object(Bucket=moto_server.bucket, Key=key)["Body"].read()
            assert MARKER not in stored
    rows = db_fetch(
        transforms_gateway.dsn,
        "SELECT count(*) AS n FROM objects WHERE bucket = ANY($1) AND inline_data IS NOT NULL",
        [BUCKETS[profile] for profile in ENCRYPTED],
    )
    assert rows[0]["n"] == 0


@pytest.mark.parametrize("profile", [CHUNKED, SEALED_CHUNKED])
def test_chunks_are_separate_blobs_and_dedup_stores_them_once(
    s3: S3Client, transforms_gateway: GatewayProcess, profile: str
) -> None:
    bucket = BUCKETS[profile]
    data = os.urandom(5 * CHUNK_SIZE + 100)
    first = new_key()
    s3.put_object(Bucket=bucket, Key=first, Body=data)
    chunks = db_fetch(
        transforms_gateway.dsn,
        "SELECT chunk_key, size FROM blob_chunks WHERE blob_key = $1 ORDER BY seq",
        blob_of(transforms_gateway, bucket, first),
    )
    assert [row["size"] for row in chunks] == [CHUNK_SIZE] * 5 + [100]
    before = len(stored_files(transforms_gateway, profile))
    copies = [new_key() for _ in range(3)]
    for key in copies:
        s3.put_object(Bucket=bucket, Key=key, Body=data)
    copy = new_key()
    copied = s3.copy_object(Bucket=bucket, Key=copy, CopySource={"Bucket": bucket, "Key": first})
    assert copied["CopyObjectResult"]["ETag"] == f'"{hashlib.md5(data).hexdigest()}"'
    added = len(stored_files(transforms_gateway, profile)) - before
    # Without dedup every copy is stored again; with it, nothing is.
    assert added == (0 if profile == SEALED_CHUNKED else 4 * 6)
    if profile == SEALED_CHUNKED:
        # The copy is new references to the same chunks: no byte was read or written.
        copied_chunks = db_fetch(
            transforms_gateway.dsn,
            "SELECT chunk_key, size FROM blob_chunks WHERE blob_key = $1 ORDER BY seq",
            blob_of(transforms_gateway, bucket, copy),
        )
        assert copied_chunks == chunks
    s3.delete_object(Bucket=bucket, Key=first)
    assert s3.get_object(Bucket=bucket, Key=copy)["Body"].read() == data
    for key in copies:
        got = s3.get_object(
            Bucket=bucket, Key=key, Range=f"bytes={CHUNK_SIZE - 5}-{CHUNK_SIZE + 4}"
        )
        assert got["Body"].read() == data[CHUNK_SIZE - 5 : CHUNK_SIZE + 5]
    stats = transforms_gateway.command("stats")
    assert stats.returncode == 0, stats.stderr
    assert profile in stats.stdout


@FAILED_CHECK
def test_a_tampered_chunk_fails_the_read(s3: S3Client, transforms_gateway: GatewayProcess) -> None:
    bucket = BUCKETS[SEALED_CHUNKED]
    key, data = new_key(), os.urandom(3 * CHUNK_SIZE)
    s3.put_object(Bucket=bucket, Key=key, Body=data)
    (chunk,) = db_fetch(
        transforms_gateway.dsn,
        "SELECT chunk_key FROM blob_chunks WHERE blob_key = $1 AND seq = 1",
        blob_of(transforms_gateway, bucket, key),
    )
    path = transforms_gateway.data_dir / LOCAL_PATHS[SEALED_CHUNKED]
    file = path / chunk["chunk_key"][:2] / chunk["chunk_key"]
    stored = bytearray(file.read_bytes())
    stored[100] ^= 0x04
    file.write_bytes(bytes(stored))
    # The chunks before it still read; a read that touches it fails.
    assert s3.get_object(Bucket=bucket, Key=key, Range="bytes=0-999")["Body"].read() == data[:1000]
    with pytest.raises(botocore.exceptions.ClientError) as caught:
        s3.get_object(Bucket=bucket, Key=key, Range=f"bytes={CHUNK_SIZE}-{CHUNK_SIZE + 9}")
    assert error_of(caught) == (500, "InternalError")


def blob_of(gateway: GatewayProcess, bucket: str, key: str) -> str:
    rows = db_fetch(
        gateway.dsn, "SELECT storage_key FROM objects WHERE bucket = $1 AND key = $2", bucket, key
    )
    return str(rows[0]["storage_key"])


def files_of(gateway: GatewayProcess, profile: str, bucket: str, key: str) -> list[Path]:
    """The files holding an object of a local profile: its blob, or its blob's chunks."""
    storage_key = blob_of(gateway, bucket, key)
    rows = db_fetch(
        gateway.dsn,
        "SELECT chunk_key FROM blob_chunks WHERE profile = $1 AND blob_key = $2",
        profile,
        storage_key,
    )
    names = [row["chunk_key"] for row in rows] or [storage_key]
    root = gateway.data_dir / LOCAL_PATHS[profile]
    return [root / name[:2] / name for name in names]


def tamper_local(gateway: GatewayProcess, storage_key: str, offset: int) -> None:
    path = gateway.data_dir / "sealed" / storage_key[:2] / storage_key
    data = bytearray(path.read_bytes())
    data[offset] ^= 0x01
    path.write_bytes(bytes(data))


@FAILED_CHECK
def test_tampered_byte_fails_the_read(s3: S3Client, transforms_gateway: GatewayProcess) -> None:
    bucket = BUCKETS[SEALED]
    key, data = new_key(), body_of(2 * 1024 * 1024, "tamper")
    s3.put_object(Bucket=bucket, Key=key, Body=data)
    storage_key = blob_of(transforms_gateway, bucket, key)
    tamper_local(transforms_gateway, storage_key, 10)
    # Before the first byte: an S3 error, nothing of the object.
    with pytest.raises(botocore.exceptions.ClientError) as caught:
        s3.get_object(Bucket=bucket, Key=key)
    assert error_of(caught) == (500, "InternalError")
    # A range that does not touch the altered segment still reads.
    far = s3.get_object(Bucket=bucket, Key=key, Range="bytes=1000000-1000099")
    assert far["Body"].read() == data[1000000:1000100]


@FAILED_CHECK
def test_tampered_byte_late_in_the_body_cuts_the_connection(
    s3: S3Client, transforms_gateway: GatewayProcess
) -> None:
    bucket = BUCKETS[SEALED]
    key, data = new_key(), body_of(3 * 1024 * 1024, "tamper-late")
    s3.put_object(Bucket=bucket, Key=key, Body=data)
    tamper_local(transforms_gateway, blob_of(transforms_gateway, bucket, key), 2_500_000)
    got = s3.get_object(Bucket=bucket, Key=key)
    with pytest.raises(botocore.exceptions.BotoCoreError):
        received = got["Body"].read()
        # Whatever arrived is a prefix of the object, never altered bytes.
        assert data.startswith(received)
        raise AssertionError("the body was complete")


@FAILED_CHECK
def test_segments_swapped_or_cut_do_not_open(
    s3: S3Client, transforms_gateway: GatewayProcess
) -> None:
    bucket = BUCKETS[SEALED]
    key, data = new_key(), body_of(300_000, "swap")
    s3.put_object(Bucket=bucket, Key=key, Body=data)
    storage_key = blob_of(transforms_gateway, bucket, key)
    path = transforms_gateway.data_dir / "sealed" / storage_key[:2] / storage_key
    stored = path.read_bytes()
    segment = 65536 + 16
    path.write_bytes(stored[segment : 2 * segment] + stored[:segment] + stored[2 * segment :])
    with pytest.raises(botocore.exceptions.ClientError) as caught:
        s3.get_object(Bucket=bucket, Key=key, Range="bytes=0-99")
    assert error_of(caught) == (500, "InternalError")
    # Another object's blob under this one's name: its own key does not open it.
    other = new_key()
    s3.put_object(Bucket=bucket, Key=other, Body=data)
    path.write_bytes(
        (transforms_gateway.data_dir / "sealed" / blob_of(transforms_gateway, bucket, other)[:2])
        .joinpath(blob_of(transforms_gateway, bucket, other))
        .read_bytes()
    )
    with pytest.raises(botocore.exceptions.ClientError) as caught:
        s3.get_object(Bucket=bucket, Key=key)
    assert error_of(caught) == (500, "InternalError")
    assert s3.get_object(Bucket=bucket, Key=other)["Body"].read() == data


@FAILED_CHECK
def test_tampered_upstream_blob_fails_the_read(
    s3: S3Client, transforms_gateway: GatewayProcess, moto_server: MotoServer
) -> None:
    bucket = BUCKETS[SEALED_UPSTREAM]
    key, data = new_key(), body_of(100_000, "tamper-upstream")
    s3.put_object(Bucket=bucket, Key=key, Body=data)
    storage_key = blob_of(transforms_gateway, bucket, key)
    upstream = moto_server.client()
    stored = bytearray(
        upstream.get_object(Bucket=moto_server.bucket, Key=storage_key)["Body"].read()
    )
    stored[5] ^= 0x80
    upstream.put_object(Bucket=moto_server.bucket, Key=storage_key, Body=bytes(stored))
    with pytest.raises(botocore.exceptions.ClientError) as caught:
        s3.get_object(Bucket=bucket, Key=key)
    assert error_of(caught) == (500, "InternalError")


def test_plaintext_objects_already_upstream_are_adopted(
    s3: S3Client, moto_server: MotoServer
) -> None:
    bucket = BUCKETS[SEALED_UPSTREAM]
    upstream = moto_server.client()
    key = new_key()
    in_place = f"{UPSTREAM_PREFIX}{bucket}/{key}"
    upstream.put_object(Bucket=moto_server.bucket, Key=in_place, Body=b"written by another tool")
    assert s3.get_object(Bucket=bucket, Key=key)["Body"].read() == b"written by another tool"
    # Overwritten through the gateway: stored encrypted, and the plaintext copy is gone.
    s3.put_object(Bucket=bucket, Key=key, Body=MARKER + b"new")
    assert s3.get_object(Bucket=bucket, Key=key)["Body"].read() == MARKER + b"new"
    with pytest.raises(botocore.exceptions.ClientError):
        upstream.head_object(Bucket=moto_server.bucket, Key=in_place)
    # Deleted through the gateway: it does not come back by adoption.
    upstream.put_object(Bucket=moto_server.bucket, Key=in_place + "2", Body=b"other")
    assert s3.get_object(Bucket=bucket, Key=key + "2")["Body"].read() == b"other"
    s3.delete_object(Bucket=bucket, Key=key + "2")
    with pytest.raises(botocore.exceptions.ClientError) as caught:
        s3.get_object(Bucket=bucket, Key=key + "2")
    assert error_of(caught) == (404, "NoSuchKey")


def vault_storage(**encryption_config: object) -> dict[str, object]:
    vault: dict[str, object] = {"type": "local", "path": "vault"}
    if encryption_config:
        vault["encryption"] = encryption_config
    return {
        "storage_profiles": {"default": {"type": "local", "path": "blobs"}, "vault": vault},
        "buckets": {"vault-bucket": {"profile": "vault", "variants": ["*"]}},
    }


def test_rotation_and_encrypting_what_was_stored_before(tmp_path: Path, pg_server_dsn: str) -> None:
    """Plaintext objects from before encryption stay readable; `gateway rekey` rewraps under
    the new key and encrypts them; then the old key can go."""
    bucket = "vault-bucket"
    dsn = create_database(pg_server_dsn)
    objects: dict[str, bytes] = {
        "inline": MARKER + b"small",
        "single": body_of(300_000, "before"),
        "multi": body_of(5 * 1024 * 1024, "multi-1") + body_of(70_000, "multi-2"),
    }
    with run_gateway(tmp_path / "vault", dsn, vault_storage(), ENV) as plain:
        s3 = client(plain.endpoint)
        s3.put_object(Bucket=bucket, Key="inline", Body=objects["inline"])
        s3.put_object(Bucket=bucket, Key="single", Body=objects["single"])
        upload = s3.create_multipart_upload(Bucket=bucket, Key="multi")["UploadId"]
        parts = []
        for number, piece in enumerate(
            [objects["multi"][: 5 * 1024 * 1024], objects["multi"][5 * 1024 * 1024 :]], 1
        ):
            etag = s3.upload_part(
                Bucket=bucket, Key="multi", UploadId=upload, PartNumber=number, Body=piece
            )["ETag"]
            parts.append({"PartNumber": number, "ETag": etag})
        s3.complete_multipart_upload(
            Bucket=bucket, Key="multi", UploadId=upload, MultipartUpload={"Parts": parts}
        )
    first = plain.sibling(tmp_path / "k1.yaml", **vault_storage(**encryption("k1", ("k1",))))
    with first.running():
        s3 = client(first.endpoint)
        for key, data in objects.items():
            assert s3.get_object(Bucket=bucket, Key=key)["Body"].read() == data
        objects["sealed-k1"] = body_of(200_000, "k1")
        s3.put_object(Bucket=bucket, Key="sealed-k1", Body=objects["sealed-k1"])
    rotated = plain.sibling(tmp_path / "k2.yaml", **vault_storage(**encryption("k2", ("k1", "k2"))))
    done = rotated.command("rekey", "vault", "--encrypt-existing")
    assert done.returncode == 0, done.stderr
    assert "rewrapped 1 data keys under k2" in done.stdout
    assert "encrypted 4 blobs" in done.stdout
    keys = db_fetch(dsn, "SELECT DISTINCT key_id FROM blob_keys WHERE profile = 'vault'")
    assert [row["key_id"] for row in keys] == ["k2"]
    again = rotated.command("rekey", "vault", "--encrypt-existing")
    assert "rewrapped 0 data keys" in again.stdout and "encrypted 0 blobs" in again.stdout
    collected = rotated.command("gc", "--grace", "0")
    assert collected.returncode == 0, collected.stderr
    files = [path for path in (plain.data_dir / "vault").rglob("*") if path.is_file()]
    assert files and not [path for path in files if MARKER in path.read_bytes()]
    inline = db_fetch(dsn, "SELECT count(*) AS n FROM objects WHERE inline_data IS NOT NULL")
    assert inline[0]["n"] == 0
    # The old key is gone from the configuration: everything still reads.
    last = plain.sibling(tmp_path / "only-k2.yaml", **vault_storage(**encryption("k2", ("k2",))))
    with last.running():
        s3 = client(last.endpoint)
        for key, data in objects.items():
            assert s3.get_object(Bucket=bucket, Key=key)["Body"].read() == data
        got = s3.get_object(Bucket=bucket, Key="multi", Range="bytes=5242870-5242890")
        assert got["Body"].read() == objects["multi"][5242870:5242891]


def test_check_config_on_encryption(tmp_path: Path) -> None:
    def check(encryption_config: dict[str, object]) -> subprocess.CompletedProcess[str]:
        path = tmp_path / "gateway.yaml"
        path.write_text(
            yaml.safe_dump(
                {
                    "storage_profiles": {
                        "default": {"type": "local", "encryption": encryption_config}
                    }
                }
            )
        )
        return subprocess.run(
            [sys.executable, "-m", "gateway", "check-config", str(path)],
            env={**os.environ, **ENV},
            capture_output=True,
            text=True,
            timeout=60,
        )

    short = base64.b64encode(b"x" * 16).decode()
    wrong_length = check({"active_key": "k1", "keys": {"k1": "${SHORT_KEY}"}} | {})
    assert wrong_length.returncode == 1
    assert "SHORT_KEY" in wrong_length.stderr  # not set: named, never shown
    os.environ["SHORT_KEY"] = short
    try:
        wrong_length = check({"active_key": "k1", "keys": {"k1": "${SHORT_KEY}"}})
    finally:
        del os.environ["SHORT_KEY"]
    assert wrong_length.returncode == 1
    assert (
        "storage_profiles.default.encryption.keys.k1: a key must be 32 bytes" in wrong_length.stderr
    )
    assert short not in wrong_length.stderr + wrong_length.stdout
    unknown_active = check({"active_key": "k9", "keys": {"k1": "${TF_KEY_1}"}})
    assert unknown_active.returncode == 1
    assert "active_key: 'k9' is not among the keys" in unknown_active.stderr
    literal = KEY_1.hex()
    written = check({"active_key": "k1", "keys": {"k1": literal}})
    assert written.returncode == 0
    assert "warning: storage_profiles.default.encryption.keys.k1" in written.stderr
    assert literal not in written.stderr + written.stdout
    good = check({"active_key": "k1", "keys": {"k1": "${TF_KEY_1}"}})
    assert good.returncode == 0 and "warning" not in good.stderr
    assert ENV["TF_KEY_1"] not in good.stderr + good.stdout


@pytest.fixture(scope="module")
def s3_https(
    transforms_gateway: GatewayProcess, certificate: tuple[Path, Path]
) -> Iterator[S3Client]:
    """boto3 over HTTPS to a second process over the same database and storage: SSE-C keys
    travel only over TLS."""
    cert, key = certificate
    process = transforms_gateway.sibling(
        transforms_gateway.config_path.with_name("gateway-tls.yaml"),
        tls={"certificate": str(cert), "private_key": str(key)},
    )
    with process.running():
        yield client(process.endpoint, verify=str(cert))


CUSTOMER_KEY = os.urandom(32)
OTHER_KEY = os.urandom(32)


def sse_c(key: bytes = CUSTOMER_KEY) -> dict[str, str]:
    # boto3 base64-encodes the key and adds its MD5 itself.
    return {"SSECustomerAlgorithm": "AES256", "SSECustomerKey": key}  # type: ignore[dict-item]


def test_sse_c_round_trip(
    s3_https: S3Client, transforms_gateway: GatewayProcess, profile: str, bucket: str
) -> None:
    key, data = new_key(), body_of(200_000, "sse-c")
    put = s3_https.put_object(Bucket=bucket, Key=key, Body=data, **sse_c())
    key_md5 = base64.b64encode(hashlib.md5(CUSTOMER_KEY).digest()).decode()
    assert put["SSECustomerAlgorithm"] == "AES256"
    assert put["SSECustomerKeyMD5"] == key_md5
    got = s3_https.get_object(Bucket=bucket, Key=key, **sse_c())
    assert got["Body"].read() == data
    assert got["SSECustomerKeyMD5"] == key_md5
    ranged = s3_https.get_object(Bucket=bucket, Key=key, Range="bytes=65000-70000", **sse_c())
    assert ranged["Body"].read() == data[65000:70001]
    assert s3_https.head_object(Bucket=bucket, Key=key, **sse_c())["ContentLength"] == len(data)
    for call in (s3_https.get_object, s3_https.head_object):
        with pytest.raises(botocore.exceptions.ClientError) as caught:
            call(Bucket=bucket, Key=key)
        assert caught.value.response["ResponseMetadata"]["HTTPStatusCode"] == 400
        with pytest.raises(botocore.exceptions.ClientError) as caught:
            call(Bucket=bucket, Key=key, **sse_c(OTHER_KEY))
        assert caught.value.response["ResponseMetadata"]["HTTPStatusCode"] == 403
    # Nothing of the key is stored; only a salted MAC.
    rows = db_fetch(
        transforms_gateway.dsn,
        "SELECT metadata::text AS m FROM objects WHERE bucket = $1 AND key = $2",
        bucket,
        key,
    )
    stored = rows[0]["m"]
    assert base64.b64encode(CUSTOMER_KEY).decode() not in stored and key_md5 not in stored
    # Even on a plain profile, the bytes on disk are sealed.
    if profile not in UPSTREAM_PROFILES:
        files = files_of(transforms_gateway, profile, bucket, key)
        assert files and not [path for path in files if MARKER in path.read_bytes()]


def test_sse_c_multipart_and_copies(s3_https: S3Client, bucket: str) -> None:
    key = new_key()
    first, second = body_of(5 * 1024 * 1024, "c-1"), body_of(100_000, "c-2")
    upload = s3_https.create_multipart_upload(Bucket=bucket, Key=key, **sse_c())["UploadId"]
    with pytest.raises(botocore.exceptions.ClientError) as caught:
        s3_https.upload_part(Bucket=bucket, Key=key, UploadId=upload, PartNumber=1, Body=first)
    assert error_of(caught)[0] == 400
    parts = []
    for number, piece in enumerate([first, second], 1):
        etag = s3_https.upload_part(
            Bucket=bucket, Key=key, UploadId=upload, PartNumber=number, Body=piece, **sse_c()
        )["ETag"]
        parts.append({"PartNumber": number, "ETag": etag})
    s3_https.complete_multipart_upload(
        Bucket=bucket, Key=key, UploadId=upload, MultipartUpload={"Parts": parts}
    )
    assert s3_https.get_object(Bucket=bucket, Key=key, **sse_c())["Body"].read() == first + second
    # Copied out: the source needs its key; the copy is sealed with another (or none).
    plain_copy, other_copy = new_key(), new_key()
    with pytest.raises(botocore.exceptions.ClientError) as caught:
        s3_https.copy_object(
            Bucket=bucket, Key=plain_copy, CopySource={"Bucket": bucket, "Key": key}
        )
    assert error_of(caught)[0] == 400
    s3_https.copy_object(
        Bucket=bucket,
        Key=plain_copy,
        CopySource={"Bucket": bucket, "Key": key},
        CopySourceSSECustomerAlgorithm="AES256",
        CopySourceSSECustomerKey=CUSTOMER_KEY,  # type: ignore[arg-type]
    )
    assert s3_https.get_object(Bucket=bucket, Key=plain_copy)["Body"].read() == first + second
    s3_https.copy_object(
        Bucket=bucket,
        Key=other_copy,
        CopySource={"Bucket": bucket, "Key": plain_copy},
        **sse_c(OTHER_KEY),
    )
    got = s3_https.get_object(Bucket=bucket, Key=other_copy, **sse_c(OTHER_KEY))
    assert got["Body"].read() == first + second
    # No variant renders from an object only its owner's key opens.
    image_key = new_key() + ".png"
    image = io.BytesIO()
    Image.new("RGB", (50, 50)).save(image, "PNG")
    s3_https.put_object(Bucket=bucket, Key=image_key, Body=image.getvalue(), **sse_c())
    with pytest.raises(botocore.exceptions.ClientError) as caught:
        s3_https.get_object(Bucket=bucket, Key=image_key + "?variant=small", **sse_c())
    assert error_of(caught)[0] in (400, 404)


def test_sse_c_needs_https(s3: S3Client) -> None:
    with pytest.raises(botocore.exceptions.ClientError) as caught:
        s3.put_object(Bucket=BUCKETS[SEALED], Key=new_key(), Body=b"x", **sse_c())
    assert error_of(caught) == (400, "InvalidRequest")


def test_aws_cli_sse_c(
    s3_https: S3Client,
    transforms_gateway: GatewayProcess,
    tmp_path: Path,
    certificate: tuple[Path, Path],
) -> None:
    source = tmp_path / "file.bin"
    data = body_of(7 * 1024 * 1024, "awscli-sse-c")
    source.write_bytes(data)
    aws = aws_cli(s3_https.meta.endpoint_url, tmp_path, certificate[0])
    key_file = tmp_path / "key.bin"
    key_file.write_bytes(CUSTOMER_KEY)
    target = f"s3://{BUCKETS[SEALED]}/awscli-sse-c.bin"
    sse = ["--sse-c", "AES256", "--sse-c-key", f"fileb://{key_file}"]

    copied = aws("cp", *sse, str(source), target)
    assert copied.returncode == 0, copied.stderr
    back = tmp_path / "back.bin"
    fetched = aws("cp", *sse, target, str(back))
    assert fetched.returncode == 0, fetched.stderr
    assert back.read_bytes() == data
    refused = aws("cp", target, str(tmp_path / "refused.bin"))
    assert refused.returncode != 0


def test_no_key_reaches_the_log(transforms_gateway: GatewayProcess, s3: S3Client) -> None:
    """Whatever the tests that ran before logged (errors of tampered blobs, SSE-C refusals,
    the startup), no key is in it."""
    s3.put_object(Bucket=BUCKETS[SEALED], Key=new_key(), Body=b"x")
    assert transforms_gateway.log_path is not None
    text = transforms_gateway.log_path.read_text()
    secrets = [
        ENV["TF_KEY_1"],
        ENV["TF_KEY_2"],
        KEY_1.hex(),
        base64.b64encode(CUSTOMER_KEY).decode(),
        base64.b64encode(OTHER_KEY).decode(),
    ]
    assert not [secret for secret in secrets if secret in text]


def test_import_records_plaintext_already_upstream(
    s3: S3Client, transforms_gateway: GatewayProcess, moto_server: MotoServer
) -> None:
    """`gateway import` on an encrypted upstream profile records the plaintext objects in
    place; they read as they are and are encrypted by `rekey --encrypt-existing`."""
    bucket = BUCKETS[SEALED_UPSTREAM]
    upstream = moto_server.client()
    found = {f"imported/{index}.txt": f"imported {index}".encode() for index in range(5)}
    for key, data in found.items():
        upstream.put_object(
            Bucket=moto_server.bucket, Key=f"{UPSTREAM_PREFIX}{bucket}/{key}", Body=data
        )
    done = transforms_gateway.command("import", bucket)
    assert done.returncode == 0, done.stderr
    listed = s3.list_objects_v2(Bucket=bucket, Prefix="imported/")
    assert [entry["Key"] for entry in listed["Contents"]] == sorted(found)
    for key, data in found.items():
        assert s3.get_object(Bucket=bucket, Key=key)["Body"].read() == data
    sealed = transforms_gateway.command("rekey", SEALED_UPSTREAM, "--encrypt-existing")
    assert sealed.returncode == 0, sealed.stderr
    for key, data in found.items():
        assert s3.get_object(Bucket=bucket, Key=key)["Body"].read() == data
    rows = db_fetch(
        transforms_gateway.dsn,
        "SELECT count(*) AS n FROM objects WHERE bucket = $1 AND key LIKE 'imported/%'"
        " AND storage_etag IS NULL",
        bucket,
    )
    assert rows[0]["n"] == len(found)


def test_a_transform_cannot_be_removed_from_a_profile_that_uses_it(
    tmp_path: Path, pg_server_dsn: str
) -> None:
    transforms = {"encryption": encryption(), "chunking": {"chunk_size": CHUNK_SIZE}}

    def with_transforms(*names: str) -> dict[str, object]:
        config = vault_storage()
        profiles = config["storage_profiles"]
        assert isinstance(profiles, dict)
        profiles["vault"] |= {name: transforms[name] for name in names}
        return config

    dsn = create_database(pg_server_dsn)
    with run_gateway(tmp_path / "vault", dsn, with_transforms(*transforms), ENV) as gateway:
        client(gateway.endpoint).put_object(Bucket="vault-bucket", Key="k", Body=b"x" * 200_000)
    for removed, message in (("encryption", "encrypted"), ("chunking", "stored in chunks")):
        kept = [name for name in transforms if name != removed]
        refused = gateway.sibling(tmp_path / f"no-{removed}.yaml", **with_transforms(*kept))
        started = subprocess.run(
            [sys.executable, "-m", "gateway", "serve", "--config", str(refused.config_path)],
            env={**os.environ, **ENV},
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert started.returncode == 2, started.stderr
        assert f"storage_profiles.vault: its blobs are {message}" in started.stderr


def test_sse_c_in_a_post_form(
    s3_https: S3Client, transforms_gateway: GatewayProcess, certificate: tuple[Path, Path]
) -> None:
    bucket, key = BUCKETS[SEALED], new_key()
    sse_fields = {
        "x-amz-server-side-encryption-customer-algorithm": "AES256",
        "x-amz-server-side-encryption-customer-key": base64.b64encode(CUSTOMER_KEY).decode(),
        "x-amz-server-side-encryption-customer-key-MD5": base64.b64encode(
            hashlib.md5(CUSTOMER_KEY).digest()
        ).decode(),
    }
    presigned = s3_https.generate_presigned_post(
        bucket,
        key,
        Fields=sse_fields,
        Conditions=[{name: value} for name, value in sse_fields.items()],
    )
    answer = requests.post(
        presigned["url"],
        data=presigned["fields"],
        files={"file": ("f.bin", MARKER + b"form")},
        timeout=60,
        verify=str(certificate[0]),
    )
    assert answer.status_code == 204, answer.text
    with pytest.raises(botocore.exceptions.ClientError) as caught:
        s3_https.get_object(Bucket=bucket, Key=key)
    assert error_of(caught)[0] == 400
    assert s3_https.get_object(Bucket=bucket, Key=key, **sse_c())["Body"].read() == MARKER + b"form"


def test_sse_s3_in_a_post_form(s3: S3Client) -> None:
    fields = {"x-amz-server-side-encryption": "AES256"}
    for profile, expected in ((SEALED, 204), (PLAIN, 400)):
        # A new conditions list each time: boto3 adds the bucket's and key's to it.
        presigned = s3.generate_presigned_post(
            BUCKETS[profile], new_key(), Fields=fields, Conditions=[dict(fields)]
        )
        answer = requests.post(
            presigned["url"], data=presigned["fields"], files={"file": b"x"}, timeout=60
        )
        assert answer.status_code == expected, answer.text
