"""The upstream of an upstream profile goes away under a live gateway: every operation that
needs it answers 503 (ServiceUnavailable or SlowDown) and commits nothing, none hangs, and the
same process uses the upstream again as soon as it is back.

The test has a moto and a gateway of its own: moto keeps everything in memory, so a stopped
one comes back empty, which would pull the ground from under every test that ran later on the
session's upstream.
"""

from __future__ import annotations

import functools
import os
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from botocore.exceptions import BotoCoreError, ClientError

from tests.conftest import (
    OwnUpstream,
    S3Client,
    client,
    db_fetch,
    own_upstream_gateway,
)
from tests.s3errors import error_of
from tests.test_upstream import CUT_SHORT, UNAVAILABLE, Upstream, listing, read_body
from tests.test_variants import error_code, variant
from tests.unit.variants import images

# --- an upstream outage ----------------------------------------------------------------------


@dataclass
class Load:
    """Threads putting and getting small objects until stopped, each answer recorded."""

    endpoint: str
    bucket: str
    # (operation, HTTP status or 0 when none came, error code or exception name)
    outcomes: list[tuple[str, int, str]] = field(default_factory=list)
    stopping: threading.Event = field(default_factory=threading.Event)
    threads: list[threading.Thread] = field(default_factory=list)

    def start(self, count: int) -> None:
        for index in range(count):
            thread = threading.Thread(target=self._run, args=(index,), daemon=True)
            thread.start()
            self.threads.append(thread)

    def stop(self) -> bool:
        """Whether every thread finished (within a minute: requests have timeouts)."""
        self.stopping.set()
        for thread in self.threads:
            thread.join(timeout=60)
        return not any(thread.is_alive() for thread in self.threads)

    def answers(self, operation: str) -> set[tuple[int, str]]:
        return {(status, code) for name, status, code in self.outcomes if name == operation}

    def _run(self, index: int) -> None:
        # No retries in boto3: every 503 reaches the test. Bounded, should the gateway hang.
        s3 = client(
            self.endpoint, retries={"total_max_attempts": 1}, connect_timeout=5, read_timeout=20
        )
        number = 0
        while not self.stopping.is_set():
            key = f"load/{index}/{number}"
            body = os.urandom(1000 + number)
            # Only what was written is read back: a key never written may rightly be a 404.
            if self._record("PutObject", s3.put_object, Key=key, Body=body):
                self._record("GetObject", functools.partial(read_body, s3), Key=key)
            number += 1

    def _record(self, operation: str, call: Callable[..., object], **params: object) -> bool:
        try:
            call(Bucket=self.bucket, **params)
            self.outcomes.append((operation, 200, ""))
            return True
        except ClientError as error:
            self.outcomes.append((operation, *error_of(error)))
        except BotoCoreError as error:
            self.outcomes.append((operation, 0, type(error).__name__))
        return False


@pytest.fixture
def own_upstream(tmp_path: Path, pg_server_dsn: str) -> Iterator[OwnUpstream]:
    """An outage test stops its upstream, which comes back empty (moto keeps everything in
    memory): on the session's moto that would lose what every later test relies on."""
    with own_upstream_gateway(tmp_path, pg_server_dsn) as own:
        yield own


def upstream_calls(
    s3: S3Client, bucket: str, upload_id: str, part_etag: str
) -> list[tuple[str, Callable[[], object]]]:
    """Every operation that needs the upstream, on objects and an upload made before it went
    away (PutObject and GetObject are the load's)."""
    return [
        (
            "CopyObject",
            lambda: s3.copy_object(Bucket=bucket, Key="copy", CopySource=f"{bucket}/before"),
        ),
        ("DeleteObject", lambda: s3.delete_object(Bucket=bucket, Key="before")),
        ("CreateMultipartUpload", lambda: s3.create_multipart_upload(Bucket=bucket, Key="mp2")),
        (
            "UploadPart",
            lambda: s3.upload_part(
                Bucket=bucket, Key="mp", UploadId=upload_id, PartNumber=2, Body=b"part two"
            ),
        ),
        (
            "UploadPartCopy",
            lambda: s3.upload_part_copy(
                Bucket=bucket, Key="mp", UploadId=upload_id, PartNumber=3,
                CopySource=f"{bucket}/before",
            ),
        ),
        (
            "CompleteMultipartUpload",
            lambda: s3.complete_multipart_upload(
                Bucket=bucket, Key="mp", UploadId=upload_id,
                MultipartUpload={"Parts": [{"PartNumber": 1, "ETag": part_etag}]},
            ),
        ),
        (
            "AbortMultipartUpload",
            lambda: s3.abort_multipart_upload(Bucket=bucket, Key="mp", UploadId=upload_id),
        ),
    ]  # fmt: skip


