"""The janitor: aborts abandoned multipart uploads, applies lifecycle rules, removes the
derivatives no preset makes any more and old failed-render records, and deletes the blobs the
garbage log lists once their grace period is over."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Coroutine, Mapping
from datetime import UTC, datetime
from typing import Any

import asyncpg

from gateway import metrics
from gateway.config import GatewayConfig
from gateway.errors import GatewayError
from gateway.live import Snapshot
from gateway.maintenance import lifecycle, variant_cleanup
from gateway.meta import bucket_usage, garbage, uploads
from gateway.meta.db import DatabaseUnavailableError
from gateway.objects.backend import ObjectBackend
from gateway.storage import BlobStore

log = logging.getLogger(__name__)

BATCH = 500


async def collect_garbage(
    pool: asyncpg.Pool, stores: Mapping[str, BlobStore], grace_seconds: int
) -> int:
    """Delete every blob listed for longer than the grace period; returns how many.

    Each blob is deleted before its entry leaves the log, so a crash at any moment leaves
    nothing unlisted (see garbage.start_collecting).
    """
    removed = 0
    while True:
        entries = await garbage.start_collecting(pool, grace_seconds, BATCH, list(stores))
        deleted = []
        for profile, storage_key in entries:
            try:
                await stores[profile].delete(storage_key)
            except (OSError, GatewayError):
                # Still listed, so a later pass retries; never forgotten.
                log.warning("could not delete blob %s; retrying later", storage_key, exc_info=True)
                continue
            deleted.append((profile, storage_key))
        await garbage.forget(pool, deleted)
        removed += len(deleted)
        # After a failure, the rest waits for a later pass rather than meet it again now.
        if len(entries) < BATCH or len(deleted) < len(entries):
            return removed


async def abort_abandoned_uploads(
    pool: asyncpg.Pool, backends: Mapping[str, ObjectBackend], max_age_seconds: float
) -> int:
    """Abort every multipart upload started longer ago than that; returns how many.

    Their parts' blobs enter the garbage log, to be deleted after the grace period like any;
    what the upload holds elsewhere (an upstream's own upload) is released by its backend.
    """
    aborted = 0
    while True:
        async with pool.acquire() as conn:
            batch = await uploads.abort_abandoned(conn, max_age_seconds, BATCH)
        for upload in batch:
            backend = backends.get(upload.profile or "")
            if backend is None:
                continue
            try:
                await backend.release_upload(upload)
            except GatewayError:
                log.warning("could not release the storage of upload %s", upload.upload_id)
        aborted += len(batch)
        if len(batch) < BATCH:
            return aborted


async def apply_lifecycle_rules(
    pool: asyncpg.Pool,
    backends: Mapping[str, ObjectBackend],
    config: GatewayConfig,
    interval_seconds: float,
) -> None:
    """A lifecycle pass, if one is due and no other process is running one."""
    async with lifecycle.exclusive(pool) as mine:
        if not mine or not await lifecycle.claim_due_pass(pool, interval_seconds):
            return
        report = await lifecycle.apply_rules(pool, dict(backends), config, datetime.now(UTC))
    counted = metrics.current()
    for (bucket, rule, action), tally in sorted(report.tallies.items()):
        if counted is not None:
            counted.lifecycle_actions(lifecycle.METRIC_LABELS[action]).inc(tally.count)
        log.info(
            "lifecycle rule %s of bucket %s: %d %s (%d bytes)",
            rule,
            bucket,
            tally.count,
            action,
            tally.bytes,
        )


async def remove_unused_variants(pool: asyncpg.Pool, snapshot: Snapshot) -> None:
    """Derivatives of presets since edited or removed, and failed-render records past the
    back-off ceiling (see gateway.maintenance.variant_cleanup)."""
    limits = snapshot.config.limits
    stale = await variant_cleanup.retire_stale_variants(
        pool, snapshot.presets.variant_keys(), limits.stale_variant_seconds
    )
    if stale.derivatives:
        log.info(
            "janitor removed %d derivatives (%d bytes) of presets since edited or removed",
            stale.derivatives,
            stale.bytes,
        )
    failed = await variant_cleanup.remove_old_failures(pool, limits.render_retry_max_seconds)
    if failed:
        log.info("janitor removed %d failed-render records past their back-off", failed)


async def _duty(name: str, work: Coroutine[Any, Any, object]) -> bool:
    """Run one of the janitor's duties; False if it failed (logged, retried next pass)."""
    try:
        await work
    except DatabaseUnavailableError:
        return False  # logged once per outage, where it was detected
    except Exception:
        log.warning("janitor pass of %s failed; retrying later", name, exc_info=True)
        return False
    return True


async def _abort_uploads(
    pool: asyncpg.Pool, backends: Mapping[str, ObjectBackend], max_age_seconds: float
) -> None:
    aborted = await abort_abandoned_uploads(pool, backends, max_age_seconds)
    if aborted:
        log.info("janitor aborted %d abandoned multipart uploads", aborted)


async def _collect(pool: asyncpg.Pool, stores: Mapping[str, BlobStore], grace: int) -> None:
    removed = await collect_garbage(pool, stores, grace)
    if removed:
        log.info("janitor removed %d blobs", removed)
    counted = metrics.current()
    if counted is not None:
        counted.janitor_collected.inc(removed)


async def run_janitor(
    pool: asyncpg.Pool,
    stores: Mapping[str, BlobStore],
    backends: Mapping[str, ObjectBackend],
    current: Callable[[], Snapshot],
) -> None:
    """Every limits.janitor_interval_seconds (of the configuration current then), a pass."""
    while True:
        counted = metrics.current()
        snapshot = current()
        limits = snapshot.config.limits
        duties = (
            ("abandoned uploads", _abort_uploads(pool, backends, limits.abandoned_upload_seconds)),
            (
                "lifecycle rules",
                apply_lifecycle_rules(
                    pool, backends, snapshot.config, limits.lifecycle_interval_seconds
                ),
            ),
            ("variant clean-up", remove_unused_variants(pool, snapshot)),
            ("garbage", _collect(pool, stores, limits.garbage_grace_seconds)),
            ("usage", bucket_usage.fold_deltas(pool)),
        )
        # Each on its own: one that fails (a bug, an upstream down) never stops the others,
        # garbage collection above all.
        done = [await _duty(name, work) for name, work in duties]
        if counted is not None:
            counted.janitor_runs("ok" if all(done) else "failed").inc()
        await asyncio.sleep(limits.janitor_interval_seconds)
