"""Quota benchmark: what a bucket's quota costs a small PutObject.

    python bench/quotas.py [--rounds 4] [--duration 10] [--connections 64] [--gateway-workers 1]

Starts one gateway (embedded Postgres, temp data dir) on 127.0.0.1 whose file declares two
buckets alike but for a quota: "free" has none, "limited" one too large to be reached
(max_bytes 1 TiB, max_objects 10^9), so every write into it pays the whole check and is
stored. wrk replays pre-signed PUTs of 4 KiB objects under new keys (each round its own, so
every write adds an object: a replace that does not grow usage skips the commit check) into
one bucket, then the other, in rounds whose order alternates. Every answer is checked (2xx).
The figure is the ratio of the medians of the rounds, with the gateway's CPU per request.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
from run import (
    CpuMeter,
    GatewaySystem,
    report_comparison,
    request_target,
    run_wrk,
)

BUCKETS = {"free": {}, "limited": {"quota": {"max_bytes": "1TiB", "max_objects": 10**9}}}


def start(workdir: Path, args: argparse.Namespace) -> GatewaySystem:
    config = workdir / "gateway.yaml"
    config.write_text(yaml.safe_dump({"buckets": BUCKETS}))
    # GatewaySystem reads these runner options.
    options = argparse.Namespace(**vars(args))
    options.database_url = None
    options.gateway_env = [f"GATEWAY_CONFIG={config}"]
    options.start_timeout = 120
    system = GatewaySystem(workdir, options)
    system.start()
    return system


def put_targets(system: GatewaySystem, bucket: str, prefix: str, count: int) -> str:
    urls = (
        system.client.generate_presigned_url(
            "put_object", Params={"Bucket": bucket, "Key": f"{prefix}/{i:06d}"}, ExpiresIn=3600
        )
        for i in range(count)
    )
    return "".join(request_target(url) + "\n" for url in urls)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=4, help="rounds of each kind (4)")
    parser.add_argument("--duration", type=float, default=10, help="seconds per round (10)")
    parser.add_argument("--warmup", type=float, default=2, help="unmeasured seconds first (2)")
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument(
        "--keys", type=int, default=60_000, help="new keys per round and bucket (60,000)"
    )
    parser.add_argument("--request-timeout", type=float, default=30)
    parser.add_argument("--gateway-workers", type=int, default=1)
    args = parser.parse_args()
    figures: dict[str, list[float]] = {name: [] for name in BUCKETS}
    costs: dict[str, list[float]] = {name: [] for name in BUCKETS}
    others: list[float] = []
    with tempfile.TemporaryDirectory(prefix="gateway-quotas-bench-") as tmp:
        workdir = Path(tmp)
        system = start(workdir, args)
        try:
            for name in BUCKETS:
                warmup = workdir / f"{name}-warmup.txt"
                warmup.write_text(put_targets(system, name, "warmup", args.keys // 4))
                run_wrk(system, warmup, "PUT", args.warmup, args)
            for round_number in range(args.rounds):
                order = list(BUCKETS)
                for name in order if round_number % 2 == 0 else order[::-1]:
                    paths = workdir / f"{name}-{round_number}.txt"
                    paths.write_text(put_targets(system, name, f"r{round_number}", args.keys))
                    meter = CpuMeter(system)
                    with meter.window():
                        result = run_wrk(system, paths, "PUT", args.duration, args)
                    if result["requests"] > args.keys:
                        print(f"PROBLEM: {result['requests']:,} PUTs over {args.keys:,} keys")
                        return 1
                    figures[name].append(result["rps"])
                    cpu = meter.report()
                    costs[name].append(
                        1e6 * cpu["server_cores"] * result["seconds"] / result["requests"]
                    )
                    others.append(cpu["other_pct"])
                    print(
                        f"round {round_number + 1}, {name}: {result['rps']:,.0f} req/s,"
                        f" {costs[name][-1]:.0f} us gateway CPU per request,"
                        f" other processes {cpu['other_pct']}% of the machine",
                        flush=True,
                    )
        finally:
            system.stop()
    labelled = {"no quota": figures["free"], "quota": figures["limited"]}
    labelled_costs = {"no quota": costs["free"], "quota": costs["limited"]}
    report_comparison(
        "quotas", "4 KiB PUT, new keys", labelled, labelled_costs, others, "quota / no quota"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
