"""The checkpoint of `gateway import`: how far the listing of an upstream prefix was recorded."""

from __future__ import annotations

from dataclasses import dataclass

import asyncpg


@dataclass(frozen=True)
class ImportState:
    last_key: str
    imported: int


async def resume_point(conn: asyncpg.Connection | asyncpg.Pool, bucket: str) -> ImportState:
    """Where an import of ``bucket`` starts: after the last key of an unfinished one, or from
    the beginning (a finished import is run again to pick up objects added since)."""
    row = await conn.fetchrow(
        "INSERT INTO imports (bucket) VALUES ($1) ON CONFLICT (bucket) DO UPDATE"
        " SET last_key = CASE WHEN imports.finished_at IS NULL THEN imports.last_key ELSE '' END,"
        " imported = CASE WHEN imports.finished_at IS NULL THEN imports.imported ELSE 0 END,"
        " started_at = CASE WHEN imports.finished_at IS NULL THEN imports.started_at"
        " ELSE now() END, finished_at = NULL"
        " RETURNING last_key, imported",
        bucket,
    )
    return ImportState(row["last_key"], row["imported"])


async def restart(conn: asyncpg.Connection | asyncpg.Pool, bucket: str) -> None:
    await conn.execute("DELETE FROM imports WHERE bucket = $1", bucket)


async def advance(conn: asyncpg.Connection, bucket: str, last_key: str, added: int) -> None:
    """Move the checkpoint; call in the transaction that records the batch up to ``last_key``."""
    await conn.execute(
        "UPDATE imports SET last_key = $2, imported = imported + $3, updated_at = now()"
        " WHERE bucket = $1",
        bucket,
        last_key,
        added,
    )


async def finish(conn: asyncpg.Connection | asyncpg.Pool, bucket: str) -> None:
    await conn.execute("UPDATE imports SET finished_at = now() WHERE bucket = $1", bucket)
