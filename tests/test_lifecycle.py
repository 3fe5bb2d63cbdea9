"""Lifecycle rules: PutBucketLifecycleConfiguration / Get / DeleteBucketLifecycle as S3 answers
them (boto3, aws-cli, raw HTTP for the attacks), rules in the YAML, and passes that apply them
(`gateway lifecycle run`, the janitor) exactly as DeleteObject, DeleteObject?versionId and
AbortMultipartUpload would. Ages are set in the rows: no test waits a day."""

from __future__ import annotations

import asyncio
import concurrent.futures
import hashlib
import json
import re
import subprocess
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import asyncpg
import pytest
import requests
from botocore.exceptions import ClientError

from gateway.meta import lifecycle_rows
from tests.conftest import (
    GATEWAY_ENV,
    LOCAL,
    PUBLIC_BUCKET,
    READER_ACCESS_KEY,
    READER_SECRET_KEY,
    UPSTREAM,
    GatewayProcess,
    S3Client,
    client,
    create_database,
    db_fetch,
    run_gateway,
    unaccounted_blobs,
    wait_for,
)
from tests.rawhttp import sign
from tests.s3errors import error_of
from tests.test_awscli import cli_env

# The protocol is the same on every profile; the passes delete through each profile's own
# paths, so they run on both kinds.
GATEWAY_PROFILES = [LOCAL]
BOTH = pytest.mark.parametrize("gateway", [LOCAL, UPSTREAM], indirect=True)

RULES: list[dict[str, Any]] = [
    {"ID": "tmp", "Filter": {"Prefix": "tmp/"}, "Status": "Enabled", "Expiration": {"Days": 7}},
    {
        "ID": "scratch",
        "Filter": {"And": {"Prefix": "work/", "Tags": [{"Key": "class", "Value": "scratch"}]}},
        "Status": "Disabled",
        "Expiration": {"Date": datetime(2030, 1, 1, tzinfo=UTC)},
    },
    {
        "ID": "old-versions",
        "Filter": {"Tag": {"Key": "keep", "Value": "short"}},
        "Status": "Enabled",
        "NoncurrentVersionExpiration": {"NoncurrentDays": 30, "NewerNoncurrentVersions": 3},
    },
    {
        "ID": "uploads",
        "Filter": {},
        "Status": "Enabled",
        "AbortIncompleteMultipartUpload": {"DaysAfterInitiation": 2},
        "Expiration": {"ExpiredObjectDeleteMarker": True},
    },
    {"ID": "big", "Prefix": "logs/", "Status": "Enabled", "Expiration": {"Days": 1}},
]


def put_rules(s3: S3Client, bucket: str, rules: list[dict[str, Any]]) -> None:
    s3.put_bucket_lifecycle_configuration(Bucket=bucket, LifecycleConfiguration={"Rules": rules})


def age(gateway: GatewayProcess, bucket: str, days: int, table: str = "objects") -> None:
    """Make every row of ``bucket`` in ``table`` ``days`` days older than it is."""
    column = {
        "objects": "last_modified",
        "object_versions": "noncurrent_since",
        "uploads": "initiated",
    }[table]
    db_fetch(
        gateway.dsn,
        f"UPDATE {table} SET {column} = {column} - make_interval(days => $2) WHERE bucket = $1",
        bucket,
        days,
    )


def lifecycle_run(gateway: GatewayProcess, *arguments: str) -> subprocess.CompletedProcess[str]:
    done = gateway.command("lifecycle", "run", *arguments)
    assert done.returncode == 0, done.stderr
    return done


def keys(s3: S3Client, bucket: str) -> list[str]:
    return [item["Key"] for item in s3.list_objects_v2(Bucket=bucket).get("Contents", [])]


