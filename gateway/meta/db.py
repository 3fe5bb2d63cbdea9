"""Postgres connection pool and schema migration."""

from __future__ import annotations

import asyncio
import json
import logging
import re
import time
from importlib import resources
from typing import Any

import asyncpg
import asyncpg.transaction

from gateway import metrics

log = logging.getLogger(__name__)

# Any constant: held while migrating so concurrently starting gateways apply the schema once.
_MIGRATION_LOCK_ID = 0x6761746577617931
_VERSION_RE = re.compile(r"^-- schema-version: (\d+)$", re.MULTILINE)


def schema_sql() -> str:
    return resources.files("gateway.meta").joinpath("schema.sql").read_text(encoding="utf-8")


def schema_version(sql: str) -> int:
    match = _VERSION_RE.search(sql)
    if match is None:
        raise RuntimeError("schema.sql has no '-- schema-version: N' line")
    return int(match.group(1))


class DatabaseUnavailableError(Exception):
    """Postgres cannot be used right now: unreachable, refusing connections, shutting down,
    out of resources, or too slow to answer within its timeouts. The same request may succeed
    once the database is back. (Only a COMMIT whose answer was lost may have landed, as with
    any database: a write that met this is retried by the client, or found already done.)"""


# Failures of the server or of the way to it, rather than of a statement: the same statement
# may succeed later. Class 08 (connection exception), 53 (insufficient resources), 57 (operator
# intervention: shutdown, cannot connect now, statement timeout), 58 (system error).
_UNAVAILABLE_ERRORS = (
    OSError,  # refused or missing socket, reset connection, timeouts (TimeoutError is one)
    asyncpg.PostgresConnectionError,
    asyncpg.exceptions.InsufficientResourcesError,
    asyncpg.exceptions.OperatorInterventionError,
    asyncpg.exceptions.PostgresSystemError,
)

# Every error a database call may raise that background work (janitor, eager renders, renewals)
# survives by retrying later.
DATABASE_ERRORS = (DatabaseUnavailableError, asyncpg.PostgresError, asyncpg.InterfaceError)


class DatabaseHealth:
    """Whether the database works, so an outage is logged once when it starts and once when it
    ends, not once per failed request.

    A success proves the database back only on a connection opened after the last failure, or
    RECOVERY_SECONDS after it: while a server shuts down, statements already under way on its
    old connections still succeed as others fail, and that is not a recovery.
    """

    RECOVERY_SECONDS = 1.0

    def __init__(self) -> None:
        self.available = True
        self._last_failure = 0.0

    def failed(self, exc: BaseException) -> DatabaseUnavailableError:
        self._last_failure = time.monotonic()
        if self.available:
            self.available = False
            log.warning("database unavailable: %s", _describe(exc))
        return DatabaseUnavailableError(_describe(exc))

    def succeeded(self, connection_opened: float) -> None:
        if self.available:
            return
        old_connection = connection_opened <= self._last_failure
        if old_connection and time.monotonic() - self._last_failure < self.RECOVERY_SECONDS:
            return
        self.available = True
        log.info("database available again")


