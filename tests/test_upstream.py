"""The upstream storage profile against a real HTTP upstream (moto in server mode).

Objects of gateway bucket B live 1:1 at "B/KEY" in the upstream bucket, so every test checks
the upstream directly too: what the gateway wrote is there byte for byte, what others wrote
there is adopted, and what changed or vanished there is noticed. Rendered variants live
under their own prefix. An outage is a 503 the client may retry, never a half-written row.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from botocore.exceptions import ClientError

from tests.conftest import (
    UPSTREAM_ONLY,
    UPSTREAM_VARIANTS_PREFIX,
    GatewayProcess,
    S3Client,
    db_fetch,
    upstream_key,
    wait_for_stored_variants,
)
from tests.s3errors import error_of
from tests.test_awscli import AwsCli, cli_env
from tests.test_large_objects import MIB, multipart_etag, write_random
from tests.test_multipart import multipart_object, s3_etag
from tests.test_variants import variant
from tests.unit.variants import images
from tests.unit.variants.images import decode, encode

# Every test here runs against the upstream gateway only: s3, bucket, gateway_dsn included.
pytestmark = UPSTREAM_ONLY

# What the gateway may answer while the upstream cannot be reached.
UNAVAILABLE = {(503, "ServiceUnavailable"), (503, "SlowDown")}
# A GET whose upstream went away after its 200 was sent can only be cut short.
CUT_SHORT = {(0, "ResponseStreamingError"), (0, "IncompleteReadError")}


@dataclass
class Upstream:
    """moto's bucket seen directly, around the gateway, in gateway (bucket, key) terms."""

    s3: S3Client
    bucket: str

    def put(self, bucket: str, key: str, body: bytes, **kwargs: Any) -> dict[str, Any]:
        return self.s3.put_object(
            Bucket=self.bucket, Key=upstream_key(bucket, key), Body=body, **kwargs
        )

    def get(self, bucket: str, key: str) -> dict[str, Any]:
        return self.s3.get_object(Bucket=self.bucket, Key=upstream_key(bucket, key))

    def delete(self, bucket: str, key: str) -> None:
        self.s3.delete_object(Bucket=self.bucket, Key=upstream_key(bucket, key))

    def exists(self, bucket: str, key: str) -> bool:
        try:
            self.s3.head_object(Bucket=self.bucket, Key=upstream_key(bucket, key))
        except ClientError as error:
            if error.response["ResponseMetadata"]["HTTPStatusCode"] == 404:
                return False
            raise
        return True

    def keys(self, prefix: str) -> list[str]:
        pages = self.s3.get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=prefix)
        return [entry["Key"] for page in pages for entry in page.get("Contents", [])]

    def top_level(self) -> set[str]:
        """Keys and common prefixes at the root of the upstream bucket."""
        result = self.s3.list_objects_v2(Bucket=self.bucket, Delimiter="/")
        return {entry["Key"] for entry in result.get("Contents", [])} | {
            entry["Prefix"] for entry in result.get("CommonPrefixes", [])
        }


@pytest.fixture
def upstream(upstream_s3: S3Client, upstream_bucket: str) -> Upstream:
    return Upstream(upstream_s3, upstream_bucket)


def listing(s3: S3Client, bucket: str) -> list[tuple[str, int, str]]:
    """(key, size, ETag) of every object ListObjectsV2 shows, in its order."""
    pages = s3.get_paginator("list_objects_v2").paginate(Bucket=bucket)
    return [
        (entry["Key"], entry["Size"], entry["ETag"])
        for page in pages
        for entry in page.get("Contents", [])
    ]


def read_body(s3: S3Client, **params: object) -> bytes:
    """GetObject, body read to the end."""
    return s3.get_object(**params)["Body"].read()


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


# --- written through the gateway, readable upstream ------------------------------------------


