"""An upstream that fails in other ways than being down: 5xx answers, silence (read timeouts),
an answer the gateway never hears because it was killed, overwrites racing through a slow
upstream, and garbage collection of an upstream profile.

A gateway of its own talks to moto through a FaultyProxy (tests/faultproxy.py) that each test
tells how to misbehave, and moto is checked directly, around both.
"""

from __future__ import annotations

import functools
import hashlib
import os
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from types import SimpleNamespace
from typing import Any

import pytest
from botocore.exceptions import BotoCoreError, ClientError

from gateway.config import UpstreamProfile
from tests.conftest import (
    UPSTREAM,
    UPSTREAM_BUCKET,
    UPSTREAM_ENV,
    UPSTREAM_VARIANTS_PREFIX,
    GatewayProcess,
    MotoServer,
    S3Client,
    client,
    create_database,
    db_fetch,
    run_gateway,
    upstream_key,
    upstream_storage,
    wait_for_stored_variants,
)
from tests.faultproxy import FAIL, HOLD, JITTER, PASS, STALL, FaultyProxy
from tests.s3errors import error_of
from tests.test_variants import variant
from tests.unit.variants import images

# The test gateways keep the default part size: bodies above it go up as multipart uploads.
PART_SIZE = UpstreamProfile.model_fields["part_size"].default
MiB = 1024 * 1024
UNAVAILABLE = {(503, "ServiceUnavailable"), (503, "SlowDown")}
READ_TIMEOUT = 2


@dataclass
class Faulty:
    process: GatewayProcess
    proxy: FaultyProxy
    moto: S3Client

    def client(self) -> S3Client:
        """boto3 without retries, so every refusal reaches the test."""
        return client(self.process.endpoint, retries={"total_max_attempts": 1}, read_timeout=120)

    def row(self, bucket: str, key: str) -> dict[str, Any] | None:
        rows = db_fetch(
            self.process.dsn,
            "SELECT * FROM objects WHERE bucket = $1 AND key = $2",
            bucket,
            key,
        )
        return dict(rows[0]) if rows else None

    def upstream(self, bucket: str, key: str) -> tuple[str, bytes] | None:
        """(ETag, bytes) of what moto holds for the gateway's (bucket, key)."""
        try:
            got = self.moto.get_object(Bucket=UPSTREAM_BUCKET, Key=upstream_key(bucket, key))
        except ClientError as error:
            assert error.response["ResponseMetadata"]["HTTPStatusCode"] == 404
            return None
        return got["ETag"], got["Body"].read()

    def uploads_in_progress(self, bucket: str, key: str) -> list[dict[str, Any]]:
        listed = self.moto.list_multipart_uploads(
            Bucket=UPSTREAM_BUCKET, Prefix=upstream_key(bucket, key)
        )
        return listed.get("Uploads", [])

    def new_bucket(self) -> str:
        name = f"faults-{uuid.uuid4().hex[:12]}"
        client(self.process.endpoint).create_bucket(Bucket=name)
        return name


@pytest.fixture(scope="module")
def faulty(
    tmp_path_factory: pytest.TempPathFactory, pg_server_dsn: str, moto_server: MotoServer
) -> Iterator[Faulty]:
    proxy = FaultyProxy(moto_server.port)
    proxy.start()
    directory = tmp_path_factory.mktemp("faulty") / "gateway"
    storage = upstream_storage(SimpleNamespace(endpoint=proxy.endpoint, bucket=UPSTREAM_BUCKET))
    profile = storage["storage_profiles"][UPSTREAM]  # type: ignore[index]
    # Silence is noticed within seconds, and retried once.
    profile.update(read_timeout_seconds=READ_TIMEOUT, max_attempts=2, retry_base_seconds=0.1)
    dsn = create_database(pg_server_dsn)
    try:
        with run_gateway(directory, dsn, storage, UPSTREAM_ENV) as process:
            yield Faulty(process, proxy, moto_server.client())
    finally:
        proxy.stop()


def etag_of(body: bytes) -> str:
    return f'"{hashlib.md5(body).hexdigest()}"'


