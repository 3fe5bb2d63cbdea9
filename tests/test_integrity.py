"""Integrity under hostile or unlucky conditions: injected headers, racing writers, damaged
blobs, janitor edge cases. Each test names the promise it pins."""

from __future__ import annotations

import os
import threading
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import requests
from botocore.exceptions import BotoCoreError, ClientError

from gateway.config import LimitsConfig
from tests.conftest import (
    LOCAL_ONLY,
    UPSTREAM,
    UPSTREAM_BUCKET,
    blob_files,
    client,
    db_fetch,
    unaccounted_blobs,
    upstream_key,
)
from tests.rawhttp import request_head, send_raw, sign

# Objects up to this size live in their row (the test gateways keep the default).
INLINE_MAX = LimitsConfig().inline_max_size


def blob_path(gateway, storage_key: str) -> Path:
    return gateway.data_dir / "blobs" / storage_key[:2] / storage_key


def test_unsigned_amz_header_cannot_turn_a_presigned_put_into_a_copy(gateway, s3, bucket) -> None:
    """A presigned URL signs only what it names: an added x-amz-copy-source is refused."""
    s3.put_object(Bucket=bucket, Key="private", Body=b"secret bytes")
    signer = client(gateway.endpoint, signature_version="s3v4")
    url = signer.generate_presigned_url(
        "put_object", Params={"Bucket": bucket, "Key": "upload"}, ExpiresIn=300
    )
    response = requests.put(
        url, data=b"", headers={"x-amz-copy-source": f"{bucket}/private"}, timeout=10
    )
    assert response.status_code == 403
    assert b"<HeadersNotSigned>x-amz-copy-source</HeadersNotSigned>" in response.content
    with pytest.raises(ClientError):
        s3.head_object(Bucket=bucket, Key="upload")


def test_unsigned_metadata_header_is_refused(gateway, s3, bucket) -> None:
    url = f"{gateway.endpoint}/{bucket}/meta"
    headers = sign("PUT", url, "UNSIGNED-PAYLOAD")
    headers["x-amz-meta-injected"] = "yes"
    headers["Content-Length"] = "1"
    response = send_raw(
        "127.0.0.1", gateway.port, request_head("PUT", f"/{bucket}/meta", headers), b"x"
    )
    assert response.status == 403
    assert b"HeadersNotSigned" in response.body


def test_nul_in_key_or_listing_parameters_is_invalid_argument(s3, bucket) -> None:
    with pytest.raises(ClientError) as excinfo:
        s3.put_object(Bucket=bucket, Key="a\x00b", Body=b"x")
    assert excinfo.value.response["Error"]["Code"] == "InvalidArgument"
    for kwargs in ({"Prefix": "a\x00"}, {"StartAfter": "\x00"}, {"ContinuationToken": "AA=="}):
        with pytest.raises(ClientError) as excinfo:
            s3.list_objects_v2(Bucket=bucket, **kwargs)
        assert excinfo.value.response["Error"]["Code"] == "InvalidArgument", kwargs


def test_non_ascii_decoded_length_is_a_client_error(gateway, s3, bucket) -> None:
    url = f"{gateway.endpoint}/{bucket}/odd-length"
    headers = sign(
        "PUT",
        url,
        "STREAMING-UNSIGNED-PAYLOAD-TRAILER",
        {"Content-Encoding": "aws-chunked", "x-amz-decoded-content-length": "²"},
    )
    body = b"0\r\n\r\n"
    headers["Content-Length"] = str(len(body))
    response = send_raw(
        "127.0.0.1", gateway.port, request_head("PUT", f"/{bucket}/odd-length", headers), body
    )
    assert response.status in (400, 411)
    assert b"<Code>InternalError</Code>" not in response.body


# Bodies kept in their row, and bodies written as blobs.
@pytest.mark.parametrize("size", [2000, INLINE_MAX + 1])
def test_racing_first_writes_leave_one_winner_and_no_orphan(
    request: pytest.FixtureRequest, gateway, gateway_dsn, bucket, size
) -> None:
    """Promise 2 and the intent log: concurrent creates of one key never orphan a blob, and
    If-None-Match: * lets exactly one of them win, whose bytes the object then holds."""
    writers = 8
    clients = [client(gateway.endpoint, retries={"total_max_attempts": 1}) for _ in range(writers)]
    # Every writer waits here with its body ready, so the requests really overlap.
    barrier = threading.Barrier(writers, timeout=60)

    def create(args: tuple[int, str]) -> bytes | None:
        index, key = args
        body = os.urandom(size)
        barrier.wait()
        try:
            clients[index].put_object(Bucket=bucket, Key=key, Body=body, IfNoneMatch="*")
            return body
        except ClientError as error:
            assert error.response["Error"]["Code"] in (
                "PreconditionFailed",
                "ConditionalRequestConflict",
            )
            return None

    keys = [f"race/{n}" for n in range(12)]
    with ThreadPoolExecutor(writers) as pool:
        for key in keys:
            bodies = list(pool.map(create, [(index, key) for index in range(writers)]))
            winners = [body for body in bodies if body is not None]
            assert len(winners) == 1, key
            # A loser's bytes must not have replaced the winner's (upstream: at the same key).
            assert clients[0].get_object(Bucket=bucket, Key=key)["Body"].read() == winners[0]
    rows = db_fetch(
        gateway_dsn,
        "SELECT key, storage_key, storage_etag FROM objects WHERE bucket = $1",
        bucket,
    )
    assert sorted(row["key"] for row in rows) == sorted(keys)
    if gateway.profile != UPSTREAM:
        # Every blob any of the writes produced is referenced by a row or listed as garbage.
        assert unaccounted_blobs(gateway, gateway_dsn) == []
        if size > INLINE_MAX:
            for row in rows:
                assert all(path.exists() for path in blob_files(gateway, row["storage_key"]))
    else:
        # Nothing but the winners upstream, each the version its row records.
        upstream = request.getfixturevalue("upstream_s3")
        listed = upstream.list_objects_v2(Bucket=UPSTREAM_BUCKET, Prefix=f"{bucket}/")
        assert sorted(entry["Key"] for entry in listed.get("Contents", [])) == sorted(
            upstream_key(bucket, key) for key in keys
        )
        for row in rows:
            head = upstream.head_object(Bucket=UPSTREAM_BUCKET, Key=row["storage_key"])
            assert head["ETag"] == row["storage_etag"]


