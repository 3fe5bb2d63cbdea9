"""Image variants benchmark: first-request latency, steady state, cold renders under load.

    python bench/variants.py [--sources 24] [--thumbor PATH] [--gateway-workers N]

Every figure is for the same kind of picture: ``--sources`` distinct 12-megapixel (4000x3000)
photo-like JPEGs made at the start (smooth gradients under fine noise, so every DCT block
carries detail, as in a photo; each with its own noise and gradient angle), turned into a
320 px wide WebP at quality 80. Each system renders each source once, so medians are over
distinct images, not one image's cache-warm repeats.

1. First request, one at a time, distinct objects (so each is a render, never a hit):
   - floor: the fastest bare-Pillow rendering in this process (JPEG draft, then
     thumbnail() or a reducing resize, WebP encode), and the gateway's own renderer called
     in this process, once per source; no HTTP, no storage, no process boundary;
   - the gateway: GET /bench/img-N.jpg?variant=w320 (read the source, render in a worker,
     store, record, answer);
   - thumbor, when ``--thumbor`` names its executable (it is not a dependency of the project:
     ``python3 -m venv thumbor-venv && thumbor-venv/bin/pip install thumbor``), serving the same
     files with its file loader and no storage or result storage, so each request renders.
2. Steady state: wrk on one rendered variant vs the plain object of the same bytes (anonymous
   GETs of a public bucket): what the variant lookup costs once the variant exists.
3. Cold renders of distinct objects with 2 concurrent clients: the gateway as deployed
   (``--gateway-workers`` processes, each with a render worker per core), the gateway
   as one process with a render pool of all cores, and thumbor with 2 processes.

Results are printed and written to bench/results/variants-<time>.{json,md}.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

import requests
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from run import (  # the sibling runner, imported as a module
    WRK_SCRIPT,
    BenchError,
    GatewaySystem,
    Proc,
    Table,
    find_tool,
    free_port,
    http_status,
    publish,
)

from gateway.variants.render import RenderLimits, RenderSpec, render

BUCKET = "bench"
PRESET = "w320"
WIDTH = 320
QUALITY = 80
SIZE = (4000, 3000)
Source = TypeVar("Source")  # what an in-process renderer reads: bytes, or a file's path
GATEWAY_CONFIG = f"""\
buckets:
  {BUCKET}: {{public_read: true, variants: ["*"]}}
variants:
  {PRESET}: {{width: {WIDTH}, fit: inside, format: webp, quality: {QUALITY}}}
