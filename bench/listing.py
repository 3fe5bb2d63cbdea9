"""Listing benchmark: what a delimiter costs, for objects and for multipart uploads.

    python bench/listing.py [--folders 1000] [--repeat 20] [--gateway-workers 1]

Starts a gateway (embedded Postgres, temp data dir) on 127.0.0.1, fills bucket `bench` with
`--folders` one-key folders (`dir-NNNNN/object`), and times, as the median of `--repeat`
requests (one page of up to 1,000 entries each; presigned by boto3 and sent with requests
over one keep-alive connection, so the figure is the gateway's answer, not boto3's parsing):
- ListObjectsV2 of the bucket without a delimiter (1,000 keys: the reference);
- ListObjectsV2 with `Delimiter="/"` (1,000 common prefixes);
- the same with the keys of ten folders of `--folders` / 10 keys each (ten common prefixes,
  each hiding many keys);
- ListObjectsV2 with `Delimiter="/"` of `--folders` keys with no delimiter in them;
- ListMultipartUploads with and without `Delimiter="/"`, one upload in each of `--folders`
  folders.
Every answer is checked (status, counts of entries and common prefixes).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import requests

sys.path.insert(0, str(Path(__file__).resolve().parent))
from run import GatewaySystem, publish, s3_client


def fill(s3: Any, bucket: str, keys: list[str]) -> None:
    s3.create_bucket(Bucket=bucket)
    with ThreadPoolExecutor(16) as pool:
        list(pool.map(lambda key: s3.put_object(Bucket=bucket, Key=key, Body=b"x"), keys))


def median_ms(
    session: requests.Session, url: str, check: Callable[[bytes], None], repeat: int
) -> float:
    times = []
    for attempt in range(repeat + 1):
        started = time.perf_counter()
        answer = session.get(url, timeout=300)
        elapsed = time.perf_counter() - started
        if answer.status_code != 200:
            raise SystemExit(f"{url}: {answer.status_code} {answer.text[:500]}")
        check(answer.content)
        if attempt:  # the first is a warm-up
            times.append(elapsed)
    return statistics.median(times) * 1000


def expect(contents: int, prefixes: int, entry: bytes = b"<Contents>") -> Callable[[bytes], None]:
    def check(body: bytes) -> None:
        got = (body.count(entry), body.count(b"<CommonPrefixes>"))
        if got != (contents, prefixes):
            raise SystemExit(f"expected {contents} entries and {prefixes} prefixes, got {got}")

    return check


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--folders", type=int, default=1000)
    parser.add_argument("--repeat", type=int, default=20)
    parser.add_argument("--gateway-workers", type=int, default=1)
    args = parser.parse_args()
    if args.folders > 1000 or args.folders % 10:
        parser.error("--folders: a multiple of 10, at most 1000 (one page)")
    # GatewaySystem reads these runner options.
    args.database_url = None
    args.gateway_env = []
    args.start_timeout = 120
    n = args.folders
    rows: list[list[str]] = []
    with tempfile.TemporaryDirectory(prefix="gateway-list-bench-") as tmp:
        system = GatewaySystem(Path(tmp), args)
        system.start()
        try:
            s3 = s3_client(system.endpoint, system.access_key, system.secret_key)
            fill(s3, "folders", [f"dir-{i:05d}/object" for i in range(n)])
            fill(s3, "wide", [f"dir-{i % 10:05d}/object-{i:05d}" for i in range(n)])
            fill(s3, "flat", [f"object-{i:05d}" for i in range(n)])
            s3.create_bucket(Bucket="uploads")
            with ThreadPoolExecutor(16) as pool:
                list(pool.map(lambda i: s3.create_multipart_upload(
                    Bucket="uploads", Key=f"dir-{i:05d}/object"), range(n)))  # fmt: skip

            def objects(bucket: str, **kw: Any) -> str:
                params = {"Bucket": bucket, **kw}
                return s3.generate_presigned_url("list_objects_v2", Params=params)

            def uploads(**kw: Any) -> str:
                params = {"Bucket": "uploads", **kw}
                return s3.generate_presigned_url("list_multipart_uploads", Params=params)

            cases = [
                (f"ListObjectsV2, {n} one-key folders, no delimiter",
                 objects("folders"), expect(n, 0)),
                (f"ListObjectsV2, {n} one-key folders, delimiter /",
                 objects("folders", Delimiter="/"), expect(0, n)),
                (f"ListObjectsV2, 10 folders of {n // 10} keys, delimiter /",
                 objects("wide", Delimiter="/"), expect(0, 10)),
                (f"ListObjectsV2, {n} keys without /, delimiter /",
                 objects("flat", Delimiter="/"), expect(n, 0)),
                (f"ListMultipartUploads, {n} one-upload folders, no delimiter",
                 uploads(), expect(n, 0, b"<Upload>")),
                (f"ListMultipartUploads, {n} one-upload folders, delimiter /",
                 uploads(Delimiter="/"), expect(0, n, b"<Upload>")),
            ]  # fmt: skip
            results = {}
            session = requests.Session()
            for name, url, check in cases:
                results[name] = median_ms(session, url, check, args.repeat)
                rows.append([name, f"{results[name]:.1f}"])
                print(f"{name}: {results[name]:.1f} ms", flush=True)
        finally:
            system.stop()
    header = [f"one page (median of {args.repeat})", "ms"]
    payload = {"folders": n, "repeat": args.repeat, "median_ms": results}
    publish("listing", [(header, rows)], payload)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