def test_configuration_round_trips_and_is_deleted(s3: S3Client, bucket: str) -> None:
    with pytest.raises(ClientError) as caught:
        s3.get_bucket_lifecycle_configuration(Bucket=bucket)
    assert error_of(caught) == (404, "NoSuchLifecycleConfiguration")
    put_rules(s3, bucket, RULES)
    assert s3.get_bucket_lifecycle_configuration(Bucket=bucket)["Rules"] == RULES
    # A rule without an ID gets one.
    put_rules(s3, bucket, [{"Filter": {}, "Status": "Enabled", "Expiration": {"Days": 1}}])
    (rule,) = s3.get_bucket_lifecycle_configuration(Bucket=bucket)["Rules"]
    assert rule["ID"] and rule["Expiration"] == {"Days": 1}
    s3.delete_bucket_lifecycle(Bucket=bucket)
    with pytest.raises(ClientError) as caught:
        s3.get_bucket_lifecycle_configuration(Bucket=bucket)
    assert error_of(caught) == (404, "NoSuchLifecycleConfiguration")


def _rule(**fields: Any) -> dict[str, Any]:
    return {"ID": "r", "Filter": {"Prefix": ""}, "Status": "Enabled", **fields}


@pytest.mark.parametrize(
    ("rules", "expected"),
    [
        ([_rule(Expiration={"Days": 0})], (400, "InvalidArgument")),
        (
            [_rule(Expiration={"Date": datetime(2030, 1, 1, 12, tzinfo=UTC)})],
            (400, "InvalidArgument"),
        ),
        ([_rule(Expiration={"Days": 1, "ExpiredObjectDeleteMarker": True})], (400, "MalformedXML")),
        ([_rule(Expiration={"Days": 1}), _rule(Expiration={"Days": 2})], (400, "InvalidArgument")),
        ([_rule(ID="x" * 256, Expiration={"Days": 1})], (400, "InvalidArgument")),
        ([_rule()], (400, "InvalidRequest")),
        ([_rule(Status="On", Expiration={"Days": 1})], (400, "MalformedXML")),
        (
            [
                _rule(
                    NoncurrentVersionExpiration={
                        "NoncurrentDays": 1,
                        "NewerNoncurrentVersions": 101,
                    }
                )
            ],
            (400, "InvalidArgument"),
        ),
        (
            [
                _rule(
                    Filter={"Tag": {"Key": "a", "Value": "b"}},
                    AbortIncompleteMultipartUpload={"DaysAfterInitiation": 1},
                )
            ],
            (400, "InvalidRequest"),
        ),
        (
            [_rule(Transitions=[{"Days": 30, "StorageClass": "GLACIER"}])],
            (501, "NotImplemented"),
        ),
        ([_rule(ID=f"r{n}", Expiration={"Days": 1}) for n in range(1001)], (400, "MalformedXML")),
    ],
    ids=[
        "zero-days",
        "date-not-midnight",
        "marker-with-days",
        "duplicate-ids",
        "long-id",
        "no-action",
        "bad-status",
        "too-many-newer-versions",
        "abort-with-tags",
        "transition",
        "too-many-rules",
    ],
)
def test_configurations_s3_refuses_are_refused(
    s3: S3Client, bucket: str, rules: list[dict[str, Any]], expected: tuple[int, str]
) -> None:
    with pytest.raises(ClientError) as caught:
        put_rules(s3, bucket, rules)
    assert error_of(caught) == expected
    with pytest.raises(ClientError) as caught:
        s3.get_bucket_lifecycle_configuration(Bucket=bucket)
    assert error_of(caught) == (404, "NoSuchLifecycleConfiguration")


