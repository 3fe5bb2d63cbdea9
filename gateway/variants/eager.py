"""Eager presets: variants rendered after an object is written, before anyone asks.

The write only inserts a job (gateway.meta.jobs) in its own transaction; this background task,
one per gateway process, takes jobs and renders them through the VariantService, so an eager
render is the same single-flight, claimed, recorded render a GET would make (and a GET arriving
meanwhile waits for it rather than rendering again).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable

import asyncpg

from gateway.errors import GatewayError
from gateway.meta import jobs, object_rows
from gateway.meta.db import DATABASE_ERRORS, DatabaseUnavailableError
from gateway.meta.jobs import Job
from gateway.meta.object_rows import ObjectRecord
from gateway.s3.errors import S3Error
from gateway.variants.errors import RetryLater
from gateway.variants.presets import PresetCatalog
from gateway.variants.service import VariantService, VariantSource

log = logging.getLogger(__name__)

# How often an idle gateway looks for jobs another gateway queued (its own wake it at once).
IDLE_POLL_SECONDS = 2.0
# When every render worker was busy: try the job again after this.
BUSY_RETRY_SECONDS = 5.0
# A job taken this many times without finishing (workers always busy, gateways dying mid-job)
# is dropped: the variant will be made on its first GET instead.
MAX_ATTEMPTS = 5

_DB_ERRORS = (OSError, *DATABASE_ERRORS)


class EagerRenderer:
    def __init__(
        self,
        pool: asyncpg.Pool,
        service: VariantService,
        catalog: Callable[[], PresetCatalog],
        source_for: Callable[[ObjectRecord], VariantSource],
        *,
        concurrency: int,
        lease_seconds: float,
        poll_seconds: float = IDLE_POLL_SECONDS,
    ) -> None:
        self._pool = pool
        self._service = service
        # The presets of the configuration current now: a reload may change them.
        self._catalog = catalog
        self._source_for = source_for
        # As many jobs at once as there are render workers: eager work never queues ahead of
        # the GETs that wait for the pool.
        self._concurrency = max(1, concurrency)
        self._lease = lease_seconds
        self._poll = poll_seconds
        self._wake = asyncio.Event()

    def wake(self) -> None:
        self._wake.set()

    async def run(self) -> None:
        """Take and render jobs until cancelled."""
        await asyncio.gather(*(self._work() for _ in range(self._concurrency)))

    async def _work(self) -> None:
        while True:
            # Cleared before looking, so a wake arriving while we look is not lost.
            self._wake.clear()
            if not self._catalog().any_eager:
                # Nothing to render until a reload adds an eager preset (it wakes us).
                await self._wake.wait()
                continue
            try:
                job = await jobs.take(self._pool, self._lease)
            except DatabaseUnavailableError:
                # Logged once per outage, where it was detected.
                job = None
            except _DB_ERRORS:
                log.warning("could not take a variant job", exc_info=True)
                job = None
            if job is None:
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(self._poll):
                        await self._wake.wait()
                continue
            try:
                await self.do(job)
            except asyncio.CancelledError:
                # Shutting down: hand the job back now rather than when its lease ends.
                with contextlib.suppress(*_DB_ERRORS):
                    await asyncio.shield(jobs.postpone(self._pool, job, 0))
                raise
            except DatabaseUnavailableError:
                log.info(
                    "variant job %s of %s/%s postponed: database unavailable",
                    job.preset,
                    job.bucket,
                    job.key,
                )
            except Exception:
                # Left leased: taken again when the lease ends, dropped after MAX_ATTEMPTS.
                log.exception("variant job %s of %s/%s failed", job.preset, job.bucket, job.key)

    async def do(self, job: Job) -> None:
        record = await object_rows.get_object(self._pool, job.bucket, job.key)
        # The configuration current now: a job outlives a reload.
        catalog = self._catalog()
        preset = catalog.eager_preset(job.bucket, job.preset)
        sealed_by_client = record is not None and record.metadata.customer_key is not None
        if (
            record is None
            or record.version_id != job.version_id
            or preset is None
            or sealed_by_client
        ):
            # Overwritten or deleted since (its derivatives were retired with it), the
            # preset is no longer eager there, or only its owner's key opens it (SSE-C).
            await jobs.finish(self._pool, job)
            return
        if job.attempts > MAX_ATTEMPTS:
            log.warning("giving up variant job %s of %s/%s", job.preset, job.bucket, job.key)
            await jobs.finish(self._pool, job)
            return
        source = self._source_for(record)
        # "auto" presets: every format class a GET may ask for.
        for format_class in preset.format_classes(catalog.avif):
            try:
                await self._service.get(source, preset, format_class)
            except (RetryLater, GatewayError):
                # Busy, or its storage is unavailable for now: the job waits, and is kept.
                await jobs.postpone(self._pool, job, BUSY_RETRY_SECONDS)
                return
            except S3Error as error:
                # Recorded on the derivative row; GETs answer it. The other formats of the
                # same source would fail the same way.
                log.info("eager variant %s of %s/%s: %s", preset.name, job.bucket, job.key, error)
                break
        await jobs.finish(self._pool, job)