def _describe(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__


def _unavailable(exc: BaseException, connection_closed: bool) -> bool:
    if isinstance(exc, _UNAVAILABLE_ERRORS):
        return True
    # "connection is closed", "another operation is in progress" on a dead connection: the
    # statement never reached a live server.
    client_side = (asyncpg.InterfaceError, asyncpg.exceptions.InternalClientError)
    return isinstance(exc, client_side) and connection_closed


class _Connection(asyncpg.Connection):
    """A pooled connection that reports an unusable database as DatabaseUnavailableError, and
    is released without asyncpg's reset round trip.

    The reset (unlock session advisory locks, CLOSE ALL, UNLISTEN, RESET ALL) costs one more
    round trip per query; the gateway never leaves session state behind (its locks are
    transaction-scoped; pooled connections never LISTEN or SET), and open transactions are
    still rolled back.
    """

    # Set by the pool that opened the connection.
    health: DatabaseHealth | None = None
    opened_at = 0.0

    def get_reset_query(self) -> str:
        return ""

    def transaction(
        self, *, isolation: str | None = None, readonly: bool = False, deferrable: bool = False
    ) -> asyncpg.transaction.Transaction:
        self._check_open()
        return _Transaction(self, isolation, readonly, deferrable)

    def _failed(self, exc: Exception) -> Exception:
        """What to raise for ``exc``: DatabaseUnavailableError when the database, not the
        statement, failed."""
        if isinstance(exc, asyncpg.exceptions.InternalClientError):
            # The protocol lost track of its state (the server went away between two of its
            # messages): the connection is of no further use.
            self.terminate()
        unavailable = _unavailable(exc, self.is_closed())
        found = metrics.current()
        if found is not None:
            found.db_errors("unavailable" if unavailable else "error").inc()
        if not unavailable:
            return exc
        return (self.health or DatabaseHealth()).failed(exc)

    def _worked(self) -> None:
        if self.health is not None and not self.health.available:
            self.health.succeeded(self.opened_at)

    # Every statement goes through one of these (a transaction's BEGIN, COMMIT and ROLLBACK
    # through execute). Written out, not wrapped: they are the hot path of every request.
    async def execute(self, *args: Any, **kwargs: Any) -> Any:
        try:
            result = await super().execute(*args, **kwargs)
        except Exception as exc:
            raise self._failed(exc) from exc
        self._worked()
        return result

    async def executemany(self, *args: Any, **kwargs: Any) -> Any:
        try:
            result = await super().executemany(*args, **kwargs)
        except Exception as exc:
            raise self._failed(exc) from exc
        self._worked()
        return result

    async def fetch(self, *args: Any, **kwargs: Any) -> Any:
        try:
            result = await super().fetch(*args, **kwargs)
        except Exception as exc:
            raise self._failed(exc) from exc
        self._worked()
        return result

    async def fetchval(self, *args: Any, **kwargs: Any) -> Any:
        try:
            result = await super().fetchval(*args, **kwargs)
        except Exception as exc:
            raise self._failed(exc) from exc
        self._worked()
        return result

    async def fetchrow(self, *args: Any, **kwargs: Any) -> Any:
        try:
            result = await super().fetchrow(*args, **kwargs)
        except Exception as exc:
            raise self._failed(exc) from exc
        self._worked()
        return result

    async def fetchmany(self, *args: Any, **kwargs: Any) -> Any:
        try:
            result = await super().fetchmany(*args, **kwargs)
        except Exception as exc:
            raise self._failed(exc) from exc
        self._worked()
        return result


class _Transaction(asyncpg.transaction.Transaction):
    """A transaction whose end on a connection the server dropped (asyncpg checks the
    connection before it sends ROLLBACK or COMMIT) reports DatabaseUnavailableError too."""

    _connection: _Connection

    async def __aenter__(self) -> None:
        try:
            await super().__aenter__()
        except Exception as exc:
            raise self._connection._failed(exc) from exc

    async def __aexit__(self, *exc_info: Any) -> None:
        try:
            await super().__aexit__(*exc_info)
        except Exception as exc:
            raise self._connection._failed(exc) from exc


class GatewayPool(asyncpg.Pool):
    """asyncpg's pool with a default acquire timeout, and every way of failing to hand out a
    connection (refused, timed out, closing) reported as DatabaseUnavailableError."""

    def __init__(
        self, *args: Any, acquire_timeout: float, health: DatabaseHealth, **kwargs: Any
    ) -> None:
        super().__init__(*args, **kwargs)
        self.acquire_timeout = acquire_timeout
        self.health = health
        # Tasks in acquire() now: waiting for a connection, or about to get one.
        self.acquiring = 0

    async def _get_new_connection(self) -> Any:
        # Also the connections asyncpg opens in the background to keep min_size.
        try:
            return await super()._get_new_connection()
        except Exception as exc:
            raise self.health.failed(exc) from exc

    async def _acquire(self, timeout: float | None) -> Any:  # noqa: ASYNC109 (asyncpg's)
        # The one place both forms of acquire() (await and async with) and the pool's own
        # query methods get a connection.
        self.acquiring += 1
        try:
            return await super()._acquire(self.acquire_timeout if timeout is None else timeout)
        except DatabaseUnavailableError:
            raise
        except Exception as exc:
            # A new connection that could not be made (any error, even an authentication
            # one, leaves the database unusable), no free connection in time, a closing pool.
            raise self.health.failed(exc) from exc
        finally:
            self.acquiring -= 1

    async def release(
        self,
        connection: Any,
        *,
        timeout: float | None = None,  # noqa: ASYNC109 (asyncpg's signature)
    ) -> None:
        try:
            await super().release(connection, timeout=timeout)
        except Exception as exc:
            # asyncpg terminated the connection it could not reset.
            if not _unavailable(exc, connection_closed=True):
                raise
            raise self.health.failed(exc) from exc

    async def close_within(self, seconds: float) -> None:
        """Close gracefully, but never wait longer than ``seconds`` (a connection held by a
        request stuck on a dead server): then terminate."""
        try:
            await asyncio.wait_for(self.close(), seconds)
        except Exception:
            log.warning("database pool did not close within %.0fs; terminated", seconds)
            self.terminate()


class _QuietOutages(logging.Filter):
    """Drops asyncpg's own warnings (with a traceback, at every retry) about connections it
    could not open in the background while the database is down: DatabaseHealth logged the
    outage once already."""

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        return not isinstance(exc, DatabaseUnavailableError)


def _quiet_asyncpg_outages() -> None:
    logger = logging.getLogger("asyncpg.pool")
    if not any(isinstance(existing, _QuietOutages) for existing in logger.filters):
        logger.addFilter(_QuietOutages())


async def _set_codecs(conn: asyncpg.Connection) -> None:
    await conn.set_type_codec("jsonb", encoder=json.dumps, decoder=json.loads, schema="pg_catalog")


async def connect(dsn: str, connect_seconds: float, query_seconds: float) -> asyncpg.Connection:
    """One connection outside the pool, for a session of its own (a LISTEN): the caller
    closes it, and sees asyncpg's own errors."""
    conn = await asyncpg.connect(dsn, timeout=connect_seconds, command_timeout=query_seconds)
    try:
        await _set_codecs(conn)
    except BaseException:
        conn.terminate()
        raise
    return conn


async def create_pool(
    dsn: str,
    min_size: int,
    max_size: int,
    connect_timeout: float = 5,
    acquire_timeout: float = 10,
    query_timeout: float = 60,
) -> GatewayPool:
    _quiet_asyncpg_outages()
    health = DatabaseHealth()

    async def init(conn: asyncpg.Connection) -> None:
        conn.health = health
        conn.opened_at = time.monotonic()
        await _set_codecs(conn)

    # asyncpg.create_pool's own construction, with this class.
    pool = GatewayPool(
        dsn,
        min_size=min_size,
        max_size=max_size,
        max_queries=50000,
        max_inactive_connection_lifetime=300.0,
        init=init,
        loop=None,
        connection_class=_Connection,
        record_class=asyncpg.Record,
        acquire_timeout=acquire_timeout,
        health=health,
        # asyncpg.connect's own keywords:
        timeout=connect_timeout,
        command_timeout=query_timeout,
    )
    await pool
    return pool


async def migrate(conn: asyncpg.Connection) -> int:
    """Apply schema.sql if its version is newer than the database's; returns the version."""
    sql = schema_sql()
    version = schema_version(sql)
    async with conn.transaction():
        await conn.execute("SELECT pg_advisory_xact_lock($1)", _MIGRATION_LOCK_ID)
        current = None
        if await conn.fetchval("SELECT to_regclass('schema_version') IS NOT NULL"):
            current = await conn.fetchval("SELECT max(version) FROM schema_version")
        if current is not None and current >= version:
            return current
        log.info("applying schema version %d", version)
        await conn.execute(sql)
    return version


async def ping(pool: asyncpg.Pool) -> bool:
    try:
        async with pool.acquire(timeout=2) as conn:
            return await conn.fetchval("SELECT 1", timeout=2) == 1
    except DATABASE_ERRORS:
        return False
