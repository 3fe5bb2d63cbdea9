"""The garbage intent log: storage keys of blobs that no row references (or not yet)."""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Callable, Sequence

import asyncpg

# Keys listed per round trip: a busy process takes a batch while its writes wait on one refill.
RESERVE_BATCH = 32
# A reserved key is handed out only while its entry is this young, and younger than a sixth
# of the grace period (so even after a failed renewal it is renewed again in time); older ones
# leave the log at the next refill.
RESERVE_MAX_AGE_SECONDS = 60.0


class BlobLostError(Exception):
    """The intent-log entry of a blob vanished before its row committed (an upload outlived the
    garbage grace period and the janitor removed the blob)."""


async def add(conn: asyncpg.Connection | asyncpg.Pool, profile: str, storage_key: str) -> None:
    await conn.execute(
        "INSERT INTO garbage (profile, storage_key) VALUES ($1, $2) ON CONFLICT DO NOTHING",
        profile,
        storage_key,
    )


async def claim(conn: asyncpg.Connection, profile: str, storage_key: str) -> bool:
    """Remove a blob from the log because a row now references it; False if it was not listed,
    or the janitor has started deleting it."""
    result = await conn.execute(
        "DELETE FROM garbage WHERE profile = $1 AND storage_key = $2 AND NOT collecting",
        profile,
        storage_key,
    )
    return result == "DELETE 1"


async def start_collecting(
    conn: asyncpg.Connection | asyncpg.Pool, grace_seconds: int, limit: int, profiles: Sequence[str]
) -> list[tuple[str, str]]:
    """Mark up to ``limit`` entries of ``profiles`` older than the grace period as being
    collected, and return them: the caller deletes their blobs, then ``forget``s them.

    Marked (and committed) before any blob is deleted: from then on a late claim of the entry
    fails (the upload errs) instead of committing a row whose blob is then deleted. An entry
    stays listed until its blob is gone, so a crash in between leaves an entry, never an
    unlisted blob; a marked entry is taken again a grace period after it was marked (its blob
    may be gone by then: deleting it again is harmless). SKIP LOCKED lets several gateways
    collect at once; entries of profiles no longer configured are left alone.
    """
    rows = await conn.fetch(
        "UPDATE garbage SET collecting = true, listed_at = now()"
        " WHERE (profile, storage_key) IN ("
        " SELECT profile, storage_key FROM garbage"
        " WHERE listed_at < now() - make_interval(secs => $1) AND profile = ANY($3::text[])"
        " ORDER BY listed_at LIMIT $2 FOR UPDATE SKIP LOCKED)"
        " RETURNING profile, storage_key",
        float(grace_seconds),
        limit,
        list(profiles),
    )
    return [(row["profile"], row["storage_key"]) for row in rows]


async def forget(
    conn: asyncpg.Connection | asyncpg.Pool, entries: Sequence[tuple[str, str]]
) -> None:
    """Remove the entries of blobs the janitor has deleted, and their data keys (blob_keys)."""
    if not entries:
        return
    await conn.execute(
        "WITH gone AS (DELETE FROM garbage WHERE collecting AND (profile, storage_key) IN"
        " (SELECT * FROM unnest($1::text[], $2::text[])) RETURNING profile, storage_key)"
        " DELETE FROM blob_keys k USING gone"
        " WHERE k.profile = gone.profile AND k.storage_key = gone.storage_key",
        [profile for profile, _ in entries],
        [storage_key for _, storage_key in entries],
    )


async def touch(conn: asyncpg.Connection | asyncpg.Pool, profile: str, storage_key: str) -> None:
    """Renew an entry whose blob is still being written, so no grace period runs out under it
    (too late once the janitor has started on it: the write will fail to claim it)."""
    await conn.execute(
        "UPDATE garbage SET listed_at = now()"
        " WHERE profile = $1 AND storage_key = $2 AND NOT collecting",
        profile,
        storage_key,
    )


async def remove(conn: asyncpg.Connection | asyncpg.Pool, profile: str, storage_key: str) -> None:
    """Unlist a blob deleted at once (never claimed), and its data key."""
    await conn.execute(
        "WITH gone AS (DELETE FROM garbage WHERE profile = $1 AND storage_key = $2)"
        " DELETE FROM blob_keys WHERE profile = $1 AND storage_key = $2",
        profile,
        storage_key,
    )


class KeyReserve:
    """Storage keys listed in the log ahead of need, so staging a blob costs no round trip.

    The log must list a key before its blob is written (a crash then leaves nothing
    unaccounted for); listing a batch in one INSERT gives the next writes of this process
    their keys without a commit each. A key is handed out only while its entry is young,
    well within the janitor's grace period; from then on the writer's heartbeat renews it
    (every third of the grace period).
    Keys never handed out have no file: ``release`` unlists them at shutdown, and after a
    crash the janitor collects their entries like any other.
    """

    def __init__(
        self,
        pool: asyncpg.Pool,
        new_keys: dict[str, Callable[[], str]],
        grace_seconds: float,
    ) -> None:
        self._pool = pool
        self._new_keys = new_keys
        self._max_age = min(RESERVE_MAX_AGE_SECONDS, grace_seconds / 6)
        # Per profile: (when listed, key), oldest first.
        self._keys: dict[str, deque[tuple[float, str]]] = {name: deque() for name in new_keys}
        self._stale: dict[str, list[str]] = {name: [] for name in new_keys}
        self._refills: dict[str, asyncio.Lock] = {name: asyncio.Lock() for name in new_keys}

    async def take(self, profile: str) -> str:
        """A fresh storage key of ``profile``, already listed in the log."""
        key = self._fresh(profile)
        if key is not None:
            return key
        async with self._refills[profile]:
            # Another writer's refill may have landed while this one waited.
            return self._fresh(profile) or await self._refill(profile)

    def _fresh(self, profile: str) -> str | None:
        keys = self._keys[profile]
        now = time.monotonic()
        while keys:
            listed, key = keys.popleft()
            if now - listed < self._max_age:
                return key
            self._stale[profile].append(key)
        return None

    async def _refill(self, profile: str) -> str:
        """Lists a batch (unlisting the stale keys at once) and returns its first key."""
        # Without a useful grace period a key is listed as it is needed, one at a time.
        count = RESERVE_BATCH if self._max_age >= 1 else 1
        new_key = self._new_keys[profile]
        batch = [new_key() for _ in range(count)]
        # If this fails, the stale keys are left to the janitor.
        stale, self._stale[profile] = self._stale[profile], []
        await self._pool.execute(
            "WITH unlisted AS ("
            " DELETE FROM garbage WHERE profile = $1 AND storage_key = ANY($3::text[]))"
            " INSERT INTO garbage (profile, storage_key)"
            " SELECT $1, unnest($2::text[]) ON CONFLICT DO NOTHING",
            profile,
            batch,
            stale,
        )
        listed = time.monotonic()
        self._keys[profile].extend((listed, key) for key in batch[1:])
        return batch[0]

    async def release(self) -> None:
        """Unlists every key not handed out (none has a file)."""
        for profile, keys in self._keys.items():
            unused = [key for _, key in keys] + self._stale[profile]
            keys.clear()
            self._stale[profile] = []
            if unused:
                await self._pool.execute(
                    "DELETE FROM garbage WHERE profile = $1 AND storage_key = ANY($2::text[])",
                    profile,
                    unused,
                )
