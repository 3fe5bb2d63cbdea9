"""Queries on the variant_jobs table: eager variants waiting to be rendered.

A job is (object version, preset name). It is inserted in the transaction that commits the
object, so an upload only pays for one INSERT and never waits for a render. Gateways take jobs
with ``FOR UPDATE SKIP LOCKED`` and a lease (run_after moves forward), not by holding a
transaction open through a render: a gateway that dies mid-job leaves it to be taken again
when the lease ends. ``attempts`` fences a job as it does a derivative claim.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass

import asyncpg


@dataclass(frozen=True)
class Job:
    bucket: str
    key: str
    version_id: uuid.UUID
    preset: str
    attempts: int


async def take(conn: asyncpg.Connection | asyncpg.Pool, lease_seconds: float) -> Job | None:
    """Lease the oldest due job (skipping those another gateway is taking right now)."""
    row = await conn.fetchrow(
        "UPDATE variant_jobs SET attempts = attempts + 1,"
        " run_after = now() + make_interval(secs => $1)"
        " WHERE (version_id, preset) = (SELECT version_id, preset FROM variant_jobs"
        " WHERE run_after <= now() ORDER BY run_after LIMIT 1 FOR UPDATE SKIP LOCKED)"
        " RETURNING bucket, key, version_id, preset, attempts",
        float(lease_seconds),
    )
    return Job(**dict(row)) if row else None


async def finish(conn: asyncpg.Connection | asyncpg.Pool, job: Job) -> None:
    """The job is done (or given up): remove it, unless its lease passed to another gateway."""
    await conn.execute(
        "DELETE FROM variant_jobs WHERE version_id = $1 AND preset = $2 AND attempts = $3",
        job.version_id,
        job.preset,
        job.attempts,
    )


async def postpone(conn: asyncpg.Connection | asyncpg.Pool, job: Job, delay_seconds: float) -> None:
    """Take the job again in ``delay_seconds`` (the render workers were all busy)."""
    await conn.execute(
        "UPDATE variant_jobs SET run_after = now() + make_interval(secs => $4)"
        " WHERE version_id = $1 AND preset = $2 AND attempts = $3",
        job.version_id,
        job.preset,
        job.attempts,
        float(delay_seconds),
    )
