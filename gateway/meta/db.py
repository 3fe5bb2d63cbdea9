"""Postgres connection pool, the embedded server, and schema migration."""

from __future__ import annotations

import json
import logging
import re
from importlib import resources
from pathlib import Path

import asyncpg

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


def start_embedded_postgres(data_dir: Path) -> str:
    """Start (or reuse) a Postgres under ``data_dir/postgres`` and return its DSN.

    Blocking: call it from a thread. The server stops when the last process using it exits.
    """
    import pgserver  # imported lazily: only needed when no DSN is configured

    server = pgserver.get_server(data_dir / "postgres", cleanup_mode="stop")
    return server.get_uri()


class _Connection(asyncpg.Connection):
    """A pooled connection released without asyncpg's reset round trip.

    The reset (unlock session advisory locks, CLOSE ALL, UNLISTEN, RESET ALL) costs one more
    round trip per query; the gateway never leaves session state behind (its locks are
    transaction-scoped, it never LISTENs or SETs), and open transactions are still rolled back.
    """

    def get_reset_query(self) -> str:
        return ""


async def _init_connection(conn: asyncpg.Connection) -> None:
    await conn.set_type_codec("jsonb", encoder=json.dumps, decoder=json.loads, schema="pg_catalog")


async def create_pool(dsn: str, min_size: int, max_size: int) -> asyncpg.Pool:
    return await asyncpg.create_pool(
        dsn,
        min_size=min_size,
        max_size=max_size,
        init=_init_connection,
        command_timeout=60,
        connection_class=_Connection,
    )


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
    except (OSError, asyncpg.PostgresError, TimeoutError, asyncpg.InterfaceError):
        return False
