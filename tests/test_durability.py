"""Crash safety: SIGKILL the gateway during concurrent uploads, restart it, check what survived.

The promises under test: an acknowledged PUT is durable; no object is ever visible that was not
completely written; every blob file on disk is accounted for by an object row or the garbage
intent log, so `gateway gc` can reclaim everything a crash left behind.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import random
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import asyncpg
import pytest
from botocore.exceptions import BotoCoreError, ClientError

from gateway.storage.sealing import sealed_size
from tests.conftest import (
    GATEWAY_ENV,
    REPO,
    GatewayProcess,
    client,
    create_database,
    free_port,
    write_config,
)

THREADS = 8
# Load before the kill, and a cap on the whole upload phase (threads stop once the gateway dies).
LOAD_SECONDS = 5.0
# Per-thread unique keys prove acknowledged writes; a few shared keys are overwritten by every
# thread, to check that a crash never leaves a torn or resurrected version behind.
HOT_KEYS = [f"hot/{index}" for index in range(4)]
SIZES = [1024, 4096, 64 * 1024 - 1, 64 * 1024 + 1, 300_000, 1024 * 1024, 3 * 1024 * 1024]
BUCKET = "durability"


@dataclass
class Attempt:
    key: str
    size: int
    sha256: str
    started: float
    # Monotonic time the 200 arrived; None if the PUT failed or never finished.
    acked: float | None = None
    # The version the PUT made, on a versioned bucket.
    version_id: str | None = None


@dataclass
class Gateway:
    process: GatewayProcess
    config_path: Path
    dsn: str
    encrypted: bool = False
    # The bucket keeps every version (S3 versioning enabled).
    versioned: bool = False

    @property
    def blobs(self) -> Path:
        return self.process.data_dir / "blobs"


# The default profile encrypted, for the crash test on encrypted storage.
ENCRYPTED_STORAGE = {
    "storage_profiles": {
        "default": {
            "type": "local",
            "path": "blobs",
            "encryption": {"active_key": "k1", "keys": {"k1": "${DURABILITY_KEY}"}},
        }
    }
}
# The same, chunked with dedup: small chunks, so every body spans several.
DEDUP_CHUNK = 64 * 1024
DEDUP_STORAGE = {
    "storage_profiles": {
        "default": {
            **ENCRYPTED_STORAGE["storage_profiles"]["default"],
            "chunking": {"chunk_size": DEDUP_CHUNK, "dedup": True},
        }
    }
}
# What the dedup crash test writes: few distinct bodies, so that writers race on identical
# chunks (the first two share their first chunks; the last is a single chunk).
DEDUP_BODIES = [
    bytes(range(256)) * 1200,
    bytes(range(256)) * 1000 + os.urandom(5000),
    os.urandom(5 * DEDUP_CHUNK + 7),
    os.urandom(DEDUP_CHUNK // 2),
]
ENV = {**GATEWAY_ENV, "DURABILITY_KEY": os.urandom(32).hex()}


@pytest.fixture
def crash_gateway(
    pg_server_dsn: str, tmp_path: Path, request: pytest.FixtureRequest
) -> Iterator[Gateway]:
    kind = getattr(request, "param", "plain")
    storage = {
        "plain": {},
        "versioned": {},
        "encrypted": ENCRYPTED_STORAGE,
        "dedup": DEDUP_STORAGE,
    }[kind]
    encrypted = kind in ("encrypted", "dedup")
    dsn = create_database(pg_server_dsn)
    port = free_port()
    config_path = tmp_path / "gateway.yaml"
    data_dir = tmp_path / "data"
    write_config(config_path, data_dir, port, dsn, **storage)
    process = GatewayProcess(config_path, data_dir, port, env=ENV)
    process.start()
    yield Gateway(process, config_path, dsn, encrypted, versioned=kind == "versioned")
    process.stop()


def upload_until_stopped(
    endpoint: str,
    thread: int,
    stop: threading.Event,
    attempts: list[Attempt],
    bodies: list[bytes] | None = None,
) -> None:
    """PUTs until ``stop``: random bodies of SIZES, or one of ``bodies`` each time."""
    # No retries: a retried PUT after the kill would only slow the test down, and a retry that
    # landed would blur which attempt was acknowledged.
    s3 = client(
        endpoint,
        retries={"total_max_attempts": 1},
        connect_timeout=2,
        read_timeout=30,
    )
    rng = random.Random(thread)
    sequence = 0
    while not stop.is_set():
        key = rng.choice(HOT_KEYS) if rng.random() < 0.25 else f"t{thread}/{sequence:05d}"
        sequence += 1
        body = rng.choice(bodies) if bodies else os.urandom(rng.choice(SIZES))
        attempt = Attempt(key, len(body), hashlib.sha256(body).hexdigest(), time.monotonic())
        attempts.append(attempt)
        try:
            response = s3.put_object(Bucket=BUCKET, Key=key, Body=body)
        except (BotoCoreError, ClientError):
            continue
        if response["ResponseMetadata"]["HTTPStatusCode"] == 200:
            attempt.acked = time.monotonic()
            attempt.version_id = response.get("VersionId")


def run_load_then_kill(
    gateway: Gateway, bodies: list[bytes] | None = None
) -> tuple[list[Attempt], float]:
    """Every attempted PUT, and the monotonic time of the kill."""
    stop = threading.Event()
    per_thread: list[list[Attempt]] = [[] for _ in range(THREADS)]
    threads = [
        threading.Thread(
            target=upload_until_stopped,
            args=(gateway.process.endpoint, index, stop, per_thread[index], bodies),
            daemon=True,
        )
        for index in range(THREADS)
    ]
    for thread in threads:
        thread.start()
    time.sleep(LOAD_SECONDS)
    # On a loaded machine (other suites, CI) the load may start slowly: kill only once enough
    # PUTs were acknowledged for the checks below to mean something.
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        acked = sum(1 for attempts in per_thread for a in attempts if a.acked is not None)
        if acked >= 2 * THREADS:
            break
        time.sleep(0.1)
    # SIGKILL while every thread is mid-request; stop only afterwards so none is idle.
    killed_at = time.monotonic()
    gateway.process.kill()
    stop.set()
    for thread in threads:
        thread.join(timeout=60)
        assert not thread.is_alive()
    return [attempt for attempts in per_thread for attempt in attempts], killed_at


async def fetch_state(dsn: str) -> tuple[dict[str, tuple[str | None, int]], set[str]]:
    """({key: (storage_key, size)} of the bucket's objects, {storage_key} in the garbage log).

    A small object kept in its row has no storage key; its size is then that of its bytes.
    """
    conn = await asyncpg.connect(dsn)
    try:
        rows = await conn.fetch(
            "SELECT key, storage_key, coalesce(octet_length(inline_data), size) AS size"
            " FROM objects WHERE bucket = $1",
            BUCKET,
        )
        garbage = await conn.fetch("SELECT storage_key FROM garbage")
    finally:
        await conn.close()
    return (
        {row["key"]: (row["storage_key"], row["size"]) for row in rows},
        {row["storage_key"] for row in garbage},
    )


async def fetch_version_keys(dsn: str) -> set[str]:
    """The storage keys of the bucket's non-current versions."""
    rows = await run_sql(
        dsn,
        "SELECT storage_key FROM object_versions WHERE bucket = $1 AND storage_key IS NOT NULL",
        BUCKET,
    )
    return {row["storage_key"] for row in rows}


def check_versions(s3, attempts: list[Attempt]) -> None:
    """Every acknowledged PUT is a version that reads back exactly; every version listed is
    the whole body of some PUT of its key."""
    by_key: dict[str, set[tuple[int, str]]] = {}
    for attempt in attempts:
        by_key.setdefault(attempt.key, set()).add((attempt.size, attempt.sha256))
    paginator = s3.get_paginator("list_object_versions")
    listed = [
        (entry["Key"], entry["VersionId"])
        for page in paginator.paginate(Bucket=BUCKET)
        for entry in page.get("Versions", [])
    ]
    assert len(listed) == len(set(listed))
    # The hot keys were overwritten: their replaced versions are kept.
    assert len(listed) > len({key for key, _ in listed})
    for key, version_id in listed:
        body = s3.get_object(Bucket=BUCKET, Key=key, VersionId=version_id)["Body"].read()
        found = (len(body), hashlib.sha256(body).hexdigest())
        assert found in by_key[key], f"{key} {version_id}: a version no PUT sent"
    for attempt in attempts:
        if attempt.acked is not None:
            assert (attempt.key, attempt.version_id) in listed, f"{attempt.key}: version lost"


async def fetch_key_names(dsn: str) -> set[str]:
    conn = await asyncpg.connect(dsn)
    try:
        return {row["storage_key"] for row in await conn.fetch("SELECT storage_key FROM blob_keys")}
    finally:
        await conn.close()


def blob_files(root: Path) -> dict[str, Path]:
    """Every file under the blob root, by its path relative to the root."""
    found = {}
    for path in root.rglob("*"):
        if path.is_file():
            found[path.relative_to(root).as_posix()] = path
    return found


def storage_key_of(name: str) -> str:
    """The storage key a blob file belongs to; fails for anything the store never writes."""
    directory, _, filename = name.partition("/")
    key = filename.removesuffix(".tmp")
    assert len(key) == 32 and all(c in "0123456789abcdef" for c in key), name
    assert directory == key[:2], name
    return key


def read_all(s3, keys: list[str]) -> dict[str, tuple[int, str]]:
    result = {}
    for key in keys:
        body = s3.get_object(Bucket=BUCKET, Key=key)["Body"].read()
        result[key] = (len(body), hashlib.sha256(body).hexdigest())
    return result


def listed_keys(s3) -> list[str]:
    paginator = s3.get_paginator("list_objects_v2")
    return [
        entry["Key"]
        for page in paginator.paginate(Bucket=BUCKET)
        for entry in page.get("Contents", [])
    ]


@pytest.mark.parametrize("crash_gateway", ["plain", "encrypted", "versioned"], indirect=True)
def test_sigkill_during_uploads(crash_gateway: Gateway) -> None:
    """Versioned: every overwrite also moves the version it replaces into object_versions, in
    the same transaction; each acknowledged PUT must then survive as a version."""
    gateway = crash_gateway
    client(gateway.process.endpoint).create_bucket(Bucket=BUCKET)
    if gateway.versioned:
        client(gateway.process.endpoint).put_bucket_versioning(
            Bucket=BUCKET, VersioningConfiguration={"Status": "Enabled"}
        )

    attempts, killed_at = run_load_then_kill(gateway)
    acked = [a for a in attempts if a.acked is not None]
    interrupted = [a for a in attempts if a.acked is None and a.started < killed_at]
    # The load must be real and the kill must have interrupted something.
    assert len(acked) >= THREADS, f"only {len(acked)} PUTs acknowledged"
    assert interrupted, "no upload was in flight at the kill"

    gateway.process.start()
    s3 = client(gateway.process.endpoint, retries={"total_max_attempts": 1})

    by_key: dict[str, list[Attempt]] = {}
    for attempt in attempts:
        by_key.setdefault(attempt.key, []).append(attempt)
    listed = listed_keys(s3)
    assert len(listed) == len(set(listed))
    stored = read_all(s3, listed)

    # Nothing appears that was never attempted, and nothing torn: full length, exact hash.
    for key, (size, digest) in stored.items():
        candidates = {(a.size, a.sha256) for a in by_key.get(key, [])}
        assert (size, digest) in candidates, f"{key}: {size} bytes that no PUT sent"

    # Every acknowledged write survived.
    for key, key_attempts in by_key.items():
        key_acked = [a for a in key_attempts if a.acked is not None]
        if not key_acked:
            continue
        assert key in stored, f"{key}: acknowledged, then lost in the crash"
        size, digest = stored[key]
        if not key.startswith("hot/"):
            (only,) = key_attempts
            assert (size, digest) == (only.size, only.sha256)
            continue
        # A shared key may hold any attempt, except one acknowledged before another acked PUT
        # even started: that later write committed after it, so the old one cannot win.
        (winner,) = [a for a in key_attempts if a.sha256 == digest]
        if winner.acked is not None:
            superseding = [a for a in key_acked if a.started > winner.acked]
            assert not superseding, f"{key}: an overwritten version came back after the crash"

    if gateway.versioned:
        check_versions(s3, attempts)

    objects, garbage = asyncio.run(fetch_state(gateway.dsn))
    assert sorted(objects) == sorted(listed)
    kept = asyncio.run(fetch_version_keys(gateway.dsn))
    assert not kept & garbage, "a kept version's blob is listed as garbage"
    files = blob_files(gateway.blobs)
    # Each row's blob is complete and in place (renamed from .tmp, fsynced before the commit).
    for key, (storage_key, size) in objects.items():
        if storage_key is None:
            continue  # kept in its row, checked byte for byte below
        name = f"{storage_key[:2]}/{storage_key}"
        assert name in files, f"{key}: row points at a missing blob"
        stored_size = sealed_size(size) if gateway.encrypted else size
        assert files[name].stat().st_size == stored_size
        assert storage_key not in garbage, f"{key}: live blob listed as garbage"
    # Every file, finished or not, is accounted for: nothing a crash leaves is ever orphaned.
    referenced = {storage_key for storage_key, _ in objects.values()} | kept
    orphans = [name for name in files if storage_key_of(name) not in referenced | garbage]
    assert not orphans, f"blob files neither referenced nor in the garbage log: {orphans}"
    leftovers = [name for name in files if storage_key_of(name) not in referenced]

    gc = ["gc", "--config", str(gateway.config_path), "--grace", "0"]
    result = subprocess.run(
        [sys.executable, "-m", "gateway", *gc],
        cwd=REPO,
        env={**os.environ, **ENV},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert f"removed {len(garbage)} blobs" in result.stdout

    objects_after, garbage_after = asyncio.run(fetch_state(gateway.dsn))
    assert garbage_after == set()
    assert objects_after == objects
    files_after = blob_files(gateway.blobs)
    assert sorted(files_after) == sorted(f"{k[:2]}/{k}" for k in referenced if k)
    assert not any(name in files_after for name in leftovers)
    assert read_all(s3, listed) == stored
    if gateway.versioned:
        check_versions(s3, attempts)
    if gateway.encrypted:
        # Every blob has its data key, and no key outlives its blob.
        keys = asyncio.run(fetch_key_names(gateway.dsn))
        assert keys == {storage_key_of(name) for name in files_after}

    # The restarted gateway still takes writes.
    s3.put_object(Bucket=BUCKET, Key="after-restart", Body=b"alive")
    assert s3.get_object(Bucket=BUCKET, Key="after-restart")["Body"].read() == b"alive"


@pytest.mark.parametrize("crash_gateway", ["dedup"], indirect=True)
def test_sigkill_during_uploads_of_identical_chunks(crash_gateway: Gateway) -> None:
    """Writers racing on identical chunks of a dedup profile, killed mid-way: every
    acknowledged object reads back whole, every chunk file is referenced or listed, reference
    counts match the references, and gc leaves exactly the live objects' chunks."""
    gateway = crash_gateway
    client(gateway.process.endpoint).create_bucket(Bucket=BUCKET)
    attempts, killed_at = run_load_then_kill(gateway, DEDUP_BODIES)
    acked = {a.key for a in attempts if a.acked is not None}
    assert len(acked) >= THREADS
    assert [a for a in attempts if a.acked is None and a.started < killed_at], "nothing cut"
    gateway.process.start()
    s3 = client(gateway.process.endpoint, retries={"total_max_attempts": 1})
    listed = listed_keys(s3)
    assert acked <= set(listed)
    digests = {(len(body), hashlib.sha256(body).hexdigest()) for body in DEDUP_BODIES}
    stored = read_all(s3, listed)
    assert set(stored.values()) <= digests
    state = asyncio.run(fetch_chunk_state(gateway.dsn))
    files = {storage_key_of(name) for name in blob_files(gateway.blobs)}
    assert not files - state.known, "chunk files neither referenced nor listed in garbage"
    assert state.refs == state.references
    for _ in range(2):
        # The first pass releases dead blobs, listing their unshared chunks; the second
        # deletes those.
        result = gateway.process.command("gc", "--grace", "0")
        assert result.returncode == 0, result.stderr
    after = asyncio.run(fetch_chunk_state(gateway.dsn))
    assert after.garbage == set()
    assert after.refs == after.references
    files_after = {storage_key_of(name) for name in blob_files(gateway.blobs)}
    assert files_after == after.live_chunks
    assert read_all(s3, listed) == stored


@dataclass
class ChunkState:
    # Every storage key a row references or the garbage log lists.
    known: set[str]
    garbage: set[str]
    # The chunks of the blobs of live objects.
    live_chunks: set[str]
    # chunk hash -> refs as recorded, and as counted from blob_chunks.
    refs: dict[bytes, int]
    references: dict[bytes, int]


async def fetch_chunk_state(dsn: str) -> ChunkState:
    conn = await asyncpg.connect(dsn)
    try:
        known = await conn.fetch(
            "SELECT chunk_key AS k FROM blob_chunks UNION SELECT storage_key FROM chunk_blobs"
            " UNION SELECT storage_key FROM garbage"
        )
        garbage = await conn.fetch("SELECT storage_key FROM garbage")
        live = await conn.fetch(
            "SELECT c.chunk_key FROM objects o JOIN blob_chunks c ON c.blob_key = o.storage_key"
            " WHERE o.bucket = $1",
            BUCKET,
        )
        refs = await conn.fetch("SELECT chunk_hash, refs FROM chunk_blobs")
        references = await conn.fetch(
            "SELECT chunk_hash, count(*) AS n FROM blob_chunks WHERE chunk_hash IS NOT NULL"
            " GROUP BY chunk_hash"
        )
    finally:
        await conn.close()
    return ChunkState(
        {row["k"] for row in known},
        {row["storage_key"] for row in garbage},
        {row["chunk_key"] for row in live},
        {row["chunk_hash"]: row["refs"] for row in refs if row["refs"]},
        {row["chunk_hash"]: row["n"] for row in references},
    )


# Enough garbage that `gateway gc` runs for a while, in many batches.
GC_BLOBS = 5_000


def gc_command(gateway: Gateway) -> list[str]:
    return [
        sys.executable, "-m", "gateway", "gc", "--config", str(gateway.config_path), "--grace", "0"
    ]  # fmt: skip


def count_blob_files(root: Path) -> int:
    return sum(len(os.listdir(directory)) for directory in root.iterdir() if directory.is_dir())


def test_a_gc_killed_mid_run_leaves_every_blob_listed(crash_gateway: Gateway) -> None:
    """gc deletes each blob before its log entry: killed at any moment, it leaves no blob that
    neither a row nor the log lists, and the next run removes what is left."""
    s3 = client(crash_gateway.process.endpoint)
    s3.create_bucket(Bucket=BUCKET)
    live = os.urandom(64 * 1024)  # above the inline size: a blob gc must keep
    s3.put_object(Bucket=BUCKET, Key="live", Body=live)
    (profile,) = (
        row["profile"]
        for row in asyncio.run(
            run_sql(crash_gateway.dsn, "SELECT profile FROM objects WHERE bucket = $1", BUCKET)
        )
    )
    crash_gateway.process.stop()
    # Garbage as the gateway leaves it: files under generated names, each listed in the log.
    keys = [uuid.uuid4().hex for _ in range(GC_BLOBS)]
    for key in keys:
        path = crash_gateway.blobs / key[:2] / key
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"garbage")
    asyncio.run(
        run_sql(
            crash_gateway.dsn,
            "INSERT INTO garbage (profile, storage_key) SELECT $1, unnest($2::text[])",
            profile,
            keys,
        )
    )
    total = count_blob_files(crash_gateway.blobs)

    gc = subprocess.Popen(
        gc_command(crash_gateway),
        cwd=REPO,
        env={**os.environ, **ENV},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    # Killed once it has deleted some blobs but far from all: most of its time is spent
    # within a batch, between taking entries and finishing with them.
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and gc.poll() is None:
        if count_blob_files(crash_gateway.blobs) < total * 0.8:
            break
        time.sleep(0.005)
    gc.kill()
    gc.wait()
    assert gc.returncode == -signal.SIGKILL, "gc finished before it could be killed"

    files = blob_files(crash_gateway.blobs)
    assert 1 < len(files) < total
    objects, garbage = asyncio.run(fetch_state(crash_gateway.dsn))
    referenced = {storage_key for storage_key, _ in objects.values() if storage_key}
    orphans = [name for name in files if storage_key_of(name) not in referenced | garbage]
    assert not orphans, f"{len(orphans)} blob files neither referenced nor listed"

    result = subprocess.run(
        gc_command(crash_gateway),
        cwd=REPO,
        env={**os.environ, **ENV},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    objects_after, garbage_after = asyncio.run(fetch_state(crash_gateway.dsn))
    assert garbage_after == set()
    assert objects_after == objects
    assert sorted(blob_files(crash_gateway.blobs)) == [f"{k[:2]}/{k}" for k in referenced]
    crash_gateway.process.start()
    assert s3.get_object(Bucket=BUCKET, Key="live")["Body"].read() == live


async def run_sql(dsn: str, sql: str, *args: object) -> list[asyncpg.Record]:
    conn = await asyncpg.connect(dsn)
    try:
        return await conn.fetch(sql, *args)
    finally:
        await conn.close()