def test_only_writers_may_see_or_change_rules(gateway: GatewayProcess, s3: S3Client) -> None:
    """Attacks over HTTP: anonymous requests and a key that may only read the bucket."""
    url = f"{gateway.endpoint}/{PUBLIC_BUCKET}?lifecycle"
    body = (
        "<LifecycleConfiguration><Rule><ID>wipe</ID><Filter><Prefix></Prefix></Filter>"
        "<Status>Enabled</Status><Expiration><Days>1</Days></Expiration></Rule>"
        "</LifecycleConfiguration>"
    )
    for method, data in (("PUT", body), ("GET", None), ("DELETE", None)):
        answer = requests.request(method, url, data=data, timeout=10)
        assert answer.status_code == 403 and b"<Code>AccessDenied</Code>" in answer.content
    reader = client(gateway.endpoint, READER_ACCESS_KEY, READER_SECRET_KEY)
    for call, params in (
        (reader.put_bucket_lifecycle_configuration, {"LifecycleConfiguration": {"Rules": RULES}}),
        (reader.get_bucket_lifecycle_configuration, {}),
        (reader.delete_bucket_lifecycle, {}),
    ):
        with pytest.raises(ClientError) as caught:
            call(Bucket=PUBLIC_BUCKET, **params)
        assert error_of(caught) == (403, "AccessDenied")
    with pytest.raises(ClientError) as caught:
        s3.get_bucket_lifecycle_configuration(Bucket=PUBLIC_BUCKET)
    assert error_of(caught) == (404, "NoSuchLifecycleConfiguration")


def test_rules_sent_to_an_object_never_become_its_body(
    gateway: GatewayProcess, s3: S3Client, bucket: str
) -> None:
    url = f"{gateway.endpoint}/{bucket}/doc?lifecycle="
    body = b"<LifecycleConfiguration/>"
    headers = sign("PUT", url, hashlib.sha256(body).hexdigest())
    answer = requests.put(url, data=body, headers=headers, timeout=10)
    assert answer.status_code == 501 and b"<Code>NotImplemented</Code>" in answer.content
    assert keys(s3, bucket) == []


