"""The render pool with real worker processes: results, overload, timeouts, crashes, recycling."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from gateway.config import LimitsConfig
from gateway.variants.pool import (
    FilePart,
    RenderOverloaded,
    RenderPool,
    WorkerCrashed,
    _render_with_alarm,
    default_workers,
)
from gateway.variants.render import (
    ImageTooLarge,
    InvalidImage,
    RenderLimits,
    RenderSpec,
    RenderTimeout,
    render,
)
from tests.unit.variants import images
from tests.unit.variants.images import decode, encode

LIMITS = RenderLimits(max_source_bytes=64 * 1024**2, max_source_pixels=100_000_000)
THUMB = RenderSpec(64, 64, "cover", "webp", 80)


@pytest.fixture
async def pool() -> AsyncIterator[RenderPool]:
    render_pool = RenderPool(LIMITS, workers=2, queue=4, timeout=20)
    await render_pool.start()
    yield render_pool
    await render_pool.close()


async def test_renders_in_a_worker(pool: RenderPool) -> None:
    source = images.jpeg_with_orientation(6)
    result = await pool.render(source, THUMB)
    # The same pixels as rendering here: nothing is lost crossing the process boundary.
    assert result == render(source, THUMB, LIMITS)
    assert decode(result.data).size == (64, 64)
    pids = {await pool.run(os.getpid) for _ in range(4)}
    assert os.getpid() not in pids


async def test_renders_from_file_parts_read_by_the_worker(pool: RenderPool, tmp_path: Path) -> None:
    source = images.jpeg_with_orientation(6)
    # Two blobs, as a multipart object's parts, each inside a larger file.
    cut = len(source) // 3
    first, second = tmp_path / "a", tmp_path / "b"
    first.write_bytes(b"junk" + source[:cut] + b"more junk")
    second.write_bytes(source[cut:])
    parts = (FilePart(str(first), 4, cut), FilePart(str(second), 0, len(source) - cut))
    assert await pool.render(parts, THUMB) == render(source, THUMB, LIMITS)


async def test_file_parts_over_the_byte_limit_are_not_read(tmp_path: Path) -> None:
    small = RenderPool(RenderLimits(100, 100_000_000), workers=1, queue=1, timeout=20)
    try:
        missing = FilePart(str(tmp_path / "never-opened"), 0, 101)
        with pytest.raises(ImageTooLarge):
            await small.render((missing,), THUMB)
        # A blob shorter than its row says is lost storage, not a bad image.
        short = tmp_path / "short"
        short.write_bytes(b"x" * 10)
        with pytest.raises(OSError, match="10 of 50 bytes"):
            await small.render((FilePart(str(short), 0, 50),), THUMB)
    finally:
        await small.close()


async def test_render_errors_cross_the_process_boundary_typed(pool: RenderPool) -> None:
    with pytest.raises(InvalidImage, match="could not be decoded"):
        await pool.render(images.truncated_jpeg(), THUMB)


async def test_many_renders_at_once(pool: RenderPool) -> None:
    sources = [encode(images.marked((400 + i, 300)), "PNG") for i in range(6)]
    results = await asyncio.gather(*(pool.render(source, THUMB) for source in sources))
    assert all(decode(result.data).size == (64, 64) for result in results)
    assert pool.busy == 0
    assert pool.waiting == 0


async def test_a_full_queue_is_refused_at_once() -> None:
    render_pool = RenderPool(LIMITS, workers=1, queue=1, timeout=20)
    try:
        await render_pool.start()
        slow = asyncio.create_task(render_pool.run(time.sleep, 3))
        for _ in range(1000):
            if render_pool.busy:
                break
            await asyncio.sleep(0.01)
        assert render_pool.busy == 1
        queued = asyncio.create_task(render_pool.run(os.getpid))
        await asyncio.sleep(0)
        assert render_pool.waiting == 1
        with pytest.raises(RenderOverloaded, match="queue is full"):
            await render_pool.run(os.getpid)
        # Refused without waiting for room: the call holding the worker has not ended.
        assert not slow.done()
        assert render_pool.busy == 1 and render_pool.waiting == 1
        await slow
        assert isinstance(await queued, int)
        # Room again.
        assert isinstance(await render_pool.run(os.getpid), int)
    finally:
        await render_pool.close()


async def test_waiting_too_long_for_a_worker_is_overload() -> None:
    render_pool = RenderPool(LIMITS, workers=1, queue=4, timeout=0.3)
    try:
        await render_pool.start()
        busy = asyncio.create_task(render_pool.run(time.sleep, 1.0))
        await asyncio.sleep(0.05)
        with pytest.raises(RenderOverloaded, match="in time"):
            await render_pool.run(os.getpid)
        # The busy call ends when its worker is killed, a second past its deadline; the
        # worker is not reused before then.
        await asyncio.gather(busy, return_exceptions=True)
    finally:
        await render_pool.close()


async def test_a_render_that_runs_too_long_is_stopped_in_the_worker() -> None:
    render_pool = RenderPool(LIMITS, workers=1, queue=1, timeout=0.001)
    try:
        await render_pool.start()
        started = time.monotonic()
        with pytest.raises(RenderTimeout):
            await render_pool.render(encode(images.marked((3000, 2000)), "PNG"), THUMB)
        assert time.monotonic() - started < 5
        # The worker survived its alarm and takes the next call.
        assert isinstance(await render_pool.run(os.getpid), int)
    finally:
        await render_pool.close()


async def test_a_call_stuck_past_its_deadline_is_killed_alone() -> None:
    # time.sleep stands for a decoder busy inside C, where no alarm reaches it.
    render_pool = RenderPool(LIMITS, workers=2, queue=4, timeout=1)
    try:
        await render_pool.start()
        started = time.monotonic()
        stuck = asyncio.create_task(render_pool.run(time.sleep, 60))
        await asyncio.sleep(0.2)
        # The other worker's call is not disturbed by the kill.
        neighbour = asyncio.create_task(render_pool.run(time.sleep, 1.5))
        with pytest.raises(RenderTimeout):
            await stuck
        assert time.monotonic() - started < 4
        assert await neighbour is None
        assert render_pool.busy == 0
        survivors = render_pool.pids
        assert len(survivors) == 1
        # A new worker takes the killed one's place when two are needed again.
        assert await asyncio.gather(*(render_pool.run(time.sleep, 0.5) for _ in range(2))) == [
            None,
            None,
        ]
        assert len(render_pool.pids) == 2 and survivors[0] in render_pool.pids
        result = await render_pool.render(images.jpeg_with_orientation(1), THUMB)
        assert decode(result.data).size == (64, 64)
    finally:
        await render_pool.close()


async def test_closing_does_not_wait_for_a_busy_worker() -> None:
    render_pool = RenderPool(LIMITS, workers=1, queue=1, timeout=60)
    await render_pool.start()
    (pid,) = render_pool.pids
    busy = asyncio.create_task(render_pool.run(time.sleep, 60))
    await asyncio.sleep(0.2)
    started = time.monotonic()
    await render_pool.close()
    assert time.monotonic() - started < 10
    with pytest.raises(WorkerCrashed):
        await busy
    assert not _alive(pid)


async def test_a_worker_is_limited_to_its_memory() -> None:
    limits = RenderLimits(64 * 1024**2, 100_000_000, max_memory_bytes=384 * 1024**2)
    render_pool = RenderPool(limits, workers=1, queue=1, timeout=20)
    try:
        pid = await render_pool.run(os.getpid)
        with pytest.raises(MemoryError):
            await render_pool.run(bytes, 512 * 1024**2)
        # The worker survives its MemoryError, and has room for what fits.
        assert await render_pool.run(len, b"x" * 1024) == 1024
        assert await render_pool.run(os.getpid) == pid
    finally:
        await render_pool.close()


async def test_a_render_out_of_memory_is_image_too_large() -> None:
    limits = RenderLimits(64 * 1024**2, 100_000_000, max_memory_bytes=384 * 1024**2)
    render_pool = RenderPool(limits, workers=1, queue=1, timeout=20)
    # Told it may use 10 GiB, the render decodes 400 MB of pixels: the worker's limit stops it.
    optimistic = RenderLimits(64 * 1024**2, 100_000_000, max_memory_bytes=10 * 1024**3)
    try:
        with pytest.raises(ImageTooLarge, match="more memory than a render may use"):
            await render_pool.run(
                _render_with_alarm,
                images.uniform_png(10_000, 10_000, 2, 8),
                THUMB,
                optimistic,
                20,
            )
        result = await render_pool.render(images.jpeg_with_orientation(1), THUMB)
        assert decode(result.data).size == (64, 64)
    finally:
        await render_pool.close()


async def test_a_dead_worker_is_replaced(pool: RenderPool) -> None:
    with pytest.raises(WorkerCrashed):
        await pool.run(os._exit, 3)
    result = await pool.render(images.jpeg_with_orientation(1), THUMB)
    assert decode(result.data).size == (64, 64)
    assert pool.busy == 0


async def test_workers_are_recycled_without_hanging() -> None:
    # gh-115634: an executor with max_tasks_per_child and queued calls can stop replacing
    # workers. The pool never queues inside the executor, so this finishes.
    render_pool = RenderPool(LIMITS, workers=1, queue=16, timeout=20, tasks_per_worker=2)
    try:
        async with asyncio.timeout(60):
            sequential = [await render_pool.run(os.getpid) for _ in range(5)]
            concurrent = await asyncio.gather(*(render_pool.run(os.getpid) for _ in range(9)))
        pids = sequential + list(concurrent)
        # Two calls per process: 14 calls, 7 processes.
        assert len(set(pids)) == 7
        assert all(pids.count(pid) == 2 for pid in set(pids))
    finally:
        await render_pool.close()


def test_pool_from_limits() -> None:
    limits = LimitsConfig(
        max_source_bytes=1024,
        max_source_pixels=10_000,
        render_queue=3,
        render_timeout_seconds=7,
        render_tasks_per_worker=9,
    )
    render_pool = RenderPool.from_limits(limits)
    assert render_pool.limits == RenderLimits(1024, 10_000)
    # Sized from the pixel limit unless set.
    assert render_pool.limits.memory_bytes == 256 * 1024**2 + 6 * 10_000
    configured = limits.model_copy(update={"render_memory_bytes": 512 * 1024**2})
    assert RenderPool.from_limits(configured).limits.memory_bytes == 512 * 1024**2
    # One worker per core in every gateway process, however many share the machine.
    assert (render_pool.workers, render_pool.queue, render_pool.timeout) == (
        default_workers(),
        3,
        7,
    )
    assert RenderPool.from_limits(limits.model_copy(update={"render_workers": 5})).workers == 5


_ORPHAN_SCRIPT = """
import asyncio, os, sys
from gateway.variants.pool import RenderPool
from gateway.variants.render import RenderLimits

async def main():
    pool = RenderPool(RenderLimits(1024, 1024), workers=2, queue=1, timeout=20)
    await pool.start()
    pids = {await pool.run(os.getpid) for _ in range(8)}
    print(" ".join(map(str, sorted(pids))), flush=True)
    await asyncio.sleep(3600)

asyncio.run(main())
"""


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie is gone as far as work goes; /proc tells them apart on Linux.
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().split(") ", 1)[1][0] != "Z"
    except FileNotFoundError:
        return False


def test_workers_end_when_the_gateway_is_killed() -> None:
    """A gateway killed with SIGKILL shuts nothing down; its workers must not linger."""
    process = subprocess.Popen(
        [sys.executable, "-c", _ORPHAN_SCRIPT], stdout=subprocess.PIPE, text=True
    )
    try:
        assert process.stdout is not None
        workers = [int(pid) for pid in process.stdout.readline().split()]
        assert workers and all(_alive(pid) for pid in workers)
    finally:
        process.send_signal(signal.SIGKILL)
        process.wait()
    deadline = time.monotonic() + 10
    while any(_alive(pid) for pid in workers):
        assert time.monotonic() < deadline, "render workers outlived their gateway"
        time.sleep(0.05)
