"""Upstream profile benchmark: the gateway in front of moto, against moto alone.

    python bench/upstream.py [--duration 10] [--connections 32] [--large-size 64MiB]
                             [--rss-size 1GiB] [--gateway-workers 1]

In one run, every server on 127.0.0.1 (a free port each):

1. moto_server alone ("moto"): the same workloads as bench/run.py, with the client talking to
   moto directly: 4 KiB GET and PUT with wrk replaying pre-signed URLs, then `--large-size`
   PUT and GET with curl (median of `--large-repeat`). Then moto is stopped.
2. A fresh moto_server as the upstream, and a gateway (`--gateway-workers` processes, one by
   default) whose default storage profile is `type: upstream` pointing at it: object KEY of
   gateway bucket B is stored 1:1 at "B/KEY" in the upstream bucket. The same workloads
   through the gateway, then its RSS (all its processes) while `--rss-size` is uploaded and
   downloaded through it, against its idle RSS.

Bytes are checked, not only counted: every key the gateway lists after wrk's PUTs must be in
moto, sampled 4 KiB objects read back through the gateway must equal what moto holds at their
upstream keys, and every large object is hashed after its transfers both through the gateway
and directly from moto. Large objects are deleted once measured (moto keeps objects in
memory). Results are printed and written to bench/results/upstream-<time>.{json,md}.
"""

from __future__ import annotations

import argparse
import copy
import hashlib
import os
import random
import shlex
import sys
import time
import urllib.error
import urllib.request
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
from run import (  # the sibling runner, imported as a module
    BUCKET,
    FAILURES,
    LARGE_KEY,
    MIB,
    SMALL_SIZE,
    BenchError,
    GatewaySystem,
    MotoSystem,
    Objects,
    RssSampler,
    add_run_arguments,
    add_workload_arguments,
    bench_system,
    busy_note,
    cpu_rows,
    ensure_large_file,
    environment,
    figure,
    find_tool,
    fmt,
    human_size,
    large_workload,
    md5_file,
    md_table,
    measure_idle,
    parse_size,
    proc_tree,
    record_failure,
    reset_hwm,
    run_config,
    run_dir,
    run_step,
    text_table,
    vm_status,
    write_results,
)

UPSTREAM_BUCKET = "upstream"
UPSTREAM_PROFILE = "up"
# Credentials the gateway signs its upstream requests with; moto accepts any.
UPSTREAM_ACCESS_KEY = "testing"
UPSTREAM_SECRET_KEY = "testingsecret"
# Sampled 4 KiB objects compared byte for byte through the gateway and upstream.
SAMPLE = 20


def upstream_key(key: str) -> str:
    """Where object ``key`` of gateway bucket BUCKET lives in the upstream bucket."""
    return f"{BUCKET}/{key}"


class UpstreamGateway(GatewaySystem):
    """A gateway whose default storage profile keeps the bytes in ``upstream``'s bucket."""

    def __init__(self, workdir: Path, args: argparse.Namespace, upstream: MotoSystem) -> None:
        self.upstream = upstream
        config = workdir / "gateway.yaml"
        profile = {
            "type": "upstream",
            "endpoint_url": upstream.endpoint,
            "bucket": UPSTREAM_BUCKET,
            "prefix": "{bucket}/",
            "addressing_style": "path",
            "access_key": UPSTREAM_ACCESS_KEY,
            "secret_key": UPSTREAM_SECRET_KEY,
        }
        profile.update(args.upstream_options)
        doc = {"storage_profiles": {UPSTREAM_PROFILE: profile}, "default_profile": UPSTREAM_PROFILE}
        config.write_text(yaml.safe_dump(doc, sort_keys=False))
        # GatewaySystem.start applies --gateway-env last, so the file is the one it serves.
        options = copy.copy(args)
        options.gateway_env = [f"GATEWAY_CONFIG={config}", *args.gateway_env]
        super().__init__(workdir, options)

    def helper_pids(self) -> list[int]:
        # Its Postgres and the upstream both work for it: neither counts as "other" CPU.
        return super().helper_pids() + self.upstream.server_pids()

    def prepare(self, objs: Objects) -> None:
        super().prepare(objs)
        check_small(self, objs.small_keys, dict(zip(objs.small_keys, objs.bodies, strict=True)))

    def check_large(self, objs: Objects) -> str | None:
        note = super().check_large(objs)
        head = self.upstream.client.head_object(Bucket=UPSTREAM_BUCKET, Key=upstream_key(LARGE_KEY))
        if head["ContentLength"] != objs.large_size:
            raise BenchError(
                f"upstream copy of {LARGE_KEY} has {head['ContentLength']} bytes,"
                f" not {objs.large_size}"
            )
        return note


