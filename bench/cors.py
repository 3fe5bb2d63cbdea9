"""CORS benchmark: what answering a browser's cross-origin GET costs.

    python bench/cors.py [--rounds 3] [--duration 10] [--connections 64] [--gateway-workers 1]

Starts a gateway (embedded Postgres, temp data dir) on 127.0.0.1 with a bucket that anyone
may read (a bucket policy) and CORS rules (PutBucketCors: a rule for one site, then one for
`*`), and puts `--objects` 4 KiB objects in it. Then wrk replays anonymous GETs of them in
alternating rounds, the same requests without an `Origin` header and with one that matches
the first rule (so every answer carries Access-Control-Allow-Origin, Expose-Headers and
Vary). Every answer is checked (2xx, 4,096 bytes). The figure is the ratio of the medians of
the rounds.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from run import SMALL_SIZE, GatewaySystem, publish, run_wrk, s3_client

BUCKET = "site"
ORIGIN = "https://site.example"


def prepare(system: GatewaySystem, objects: int) -> list[str]:
    s3 = s3_client(system.endpoint, system.access_key, system.secret_key)
    s3.create_bucket(Bucket=BUCKET)
    policy = {
        "Version": "2012-10-17",
        "Statement": [
            {
                "Effect": "Allow",
                "Principal": "*",
                "Action": "s3:GetObject",
                "Resource": f"arn:aws:s3:::{BUCKET}/*",
            }
        ],
    }
    s3.put_bucket_policy(Bucket=BUCKET, Policy=json.dumps(policy))
    rules = [
        {
            "AllowedOrigins": [ORIGIN],
            "AllowedMethods": ["GET", "HEAD"],
            "AllowedHeaders": ["*"],
            "ExposeHeaders": ["ETag", "Content-Length"],
            "MaxAgeSeconds": 600,
        },
        {"AllowedOrigins": ["*"], "AllowedMethods": ["GET"]},
    ]
    s3.put_bucket_cors(Bucket=BUCKET, CORSConfiguration={"CORSRules": rules})
    keys = [f"assets/{i:05d}.bin" for i in range(objects)]
    body = bytes(range(256)) * (SMALL_SIZE // 256)
    with ThreadPoolExecutor(8) as pool:
        list(pool.map(lambda key: s3.put_object(Bucket=BUCKET, Key=key, Body=body), keys))
    # The load's requests must be what they claim: anonymous, answered with CORS headers.
    check = urllib.request.Request(
        f"{system.endpoint}/{BUCKET}/{keys[0]}", headers={"Origin": ORIGIN}
    )
    with urllib.request.urlopen(check, timeout=10) as answer:
        if answer.headers.get("Access-Control-Allow-Origin") != ORIGIN:
            raise SystemExit(f"no CORS headers on an anonymous GET: {dict(answer.headers)}")
    return keys


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=3, help="rounds of each kind (3)")
    parser.add_argument("--duration", type=float, default=10, help="seconds per round (10)")
    parser.add_argument("--warmup", type=float, default=2, help="unmeasured seconds first (2)")
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--objects", type=int, default=1000)
    parser.add_argument("--request-timeout", type=float, default=30)
    parser.add_argument("--gateway-workers", type=int, default=1)
    args = parser.parse_args()
    # GatewaySystem reads these runner options.
    args.database_url = None
    args.gateway_env = []
    args.start_timeout = 120
    kinds: dict[str, list[str]] = {
        "without Origin": [],
        # The same request bytes as with Origin, in a header the gateway ignores: what the
        # load generator and the header parser add, apart from CORS.
        "X-Origin instead": [f"X-Origin: {ORIGIN}"],
        "with Origin": [f"Origin: {ORIGIN}"],
    }
    figures: dict[str, list[float]] = {name: [] for name in kinds}
    with tempfile.TemporaryDirectory(prefix="gateway-cors-bench-") as tmp:
        system = GatewaySystem(Path(tmp), args)
        system.start()
        try:
            keys = prepare(system, args.objects)
            paths = Path(tmp) / "paths.txt"
            paths.write_text("".join(f"/{BUCKET}/{key}\n" for key in keys))
            run_wrk(system, paths, "GET", args.warmup, args, [f"Origin: {ORIGIN}"])
            for round_number in range(args.rounds):
                for name, headers in kinds.items():
                    result = run_wrk(system, paths, "GET", args.duration, args, headers)
                    figures[name].append(result["rps"])
                    print(
                        f"round {round_number + 1}, {name}: {result['rps']:,.0f} req/s", flush=True
                    )
        finally:
            system.stop()
    plain = statistics.median(figures["without Origin"])
    cors = statistics.median(figures["with Origin"])
    header = ["anonymous 4 KiB GET", "median req/s", "rounds"]
    rows = [
        [name, f"{statistics.median(values):,.0f}", ", ".join(f"{v:,.0f}" for v in values)]
        for name, values in figures.items()
    ]
    rows.append(["with / without", f"{cors / plain:.3f}", ""])
    publish("cors", [(header, rows)], {"req_s": figures})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
