"""Metadata work shared by concurrent requests, against real Postgres: storage keys listed in
the garbage log ahead of need (KeyReserve), and object lookups answered together
(BatchedLookups)."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime

import asyncpg
import pytest

from gateway.meta import garbage, object_rows
from gateway.meta.garbage import RESERVE_BATCH, KeyReserve
from gateway.meta.object_rows import BatchedLookups
from tests.conftest import create_database, migrated_pool

PROFILE = "local"
BUCKET = "lookups"


@pytest.fixture(scope="module")
def meta_dsn(pg_server_dsn: str) -> str:
    return create_database(pg_server_dsn)


@pytest.fixture
async def db(meta_dsn: str) -> AsyncIterator[asyncpg.Pool]:
    async with migrated_pool(meta_dsn, BUCKET, PROFILE, 10) as pool:
        await pool.execute("DELETE FROM garbage")
        yield pool


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


# --- BatchedLookups -------------------------------------------------------------------------


async def put_rows(db: asyncpg.Pool, keys: list[str]) -> None:
    await db.execute(
        "INSERT INTO objects (bucket, key, version_id, size, etag, content_type, profile,"
        " storage_key, last_modified, metadata)"
        " SELECT $1, k, gen_random_uuid(), length(k), md5(k), 'text/plain', $2, md5(k), now(),"
        " '{}'::jsonb FROM unnest($3::text[]) AS k"
        " ON CONFLICT (bucket, key) DO NOTHING",
        BUCKET,
        PROFILE,
        keys,
    )


def batch_sizes(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """The sizes of the batched lookup queries made from now on, in order."""
    sizes: list[int] = []
    real = object_rows.lookup_many

    async def counted(conn, batch):
        sizes.append(len(batch))
        return await real(conn, batch)

    monkeypatch.setattr(object_rows, "lookup_many", counted)
    return sizes


async def test_lookups_of_one_turn_share_a_query_and_keep_their_order(db, monkeypatch) -> None:
    present = [f"k/{i:03d}" for i in range(40)]
    await put_rows(db, present)
    targets = [
        *((BUCKET, key) for key in present),
        (BUCKET, "missing"),
        ("no-such-bucket", "k/000"),
        (BUCKET, "k/007"),  # twice in one batch
    ]
    lookups = BatchedLookups(db)
    queries = batch_sizes(monkeypatch)
    results = await asyncio.gather(*(lookups.lookup(b, k) for b, k in targets))
    assert queries == [len(targets)]
    for (bucket, key), (found, record) in zip(targets[:40], results[:40], strict=True):
        assert found is not None and found.name == bucket
        assert record is not None and record.key == key and record.size == len(key)
    found, record = results[40]
    assert found is not None and record is None
    assert results[41] == (None, None)
    assert results[42][1] is not None and results[42][1].key == "k/007"


async def test_variant_lookups_share_the_query_of_their_turn(db, monkeypatch) -> None:
    """A variant GET's lookup (bucket, object and derivative) is batched with the others of
    its turn, plain GETs' among them."""
    await put_rows(db, ["v/a", "v/b"])
    await db.execute(
        "INSERT INTO derivatives (version_id, variant_key, status, profile, storage_key, size,"
        " etag, content_type) SELECT version_id, 'thumb:webp:h', 'ready', 'p', 'blob', 7,"
        " '\"e\"', 'image/webp' FROM objects WHERE bucket = $1 AND key = 'v/a'",
        BUCKET,
    )
    lookups = BatchedLookups(db)
    queries = batch_sizes(monkeypatch)
    hit, miss, plain = await asyncio.gather(
        lookups.lookup_variant(BUCKET, "v/a", "thumb:webp:h"),
        lookups.lookup_variant(BUCKET, "v/b", "thumb:webp:h"),
        lookups.lookup(BUCKET, "v/a"),
    )
    assert queries == [3]
    assert hit == await object_rows.lookup_variant(db, BUCKET, "v/a", "thumb:webp:h")
    assert hit[2] is not None and hit[2].storage_key == "blob" and hit[2].size == 7
    assert miss[1] is not None and miss[1].key == "v/b" and miss[2] is None
    assert plain == hit[:2]


async def test_a_lone_lookup_is_answered_like_lookup(db) -> None:
    await put_rows(db, ["alone"])
    lookups = BatchedLookups(db)
    assert await lookups.lookup(BUCKET, "alone") == await object_rows.lookup(db, BUCKET, "alone")