def check_small(
    system: UpstreamGateway, keys: list[str], expected: dict[str, bytes]
) -> dict[str, int]:
    """A sample of ``keys`` read through the gateway equals what moto holds at their upstream
    keys (and ``expected``, where known)."""
    sample = random.Random(len(keys)).sample(keys, min(SAMPLE, len(keys)))
    for key in sample:
        through = system.client.get_object(Bucket=BUCKET, Key=key)["Body"].read()
        direct = system.upstream.client.get_object(Bucket=UPSTREAM_BUCKET, Key=upstream_key(key))
        direct_body = direct["Body"].read()
        if len(through) != SMALL_SIZE or through != direct_body:
            raise BenchError(
                f"GET {BUCKET}/{key} through the gateway ({len(through)} bytes) differs from"
                f" upstream {UPSTREAM_BUCKET}/{upstream_key(key)} ({len(direct_body)} bytes)"
            )
        if key in expected and through != expected[key]:
            raise BenchError(f"GET {BUCKET}/{key} through the gateway is not the bytes PUT")
    return {"checked": len(sample)}


def list_keys(client: Any, bucket: str, prefix: str) -> set[str]:
    pages = client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix)
    return {entry["Key"] for page in pages for entry in page.get("Contents", [])}


def check_puts(system: UpstreamGateway, res: dict[str, Any]) -> dict[str, int]:
    """Every key the gateway lists under put/ (the keys wrk got to) is upstream, and a sample
    reads back through the gateway as moto holds it (wrk's bodies are random)."""
    listed = list_keys(system.client, BUCKET, "put/")
    upstream = {
        k.removeprefix(upstream_key(""))
        for k in list_keys(system.upstream.client, UPSTREAM_BUCKET, upstream_key("put/"))
    }
    if missing := sorted(listed - upstream):
        raise BenchError(
            f"{len(missing)} objects the gateway lists are not upstream, e.g. {BUCKET}/{missing[0]}"
        )
    if extra := len(upstream - listed):
        # A PUT whose client went away (wrk stopping) after the upstream write, before the
        # commit: the gateway adopts such an object on its first GET.
        res["notes"].append(f"{extra} objects upstream under put/ that the gateway does not list")
    return {"listed": len(listed), "unlisted_upstream": extra} | check_small(
        system, sorted(listed), {}
    )


def stream_md5(url: str, timeout: float) -> tuple[int, str]:
    """(bytes, MD5) of the body a GET of ``url`` returns."""
    h, size = hashlib.md5(), 0
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:
            while block := resp.read(4 * MIB):
                h.update(block)
                size += len(block)
    except urllib.error.HTTPError as e:
        raise BenchError(f"GET for verification answered HTTP {e.code}: {e.read()[:200]!r}") from e
    return size, h.hexdigest()


