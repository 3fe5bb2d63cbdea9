"""Postgres goes away under a live gateway: every operation answers a fast 503 as S3 XML, none
hangs, the log says so once, SIGTERM still exits promptly, and the same process serves again as
soon as the database is back.

Each gateway here has a Postgres (and, on the upstream profile, a moto) of its own, stopped and
started by the test; nothing else in the suite uses them.
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import requests
from botocore.exceptions import BotoCoreError, ClientError
from lxml import etree

from tests.conftest import (
    GATEWAY_ENV,
    LOCAL,
    PUBLIC_BUCKET,
    UPSTREAM,
    UPSTREAM_ENV,
    GatewayProcess,
    MotoServer,
    S3Client,
    client,
    db_fetch,
    free_port,
    run_gateway,
    upstream_storage,
    write_config,
)
from tests.postgres import SOCKET, TCP, FaultyProxy, OwnPostgres
from tests.test_upstream_outage import Load
from tests.test_variants import variant
from tests.unit.variants import images

BUCKET = "outage"
# Small, so a connection left checked out by a failure would soon starve the pool.
POOL_MAX = 3
# Far above the gateway's own bounds below (a connect of 2 s, an acquire of 3 s): what a
# request that hangs would exceed, and a loaded machine would not.
ANSWER_WITHIN = 15.0
# The whole graceful shutdown, with the database down.
EXIT_WITHIN = 20.0
SMALL = b"kept in its row"
LARGE = os.urandom(100_000)
PART = os.urandom(5 * 1024 * 1024)

OUTAGE = "database unavailable"
RECOVERY = "database available again"


@dataclass
class Outcome:
    operation: str
    status: int
    code: str
    headers: dict[str, str]
    seconds: float


@pytest.fixture
def own_postgres(tmp_path: Path) -> Iterator[OwnPostgres]:
    server = OwnPostgres(tmp_path / "pg")
    server.start()
    try:
        yield server
    finally:
        server.stop("immediate")


def small_pool(dsn: str, **timeouts: float) -> dict[str, object]:
    """The database settings of a gateway whose pool a few requests fill, and that gives up on
    a database quickly."""
    return {
        "url": dsn,
        "pool_min_size": 1,
        "pool_max_size": POOL_MAX,
        "connect_timeout_seconds": 2,
        "acquire_timeout_seconds": 3,
        **timeouts,
    }


@pytest.fixture(params=[(LOCAL, SOCKET), (UPSTREAM, TCP)], ids=["local-socket", "upstream-tcp"])
def outage_gateway(
    request: pytest.FixtureRequest, tmp_path: Path, own_postgres: OwnPostgres
) -> Iterator[GatewayProcess]:
    """A gateway on ``own_postgres``: local storage over its Unix socket, or an upstream of its
    own (moto) over TCP."""
    profile, how = request.param
    storage: dict[str, object] = {}
    env = GATEWAY_ENV
    moto = None
    if profile == UPSTREAM:
        moto = MotoServer(free_port(), tmp_path / "moto.log")
        moto.start()
        storage, env = upstream_storage(moto), UPSTREAM_ENV
    dsn = own_postgres.dsn(how)
    database = small_pool(dsn)
    try:
        with run_gateway(tmp_path / "gateway", dsn, storage, env, database=database) as process:
            yield process
    finally:
        if moto is not None:
            moto.stop()


def attempt(operation: str, call: Callable[[], object]) -> Outcome:
    """Run one client call that should fail, recording how and how fast."""
    started = time.monotonic()
    try:
        call()
    except ClientError as error:
        meta = error.response["ResponseMetadata"]
        return Outcome(
            operation,
            meta["HTTPStatusCode"],
            error.response["Error"]["Code"],
            meta["HTTPHeaders"],
            time.monotonic() - started,
        )
    except BotoCoreError as error:
        return Outcome(operation, 0, type(error).__name__, {}, time.monotonic() - started)
    return Outcome(operation, 200, "", {}, time.monotonic() - started)


def raw_attempt(operation: str, call: Callable[[], requests.Response]) -> Outcome:
    started = time.monotonic()
    try:
        response = call()
    except requests.RequestException as error:
        return Outcome(operation, 0, type(error).__name__, {}, time.monotonic() - started)
    code = etree.fromstring(response.content).findtext("Code") if response.content else ""
    headers = {name.lower(): value for name, value in response.headers.items()}
    return Outcome(operation, response.status_code, code or "", headers, time.monotonic() - started)


def every_operation(
    gateway: GatewayProcess, s3: S3Client, upload_id: str
) -> list[tuple[str, Callable[[], Any]]]:
    """Every kind of S3 operation, on objects and an upload made before the outage."""
    b = BUCKET
    calls: list[tuple[str, Callable[[], Any]]] = [
        # Several GETs at once: the gateway answers them with one batched lookup.
        *(
            (f"GetObject {key}", lambda key=key: s3.get_object(Bucket=b, Key=key)["Body"].read())
            for key in ("small", "large", "small", "large", "missing", "small", "large", "nope")
        ),
        ("HeadObject", lambda: s3.head_object(Bucket=b, Key="large")),
        ("PutObject small", lambda: s3.put_object(Bucket=b, Key="new-small", Body=SMALL)),
        ("PutObject large", lambda: s3.put_object(Bucket=b, Key="new-large", Body=LARGE)),
        ("CopyObject", lambda: s3.copy_object(Bucket=b, Key="copy", CopySource=f"{b}/large")),
        ("DeleteObject", lambda: s3.delete_object(Bucket=b, Key="small")),
        (
            "DeleteObjects",
            lambda: s3.delete_objects(Bucket=b, Delete={"Objects": [{"Key": "large"}]}),
        ),
        ("ListObjectsV2", lambda: s3.list_objects_v2(Bucket=b)),
        ("ListObjects", lambda: s3.list_objects(Bucket=b, Delimiter="/")),
        ("ListBuckets", lambda: s3.list_buckets()),
        ("HeadBucket", lambda: s3.head_bucket(Bucket=b)),
        ("CreateBucket", lambda: s3.create_bucket(Bucket="during-outage")),
        ("CreateMultipartUpload", lambda: s3.create_multipart_upload(Bucket=b, Key="mp2")),
        (
            "UploadPart",
            lambda: s3.upload_part(
                Bucket=b, Key="mp", UploadId=upload_id, PartNumber=2, Body=b"late part"
            ),
        ),
        ("ListParts", lambda: s3.list_parts(Bucket=b, Key="mp", UploadId=upload_id)),
        ("ListMultipartUploads", lambda: s3.list_multipart_uploads(Bucket=b)),
        (
            "CompleteMultipartUpload",
            lambda: s3.complete_multipart_upload(
                Bucket=b,
                Key="mp",
                UploadId=upload_id,
                MultipartUpload={"Parts": [{"PartNumber": 1, "ETag": "whatever"}]},
            ),
        ),
        (
            "AbortMultipartUpload",
            lambda: s3.abort_multipart_upload(Bucket=b, Key="mp", UploadId=upload_id),
        ),
    ]
    return calls


def check_unavailable(outcomes: list[Outcome]) -> None:
    for outcome in outcomes:
        assert outcome.status == 503, outcome
        # A HEAD answer has no body, so no code to parse.
        if not outcome.operation.startswith("Head"):
            assert outcome.code == "ServiceUnavailable", outcome
        assert outcome.headers.get("retry-after", "").isdigit(), outcome
        assert outcome.headers.get("x-amz-request-id"), outcome
        assert outcome.seconds < ANSWER_WITHIN, outcome


def assert_sigterm_exits_promptly(gateway: GatewayProcess) -> None:
    assert gateway.process is not None
    started = time.monotonic()
    gateway.process.send_signal(signal.SIGTERM)
    gateway.process.wait(timeout=EXIT_WITHIN + 30)
    assert time.monotonic() - started < EXIT_WITHIN


def log_since(gateway: GatewayProcess, offset: int) -> str:
    assert gateway.log_path is not None
    return gateway.log_path.read_bytes()[offset:].decode(errors="replace")


def log_size(gateway: GatewayProcess) -> int:
    assert gateway.log_path is not None
    return gateway.log_path.stat().st_size


def wait_healthy(gateway: GatewayProcess, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if requests.get(f"{gateway.endpoint}/_gateway/health", timeout=5).status_code == 200:
                return
        except requests.RequestException:
            pass
        time.sleep(0.2)
    raise AssertionError("the gateway did not find its database again")


def test_a_database_outage_is_fast_503s_and_passes(
    outage_gateway: GatewayProcess, own_postgres: OwnPostgres
) -> None:
    gateway = outage_gateway
    s3 = client(gateway.endpoint)
    # No retries: every 503 reaches the test. Bounded, should the gateway hang.
    fragile = client(gateway.endpoint, retries={"total_max_attempts": 1}, read_timeout=30)
    s3.create_bucket(Bucket=BUCKET)
    s3.put_object(Bucket=BUCKET, Key="small", Body=SMALL)
    s3.put_object(Bucket=BUCKET, Key="large", Body=LARGE)
    s3.put_object(
        Bucket=BUCKET, Key="photo.png", Body=images.transparent_png(), ContentType="image/png"
    )
    s3.put_object(Bucket=PUBLIC_BUCKET, Key="public", Body=SMALL)
    upload_id = s3.create_multipart_upload(Bucket=BUCKET, Key="mp")["UploadId"]
    part = s3.upload_part(Bucket=BUCKET, Key="mp", UploadId=upload_id, PartNumber=1, Body=PART)

    # Requests in flight while the server shuts down: their connections drop mid-query.
    offset = log_size(gateway)
    load = Load(gateway.endpoint, BUCKET)
    load.start(4)
    try:
        time.sleep(1)
        own_postgres.stop()
        during = len(load.outcomes)

        calls = every_operation(gateway, fragile, upload_id)
        with ThreadPoolExecutor(len(calls)) as pool:
            outcomes = list(pool.map(lambda call: attempt(*call), calls))
        check_unavailable(outcomes)
        public = f"{gateway.endpoint}/{PUBLIC_BUCKET}/public"
        raw = [
            raw_attempt("anonymous GetObject", lambda: requests.get(public, timeout=30)),
            raw_attempt(
                "GetObject ?variant",
                lambda: variant(gateway, BUCKET, "photo.png", "small"),
            ),
        ]
        check_unavailable(raw)
        anonymous = requests.get(public, timeout=30)
        assert anonymous.headers["Content-Type"] == "application/xml"
        assert (
            etree.fromstring(anonymous.content).findtext("RequestId")
            == (anonymous.headers["x-amz-request-id"])
        )
        health = requests.get(f"{gateway.endpoint}/_gateway/health", timeout=30)
        assert health.status_code == 503
        time.sleep(1)  # the load keeps meeting the outage meanwhile
    finally:
        stopped = load.stop()
    assert stopped, "a request outlived the outage by a minute"
    assert ("PutObject", 200, "") in load.outcomes[:during], "no load got through before"
    met = {(status, code) for _, status, code in load.outcomes[during:]}
    assert (503, "ServiceUnavailable") in met, met
    assert load.answers("PutObject") <= {(200, ""), (503, "ServiceUnavailable")}
    assert load.answers("GetObject") <= {(200, ""), (503, "ServiceUnavailable")}

    # One line when the outage began, no traceback for any request.
    logged = log_since(gateway, offset)
    assert "Traceback" not in logged, logged[-3000:]
    assert logged.count(OUTAGE) == 1, logged[-3000:]
    assert RECOVERY not in logged, logged[-3000:]

    # Back, without a restart of the gateway.
    own_postgres.start()
    wait_healthy(gateway)
    assert s3.get_object(Bucket=BUCKET, Key="small")["Body"].read() == SMALL
    assert s3.get_object(Bucket=BUCKET, Key="large")["Body"].read() == LARGE
    # Nothing the failed writes did is visible.
    keys = {entry["Key"] for entry in s3.list_objects_v2(Bucket=BUCKET).get("Contents", [])}
    assert not keys & {"new-small", "new-large", "copy", "mp", "mp2"}, keys
    # The upload survived its failed calls, and completes.
    s3.complete_multipart_upload(
        Bucket=BUCKET,
        Key="mp",
        UploadId=upload_id,
        MultipartUpload={"Parts": [{"PartNumber": 1, "ETag": part["ETag"]}]},
    )
    assert s3.get_object(Bucket=BUCKET, Key="mp")["Body"].read() == PART
    # No claim on the variant was left behind: it renders now, not after a lease.
    started = time.monotonic()
    assert variant(gateway, BUCKET, "photo.png", "small").status_code == 200
    assert time.monotonic() - started < ANSWER_WITHIN
    # No pooled connection was lost to a failure: more concurrent requests than the pool
    # holds all get one, and no advisory lock is still held by anyone.
    with ThreadPoolExecutor(4 * POOL_MAX) as pool:
        puts = list(
            pool.map(
                lambda i: s3.put_object(Bucket=BUCKET, Key="small", Body=SMALL + b"%d" % i),
                range(8 * POOL_MAX),
            )
        )
    assert len(puts) == 8 * POOL_MAX
    locks = db_fetch(gateway.dsn, "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory'")
    assert locks[0][0] == 0
    logged = log_since(gateway, offset)
    assert logged.count(RECOVERY) == 1, logged[-3000:]

    # Down again, SIGTERM: the gateway exits promptly all the same.
    own_postgres.stop()
    attempt("GetObject", lambda: fragile.get_object(Bucket=BUCKET, Key="small"))
    assert_sigterm_exits_promptly(gateway)
    assert "Traceback" not in log_since(gateway, offset), log_since(gateway, offset)[-3000:]

    # Everything acknowledged is still there for the next start.
    own_postgres.start()
    gateway.start()
    assert s3.get_object(Bucket=BUCKET, Key="mp")["Body"].read() == PART
    assert s3.get_object(Bucket=BUCKET, Key="large")["Body"].read() == LARGE


@pytest.fixture
def hanging_gateway(
    tmp_path: Path, own_postgres: OwnPostgres
) -> Iterator[tuple[GatewayProcess, FaultyProxy]]:
    """A gateway that reaches its Postgres through a proxy that can stop answering."""
    proxy = FaultyProxy(("127.0.0.1", own_postgres.port))
    dsn = f"postgresql://postgres@127.0.0.1:{proxy.port}/postgres"
    database = small_pool(dsn, query_timeout_seconds=2)
    try:
        with run_gateway(tmp_path / "gateway", dsn, {}, GATEWAY_ENV, database=database) as process:
            yield process, proxy
    finally:
        proxy.close()


def test_a_hung_database_is_503_within_the_timeouts(
    hanging_gateway: tuple[GatewayProcess, FaultyProxy],
) -> None:
    """A database that stops answering (connections open, nothing comes back) is the worst
    case: without bounds every request would wait on it forever."""
    gateway, proxy = hanging_gateway
    s3 = client(gateway.endpoint)
    fragile = client(gateway.endpoint, retries={"total_max_attempts": 1}, read_timeout=60)
    s3.create_bucket(Bucket=BUCKET)
    s3.put_object(Bucket=BUCKET, Key="small", Body=SMALL)
    s3.put_object(Bucket=BUCKET, Key="large", Body=LARGE)
    offset = log_size(gateway)

    proxy.hang()
    calls: list[tuple[str, Callable[[], Any]]] = [
        *(
            (f"GetObject {key}", lambda key=key: fragile.get_object(Bucket=BUCKET, Key=key))
            for key in ("small", "large", "small", "large")
        ),
        ("HeadObject", lambda: fragile.head_object(Bucket=BUCKET, Key="small")),
        ("PutObject small", lambda: fragile.put_object(Bucket=BUCKET, Key="new", Body=SMALL)),
        ("PutObject large", lambda: fragile.put_object(Bucket=BUCKET, Key="big", Body=LARGE)),
        ("ListObjectsV2", lambda: fragile.list_objects_v2(Bucket=BUCKET)),
        ("DeleteObject", lambda: fragile.delete_object(Bucket=BUCKET, Key="small")),
        ("CreateMultipartUpload", lambda: fragile.create_multipart_upload(Bucket=BUCKET, Key="m")),
    ]
    with ThreadPoolExecutor(len(calls)) as pool:
        outcomes = list(pool.map(lambda call: attempt(*call), calls))
    check_unavailable(outcomes)
    logged = log_since(gateway, offset)
    assert "Traceback" not in logged, logged[-3000:]
    assert logged.count(OUTAGE) == 1, logged[-3000:]

    proxy.heal()
    wait_healthy(gateway)
    assert s3.get_object(Bucket=BUCKET, Key="small")["Body"].read() == SMALL
    assert log_since(gateway, offset).count(RECOVERY) == 1
    keys = {entry["Key"] for entry in s3.list_objects_v2(Bucket=BUCKET).get("Contents", [])}
    assert keys == {"small", "large"}
    with ThreadPoolExecutor(4 * POOL_MAX) as pool:
        puts = list(
            pool.map(
                lambda i: s3.put_object(Bucket=BUCKET, Key=f"after/{i}", Body=LARGE),
                range(8 * POOL_MAX),
            )
        )
    assert len(puts) == 8 * POOL_MAX

    # Hung again, SIGTERM: a connection stuck on the dead server does not hold up the exit.
    proxy.hang()
    attempt("GetObject", lambda: fragile.get_object(Bucket=BUCKET, Key="small"))
    assert_sigterm_exits_promptly(gateway)


@pytest.mark.parametrize("command", [["migrate"], ["gc", "--grace", "0"]], ids=["migrate", "gc"])
def test_maintenance_commands_say_the_database_is_unavailable(
    tmp_path: Path, own_postgres: OwnPostgres, command: list[str]
) -> None:
    dsn = own_postgres.dsn(TCP)
    config_path = tmp_path / "gateway.yaml"
    database = {"url": dsn, "connect_timeout_seconds": 2}
    port = free_port()
    write_config(config_path, tmp_path / "data", port, dsn, database=database)
    never_started = GatewayProcess(config_path, tmp_path / "data", port, env=GATEWAY_ENV, dsn=dsn)
    own_postgres.stop()
    result = never_started.command(*command)
    assert result.returncode == 1, result.stdout + result.stderr
    assert "database unavailable: ConnectionRefusedError" in result.stderr, result.stderr
    assert "Traceback" not in result.stderr, result.stderr
