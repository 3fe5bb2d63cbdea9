"""The access log and the Prometheus metrics of live gateways: JSON access lines, one per
request; GET /_gateway/metrics scraped and parsed, behind its token; one coherent set across
--workers processes; per-bucket counts kept exact without a scan."""

from __future__ import annotations

import io
import json
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
from PIL import Image
from prometheus_client.parser import text_string_to_metric_families

from gateway.logs import ACCESS_FIELDS
from tests.conftest import (
    GATEWAY_ENV,
    ROOT_SECRET_KEY,
    GatewayProcess,
    S3Client,
    client,
    create_database,
    run_gateway,
    wait_for,
    wait_for_stored_variants,
)

TOKEN = "scrape-token-" + "7" * 20
METRICS = "/_gateway/metrics"


@pytest.fixture(scope="module")
def observed(
    tmp_path_factory: pytest.TempPathFactory, pg_server_dsn: str
) -> Iterator[GatewayProcess]:
    """A gateway whose metrics need the token, behind a proxy it trusts on loopback."""
    directory = tmp_path_factory.mktemp("observed") / "gateway"
    env = {**GATEWAY_ENV, "METRICS_TOKEN": TOKEN}
    with run_gateway(
        directory,
        create_database(pg_server_dsn),
        {},
        env,
        metrics={"token": "${METRICS_TOKEN}"},
        trusted_proxies=["127.0.0.1/32"],
    ) as process:
        yield process


@pytest.fixture(scope="module")
def s3(observed: GatewayProcess) -> S3Client:
    return client(observed.endpoint)


@pytest.fixture
def bucket(s3: S3Client) -> str:
    name = f"obs-{uuid.uuid4().hex[:12]}"
    s3.create_bucket(Bucket=name)
    return name


def scrape(gateway: GatewayProcess, token: str | None = TOKEN) -> dict[str, Any]:
    """Samples by (name, sorted labels) -> value."""
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    answer = requests.get(gateway.endpoint + METRICS, headers=headers, timeout=10)
    assert answer.status_code == 200, answer.text
    assert answer.headers["Content-Type"].startswith("text/plain")
    samples: dict[Any, float] = {}
    for family in text_string_to_metric_families(answer.text):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return samples


