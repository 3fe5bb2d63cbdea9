"""Derivative clean-up: variants of presets since edited or removed, and old failed-render
records, removed by the janitor after their grace period (blobs through the intent log, never
while a gateway still makes their key); `gateway variants purge` and `gateway variants render`
acting now."""

from __future__ import annotations

import asyncio
import io
import re
import subprocess
import sys
import threading
import uuid
from collections.abc import Iterator

import pytest
import yaml
from PIL import Image

from gateway.maintenance import variant_cleanup
from tests.conftest import (
    GATEWAY_ENV,
    GatewayProcess,
    S3Client,
    client,
    create_database,
    db_fetch,
    migrated_pool,
    run_gateway,
    unaccounted_blobs,
    wait_for,
    wait_for_stored_variants,
)
from tests.test_reload import reload_by_signal
from tests.test_variants import variant

LIMITS = {
    "janitor_interval_seconds": 1,
    "stale_variant_seconds": 2,
    "garbage_grace_seconds": 1,
    "body_idle_timeout_seconds": 5,
}


def jpeg(seed: int) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (320, 200), (seed * 40 % 256, 90, 160)).save(out, "JPEG")
    return out.getvalue()


@pytest.fixture(scope="module")
def gateway(
    tmp_path_factory: pytest.TempPathFactory, pg_server_dsn: str
) -> Iterator[GatewayProcess]:
    directory = tmp_path_factory.mktemp("variant-cleanup")
    dsn = create_database(pg_server_dsn)
    with run_gateway(directory / "gateway", dsn, {}, GATEWAY_ENV, limits=LIMITS) as process:
        yield process


@pytest.fixture
def s3(gateway: GatewayProcess) -> S3Client:
    return client(gateway.endpoint)


@pytest.fixture
def bucket(s3: S3Client) -> str:
    name = f"cleanup-{uuid.uuid4().hex[:10]}"
    s3.create_bucket(Bucket=name)
    return name


def keys_of(gateway: GatewayProcess, preset: str) -> dict[str, int]:
    """Stored derivatives of ``preset`` by variant key."""
    rows = db_fetch(
        gateway.dsn,
        "SELECT variant_key, count(*) AS n FROM derivatives WHERE variant_key LIKE $1"
        " GROUP BY variant_key",
        f"{preset}:%",
    )
    return {row["variant_key"]: row["n"] for row in rows}


def edit_preset(gateway: GatewayProcess, name: str, **changes: object) -> None:
    config = yaml.safe_load(gateway.config_path.read_text())
    if changes:
        config["variants"][name].update(changes)
    else:
        del config["variants"][name]
        config["default_bucket_variants"].remove(name)
    gateway.config_path.write_text(yaml.safe_dump(config))
    reload_by_signal(gateway)


def test_the_janitor_removes_variants_of_edited_presets_and_old_failures(
    gateway: GatewayProcess, s3: S3Client, bucket: str
) -> None:
    for n, key in enumerate(("a.jpg", "b.jpg")):
        s3.put_object(Bucket=bucket, Key=key, Body=jpeg(n), ContentType="image/jpeg")
        assert variant(gateway, bucket, key, "thumb").status_code == 200
    assert variant(gateway, bucket, "a.jpg", "small").status_code == 200
    s3.put_object(Bucket=bucket, Key="broken.jpg", Body=b"not an image")
    assert variant(gateway, bucket, "broken.jpg", "small").status_code >= 400
    wait_for_stored_variants(gateway.dsn)
    (old_thumb,) = keys_of(gateway, "thumb")
    (small,) = keys_of(gateway, "small")
    # A failure whose back-off ended longer ago than the ceiling (a day by default).
    db_fetch(
        gateway.dsn,
        "UPDATE derivatives SET next_retry_at = now() - interval '2 days' WHERE status = 'failed'",
    )

    edit_preset(gateway, "thumb", width=48)
    assert variant(gateway, bucket, "a.jpg", "thumb").status_code == 200
    wait_for_stored_variants(gateway.dsn)
    assert wait_for(lambda: old_thumb not in keys_of(gateway, "thumb"), timeout=30)
    (new_thumb,) = keys_of(gateway, "thumb")
    assert new_thumb != old_thumb
    assert keys_of(gateway, "small") == {small: 1}
    assert wait_for(
        lambda: not db_fetch(gateway.dsn, "SELECT 1 FROM derivatives WHERE status = 'failed'"),
        timeout=10,
    )
    # The old blobs went through the intent log, and are gone from disk once listed long
    # enough; nothing is left unaccounted for.
    assert unaccounted_blobs(gateway, gateway.dsn) == []
    assert wait_for(lambda: not db_fetch(gateway.dsn, "SELECT 1 FROM garbage LIMIT 1"), timeout=20)
    assert db_fetch(gateway.dsn, "SELECT * FROM stale_variant_keys") == []


@pytest.fixture(scope="module")
def rolling_dsn(pg_server_dsn: str) -> str:
    return create_database(pg_server_dsn)