def writes_of(bucket: str, key: str, only_parts: bool = False) -> Callable[[str, str], bool]:
    """A rule matching the upstream writes of one object (its parts only, if asked)."""
    path = f"/{UPSTREAM_BUCKET}/{upstream_key(bucket, key)}"

    def matches(method: str, target: str) -> bool:
        if method not in ("PUT", "POST") or target.split("?")[0] != path:
            return False
        return "partNumber=" in target if only_parts else True

    return matches


def reads_of(bucket: str, key: str) -> Callable[[str, str], bool]:
    path = f"/{UPSTREAM_BUCKET}/{upstream_key(bucket, key)}"
    return lambda method, target: method == "GET" and target.split("?")[0] == path


def assert_previous_intact(faulty: Faulty, bucket: str, key: str, before, previous: bytes):
    """The failed write changed nothing: row, gateway answer, upstream object."""
    assert faulty.row(bucket, key) == before
    got = faulty.client().get_object(Bucket=bucket, Key=key)
    assert got["Body"].read() == previous
    assert faulty.upstream(bucket, key) == (before["storage_etag"], previous)
    assert faulty.uploads_in_progress(bucket, key) == []


@pytest.mark.parametrize(
    "size, only_parts",
    [(100_000, False), (PART_SIZE + MiB, False), (PART_SIZE + MiB, True)],
    ids=["single-put", "multipart-refused", "parts-refused"],
)
def test_an_upstream_5xx_is_503_and_commits_nothing(
    faulty: Faulty, size: int, only_parts: bool
) -> None:
    s3 = faulty.client()
    bucket = faulty.new_bucket()
    previous = os.urandom(size)
    s3.put_object(Bucket=bucket, Key="k", Body=previous)
    before = faulty.row(bucket, "k")
    assert before is not None

    failing = [writes_of(bucket, key, only_parts) for key in ("k", "new")]

    def rule(method: str, target: str) -> str:
        return FAIL if any(matches(method, target) for matches in failing) else PASS

    with faulty.proxy.rule_of(rule):
        with pytest.raises(ClientError) as excinfo:
            s3.put_object(Bucket=bucket, Key="k", Body=os.urandom(size))
        assert error_of(excinfo) in UNAVAILABLE
        # And a new key: nothing recorded, nothing left upstream.
        with pytest.raises(ClientError) as excinfo:
            s3.put_object(Bucket=bucket, Key="new", Body=os.urandom(size))
        assert error_of(excinfo) in UNAVAILABLE
    assert any(seen.action == FAIL for seen in faulty.proxy.seen)
    assert_previous_intact(faulty, bucket, "k", before, previous)
    assert faulty.row(bucket, "new") is None
    assert faulty.upstream(bucket, "new") is None
    assert faulty.uploads_in_progress(bucket, "new") == []

    failing_read = reads_of(bucket, "k")
    with faulty.proxy.rule_of(
        lambda method, target: FAIL if failing_read(method, target) else PASS
    ):
        with pytest.raises(ClientError) as excinfo:
            s3.get_object(Bucket=bucket, Key="k")["Body"].read()
        assert error_of(excinfo) in UNAVAILABLE
    assert faulty.row(bucket, "k") == before


def test_an_upstream_that_stops_answering_is_503_and_commits_nothing(faulty: Faulty) -> None:
    s3 = faulty.client()
    bucket = faulty.new_bucket()
    previous = os.urandom(50_000)
    s3.put_object(Bucket=bucket, Key="k", Body=previous)
    before = faulty.row(bucket, "k")

    silent = writes_of(bucket, "k")
    with faulty.proxy.rule_of(lambda method, target: STALL if silent(method, target) else PASS):
        started = time.monotonic()
        with pytest.raises(ClientError) as excinfo:
            s3.put_object(Bucket=bucket, Key="k", Body=os.urandom(50_000))
        assert error_of(excinfo) in UNAVAILABLE
        # Bounded by the upstream read timeout and its retries, not by the client's patience
        # (generous: the machine may be loaded).
        assert time.monotonic() - started < 60
    assert any(seen.action == STALL for seen in faulty.proxy.seen)
    assert_previous_intact(faulty, bucket, "k", before, previous)

    silent_read = reads_of(bucket, "k")
    with faulty.proxy.rule_of(
        lambda method, target: STALL if silent_read(method, target) else PASS
    ):
        with pytest.raises((ClientError, BotoCoreError)) as failure:
            s3.get_object(Bucket=bucket, Key="k")["Body"].read()
        if isinstance(failure.value, ClientError):
            assert error_of(failure) in UNAVAILABLE  # type: ignore[arg-type]
    assert faulty.row(bucket, "k") == before


