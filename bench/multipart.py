"""Multipart benchmark: completion time by part count, and RSS through a 1 GiB transfer.

    python bench/multipart.py [--size 1GiB] [--parallel 10] [--workers N]

Starts a gateway (embedded Postgres, temp data dir) on 127.0.0.1 and measures:
- CompleteMultipartUpload latency for the same bytes uploaded as 128 parts and as 4 parts
  (it must grow with the number of parts, not with the bytes: nothing is copied);
- the gateway's RSS (all its processes) while boto3 uploads and downloads the object with
  `--parallel` concurrent parts, against its idle RSS.
Every transfer is checked (ETag rule, byte count, MD5 of the download).
"""

from __future__ import annotations

import argparse
import hashlib
import os
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from boto3.s3.transfer import TransferConfig

sys.path.insert(0, str(Path(__file__).resolve().parent))
from run import (  # the sibling runner, imported as a module
    GatewaySystem,
    RssSampler,
    ensure_large_file,
    md5_file,
    parse_size,
    publish,
    s3_client,
)

MIB = 1024 * 1024


def upload_parts(s3: Any, bucket: str, key: str, path: Path, part_size: int, parallel: int):
    """Upload ``path`` as parts of ``part_size``; returns (upload id, parts, part MD5s)."""
    size = path.stat().st_size
    upload_id = s3.create_multipart_upload(Bucket=bucket, Key=key)["UploadId"]
    offsets = list(range(0, size, part_size))

    def send(index: int) -> tuple[int, str, bytes]:
        with open(path, "rb") as handle:
            handle.seek(offsets[index])
            data = handle.read(part_size)
        etag = s3.upload_part(
            Bucket=bucket, Key=key, UploadId=upload_id, PartNumber=index + 1, Body=data
        )["ETag"]
        return index + 1, etag, hashlib.md5(data).digest()

    with ThreadPoolExecutor(parallel) as pool:
        done = sorted(pool.map(send, range(len(offsets))))
    parts = [{"PartNumber": number, "ETag": etag} for number, etag, _ in done]
    return upload_id, parts, [digest for _, _, digest in done]


def timed_completion(
    s3: Any, bucket: str, key: str, path: Path, part_size: int, parallel: int
) -> dict[str, Any]:
    upload_id, parts, digests = upload_parts(s3, bucket, key, path, part_size, parallel)
    started = time.perf_counter()
    result = s3.complete_multipart_upload(
        Bucket=bucket, Key=key, UploadId=upload_id, MultipartUpload={"Parts": parts}
    )
    elapsed = time.perf_counter() - started
    expected = f'"{hashlib.md5(b"".join(digests)).hexdigest()}-{len(parts)}"'
    if result["ETag"] != expected:
        raise SystemExit(f"ETag {result['ETag']} is not the S3 rule's {expected}")
    return {"parts": len(parts), "complete_ms": elapsed * 1000}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", default="1GiB")
    parser.add_argument("--parallel", type=int, default=10)
    parser.add_argument("--gateway-workers", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--large-file", type=Path)
    args = parser.parse_args()
    size = parse_size(args.size)
    if size // 128 < 5 * MIB:
        # S3 refuses parts under 5 MiB but the last (EntityTooSmall).
        parser.error("--size must be at least 640MiB: 128 parts of at least 5 MiB each")
    # GatewaySystem reads these runner options.
    args.database_url = None
    args.gateway_env = []
    args.start_timeout = 120
    with tempfile.TemporaryDirectory(prefix="gateway-mp-bench-") as tmp:
        workdir = Path(tmp)
        source = args.large_file or workdir / "source.bin"
        ensure_large_file(source, size)
        source_md5 = md5_file(source)
        system = GatewaySystem(workdir, args)
        system.start()
        try:
            s3 = s3_client(system.endpoint, system.access_key, system.secret_key)
            s3.create_bucket(Bucket="bench")
            completions = [
                timed_completion(s3, "bench", "many", source, size // 128, args.parallel),
                timed_completion(s3, "bench", "few", source, size // 4, args.parallel),
            ]
            s3.delete_object(Bucket="bench", Key="many")
            s3.delete_object(Bucket="bench", Key="few")
            time.sleep(2)
            with RssSampler(system.proc.pid) as idle:
                time.sleep(1.5)
            transfer = TransferConfig(
                multipart_threshold=8 * MIB,
                multipart_chunksize=8 * MIB,
                max_concurrency=args.parallel,
            )
            target = workdir / "download.bin"
            with RssSampler(system.proc.pid) as busy:
                started = time.perf_counter()
                s3.upload_file(str(source), "bench", "big", Config=transfer)
                uploaded = time.perf_counter() - started
                started = time.perf_counter()
                s3.download_file("bench", "big", str(target), Config=transfer)
                downloaded = time.perf_counter() - started
            if md5_file(target) != source_md5:
                raise SystemExit("the download differs from the upload")
        finally:
            system.stop()
    idle_rss = max(idle.tree) / MIB
    peak_rss = max(busy.tree) / MIB
    results = {
        "size": size,
        "parallel": args.parallel,
        "gateway_workers": args.gateway_workers,
        "completions": completions,
        "upload_mb_s": size / uploaded / 1e6,
        "download_mb_s": size / downloaded / 1e6,
        "idle_rss_mib": idle_rss,
        "peak_rss_mib": peak_rss,
    }
    rows = [[f"{c['parts']} parts", f"{c['complete_ms']:.1f}"] for c in completions]
    rows += [
        ["upload MB/s", f"{results['upload_mb_s']:.0f}"],
        ["download MB/s", f"{results['download_mb_s']:.0f}"],
        ["RSS idle, MiB (all gateway processes)", f"{idle_rss:.1f}"],
        ["RSS peak during transfers, MiB", f"{peak_rss:.1f}"],
    ]
    publish("multipart", [(["figure", "value"], rows)], results)
    ratio = completions[0]["complete_ms"] / completions[1]["complete_ms"]
    print(f"completion 128 parts / 4 parts: {ratio:.2f}x (same order of magnitude: < 10x)")
    print(f"peak RSS {peak_rss:.1f} MiB (target < 150 MiB)")
    return 0 if ratio < 10 and peak_rss < 150 else 2


if __name__ == "__main__":
    raise SystemExit(main())
