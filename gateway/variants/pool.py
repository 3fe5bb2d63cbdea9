"""The render workers: a process pool sized to the cores, behind a bounded queue.

Pillow's work is CPU-bound and holds the GIL for long stretches, so it runs in other processes
and the event loop only waits. At most ``workers`` calls run at once, the rest wait here, at
most ``queue`` of them, and the next one is refused at once (RenderOverloaded: the API answers
503 SlowDown) rather than joining a backlog no client will wait for.

Each worker is a process of its own with a pipe to this one (not a ProcessPoolExecutor, where
one killed worker breaks every call in flight): a call that outlives its deadline by
HARD_KILL_GRACE_SECONDS is ended by killing its worker, which only that call notices. Decoders
spend long stretches inside C, where the worker's own alarm cannot interrupt them (a
progressive JPEG of thousands of scans decodes in one call); the kill bounds them all.

Workers are started with "spawn" (a fork of a threaded event-loop process is unsafe), limited
to ``memory_bytes`` of data each (RLIMIT_DATA: an allocation past it fails as MemoryError, which
a render reports as ImageTooLarge), and replaced after ``tasks_per_worker`` calls, so whatever
a decoder leaks or fragments goes with the process.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import multiprocessing
import multiprocessing.connection
import os
import pickle
import resource
import signal
import tempfile
import threading
import warnings
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from multiprocessing import get_context
from multiprocessing.connection import Connection
from multiprocessing.process import BaseProcess
from typing import Any, TypeVar

from gateway.config import LimitsConfig, VideoConfig
from gateway.variants import video
from gateway.variants.gravity import Anchor
from gateway.variants.info import InfoSpec, describe
from gateway.variants.render import (
    FrameSpec,
    ImageTooLarge,
    Rendered,
    RenderError,
    RenderLimits,
    RenderSpec,
    RenderTimeout,
    UnsupportedImage,
    VideoLimits,
    render,
)

log = logging.getLogger(__name__)

T = TypeVar("T")

# How long past its deadline a call may run before its worker is killed: the worker's own alarm
# ends a render that returns to Python in time, with a clean error; the kill ends the rest.
HARD_KILL_GRACE_SECONDS = 1.0
ALARM_REPEAT_SECONDS = 0.5
# How long a new worker may take to start (an interpreter, Pillow and its codecs).
START_TIMEOUT_SECONDS = 60.0
# How long a worker that was asked to exit (recycled, or the pool closing) gets before it is
# killed.
EXIT_GRACE_SECONDS = 5.0


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


def _limit_memory(memory_bytes: int) -> None:
    # RLIMIT_DATA (heap and private writable mappings, where Pillow keeps pixels) rather than
    # RLIMIT_AS: address space a process only reserves (thread stacks, malloc arenas) would
    # count against the latter without being memory anyone uses.
    _soft, hard = resource.getrlimit(resource.RLIMIT_DATA)
    limit = memory_bytes if hard == resource.RLIM_INFINITY else min(memory_bytes, hard)
    resource.setrlimit(resource.RLIMIT_DATA, (limit, hard))


def _init_worker(max_pixels: int, memory_bytes: int) -> None:
    from PIL import Image

    _exit_with_parent()
    # The gateway's process group gets Ctrl-C; the parent shuts the pool down in order.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    # Pillow's own bomb check (which raises at twice this) agrees with ours.
    Image.MAX_IMAGE_PIXELS = max_pixels
    warnings.simplefilter("ignore", Image.DecompressionBombWarning)
    Image.init()
    _limit_memory(memory_bytes)


def _serve(conn: Connection, max_pixels: int, memory_bytes: int) -> None:
    """A worker's life: say it is ready, then run each ``(function, args)`` received and send
    back how it ended."""
    _init_worker(max_pixels, memory_bytes)
    conn.send(os.getpid())
    while True:
        try:
            message = conn.recv()
        except EOFError:
            return  # the gateway closed its end
        if message is None:
            return
        function, args = message
        try:
            reply: tuple[bool, object] = (True, function(*args))
        except BaseException as exc:  # every failure is the caller's to see
            reply = (False, exc)
        try:
            conn.send(reply)
        except (pickle.PicklingError, TypeError, AttributeError) as exc:
            # An exception (or result) that cannot cross the boundary still ends the call.
            conn.send((False, RenderError(f"{type(reply[1]).__name__}: {reply[1]} ({exc})")))


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


def _head(source: Source, size: int = video.HEAD_BYTES) -> bytes:
    """The first bytes of a source, enough to tell a video by."""
    if isinstance(source, bytes):
        return source[:size]
    if not source:
        return b""
    first = source[0]
    with open(first.path, "rb") as handle:
        handle.seek(first.offset)
        return handle.read(min(size, first.length))


def _check_video_size(source: Source, limits: RenderLimits) -> None:
    size = len(source) if isinstance(source, bytes) else sum(part.length for part in source)
    if size > limits.video.max_source_bytes:
        raise ImageTooLarge(
            f"The video is {size} bytes; variants are made of videos up to "
            f"{limits.video.max_source_bytes} bytes."
        )


@contextlib.contextmanager
def _video_file(source: Source) -> Iterator[str]:
    """A file holding exactly the video's bytes, for ffmpeg to seek in: the blob itself when it
    is one whole file, else a temporary copy (deleted after)."""
    if not isinstance(source, bytes) and len(source) == 1:
        (part,) = source
        if part.offset == 0 and os.path.getsize(part.path) == part.length:
            yield part.path
            return
    with tempfile.NamedTemporaryFile(prefix="gateway-video-") as copy:
        if isinstance(source, bytes):
            copy.write(source)
        for part in () if isinstance(source, bytes) else source:
            with open(part.path, "rb") as handle:
                handle.seek(part.offset)
                left = part.length
                while left:
                    block = handle.read(min(left, 1024**2))
                    if not block:
                        raise OSError(f"{part.path}: shorter than its row says")
                    copy.write(block)
                    left -= len(block)
        copy.flush()
        yield copy.name


def _render_source(
    source: Source,
    spec: RenderSpec,
    limits: RenderLimits,
    timeout: float,
    focus: Anchor | None = None,
) -> Rendered:
    """Render an image, or (a preset with ``frame``) a frame of a video; ``focus`` places a
    cover crop."""
    container = video.sniff(_head(source)) if spec.frame is not None else None
    if container is None or spec.frame is None:
        try:
            return render(_load(source, limits.max_source_bytes), spec, limits, focus)
        except UnsupportedImage:
            if video.sniff(_head(source)) is None:
                raise
            raise UnsupportedImage(
                "The object is a video: only variant presets with a frame make images of videos."
            ) from None
    _check_video_size(source, limits)
    with _video_file(source) as path:
        still = video.poster_frame(
            path, container, spec.frame, limits.video, limits.max_source_pixels, timeout
        )
    # The frame's size was bounded by the pixel limit when ffmpeg decoded it.
    return render(
        still, spec, replace(limits, max_source_bytes=len(still)), focus, formats=("PPM",)
    )


def _describe_source(source: Source, limits: RenderLimits, timeout: float) -> Rendered:
    """``?variant=info`` of an image, or of a video (its facts, and its first frame that is
    not black for size and colour)."""
    head = _head(source, video.NAME_BYTES)
    container = video.sniff(head)
    if container is None:
        return describe(_load(source, limits.max_source_bytes), limits)
    _check_video_size(source, limits)
    with _video_file(source) as path:
        facts = video.facts(path, container, head, limits.video, timeout)
        still = video.poster_frame(
            path, container, FrameSpec(), limits.video, limits.max_source_pixels, timeout
        )
    frame_limits = replace(limits, max_source_bytes=len(still))
    return describe(still, frame_limits, formats=("PPM",), video=facts)


def _alarm(signum: int, frame: object) -> None:
    raise RenderTimeout("Rendering the variant took too long.")


def _render_with_alarm(
    source: Source,
    spec: RenderSpec | InfoSpec,
    limits: RenderLimits,
    timeout: float,
    focus: Anchor | None = None,
) -> Rendered:
    # Pillow decodes in chunks from Python, so the alarm interrupts most long decodes
    # promptly (the pool kills the worker when one does not come back). It repeats, in case
    # library code that catches every exception swallows one.
    previous = signal.signal(signal.SIGALRM, _alarm)
    signal.setitimer(signal.ITIMER_REAL, timeout, ALARM_REPEAT_SECONDS)
    try:
        if isinstance(spec, InfoSpec):
            return _describe_source(source, limits, timeout)
        return _render_source(source, spec, limits, timeout, focus)
    except MemoryError:
        # The worker's memory limit, not the machine's: the image needs more than a render
        # may have. The pixels that were allocated are freed with the frames unwinding here.
        raise ImageTooLarge(
            "Rendering the image needs more memory than a render may use "
            f"({limits.memory_bytes // 1024**2} MiB)."
        ) from None
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def _warm_up() -> int:
    return os.getpid()


class _Worker:
    """One worker process and this side of its pipe."""

    def __init__(self, limits: RenderLimits) -> None:
        context = get_context("spawn")
        self.conn, theirs = context.Pipe()
        self.process: BaseProcess = context.Process(
            target=_serve,
            args=(theirs, limits.max_source_pixels, limits.memory_bytes),
            name="render-worker",
            daemon=True,
        )
        self.process.start()
        theirs.close()
        self.calls = 0
        # Started and initialised before its first call, so no call's deadline pays for an
        # interpreter starting on a busy machine.
        try:
            if not self.conn.poll(START_TIMEOUT_SECONDS):
                raise EOFError
            self.conn.recv()
        except (EOFError, OSError):
            self.kill()
            raise WorkerCrashed("A render worker did not start.") from None

    def call(self, function: Callable[..., T], args: tuple[Any, ...], timeout: float) -> T:
        """Run ``function(*args)`` in this worker (blocking); kill the worker if it is not
        done ``timeout`` + HARD_KILL_GRACE_SECONDS from now."""
        self.calls += 1
        try:
            self.conn.send((function, args))
        except (BrokenPipeError, ConnectionResetError, EOFError):
            self.kill()
            raise WorkerCrashed("The render worker stopped unexpectedly.") from None
        ready = multiprocessing.connection.wait(
            [self.conn, self.process.sentinel], timeout + HARD_KILL_GRACE_SECONDS
        )
        if self.conn in ready:
            try:
                succeeded, value = self.conn.recv()
            except (EOFError, ConnectionResetError, OSError):
                succeeded, value = False, None
            else:
                if succeeded:
                    return value
                raise value
        self.kill()
        if not ready:
            log.warning(
                "killed a render worker still busy %.1fs past its deadline", HARD_KILL_GRACE_SECONDS
            )
            raise RenderTimeout("Rendering the variant took too long.")
        raise WorkerCrashed("The render worker stopped unexpectedly.")

    @property
    def alive(self) -> bool:
        return self.process.is_alive()

    def kill(self) -> None:
        self.process.kill()
        self.process.join()
        self.conn.close()

    def stop(self) -> None:
        """Ask the worker to exit; kill it if it does not."""
        with contextlib.suppress(OSError):
            self.conn.send(None)
        self.process.join(EXIT_GRACE_SECONDS)
        if self.process.exitcode is None:
            self.process.kill()
            self.process.join()
        self.conn.close()


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
        # Workers not running a call. Made on demand: a gateway without presets never starts
        # a process.
        self._idle: list[_Worker] = []
        self._running: set[_Worker] = set()
        # Both are changed by the threads below and read on the loop.
        self._workers_lock = threading.Lock()
        # One thread per busy worker does the blocking: sending, waiting, killing, starting.
        self._threads = ThreadPoolExecutor(self.workers, thread_name_prefix="render-wait")
        self._closed = False

    @classmethod
    def from_limits(cls, limits: LimitsConfig, programs: VideoConfig | None = None) -> RenderPool:
        """One render worker per core in every gateway process (unless limits.render_workers
        says otherwise). Not a share of the cores: SO_REUSEPORT spreads connections, not load,
        so two busy clients often land on one gateway process, which must then be able to use
        every core; the kernel shares the cores among all render processes."""
        workers = limits.render_workers or default_workers()
        programs = programs or VideoConfig()
        video_limits = VideoLimits(
            ffmpeg=programs.ffmpeg,
            ffprobe=programs.ffprobe,
            max_source_bytes=limits.video_source_max_bytes,
            max_seek_seconds=limits.video_max_seek_seconds,
            probe_bytes=limits.video_probe_bytes,
            probe_seconds=limits.video_probe_seconds,
            memory_bytes=limits.video_memory_bytes,
        )
        return cls(
            RenderLimits(
                limits.max_source_bytes,
                limits.max_source_pixels,
                limits.render_memory_bytes,
                video_limits,
            ),
            workers=workers,
            queue=limits.render_queue,
            timeout=limits.render_timeout_seconds,
            tasks_per_worker=limits.render_tasks_per_worker,
        )

    @property
    def busy(self) -> int:
        """Calls inside a worker (running, or finishing after their caller gave up)."""
        return self._busy

    @property
    def waiting(self) -> int:
        return self._waiting

    @property
    def pids(self) -> list[int]:
        """The worker processes alive now."""
        with self._workers_lock:
            workers = [*self._idle, *self._running]
        return [worker.process.pid for worker in workers if worker.process.pid is not None]

    async def start(self) -> None:
        """Start every worker now, so the first renders do not pay for process start-up."""
        await asyncio.gather(*(self.run(_warm_up) for _ in range(self.workers)))

    async def render(
        self, source: Source, spec: RenderSpec | InfoSpec, focus: Anchor | None = None
    ) -> Rendered:
        """``spec`` made of ``source``: a render (a cover crop centred on ``focus``, if given),
        or the source's info."""
        return await self.run(_render_with_alarm, source, spec, self.limits, self.timeout, focus)

    async def run(self, function: Callable[..., T], *args: Any) -> T:
        """Call ``function(*args)`` in a worker (both picklable), waiting for a free one.

        Raises RenderOverloaded (queue full, or no worker within the timeout), RenderTimeout
        (the worker was killed for running too long), WorkerCrashed, or whatever ``function``
        raised.
        """
        await self._acquire()
        loop = asyncio.get_running_loop()
        try:
            future = self._threads.submit(self._call, function, args)
        except BaseException:
            self._release()
            raise
        # The slot is free again when the worker is, not when this coroutine stops waiting:
        # a render that outlives its caller still occupies its process (until it is killed).
        future.add_done_callback(lambda _: _call_soon(loop, self._release))
        return await asyncio.wrap_future(future)

    def _call(self, function: Callable[..., T], args: tuple[Any, ...]) -> T:
        """In a thread: run the call in an idle worker (or a new one), then put the worker
        back, or retire it (its tasks done, or dead)."""
        with self._workers_lock:
            worker = self._idle.pop() if self._idle else None
        if worker is None or not worker.alive:
            if worker is not None:
                worker.kill()
            worker = _Worker(self.limits)
        with self._workers_lock:
            self._running.add(worker)
        try:
            return worker.call(function, args, self.timeout)
        finally:
            with self._workers_lock:
                self._running.discard(worker)
            if not worker.alive:
                if worker.process.exitcode not in (None, 0, -signal.SIGKILL):
                    log.warning("a render worker died (exit code %s)", worker.process.exitcode)
            elif self._closed or (
                self._tasks_per_worker is not None and worker.calls >= self._tasks_per_worker
            ):
                worker.stop()
            else:
                with self._workers_lock:
                    self._idle.append(worker)

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

    async def close(self) -> None:
        """Stop every worker. A busy one is killed: the gateway is shutting down and has
        cancelled the renders, and a shutdown must not wait for the slowest of them."""
        self._closed = True
        with self._workers_lock:
            idle, self._idle = self._idle, []
            busy = list(self._running)
        for worker in busy:
            # Its call's thread sees the worker die, and ends.
            worker.process.kill()

        def stop_all() -> None:
            for worker in idle:
                worker.stop()
            self._threads.shutdown(wait=True)

        await asyncio.get_running_loop().run_in_executor(None, stop_all)


def _call_soon(loop: asyncio.AbstractEventLoop, callback: Callable[[], object]) -> None:
    # RuntimeError: the loop is closed, nobody is left to wait for the slot.
    with contextlib.suppress(RuntimeError):
        loop.call_soon_threadsafe(callback)