async def test_a_write_acknowledged_before_a_lookup_is_seen(db) -> None:
    lookups = BatchedLookups(db)
    assert (await lookups.lookup(BUCKET, "late"))[1] is None
    await put_rows(db, ["late"])
    (_, record), _ = await asyncio.gather(
        lookups.lookup(BUCKET, "late"), lookups.lookup(BUCKET, "x")
    )
    assert record is not None and record.key == "late"


async def test_a_target_postgres_refuses_fails_only_its_own_lookup(db) -> None:
    """An anonymous GET /%00/k must not fail the GETs that happen to share its query."""
    await put_rows(db, ["good"])
    lookups = BatchedLookups(db)
    bad, good = await asyncio.gather(
        lookups.lookup("nul\x00bucket", "k"), lookups.lookup(BUCKET, "good"), return_exceptions=True
    )
    assert isinstance(bad, asyncpg.CharacterNotInRepertoireError)
    assert not isinstance(good, BaseException)
    assert good[1] is not None and good[1].key == "good"


async def test_a_failed_query_fails_every_lookup_of_its_batch_only(db) -> None:
    lookups = BatchedLookups(db)
    await db.execute("ALTER TABLE objects RENAME TO objects_away")
    try:
        results = await asyncio.gather(
            lookups.lookup(BUCKET, "a"), lookups.lookup(BUCKET, "b"), return_exceptions=True
        )
    finally:
        await db.execute("ALTER TABLE objects_away RENAME TO objects")
    assert all(isinstance(r, asyncpg.UndefinedTableError) for r in results)
    await put_rows(db, ["after"])
    assert (await lookups.lookup(BUCKET, "after"))[1] is not None


async def test_a_lookup_given_up_leaves_the_others_of_its_batch_answered(db) -> None:
    await put_rows(db, ["kept"])
    lookups = BatchedLookups(db)
    abandoned = asyncio.ensure_future(lookups.lookup(BUCKET, "gone"))
    kept = asyncio.ensure_future(lookups.lookup(BUCKET, "kept"))
    await asyncio.sleep(0)
    abandoned.cancel()
    _, record = await kept
    assert record is not None and record.key == "kept"
    assert abandoned.cancelled()


class _Unreachable:
    """A pool whose server refuses every connection, before the gateway's own pool translates
    the error: what a batch sees must still end every lookup of it."""

    async def fetch(self, *args: object, **kwargs: object) -> None:
        raise ConnectionRefusedError("refused")

    async def fetchrow(self, *args: object, **kwargs: object) -> None:
        raise ConnectionRefusedError("refused")


async def test_any_error_of_a_batch_ends_every_lookup_of_it() -> None:
    lookups = BatchedLookups(_Unreachable())  # type: ignore[arg-type]
    results = await asyncio.wait_for(
        asyncio.gather(
            *(lookups.lookup(BUCKET, f"k{i}") for i in range(5)), return_exceptions=True
        ),
        timeout=30,
    )
    assert all(isinstance(result, ConnectionRefusedError) for result in results), results


# --- the janitor's marks ----------------------------------------------------------------------


async def test_an_entry_being_collected_is_never_claimed_nor_renewed(db) -> None:
    """Once the janitor has started on an entry (and may be deleting its blob), a write that
    outlived the grace period cannot commit a row on that blob: its claim fails."""
    for key in ("part", "object"):
        await garbage.add(db, PROFILE, key)
    await db.execute("UPDATE garbage SET listed_at = now() - interval '1 hour'")
    taken = await garbage.start_collecting(db, 60, 10, [PROFILE])
    assert sorted(taken) == [(PROFILE, "object"), (PROFILE, "part")]

    async with db.acquire() as conn:
        assert not await garbage.claim(conn, PROFILE, "part")
        record = object_rows.ObjectRecord(
            bucket=BUCKET,
            key="late-claim",
            version_id=uuid.uuid4(),
            size=1,
            etag='"0"',
            content_type="text/plain",
            profile=PROFILE,
            storage_key="object",
            last_modified=datetime.now(UTC),
        )
        with pytest.raises(garbage.BlobLostError):
            await object_rows.commit_object(conn, record)
    await garbage.touch(db, PROFILE, "part")
    # Listed until the janitor is done with them, and not taken again within the grace period.
    assert await listed(db) == {"part", "object"}
    assert await garbage.start_collecting(db, 60, 10, [PROFILE]) == []
    await garbage.forget(db, taken)
    assert await listed(db) == set()
    assert await object_rows.get_object(db, BUCKET, "late-claim") is None