def test_put_object_lands_at_its_key_upstream(
    s3: S3Client, bucket: str, upstream: Upstream
) -> None:
    body = os.urandom(100_000)
    metadata = {"author": "tests", "purpose": "upstream layout"}
    put = s3.put_object(
        Bucket=bucket,
        Key="docs/report.bin",
        Body=body,
        ContentType="application/x-report",
        Metadata=metadata,
    )
    assert put["ETag"] == f'"{hashlib.md5(body).hexdigest()}"'

    got = upstream.get(bucket, "docs/report.bin")
    assert got["Body"].read() == body
    assert got["ETag"] == put["ETag"]
    # What other tools see upstream carries the object's headers too.
    assert got["ContentType"] == "application/x-report"
    assert got["Metadata"] == metadata


def test_multipart_upload_is_one_object_upstream(
    s3: S3Client, bucket: str, upstream: Upstream
) -> None:
    parts = [os.urandom(5 * MIB), os.urandom(5 * MIB), os.urandom(1000)]
    whole = b"".join(parts)
    result = multipart_object(
        s3, bucket, "big/parts.bin", parts, ContentType="video/x-parts", Metadata={"n": "3"}
    )
    # The client's multipart ETag, whatever parts the gateway sent upstream.
    assert result["ETag"] == s3_etag(parts)
    assert s3.head_object(Bucket=bucket, Key="big/parts.bin")["ETag"] == s3_etag(parts)

    got = upstream.get(bucket, "big/parts.bin")
    assert got["ContentLength"] == len(whole)
    assert sha256(got["Body"].read()) == sha256(whole)
    assert got["ContentType"] == "video/x-parts"
    assert got["Metadata"] == {"n": "3"}


def test_awscli_cp_lands_upstream(
    gateway: GatewayProcess, s3: S3Client, bucket: str, upstream: Upstream, tmp_path: Path
) -> None:
    aws = AwsCli(gateway.endpoint, cli_env(tmp_path), None, True)
    source = tmp_path / "twenty.bin"
    digest = write_random(source, 20 * MIB)
    # Above aws-cli's 8 MiB threshold: a multipart upload of 8 MiB parts.
    aws.run("s3", "cp", str(source), f"s3://{bucket}/cli/twenty.bin")
    assert s3.head_object(Bucket=bucket, Key="cli/twenty.bin")["ETag"] == multipart_etag(
        source, 8 * MIB
    )

    got = upstream.get(bucket, "cli/twenty.bin")
    assert got["ContentLength"] == 20 * MIB
    assert sha256(got["Body"].read()) == digest


# Keys that look like paths without a dot segment (those are refused, below), and one that
# looks like the variants prefix: all plain keys under the bucket's prefix.
PATH_LIKE_KEYS = [
    "...",
    ".hidden/..x/x..",
    "/leading",
    "a//b",
    "%2e%2e/encoded",
    "..\\..\\backslash",
    UPSTREAM_VARIANTS_PREFIX + "not-a-variant",
]


def test_path_like_keys_stay_under_the_bucket_prefix(
    s3: S3Client, bucket: str, upstream: Upstream
) -> None:
    root_before = upstream.top_level()
    for key in PATH_LIKE_KEYS:
        s3.put_object(Bucket=bucket, Key=key, Body=key.encode())
    assert sorted(upstream.keys(upstream_key(bucket, ""))) == sorted(
        upstream_key(bucket, key) for key in PATH_LIKE_KEYS
    )
    for key in PATH_LIKE_KEYS:
        assert upstream.get(bucket, key)["Body"].read() == key.encode()
        assert s3.get_object(Bucket=bucket, Key=key)["Body"].read() == key.encode()
    assert upstream.top_level() - root_before <= {upstream_key(bucket, "")}


# Keys with a "." or ".." path segment: an upstream (or a proxy before it) that normalises
# URLs would resolve them, "B/../C/k" reading and writing bucket C's object "k".
DOT_SEGMENT_KEYS = ["../escaped", "a/../../up", "./dot", "a/./b", "a/..", ".", "..", "a/."]


