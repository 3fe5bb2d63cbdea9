"""The variant service over a real Postgres and real blob storage, without HTTP.

Several VariantService instances over one database stand for several gateway processes: each
has its own in-process single flight, and only Postgres connects them.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import asyncpg
import pytest

from gateway.config import VariantPresetConfig
from gateway.meta import derivatives
from gateway.meta.derivatives import Outcome, StoredBlob
from gateway.meta.garbage import KeyReserve
from gateway.objects.backend import Resources
from gateway.storage.local import LocalBlobStore, LocalBlobWriter
from gateway.variants import errors
from gateway.variants.pool import FilePart, RenderOverloaded, RenderPool
from gateway.variants.presets import Preset
from gateway.variants.render import (
    InvalidImage,
    Rendered,
    RenderLimits,
    RenderSpec,
    RenderTimeout,
    render,
)
from gateway.variants.service import VariantPolicy, VariantService, VariantSource
from tests.conftest import create_database, migrated_pool
from tests.unit.variants import images
from tests.unit.variants.images import RED, close_to, decode

BUCKET = "variant-service"
PROFILE = "default"
# Long enough that no staged blob here needs its log entry renewed.
GRACE_SECONDS = 3600
LIMITS = RenderLimits(max_source_bytes=64 * 1024**2, max_source_pixels=100_000_000)
THUMB_CONFIG = VariantPresetConfig(width=64, height=64, fit="cover", format="webp")
THUMB = Preset.from_config("thumb", THUMB_CONFIG)


def policy(**changes: float) -> VariantPolicy:
    values: dict[str, float] = {
        "max_source_bytes": 64 * 1024**2,
        "lease_seconds": 30,
        "retry_seconds": 60,
        "retry_max_seconds": 3600,
    }
    values.update(changes)
    return VariantPolicy(**values)  # type: ignore[arg-type]


class Renderer:
    """Renders for real, in this process, counting calls; may be told to fail or stall."""

    def __init__(
        self,
        delay: float = 0.05,
        error: BaseException | None = None,
        during: Callable[[], object] | None = None,
    ) -> None:
        self.calls = 0
        self.delay = delay
        self.error = error
        self.during = during

    async def render(
        self, source: bytes, spec: RenderSpec, focus: tuple[float, float] | None = None
    ) -> Rendered:
        self.calls += 1
        if self.during is not None:
            await self.during()  # type: ignore[misc]
        await asyncio.sleep(self.delay)
        if self.error is not None:
            raise self.error
        return render(source, spec, LIMITS, focus)


@pytest.fixture(scope="module")
def service_dsn(pg_server_dsn: str) -> str:
    return create_database(pg_server_dsn)


@pytest.fixture
async def db(service_dsn: str) -> AsyncIterator[asyncpg.Pool]:
    async with migrated_pool(service_dsn, BUCKET, PROFILE, 20) as pool:
        yield pool


@pytest.fixture
def store(tmp_path: Path) -> LocalBlobStore:
    return LocalBlobStore(tmp_path / "blobs")


async def put_object(
    db: asyncpg.Pool, store: LocalBlobStore, data: bytes, key: str | None = None
) -> VariantSource:
    """An object row and its blob, as PutObject would leave them."""
    storage_key = store.new_key()
    writer = await store.create(storage_key)
    await writer.write(data)
    await writer.commit()
    key = key or f"photos/{uuid.uuid4().hex}.jpg"
    version_id = uuid.uuid4()
    await db.execute(
        "INSERT INTO objects (bucket, key, version_id, size, etag, content_type, profile,"
        " storage_key, last_modified) VALUES ($1, $2, $3, $4, '\"x\"', 'image/jpeg', $5, $6, $7)",
        BUCKET,
        key,
        version_id,
        len(data),
        PROFILE,
        storage_key,
        datetime.now(UTC),
    )

    def read() -> AsyncIterator[bytes]:
        return store.read(storage_key, 0, len(data))

    return VariantSource(BUCKET, key, version_id, len(data), PROFILE, read)


def service(
    db: asyncpg.Pool,
    store: LocalBlobStore,
    renderer: object,
    reserve: KeyReserve | None = None,
    **changes: float,
) -> VariantService:
    reserve = reserve or KeyReserve(db, {PROFILE: store.new_key}, GRACE_SECONDS)
    resources = Resources(db, {PROFILE: store}, reserve, GRACE_SECONDS)
    return VariantService(resources, renderer, policy(**changes))  # type: ignore[arg-type]


async def row(db: asyncpg.Pool, source: VariantSource) -> derivatives.Derivative | None:
    return await derivatives.get(db, source.version_id, THUMB.variant_key("webp"))


async def listed_as_garbage(db: asyncpg.Pool, storage_key: str) -> bool:
    return bool(
        await db.fetchval("SELECT count(*) FROM garbage WHERE storage_key = $1", storage_key)
    )


def blob_files(store: LocalBlobStore) -> set[Path]:
    return {path for path in store.root.rglob("*") if path.is_file()}


# --- rendered once --------------------------------------------------------------------------


async def test_fifty_concurrent_first_gets_render_once(db, store) -> None:
    source = await put_object(db, store, images.jpeg_with_orientation(6))
    renderer = Renderer(delay=0.2)
    variants = service(db, store, renderer)
    results = await asyncio.gather(*(variants.get(source, THUMB, "webp") for _ in range(50)))
    assert renderer.calls == 1
    assert len(set(results)) == 1
    variant = results[0]
    assert variant.content_type == "image/webp"
    assert variant.profile == PROFILE
    data = b"".join([chunk async for chunk in store.read(variant.storage_key, 0, variant.size)])
    image = decode(data)
    assert (image.format, image.size) == ("WEBP", (64, 64))
    # Claimed by its row in the transaction that made it ready.
    assert not await listed_as_garbage(db, variant.storage_key)
    recorded = await row(db, source)
    assert recorded is not None
    assert (recorded.status, recorded.attempts, recorded.etag) == ("ready", 1, variant.etag)


class HeldStore(LocalBlobStore):
    """Local blob storage whose writes start only once ``release`` is set."""

    def __init__(self, root: Path) -> None:
        super().__init__(root)
        self.release = asyncio.Event()

    async def create(
        self, storage_key: str, on_data: Callable[[bytes], None] | None = None
    ) -> LocalBlobWriter:
        await self.release.wait()
        return await super().create(storage_key, on_data)


async def test_a_render_is_answered_before_it_is_stored(db, tmp_path: Path) -> None:
    store = HeldStore(tmp_path / "held")
    store.release.set()
    source = await put_object(db, store, images.jpeg_with_orientation(1))
    store.release.clear()
    renderer = Renderer()
    variants = service(db, store, renderer)
    fresh = await asyncio.wait_for(variants.answer(source, THUMB, "webp"), 10)
    assert fresh.data is not None and fresh.storage_key == ""
    assert decode(fresh.data).size == (64, 64)
    # Still being stored: the row is held by the claim, and another request in this process
    # gets the same bytes without a second render.
    assert (await row(db, source)).status == "pending"  # type: ignore[union-attr]
    again = await asyncio.wait_for(variants.answer(source, THUMB, "webp"), 10)
    assert again == fresh and renderer.calls == 1
    store.release.set()
    stored = await asyncio.wait_for(variants.get(source, THUMB, "webp"), 10)
    assert (stored.etag, stored.size, stored.rendered_at) == (
        fresh.etag,
        fresh.size,
        fresh.rendered_at,
    )
    assert stored.data is None
    data = b"".join([chunk async for chunk in store.read(stored.storage_key, 0, stored.size)])
    assert data == fresh.data
    recorded = await row(db, source)
    assert recorded is not None and (recorded.status, recorded.etag) == ("ready", fresh.etag)
    assert renderer.calls == 1


async def test_closing_finishes_storing_what_was_answered(db, tmp_path: Path) -> None:
    store = HeldStore(tmp_path / "held")
    store.release.set()
    source = await put_object(db, store, images.jpeg_with_orientation(1))
    store.release.clear()
    variants = service(db, store, Renderer())
    fresh = await asyncio.wait_for(variants.answer(source, THUMB, "webp"), 10)
    closing = asyncio.create_task(variants.close())
    await asyncio.sleep(0.1)
    assert not closing.done()
    store.release.set()
    await asyncio.wait_for(closing, 10)
    recorded = await row(db, source)
    assert recorded is not None and (recorded.status, recorded.etag) == ("ready", fresh.etag)


async def test_two_processes_sharing_postgres_render_once(db, store) -> None:
    source = await put_object(db, store, images.jpeg_with_orientation(1))
    first, second = Renderer(delay=0.3), Renderer(delay=0.3)
    one, other = service(db, store, first), service(db, store, second)
    results = await asyncio.gather(
        *(one.get(source, THUMB, "webp") for _ in range(25)),
        *(other.get(source, THUMB, "webp") for _ in range(25)),
    )
    assert first.calls + second.calls == 1
    assert len(set(results)) == 1


async def test_a_ready_variant_is_served_without_rendering(db, store) -> None:
    source = await put_object(db, store, images.jpeg_with_orientation(1))
    made = await service(db, store, Renderer()).get(source, THUMB, "webp")
    later = Renderer()
    assert await service(db, store, later).get(source, THUMB, "webp") == made
    assert await service(db, store, later).lookup(source, THUMB, "webp") == made
    assert later.calls == 0


async def test_each_format_class_is_its_own_derivative(db, store) -> None:
    source = await put_object(db, store, images.jpeg_with_orientation(1))
    auto = Preset.from_config("auto", THUMB_CONFIG.model_copy(update={"format": "auto"}))
    renderer = Renderer()
    variants = service(db, store, renderer)
    made = {fmt: await variants.get(source, auto, fmt) for fmt in ("webp", "legacy")}
    assert made["webp"].content_type == "image/webp"
    assert made["legacy"].content_type == "image/jpeg"
    assert renderer.calls == 2


async def test_a_client_going_away_does_not_stop_the_render(db, store) -> None:
    source = await put_object(db, store, images.jpeg_with_orientation(1))
    renderer = Renderer(delay=0.3)
    variants = service(db, store, renderer)
    impatient = asyncio.create_task(variants.get(source, THUMB, "webp"))
    await asyncio.sleep(0.1)
    impatient.cancel()
    patient = await variants.get(source, THUMB, "webp")
    assert renderer.calls == 1
    assert (await row(db, source)).status == "ready"  # type: ignore[union-attr]
    assert patient.content_type == "image/webp"


async def test_prefetch_renders_in_the_background(db, store) -> None:
    source = await put_object(db, store, images.jpeg_with_orientation(1))
    renderer = Renderer(delay=0.1)
    variants = service(db, store, renderer)
    assert await variants.lookup(source, THUMB, "webp") is None
    variants.prefetch(source, THUMB, "webp")
    variants.prefetch(source, THUMB, "webp")
    deadline = time.monotonic() + 10
    while await variants.lookup(source, THUMB, "webp") is None:
        assert time.monotonic() < deadline
        await asyncio.sleep(0.05)
    assert renderer.calls == 1


async def test_the_real_pool_end_to_end(db, store) -> None:
    source = await put_object(db, store, images.jpeg_with_orientation(6))
    pool = RenderPool(LIMITS, workers=1, queue=4, timeout=20)
    await pool.start()
    try:
        orientation = Preset.from_config(
            "tall", THUMB_CONFIG.model_copy(update={"fit": "inside", "format": "png"})
        )
        variant = await service(db, store, pool).get(source, orientation, "png")
    finally:
        await pool.close()
    data = b"".join([chunk async for chunk in store.read(variant.storage_key, 0, variant.size)])
    image = decode(data)
    assert image.size == (32, 64)
    # Orientation 6: the stored top-left corner is displayed top-right.
    assert close_to(image.convert("RGB").getpixel((29, 2)), RED, 40)


# --- failures -------------------------------------------------------------------------------


async def test_a_failed_render_is_recorded_and_not_repeated(db, store) -> None:
    source = await put_object(db, store, images.jpeg_with_orientation(1))
    broken = Renderer(error=InvalidImage("The image could not be decoded: broken"))
    with pytest.raises(errors.InvalidImage) as first:
        await service(db, store, broken).get(source, THUMB, "webp")
    assert (first.value.status, first.value.message) == (
        400,
        "The image could not be decoded: broken",
    )
    recorded = await row(db, source)
    assert recorded is not None
    assert (recorded.status, recorded.attempts) == ("failed", 1)
    assert recorded.error == "InvalidImage: The image could not be decoded: broken"
    # Every process answers the recorded error, without rendering, until the back-off ends.
    for variants in (service(db, store, broken), service(db, store, broken)):
        for _ in range(3):
            with pytest.raises(errors.InvalidImage) as again:
                await variants.get(source, THUMB, "webp")
            assert again.value.message == first.value.message
    assert broken.calls == 1


async def test_a_failed_render_is_retried_after_its_back_off(db, store) -> None:
    source = await put_object(db, store, images.jpeg_with_orientation(1))
    broken = Renderer(error=InvalidImage("broken"), delay=0)
    variants = service(db, store, broken, retry_seconds=0.5)
    with pytest.raises(errors.InvalidImage):
        await variants.get(source, THUMB, "webp")
    await asyncio.sleep(0.6)
    # The window is checked against the database's clock on either side of the failure, not
    # against how long the test took: a loaded machine can be slow anywhere in between.
    before = await db.fetchval("SELECT clock_timestamp()")
    with pytest.raises(errors.InvalidImage):
        await variants.get(source, THUMB, "webp")
    after = await db.fetchval("SELECT clock_timestamp()")
    assert broken.calls == 2
    recorded = await row(db, source)
    assert recorded is not None
    assert recorded.attempts == 2
    # Doubled: the second failure waits twice as long.
    assert recorded.next_retry_at is not None
    doubled = timedelta(seconds=1.0)
    assert before + doubled <= recorded.next_retry_at <= after + doubled
    await asyncio.sleep(1.1)
    fixed = Renderer(delay=0)
    made = await service(db, store, fixed, retry_seconds=0.5).get(source, THUMB, "webp")
    assert fixed.calls == 1
    recorded = await row(db, source)
    assert recorded is not None
    assert (recorded.status, recorded.error, recorded.storage_key) == (
        "ready",
        None,
        made.storage_key,
    )


async def test_an_undecodable_source_is_recorded(db, store) -> None:
    source = await put_object(db, store, images.truncated_jpeg())
    renderer = Renderer(delay=0)
    with pytest.raises(errors.InvalidImage, match="could not be decoded"):
        await service(db, store, renderer).get(source, THUMB, "webp")
    with pytest.raises(errors.InvalidImage):
        await service(db, store, renderer).get(source, THUMB, "webp")
    assert renderer.calls == 1


async def test_a_source_over_the_byte_limit_is_not_even_read(db, store) -> None:
    source = await put_object(db, store, images.jpeg_with_orientation(1))

    def unreadable() -> AsyncIterator[bytes]:
        raise AssertionError("read")

    too_big = VariantSource(
        source.bucket, source.key, source.version_id, source.size, source.profile, unreadable
    )
    renderer = Renderer()
    variants = service(db, store, renderer, max_source_bytes=source.size - 1)
    with pytest.raises(errors.ImageTooLarge, match="bytes"):
        await variants.get(too_big, THUMB, "webp")
    assert renderer.calls == 0
    assert (await row(db, source)).status == "failed"  # type: ignore[union-attr]


async def test_a_timed_out_render_answers_slowdown_with_retry_after(db, store) -> None:
    source = await put_object(db, store, images.jpeg_with_orientation(1))
    slow = Renderer(error=RenderTimeout("Rendering the variant took too long."), delay=0)
    variants = service(db, store, slow, retry_seconds=30)
    with pytest.raises(errors.RetryLater):
        await variants.get(source, THUMB, "webp")
    with pytest.raises(errors.RetryLater) as replayed:
        await variants.get(source, THUMB, "webp")
    assert (replayed.value.code, replayed.value.status) == ("SlowDown", 503)
    assert 28 <= int(replayed.value.headers()["Retry-After"]) <= 30
    assert slow.calls == 1


async def test_overload_gives_the_claim_back(db, store) -> None:
    source = await put_object(db, store, images.jpeg_with_orientation(1))
    full = Renderer(error=RenderOverloaded("Every render worker is busy."), delay=0)
    with pytest.raises(errors.RetryLater) as refused:
        await service(db, store, full).get(source, THUMB, "webp")
    assert (refused.value.code, refused.value.status) == ("SlowDown", 503)
    recorded = await row(db, source)
    assert recorded is not None
    # Not a failure of the image: nothing recorded, no back-off, claimable at once.
    assert (recorded.status, recorded.attempts, recorded.error) == ("pending", 0, None)
    working = Renderer(delay=0)
    await service(db, store, working).get(source, THUMB, "webp")
    assert working.calls == 1
    assert (await row(db, source)).attempts == 1  # type: ignore[union-attr]


# --- leases, fencing, retirement ------------------------------------------------------------


async def test_the_claim_of_a_dead_process_is_taken_over_when_its_lease_ends(db, store) -> None:
    source = await put_object(db, store, images.jpeg_with_orientation(1))
    variant_key = THUMB.variant_key("webp")
    # A process claims the row, then dies without a word.
    dead, _ = await derivatives.claim(db, source.version_id, variant_key, lease_seconds=0.5)
    assert dead == 1
    renderer = Renderer(delay=0)
    started = time.monotonic()
    variant = await service(db, store, renderer).get(source, THUMB, "webp")
    assert time.monotonic() - started >= 0.4
    assert renderer.calls == 1
    assert (await row(db, source)).attempts == 2  # type: ignore[union-attr]
    # Had it only been slow, its late result no longer counts.
    late = StoredBlob(PROFILE, store.new_key(), 1, '"late"', "image/webp")
    async with db.acquire() as conn:
        outcome = await derivatives.mark_ready(
            conn, source.bucket, source.key, source.version_id, variant_key, dead, late
        )
    assert outcome is Outcome.SUPERSEDED
    assert (await row(db, source)).storage_key == variant.storage_key  # type: ignore[union-attr]
    assert (
        await derivatives.mark_failed(
            db, source.version_id, variant_key, dead, "InvalidImage: late", 60
        )
        is Outcome.SUPERSEDED
    )


async def test_a_live_claimant_keeps_its_short_lease(db, store) -> None:
    # The lease is far shorter than the render: renewed while the claimant lives, it is never
    # taken over, so the variant is still rendered once.
    source = await put_object(db, store, images.jpeg_with_orientation(1))
    first, second = Renderer(delay=3), Renderer(delay=0)
    one, other = service(db, store, first, lease_seconds=1), service(db, store, second)
    rendering = asyncio.create_task(one.get(source, THUMB, "webp"))
    await asyncio.sleep(0.2)
    assert await other.get(source, THUMB, "webp") == await rendering
    assert (first.calls, second.calls) == (1, 0)
    assert (await row(db, source)).attempts == 1  # type: ignore[union-attr]


async def test_a_lost_claim_stops_being_renewed(db, store) -> None:
    source = await put_object(db, store, images.jpeg_with_orientation(1))
    variant_key = THUMB.variant_key("webp")
    attempt, _ = await derivatives.claim(db, source.version_id, variant_key, lease_seconds=5)
    assert attempt == 1
    assert await derivatives.renew(db, source.version_id, variant_key, attempt, 5)
    # Taken over (as after a lease ran out): the old attempt can no longer extend anything.
    await db.execute("UPDATE derivatives SET attempts = 2 WHERE version_id = $1", source.version_id)
    assert not await derivatives.renew(db, source.version_id, variant_key, attempt, 5)


async def test_an_object_replaced_during_its_render_gets_no_derivative(db, store) -> None:
    source = await put_object(db, store, images.jpeg_with_orientation(1))
    before = blob_files(store)

    async def overwrite() -> None:
        await db.execute(
            "UPDATE objects SET version_id = $3 WHERE bucket = $1 AND key = $2",
            source.bucket,
            source.key,
            uuid.uuid4(),
        )

    renderer = Renderer(during=overwrite)
    reserve = KeyReserve(db, {PROFILE: store.new_key}, GRACE_SECONDS)
    listed = await db.fetchval("SELECT count(*) FROM garbage")
    with pytest.raises(errors.RetryLater, match="object changed"):
        await service(db, store, renderer, reserve).get(source, THUMB, "webp")
    assert await row(db, source) is None
    # The blob it rendered is gone already, and so is its garbage entry (the keys reserved
    # ahead and never used leave the log as a gateway's do when it stops).
    assert blob_files(store) == before
    await reserve.release()
    assert await db.fetchval("SELECT count(*) FROM garbage") == listed


async def test_retiring_a_version_lists_its_derivative_blobs_as_garbage(db, store) -> None:
    source = await put_object(db, store, images.jpeg_with_orientation(1))
    variant = await service(db, store, Renderer(delay=0)).get(source, THUMB, "webp")
    # A failed derivative of the same version goes too.
    other = Preset.from_config("other", THUMB_CONFIG.model_copy(update={"width": 10}))
    failing = service(db, store, Renderer(error=InvalidImage("x"), delay=0))
    with pytest.raises(errors.InvalidImage):
        await failing.get(source, other, "webp")
    own = await db.fetchval(
        "SELECT storage_key FROM objects WHERE version_id = $1", source.version_id
    )
    async with db.acquire() as conn, conn.transaction():
        # With the version's own blob, in the same statement.
        await conn.execute(
            "SELECT gateway_retire($1, $2, $3, NULL, NULL)", source.version_id, PROFILE, own
        )
    assert await row(db, source) is None
    assert not await db.fetchval(
        "SELECT count(*) FROM derivatives WHERE version_id = $1", source.version_id
    )
    assert await listed_as_garbage(db, variant.storage_key)
    assert await listed_as_garbage(db, own)


async def test_claim_reports_the_row_it_lost_to(db, store) -> None:
    source = await put_object(db, store, images.jpeg_with_orientation(1))
    variant_key = THUMB.variant_key("webp")
    attempt, _ = await derivatives.claim(db, source.version_id, variant_key, 30)
    assert attempt == 1
    again, current = await derivatives.claim(db, source.version_id, variant_key, 30)
    assert again is None
    assert current is not None
    assert (current.status, current.attempts) == ("pending", 1)
    assert current.retry_in is not None and 28 < current.retry_in <= 30


async def test_a_failure_after_the_version_is_gone_leaves_no_row(db, store) -> None:
    source = await put_object(db, store, images.truncated_jpeg())
    # Overwritten after the GET read its row, before it claimed the derivative: the claim
    # makes a row of a version already retired.
    await db.execute(
        "UPDATE objects SET version_id = $3 WHERE bucket = $1 AND key = $2",
        source.bucket,
        source.key,
        uuid.uuid4(),
    )
    renderer = Renderer(delay=0)
    with pytest.raises(errors.InvalidImage):
        await service(db, store, renderer).get(source, THUMB, "webp")
    assert renderer.calls == 1
    assert await row(db, source) is None


async def test_a_local_source_is_located_not_read(db, store) -> None:
    """With locate, the worker reads the blob itself: the service never reads or sends it."""
    placed = await put_object(db, store, images.jpeg_with_orientation(6))
    storage_key = await db.fetchval(
        "SELECT storage_key FROM objects WHERE version_id = $1", placed.version_id
    )

    def unreadable() -> AsyncIterator[bytes]:
        raise AssertionError("read")

    async def locate() -> tuple[FilePart, ...]:
        return (FilePart(str(store.local_path(storage_key)), 0, placed.size),)

    source = VariantSource(
        placed.bucket,
        placed.key,
        placed.version_id,
        placed.size,
        placed.profile,
        unreadable,
        locate,
    )
    pool = RenderPool(LIMITS, workers=1, queue=4, timeout=20)
    try:
        variant = await service(db, store, pool).get(source, THUMB, "webp")
    finally:
        await pool.close()
    data = b"".join([chunk async for chunk in store.read(variant.storage_key, 0, variant.size)])
    assert decode(data).size == (64, 64)
