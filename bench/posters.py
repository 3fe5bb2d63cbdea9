"""Video posters benchmark: the first request of a poster against the floor of doing it by hand.

    python bench/posters.py [--renders 15] [--thumbor PATH] [--gateway-workers N]

The source: a 1080p, 10 s, 30 fps H.264 MP4 made by ffmpeg at the start (testsrc2, so every
frame has detail; the encoder's default GOP, so the frame at 1 s is decoded from the keyframe
at 0, as in most real videos). Every figure is a 640 px wide JPEG at quality 80 of its frame
at 1 s, one request at a time:

- floor: ``ffmpeg -ss 1 -i src -frames:v 1`` to PNG (a process started per run, as the gateway
  does), then the same Pillow resize (reducing Lanczos) and JPEG encode, in this process;
- the gateway: GET /bench/clip-N.mp4?variant=poster on distinct objects of the same bytes, so
  each is a first render (read the blob in place, ffmpeg in a render worker, Pillow, store,
  record, answer);
- thumbor with thumbor-video-engine's ``still()`` filter, when ``--thumbor`` names a thumbor
  executable in a virtualenv that has the engine (``pip install thumbor
  thumbor-video-engine``); it is no dependency of the project.

Results are printed and written to bench/results/posters-<time>.{json,md}.
"""

from __future__ import annotations

import argparse
import io
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from run import BenchError, GatewaySystem, Table, publish
from variants import (
    THUMBOR_CONFIG,
    Thumbor,
    first_requests,
    start_gateway,
    time_in_process,
    upload,
)

BUCKET = "bench"
PRESET = "poster"
WIDTH = 640
QUALITY = 80
AT_SECONDS = 1
GATEWAY_CONFIG = f"""\
buckets:
  {BUCKET}: {{public_read: true, variants: ["*"]}}
variants:
  {PRESET}:
    width: {WIDTH}
    fit: inside
    format: jpeg
    quality: {QUALITY}
    frame: {{at: {AT_SECONDS}s}}
"""
THUMBOR_PATH = f"/unsafe/{WIDTH}x0/filters:still({AT_SECONDS}):format(jpeg):quality({QUALITY})"
# variants.py's thumbor (file loader, no storage), with thumbor-video-engine's engine and filter.
THUMBOR_VIDEO_CONFIG = (
    THUMBOR_CONFIG
    + """\
from thumbor.filters import BUILTIN_FILTERS

ENGINE = 'thumbor_video_engine.engines.video'
APP_CLASS = 'thumbor_video_engine.app.ThumborServiceApp'
FILTERS = BUILTIN_FILTERS + ['thumbor_video_engine.filters.still']
FFMPEG_PATH = {ffmpeg!r}
FFPROBE_PATH = {ffprobe!r}
"""
)


def make_video(path: Path) -> bytes:
    subprocess.run(
        ["ffmpeg", "-nostdin", "-hide_banner", "-loglevel", "error", "-y",
         "-f", "lavfi", "-i", "testsrc2=s=1920x1080:r=30:d=10",
         "-c:v", "libx264", "-preset", "veryfast", "-pix_fmt", "yuv420p", str(path)],
        check=True,
    )  # fmt: skip
    return path.read_bytes()


def check_jpeg(data: bytes) -> None:
    image = Image.open(io.BytesIO(data))
    if image.format != "JPEG" or image.size != (WIDTH, 360):
        raise BenchError(f"expected a {WIDTH}x360 JPEG, got {image.format} {image.size}")


def floor(source: Path) -> bytes:
    """By hand: ffmpeg's frame at 1 s as PNG, then Pillow's resize and encode."""
    png = subprocess.run(
        ["ffmpeg", "-nostdin", "-hide_banner", "-loglevel", "error", "-ss", str(AT_SECONDS),
         "-i", str(source), "-frames:v", "1", "-f", "image2pipe", "-c:v", "png", "pipe:1"],
        check=True,
        capture_output=True,
    ).stdout  # fmt: skip
    image = Image.open(io.BytesIO(png)).convert("RGB")
    target = (WIDTH, round(image.size[1] * WIDTH / image.size[0]))
    image = image.resize(target, Image.Resampling.LANCZOS, reducing_gap=2.0)
    output = io.BytesIO()
    image.save(output, "JPEG", quality=QUALITY, optimize=True, progressive=True)
    return output.getvalue()


