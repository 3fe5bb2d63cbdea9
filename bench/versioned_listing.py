"""Versioned-listing benchmark: ListObjectsV2 of a bucket whose keys each have non-current
versions, against the same keys in an unversioned bucket.

    python bench/versioned_listing.py [--keys 100000] [--versions 5] [--repeat 3]

Starts an embedded Postgres and a gateway (one worker) on it, on 127.0.0.1. Bucket `plain`
gets `--keys` objects; bucket `versioned` (versioning enabled) the same keys, each with
`--versions` versions: one current, the others non-current in object_versions. Both are
filled by SQL INSERTs (a million PUTs would take the benchmark's whole hour), rows as the
gateway writes them for small objects (bytes in the row). Then, through the gateway, with
presigned URLs sent by requests over one keep-alive connection:
- ListObjectsV2 of each bucket, every page of 1,000 keys in turn (continuation tokens),
  `--repeat` times: the median page and the median whole walk;
- ListObjectsV2 with `Delimiter="/"` (100 common prefixes), the median of 20;
- ListObjectVersions of the versioned bucket, its first page, the median of 20.
Every answer is checked (status and count).
"""

from __future__ import annotations

import argparse
import asyncio
import re
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import asyncpg
import requests

sys.path.insert(0, str(Path(__file__).resolve().parent))
from run import GatewaySystem, publish, s3_client

from gateway.meta.embedded import EmbeddedPostgres

PAGE = 1000
_TOKEN = re.compile(rb"<NextContinuationToken>([^<]+)</NextContinuationToken>")


def key_of(index: int) -> str:
    # 100 folders of 1,000 keys: a delimiter listing has 100 common prefixes.
    return f"dir-{index // PAGE:03d}/object-{index:06d}"


async def fill(dsn: str, keys: int, versions: int) -> None:
    """Rows as a PutObject of a one-byte body leaves them (default profile, kept inline)."""
    conn = await asyncpg.connect(dsn)
    try:
        key_sql = "'dir-' || lpad((i / 1000)::text, 3, '0') || '/object-' || lpad(i::text, 6, '0')"
        columns = (
            "(bucket, key, version_id, size, etag, content_type, profile, last_modified,"
            " inline_data, null_version)"
        )
        values = (
            f"{key_sql}, gen_random_uuid(), 1, '\"9dd4e461268c8034f5c8564e155c67a6\"',"
            " 'binary/octet-stream', 'default', now(), 'x'::bytea"
        )
        await conn.execute(
            f"INSERT INTO objects {columns} SELECT 'plain', {values}, true"
            " FROM generate_series(0, $1 - 1) i",
            keys,
        )
        await conn.execute(
            f"INSERT INTO objects {columns} SELECT 'versioned', {values}, false"
            " FROM generate_series(0, $1 - 1) i",
            keys,
        )
        # Older versions first, so each key's seq numbers say newest first as the gateway's
        # own overwrites would.
        await conn.execute(
            f"INSERT INTO object_versions {columns} SELECT 'versioned', {values}, false"
            " FROM generate_series(1, $2 - 1) v, generate_series(0, $1 - 1) i ORDER BY v, i",
            keys,
            versions,
        )
        await conn.execute("ANALYZE objects")
        await conn.execute("ANALYZE object_versions")
    finally:
        await conn.close()


def timed_get(
    session: requests.Session, url: str, entry: bytes, expected: int
) -> tuple[float, bytes]:
    started = time.perf_counter()
    answer = session.get(url, timeout=300)
    elapsed = time.perf_counter() - started
    if answer.status_code != 200:
        raise SystemExit(f"{url}: {answer.status_code} {answer.text[:500]}")
    if answer.content.count(entry) != expected:
        raise SystemExit(f"{url}: expected {expected} {entry!r}, got {answer.content.count(entry)}")
    return elapsed * 1000, answer.content


