"""Bucket quotas (max_bytes, max_objects): writes that would pass one are refused with 403
QuotaExceeded and store nothing, before their bodies when their sizes are known and at commit
otherwise; parallel writers never take a bucket past its quota. On the local and the upstream
profile, with boto3, aws-cli, POST forms and the `gateway buckets` commands."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
from botocore.exceptions import ClientError

from tests.conftest import (
    GATEWAY_ENV,
    LOCAL,
    UPSTREAM,
    GatewayProcess,
    S3Client,
    client,
    create_database,
    db_fetch,
    run_gateway,
    unaccounted_blobs,
    wait_for,
    write_config,
)
from tests.rawhttp import receive, request_head, sign
from tests.s3errors import error_of
from tests.test_awscli import cli_env
from tests.test_reload import reload_by_signal

# The tests of writes run on both profiles; the reload test has a gateway of its own.
BOTH = pytest.mark.parametrize("gateway", [LOCAL, UPSTREAM], indirect=True)

MIB = 1024 * 1024
QUOTA_EXCEEDED = (403, "QuotaExceeded")


def set_quota(gateway: GatewayProcess, bucket: str, **limits: int) -> None:
    """Set the bucket's quota in its row, as `gateway buckets set-quota` does (faster than a
    command per test; the command has its own test)."""
    db_fetch(
        gateway.dsn,
        "UPDATE buckets SET settings = jsonb_set(settings, '{quota}', $2::jsonb) WHERE name = $1",
        bucket,
        json.dumps(limits),
    )


def usage(gateway: GatewayProcess, bucket: str) -> dict[str, int]:
    row = db_fetch(gateway.dsn, "SELECT * FROM gateway_bucket_usage($1)", bucket)[0]
    return dict(row)


def keys(s3: S3Client, bucket: str) -> list[str]:
    return [o["Key"] for o in s3.list_objects_v2(Bucket=bucket).get("Contents", [])]


def refused(call: Any, **params: Any) -> ClientError:
    with pytest.raises(ClientError) as caught:
        call(**params)
    assert error_of(caught) == QUOTA_EXCEEDED
    return caught.value


def buckets_list(gateway: GatewayProcess) -> dict[str, dict[str, Any]]:
    done = gateway.command("buckets", "list", "--json")
    assert done.returncode == 0, done.stderr
    return {row["bucket"]: row for row in json.loads(done.stdout)}


@BOTH
def test_put_over_max_bytes_is_refused_and_stores_nothing(
    gateway: GatewayProcess, s3: S3Client, bucket: str
) -> None:
    set_quota(gateway, bucket, max_bytes=1000)
    s3.put_object(Bucket=bucket, Key="first", Body=b"a" * 600)
    error = refused(s3.put_object, Bucket=bucket, Key="second", Body=b"b" * 600)
    assert "(max_bytes: 1,000)" in error.response["Error"]["Message"]
    assert keys(s3, bucket) == ["first"]
    assert usage(gateway, bucket) == {"objects": 1, "bytes": 600, "upload_bytes": 0}
    # What fits still goes in.
    s3.put_object(Bucket=bucket, Key="third", Body=b"c" * 400)
    if gateway.profile == LOCAL:
        assert unaccounted_blobs(gateway, gateway.dsn) == []


@BOTH
def test_refusal_comes_before_the_body(gateway: GatewayProcess, s3: S3Client, bucket: str) -> None:
    """Only the headers are sent: the answer comes at once, and the connection closes (the
    body it announced was never read)."""
    set_quota(gateway, bucket, max_bytes=MIB)
    path = f"/{bucket}/big"
    headers = sign("PUT", f"{gateway.endpoint}{path}", "UNSIGNED-PAYLOAD")
    headers["Content-Length"] = str(50 * MIB)
    with socket.create_connection(("127.0.0.1", gateway.port), timeout=10) as sock:
        sock.sendall(request_head("PUT", path, headers))
        response = receive(sock)
    assert response.status == 403
    assert b"<Code>QuotaExceeded</Code>" in response.body
    assert response.headers.get("connection", "").lower() == "close"
    assert keys(s3, bucket) == []


@BOTH
def test_max_objects_and_replace_at_a_full_quota(
    gateway: GatewayProcess, s3: S3Client, bucket: str
) -> None:
    set_quota(gateway, bucket, max_objects=2, max_bytes=2000)
    s3.put_object(Bucket=bucket, Key="a", Body=b"1" * 1000)
    s3.put_object(Bucket=bucket, Key="b", Body=b"2" * 1000)
    error = refused(s3.put_object, Bucket=bucket, Key="c", Body=b"3")
    assert "(max_objects: 2)" in error.response["Error"]["Message"]
    # Both limits are reached: a replace of the same size (or smaller) still passes.
    s3.put_object(Bucket=bucket, Key="a", Body=b"4" * 1000)
    s3.put_object(Bucket=bucket, Key="b", Body=b"5" * 10)
    refused(s3.put_object, Bucket=bucket, Key="a", Body=b"6" * 1991)
    s3.put_object(Bucket=bucket, Key="a", Body=b"7" * 1990)
    assert s3.get_object(Bucket=bucket, Key="a")["Body"].read() == b"7" * 1990
    s3.delete_object(Bucket=bucket, Key="b")
    s3.put_object(Bucket=bucket, Key="c", Body=b"8" * 10)
    assert sorted(keys(s3, bucket)) == ["a", "c"]


@BOTH
def test_multipart_parts_count_and_completion_is_checked(
    gateway: GatewayProcess, s3: S3Client, bucket: str
) -> None:
    set_quota(gateway, bucket, max_bytes=11 * MIB, max_objects=1)
    upload = s3.create_multipart_upload(Bucket=bucket, Key="big")["UploadId"]
    part = b"p" * (5 * MIB)
    etags = [
        s3.upload_part(Bucket=bucket, Key="big", UploadId=upload, PartNumber=n, Body=part)["ETag"]
        for n in (1, 2)
    ]
    assert usage(gateway, bucket)["upload_bytes"] == 10 * MIB
    # Parts in progress count toward bytes.
    refused(s3.upload_part, Bucket=bucket, Key="big", UploadId=upload, PartNumber=3, Body=part)
    refused(s3.put_object, Bucket=bucket, Key="small", Body=b"x" * (2 * MIB))
    # ... but not toward objects: one may still be written.
    s3.put_object(Bucket=bucket, Key="small", Body=b"x")
    # The completion would be a second object.
    parts = {"Parts": [{"PartNumber": n, "ETag": etag} for n, etag in enumerate(etags, 1)]}
    refused(
        s3.complete_multipart_upload,
        Bucket=bucket,
        Key="big",
        UploadId=upload,
        MultipartUpload=parts,
    )
    assert keys(s3, bucket) == ["small"]
    s3.delete_object(Bucket=bucket, Key="small")
    s3.complete_multipart_upload(Bucket=bucket, Key="big", UploadId=upload, MultipartUpload=parts)
    assert usage(gateway, bucket) == {"objects": 1, "bytes": 10 * MIB, "upload_bytes": 0}
    # An aborted upload's parts leave the count.
    upload = s3.create_multipart_upload(Bucket=bucket, Key="big")["UploadId"]
    s3.upload_part(Bucket=bucket, Key="big", UploadId=upload, PartNumber=1, Body=b"q" * MIB)
    assert usage(gateway, bucket)["upload_bytes"] == MIB
    s3.abort_multipart_upload(Bucket=bucket, Key="big", UploadId=upload)
    assert usage(gateway, bucket)["upload_bytes"] == 0


@BOTH
def test_copy_object_and_upload_part_copy(
    gateway: GatewayProcess, s3: S3Client, bucket: str
) -> None:
    set_quota(gateway, bucket, max_bytes=3000, max_objects=2)
    s3.put_object(Bucket=bucket, Key="source", Body=b"s" * 2000)
    refused(
        s3.copy_object, Bucket=bucket, Key="copy", CopySource={"Bucket": bucket, "Key": "source"}
    )
    # A copy onto itself replaces it: no growth.
    s3.copy_object(
        Bucket=bucket,
        Key="source",
        CopySource={"Bucket": bucket, "Key": "source"},
        MetadataDirective="REPLACE",
        Metadata={"copied": "yes"},
    )
    upload = s3.create_multipart_upload(Bucket=bucket, Key="parts")["UploadId"]
    refused(
        s3.upload_part_copy,
        Bucket=bucket,
        Key="parts",
        UploadId=upload,
        PartNumber=1,
        CopySource={"Bucket": bucket, "Key": "source"},
    )
    s3.abort_multipart_upload(Bucket=bucket, Key="parts", UploadId=upload)
    assert keys(s3, bucket) == ["source"]


@BOTH
def test_post_upload_is_refused_at_commit(
    gateway: GatewayProcess, s3: S3Client, bucket: str, request: pytest.FixtureRequest
) -> None:
    """A form's file size is not known before it is read: the commit refuses it."""
    set_quota(gateway, bucket, max_objects=1)
    s3.put_object(Bucket=bucket, Key="only", Body=b"1")
    presigned = s3.generate_presigned_post(bucket, "form")
    response = requests.post(
        presigned["url"], data=presigned["fields"], files={"file": ("f", b"x" * 5000)}, timeout=60
    )
    assert response.status_code == 403, response.text
    assert "<Code>QuotaExceeded</Code>" in response.text
    assert keys(s3, bucket) == ["only"]
    if gateway.profile == UPSTREAM:
        # The object that landed upstream before its refused commit went again.
        upstream: S3Client = request.getfixturevalue("upstream_s3")
        upstream_bucket: str = request.getfixturevalue("upstream_bucket")
        found = upstream.list_objects_v2(Bucket=upstream_bucket, Prefix=f"{bucket}/")
        assert [o["Key"] for o in found.get("Contents", [])] == [f"{bucket}/only"]


