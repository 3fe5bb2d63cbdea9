"""Gravity benchmark: what a smart cover crop costs next to a centre crop.

    python bench/gravity.py [--sources 20] [--thumbor PATH]

Every figure is a 400x400 WebP (quality 80, fit cover) of a 12-megapixel (4000x3000) photo-like
JPEG (bench/variants.py's picture, with a skin-toned subject somewhere off centre), one source
per request, never the same source twice for one gravity, so each request is a render:

1. In process, no HTTP: the gateway's renderer (gateway.variants.render.render) on each source
   with gravity centre, attention and entropy in turn, medians over the sources.
2. Through one gateway process: the first GET /bench/src-N.jpg?variant=sq-GRAVITY of each
   source (read, render in a worker, store, answer), in the same rotation.
3. thumbor, when ``--thumbor`` names its executable (a virtual environment of its own with
   ``pip install thumbor opencv-python-headless``): /unsafe/400x400/smart/... (OpenCV face
   detection, then feature detection when no face is found) against the same URL without
   ``smart`` (a centre crop), file loader, no storage or result storage.

The goal: attention at most 1.3x the centre crop's median time. Results are printed and
written to bench/results/gravity-<time>.{json,md}.
"""

from __future__ import annotations

import argparse
import io
import json
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import requests
from PIL import Image, ImageDraw

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from run import BenchError, Table, publish
from variants import (
    SIZE,
    THUMBOR_CONFIG,
    Thumbor,
    photo,
    start_gateway,
    stats,
    timed_get,
    versions,
)

from gateway.variants.gravity import anchor
from gateway.variants.render import RenderLimits, RenderSpec, render

BUCKET = "bench"
SIDE = 400
QUALITY = 80
GRAVITIES = ("centre", "attention", "entropy")
GATEWAY_CONFIG = (
    f"buckets:\n  {BUCKET}: {{public_read: true, variants: ['*']}}\nvariants:\n"
    + "".join(
        f"  sq-{gravity}: {{width: {SIDE}, height: {SIDE}, fit: cover, format: webp, "
        f"quality: {QUALITY}, gravity: {gravity}}}\n"
        for gravity in GRAVITIES
    )
)
# variants.py's thumbor (file loader, no storage), with smart crops' detectors.
THUMBOR_SMART_CONFIG = (
    THUMBOR_CONFIG
    + "DETECTORS = ['thumbor.detectors.face_detector', 'thumbor.detectors.feature_detector']\n"
)
LIMITS = RenderLimits(64 * 1024**2, 100_000_000)
THUMBOR_MODULES = {"pillow (thumbor)": "PIL", "opencv": "cv2", "thumbor": "thumbor"}
# thumbor's crops: what each gateway gravity is compared with.
THUMBOR_PATHS = {
    "centre": f"/unsafe/{SIDE}x{SIDE}/filters:format(webp):quality({QUALITY})",
    "smart": f"/unsafe/{SIDE}x{SIDE}/smart/filters:format(webp):quality({QUALITY})",
}


def source(index: int) -> bytes:
    """bench/variants.py's photo with a skin-toned oval at a place of its own."""
    image = Image.open(io.BytesIO(photo(index)))
    x = 300 + (index * 613) % (SIZE[0] - 1400)
    y = 200 + (index * 389) % (SIZE[1] - 1200)
    ImageDraw.Draw(image).ellipse((x, y, x + 800, y + 1000), fill=(224, 172, 140))
    output = io.BytesIO()
    image.save(output, "JPEG", quality=90)
    return output.getvalue()


def check_square(data: bytes) -> None:
    image = Image.open(io.BytesIO(data))
    if image.format != "WEBP" or image.size != (SIDE, SIDE):
        raise BenchError(f"expected a {SIDE}x{SIDE} WebP, got {image.format} {image.size}")


