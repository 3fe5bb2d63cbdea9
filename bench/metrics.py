"""Metrics benchmark: what the Prometheus metrics cost a small GET.

    python bench/metrics.py [--rounds 5] [--duration 10] [--connections 64] [--gateway-workers 1]

Starts two gateways (each with its embedded Postgres, temp data dirs) on 127.0.0.1, alike but
for `metrics.enabled`: true (the default) in one, false in the other. Both keep the access
log at INFO (the default), so the difference is the metrics alone. Each gets `--objects`
4 KiB objects; wrk then replays pre-signed GETs of them against one gateway, then the other,
in rounds, the order swapped every round (the idle one waits). Every answer is checked (2xx,
4,096 bytes), and the metrics gateway is scraped at the end to check that it counted the
requests. The figure is the ratio of the medians of the rounds. The gateway process's CPU per
request is measured too (with what other processes used of the machine): a figure that other
work on a shared machine moves less than req/s.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import urllib.request
from pathlib import Path

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
from run import (
    SMALL_SIZE,
    CpuMeter,
    GatewaySystem,
    Objects,
    report_comparison,
    request_target,
    run_wrk,
)


def start(workdir: Path, args: argparse.Namespace, enabled: bool) -> GatewaySystem:
    workdir.mkdir()
    config = workdir / "gateway.yaml"
    config.write_text(yaml.safe_dump({"metrics": {"enabled": enabled}}))
    # GatewaySystem reads these runner options.
    options = argparse.Namespace(**vars(args))
    options.database_url = None
    options.gateway_env = [f"GATEWAY_CONFIG={config}"]
    options.start_timeout = 120
    system = GatewaySystem(workdir, options)
    system.start()
    return system


def requests_counted(system: GatewaySystem) -> float:
    """GetObject 2xx requests the metrics counted (scraped from loopback, the default)."""
    with urllib.request.urlopen(f"{system.endpoint}/_gateway/metrics", timeout=10) as answer:
        text = answer.read().decode()
    prefix = 'gateway_requests_total{operation="GetObject",status="2xx"} '
    return sum(float(line[len(prefix) :]) for line in text.splitlines() if line.startswith(prefix))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=5, help="rounds of each kind (5)")
    parser.add_argument("--duration", type=float, default=10, help="seconds per round (10)")
    parser.add_argument("--warmup", type=float, default=2, help="unmeasured seconds first (2)")
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--objects", type=int, default=1000)
    parser.add_argument("--request-timeout", type=float, default=30)
    parser.add_argument("--gateway-workers", type=int, default=1)
    args = parser.parse_args()
    objs = Objects(
        small_keys=[f"small/{i:05d}" for i in range(args.objects)],
        put_keys=[],
        bodies=[os.urandom(SMALL_SIZE) for _ in range(args.objects)],
        large_file=Path(),
        large_size=0,
        large_md5="",
    )
    figures: dict[str, list[float]] = {"metrics off": [], "metrics on": []}
    # The gateway process's CPU per request (microseconds): unlike req/s, barely moved by
    # other work on the machine.
    costs: dict[str, list[float]] = {name: [] for name in figures}
    others: list[float] = []
    with tempfile.TemporaryDirectory(prefix="gateway-metrics-bench-") as tmp:
        systems: dict[str, GatewaySystem] = {}
        try:
            for name in figures:
                systems[name] = start(
                    Path(tmp) / name.replace(" ", "-"), args, name == "metrics on"
                )
            paths: dict[str, Path] = {}
            for name, system in systems.items():
                system.prepare(objs)
                paths[name] = Path(tmp) / f"{name.replace(' ', '-')}.txt"
                paths[name].write_text(
                    "".join(
                        request_target(system.presign("GET", k)) + "\n" for k in objs.small_keys
                    )
                )
                run_wrk(system, paths[name], "GET", args.warmup, args)
            served = 0
            for round_number in range(args.rounds):
                # Either order every other round: neither always runs after the other.
                order = list(systems.items())
                for name, system in order if round_number % 2 == 0 else order[::-1]:
                    meter = CpuMeter(system)
                    with meter.window():
                        result = run_wrk(system, paths[name], "GET", args.duration, args)
                    figures[name].append(result["rps"])
                    cpu = meter.report()
                    costs[name].append(
                        1e6 * cpu["server_cores"] * result["seconds"] / result["requests"]
                    )
                    others.append(cpu["other_pct"])
                    if name == "metrics on":
                        served += result["requests"]
                    print(
                        f"round {round_number + 1}, {name}: {result['rps']:,.0f} req/s,"
                        f" {costs[name][-1]:.0f} us gateway CPU per request,"
                        f" other processes {cpu['other_pct']}% of the machine",
                        flush=True,
                    )
            counted = requests_counted(systems["metrics on"])
            # wrk's warm-up and prepare()'s spot check are counted too; a request wrk gave up
            # on at the end of a round may be counted without being in wrk's figure.
            if counted < served:
                print(f"PROBLEM: the metrics counted {counted:,.0f} GETs, wrk saw {served:,}")
                return 1
        finally:
            for system in systems.values():
                system.stop()
    report_comparison("metrics", "4 KiB GET", figures, costs, others, "on / off")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