def verify_large(system: Any, objs: Objects, args: argparse.Namespace) -> dict[str, Any]:
    """Hashes the stored large object as its system serves it (and, behind a gateway, as moto
    holds it at its upstream key); raises unless every copy is the source file's bytes."""
    copies = {system.name: system.presign("GET", LARGE_KEY)}
    if isinstance(system, UpstreamGateway):
        copies["upstream"] = system.upstream.client.generate_presigned_url(
            "get_object",
            Params={"Bucket": UPSTREAM_BUCKET, "Key": upstream_key(LARGE_KEY)},
            ExpiresIn=3600,
        )
    out = {}
    for where, url in copies.items():
        size, digest = stream_md5(url, args.large_timeout)
        if size != objs.large_size or digest != objs.large_md5:
            raise BenchError(
                f"{where} holds {size} bytes with MD5 {digest} for {LARGE_KEY}, not the"
                f" {objs.large_size} bytes with MD5 {objs.large_md5} that were PUT"
            )
        out[where] = digest
    return out


def delete_large(system: Any) -> None:
    system.client.delete_object(Bucket=BUCKET, Key=LARGE_KEY)
    if isinstance(system, UpstreamGateway):
        found = system.upstream.client.list_objects_v2(
            Bucket=UPSTREAM_BUCKET, Prefix=upstream_key(LARGE_KEY)
        )
        if found.get("KeyCount"):
            raise BenchError(f"DELETE through the gateway left {upstream_key(LARGE_KEY)} upstream")


def after_large(system: Any, objs: Objects, args: argparse.Namespace, res: dict[str, Any]) -> None:
    """Checks the bytes of the large object bench_system left, then deletes it."""
    if "large_put" in res:
        run_step(system, res, "large_verify", lambda: verify_large(system, objs, args))
    run_step(system, res, "large_delete", lambda: delete_large(system))


def rss_phase(
    system: UpstreamGateway, big: Objects, args: argparse.Namespace, res: dict[str, Any]
) -> None:
    """The gateway's RSS through an upload and a download of ``big``, against its idle RSS."""
    assert system.proc and system.upstream.proc
    pid = system.proc.pid
    options = copy.copy(args)
    options.large_repeat = args.rss_repeat
    time.sleep(2)  # let deferred work settle before taking the baseline
    idle = res["rss_idle_big"] = measure_idle(pid, 1.5)
    hwm_reset = reset_hwm(pid)
    with RssSampler(pid) as sampler, RssSampler(system.upstream.proc.pid) as upstream:
        run_step(system, res, "big_put", lambda: large_workload(system, "PUT", big, options))
        if "big_put" in res:
            run_step(system, res, "big_check", lambda: {"note": system.check_large(big)})
            run_step(system, res, "big_get", lambda: large_workload(system, "GET", big, options))
    hwm_main = vm_status(pid)[1] if hwm_reset else 0
    # The kernel's high-water mark catches a spike of the main process between two samples.
    peak = max(max(sampler.tree, default=0), hwm_main + idle["tree"] - idle["main"])
    res["rss_big"] = {
        "peak_tree": peak,
        "peak_tree_sampled": max(sampler.tree, default=0),
        "peak_main_sampled": max(sampler.main, default=0),
        "hwm_main": hwm_main,
        "samples": len(sampler.tree),
        "processes": len(proc_tree(pid)),
        "upstream_peak": max(upstream.tree, default=0),
    }
    if note := res.get("big_check", {}).get("note"):
        res["notes"].append(note)
    if "big_put" in res:
        run_step(system, res, "big_verify", lambda: verify_large(system, big, args))
    run_step(system, res, "big_delete", lambda: delete_large(system))


def log_findings(system: Any, limit: int = 40) -> list[str]:
    """Warnings, errors and tracebacks in a server's log (the gateway's access lines are INFO)."""
    if not system.proc:
        return []
    try:
        lines = system.proc.log_path.read_text(errors="replace").splitlines()
    except OSError:
        return []
    marks = ("WARNING", "ERROR", "CRITICAL", "Traceback", "Exception")
    found = [line for line in lines if any(m in line for m in marks)]
    # moto_server's werkzeug banner says so at every start.
    return [line for line in found if "development server" not in line][:limit]