def walk(s3: Any, session: requests.Session, bucket: str, keys: int) -> list[float]:
    """Every page of ListObjectsV2 of ``bucket``, in turn: each page's ms."""
    pages = []
    token = None
    remaining = keys
    while remaining:
        params: dict[str, Any] = {"Bucket": bucket, "MaxKeys": PAGE}
        if token is not None:
            params["ContinuationToken"] = token
        url = s3.generate_presigned_url("list_objects_v2", Params=params)
        ms, body = timed_get(session, url, b"<Contents>", min(PAGE, remaining))
        pages.append(ms)
        remaining -= min(PAGE, remaining)
        found = _TOKEN.search(body)
        token = found.group(1).decode() if found else None
    return pages


def median_of(session: requests.Session, url: str, entry: bytes, expected: int) -> float:
    timed_get(session, url, entry, expected)  # warm-up
    return statistics.median(timed_get(session, url, entry, expected)[0] for _ in range(20))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--keys", type=int, default=100_000)
    parser.add_argument("--versions", type=int, default=5)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    if args.keys % PAGE or args.keys > 1000 * PAGE:
        parser.error("--keys: a multiple of 1,000, at most 1,000,000")
    args.gateway_env = []
    args.gateway_workers = 1
    args.start_timeout = 120
    rows: list[list[str]] = []
    results: dict[str, float] = {}
    with (
        tempfile.TemporaryDirectory(prefix="gateway-versions-bench-") as tmp,
        EmbeddedPostgres(Path(tmp) / "pg") as database,
    ):
        args.database_url = database.url
        system = GatewaySystem(Path(tmp), args)
        system.start()
        try:
            s3 = s3_client(system.endpoint, system.access_key, system.secret_key)
            s3.create_bucket(Bucket="plain")
            s3.create_bucket(Bucket="versioned")
            s3.put_bucket_versioning(
                Bucket="versioned", VersioningConfiguration={"Status": "Enabled"}
            )
            started = time.monotonic()
            asyncio.run(fill(database.url, args.keys, args.versions))
            print(f"filled in {time.monotonic() - started:.0f} s", flush=True)
            session = requests.Session()
            for bucket in ("plain", "versioned"):
                walk(s3, session, bucket, args.keys)  # warm-up
                walks = [walk(s3, session, bucket, args.keys) for _ in range(args.repeat)]
                page = statistics.median(ms for pages in walks for ms in pages)
                whole = statistics.median(sum(pages) for pages in walks)
                results[f"{bucket}: page"] = page
                results[f"{bucket}: walk"] = whole
                url = s3.generate_presigned_url(
                    "list_objects_v2", Params={"Bucket": bucket, "Delimiter": "/"}
                )
                prefixes = args.keys // PAGE
                results[f"{bucket}: delimiter"] = median_of(
                    session, url, b"<CommonPrefixes>", prefixes
                )
                print(f"{bucket}: page {page:.1f} ms, walk {whole:.0f} ms", flush=True)
            url = s3.generate_presigned_url("list_object_versions", Params={"Bucket": "versioned"})
            results["versioned: ListObjectVersions page"] = median_of(
                session, url, b"<Version>", PAGE
            )
        finally:
            system.stop()
    n, v = args.keys, args.versions
    for label, plain, versioned in (
        (f"ListObjectsV2 page of {PAGE}, median ms", "plain: page", "versioned: page"),
        (f"ListObjectsV2 of all {n:,} keys, median ms", "plain: walk", "versioned: walk"),
        ("ListObjectsV2 delimiter /, first page, median ms", "plain: delimiter",
         "versioned: delimiter"),
    ):  # fmt: skip
        ratio = results[versioned] / results[plain]
        rows.append([label, f"{results[plain]:.1f}", f"{results[versioned]:.1f}", f"{ratio:.2f}"])
    rows.append(
        [f"ListObjectVersions page of {PAGE}, median ms", "-",
         f"{results['versioned: ListObjectVersions page']:.1f}", "-"]
    )  # fmt: skip
    header = ["figure", f"unversioned ({n:,} objects)", f"versioned ({n:,} x {v})", "ratio"]
    payload = {"keys": n, "versions": v, "repeat": args.repeat, "median_ms": results}
    publish("versioned-listing", [(header, rows)], payload)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