def rotated(kinds: Sequence[str], index: int) -> list[str]:
    """``kinds`` starting at the index-th, so that no kind always runs first (and meets a colder
    cache)."""
    start = index % len(kinds)
    return [*kinds[start:], *kinds[:start]]


def in_process(sources: list[bytes]) -> dict[str, Any]:
    specs = {
        gravity: RenderSpec(SIDE, SIDE, "cover", "webp", QUALITY, gravity=gravity)
        for gravity in GRAVITIES
    }
    check_square(render(sources[0], specs["centre"], LIMITS).data)  # and a warm-up
    samples: dict[str, list[float]] = {gravity: [] for gravity in GRAVITIES}
    for index, data in enumerate(sources):
        for gravity in rotated(GRAVITIES, index):
            started = time.perf_counter()
            render(data, specs[gravity], LIMITS)
            samples[gravity].append(time.perf_counter() - started)
    figures = {gravity: stats(values) for gravity, values in samples.items()}
    return figures | {
        f"{gravity}_analysis": analysis(sources, gravity) for gravity in GRAVITIES[1:]
    }


def analysis(sources: list[bytes], gravity: str) -> dict[str, Any]:
    """The search alone (gravity.anchor), on the image a render has in hand when it runs: the
    JPEG drafted for the output, turned and decoded."""
    samples = []
    for data in sources:
        image = Image.open(io.BytesIO(data))
        image.draft("RGB", (round(SIDE * SIZE[0] / SIZE[1]), SIDE))
        image.load()
        window = (SIZE[1] / SIZE[0], 1.0)
        started = time.perf_counter()
        anchor(image, gravity, window)  # type: ignore[arg-type]
        samples.append(time.perf_counter() - started)
    return stats(samples)


def through_gateway(workdir: Path, sources: list[bytes], args: argparse.Namespace) -> dict:
    system = start_gateway(workdir, 1, args, GATEWAY_CONFIG)
    try:
        keys = [f"src-{index:03d}.jpg" for index in range(len(sources))]
        for key, data in zip(keys, sources, strict=True):
            system.client.put_object(Bucket=BUCKET, Key=key, Body=data)
        session = requests.Session()
        # A warm-up render of another object, so no worker start is measured.
        system.client.put_object(Bucket=BUCKET, Key="warm.jpg", Body=sources[0])
        timed_get(session, f"{system.endpoint}/{BUCKET}/warm.jpg?variant=sq-centre")
        samples: dict[str, list[float]] = {gravity: [] for gravity in GRAVITIES}
        for index, key in enumerate(keys):
            for gravity in rotated(GRAVITIES, index):
                url = f"{system.endpoint}/{BUCKET}/{key}?variant=sq-{gravity}"
                elapsed, body = timed_get(session, url)
                check_square(body)
                samples[gravity].append(elapsed)
    finally:
        system.stop()
    return {gravity: stats(values) for gravity, values in samples.items()}


def through_thumbor(workdir: Path, sources: list[bytes], binary: str) -> dict[str, Any]:
    root = workdir / "thumbor-images"
    root.mkdir()
    names = [f"src-{index:03d}.jpg" for index in range(len(sources))]
    for name, data in zip(names, sources, strict=True):
        (root / name).write_bytes(data)
    config = THUMBOR_SMART_CONFIG.format(root=str(root), quality=QUALITY)
    server = Thumbor(workdir, binary, root, 1, config=config)
    try:
        session = requests.Session()
        endpoint = server.endpoint
        for path in THUMBOR_PATHS.values():  # warm-up: imports, the cascade file
            timed_get(session, f"{endpoint}{path}/{names[0]}")
        samples: dict[str, list[float]] = {kind: [] for kind in THUMBOR_PATHS}
        for index, name in enumerate(names):
            for kind in rotated(list(THUMBOR_PATHS), index):
                elapsed, body = timed_get(session, f"{endpoint}{THUMBOR_PATHS[kind]}/{name}")
                check_square(body)
                samples[kind].append(elapsed)
    finally:
        server.stop()
    return {kind: stats(values) for kind, values in samples.items()}