def bench_moto(objs: Objects, tmp: Path, args: argparse.Namespace) -> dict[str, Any]:
    system = MotoSystem(tmp / "moto", args)
    system.workdir.mkdir()
    res: dict[str, Any] = {"status": "ok", "problems": [], "notes": []}
    try:
        bench_system(system, objs, args, res)
        after_large(system, objs, args, res)
    except FAILURES as e:
        res["status"] = "failed"
        record_failure(res, "moto", e)
    finally:
        print("stopping moto ...", flush=True)
        res["notes"] += system.stop()
    if res["problems"]:
        res["status"] = "invalid" if res["status"] == "ok" else res["status"]
    return res


def bench_gateway(
    objs: Objects, big: Objects | None, tmp: Path, args: argparse.Namespace
) -> dict[str, Any]:
    upstream = MotoSystem(tmp / "upstream", args)
    upstream.workdir.mkdir()
    res: dict[str, Any] = {"status": "ok", "problems": [], "notes": []}
    system: UpstreamGateway | None = None
    try:
        print(f"starting the upstream moto on {upstream.endpoint} ...", flush=True)
        upstream.start()
        upstream.client.create_bucket(Bucket=UPSTREAM_BUCKET)
        (tmp / "gateway").mkdir()
        system = UpstreamGateway(tmp / "gateway", args, upstream)
        bench_system(system, objs, args, res)
        if "small_put" in res:
            run_step(system, res, "small_put_check", lambda: check_puts(system, res))
        after_large(system, objs, args, res)
        if big is not None:
            rss_phase(system, big, args, res)
    except FAILURES as e:
        res["status"] = "failed"
        record_failure(res, "gateway", e)
    finally:
        if system is not None:
            res["log"] = log_findings(system)
            print("stopping the gateway ...", flush=True)
            res["notes"] += system.stop()
        res["upstream_log"] = log_findings(upstream)
        print("stopping the upstream moto ...", flush=True)
        res["notes"] += upstream.stop()
    if res["problems"]:
        res["status"] = "invalid" if res["status"] == "ok" else res["status"]
    return res


# ---------------------------------------------------------------------------------------------
# Report


def ratio(results: dict[str, Any], workload: str, key: str) -> float | None:
    gw, peer = figure(results, "gateway", workload, key), figure(results, "moto", workload, key)
    return gw / peer if gw is not None and peer else None


def figure_rows(results: dict[str, Any], args: argparse.Namespace) -> list[list[str]]:
    large, big, conns = human_size(args.large_size), human_size(args.rss_size), args.connections

    def cell(system: str, workload: str, key: str, digits: int) -> str:
        r = results.get(system, {}).get(workload)
        if not r:
            return "-"
        return fmt(r[key], digits) + (" INVALID" if r.get("invalid") else "")

    def rss(system: str, part: str, key: str) -> str:
        r = results.get(system, {}).get(part)
        return fmt(r[key] / MIB) if r and key in r else "-"

    specs = [
        (f"4 KiB GET x{conns}, req/s", "small_get", "rps", 0),
        (f"4 KiB GET x{conns}, p50 ms", "small_get", "p50_ms", 2),
        (f"4 KiB GET x{conns}, p99 ms", "small_get", "p99_ms", 2),
        (f"4 KiB PUT x{conns}, req/s", "small_put", "rps", 0),
        (f"4 KiB PUT x{conns}, p50 ms", "small_put", "p50_ms", 2),
        (f"4 KiB PUT x{conns}, p99 ms", "small_put", "p99_ms", 2),
        (f"{large} PUT, MB/s", "large_put", "mb_s", 0),
        (f"{large} GET, MB/s", "large_get", "mb_s", 0),
    ]
    rows = []
    for label, workload, key, digits in specs:
        r = ratio(results, workload, key)
        rows.append(
            [
                label,
                cell("moto", workload, key, digits),
                cell("gateway", workload, key, digits),
                "-" if r is None else f"{r:.2f}x",
            ]
        )
    rows += [
        [
            "RSS after start, MiB",
            rss("moto", "rss_startup", "tree"),
            rss("gateway", "rss_startup", "tree"),
            "",
        ],
        [
            "RSS idle after the 4 KiB runs, MiB",
            rss("moto", "rss_idle", "tree"),
            rss("gateway", "rss_idle", "tree"),
            "",
        ],
        [
            f"RSS peak during {large}, MiB",
            rss("moto", "rss_large", "peak_tree"),
            rss("gateway", "rss_large", "peak_tree"),
            "",
        ],
    ]
    if args.rss_size:
        rows += [
            [f"{big} PUT, MB/s", "", cell("gateway", "big_put", "mb_s", 0), ""],
            [f"{big} GET, MB/s", "", cell("gateway", "big_get", "mb_s", 0), ""],
            [f"RSS idle before {big}, MiB", "", rss("gateway", "rss_idle_big", "tree"), ""],
            [f"RSS peak during {big}, MiB", "", rss("gateway", "rss_big", "peak_tree"), ""],
            [
                f"upstream moto RSS peak during {big}, MiB",
                "",
                rss("gateway", "rss_big", "upstream_peak"),
                "",
            ],
        ]
    return rows


