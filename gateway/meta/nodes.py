"""Which gateway node holds each local storage profile.

A local profile is a directory on one machine. Two nodes sharing a database, each with a local
profile of the same name, would each list blobs in the other's directory: a read through one
finds no file, and one node's janitor drops the other's garbage entries without deleting their
files. So the first node to serve a local profile claims it, and another node with a profile of
that name is refused at startup.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterable
from pathlib import Path

import asyncpg

NODE_ID_FILE = "node-id"


def node_id(data_dir: Path) -> uuid.UUID:
    """This node's identity, made once and kept in its data directory."""
    path = data_dir / NODE_ID_FILE
    try:
        return uuid.UUID(path.read_text().strip())
    except FileNotFoundError:
        pass
    data_dir.mkdir(parents=True, exist_ok=True)
    made = uuid.uuid4()
    # Written whole under a name of its own, then linked into place: the workers of a first
    # start race here, and none may read a file another has created but not yet written.
    draft = data_dir / f"{NODE_ID_FILE}.{made}"
    with open(draft, "w") as handle:
        handle.write(f"{made}\n")
        handle.flush()
        os.fsync(handle.fileno())
    try:
        os.link(draft, path)
    except FileExistsError:
        return uuid.UUID(path.read_text().strip())
    finally:
        draft.unlink()
    return made


async def claim_local_profiles(
    pool: asyncpg.Pool, node: uuid.UUID, profiles: Iterable[str]
) -> dict[str, uuid.UUID]:
    """Claim ``profiles`` for ``node``; returns those another node holds, with its id."""
    async with pool.acquire() as conn:
        rows = await conn.fetch(
            "WITH wanted AS (SELECT unnest($2::text[]) AS profile),"
            " claimed AS (INSERT INTO local_profiles (profile, node_id)"
            "   SELECT profile, $1 FROM wanted ON CONFLICT (profile) DO NOTHING)"
            " SELECT profile, node_id FROM local_profiles"
            " WHERE profile IN (SELECT profile FROM wanted) AND node_id <> $1",
            node,
            list(profiles),
        )
    return {row["profile"]: row["node_id"] for row in rows}