def test_concurrent_overwrites_leave_the_row_at_the_upstream_version(faulty: Faulty) -> None:
    """Writers of one key land upstream and commit in different orders (the proxy delays each
    upstream answer at random): the row must always describe what the upstream holds."""
    bucket = faulty.new_bucket()
    writers = 6
    clients = [faulty.client() for _ in range(writers)]
    barrier = threading.Barrier(writers, timeout=60)

    def overwrite(index: int) -> bytes | None:
        body = os.urandom(20_000 + index)
        barrier.wait()
        try:
            clients[index].put_object(Bucket=bucket, Key="contended", Body=body)
        except ClientError as error:
            # A writer may lose the race for the key's lock: a retryable refusal.
            assert error.response["ResponseMetadata"]["HTTPStatusCode"] in (409, 503), error
            return None
        return body

    path = f"/{UPSTREAM_BUCKET}/{upstream_key(bucket, 'contended')}"
    with faulty.proxy.rule_of(
        lambda method, target: JITTER if target.split("?")[0] == path else PASS
    ):
        for _ in range(5):
            with ThreadPoolExecutor(writers) as pool:
                written = [body for body in pool.map(overwrite, range(writers)) if body]
            assert written
            row = faulty.row(bucket, "contended")
            held = faulty.upstream(bucket, "contended")
            assert row is not None and held is not None
            etag, data = held
            assert row["storage_etag"] == etag
            assert data in written
            assert row["etag"] == etag_of(data)
            got = faulty.client().get_object(Bucket=bucket, Key="contended")
            assert got["Body"].read() == data


def variant_keys(faulty: Faulty) -> set[str]:
    pages = faulty.moto.get_paginator("list_objects_v2").paginate(
        Bucket=UPSTREAM_BUCKET, Prefix=UPSTREAM_VARIANTS_PREFIX
    )
    return {entry["Key"] for page in pages for entry in page.get("Contents", [])}