@pytest.mark.parametrize("key", DOT_SEGMENT_KEYS)
def test_keys_with_dot_segments_are_refused(
    s3: S3Client, bucket: str, upstream: Upstream, key: str
) -> None:
    refused = (400, "InvalidArgument")
    root_before = upstream.top_level()
    # Another tool may keep such a key upstream (moto and AWS keep keys literal): the gateway
    # neither adopts nor overwrites nor deletes it.
    upstream.put(bucket, key, b"kept by another tool")
    s3.put_object(Bucket=bucket, Key="source", Body=b"source")
    body = os.urandom(20_000)

    attempts: list[Callable[[], object]] = [
        lambda: s3.put_object(Bucket=bucket, Key=key, Body=body),
        lambda: s3.copy_object(
            Bucket=bucket, Key=key, CopySource={"Bucket": bucket, "Key": "source"}
        ),
        lambda: s3.create_multipart_upload(Bucket=bucket, Key=key),
        lambda: s3.delete_object(Bucket=bucket, Key=key),
    ]
    for attempt in attempts:
        with pytest.raises(ClientError) as excinfo:
            attempt()
        assert error_of(excinfo.value) == refused
        assert "path segments" in excinfo.value.response["Error"]["Message"]
    result = s3.delete_objects(Bucket=bucket, Delete={"Objects": [{"Key": key}]})
    assert [(e["Key"], e["Code"]) for e in result["Errors"]] == [(key, "InvalidArgument")]
    with pytest.raises(ClientError) as excinfo:
        s3.get_object(Bucket=bucket, Key=key)
    assert error_of(excinfo.value) == (404, "NoSuchKey")

    assert upstream.get(bucket, key)["Body"].read() == b"kept by another tool"
    assert sorted(upstream.keys(upstream_key(bucket, ""))) == sorted(
        [upstream_key(bucket, key), upstream_key(bucket, "source")]
    )
    assert upstream.top_level() - root_before <= {upstream_key(bucket, "")}
    assert listing(s3, bucket) == [("source", 6, f'"{hashlib.md5(b"source").hexdigest()}"')]


# --- written upstream, adopted by the gateway ------------------------------------------------


@pytest.mark.parametrize("first", ["GET", "HEAD"])
def test_an_object_written_upstream_is_adopted(
    s3: S3Client, bucket: str, upstream: Upstream, first: str
) -> None:
    body = os.urandom(50_000)
    written = upstream.put(
        bucket, "adopted/photo.raw", body, ContentType="image/x-raw", Metadata={"camera": "x1"}
    )

    def get() -> None:
        got = s3.get_object(Bucket=bucket, Key="adopted/photo.raw")
        assert got["Body"].read() == body
        assert (got["ContentLength"], got["ETag"]) == (len(body), written["ETag"])

    def head() -> None:
        found = s3.head_object(Bucket=bucket, Key="adopted/photo.raw")
        assert (found["ContentLength"], found["ETag"]) == (len(body), written["ETag"])
        assert found["ContentType"] == "image/x-raw"
        assert found["Metadata"] == {"camera": "x1"}

    for request in (get, head) if first == "GET" else (head, get):
        request()
    # Recorded by the reads: listed like any object written through the gateway.
    assert listing(s3, bucket) == [("adopted/photo.raw", len(body), written["ETag"])]


def test_a_key_neither_has_is_no_such_key(s3: S3Client, bucket: str) -> None:
    with pytest.raises(ClientError) as excinfo:
        s3.get_object(Bucket=bucket, Key="nowhere")
    assert error_of(excinfo.value) == (404, "NoSuchKey")
    with pytest.raises(ClientError) as excinfo:
        s3.head_object(Bucket=bucket, Key="nowhere")
    assert error_of(excinfo.value)[0] == 404
    assert listing(s3, bucket) == []


def test_ranged_get_of_an_adopted_object(s3: S3Client, bucket: str, upstream: Upstream) -> None:
    body = os.urandom(300_000)
    upstream.put(bucket, "adopted/ranged.bin", body)
    # The first request of all is the ranged one.
    got = s3.get_object(Bucket=bucket, Key="adopted/ranged.bin", Range="bytes=1000-1999")
    assert got["Body"].read() == body[1000:2000]
    assert got["ContentRange"] == f"bytes 1000-1999/{len(body)}"
    tail = s3.get_object(Bucket=bucket, Key="adopted/ranged.bin", Range="bytes=-100")
    assert tail["Body"].read() == body[-100:]
    assert s3.head_object(Bucket=bucket, Key="adopted/ranged.bin")["ContentLength"] == len(body)


