"""Storage keys listed in the garbage log ahead of need (KeyReserve), against real Postgres."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator

import asyncpg
import pytest

from gateway.meta import garbage
from gateway.meta.db import create_pool, migrate
from gateway.meta.garbage import RESERVE_BATCH, KeyReserve
from tests.conftest import create_database

PROFILE = "local"


@pytest.fixture(scope="module")
def reserve_dsn(pg_server_dsn: str) -> str:
    return create_database(pg_server_dsn)


@pytest.fixture
async def db(reserve_dsn: str) -> AsyncIterator[asyncpg.Pool]:
    pool = await create_pool(reserve_dsn, 1, 10)
    async with pool.acquire() as conn:
        await migrate(conn)
        await conn.execute("DELETE FROM garbage")
    yield pool
    await pool.close()


def reserve(db: asyncpg.Pool, grace_seconds: float = 3600) -> KeyReserve:
    return KeyReserve(db, {PROFILE: lambda: uuid.uuid4().hex}, grace_seconds)


async def listed(db: asyncpg.Pool) -> set[str]:
    return {row["storage_key"] for row in await db.fetch("SELECT storage_key FROM garbage")}


async def test_every_key_handed_out_is_listed_first(db) -> None:
    keys = reserve(db)
    taken = [await keys.take(PROFILE) for _ in range(RESERVE_BATCH + 1)]
    assert len(set(taken)) == len(taken)
    # One batch, then a second for the key past it: each listed before it was handed out.
    assert set(taken) <= await listed(db)
    assert len(await listed(db)) == 2 * RESERVE_BATCH


async def test_concurrent_takers_share_refills(db) -> None:
    keys = reserve(db)
    taken = await asyncio.gather(*(keys.take(PROFILE) for _ in range(3 * RESERVE_BATCH)))
    assert len(set(taken)) == 3 * RESERVE_BATCH
    assert set(taken) == await listed(db)


async def test_release_unlists_only_keys_never_handed_out(db) -> None:
    keys = reserve(db)
    taken = {await keys.take(PROFILE) for _ in range(3)}
    await keys.release()
    assert await listed(db) == taken


async def test_stale_keys_are_not_handed_out_and_leave_the_log(db, monkeypatch) -> None:
    keys = reserve(db)
    first = await keys.take(PROFILE)
    batch = await listed(db) - {first}
    # Time passes beyond the age a reserved key may be handed out at.
    clock = garbage.time.monotonic() + garbage.RESERVE_MAX_AGE_SECONDS + 1
    monkeypatch.setattr(garbage.time, "monotonic", lambda: clock)
    fresh = await keys.take(PROFILE)
    assert fresh not in batch
    now_listed = await listed(db)
    assert not batch & now_listed
    assert {first, fresh} <= now_listed


async def test_without_a_useful_grace_period_keys_are_listed_one_at_a_time(db) -> None:
    keys = reserve(db, grace_seconds=0)
    taken = [await keys.take(PROFILE) for _ in range(3)]
    assert await listed(db) == set(taken)


async def test_a_failed_refill_fails_only_its_taker(db) -> None:
    keys = reserve(db)
    await db.execute("ALTER TABLE garbage RENAME TO garbage_away")
    try:
        with pytest.raises(asyncpg.UndefinedTableError):
            await keys.take(PROFILE)
    finally:
        await db.execute("ALTER TABLE garbage_away RENAME TO garbage")
    assert await keys.take(PROFILE) in await listed(db)
