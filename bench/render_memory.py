"""Render-worker memory: peak RSS of one worker rendering sources made to cost memory.

    python bench/render_memory.py [--cases png-10000x10000,...] [--timeout 60]

Each case gets a fresh render pool of one worker (the gateway's own RenderPool, with the
limits of a default configuration), renders the source once as a 320x320 WebP cover thumbnail,
and then asks the worker for its peak resident set (``getrusage(RUSAGE_SELF).ru_maxrss``,
which counts the whole life of that process: start-up, the render, whatever it left). The
figure is the worst a single render of that source makes one worker hold; a gateway has one
worker per core.

Sources, made on the spot (tests/unit/variants/images.py):

- png-10000x10000: 10000x10000 RGB, all zero, some 290 KB compressed; exactly the default
  pixel limit (100,000,000);
- png16-10000x10000: the same as a 16-bit grey PNG;
- png-1x100000000: one pixel wide, 100,000,000 rows, 8-bit grey;
- png-100000000x1: one row of 100,000,000 RGB pixels;
- png-6000x4000: a large photo-sized RGB PNG, for comparison (a render that must succeed).

Prints a table (case, outcome, seconds, peak RSS in MiB) and writes it to
bench/results/render-memory-<time>.md.
"""

from __future__ import annotations

import argparse
import asyncio
import resource
import sys
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from gateway.config import LimitsConfig  # noqa: E402
from gateway.variants.pool import RenderPool  # noqa: E402
from gateway.variants.render import RenderError, RenderSpec  # noqa: E402
from tests.unit.variants import images  # noqa: E402

CASES: dict[str, Callable[[], bytes]] = {
    "png-10000x10000": lambda: images.uniform_png(10_000, 10_000, 2, 8),
    "png16-10000x10000": lambda: images.uniform_png(10_000, 10_000, 0, 16),
    "png-1x100000000": lambda: images.uniform_png(1, 100_000_000, 0, 8),
    "png-100000000x1": lambda: images.uniform_png(100_000_000, 1, 2, 8),
    "png-6000x4000": lambda: images.uniform_png(6000, 4000, 2, 8),
}
THUMB = RenderSpec(320, 320, "cover", "webp", 80)


def _peak_rss_kib() -> int:
    # Linux reports kilobytes.
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


async def measure(source: bytes, render_timeout: float) -> tuple[str, float, float]:
    limits = LimitsConfig(render_workers=1, render_timeout_seconds=render_timeout)
    pool = RenderPool.from_limits(limits)
    try:
        await pool.start()
        started = time.monotonic()
        try:
            rendered = await pool.render(source, THUMB)
            outcome = f"rendered {rendered.width}x{rendered.height}"
        except RenderError as exc:
            outcome = f"{type(exc).__name__}: {str(exc)[:60]}"
        except Exception as exc:  # a benchmark reports whatever happened
            outcome = f"{type(exc).__name__} (crash)"
        elapsed = time.monotonic() - started
        try:
            peak = await pool.run(_peak_rss_kib) / 1024
        except Exception:  # the worker did not survive
            peak = float("nan")
        return outcome, elapsed, peak
    finally:
        await pool.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cases", default=",".join(CASES))
    parser.add_argument("--timeout", type=float, default=60)
    args = parser.parse_args()
    rows = []
    for name in args.cases.split(","):
        source = CASES[name]()
        outcome, elapsed, peak = asyncio.run(measure(source, args.timeout))
        row = f"| {name} | {len(source) // 1024} KiB | {outcome} | {elapsed:.1f} | {peak:.0f} |"
        print(row, flush=True)
        rows.append(row)
    table = "\n".join(
        [
            "| source | size | outcome | seconds | worker peak RSS (MiB) |",
            "|---|---|---|---|---|",
            *rows,
        ]
    )
    results = ROOT / "bench" / "results"
    results.mkdir(exist_ok=True)
    path = results / f"render-memory-{time.strftime('%Y%m%d-%H%M%S')}.md"
    path.write_text(table + "\n")
    print(table)


if __name__ == "__main__":
    main()