"""
THUMBOR_PATH = f"/unsafe/{WIDTH}x0/filters:format(webp):quality({QUALITY})"
THUMBOR_CONFIG = """\
LOADER = 'thumbor.loaders.file_loader'
FILE_LOADER_ROOT_PATH = {root!r}
STORAGE = 'thumbor.storages.no_storage'
RESULT_STORAGE = None
ALLOW_UNSAFE_URL = True
AUTO_WEBP = False
QUALITY = {quality}
WEBP_QUALITY = {quality}
PRESERVE_EXIF_INFO = False
"""


def photo(index: int) -> bytes:
    """A 12 MP JPEG that decodes like a photo: gradients for structure, noise for detail;
    ``index`` turns its gradients (and the noise is new each time), so no two are alike."""
    angle = 360 * index / 29
    red = Image.linear_gradient("L").rotate(angle).resize(SIZE)
    green = Image.radial_gradient("L").resize(SIZE)
    blue = Image.linear_gradient("L").rotate(90 + angle).resize(SIZE)
    base = Image.merge("RGB", (red, green, blue))
    # Fine grain (what the decoder pays for) and coarser texture (what survives the downscale,
    # so the variant is a thumbnail of some kilobytes, not a flat gradient).
    grain = Image.merge("RGB", [Image.effect_noise(SIZE, 48) for _ in range(3)])
    coarse = [Image.effect_noise((SIZE[0] // 16, SIZE[1] // 16), 64) for _ in range(3)]
    texture = Image.merge("RGB", [band.resize(SIZE, Image.Resampling.BICUBIC) for band in coarse])
    image = Image.blend(Image.blend(base, texture, 0.4), grain, 0.25)
    output = io.BytesIO()
    image.save(output, "JPEG", quality=90)
    return output.getvalue()


def check_webp(data: bytes) -> None:
    image = Image.open(io.BytesIO(data))
    if image.format != "WEBP" or image.size[0] != WIDTH:
        raise BenchError(f"expected a {WIDTH} px wide WebP, got {image.format} {image.size}")


def stats(samples: list[float]) -> dict[str, float]:
    ordered = sorted(samples)
    return {
        "n": len(ordered),
        "median_ms": statistics.median(ordered) * 1000,
        "min_ms": ordered[0] * 1000,
        "p90_ms": ordered[min(len(ordered) - 1, round(0.9 * (len(ordered) - 1)))] * 1000,
    }


# --- the floor ------------------------------------------------------------------------------


def _target(image: Image.Image) -> tuple[int, int]:
    return WIDTH, round(image.size[1] * WIDTH / image.size[0])


def pillow_thumbnail(data: bytes) -> bytes:
    image = Image.open(io.BytesIO(data))
    image.draft("RGB", _target(image))
    image.thumbnail(_target(image))
    output = io.BytesIO()
    image.save(output, "WEBP", quality=QUALITY)
    return output.getvalue()


def pillow_resize(data: bytes) -> bytes:
    image = Image.open(io.BytesIO(data))
    target = _target(image)
    image.draft("RGB", target)
    image = image.resize(target, Image.Resampling.LANCZOS, reducing_gap=2.0)
    output = io.BytesIO()
    image.save(output, "WEBP", quality=QUALITY, method=4)
    return output.getvalue()


def gateway_renderer(data: bytes) -> bytes:
    spec = RenderSpec(WIDTH, None, "inside", "webp", QUALITY)
    return render(data, spec, RenderLimits(64 * 1024**2, 100_000_000)).data


def time_in_process(
    function: Callable[[Source], bytes],
    sources: list[Source],
    check: Callable[[bytes], None] = check_webp,
) -> dict[str, Any]:
    """Each source rendered once by ``function``, after a warm-up on the first."""
    check(function(sources[0]))
    samples = []
    for data in sources:
        started = time.perf_counter()
        function(data)
        samples.append(time.perf_counter() - started)
    return stats(samples)


# --- the systems ----------------------------------------------------------------------------


class Thumbor:
    def __init__(
        self, workdir: Path, binary: str, root: Path, processes: int, config: str | None = None
    ) -> None:
        self.port = free_port()
        self.endpoint = f"http://127.0.0.1:{self.port}"
        conf = workdir / f"thumbor-{processes}.conf"
        conf.write_text(config or THUMBOR_CONFIG.format(root=str(root), quality=QUALITY))
        argv = [binary, "-p", str(self.port), "-i", "127.0.0.1", "-c", str(conf)]
        argv += ["--processes", str(processes), "-l", "warning"]
        self.proc = Proc("thumbor", argv, workdir / f"thumbor-{processes}.log")
        deadline = time.monotonic() + 60
        while http_status(self.port, "/healthcheck") != 200:
            if not self.proc.alive() or time.monotonic() > deadline:
                raise BenchError(f"thumbor did not start:\n{self.proc.log_tail()}")
            time.sleep(0.25)

    def url(self, name: str) -> str:
        return f"{self.endpoint}{THUMBOR_PATH}/{name}"

    def stop(self) -> None:
        self.proc.stop()


def start_gateway(
    workdir: Path, workers: int, args: argparse.Namespace, text: str = GATEWAY_CONFIG
) -> GatewaySystem:
    config = workdir / "gateway.yaml"
    config.write_text(text)
    # GatewaySystem reads these runner options.
    options = argparse.Namespace(
        gateway_workers=workers,
        gateway_env=[f"GATEWAY_CONFIG={config}"],
        database_url=args.database_url,
        start_timeout=120,
    )
    system = GatewaySystem(workdir, options)
    system.start()
    return system


def gateway_url(system: GatewaySystem, key: str) -> str:
    return f"{system.endpoint}/{BUCKET}/{key}?variant={PRESET}"


def upload(system: GatewaySystem, keys: list[str], sources: list[bytes]) -> None:
    """Each key gets the next source in turn."""

    def put(index: int) -> None:
        body = sources[index % len(sources)]
        system.client.put_object(Bucket=BUCKET, Key=keys[index], Body=body)

    with ThreadPoolExecutor(4) as pool:
        list(pool.map(put, range(len(keys))))


def timed_get(session: requests.Session, url: str) -> tuple[float, bytes]:
    started = time.perf_counter()
    response = session.get(url, timeout=120)
    elapsed = time.perf_counter() - started
    if response.status_code != 200:
        raise BenchError(f"GET {url}: {response.status_code} {response.text[:200]}")
    return elapsed, response.content


def first_requests(urls: list[str], check: Callable[[bytes], None] = check_webp) -> dict[str, Any]:
    """One request at a time, each for a variant nobody asked for before."""
    session = requests.Session()
    samples = []
    for url in urls:
        elapsed, body = timed_get(session, url)
        check(body)
        samples.append(elapsed)
    return stats(samples)


def cold_concurrent(urls: list[str], clients: int) -> dict[str, Any]:
    """``clients`` clients, each asking for the next never-rendered variant in turn."""
    pending = list(reversed(urls))
    lock = threading.Lock()
    samples: list[float] = []

    def client() -> None:
        session = requests.Session()
        while True:
            with lock:
                if not pending:
                    return
                url = pending.pop()
            elapsed, body = timed_get(session, url)
            check_webp(body)
            with lock:
                samples.append(elapsed)

    started = time.perf_counter()
    with ThreadPoolExecutor(clients) as pool:
        for future in [pool.submit(client) for _ in range(clients)]:
            future.result()
    wall = time.perf_counter() - started
    return stats(samples) | {"renders_per_s": len(urls) / wall, "clients": clients}


def wrk(endpoint: str, path: str, length: int, workdir: Path, args: argparse.Namespace) -> dict:
    paths = workdir / "wrk-paths.txt"
    paths.write_text(path + "\n")
    argv = [find_tool("wrk"), "-t2", f"-c{args.connections}", "--timeout", "30s"]
    argv += ["-s", str(WRK_SCRIPT), endpoint, "--", str(paths), "GET", "0", str(length), "2"]
    results = []
    for seconds in (2, args.duration):  # a warm-up, then the measured run
        out = subprocess.run(
            [*argv[:1], f"-d{seconds:g}s", *argv[1:]], capture_output=True, text=True
        )
        line = next((ln for ln in out.stdout.splitlines() if ln.startswith("BENCH_RESULT ")), "")
        if out.returncode != 0 or not line:
            raise BenchError(f"wrk failed: {out.stderr or out.stdout}")
        results.append(json.loads(line.split(" ", 1)[1]))
    raw = results[-1]
    if raw["bad_status"] or raw["bad_length"] or raw["requests"] == 0:
        raise BenchError(f"wrk saw bad answers: {raw['bad_status']} / {raw['bad_length']}")
    return {
        "rps": raw["requests"] / (raw["duration_us"] / 1e6),
        "p50_ms": raw["latency_us"]["percentiles"]["50"] / 1000,
        "p99_ms": raw["latency_us"]["percentiles"]["99"] / 1000,
    }


# --- the run --------------------------------------------------------------------------------


def bench_gateway(
    workdir: Path, workers: int, sources: list[bytes], args: argparse.Namespace, steady: bool
) -> dict[str, Any]:
    results: dict[str, Any] = {"workers": workers}
    system = start_gateway(workdir, workers, args)
    try:
        first = [f"first/img-{index:03d}.jpg" for index in range(len(sources))]
        cold = [f"cold/img-{index:03d}.jpg" for index in range(args.cold)]
        upload(system, first, sources)
        upload(system, cold, sources)
        if steady:
            results["first"] = first_requests([gateway_url(system, key) for key in first])
            hit = first_requests([gateway_url(system, key) for key in first])
            results["hit"] = hit
            session = requests.Session()
            _, body = timed_get(session, gateway_url(system, first[0]))
            system.client.put_object(Bucket=BUCKET, Key="plain/variant.webp", Body=body)
            variant_path = f"/{BUCKET}/{first[0]}?variant={PRESET}"
            plain_path = f"/{BUCKET}/plain/variant.webp"
            results["steady_variant"] = wrk(system.endpoint, variant_path, len(body), workdir, args)
            results["steady_plain"] = wrk(system.endpoint, plain_path, len(body), workdir, args)
            results["variant_bytes"] = len(body)
        results["cold"] = cold_concurrent([gateway_url(system, key) for key in cold], 2)
    finally:
        system.stop()
    return results


def bench_thumbor(workdir: Path, sources: list[bytes], args: argparse.Namespace) -> dict[str, Any]:
    root = workdir / "thumbor-images"
    root.mkdir()
    names = [f"img-{index:03d}.jpg" for index in range(max(len(sources), args.cold))]
    for index, name in enumerate(names):
        (root / name).write_bytes(sources[index % len(sources)])
    results: dict[str, Any] = {}
    single = Thumbor(workdir, args.thumbor, root, 1)
    try:
        results["first"] = first_requests([single.url(name) for name in names[: len(sources)]])
    finally:
        single.stop()
    double = Thumbor(workdir, args.thumbor, root, 2)
    try:
        results["cold"] = cold_concurrent([double.url(name) for name in names[: args.cold]], 2)
    finally:
        double.stop()
    return results


def versions(thumbor: str | None, modules: dict[str, str] | None = None) -> dict[str, str]:
    """Pillow's version here and the machine's cores, then, when ``thumbor`` names its
    executable, the version of each of ``modules`` (label: module) in its virtual environment."""
    import PIL

    found = {"pillow (gateway)": PIL.__version__, "cpus": str(os.cpu_count())}
    modules = modules or {"pillow (thumbor)": "PIL", "thumbor": "thumbor"}
    if thumbor:
        python = Path(thumbor).parent / "python"
        code = (
            "import importlib, sys\n"
            "print(*(importlib.import_module(m).__version__ for m in sys.argv[1:]))"
        )
        words = subprocess.run(
            [str(python), "-c", code, *modules.values()], capture_output=True, text=True
        ).stdout.split()
        if len(words) == len(modules):
            found |= dict(zip(modules, words, strict=True))
    return found


def tables(results: dict[str, Any]) -> list[Table]:
    """(header, rows) of each table: first requests, steady state, cold renders."""

    def ms(figure: dict[str, Any] | None) -> list[str]:
        if figure is None:
            return ["-", "-"]
        return [f"{figure['median_ms']:.1f}", f"{figure['p90_ms']:.1f}"]

    floor, thumbor = results["floor"], results.get("thumbor") or {}
    deployed, single = results["gateway"], results["gateway_one_process"]
    first = [
        ["bare Pillow in process: draft + thumbnail()", *ms(floor["pillow_thumbnail"])],
        ["bare Pillow in process: draft + reducing Lanczos", *ms(floor["pillow_resize"])],
        ["gateway renderer in process", *ms(floor["gateway_renderer"])],
        ["gateway over HTTP: first request (render)", *ms(deployed["first"])],
        ["thumbor over HTTP: first request (render)", *ms(thumbor.get("first"))],
        ["gateway over HTTP: later request (hit)", *ms(deployed["hit"])],
    ]
    steady = [
        [
            label,
            f"{figure['rps']:.0f}",
            f"{figure['p50_ms']:.2f}",
            f"{figure['p99_ms']:.2f}",
        ]
        for label, figure in (
            (f"variant ({deployed['variant_bytes']} bytes)", deployed["steady_variant"]),
            ("plain object, same bytes", deployed["steady_plain"]),
        )
    ]
    cold = []
    for label, figure in (
        (f"gateway, {deployed['workers']} processes (as deployed)", deployed["cold"]),
        ("gateway, 1 process", single["cold"]),
        ("thumbor, 2 processes", thumbor.get("cold")),
    ):
        rate = f"{figure['renders_per_s']:.2f}" if figure else "-"
        cold.append([label, rate, *ms(figure)])
    floor_ms = min(floor["pillow_thumbnail"]["median_ms"], floor["pillow_resize"]["median_ms"])
    first_ms = deployed["first"]["median_ms"]
    ratios = [
        ["gateway first request / bare-Pillow floor", f"{first_ms / floor_ms:.2f}x", "<= 1.1x"]
    ]
    if thumbor.get("first"):
        ratio = first_ms / thumbor["first"]["median_ms"]
        ratios.append(["gateway first request / thumbor's", f"{ratio:.2f}x", "<= 1.0x"])
    return [
        (
            [f"320 px WebP of a 12 MP JPEG, {results['sources']} sources", "median ms", "p90 ms"],
            first,
        ),
        (["first request (medians)", "ratio", "goal"], ratios),
        (
            [
                f"steady state, wrk {results['connections']} connections",
                "req/s",
                "p50 ms",
                "p99 ms",
            ],
            steady,
        ),
        (["cold renders, 2 concurrent clients", "renders/s", "median ms", "p90 ms"], cold),
    ]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--sources", type=int, default=24, help="distinct images: first requests per system"
    )
    parser.add_argument("--cold", type=int, default=20, help="objects of the concurrent run")
    parser.add_argument("--duration", type=float, default=10, help="seconds of each wrk run")
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument("--gateway-workers", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--database-url", default=None)
    parser.add_argument("--thumbor", help="thumbor executable (in its own venv); else skipped")
    args = parser.parse_args()
    sources = [photo(index) for index in range(args.sources)]
    mean_mib = statistics.mean(len(data) for data in sources) / 1024**2
    print(f"sources: {len(sources)} {SIZE[0]}x{SIZE[1]} JPEGs, {mean_mib:.1f} MiB each", flush=True)
    results: dict[str, Any] = {
        "sources": len(sources),
        "source_bytes": round(statistics.mean(len(data) for data in sources)),
        "connections": args.connections,
        "versions": versions(args.thumbor),
    }
    results["floor"] = {
        name: time_in_process(function, sources)
        for name, function in (
            ("pillow_thumbnail", pillow_thumbnail),
            ("pillow_resize", pillow_resize),
            ("gateway_renderer", gateway_renderer),
        )
    }
    print("floor measured", flush=True)
    with tempfile.TemporaryDirectory(prefix="gateway-variants-bench-") as tmp:
        workdir = Path(tmp)
        for name, workers, steady in (
            ("gateway", args.gateway_workers, True),
            ("gateway_one_process", 1, False),
        ):
            run_dir = workdir / name
            run_dir.mkdir()
            results[name] = bench_gateway(run_dir, workers, sources, args, steady)
            print(f"{name} measured", flush=True)
        if args.thumbor:
            results["thumbor"] = bench_thumbor(workdir, sources, args)
            print("thumbor measured", flush=True)
        else:
            print("thumbor skipped (no --thumbor)", flush=True)
    print(json.dumps(results["versions"]))
    publish("variants", tables(results), results)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