def other_cpu(res: dict[str, Any]) -> str:
    shares = [r["cpu"]["other_pct"] for r in res.values() if isinstance(r, dict) and "cpu" in r]
    return fmt(max(shares), 0) if shares else "-"


# ---------------------------------------------------------------------------------------------
# Main


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    add_workload_arguments(p, connections=32, large_size="64MiB")
    p.add_argument(
        "--rss-size",
        type=parse_size,
        default=parse_size("1GiB"),
        help="size of the object the gateway's RSS is sampled through; 0 skips it (1GiB)",
    )
    p.add_argument(
        "--rss-file", type=Path, help="random file of --rss-size bytes (created if missing)"
    )
    p.add_argument("--rss-repeat", type=int, default=1, help="transfers of it per direction (1)")
    p.add_argument(
        "--gateway-workers",
        type=int,
        default=1,
        help="gateway processes sharing the port (GATEWAY_WORKERS) (1)",
    )
    p.add_argument(
        "--upstream-option",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="extra setting of the upstream profile, e.g. part_size=64MiB (repeatable)",
    )
    p.add_argument(
        "--gateway-env",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="extra environment for the gateway (repeatable)",
    )
    p.add_argument(
        "--database-url", help="GATEWAY_DATABASE_URL for the gateway (default: embedded)"
    )
    p.add_argument(
        "--start-timeout", type=float, default=120, help="seconds to wait for the gateway (120)"
    )
    add_run_arguments(p)
    args = p.parse_args(argv)
    if min(args.connections, args.threads, args.objects, args.large_repeat, args.rss_repeat) < 1:
        p.error("--connections, --threads, --objects and the repeats must be positive")
    if args.gateway_workers < 1 or args.large_size < 1 or args.rss_size < 0:
        p.error("--gateway-workers and --large-size must be positive, --rss-size not negative")
    if not (0 < args.duration <= 600 and 0 <= args.warmup <= 600 and args.large_timeout > 0):
        p.error("--duration must be in (0, 600], --warmup in [0, 600], --large-timeout > 0")
    if any("=" not in item for item in args.gateway_env + args.upstream_option):
        p.error("--gateway-env and --upstream-option take KEY=VALUE")
    args.upstream_options = {
        k.strip(): yaml.safe_load(v) for k, _, v in (o.partition("=") for o in args.upstream_option)
    }
    args.systems = ["moto", "gateway"]  # what run.py's helpers expect to find
    return args


