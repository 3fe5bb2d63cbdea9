"""The render workers: a process pool sized to the cores, behind a bounded queue.

Pillow's work is CPU-bound and holds the GIL for long stretches, so it runs in other processes
and the event loop only waits. The queue is ours, not the executor's: at most ``workers`` calls
are ever inside the executor, the rest wait here, at most ``queue`` of them, and the next one is
refused at once (RenderOverloaded: the API answers 503 SlowDown) rather than joining a backlog
no client will wait for. Keeping the executor free of a backlog also keeps clear of a CPython
bug (gh-115634, in every 3.11 release): with max_tasks_per_child, an executor holding queued
calls can stop replacing recycled workers and hang.

Workers are started with "spawn" (a fork of a threaded event-loop process is unsafe) and
replaced after ``tasks_per_worker`` calls, so whatever a decoder leaks or fragments goes with
the process.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import multiprocessing
import multiprocessing.connection
import os
import signal
import threading
import warnings
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from multiprocessing import get_context
from typing import Any, TypeVar

from gateway.config import LimitsConfig
from gateway.variants.render import (
    ImageTooLarge,
    Rendered,
    RenderError,
    RenderLimits,
    RenderSpec,
    RenderTimeout,
    render,
)

log = logging.getLogger(__name__)

T = TypeVar("T")

# How much longer than the render timeout the loop waits for a worker's answer before it
# stops waiting: the worker's own alarm should always end a render first.
BACKSTOP_SECONDS = 5.0
ALARM_REPEAT_SECONDS = 0.5


class RenderOverloaded(Exception):
    """Every worker is busy and the queue is full (or the wait for a worker ran out)."""


class WorkerCrashed(RenderError):
    """The worker process died (killed, out of memory, a crash in a decoder)."""


def default_workers() -> int:
    """The cores this process may run on (affinity and cpusets, not just the machine's)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not on Linux
        return max(1, os.cpu_count() or 1)


def _exit_with_parent() -> None:
    """End this worker when the gateway process ends, however it ends.

    A gateway killed outright (SIGKILL, the OOM killer) never shuts its pool down, and its
    workers would live on, orphaned, holding memory. The parent's sentinel becomes readable
    when it dies, whichever of its threads started this worker.
    """
    parent = multiprocessing.parent_process()
    if parent is None:
        return

    def watch() -> None:
        multiprocessing.connection.wait([parent.sentinel])
        os._exit(1)

    threading.Thread(target=watch, name="exit-with-parent", daemon=True).start()


def _init_worker(max_pixels: int) -> None:
    from PIL import Image

    _exit_with_parent()
    # The gateway's process group gets Ctrl-C; the parent shuts the pool down in order.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    # Pillow's own bomb check (which raises at twice this) agrees with ours.
    Image.MAX_IMAGE_PIXELS = max_pixels
    warnings.simplefilter("ignore", Image.DecompressionBombWarning)
    Image.init()


@dataclass(frozen=True)
class FilePart:
    """``length`` bytes of a local file from ``offset``: a source the worker reads itself."""

    path: str
    offset: int
    length: int


# The bytes of a source, or where they lie on local disk. Passing the place rather than the
# bytes spares the gateway process reading, pickling and piping megabytes for every render
# (some 14 ms for a 12-megapixel JPEG, on the event loop's CPU).
Source = bytes | tuple[FilePart, ...]


def _load(source: Source, limit: int) -> bytes:
    if isinstance(source, bytes):
        return source
    if sum(part.length for part in source) > limit:
        raise ImageTooLarge(f"The image is larger than {limit} bytes.")
    pieces = []
    for part in source:
        with open(part.path, "rb") as handle:
            handle.seek(part.offset)
            piece = handle.read(part.length)
        if len(piece) != part.length:
            # The blob is shorter than its row says: storage lost bytes, not a bad image.
            raise OSError(f"{part.path}: {len(piece)} of {part.length} bytes")
        pieces.append(piece)
    return pieces[0] if len(pieces) == 1 else b"".join(pieces)


def _alarm(signum: int, frame: object) -> None:
    raise RenderTimeout("Rendering the variant took too long.")


def _render_with_alarm(
    source: Source, spec: RenderSpec, limits: RenderLimits, timeout: float
) -> Rendered:
    # Pillow decodes in chunks from Python, so the alarm interrupts a long decode promptly. It
    # repeats, in case library code that catches every exception swallows one.
    previous = signal.signal(signal.SIGALRM, _alarm)
    signal.setitimer(signal.ITIMER_REAL, timeout, ALARM_REPEAT_SECONDS)
    try:
        return render(_load(source, limits.max_source_bytes), spec, limits)
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def _warm_up() -> int:
    return os.getpid()


class RenderPool:
    """Runs renders in worker processes; ``render`` raises RenderOverloaded when full."""

    def __init__(
        self,
        limits: RenderLimits,
        *,
        workers: int | None = None,
        queue: int = 32,
        timeout: float = 30.0,
        tasks_per_worker: int | None = 200,
    ) -> None:
        self.limits = limits
        self.workers = workers or default_workers()
        self.queue = queue
        self.timeout = timeout
        self._tasks_per_worker = tasks_per_worker
        self._slots = asyncio.Semaphore(self.workers)
        self._busy = 0
        self._waiting = 0
        # Made on the first call: a gateway without presets never starts a process (not even
        # multiprocessing's resource tracker).
        self._executor: ProcessPoolExecutor | None = None

    @classmethod
    def from_limits(cls, limits: LimitsConfig) -> RenderPool:
        """One render worker per core in every gateway process (unless limits.render_workers
        says otherwise). Not a share of the cores: SO_REUSEPORT spreads connections, not load,
        so two busy clients often land on one gateway process, which must then be able to use
        every core; the kernel shares the cores among all render processes."""
        workers = limits.render_workers or default_workers()
        return cls(
            RenderLimits(limits.max_source_bytes, limits.max_source_pixels),
            workers=workers,
            queue=limits.render_queue,
            timeout=limits.render_timeout_seconds,
            tasks_per_worker=limits.render_tasks_per_worker,
        )

    def _new_executor(self) -> ProcessPoolExecutor:
        return ProcessPoolExecutor(
            max_workers=self.workers,
            mp_context=get_context("spawn"),
            initializer=_init_worker,
            initargs=(self.limits.max_source_pixels,),
            max_tasks_per_child=self._tasks_per_worker,
        )

    @property
    def busy(self) -> int:
        """Calls inside the executor (running, or finishing after their caller gave up)."""
        return self._busy

    @property
    def waiting(self) -> int:
        return self._waiting

    async def start(self) -> None:
        """Start every worker now, so the first renders do not pay for process start-up."""
        await asyncio.gather(*(self.run(_warm_up) for _ in range(self.workers)))

    async def render(self, source: Source, spec: RenderSpec) -> Rendered:
        return await self.run(_render_with_alarm, source, spec, self.limits, self.timeout)

    async def run(self, function: Callable[..., T], *args: Any) -> T:
        """Call ``function(*args)`` in a worker (both picklable), waiting for a free one.

        Raises RenderOverloaded (queue full, or no worker within the timeout), RenderTimeout,
        WorkerCrashed, or whatever ``function`` raised.
        """
        await self._acquire()
        loop = asyncio.get_running_loop()
        if self._executor is None:
            self._executor = self._new_executor()
        executor = self._executor
        try:
            future = executor.submit(function, *args)
        except BrokenProcessPool:
            self._release()
            self._replace(executor)
            raise WorkerCrashed("The render worker pool had to be restarted.") from None
        except BaseException:
            self._release()
            raise
        # The slot is free again when the worker is, not when this coroutine stops waiting:
        # a render that outlives its caller still occupies its process.
        future.add_done_callback(lambda _: _call_soon(loop, self._release))
        try:
            return await asyncio.wait_for(
                asyncio.wrap_future(future), self.timeout + BACKSTOP_SECONDS
            )
        except TimeoutError:
            log.error("a render worker ignored its alarm for %.0fs", self.timeout)
            raise RenderTimeout("Rendering the variant took too long.") from None
        except BrokenProcessPool:
            self._replace(executor)
            raise WorkerCrashed("The render worker stopped unexpectedly.") from None

    async def _acquire(self) -> None:
        if self._slots.locked() and self._waiting >= self.queue:
            raise RenderOverloaded("Every render worker is busy and the queue is full.")
        self._waiting += 1
        try:
            async with asyncio.timeout(self.timeout):
                await self._slots.acquire()
        except TimeoutError:
            raise RenderOverloaded("No render worker became free in time.") from None
        finally:
            self._waiting -= 1
        self._busy += 1

    def _release(self) -> None:
        self._busy -= 1
        self._slots.release()

    def _replace(self, broken: ProcessPoolExecutor) -> None:
        """Swap in a new executor for a broken one (once, however many calls saw it break)."""
        if self._executor is not broken:
            return
        log.warning("a render worker died; starting a new worker pool")
        # The next call makes the new one.
        self._executor = None
        broken.shutdown(wait=False, cancel_futures=True)

    async def close(self) -> None:
        executor = self._executor
        if executor is None:
            return
        await asyncio.get_running_loop().run_in_executor(
            None, lambda: executor.shutdown(wait=True, cancel_futures=True)
        )


def _call_soon(loop: asyncio.AbstractEventLoop, callback: Callable[[], object]) -> None:
    # RuntimeError: the loop is closed, nobody is left to wait for the slot.
    with contextlib.suppress(RuntimeError):
        loop.call_soon_threadsafe(callback)