def test_an_object_replaced_upstream_is_served_anew(
    s3: S3Client, bucket: str, upstream: Upstream
) -> None:
    s3.put_object(Bucket=bucket, Key="doc.txt", Body=b"written through the gateway")
    assert (
        s3.get_object(Bucket=bucket, Key="doc.txt")["Body"].read() == b"written through the gateway"
    )

    new = b"replaced directly upstream, by another tool"
    replaced = upstream.put(bucket, "doc.txt", new, ContentType="text/plain")
    got = s3.get_object(Bucket=bucket, Key="doc.txt")
    assert got["Body"].read() == new
    assert got["ETag"] == replaced["ETag"]
    # The GET noticed the new upstream ETag and recorded the object anew.
    assert s3.head_object(Bucket=bucket, Key="doc.txt")["ContentLength"] == len(new)
    assert listing(s3, bucket) == [("doc.txt", len(new), replaced["ETag"])]


def test_an_object_deleted_upstream_is_gone(s3: S3Client, bucket: str, upstream: Upstream) -> None:
    for key in ("gone", "kept"):
        s3.put_object(Bucket=bucket, Key=key, Body=key.encode())
    upstream.delete(bucket, "gone")
    with pytest.raises(ClientError) as excinfo:
        s3.get_object(Bucket=bucket, Key="gone")
    assert error_of(excinfo.value) == (404, "NoSuchKey")
    assert [key for key, _, _ in listing(s3, bucket)] == ["kept"]


# --- variants, copies, deletes ---------------------------------------------------------------


def test_variants_are_stored_under_the_variants_prefix(
    gateway: GatewayProcess, s3: S3Client, bucket: str, upstream: Upstream
) -> None:
    png = encode(images.marked((400, 200)), "PNG")
    s3.put_object(Bucket=bucket, Key="img/photo.png", Body=png, ContentType="image/png")
    stored_before = set(upstream.keys(UPSTREAM_VARIANTS_PREFIX))

    response = variant(gateway, bucket, "img/photo.png", "thumb")
    assert response.status_code == 200, response.text
    assert decode(response.content).size == (64, 64)
    wait_for_stored_variants(gateway.dsn)

    # Other tests' renders may land meanwhile: one of the new objects is this one.
    stored = set(upstream.keys(UPSTREAM_VARIANTS_PREFIX)) - stored_before
    assert any(
        upstream.s3.get_object(Bucket=upstream.bucket, Key=key)["Body"].read() == response.content
        for key in stored
    ), stored
    # Nothing but the source under the bucket's prefix, nor in its listing.
    assert upstream.keys(upstream_key(bucket, "")) == [upstream_key(bucket, "img/photo.png")]
    assert [key for key, _, _ in listing(s3, bucket)] == ["img/photo.png"]


def test_copy_object_writes_the_destination_upstream(
    s3: S3Client, bucket: str, upstream: Upstream
) -> None:
    other = f"test-{uuid.uuid4().hex[:16]}"
    s3.create_bucket(Bucket=other)
    body = os.urandom(200_000)
    s3.put_object(
        Bucket=bucket, Key="src", Body=body, ContentType="application/x-src", Metadata={"v": "1"}
    )
    source = {"Bucket": bucket, "Key": "src"}
    s3.copy_object(Bucket=bucket, Key="copies/same-bucket", CopySource=source)
    s3.copy_object(Bucket=other, Key="copies/other-bucket", CopySource=source)
    s3.copy_object(
        Bucket=bucket,
        Key="copies/replaced",
        CopySource=source,
        MetadataDirective="REPLACE",
        ContentType="text/plain",
        Metadata={"v": "2"},
    )

    for target, key, content_type, metadata in (
        (bucket, "src", "application/x-src", {"v": "1"}),
        (bucket, "copies/same-bucket", "application/x-src", {"v": "1"}),
        (other, "copies/other-bucket", "application/x-src", {"v": "1"}),
        (bucket, "copies/replaced", "text/plain", {"v": "2"}),
    ):
        got = upstream.get(target, key)
        assert got["Body"].read() == body, (target, key)
        assert (got["ContentType"], got["Metadata"]) == (content_type, metadata), (target, key)