def value(samples: dict[Any, float], name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def access_lines(gateway: GatewayProcess, offset: int) -> list[dict[str, Any]]:
    assert gateway.log_path is not None
    text = gateway.log_path.read_bytes()[offset:].decode()
    records = [json.loads(line) for line in text.splitlines() if line.startswith("{")]
    return [record for record in records if "request_id" in record]


def log_offset(gateway: GatewayProcess) -> int:
    assert gateway.log_path is not None
    return gateway.log_path.stat().st_size


def logged(gateway: GatewayProcess, offset: int, request_id: str) -> dict[str, Any]:
    """The access line of ``request_id`` (written as its response goes out)."""
    found: list[dict[str, Any]] = []

    def written() -> bool:
        found[:] = [r for r in access_lines(gateway, offset) if r["request_id"] == request_id]
        return bool(found)

    assert wait_for(written, 5)
    assert len(found) == 1
    return found[0]


# --- the access log --------------------------------------------------------------------------


def test_each_request_is_one_json_line_with_stable_keys(
    observed: GatewayProcess, s3: S3Client, bucket: str
) -> None:
    offset = log_offset(observed)
    body = b"x" * 4096
    put = s3.put_object(Bucket=bucket, Key="dir/a b.txt", Body=body)
    got = s3.get_object(Bucket=bucket, Key="dir/a b.txt")
    assert got["Body"].read() == body
    put_line = logged(observed, offset, put["ResponseMetadata"]["RequestId"])
    get_line = logged(observed, offset, got["ResponseMetadata"]["RequestId"])
    assert list(get_line) == ["time", "level", *ACCESS_FIELDS]
    assert get_line["level"] == "INFO"
    assert put_line["operation"] == "PutObject" and get_line["operation"] == "GetObject"
    assert (get_line["bucket"], get_line["key"]) == (bucket, "dir/a b.txt")
    assert get_line["status"] == 200 and get_line["error"] is None
    assert put_line["bytes_in"] >= 4096 and put_line["bytes_out"] == 0
    assert get_line["bytes_out"] == 4096 and get_line["bytes_in"] == 0
    assert get_line["access_key"] == GATEWAY_ENV["GATEWAY_ROOT_ACCESS_KEY"]
    assert get_line["remote"] == "127.0.0.1"
    assert "Botocore" in get_line["user_agent"] or "Boto3" in get_line["user_agent"]
    assert get_line["duration_ms"] >= 0
    assert ROOT_SECRET_KEY not in observed.log_path.read_text()  # type: ignore[union-attr]


def test_errors_are_logged_with_their_s3_code(observed: GatewayProcess, bucket: str) -> None:
    offset = log_offset(observed)
    answer = requests.get(f"{observed.endpoint}/{bucket}/missing", timeout=10)
    assert answer.status_code == 403
    line = logged(observed, offset, answer.headers["x-amz-request-id"])
    assert (line["operation"], line["error"], line["access_key"]) == (
        "GetObject",
        "AccessDenied",
        None,
    )


def test_forwarded_for_is_believed_only_from_trusted_proxies(
    observed: GatewayProcess, bucket: str
) -> None:
    offset = log_offset(observed)
    # The peer (127.0.0.1) is a trusted proxy: the nearest untrusted hop is the client.
    forwarded = {"X-Forwarded-For": "198.51.100.7, 203.0.113.9, 127.0.0.1"}
    answer = requests.head(f"{observed.endpoint}/{bucket}", headers=forwarded, timeout=10)
    assert logged(observed, offset, answer.headers["x-amz-request-id"])["remote"] == ("203.0.113.9")


def test_a_variant_request_logs_its_preset_outcome_and_render_time(
    observed: GatewayProcess, s3: S3Client, bucket: str
) -> None:
    image = io.BytesIO()
    Image.new("RGB", (300, 200), (200, 30, 30)).save(image, "JPEG")
    s3.put_object(Bucket=bucket, Key="cat.jpg", Body=image.getvalue())
    url = s3.generate_presigned_url(
        "get_object", Params={"Bucket": bucket, "Key": "cat.jpg"}, ExpiresIn=300
    )
    before = scrape(observed)
    offset = log_offset(observed)
    ids = []
    for _ in range(2):
        answer = requests.get(url + "&variant=thumb", timeout=30)
        assert answer.status_code == 200, answer.text
        ids.append(answer.headers["x-amz-request-id"])
        wait_for_stored_variants(observed.dsn)
    first, second = (logged(observed, offset, request_id) for request_id in ids)
    assert (first["variant"], first["variant_result"]) == ("thumb", "render")
    assert first["render_ms"] > 0
    assert (second["variant"], second["variant_result"], second["render_ms"]) == (
        "thumb",
        "hit",
        None,
    )
    after = scrape(observed)
    for result in ("render", "hit"):
        assert value(after, "gateway_variant_requests_total", result=result) == 1 + value(
            before, "gateway_variant_requests_total", result=result
        )
    assert value(after, "gateway_variant_renders_total", result="ok") >= 1
    assert value(after, "gateway_variant_render_duration_seconds_count", result="ok") >= 1


# --- the metrics -----------------------------------------------------------------------------


def test_metrics_need_the_token(observed: GatewayProcess) -> None:
    url = observed.endpoint + METRICS
    for headers in (
        {},
        {"Authorization": "Bearer wrong"},
        {"Authorization": f"Basic {TOKEN}"},
        {"Authorization": f"Bearer {TOKEN}x"},
        # Forwarded from loopback by a trusted proxy: still not the token.
        {"X-Forwarded-For": "127.0.0.1"},
    ):
        answer = requests.get(url, headers=headers, timeout=10)
        assert answer.status_code == 403, headers
        assert "<Code>AccessDenied</Code>" in answer.text
        assert "gateway_" not in answer.text and TOKEN not in answer.text
    # On a bucket's virtual host the path is an object key, not the endpoint.
    hosted = requests.get(url, headers={"Host": "metrics-bucket.s3.localtest"}, timeout=10)
    assert "gateway_requests_total" not in hosted.text


def test_requests_are_counted_by_operation_status_and_bytes(
    observed: GatewayProcess, s3: S3Client, bucket: str
) -> None:
    s3.put_object(Bucket=bucket, Key="k", Body=b"y" * 4096)
    before = scrape(observed)
    for _ in range(3):
        s3.get_object(Bucket=bucket, Key="k")["Body"].read()
    with pytest.raises(s3.exceptions.NoSuchKey):
        s3.get_object(Bucket=bucket, Key="absent")
    after = scrape(observed)

    def grew(name: str, **labels: str) -> float:
        return value(after, name, **labels) - value(before, name, **labels)

    assert grew("gateway_requests_total", operation="GetObject", status="2xx") == 3
    assert grew("gateway_requests_total", operation="GetObject", status="4xx") == 1
    assert grew("gateway_request_duration_seconds_count", operation="GetObject") == 4
    assert grew("gateway_sent_bytes_total") >= 3 * 4096
    # The scrape that answered `before` is counted once it is done.
    assert grew("gateway_requests_total", operation="Metrics", status="2xx") == 1


def test_pool_gauges_are_sampled(observed: GatewayProcess) -> None:
    assert wait_for(
        lambda: value(scrape(observed), "gateway_db_pool_connections", state="size") >= 1, 5
    )
    samples = scrape(observed)
    assert ("gateway_db_pool_waiters", ()) in samples
    assert ("gateway_requests_in_flight", ()) in samples
    assert ("gateway_render_queue_depth", ()) in samples


def test_bucket_counts_follow_every_write(
    observed: GatewayProcess, s3: S3Client, bucket: str
) -> None:
    def counts() -> tuple[float, float]:
        samples = scrape(observed)
        return (
            value(samples, "gateway_bucket_objects", bucket=bucket),
            value(samples, "gateway_bucket_bytes", bucket=bucket),
        )

    s3.put_object(Bucket=bucket, Key="a", Body=b"1" * 100)
    s3.put_object(Bucket=bucket, Key="b", Body=b"2" * 50)
    s3.put_object(Bucket=bucket, Key="a", Body=b"3" * 10)  # an overwrite: bytes change only
    s3.copy_object(Bucket=bucket, Key="c", CopySource={"Bucket": bucket, "Key": "b"})
    s3.delete_object(Bucket=bucket, Key="b")
    upload = s3.create_multipart_upload(Bucket=bucket, Key="m")["UploadId"]
    part = s3.upload_part(Bucket=bucket, Key="m", UploadId=upload, PartNumber=1, Body=b"4" * 7)
    s3.complete_multipart_upload(
        Bucket=bucket,
        Key="m",
        UploadId=upload,
        MultipartUpload={"Parts": [{"PartNumber": 1, "ETag": part["ETag"]}]},
    )
    # Read at most every few seconds per process.
    assert wait_for(lambda: counts() == (3, 10 + 50 + 7), 10), counts()


# --- several worker processes ----------------------------------------------------------------


def test_workers_report_one_coherent_set(tmp_path: Path, pg_server_dsn: str) -> None:
    """Metrics on by default, open to loopback only, summed over every --workers process."""
    env = {**GATEWAY_ENV, "GATEWAY_WORKERS": "2"}
    with run_gateway(tmp_path / "workers", create_database(pg_server_dsn), {}, env) as process:
        s3 = client(process.endpoint)
        s3.create_bucket(Bucket="spread")
        s3.put_object(Bucket="spread", Key="k", Body=b"z" * 4096)
        url = s3.generate_presigned_url(
            "get_object", Params={"Bucket": "spread", "Key": "k"}, ExpiresIn=300
        )
        # A new connection each: the kernel spreads them over both processes.
        for _ in range(40):
            assert requests.get(url, headers={"Connection": "close"}, timeout=10).ok

        def reading() -> tuple[float, bool]:
            samples = scrape(process, token=None)
            return (
                value(samples, "gateway_requests_total", operation="GetObject", status="2xx"),
                value(samples, "gateway_sent_bytes_total") >= 40 * 4096,
            )

        # Each process writes its counts out every second, and whichever answers a scrape
        # reads them all: the sum, whoever answers.
        assert wait_for(lambda: reading() == (40.0, True), 5)
        readings = [reading() for _ in range(6)]
        assert set(readings) == {(40.0, True)}, readings
        assert process.process is not None
        assert len(list((process.data_dir / "metrics").glob("counter_*.db"))) >= 2