@BOTH
def test_aws_cli_copy_over_quota_fails_clearly(
    gateway: GatewayProcess, s3: S3Client, bucket: str, tmp_path: Path
) -> None:
    set_quota(gateway, bucket, max_bytes=1000)
    source = tmp_path / "file.bin"
    source.write_bytes(b"f" * 5000)
    done = cli_aws(gateway, tmp_path, "s3", "cp", str(source), f"s3://{bucket}/file.bin")
    assert done.returncode != 0
    assert "QuotaExceeded" in done.stderr and "(max_bytes: 1,000)" in done.stderr
    assert keys(s3, bucket) == []


def cli_aws(
    gateway: GatewayProcess, tmp_path: Path, *args: str
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "awscli", "--endpoint-url", gateway.endpoint, *args],
        env=cli_env(tmp_path),
        capture_output=True,
        text=True,
        timeout=120,
    )


@BOTH
def test_parallel_writers_never_pass_the_quota(
    gateway: GatewayProcess, s3: S3Client, bucket: str
) -> None:
    """16 writers, 4 new objects each, into room for 10: exactly 10 are stored, and every
    other write was refused with QuotaExceeded."""
    set_quota(gateway, bucket, max_objects=10, max_bytes=10 * 100_000)
    outcomes: list[str] = []
    lock = threading.Lock()

    def writer(n: int) -> None:
        own = client(gateway.endpoint)
        for i in range(4):
            try:
                own.put_object(Bucket=bucket, Key=f"w{n}-{i}", Body=b"x" * 100_000)
                outcome = "stored"
            except ClientError as exc:
                outcome = exc.response["Error"]["Code"]
            with lock:
                outcomes.append(outcome)

    threads = [threading.Thread(target=writer, args=(n,)) for n in range(16)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert outcomes.count("stored") == 10, outcomes
    assert outcomes.count("QuotaExceeded") == 54, outcomes
    assert len(keys(s3, bucket)) == 10
    assert usage(gateway, bucket) == {"objects": 10, "bytes": 1_000_000, "upload_bytes": 0}
    if gateway.profile == LOCAL:
        assert unaccounted_blobs(gateway, gateway.dsn) == []


@BOTH
def test_buckets_commands_show_usage_and_set_quotas_live(
    gateway: GatewayProcess, s3: S3Client, bucket: str
) -> None:
    s3.put_object(Bucket=bucket, Key="one", Body=b"1" * 10)
    upload = s3.create_multipart_upload(Bucket=bucket, Key="mp")["UploadId"]
    s3.upload_part(Bucket=bucket, Key="mp", UploadId=upload, PartNumber=1, Body=b"p" * 7)
    done = gateway.command(
        "buckets", "set-quota", bucket, "--max-bytes", "1KiB", "--max-objects", "1"
    )
    assert done.returncode == 0, done.stderr
    assert "max_bytes 1,024, max_objects 1" in done.stdout
    listed = buckets_list(gateway)[bucket]
    assert listed["objects"] == 1 and listed["bytes"] == 10 and listed["upload_bytes"] == 7
    assert listed["quota"] == {"max_bytes": 1024, "max_objects": 1}
    text = gateway.command("buckets", "list").stdout
    assert any(line.split()[0] == bucket and "max_objects 1" in line for line in text.splitlines())
    # In effect without a restart.
    refused(s3.put_object, Bucket=bucket, Key="two", Body=b"2")
    assert gateway.command("buckets", "set-quota", bucket, "--clear").returncode == 0
    assert buckets_list(gateway)[bucket]["quota"] is None

    def stored() -> bool:
        try:
            s3.put_object(Bucket=bucket, Key="two", Body=b"2")
        except ClientError:
            return False
        return True

    assert wait_for(stored, 5)
    s3.abort_multipart_upload(Bucket=bucket, Key="mp", UploadId=upload)
    missing = gateway.command("buckets", "set-quota", "no-such-bucket-q", "--max-objects", "1")
    assert missing.returncode == 1 and "no bucket" in missing.stderr
    usage_error = gateway.command("buckets", "set-quota", bucket)
    assert usage_error.returncode == 2


@pytest.fixture(scope="module")
def declared(tmp_root: Path, pg_server_dsn: str) -> Iterator[GatewayProcess]:
    """A gateway of its own whose file declares a bucket with a quota (reloads change it)."""
    dsn = create_database(pg_server_dsn)
    with run_gateway(
        tmp_root / "quotas-declared", dsn, {}, GATEWAY_ENV, buckets=declared_buckets(1)
    ) as process:
        yield process


def declared_buckets(max_objects: int | None) -> dict[str, object]:
    quota = (
        {} if max_objects is None else {"quota": {"max_objects": max_objects, "max_bytes": "1MiB"}}
    )
    return {"declared-quota": quota}


def test_yaml_quota_applies_on_reload(declared: GatewayProcess) -> None:
    s3 = client(declared.endpoint)
    s3.put_object(Bucket="declared-quota", Key="1", Body=b"1")
    refused(s3.put_object, Bucket="declared-quota", Key="2", Body=b"2")
    # The file owns this bucket's quota.
    done = declared.command("buckets", "set-quota", "declared-quota", "--max-objects", "5")
    assert done.returncode == 1 and "configuration file" in done.stderr
    write_config(
        declared.config_path,
        declared.data_dir,
        declared.port,
        declared.dsn,
        buckets=declared_buckets(2),
    )
    reload_by_signal(declared)
    s3.put_object(Bucket="declared-quota", Key="2", Body=b"2")
    refused(s3.put_object, Bucket="declared-quota", Key="3", Body=b"3")
    assert buckets_list(declared)["declared-quota"]["quota"]["max_objects"] == 2
    # Taken out of the file, the quota goes.
    write_config(
        declared.config_path,
        declared.data_dir,
        declared.port,
        declared.dsn,
        buckets=declared_buckets(None),
    )
    reload_by_signal(declared)
    s3.put_object(Bucket="declared-quota", Key="3", Body=b"3")
    assert buckets_list(declared)["declared-quota"]["quota"] is None