@LOCAL_ONLY
@pytest.mark.gateway_log(r"failed mid-body")
def test_damaged_blob_never_yields_a_corrupt_body(gateway, gateway_dsn, s3, bucket) -> None:
    """A blob shorter than its row (disk damage) must end the response early, never pass as a
    complete object or splice an error document into the body."""
    body = os.urandom(300_000)
    s3.put_object(Bucket=bucket, Key="damaged", Body=body)
    (storage_key,) = [
        row["storage_key"]
        for row in db_fetch(
            gateway_dsn,
            "SELECT storage_key FROM objects WHERE bucket = $1 AND key = 'damaged'",
            bucket,
        )
    ]
    path = blob_path(gateway, storage_key)
    with open(path, "r+b") as handle:
        handle.truncate(100_000)
    fragile = client(gateway.endpoint, retries={"total_max_attempts": 1})
    try:
        got = fragile.get_object(Bucket=bucket, Key="damaged")["Body"].read()
    except (BotoCoreError, ClientError):
        return
    # If anything came back, it can only be the truth.
    assert got == body


def test_janitor_skips_garbage_of_unknown_profiles(gateway, gateway_dsn) -> None:
    """Entries of a profile no longer configured are kept, and never stall collection."""
    keys = [uuid.uuid4().hex for _ in range(600)]
    db_fetch(
        gateway_dsn,
        "INSERT INTO garbage (profile, storage_key, listed_at)"
        " SELECT 'retired', k, now() - interval '2 days' FROM unnest($1::text[]) AS k",
        keys,
    )
    result = gateway.command("gc", "--grace", "86400", timeout=60)
    assert result.returncode == 0, result.stderr
    left = db_fetch(gateway_dsn, "SELECT count(*) AS n FROM garbage WHERE profile = 'retired'")
    assert left[0]["n"] == 600
    db_fetch(gateway_dsn, "DELETE FROM garbage WHERE profile = 'retired'")


def test_invalid_utf8_in_the_path_is_refused_not_merged(gateway, s3, bucket) -> None:
    """Two different byte strings must never name one object."""
    for raw in ("bad%FF", "bad%FE"):
        url = f"{gateway.endpoint}/{bucket}/{raw}"
        headers = sign("PUT", url, "UNSIGNED-PAYLOAD")
        headers["Content-Length"] = "1"
        head = request_head("PUT", f"/{bucket}/{raw}", headers)
        response = send_raw("127.0.0.1", gateway.port, head, b"x")
        assert response.status == 400
        assert b"<Code>InvalidURI</Code>" in response.body
    assert s3.list_objects_v2(Bucket=bucket)["KeyCount"] == 0


def test_response_override_with_line_break_is_invalid_argument(s3, bucket) -> None:
    s3.put_object(Bucket=bucket, Key="k", Body=b"x")
    with pytest.raises(ClientError) as excinfo:
        s3.get_object(Bucket=bucket, Key="k", ResponseContentType="text/plain\r\nX-Evil: 1")
    assert excinfo.value.response["Error"]["Code"] == "InvalidArgument"


def test_put_to_a_bucket_deleted_by_another_process_is_refused(
    request: pytest.FixtureRequest, gateway, s3, s3_tls
) -> None:
    """A process trusts its lookup of a bucket for a moment; a write to a bucket another process
    deleted meanwhile is still refused by its row commit, and leaves nothing behind: no row, no
    blob file that nothing accounts for, no upstream object under the bucket's prefix."""
    name = f"test-{uuid.uuid4().hex[:16]}"
    s3.create_bucket(Bucket=name)
    s3_tls.head_bucket(Bucket=name)  # its connection is open, so the delete below is quick
    s3.put_object(Bucket=name, Key="first", Body=b"x")  # this process now knows the bucket
    s3.delete_object(Bucket=name, Key="first")
    s3_tls.delete_bucket(Bucket=name)
    # Above the inline size: the write makes a blob (or an upstream object) before its commit.
    with pytest.raises(ClientError) as excinfo:
        s3.put_object(Bucket=name, Key="second", Body=os.urandom(INLINE_MAX + 1))
    assert excinfo.value.response["Error"]["Code"] == "NoSuchBucket"
    assert not db_fetch(gateway.dsn, "SELECT 1 FROM objects WHERE bucket = $1", name)
    if gateway.profile != UPSTREAM:
        assert unaccounted_blobs(gateway, gateway.dsn) == []
    else:
        upstream = request.getfixturevalue("upstream_s3")
        listed = upstream.list_objects_v2(Bucket=UPSTREAM_BUCKET, Prefix=upstream_key(name, ""))
        assert listed.get("Contents", []) == []