def test_aws_cli_puts_and_gets_rules(gateway: GatewayProcess, bucket: str, tmp_path: Path) -> None:
    rules = {"Rules": [RULES[0], RULES[2]]}
    env = cli_env(tmp_path)
    base = ["aws", "--endpoint-url", gateway.endpoint, "s3api"]
    put = subprocess.run(
        [*base, "put-bucket-lifecycle-configuration", "--bucket", bucket,
         "--lifecycle-configuration", json.dumps(rules)],
        env=env, capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert put.returncode == 0, put.stderr
    got = subprocess.run(
        [*base, "get-bucket-lifecycle-configuration", "--bucket", bucket],
        env=env, capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert got.returncode == 0, got.stderr
    assert json.loads(got.stdout)["Rules"] == rules["Rules"]


@BOTH
def test_a_pass_expires_by_prefix_and_tag_and_a_dry_run_changes_nothing(
    gateway: GatewayProcess, s3: S3Client, bucket: str
) -> None:
    for key in ("tmp/old", "keep/old", "work/scratch", "work/kept"):
        tagging = "class=scratch" if key == "work/scratch" else ""
        s3.put_object(Bucket=bucket, Key=key, Body=key.encode() * 1000, Tagging=tagging)
    age(gateway, bucket, 3)
    s3.put_object(Bucket=bucket, Key="tmp/new", Body=b"fresh")
    put_rules(
        s3,
        bucket,
        [
            {"ID": "tmp", "Filter": {"Prefix": "tmp/"}, "Status": "Enabled",
             "Expiration": {"Days": 2}},
            {"ID": "scratch", "Filter": {"Tag": {"Key": "class", "Value": "scratch"}},
             "Status": "Enabled", "Expiration": {"Days": 1}},
            {"ID": "off", "Filter": {}, "Status": "Disabled", "Expiration": {"Days": 1}},
        ],
    )  # fmt: skip
    dry = lifecycle_run(gateway, "--dry-run", "--bucket", bucket)
    assert "dry run, nothing changed: 2 current versions expired" in dry.stdout
    assert re.search(rf"{bucket}\s+tmp\s+current versions expired\s+1\s+7,000", dry.stdout)
    assert len(keys(s3, bucket)) == 5
    # As if it were a week on: the fresh one too.
    ahead = lifecycle_run(gateway, "--dry-run", "--bucket", bucket, "--at", "2099-01-01")
    assert "3 current versions expired" in ahead.stdout

    done = lifecycle_run(gateway, "--bucket", bucket)
    assert "2 current versions expired" in done.stdout
    assert keys(s3, bucket) == ["keep/old", "tmp/new", "work/kept"]
    # Deleted as DeleteObject deletes: rows gone, every blob accounted for, usage updated.
    assert unaccounted_blobs(gateway, gateway.dsn) == []
    usage = db_fetch(gateway.dsn, "SELECT * FROM gateway_bucket_usage($1)", bucket)[0]
    assert usage["objects"] == 3
    assert "0 current versions expired" in lifecycle_run(gateway, "--bucket", bucket).stdout


@BOTH
def test_a_pass_on_a_versioned_bucket_keeps_what_s3_keeps(
    gateway: GatewayProcess, s3: S3Client, bucket: str
) -> None:
    s3.put_bucket_versioning(Bucket=bucket, VersioningConfiguration={"Status": "Enabled"})
    written = [
        s3.put_object(Bucket=bucket, Key="doc", Body=f"v{n}".encode())["VersionId"]
        for n in range(1, 5)
    ]
    # A key left with only a delete marker.
    alone = s3.put_object(Bucket=bucket, Key="alone", Body=b"x")["VersionId"]
    marker = s3.delete_object(Bucket=bucket, Key="alone")["VersionId"]
    s3.delete_object(Bucket=bucket, Key="alone", VersionId=alone)
    s3.create_multipart_upload(Bucket=bucket, Key="doc")
    for table in ("objects", "object_versions", "uploads"):
        age(gateway, bucket, 10, table)
    fresh_upload = s3.create_multipart_upload(Bucket=bucket, Key="fresh")["UploadId"]
    put_rules(
        s3,
        bucket,
        [
            {"ID": "expire", "Filter": {"Prefix": ""}, "Status": "Enabled",
             "Expiration": {"Days": 5},
             "NoncurrentVersionExpiration": {"NoncurrentDays": 5, "NewerNoncurrentVersions": 2},
             "AbortIncompleteMultipartUpload": {"DaysAfterInitiation": 1}},
            {"ID": "markers", "Filter": {"Prefix": ""}, "Status": "Enabled",
             "Expiration": {"ExpiredObjectDeleteMarker": True}},
        ],
    )  # fmt: skip
    done = lifecycle_run(gateway, "--bucket", bucket)
    assert (
        "1 current versions expired, 2 noncurrent versions removed,"
        " 1 expired delete markers removed, 1 uploads aborted"
    ) in done.stdout, done.stdout
    listed = s3.list_object_versions(Bucket=bucket)
    # The current version is hidden by a new delete marker; of the non-current ones (the
    # one just hidden, v3, v2, v1) the two newest stay, the older two were due and go.
    assert [(v["Key"], v["VersionId"]) for v in listed["Versions"]] == [
        ("doc", written[3]),
        ("doc", written[2]),
    ]
    # The marker left alone is gone; the new one hides doc.
    (new_marker,) = listed["DeleteMarkers"]
    assert new_marker["Key"] == "doc" and new_marker["IsLatest"]
    assert new_marker["VersionId"] != marker
    uploads = s3.list_multipart_uploads(Bucket=bucket).get("Uploads", [])
    assert [item["UploadId"] for item in uploads] == [fresh_upload]
    assert unaccounted_blobs(gateway, gateway.dsn) == []
    s3.abort_multipart_upload(Bucket=bucket, Key="fresh", UploadId=fresh_upload)


def test_concurrent_passes_delete_each_object_once(
    gateway: GatewayProcess, s3: S3Client, bucket: str
) -> None:
    for n in range(20):
        s3.put_object(Bucket=bucket, Key=f"k{n:02}", Body=b"x")
    age(gateway, bucket, 3)
    put_rules(s3, bucket, [_rule(Expiration={"Days": 1})])
    with concurrent.futures.ThreadPoolExecutor(2) as pool:
        runs = [pool.submit(gateway.command, "lifecycle", "run", "--bucket", bucket) for _ in "ab"]
    expired = 0
    for run in runs:
        done = run.result()
        if done.returncode == 0:
            found = re.search(r"(\d+) current versions expired", done.stdout)
            assert found is not None, done.stdout
            expired += int(found.group(1))
        else:
            assert "another lifecycle pass is running" in done.stderr
    assert expired == 20
    assert keys(s3, bucket) == []


def test_yaml_rules_are_the_bucket_s_and_the_janitor_applies_them(
    tmp_path: Path, pg_server_dsn: str
) -> None:
    rules = [{"id": "tmp", "prefix": "tmp/", "expiration_days": 1}]
    with run_gateway(
        tmp_path / "gateway",
        create_database(pg_server_dsn),
        {},
        GATEWAY_ENV,
        buckets={"aging": {"lifecycle": rules}},
        limits={"janitor_interval_seconds": 1, "lifecycle_interval_seconds": 1},
    ) as gateway:
        s3 = client(gateway.endpoint)
        (rule,) = s3.get_bucket_lifecycle_configuration(Bucket="aging")["Rules"]
        assert rule == {
            "ID": "tmp", "Filter": {"Prefix": "tmp/"}, "Status": "Enabled",
            "Expiration": {"Days": 1},
        }  # fmt: skip
        for call, params in (
            (s3.put_bucket_lifecycle_configuration, {"LifecycleConfiguration": {"Rules": RULES}}),
            (s3.delete_bucket_lifecycle, {}),
        ):
            with pytest.raises(ClientError) as caught:
                call(Bucket="aging", **params)
            assert error_of(caught) == (400, "InvalidRequest")
        s3.put_object(Bucket="aging", Key="tmp/old", Body=b"old")
        s3.put_object(Bucket="aging", Key="kept", Body=b"kept")
        age(gateway, "aging", 2)
        assert wait_for(lambda: keys(s3, "aging") == ["kept"], timeout=30)
        metrics = requests.get(f"{gateway.endpoint}/_gateway/metrics", timeout=10).text
        assert 'gateway_lifecycle_actions_total{action="expired"} 1.0' in metrics


def test_a_version_no_longer_due_when_removed_is_kept(
    gateway: GatewayProcess, s3: S3Client, bucket: str
) -> None:
    """The race a pass runs against requests: the page finds the older of two old non-current
    versions due (NewerNoncurrentVersions 1), then a client deletes the newer one; the removal,
    checked again with the key locked, keeps the older one, as S3 would."""
    s3.put_bucket_versioning(Bucket=bucket, VersioningConfiguration={"Status": "Enabled"})
    older, newer, _ = (
        s3.put_object(Bucket=bucket, Key="doc", Body=f"v{n}".encode())["VersionId"]
        for n in range(3)
    )
    age(gateway, bucket, 10, "object_versions")

    async def race() -> tuple[bool, bool]:
        pool = await asyncpg.create_pool(gateway.dsn, min_size=1, max_size=2)
        try:
            page = await lifecycle_rows.other_versions(pool, bucket, "", None, 10)
            found = {str(version.version_id): version for version in page}
            assert found[older].newer == 1 and found[newer].newer == 0

            def due(version: lifecycle_rows.Version) -> bool:
                return version.newer >= 1

            s3.delete_object(Bucket=bucket, Key="doc", VersionId=newer)
            async with pool.acquire() as conn:
                kept = not await lifecycle_rows.remove_version(conn, bucket, found[older], due)
                # Seen again, it is due for nothing: a pass asking it to go finds it still
                # there, and a check that still holds removes it.
                gone = await lifecycle_rows.remove_version(
                    conn, bucket, found[older], lambda version: version.newer == 0
                )
            return kept, gone
        finally:
            await pool.close()

    assert asyncio.run(race()) == (True, True)
    versions = s3.list_object_versions(Bucket=bucket)["Versions"]
    assert [v["VersionId"] for v in versions if not v["IsLatest"]] == []