def test_deletes_remove_the_upstream_objects(s3: S3Client, bucket: str, upstream: Upstream) -> None:
    keys = ["one", "two", "three/four"]
    for key in keys:
        s3.put_object(Bucket=bucket, Key=key, Body=key.encode())
    assert all(upstream.exists(bucket, key) for key in keys)

    s3.delete_object(Bucket=bucket, Key="one")
    assert not upstream.exists(bucket, "one")
    result = s3.delete_objects(
        Bucket=bucket, Delete={"Objects": [{"Key": "two"}, {"Key": "three/four"}]}
    )
    assert sorted(entry["Key"] for entry in result["Deleted"]) == ["three/four", "two"]
    assert upstream.keys(upstream_key(bucket, "")) == []
    assert listing(s3, bucket) == []


# --- gateway import --------------------------------------------------------------------------

# Three pages of an upstream listing, the last one partial.
IMPORTED = 2500


def run_import(gateway: GatewayProcess, bucket: str) -> subprocess.CompletedProcess[str]:
    return gateway.command("import", bucket, timeout=600)


@pytest.fixture
def preexisting(bucket: str, upstream: Upstream) -> list[tuple[str, int, str]]:
    """IMPORTED objects written straight upstream under the bucket's prefix: (key, size, ETag)."""

    def put(index: int) -> tuple[str, int, str]:
        key = f"imported/{index // 1000}/{index:05d}.txt"
        body = f"object {index}\n".encode() * (index % 7 + 1)
        return key, len(body), upstream.put(bucket, key, body)["ETag"]

    # Several connections at once (moto is slow one by one), within boto3's pool of ten.
    with ThreadPoolExecutor(8) as pool:
        return sorted(pool.map(put, range(IMPORTED)))


def test_import_records_what_the_upstream_holds(
    gateway: GatewayProcess, s3: S3Client, bucket: str, preexisting: list[tuple[str, int, str]]
) -> None:
    # The second run finds everything recorded already: same result, same listing.
    for run in (1, 2):
        result = run_import(gateway, bucket)
        assert result.returncode == 0, f"run {run}: {result.stdout}{result.stderr}"
        assert listing(s3, bucket) == preexisting, f"run {run}"


def test_import_leaves_out_keys_with_dot_segments(
    gateway: GatewayProcess, s3: S3Client, bucket: str, upstream: Upstream
) -> None:
    for key in [*DOT_SEGMENT_KEYS, "kept/..x", "kept/.y"]:
        upstream.put(bucket, key, key.encode())
    result = run_import(gateway, bucket)
    assert result.returncode == 0, result.stdout + result.stderr
    assert [key for key, _, _ in listing(s3, bucket)] == ["kept/..x", "kept/.y"]


def test_an_interrupted_import_resumes_after_its_checkpoint(
    gateway: GatewayProcess, s3: S3Client, bucket: str, gateway_dsn: str, upstream: Upstream
) -> None:
    keys = [f"k{index:03d}" for index in range(30)]
    for key in keys:
        upstream.put(bucket, key, key.encode())
    # As an import stopped after recording the first ten would have left it.
    db_fetch(gateway_dsn, "INSERT INTO imports (bucket, last_key) VALUES ($1, $2)", bucket,
             upstream_key(bucket, keys[9]))  # fmt: skip
    result = run_import(gateway, bucket)
    assert result.returncode == 0, result.stderr
    assert "listed 20 objects" in result.stdout
    assert [key for key, _, _ in listing(s3, bucket)] == keys[10:]
    # Finished: the next run starts from the first key again.
    result = run_import(gateway, bucket)
    assert "listed 30 objects" in result.stdout and "recorded 10 new" in result.stdout
    assert [key for key, _, _ in listing(s3, bucket)] == keys