def test_gc_with_no_grace_deletes_retired_variants_and_keeps_live_objects(
    faulty: Faulty,
) -> None:
    s3 = faulty.client()
    bucket = faulty.new_bucket()
    first, second = images.jpeg_with_orientation(1), images.jpeg_with_orientation(6)
    s3.put_object(Bucket=bucket, Key="photo.jpg", Body=first, ContentType="image/jpeg")
    assert variant(faulty.process, bucket, "photo.jpg", "thumb").status_code == 200
    wait_for_stored_variants(faulty.process.dsn)
    (retired,) = db_fetch(
        faulty.process.dsn,
        "SELECT d.storage_key FROM derivatives d JOIN objects o USING (version_id)"
        " WHERE o.bucket = $1 AND o.key = 'photo.jpg' AND d.status = 'ready'",
        bucket,
    )
    retired_key = retired["storage_key"]
    assert retired_key in variant_keys(faulty)

    # Overwrites of in-place objects, by a single PUT and by a multipart upload, and a delete.
    s3.put_object(Bucket=bucket, Key="photo.jpg", Body=second, ContentType="image/jpeg")
    plain, big = os.urandom(30_000), os.urandom(PART_SIZE + MiB)
    s3.put_object(Bucket=bucket, Key="plain", Body=os.urandom(30_000))
    s3.put_object(Bucket=bucket, Key="plain", Body=plain)
    s3.put_object(Bucket=bucket, Key="big", Body=os.urandom(PART_SIZE + MiB))
    s3.put_object(Bucket=bucket, Key="big", Body=big)
    s3.put_object(Bucket=bucket, Key="gone", Body=b"deleted")
    s3.delete_object(Bucket=bucket, Key="gone")
    fresh = variant(faulty.process, bucket, "photo.jpg", "thumb")
    assert fresh.status_code == 200
    wait_for_stored_variants(faulty.process.dsn)

    result = faulty.process.command("gc", "--grace", "0")
    assert result.returncode == 0, result.stderr

    # The retired variant is gone upstream; the live variant is not.
    live_variants = {
        row["storage_key"]
        for row in db_fetch(
            faulty.process.dsn,
            "SELECT storage_key FROM derivatives WHERE storage_key IS NOT NULL",
        )
    }
    assert retired_key not in variant_keys(faulty)
    assert live_variants and live_variants <= variant_keys(faulty)
    # Every live object is still in place upstream, with the bytes its row records.
    for key, body in (("photo.jpg", second), ("plain", plain), ("big", big)):
        row = faulty.row(bucket, key)
        assert row is not None
        assert faulty.upstream(bucket, key) == (row["storage_etag"], body)
        assert s3.get_object(Bucket=bucket, Key=key)["Body"].read() == body
    assert faulty.upstream(bucket, "gone") is None
    again = variant(faulty.process, bucket, "photo.jpg", "thumb")
    assert again.status_code == 200 and again.content == fresh.content


def hold_if(matches: Callable[[str, str], bool], method: str, target: str) -> str:
    return HOLD if matches(method, target) else PASS


def put_into(s3: S3Client, bucket: str, key: str, body: bytes, outcome: list[object]) -> None:
    """PutObject, its response or error appended to ``outcome``."""
    try:
        outcome.append(s3.put_object(Bucket=bucket, Key=key, Body=body))
    except (ClientError, BotoCoreError) as error:
        outcome.append(error)


def test_a_kill_between_the_upstream_write_and_the_row_commit(faulty: Faulty) -> None:
    """SIGKILL while the upstream's answer to a write is held back: the object is written
    there, its row never committed. After a restart the gateway serves what the upstream
    holds, and its row comes to describe exactly that; nothing is half-recorded."""
    s3 = faulty.client()
    bucket = faulty.new_bucket()
    previous, new = os.urandom(40_000), os.urandom(40_000)
    s3.put_object(Bucket=bucket, Key="overwritten", Body=previous)

    for key, body in (("overwritten", new), ("first", os.urandom(40_000))):
        held = writes_of(bucket, key)
        outcome: list[object] = []

        with faulty.proxy.rule_of(functools.partial(hold_if, held)):
            writer = threading.Thread(target=put_into, args=(s3, bucket, key, body, outcome))
            writer.start()
            assert faulty.proxy.waiting.wait(timeout=60), "the write never reached the upstream"
            # The upstream has the new bytes; the gateway has not heard so yet.
            assert faulty.upstream(bucket, key) == (etag_of(body), body)
            faulty.process.kill()
        writer.join(timeout=60)
        assert outcome and not isinstance(outcome[0], dict), "a killed write was acknowledged"
        faulty.process.start()

        # Served as the upstream holds it, and recorded so.
        got = s3.get_object(Bucket=bucket, Key=key)
        assert got["Body"].read() == body
        assert got["ETag"] == etag_of(body)
        row = faulty.row(bucket, key)
        assert row is not None
        assert (row["storage_etag"], row["etag"], row["size"]) == (
            etag_of(body),
            etag_of(body),
            len(body),
        )
        listed = s3.list_objects_v2(Bucket=bucket, Prefix=key)["Contents"]
        assert [(entry["Key"], entry["ETag"]) for entry in listed] == [(key, etag_of(body))]
    # The restarted gateway takes writes as before.
    s3.put_object(Bucket=bucket, Key="after", Body=b"after the restart")
    assert faulty.upstream(bucket, "after") == (etag_of(b"after the restart"), b"after the restart")
