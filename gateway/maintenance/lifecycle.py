"""Lifecycle rules applied: one pass over every bucket that has rules, run by the janitor (one
process among all processes and nodes, at most once per limits.lifecycle_interval_seconds) or
now by ``gateway lifecycle run``.

Everything a rule removes goes the way of the request that would remove it by hand: an
expired current version is deleted as DeleteObject deletes it (on a versioned bucket, hidden
by a delete marker; its blobs and variants to the intent log), a non-current version or a
delete marker as DeleteObject with its versionId, an upload as AbortMultipartUpload. Each is
done only if it is still what the pass found (a write since wins), in its own short
transaction; pages of BATCH rows are read between them.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import datetime

import asyncpg

from gateway.config import GatewayConfig
from gateway.errors import GatewayError, ObjectChangedError, UploadGoneError
from gateway.meta import buckets, lifecycle_rows, uploads
from gateway.meta.buckets import Bucket
from gateway.meta.db import DATABASE_ERRORS
from gateway.meta.lifecycle_rows import Version
from gateway.objects.backend import ObjectBackend
from gateway.s3 import versions
from gateway.s3.lifecycle import LifecycleRule, days_cutoff

log = logging.getLogger(__name__)

BATCH = 500
# pg_try_advisory_lock key held through a pass: "gatewayL".
_LOCK_ID = 0x676174657761794C
_PASS_NAME = "lifecycle"

# What a rule did, as reported.
# Current versions deleted, or on a versioned bucket hidden by a delete marker.
EXPIRED = "current versions expired"
NONCURRENT = "noncurrent versions removed"
MARKERS = "expired delete markers removed"
ABORTED = "uploads aborted"
# Each action's label in the gateway_lifecycle_actions_total metric.
METRIC_LABELS = {
    EXPIRED: "expired",
    NONCURRENT: "noncurrent",
    MARKERS: "marker",
    ABORTED: "aborted",
}


def bucket_rules(config: GatewayConfig, bucket: Bucket) -> tuple[LifecycleRule, ...] | None:
    """The rules that apply to ``bucket``: the YAML's when it sets them, else those
    PutBucketLifecycleConfiguration stored; None: none."""
    configured = config.buckets.get(bucket.name)
    if configured is not None and configured.lifecycle_rules is not None:
        return configured.lifecycle_rules
    return bucket.lifecycle


@dataclass
class Tally:
    count: int = 0
    bytes: int = 0


@dataclass
class LifecycleReport:
    """What a pass did (or, dry, would do), by bucket, rule and action."""

    dry_run: bool
    tallies: dict[tuple[str, str, str], Tally] = field(default_factory=dict)

    def add(self, bucket: str, rule: LifecycleRule, action: str, size: int = 0) -> None:
        tally = self.tallies.setdefault((bucket, rule.id, action), Tally())
        tally.count += 1
        tally.bytes += size

    def total(self, action: str) -> int:
        return sum(tally.count for (_, _, done), tally in self.tallies.items() if done == action)


@asynccontextmanager
async def exclusive(pool: asyncpg.Pool) -> AsyncIterator[bool]:
    """Whether this process may run a pass now: False while another process (of any node
    sharing the database) runs one. Never waits."""
    async with pool.acquire() as conn:
        mine = bool(await conn.fetchval("SELECT pg_try_advisory_lock($1)", _LOCK_ID))
        try:
            yield mine
        finally:
            if mine:
                await conn.execute("SELECT pg_advisory_unlock($1)", _LOCK_ID)


async def claim_due_pass(pool: asyncpg.Pool, interval_seconds: float) -> bool:
    """Whether a pass is due (none started within the interval), recording that one starts
    now if so: every janitor asks, one a interval gets True."""
    return bool(
        await pool.fetchval(
            "INSERT INTO maintenance_passes (name, started) VALUES ($1, now())"
            " ON CONFLICT (name) DO UPDATE SET started = now()"
            " WHERE maintenance_passes.started <= now() - make_interval(secs => $2)"
            " RETURNING true",
            _PASS_NAME,
            float(interval_seconds),
        )
    )


class _Pass:
    def __init__(
        self,
        pool: asyncpg.Pool,
        backends: dict[str, ObjectBackend],
        now: datetime,
        report: LifecycleReport,
    ) -> None:
        self.pool = pool
        self.backends = backends
        self.now = now
        self.report = report

    async def apply(self, bucket: Bucket, rule: LifecycleRule) -> None:
        if rule.abort_incomplete_upload_days is not None:
            await self._abort_uploads(bucket, rule, rule.abort_incomplete_upload_days)
        cutoff = rule.expiry_cutoff(self.now)
        if cutoff is not None:
            await self._expire_current(bucket, rule, cutoff)
        if rule.noncurrent_days is not None or rule.expired_object_delete_marker:
            await self._remove_others(bucket, rule)

    async def _expire_current(self, bucket: Bucket, rule: LifecycleRule, cutoff: datetime) -> None:
        after = None
        while True:
            page = await lifecycle_rows.current_versions(
                self.pool, bucket.name, rule.filter.prefix, after, BATCH
            )
            # A PutBucketVersioning during a long pass applies from the next page on (and
            # the delete itself refuses an unversioned delete once the bucket is versioned).
            bucket = await buckets.get_bucket(self.pool, bucket.name) or bucket
            for version in page:
                due = version.since < cutoff
                if not due or not rule.filter.matches(version.key, version.tags, version.size):
                    continue
                if self.report.dry_run or await self._expire(bucket, version):
                    self.report.add(bucket.name, rule, EXPIRED, version.size)
            if len(page) < BATCH:
                return
            after = page[-1].key

    async def _expire(self, bucket: Bucket, version: Version) -> bool:
        """Delete a current version as DeleteObject would, if it still is the current one."""
        backend = self.backends[bucket.profile]
        try:
            if bucket.versioning is None:
                return await backend.delete(bucket.name, version.key, expected=version.version_id)
            null_marker = not versions.keeps_versions(bucket.versioning)
            marker = await backend.delete_key(
                bucket.name, version.key, null_marker, expected=version.version_id
            )
            return marker is not None
        except (GatewayError, ObjectChangedError):
            # Left for the next pass, which finds it again if it is still due.
            log.warning("lifecycle could not expire %s/%s", bucket.name, version.key, exc_info=True)
            return False

    async def _remove_others(self, bucket: Bucket, rule: LifecycleRule) -> None:
        """Non-current versions past NoncurrentDays (beyond the NewerNoncurrentVersions
        newest of their key), and delete markers left alone (ExpiredObjectDeleteMarker)."""
        cutoff = None
        if rule.noncurrent_days is not None:
            cutoff = days_cutoff(self.now, rule.noncurrent_days)
        kept = rule.newer_noncurrent_versions or 0
        after = None
        while True:
            page = await lifecycle_rows.other_versions(
                self.pool, bucket.name, rule.filter.prefix, after, BATCH
            )

            def action_on(version: Version) -> str | None:
                if version.lone_marker and rule.expired_object_delete_marker:
                    return MARKERS
                if (
                    cutoff is not None
                    and not version.current_marker
                    and version.since < cutoff
                    and version.newer >= kept
                    and rule.filter.matches(version.key, version.tags, version.size)
                ):
                    return NONCURRENT
                return None

            for version in page:
                action = action_on(version)
                if action is None:
                    continue
                if self.report.dry_run or await self._remove(bucket, version, action_on):
                    self.report.add(bucket.name, rule, action, version.size)
            if len(page) < BATCH:
                return
            after = page[-1]

    async def _remove(
        self, bucket: Bucket, version: Version, action_on: Callable[[Version], str | None]
    ) -> bool:
        async with self.pool.acquire() as conn:
            return await lifecycle_rows.remove_version(
                conn, bucket.name, version, lambda now: action_on(now) is not None
            )

    async def _abort_uploads(self, bucket: Bucket, rule: LifecycleRule, days: int) -> None:
        cutoff = days_cutoff(self.now, days)
        after = None
        while True:
            page = await uploads.uploads_started_before(
                self.pool, bucket.name, rule.filter.prefix, cutoff, after, BATCH
            )
            for upload in page:
                if not self.report.dry_run:
                    backend = self.backends[upload.profile or bucket.profile]
                    try:
                        await backend.abort_upload(upload)
                    except UploadGoneError:
                        continue  # completed or aborted meanwhile
                    except GatewayError:
                        # Its storage is unavailable: the next pass finds it again.
                        log.warning("lifecycle could not abort upload %s", upload.upload_id)
                        continue
                self.report.add(bucket.name, rule, ABORTED)
            if len(page) < BATCH:
                return
            after = page[-1]


async def apply_rules(
    pool: asyncpg.Pool,
    backends: dict[str, ObjectBackend],
    config: GatewayConfig,
    now: datetime,
    dry_run: bool = False,
    only_bucket: str | None = None,
) -> LifecycleReport:
    """One pass of every enabled rule of every bucket (``only_bucket``: of that one) as of
    ``now``; ``dry_run``: count what it would do, doing nothing."""
    report = LifecycleReport(dry_run)
    work = _Pass(pool, backends, now, report)
    for bucket in await buckets.list_buckets(pool):
        if only_bucket is not None and bucket.name != only_bucket:
            continue
        if bucket.profile not in backends:
            continue
        for rule in bucket_rules(config, bucket) or ():
            if not rule.enabled:
                continue
            try:
                await work.apply(bucket, rule)
            except (GatewayError, *DATABASE_ERRORS):
                # The other buckets' rules still run; this one is tried again next pass.
                log.warning(
                    "lifecycle rule %s of bucket %s failed", rule.id, bucket.name, exc_info=True
                )
    return report
