"""Access keys in the database: `gateway keys create | list | revoke` beside live gateways
sharing one database, one of them with two worker processes; boto3 signs with the keys."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
import uuid
from collections.abc import Callable, Iterator

import botocore.exceptions
import pytest
import requests

from gateway.config import AccessKeysConfig, DatabaseConfig
from gateway.meta import access_keys
from gateway.meta.key_directory import DirectoryStale, KeyDirectory
from tests.conftest import (
    GATEWAY_ENV,
    GATEWAY_LOGS,
    ROOT_ACCESS_KEY,
    GatewayProcess,
    S3Client,
    client,
    create_database,
    db_fetch,
    free_port,
    migrated_pool,
    run_gateway,
    wait_for,
)
from tests.test_cli import serving_workers

KEYS_ENV = {**GATEWAY_ENV, "GATEWAY_KEYS_KEY": "4" * 64}
# Short, so a gateway that cannot hear notifications still catches up quickly.
ACCESS_KEYS = {"encryption_key": "${GATEWAY_KEYS_KEY}", "cache_seconds": 1}
# Every secret `keys create` printed: none may appear in a gateway's log.
SECRETS: list[str] = []


@pytest.fixture(scope="module")
def keys_gateway(
    tmp_path_factory: pytest.TempPathFactory, pg_server_dsn: str
) -> Iterator[GatewayProcess]:
    directory = tmp_path_factory.mktemp("keys") / "gateway"
    dsn = create_database(pg_server_dsn)
    with run_gateway(directory, dsn, {}, KEYS_ENV, access_keys=ACCESS_KEYS) as gateway:
        yield gateway


@pytest.fixture(scope="module")
def workers_endpoint(keys_gateway: GatewayProcess) -> Iterator[str]:
    """`gateway serve --workers 2` over the same database and data directory."""
    sibling = keys_gateway.sibling(
        keys_gateway.config_path.with_name("workers.yaml"), access_keys=ACCESS_KEYS
    )
    log = keys_gateway.config_path.with_name(f"gateway-{sibling.port}.log")
    GATEWAY_LOGS.setdefault(log, None)
    with serving_workers(sibling.config_path, sibling.port, log, KEYS_ENV):
        yield sibling.endpoint


@pytest.fixture(scope="module")
def photos(keys_gateway: GatewayProcess) -> str:
    name = f"photos-{uuid.uuid4().hex[:8]}"
    s3 = client(keys_gateway.endpoint)
    s3.create_bucket(Bucket=name)
    s3.put_object(Bucket=name, Key="cat.txt", Body=b"meow")
    return name


def keys(gateway: GatewayProcess, *arguments: str) -> str:
    done = gateway.command("keys", *arguments)
    assert done.returncode == 0, done.stderr
    return done.stdout


def create_key(gateway: GatewayProcess, *arguments: str) -> tuple[str, str]:
    created = json.loads(keys(gateway, "create", "--json", *arguments))
    SECRETS.append(created["secret_key"])
    return created["access_key"], created["secret_key"]


def refusal(s3: S3Client, bucket: str) -> str | None:
    """The error code a GetObject of cat.txt gets, None if it succeeds."""
    try:
        s3.get_object(Bucket=bucket, Key="cat.txt")
    except botocore.exceptions.ClientError as exc:
        return str(exc.response["Error"]["Code"])
    return None


def everywhere(endpoints: list[str], access_key: str, secret: str) -> list[S3Client]:
    """Clients of each endpoint; several for the workers' one, so new connections (which the
    kernel spreads over its processes) reach both workers."""
    return [client(endpoint, access_key, secret) for endpoint in endpoints for _ in range(4)]


def test_created_key_signs_on_every_gateway_and_revoked_is_refused_within_seconds(
    keys_gateway: GatewayProcess, workers_endpoint: str, photos: str
) -> None:
    access_key, secret = create_key(
        keys_gateway, "--name", "publisher", "--grant", f"{photos}=read-write"
    )
    clients = everywhere([keys_gateway.endpoint, workers_endpoint], access_key, secret)
    # Created by another process: each gateway hears of it within moments.
    assert wait_for(lambda: all(refusal(s3, photos) is None for s3 in clients), 5)
    for number, s3 in enumerate(clients):
        s3.put_object(Bucket=photos, Key=f"by-key/{number}", Body=b"x")
    assert refusal(client(keys_gateway.endpoint, access_key, "not-the-secret"), photos) == (
        "SignatureDoesNotMatch"
    )
    # The grant is the bucket's alone.
    other = f"other-{uuid.uuid4().hex[:8]}"
    client(keys_gateway.endpoint).create_bucket(Bucket=other)
    with pytest.raises(botocore.exceptions.ClientError) as denied:
        clients[0].put_object(Bucket=other, Key="x", Body=b"x")
    assert denied.value.response["Error"]["Code"] == "AccessDenied"

    assert keys(keys_gateway, "revoke", access_key).strip() == f"revoked {access_key}"
    clients = everywhere([keys_gateway.endpoint, workers_endpoint], access_key, secret)
    assert wait_for(lambda: all(refusal(s3, photos) == "InvalidAccessKeyId" for s3 in clients), 5)
    again = keys_gateway.command("keys", "revoke", "GKNOSUCHKEY")
    assert again.returncode == 1 and "no access key" in again.stderr


def test_read_only_key_cannot_write(keys_gateway: GatewayProcess, photos: str) -> None:
    access_key, secret = create_key(keys_gateway, "--grant", "*=read")
    s3 = client(keys_gateway.endpoint, access_key, secret)
    assert wait_for(lambda: refusal(s3, photos) is None, 5)
    assert photos in [bucket["Name"] for bucket in s3.list_buckets()["Buckets"]]
    with pytest.raises(botocore.exceptions.ClientError) as denied:
        s3.put_object(Bucket=photos, Key="nope", Body=b"x")
    assert denied.value.response["ResponseMetadata"]["HTTPStatusCode"] == 403
    assert denied.value.response["Error"]["Code"] == "AccessDenied"
    with pytest.raises(botocore.exceptions.ClientError) as denied:
        s3.create_bucket(Bucket=f"mine-{uuid.uuid4().hex[:8]}")
    assert denied.value.response["Error"]["Code"] == "AccessDenied"


def test_expired_key_is_refused(keys_gateway: GatewayProcess, photos: str) -> None:
    access_key, secret = create_key(keys_gateway, "--grant", f"{photos}=read", "--expires", "3s")
    s3 = client(keys_gateway.endpoint, access_key, secret)
    assert refusal(s3, photos) is None
    assert wait_for(lambda: refusal(s3, photos) == "InvalidAccessKeyId", 10)
    listed = json.loads(keys(keys_gateway, "list", "--json"))
    assert {key["access_key"]: key["status"] for key in listed}[access_key] == "expired"


def test_presigned_urls_and_post_policies_of_a_key(
    keys_gateway: GatewayProcess, photos: str
) -> None:
    access_key, secret = create_key(keys_gateway, "--grant", f"{photos}=read-write")
    for signature in ("s3", "s3v4"):
        s3 = client(keys_gateway.endpoint, access_key, secret, signature_version=signature)
        url = s3.generate_presigned_url("get_object", Params={"Bucket": photos, "Key": "cat.txt"})
        assert wait_for(lambda url=url: requests.get(url, timeout=5).status_code == 200, 5)
        assert requests.get(url, timeout=5).content == b"meow"
        post = s3.generate_presigned_post(photos, f"posted-{signature}.txt")
        answer = requests.post(
            post["url"], data=post["fields"], files={"file": ("a.txt", b"posted")}, timeout=5
        )
        assert answer.status_code == 204, answer.text
    forged = client(keys_gateway.endpoint, access_key, "not-the-secret").generate_presigned_post(
        photos, "forged.txt"
    )
    answer = requests.post(
        forged["url"], data=forged["fields"], files={"file": ("a.txt", b"x")}, timeout=5
    )
    assert answer.status_code == 403 and "SignatureDoesNotMatch" in answer.text


def test_bad_grants_and_durations_are_usage_errors(keys_gateway: GatewayProcess) -> None:
    for arguments in (
        ["--grant", "photos=admin"],
        ["--grant", "Not_A_Bucket=read"],
        ["--grant", "photos"],
        ["--grant", "photos=read", "--expires", "soon"],
    ):
        done = keys_gateway.command("keys", "create", *arguments)
        assert done.returncode == 2, (arguments, done.stdout, done.stderr)
        assert "gateway keys create:" in done.stderr and not done.stdout


def test_secrets_are_sealed_and_never_listed_or_logged(
    keys_gateway: GatewayProcess, workers_endpoint: str
) -> None:
    """Last of the module: every secret made above, and one made here."""
    create_key(keys_gateway, "--name", "listed", "--grant", "*=read")
    assert len(SECRETS) >= 4
    listing = keys(keys_gateway, "list") + keys(keys_gateway, "list", "--json")
    assert "listed" in listing
    rows = db_fetch(keys_gateway.dsn, "SELECT access_key, secret, sealed_with FROM access_keys")
    assert {row["sealed_with"] for row in rows} == {"config"}
    assert all(row["access_key"] in listing for row in rows)
    logs = [path for path in GATEWAY_LOGS if path.parent == keys_gateway.config_path.parent]
    assert len(logs) == 2
    text = "".join(path.read_text() for path in logs)
    stored = b"".join(row["secret"] for row in rows)
    for secret in SECRETS:
        assert secret not in listing and secret not in text
        assert secret.encode() not in stored
    assert ROOT_ACCESS_KEY not in listing


@pytest.fixture
def fresh_dsn(pg_server_dsn: str) -> str:
    return create_database(pg_server_dsn)


async def test_without_notifications_the_copy_is_reloaded_and_never_used_stale(
    fresh_dsn: str,
) -> None:
    """A directory whose listening connection cannot be made (a port nobody listens on) sees
    changes by its timer; once the database is gone too, it refuses to answer."""
    async with migrated_pool(fresh_dsn, "unused", "default", 2) as pool:
        directory = KeyDirectory(
            pool,
            f"postgresql://127.0.0.1:{free_port()}/nothing",
            AccessKeysConfig(cache_seconds=0.3),
            DatabaseConfig(connect_timeout_seconds=1),
        )
        await directory.reload()
        task = asyncio.create_task(directory.run())
        try:
            async with pool.acquire() as conn:
                sealing = await access_keys.sealing_keys(conn, None)
                key, secret = await access_keys.create(conn, sealing, None, {"*": "read"}, None)
            assert await until(lambda: directory.get(key.access_key) is not None)
            credential = directory.get(key.access_key)
            assert credential is not None and credential.secret_key == secret
            assert not credential.root and not credential.can_write("photos")
            async with pool.acquire() as conn:
                assert await access_keys.revoke(conn, key.access_key)
            assert await until(lambda: directory.get(key.access_key) is None)
        finally:
            await pool.close()
        with pytest.raises(DirectoryStale):
            await until(lambda: directory.get("GKANY") == "never", 3)
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def until(condition: Callable[[], bool], seconds: float = 3) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if condition():
            return True
        await asyncio.sleep(0.05)
    return condition()