def gateway_url(system: GatewaySystem, key: str) -> str:
    return f"{system.endpoint}/{BUCKET}/{key}?variant={PRESET}"


def bench_gateway(workdir: Path, data: bytes, args: argparse.Namespace) -> dict[str, Any]:
    system = start_gateway(workdir, args.gateway_workers, args, GATEWAY_CONFIG)
    try:
        keys = [f"first/clip-{index:03d}.mp4" for index in range(args.renders + 1)]
        upload(system, keys, [data])
        # One poster first, so no measured request pays for a worker's first ffmpeg start.
        first_requests([gateway_url(system, keys[0])], check_jpeg)
        return first_requests([gateway_url(system, key) for key in keys[1:]], check_jpeg)
    finally:
        system.stop()


def bench_thumbor(workdir: Path, data: bytes, args: argparse.Namespace) -> dict[str, Any] | str:
    root = workdir / "thumbor-videos"
    root.mkdir()
    names = [f"clip-{index:03d}.mp4" for index in range(args.renders + 1)]
    for name in names:
        (root / name).write_bytes(data)
    config = THUMBOR_VIDEO_CONFIG.format(
        root=str(root),
        quality=QUALITY,
        ffmpeg=shutil.which("ffmpeg"),
        ffprobe=shutil.which("ffprobe"),
    )
    try:
        server = Thumbor(workdir, args.thumbor, root, 1, config=config)
    except BenchError as exc:
        return f"did not start: {exc}"
    try:
        url = f"{server.endpoint}{THUMBOR_PATH}"
        first_requests([f"{url}/{names[0]}"], check_jpeg)
        return first_requests([f"{url}/{name}" for name in names[1:]], check_jpeg)
    except BenchError as exc:
        return f"failed: {exc}"
    finally:
        server.stop()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--renders", type=int, default=15, help="first requests per system")
    parser.add_argument("--floor-runs", type=int, default=15)
    parser.add_argument("--gateway-workers", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--database-url", default=None)
    parser.add_argument("--thumbor", help="thumbor executable (with thumbor-video-engine)")
    args = parser.parse_args()
    results: dict[str, Any] = {"renders": args.renders}
    with tempfile.TemporaryDirectory(prefix="gateway-posters-bench-") as tmp:
        workdir = Path(tmp)
        source = workdir / "clip.mp4"
        data = make_video(source)
        print(f"source: 1920x1080 10 s H.264 MP4, {len(data) / 1024**2:.1f} MiB", flush=True)
        results["source_bytes"] = len(data)
        results["floor"] = time_in_process(floor, [source] * args.floor_runs, check_jpeg)
        print("floor measured", flush=True)
        gateway_dir = workdir / "gateway"
        gateway_dir.mkdir()
        results["gateway"] = bench_gateway(gateway_dir, data, args)
        print("gateway measured", flush=True)
        if args.thumbor:
            results["thumbor"] = bench_thumbor(workdir, data, args)
            print("thumbor measured", flush=True)
    publish("posters", tables(results), results)
    return 0


def tables(results: dict[str, Any]) -> list[Table]:
    def ms(figure: dict[str, Any] | str | None) -> list[str]:
        if not isinstance(figure, dict):
            return [figure or "not run", "-"]
        return [f"{figure['median_ms']:.1f}", f"{figure['p90_ms']:.1f}"]

    floor_ms = results["floor"]["median_ms"]
    gateway_ms = results["gateway"]["median_ms"]
    rows = [
        ["floor: ffmpeg -ss 1 -i src -frames:v 1 (PNG) + Pillow", *ms(results["floor"])],
        ["gateway over HTTP: first request (render)", *ms(results["gateway"])],
        ["thumbor-video-engine over HTTP: first request", *ms(results.get("thumbor"))],
    ]
    ratio = gateway_ms / floor_ms
    verdict = "PASS" if ratio <= 1.2 else "FAIL"
    target = [["gateway first request / floor", f"{ratio:.2f}x", "<= 1.2x", verdict]]
    thumbor = results.get("thumbor")
    if isinstance(thumbor, dict):
        versus = gateway_ms / thumbor["median_ms"]
        target.append(["gateway first request / thumbor's", f"{versus:.2f}x", "-", "-"])
    return [
        (["640 px JPEG of the frame at 1 s, 1080p H.264", "median ms", "p90 ms"], rows),
        (["target", "value", "goal", "result"], target),
    ]


if __name__ == "__main__":
    raise SystemExit(main())
