"""Each gateway process's copy of the usable access keys of the database.

A request never waits for Postgres to learn its key: the whole set of usable keys (few: they
are made by hand) is held in memory, and reloaded whenever `gateway keys create` or `revoke`
NOTIFies, which a connection of its own LISTENs for. A key the copy does not hold is unknown,
without a query, so requests signed with made-up keys cost the database nothing.

While that connection is down (or a notification could be lost on a half-open one, found by
a ``SELECT 1`` every ``cache_seconds``), the copy is reloaded every ``cache_seconds`` through
the pool instead. A copy that could not be confirmed for ``3 * cache_seconds`` is not used
(lookups raise DirectoryStale): a key revoked meanwhile is never honoured for longer.

The same connection carries `gateway reload --all-nodes`: a NOTIFY on RELOAD_CHANNEL has every
gateway process on every node read its own configuration file again.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime

import asyncpg

from gateway.config import AccessKeysConfig, CredentialConfig, DatabaseConfig
from gateway.meta import access_keys
from gateway.meta.access_keys import UsableKey
from gateway.meta.db import DATABASE_ERRORS, connect

log = logging.getLogger(__name__)

# Every way the listening connection or a reload may fail that a later attempt may not.
_FAILURES = (*DATABASE_ERRORS, OSError, TimeoutError)
# A copy older than this many cache_seconds is not used.
STALE_AFTER = 3
RELOAD_CHANNEL = "gateway_reload"


class DirectoryStale(Exception):
    """The copy of the keys could not be confirmed lately: a revoked key might be in it."""


class KeyDirectory:
    def __init__(
        self,
        pool: asyncpg.Pool,
        dsn: str,
        config: AccessKeysConfig,
        database: DatabaseConfig,
        on_reload: Callable[[], None] = lambda: None,
    ) -> None:
        self._pool = pool
        self._on_reload = on_reload
        self._dsn = dsn
        self._configured_key = config.encryption_key
        self._interval = config.cache_seconds
        self._database = database
        self._keys: dict[str, UsableKey] = {}
        self._confirmed = 0.0
        self._changed = asyncio.Event()
        # Keys whose secret did not open, already warned about (once each, not per reload).
        self._warned: set[str] = set()
        self._listening = True

    def get(self, access_key: str) -> CredentialConfig | None:
        """The credential of a usable key; None for an unknown, revoked or expired one."""
        if time.monotonic() - self._confirmed > STALE_AFTER * self._interval:
            raise DirectoryStale()
        found = self._keys.get(access_key)
        if found is None:
            return None
        if found.expires_at is not None and found.expires_at <= datetime.now(UTC):
            return None
        return found.credential

    async def reload(self, conn: asyncpg.Connection | None = None) -> None:
        """Replace the copy with what the database holds now (on ``conn``, else the pool's)."""
        if conn is None:
            async with self._pool.acquire() as pooled:
                await self._load(pooled)
        else:
            await self._load(conn)

    async def _load(self, conn: asyncpg.Connection) -> None:
        # Timed before the query: a change committed while it runs is notified after.
        started = time.monotonic()
        keys = await access_keys.sealing_keys(conn, self._configured_key)
        usable, unsealable = await access_keys.usable_keys(conn, keys)
        for access_key, why in unsealable.items():
            if access_key not in self._warned:
                log.warning("access key %s cannot be used: its secret %s", access_key, why)
        self._warned = set(unsealable)
        self._keys = usable
        self._confirmed = started

    async def run(self) -> None:
        """Listen for changes, reloading on each; reload on a timer while that fails."""
        while True:
            try:
                await self._listen()
            except _FAILURES as exc:
                if self._listening:
                    self._listening = False
                    log.warning(
                        "access keys: not notified of changes (%s); reloading every %gs",
                        type(exc).__name__,
                        self._interval,
                    )
            with contextlib.suppress(*_FAILURES):
                await self.reload()
            await asyncio.sleep(self._interval)

    async def _listen(self) -> None:
        database = self._database
        conn = await connect(
            self._dsn, database.connect_timeout_seconds, database.query_timeout_seconds
        )
        try:
            lost = asyncio.Event()
            conn.add_termination_listener(lambda _: lost.set())
            await conn.add_listener(access_keys.CHANNEL, self._notified)
            await conn.add_listener(RELOAD_CHANNEL, self._reload_requested)
            # Only once listening: a change made before is in this load, one after notified.
            await self.reload(conn)
            if not self._listening:
                self._listening = True
                log.info("access keys: notified of changes again")
            while not lost.is_set():
                await _first(self._changed.wait, lost.wait, self._interval)
                if lost.is_set():
                    break
                if self._changed.is_set():
                    self._changed.clear()
                    await self.reload(conn)
                else:
                    # Proves the connection (and so its notifications) alive.
                    started = time.monotonic()
                    await conn.fetchval("SELECT 1", timeout=self._interval)
                    self._confirmed = started
            raise ConnectionError("the listening connection closed")
        finally:
            conn.terminate()

    def _notified(self, conn: object, pid: int, channel: str, payload: object) -> None:
        self._changed.set()

    def _reload_requested(self, conn: object, pid: int, channel: str, payload: object) -> None:
        self._on_reload()


async def request_reload_everywhere(conn: asyncpg.Connection) -> None:
    """Have every gateway process listening on the database reload its configuration."""
    await conn.execute("SELECT pg_notify($1, '')", RELOAD_CHANNEL)


async def _first(
    first: Callable[[], Awaitable[object]], second: Callable[[], Awaitable[object]], seconds: float
) -> None:
    """Wait until either finishes, or ``seconds``."""
    tasks = [asyncio.ensure_future(first()), asyncio.ensure_future(second())]
    try:
        await asyncio.wait(tasks, timeout=seconds, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in tasks:
            task.cancel()