async def test_a_key_some_gateway_still_makes_is_kept(rolling_dsn: str) -> None:
    """A rolling reload: a gateway on the new presets finds the old key stale, one still on
    the old presets says it is not at every pass; only once none has made it for the whole
    grace period are its derivatives deleted."""
    async with migrated_pool(rolling_dsn, "rolling", "default", 4) as pool:
        old, new = "thumb:webp:old", "thumb:webp:new"
        await pool.execute(
            "INSERT INTO derivatives (version_id, variant_key, status, profile, storage_key,"
            " size) VALUES ($1, $2, 'ready', 'default', 'blob-old', 10),"
            " ($1, $3, 'ready', 'default', 'blob-new', 20)",
            uuid.uuid4(),
            old,
            new,
        )

        async def updated_pass() -> int:
            removed = await variant_cleanup.retire_stale_variants(pool, {new}, 0.5)
            return removed.derivatives

        async def old_pass() -> None:
            await variant_cleanup.retire_stale_variants(pool, {old}, 0.5)

        assert await updated_pass() == 0  # stale from now
        await asyncio.sleep(0.3)
        await old_pass()  # still made by the gateway not reloaded yet
        await asyncio.sleep(0.3)
        assert await updated_pass() == 0  # stale again, from now
        await asyncio.sleep(0.6)
        assert await updated_pass() == 1
        rows = await pool.fetch("SELECT variant_key FROM derivatives")
        assert [row["variant_key"] for row in rows] == [new]
        listed = await pool.fetch("SELECT storage_key FROM garbage")
        assert [row["storage_key"] for row in listed] == ["blob-old"]


def command(gateway: GatewayProcess, *arguments: str) -> subprocess.CompletedProcess[str]:
    done = gateway.command("variants", *arguments)
    assert done.returncode == 0, done.stderr
    return done


def test_purge_deletes_a_preset_s_variants_now(
    gateway: GatewayProcess, s3: S3Client, bucket: str
) -> None:
    s3.put_object(Bucket=bucket, Key="p.jpg", Body=jpeg(5), ContentType="image/jpeg")
    for preset in ("boxed", "small"):
        assert variant(gateway, bucket, "p.jpg", preset).status_code == 200
    wait_for_stored_variants(gateway.dsn)
    stored = db_fetch(
        gateway.dsn, "SELECT sum(size) AS bytes FROM derivatives WHERE variant_key LIKE 'boxed:%'"
    )[0]["bytes"]
    dry = command(gateway, "purge", "--preset", "boxed", "--bucket", bucket, "--dry-run")
    assert f"would delete 1 stored variants ({stored:,} bytes) of preset boxed" in dry.stdout
    assert keys_of(gateway, "boxed")
    other = f"cleanup-{uuid.uuid4().hex[:10]}"
    s3.create_bucket(Bucket=other)
    s3.put_object(Bucket=other, Key="q.jpg", Body=jpeg(6), ContentType="image/jpeg")
    assert variant(gateway, other, "q.jpg", "boxed").status_code == 200
    wait_for_stored_variants(gateway.dsn)
    done = command(gateway, "purge", "--preset", "boxed", "--bucket", bucket)
    assert "deleted 1 stored variants" in done.stdout
    # The other bucket's is kept; then every bucket's goes.
    assert sum(keys_of(gateway, "boxed").values()) == 1
    assert "deleted 1 stored variants" in command(gateway, "purge", "--preset", "boxed").stdout
    assert keys_of(gateway, "boxed") == {}
    assert len(keys_of(gateway, "small")) == 1
    assert unaccounted_blobs(gateway, gateway.dsn) == []
    # The next request renders it again.
    assert variant(gateway, bucket, "p.jpg", "boxed").status_code == 200


def test_render_backfills_a_prefix_once_with_live_requests(
    gateway: GatewayProcess, s3: S3Client, bucket: str
) -> None:
    for n in range(6):
        s3.put_object(Bucket=bucket, Key=f"album/{n}.jpg", Body=jpeg(n), ContentType="image/jpeg")
    s3.put_object(Bucket=bucket, Key="album/notes.txt", Body=b"text", ContentType="text/plain")
    s3.put_object(Bucket=bucket, Key="elsewhere.jpg", Body=jpeg(9), ContentType="image/jpeg")
    # Live requests for some of the same variants while the backfill runs.
    answers: list[int] = []
    started = threading.Event()

    def live() -> None:
        started.wait(30)
        answers.extend(
            variant(gateway, bucket, f"album/{n}.jpg", "auto").status_code for n in range(6)
        )

    reader = threading.Thread(target=live)
    reader.start()
    process = subprocess.Popen(
        [sys.executable, "-m", "gateway", "variants", "render", "--preset", "auto",
         "--config", str(gateway.config_path), f"s3://{bucket}/album/"],
        env=gateway.env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    started.set()
    out, err = process.communicate(timeout=120)
    reader.join(60)
    assert process.returncode == 0, err
    assert answers == [200] * 6
    # "auto" has a derivative per format class: every image under the prefix has each, made
    # by one claim only (the backfill's or a request's), and the others have none.
    found = re.search(r"(\d+) variants rendered, (\d+) already stored, 0 failed; 1 objects", out)
    assert found is not None, out
    classes = len(keys_of(gateway, "auto"))
    rows = db_fetch(
        gateway.dsn,
        "SELECT d.attempts, o.key FROM derivatives d JOIN objects o USING (version_id)"
        " WHERE o.bucket = $1 AND d.variant_key LIKE 'auto:%'",
        bucket,
    )
    assert sorted({row["key"] for row in rows}) == [f"album/{n}.jpg" for n in range(6)]
    assert len(rows) == 6 * classes and all(row["attempts"] == 1 for row in rows)
    assert int(found.group(1)) + int(found.group(2)) == 6 * classes
    again = command(gateway, "render", "--preset", "auto", f"s3://{bucket}/album/")
    assert f"0 variants rendered, {6 * classes} already stored" in again.stdout


def test_render_refuses_a_preset_the_bucket_does_not_allow(
    gateway: GatewayProcess, bucket: str
) -> None:
    done = gateway.command("variants", "render", "--preset", "eager", f"s3://{bucket}")
    assert done.returncode == 2 and "not enabled for bucket" in done.stderr
    done = gateway.command("variants", "render", "--preset", "thumb", f"{bucket}/x")
    assert done.returncode == 2 and "s3://BUCKET/PREFIX" in done.stderr
