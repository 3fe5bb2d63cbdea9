"""Animated variants benchmark: an animated GIF to an animated WebP, gateway against bare Pillow.

    python bench/animation.py [--renders 15]

The source is made at the start: a 50-frame, 500x500 GIF (a gradient with shapes moving across
it, each frame with its own palette), turned into a 200x200 animated WebP at quality 80 that
keeps every frame and its duration. Three ways, interleaved round by round so that load from
other processes falls on all of them alike:

- bare Pillow in this process: seek each frame, convert, a reducing Lanczos resize, one
  ``save_all`` WebP encode (what a script would write);
- the gateway's renderer in this process (no HTTP, no storage, no process boundary);
- the gateway over HTTP: GET /bench/anim-N.gif?variant=anim200, one at a time, each a distinct
  object, so each request is a render (read, render in a worker, store, record, answer).

Medians are printed and written to bench/results/animation-<time>.{json,md}.
"""

from __future__ import annotations

import argparse
import io
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import requests
from PIL import Image, ImageDraw

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from run import BenchError, publish
from variants import start_gateway, timed_get, upload

from gateway.variants.render import RenderLimits, RenderSpec, render

BUCKET = "bench"
PRESET = "anim200"
FRAMES = 50
SOURCE_SIDE = 500
SIDE = 200
QUALITY = 80
DURATION_MS = 40
GATEWAY_CONFIG = f"""\
buckets:
  {BUCKET}: {{public_read: true, variants: ["*"]}}
variants:
  {PRESET}: {{width: {SIDE}, fit: inside, format: webp, quality: {QUALITY}, animation: keep}}
"""


def animated_gif() -> bytes:
    """FRAMES frames of SOURCE_SIDE px: a gradient, a disc and a bar moving across it."""
    size = (SOURCE_SIDE, SOURCE_SIDE)
    base = Image.merge(
        "RGB",
        (
            Image.linear_gradient("L").resize(size),
            Image.radial_gradient("L").resize(size),
            Image.linear_gradient("L").rotate(90).resize(size),
        ),
    )
    frames = []
    for index in range(FRAMES):
        frame = base.copy()
        draw = ImageDraw.Draw(frame)
        x = index * (SOURCE_SIDE - 120) // FRAMES
        draw.ellipse((x, 60 + x // 3, x + 120, 180 + x // 3), fill=(220, 40, 40))
        draw.rectangle(
            (0, SOURCE_SIDE - 60 - x // 2, SOURCE_SIDE, SOURCE_SIDE - x // 2), fill=(30, 30, 160)
        )
        frames.append(frame)
    output = io.BytesIO()
    frames[0].save(
        output, "GIF", save_all=True, append_images=frames[1:], duration=DURATION_MS, loop=0
    )
    return output.getvalue()


def pillow_animation(data: bytes) -> bytes:
    image = Image.open(io.BytesIO(data))
    frames, durations = [], []
    for index in range(image.n_frames):
        image.seek(index)
        frame = image.convert("RGB")
        frames.append(frame.resize((SIDE, SIDE), Image.Resampling.LANCZOS, reducing_gap=2.0))
        durations.append(image.info.get("duration", 0))
    output = io.BytesIO()
    frames[0].save(
        output,
        "WEBP",
        save_all=True,
        append_images=frames[1:],
        duration=durations,
        loop=image.info.get("loop", 0),
        quality=QUALITY,
        method=4,
    )
    return output.getvalue()


def gateway_renderer(data: bytes) -> bytes:
    spec = RenderSpec(SIDE, None, "inside", "webp", QUALITY, animation="keep")
    return render(data, spec, RenderLimits(64 * 1024**2, 100_000_000)).data


def check(data: bytes) -> None:
    image = Image.open(io.BytesIO(data))
    frames = getattr(image, "n_frames", 1)
    if image.format != "WEBP" or image.size != (SIDE, SIDE) or frames != FRAMES:
        raise BenchError(
            f"expected a {SIDE} px WebP of {FRAMES} frames, got {image.format} "
            f"{image.size} with {frames}"
        )


def timed(function: Any, *args: Any) -> tuple[float, bytes]:
    started = time.perf_counter()
    body = function(*args)
    return time.perf_counter() - started, body


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--renders", type=int, default=15, help="rounds (distinct objects)")
    parser.add_argument("--database-url", default=None)
    args = parser.parse_args()
    data = animated_gif()
    print(f"source: {FRAMES}-frame {SOURCE_SIDE}x{SOURCE_SIDE} GIF, {len(data) / 1024:.0f} KiB")
    for function in (pillow_animation, gateway_renderer):
        check(function(data))  # and a warm-up
    samples: dict[str, list[float]] = {"pillow": [], "renderer": [], "gateway": []}
    with tempfile.TemporaryDirectory(prefix="gateway-animation-bench-") as tmp:
        system = start_gateway(Path(tmp), 1, args, GATEWAY_CONFIG)
        try:
            keys = [f"anim-{index:03d}.gif" for index in range(args.renders + 1)]
            upload(system, keys, [data])
            session = requests.Session()
            url = f"{system.endpoint}/{BUCKET}/{{}}?variant={PRESET}"
            check(timed_get(session, url.format(keys[0]))[1])  # starts the render workers
            for key in keys[1:]:
                elapsed, body = timed(pillow_animation, data)
                samples["pillow"].append(elapsed)
                elapsed, body = timed(gateway_renderer, data)
                samples["renderer"].append(elapsed)
                elapsed, body = timed_get(session, url.format(key))
                check(body)
                samples["gateway"].append(elapsed)
        finally:
            system.stop()
    medians = {name: statistics.median(values) * 1000 for name, values in samples.items()}
    header = [f"{FRAMES}-frame {SOURCE_SIDE} px GIF to {SIDE} px animated WebP", "median ms"]
    rows = [
        ["bare Pillow in process", f"{medians['pillow']:.1f}"],
        ["gateway renderer in process", f"{medians['renderer']:.1f}"],
        ["gateway over HTTP: first request (render)", f"{medians['gateway']:.1f}"],
        ["gateway over HTTP / bare Pillow", f"{medians['gateway'] / medians['pillow']:.2f}x"],
    ]
    record = {"source_bytes": len(data), "samples_s": samples, "medians_ms": medians}
    publish("animation", [(header, rows)], record)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