def tables(results: dict[str, Any]) -> list[Table]:
    def row(label: str, figure: dict[str, Any], base: dict[str, Any]) -> list[str]:
        ratio = figure["median_ms"] / base["median_ms"]
        return [label, f"{figure['median_ms']:.1f}", f"{figure['p90_ms']:.1f}", f"{ratio:.2f}x"]

    rows = []
    for system, label in (
        ("in_process", "gateway renderer in process"),
        ("gateway", "gateway over HTTP"),
    ):
        figures = results[system]
        for gravity in GRAVITIES:
            rows.append(row(f"{label}: {gravity}", figures[gravity], figures["centre"]))
    for gravity in GRAVITIES[1:]:
        figure = results["in_process"][f"{gravity}_analysis"]
        rows.append(
            [
                f"{gravity}: the search alone",
                f"{figure['median_ms']:.1f}",
                f"{figure['p90_ms']:.1f}",
                "-",
            ]
        )
    thumbor = results.get("thumbor")
    if thumbor:
        rows.append(row("thumbor over HTTP: centre", thumbor["centre"], thumbor["centre"]))
        rows.append(row("thumbor over HTTP: smart (OpenCV)", thumbor["smart"], thumbor["centre"]))
    attention = results["gateway"]["attention"]["median_ms"]
    centre = results["gateway"]["centre"]["median_ms"]
    bare = (
        results["in_process"]["attention"]["median_ms"]
        / results["in_process"]["centre"]["median_ms"]
    )
    goal = [
        [
            "attention / centre, over HTTP",
            f"{attention / centre:.2f}x",
            "<= 1.3x",
            "PASS" if attention / centre <= 1.3 else "FAIL",
        ],
        [
            "attention / centre, in process",
            f"{bare:.2f}x",
            "<= 1.3x",
            "PASS" if bare <= 1.3 else "FAIL",
        ],
    ]
    if thumbor:
        smart = thumbor["smart"]["median_ms"]
        goal.append(
            ["gateway attention / thumbor smart, over HTTP", f"{attention / smart:.2f}x", "-", "-"]
        )
    n = results["sources"]
    return [
        (
            [
                f"{SIDE}x{SIDE} WebP cover crop of {n} 12 MP JPEGs",
                "median ms",
                "p90 ms",
                "vs centre",
            ],
            rows,
        ),
        (["target", "value", "goal", "result"], goal),
    ]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sources", type=int, default=20, help="distinct 12 MP JPEGs")
    parser.add_argument("--database-url", default=None)
    parser.add_argument("--thumbor", help="thumbor executable (in its own venv); else skipped")
    args = parser.parse_args()
    sources = [source(index) for index in range(args.sources)]
    mib = sum(map(len, sources)) / len(sources) / 1024**2
    print(f"sources: {len(sources)} x {SIZE[0]}x{SIZE[1]} JPEG, {mib:.1f} MiB each", flush=True)
    results: dict[str, Any] = {
        "sources": len(sources),
        "versions": versions(args.thumbor, THUMBOR_MODULES),
    }
    results["in_process"] = in_process(sources)
    print("in process measured", flush=True)
    with tempfile.TemporaryDirectory(prefix="gateway-gravity-bench-") as tmp:
        workdir = Path(tmp)
        (workdir / "gateway").mkdir()
        results["gateway"] = through_gateway(workdir / "gateway", sources, args)
        print("gateway measured", flush=True)
        if args.thumbor:
            results["thumbor"] = through_thumbor(workdir, sources, args.thumbor)
            print("thumbor measured", flush=True)
        else:
            print("thumbor skipped (no --thumbor)", flush=True)
    print(json.dumps(results["versions"]))
    publish("gravity", tables(results), results)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