def test_an_upstream_outage_is_503_and_passes(own_upstream: OwnUpstream) -> None:
    gateway, moto_server = own_upstream.gateway, own_upstream.moto
    upstream = Upstream(moto_server.client(), moto_server.bucket)
    assert gateway.process is not None
    serving = gateway.process.pid
    s3 = client(gateway.endpoint)
    bucket = "outage"
    s3.create_bucket(Bucket=bucket)
    fragile = client(gateway.endpoint, retries={"total_max_attempts": 1}, read_timeout=20)
    s3.put_object(Bucket=bucket, Key="before", Body=b"written before the outage")
    s3.put_object(
        Bucket=bucket, Key="photo.png", Body=images.transparent_png(), ContentType="image/png"
    )
    upload_id = s3.create_multipart_upload(Bucket=bucket, Key="mp")["UploadId"]
    part = s3.upload_part(Bucket=bucket, Key="mp", UploadId=upload_id, PartNumber=1, Body=b"one")
    assert gateway.log_path is not None
    offset = gateway.log_path.stat().st_size
    load = Load(gateway.endpoint, bucket)
    load.start(4)
    try:
        time.sleep(1)
        moto_server.stop()
        during = len(load.outcomes)
        with pytest.raises(ClientError) as excinfo:
            fragile.put_object(Bucket=bucket, Key="during", Body=b"put while the upstream is down")
        assert error_of(excinfo.value) in UNAVAILABLE
        with pytest.raises(ClientError) as excinfo:
            fragile.get_object(Bucket=bucket, Key="before")
        assert error_of(excinfo.value) in UNAVAILABLE
        for operation, call in upstream_calls(fragile, bucket, upload_id, part["ETag"]):
            with pytest.raises(ClientError) as excinfo:
                call()
            assert error_of(excinfo.value) in UNAVAILABLE, operation
            headers = excinfo.value.response["ResponseMetadata"]["HTTPHeaders"]
            assert headers.get("x-amz-request-id"), operation
        # A variant renders from the upstream's bytes: none to be had, so a 503, not a
        # recorded render failure.
        rendered = variant(gateway, bucket, "photo.png", "small")
        assert (rendered.status_code, error_code(rendered)) in UNAVAILABLE, rendered.text
        # DeleteObjects answers per key.
        result = fragile.delete_objects(Bucket=bucket, Delete={"Objects": [{"Key": "before"}]})
        assert [error["Code"] for error in result.get("Errors", [])] in (
            ["ServiceUnavailable"],
            ["SlowDown"],
        ), result
        time.sleep(1)  # the load keeps meeting the outage meanwhile
    finally:
        stopped = load.stop()
        # moto comes back empty, with the upstream bucket made anew.
        moto_server.start()

    assert stopped, "a request outlived the outage by a minute"
    assert ("PutObject", 200, "") in load.outcomes[:during], "no load got through before"
    met = {(status, code) for _, status, code in load.outcomes[during:]}
    assert met & UNAVAILABLE, f"the load never met the outage: {met}"
    assert load.answers("PutObject") <= UNAVAILABLE | {(200, "")}
    assert load.answers("GetObject") <= UNAVAILABLE | CUT_SHORT | {(200, "")}
    # The failed writes recorded nothing, the failed deletes removed nothing, the upload is
    # still there.
    rows = db_fetch(gateway.dsn, "SELECT key FROM objects WHERE bucket = $1", bucket)
    keys = {row["key"] for row in rows}
    assert not keys & {"during", "copy", "mp", "mp2"}, keys
    assert "before" in keys
    uploads = s3.list_multipart_uploads(Bucket=bucket).get("Uploads", [])
    assert [entry["UploadId"] for entry in uploads] == [upload_id]
    assert [
        p["PartNumber"] for p in s3.list_parts(Bucket=bucket, Key="mp", UploadId=upload_id)["Parts"]
    ] == [1]

    # The same gateway process serves again (with boto3's usual retries, as clients have).
    with pytest.raises(ClientError) as excinfo:
        s3.head_object(Bucket=bucket, Key="during")
    assert error_of(excinfo.value)[0] == 404
    s3.put_object(Bucket=bucket, Key="after", Body=b"written after the outage")
    assert s3.get_object(Bucket=bucket, Key="after")["Body"].read() == b"written after the outage"
    assert upstream.get(bucket, "after")["Body"].read() == b"written after the outage"
    listed = {key for key, _, _ in listing(s3, bucket)}
    assert "after" in listed and "during" not in listed
    assert gateway.process.pid == serving and gateway.process.poll() is None
    # One line as the outage began, one as it ended; no traceback for any request.
    logged = gateway.log_path.read_bytes()[offset:].decode(errors="replace")
    assert "Traceback" not in logged, logged[-3000:]
    assert logged.count(" unavailable: ") == 1, logged[-3000:]
    assert logged.count("available again") == 1, logged[-3000:]