def make_objects(path: Path, size: int, count: int) -> Objects:
    """``count`` random 4 KiB bodies and their keys, and a random file of ``size`` bytes."""
    ensure_large_file(path, size)
    return Objects(
        small_keys=[f"small/{i:05d}" for i in range(count)],
        put_keys=[f"put/{i:05d}" for i in range(count)],
        bodies=[os.urandom(SMALL_SIZE) for _ in range(count)],
        large_file=path,
        large_size=size,
        large_md5=md5_file(path),
    )


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    for tool in ("wrk", "curl", "moto_server"):
        find_tool(tool)
    started = datetime.now(UTC)
    results: dict[str, Any] = {}

    with run_dir(args) as tmp:
        objs = make_objects(args.large_file or tmp / "large.bin", args.large_size, args.objects)
        big = None
        if args.rss_size:
            big = make_objects(args.rss_file or tmp / "rss.bin", args.rss_size, 0)
        results["moto"] = bench_moto(objs, tmp, args)
        results["gateway"] = bench_gateway(objs, big, tmp, args)

    header = ["figure", "moto", "gateway (upstream: moto)", "gateway / moto"]
    rows = figure_rows(results, args)
    rows.append(
        ["other processes' CPU, max %"]
        + [other_cpu(results[s]) for s in ("moto", "gateway")]
        + [""]
    )
    problems = [f"{s}: {p}" for s, r in results.items() for p in r["problems"]]
    notes = [n for r in results.values() for n in r["notes"]]
    if busy := busy_note(results, args.other_cpu_warn):
        notes.append(busy)
    gw = results["gateway"]
    if "rss_big" in gw and "rss_idle_big" in gw and "rss_idle" in gw:
        peak = gw["rss_big"]["peak_tree"]
        # Against the idle RSS before any large transfer, and just before this one (after the
        # --large-size transfers, whose buffers the allocator may keep).
        gw["rss_big"]["growth"] = peak - gw["rss_idle"]["tree"]
        gw["rss_big"]["growth_from_just_before"] = peak - gw["rss_idle_big"]["tree"]
        notes.append(
            f"gateway RSS peak through the {human_size(args.rss_size)} upload and download:"
            f" {peak / MIB:.1f} MiB, {gw['rss_big']['growth'] / MIB:.1f} MiB above its idle RSS"
            f" after the 4 KiB runs, {gw['rss_big']['growth_from_just_before'] / MIB:.1f} MiB"
            " above its idle RSS just before"
        )

    print()
    print(text_table(header, rows))
    print()
    for p in problems:
        print(f"PROBLEM {p}")
    for n in notes:
        print(f"note: {n}")
    if problems and gw.get("log"):
        print("gateway log lines with warnings or errors:")
        for line in gw["log"]:
            print(f"  {line}")

    given = argv if argv is not None else sys.argv[1:]
    command = " ".join(["python", "bench/upstream.py", *(shlex.quote(a) for a in given)])
    env = environment(args)
    env.pop("nginx", None)
    hidden = ("database_url", "large_file", "rss_file", "tmp_dir", "results_dir", "gateway_env")
    config = run_config(args, (*hidden, "systems", "upstream_option"))
    doc = {
        "started": started.isoformat(timespec="seconds"),
        "command": command,
        "config": config,
        "environment": env,
        "systems": results,
        "ratios": {
            f"{w} {k}": ratio(results, w, k)
            for w, k in (
                ("small_get", "rps"),
                ("small_put", "rps"),
                ("large_put", "mb_s"),
                ("large_get", "mb_s"),
            )
        },
        "problems": problems,
        "notes": notes,
    }
    md = [
        f"# Upstream profile benchmark, {doc['started']}",
        "",
        f"`{command}`",
        "",
        md_table(header, rows),
        "",
        f"CPU used during each measurement, in cores ({os.cpu_count()} = the whole machine);"
        " for the gateway, its Postgres and the upstream moto are its helpers:",
        "",
        md_table(
            ["system", "workload", "server", "helpers", "load generator", "kernel", "other"],
            cpu_rows(results, ["moto", "gateway"]),
        ),
        "",
        "Environment: " + ", ".join(f"{k} {v}" for k, v in env.items()) + ".",
    ]
    write_results(args.results_dir, "upstream-" + started.strftime("%Y%m%dT%H%M%SZ"), doc, md)
    if problems:
        print("RESULT: INVALID (see PROBLEM lines; those figures must not be used)")
        return 1
    print("RESULT: figures valid")
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except BenchError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(1)
