"""Variants on demand: find a derivative, or make it exactly once, store it, record it.

The path of a variant GET, once the API has found the object and the preset:

1. The derivative row of (object version, variant key). Ready: serve its blob. Failed and still
   in its back-off: answer the recorded error again, without rendering.
2. Otherwise one render, however many requests ask at once. Within a process, requests for the
   same derivative share one task; across processes, the task first claims the row in
   Postgres (gateway.meta.derivatives: a lease, fenced by the attempt number, renewed every
   third of its length while the render runs), and a process that finds the row claimed
   elsewhere polls it until it is ready, failed, or its lease runs out (then it claims the
   row itself). A short renewed lease, not one long enough for the slowest render: a gateway
   killed mid-render holds its variants up for seconds, not minutes.
3. The claimant reads the source, renders it in the worker pool, and writes the blob under a
   new storage key of the source's storage profile, staged as every blob is
   (gateway.objects.staging): the key enters the garbage log before a byte is written and
   leaves it in the transaction that marks the row ready, so a crash at any point leaves
   nothing the janitor cannot find. A derivative can always be made again, so the request
   that caused the render need not wait for that store: it is answered with the rendered
   bytes at once (``answer``), while the claim is held until the row is ready.

The service knows nothing of HTTP: the API passes the object and a way to read its bytes, and
turns the StoredBlob it gets back (where the variant lives, what it answers with) into a
response.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import os
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import IO, Protocol

from gateway import metrics
from gateway.config import LimitsConfig
from gateway.errors import GatewayError
from gateway.meta import derivatives
from gateway.meta.db import DATABASE_ERRORS, DatabaseUnavailableError
from gateway.meta.derivatives import Derivative, Outcome, StoredBlob
from gateway.objects.backend import Resources
from gateway.objects.staging import StagedBlob
from gateway.s3.errors import S3Error
from gateway.variants import errors, video
from gateway.variants.gravity import Anchor
from gateway.variants.info import InfoSpec
from gateway.variants.pool import FilePart, RenderOverloaded, Source
from gateway.variants.presets import FormatClass, Preset
from gateway.variants.render import ImageTooLarge, Rendered, RenderError, RenderSpec

log = logging.getLogger(__name__)

# How often a process waiting on another's render looks at the row: quickly at first (small
# renders take tens of milliseconds), then less often.
POLL_FIRST_SECONDS = 0.02
POLL_MAX_SECONDS = 0.5
# A video streamed into a temporary file is written in blocks of this size.
SPOOL_BLOCK_BYTES = 1024**2


class Renderer(Protocol):
    async def render(
        self, source: Source, spec: RenderSpec | InfoSpec, focus: Anchor | None = None
    ) -> Rendered: ...


@dataclass(frozen=True)
class VariantSource:
    """The object version a variant is made of, and how to read its bytes."""

    bucket: str
    key: str
    version_id: uuid.UUID
    size: int
    # Derivatives are stored with the same profile as their source.
    profile: str
    read: Callable[[], AsyncIterator[bytes]]
    # Where its bytes lie on local disk, for the render worker to read them itself; None (or
    # returning None): they are read here and sent.
    locate: Callable[[], Awaitable[tuple[FilePart, ...] | None]] | None = None
    # Its focal point (x-amz-meta-focus), where a cover crop is centred. Not part of the
    # derivative's key, and need not be: derivatives belong to one object version, and
    # metadata never changes without a new version (a new version_id, new derivatives).
    focus: Anchor | None = None


@dataclass(frozen=True)
class VariantPolicy:
    max_source_bytes: int
    # A claim's lease: renewed while its claimant lives; once it runs out without a renewal,
    # another process presumes the claimant dead and claims the row itself.
    lease_seconds: float
    retry_seconds: float
    retry_max_seconds: float
    # The longest a claimant may take to read, wait for a worker, render and store: how long
    # another process waits for its result before answering 503.
    render_seconds: float = 120
    # Videos (for presets with a frame) may be larger than images.
    video_max_source_bytes: int = 1024**3

    @classmethod
    def from_limits(cls, limits: LimitsConfig) -> VariantPolicy:
        return cls(
            max_source_bytes=limits.max_source_bytes,
            lease_seconds=limits.render_lease_seconds,
            retry_seconds=limits.render_retry_seconds,
            retry_max_seconds=limits.render_retry_max_seconds,
            # Waiting for a worker and rendering are each bounded by the render timeout; the
            # rest covers reading the source and storing the result.
            render_seconds=2 * limits.render_timeout_seconds + 60,
            video_max_source_bytes=limits.video_source_max_bytes,
        )

    def retry_delay(self, attempts: int) -> float:
        """Back-off after the ``attempts``-th attempt failed: doubling, capped."""
        exponent = min(max(attempts - 1, 0), 62)
        return min(self.retry_max_seconds, self.retry_seconds * 2**exponent)


def _count_render(result: str, started: float) -> None:
    """A render's outcome and duration (waiting for a worker included), measured here: the
    render workers write no metrics."""
    counted = metrics.current()
    if counted is not None:
        counted.renders(result).inc()
        counted.render_duration(result).observe(time.monotonic() - started)


def ready(row: Derivative) -> StoredBlob:
    assert row.profile and row.storage_key and row.etag and row.content_type
    assert row.size is not None
    return StoredBlob(
        row.profile, row.storage_key, row.size, row.etag, row.content_type, row.rendered_at
    )


def known(row: Derivative | None) -> StoredBlob | None:
    """What a derivative row answers without a render: the variant if it is ready; raises the
    recorded error of a failure in its back-off; None otherwise (missing, pending, retryable)."""
    if row is None:
        return None
    if row.status == "ready":
        return ready(row)
    error = recorded_error(row)
    if error is not None:
        raise error
    return None


def recorded_error(row: Derivative) -> S3Error | None:
    """The error a failed row answers while its back-off lasts; None once it may be retried."""
    retry_after = row.retry_after()
    if retry_after is None:
        return None
    return errors.replay(row.error or "", retry_after)


@dataclass(frozen=True)
class _Flight:
    """One derivative being made in this process, which every request for it shares."""

    # Ends once the derivative is stored and recorded (or with why it is not).
    stored: asyncio.Task[StoredBlob]
    # Set once the render is done, with its bytes, before they are stored; only ever a result.
    rendered: asyncio.Future[StoredBlob]


class VariantService:
    def __init__(self, resources: Resources, renderer: Renderer, policy: VariantPolicy) -> None:
        self._resources = resources
        self._pool = resources.pool
        self._renderer = renderer
        self._policy = policy
        self._flights: dict[tuple[uuid.UUID, str], _Flight] = {}

    async def lookup(
        self, source: VariantSource, preset: Preset, format_class: FormatClass
    ) -> StoredBlob | None:
        """The derivative if it is ready; never renders. Raises the recorded error of a
        failed one in its back-off."""
        return known(
            await derivatives.get(self._pool, source.version_id, preset.variant_key(format_class))
        )

    async def get(
        self, source: VariantSource, preset: Preset, format_class: FormatClass
    ) -> StoredBlob:
        """The derivative, rendered now if need be, once it is stored. Raises S3Error
        subclasses."""
        found = await self.lookup(source, preset, format_class)
        if found is not None:
            return found
        flight = self._flight(source, preset, format_class)
        # A client that goes away stops waiting; the render goes on for the others.
        return await asyncio.shield(flight.stored)

    async def answer(
        self, source: VariantSource, preset: Preset, format_class: FormatClass
    ) -> StoredBlob:
        """The derivative as soon as it exists: a render made here comes with its bytes
        (``data``) while they are still being stored. Raises S3Error subclasses."""
        found = await self.lookup(source, preset, format_class)
        if found is not None:
            return found
        flight = self._flight(source, preset, format_class)
        # asyncio.wait leaves both running when this request is cancelled.
        await asyncio.wait((flight.rendered, flight.stored), return_when=asyncio.FIRST_COMPLETED)
        if flight.rendered.done():
            return flight.rendered.result()
        return flight.stored.result()

    def prefetch(self, source: VariantSource, preset: Preset, format_class: FormatClass) -> None:
        """Make the derivative in the background (on_miss: original; eager presets)."""
        self._flight(source, preset, format_class)

    def _flight(self, source: VariantSource, preset: Preset, format_class: FormatClass) -> _Flight:
        variant_key = preset.variant_key(format_class)
        key = (source.version_id, variant_key)
        flight = self._flights.get(key)
        if flight is None:
            rendered: asyncio.Future[StoredBlob] = asyncio.get_running_loop().create_future()
            task = asyncio.create_task(
                self._produce(source, preset.render_spec(format_class), variant_key, rendered)
            )
            flight = _Flight(task, rendered)
            self._flights[key] = flight
            task.add_done_callback(lambda done: self._landed(key, done))
        return flight

    def _landed(self, flight: tuple[uuid.UUID, str], task: asyncio.Task[StoredBlob]) -> None:
        self._flights.pop(flight, None)
        if task.cancelled():
            return
        error = task.exception()  # retrieved, so a render nobody awaited logs no warning
        # A database or upstream outage is logged once, where it was detected.
        expected = S3Error | GatewayError | DatabaseUnavailableError
        if error is not None and not isinstance(error, expected):
            log.error("variant %s of %s failed", flight[1], flight[0], exc_info=error)

    async def close(self) -> None:
        """Cancel renders in flight (their claims are given back where possible), and finish
        storing those already answered: their rows are then ready, not left to a lease."""
        flights = list(self._flights.values())
        for flight in flights:
            if not flight.rendered.done():
                flight.stored.cancel()
        await asyncio.gather(*(flight.stored for flight in flights), return_exceptions=True)

    async def _produce(
        self,
        source: VariantSource,
        spec: RenderSpec | InfoSpec,
        variant_key: str,
        rendered: asyncio.Future[StoredBlob],
    ) -> StoredBlob:
        """Claim, render and store, or wait for whoever holds the claim, until there is an
        outcome; ``rendered`` is given a render made here before it is stored."""
        deadline = time.monotonic() + self._policy.render_seconds + 5
        delay = POLL_FIRST_SECONDS
        while True:
            attempt, row = await derivatives.claim(
                self._pool, source.version_id, variant_key, self._policy.lease_seconds
            )
            if attempt is not None:
                renewal = asyncio.create_task(self._renew(source.version_id, variant_key, attempt))
                try:
                    return await self._render(source, spec, variant_key, attempt, rendered)
                finally:
                    renewal.cancel()
                    await asyncio.gather(renewal, return_exceptions=True)
            if row is not None and row.status == "ready":
                return ready(row)
            error = recorded_error(row) if row is not None else None
            if error is not None:
                raise error
            # Pending: another process renders it (or a back-off ended just after the claim
            # was refused, or the row is not yet visible): look again shortly.
            if time.monotonic() > deadline:
                raise errors.RetryLater("The variant is still being rendered.", delay)
            await asyncio.sleep(delay)
            delay = min(delay * 1.5, POLL_MAX_SECONDS)

    async def _render(
        self,
        source: VariantSource,
        spec: RenderSpec | InfoSpec,
        variant_key: str,
        attempt: int,
        answer: asyncio.Future[StoredBlob],
    ) -> StoredBlob:
        key = (source.version_id, variant_key, attempt)
        started = time.monotonic()
        try:
            async with self._prepared(source, spec) as prepared:
                rendered = await self._renderer.render(prepared, spec, source.focus)
        except RenderOverloaded as exc:
            _count_render("overloaded", started)
            await self._release(*key)
            raise errors.RetryLater(str(exc)) from None
        except RenderError as exc:
            _count_render("failed", started)
            error = errors.from_render_error(exc)
            if isinstance(error, errors.VideoUnsupported):
                # The operator's to fix (the startup log said so too); recorded like any
                # failure, so it is said again once per back-off, not on every GET.
                log.warning(
                    "variant %s of %s/%s: %s", variant_key, source.bucket, source.key, error
                )
            await derivatives.mark_failed(
                self._pool,
                *key,
                errors.record(error),
                self._policy.retry_delay(attempt),
                source=(source.bucket, source.key),
            )
            raise error from None
        except BaseException:
            # Not the image's fault (storage, cancellation): the next request may try again.
            await asyncio.shield(self._release(*key))
            raise
        _count_render("ok", started)
        made = StoredBlob(
            profile=source.profile,
            # Named once staged; the bytes are at hand until then.
            storage_key="",
            size=len(rendered.data),
            etag='"' + hashlib.md5(rendered.data, usedforsecurity=False).hexdigest() + '"',
            content_type=rendered.content_type,
            # Whole seconds, as HTTP dates have them: every answer gives the same Last-Modified.
            rendered_at=datetime.now(UTC).replace(microsecond=0),
            data=rendered.data,
        )
        answer.set_result(made)
        return await self._store(source, variant_key, attempt, made)

    async def _renew(self, version_id: uuid.UUID, variant_key: str, attempt: int) -> None:
        """Keep claim ``attempt`` alive until cancelled (or until it is no longer ours)."""
        lease = self._policy.lease_seconds
        while True:
            await asyncio.sleep(lease / 3)
            try:
                if not await derivatives.renew(self._pool, version_id, variant_key, attempt, lease):
                    return
            except (OSError, *DATABASE_ERRORS) as exc:
                # Tried again a third of a lease later; a claim lost meanwhile only costs a
                # second render, whose result the attempt number fences off.
                log.warning("could not renew the claim on %s: %s", variant_key, exc)

    async def _release(self, version_id: uuid.UUID, variant_key: str, attempt: int) -> None:
        try:
            await derivatives.release(self._pool, version_id, variant_key, attempt)
        except (OSError, *DATABASE_ERRORS):
            # The lease runs out on its own.
            log.warning("could not release the claim on %s", variant_key, exc_info=True)

    @contextlib.asynccontextmanager
    async def _prepared(
        self, source: VariantSource, spec: RenderSpec | InfoSpec
    ) -> AsyncIterator[Source]:
        """What the renderer is given, for as long as it renders."""
        if isinstance(spec, RenderSpec) and spec.frame is None:
            yield await self._source(source)
            return
        # A poster preset or info: the source may be a video, never read into memory.
        located = await self._located(
            source,
            max(self._policy.max_source_bytes, self._policy.video_max_source_bytes),
            f"videos up to {self._policy.video_max_source_bytes} bytes",
        )
        if located is not None:
            yield located
            return
        spooled = await self._spool(source)
        try:
            yield (spooled,)
        finally:
            with contextlib.suppress(FileNotFoundError):
                await asyncio.to_thread(os.unlink, spooled.path)

    async def _spool(self, source: VariantSource) -> FilePart:
        """The source streamed into a temporary file, for ffmpeg to seek in (an MP4 whose
        index comes last cannot be read from a pipe). Bounded by the video limit, or by the
        image limit once its first bytes show it is no video."""
        handle = await asyncio.to_thread(_temporary_file)
        head = b""
        total = 0
        pending: list[bytes] = []
        pending_bytes = 0
        try:
            async for chunk in source.read():
                if len(head) < video.HEAD_BYTES:
                    head += chunk[: video.HEAD_BYTES - len(head)]
                is_video = video.sniff(head) is not None
                total += len(chunk)
                limit = (
                    self._policy.video_max_source_bytes
                    if is_video
                    else self._policy.max_source_bytes
                )
                if total > limit:
                    raise ImageTooLarge(
                        f"The {'video' if is_video else 'image'} is larger than {limit} bytes."
                    )
                pending.append(chunk)
                pending_bytes += len(chunk)
                # Written a MiB at a time: one thread hop per block, not per network read.
                if pending_bytes >= SPOOL_BLOCK_BYTES:
                    await asyncio.to_thread(handle.write, b"".join(pending))
                    pending.clear()
                    pending_bytes = 0
            await asyncio.to_thread(handle.write, b"".join(pending))
            await asyncio.to_thread(handle.close)
        except BaseException:
            await asyncio.to_thread(_discard, handle)
            raise
        return FilePart(handle.name, 0, total)

    async def _source(self, source: VariantSource) -> Source:
        """What the renderer is given: where the bytes are, or the bytes."""
        limit = self._policy.max_source_bytes
        located = await self._located(source, limit, f"images up to {limit} bytes")
        if located is not None:
            return located
        return await self._read(source)

    async def _located(
        self, source: VariantSource, limit: int, allowed: str
    ) -> tuple[FilePart, ...] | None:
        """Where the source's bytes lie on local disk (None if elsewhere), once its size is
        within ``limit``; ``allowed`` says what variants are made of, in the refusal."""
        if source.size > limit:
            raise ImageTooLarge(
                f"The object is {source.size} bytes; variants are made of {allowed}."
            )
        return await source.locate() if source.locate is not None else None

    async def _read(self, source: VariantSource) -> bytes:
        limit = self._policy.max_source_bytes
        parts = []
        total = 0
        async for chunk in source.read():
            total += len(chunk)
            if total > limit:
                raise ImageTooLarge(f"The image is larger than {limit} bytes.")
            parts.append(chunk)
        return b"".join(parts)

    async def _store(
        self, source: VariantSource, variant_key: str, attempt: int, made: StoredBlob
    ) -> StoredBlob:
        assert made.data is not None
        staged = StagedBlob(self._resources, source.profile)
        try:
            async with staged as blob:
                await blob.write_all(_one_chunk(made.data))
                await blob.commit()
                stored = replace(made, storage_key=blob.storage_key, data=None)
                blob.row_commit_started = True
                async with self._pool.acquire() as conn:
                    outcome = await derivatives.mark_ready(
                        conn,
                        source.bucket,
                        source.key,
                        source.version_id,
                        variant_key,
                        attempt,
                        stored,
                    )
        except BaseException:
            if not staged.row_commit_started:
                await asyncio.shield(self._release(source.version_id, variant_key, attempt))
            raise
        if outcome is Outcome.RECORDED:
            return stored
        await staged.discard()
        if outcome is Outcome.SUPERSEDED:
            # Our lease ran out and another process claimed the row: its result stands.
            row = await derivatives.get(self._pool, source.version_id, variant_key)
            if row is not None and row.status == "ready":
                return ready(row)
            raise errors.RetryLater("The variant is still being rendered. Please try again.")
        raise errors.RetryLater(
            "The object changed while its variant was being rendered. Please try again."
        )


async def _one_chunk(data: bytes) -> AsyncIterator[bytes]:
    yield data


def _temporary_file() -> IO[bytes]:
    return tempfile.NamedTemporaryFile(prefix="gateway-video-", delete=False)


def _discard(handle: IO[bytes]) -> None:
    handle.close()
    with contextlib.suppress(FileNotFoundError):
        os.unlink(handle.name)
