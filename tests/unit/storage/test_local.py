"""Local blobs: commits keep working when a fan-out directory is made again, and concurrent
commits into one new directory share its descriptor safely."""

from __future__ import annotations

import asyncio
import shutil
import uuid
from pathlib import Path

from gateway.storage.local import LocalBlobStore


def keys_with_prefix(prefix: str, count: int) -> list[str]:
    return [prefix + uuid.uuid4().hex[2:] for _ in range(count)]


async def put(store: LocalBlobStore, key: str, data: bytes) -> None:
    writer = await store.create(key)
    await writer.write(data)
    await writer.commit()


async def test_commits_into_a_directory_made_again(tmp_path: Path) -> None:
    store = LocalBlobStore(tmp_path)
    first, second = keys_with_prefix("ab", 2)
    await put(store, first, b"one")
    shutil.rmtree(tmp_path / "ab")  # an operator's mistake, or a restore
    await put(store, second, b"two")
    assert store.local_path(second).read_bytes() == b"two"
    store.close()


async def test_concurrent_first_commits_into_one_directory(tmp_path: Path) -> None:
    store = LocalBlobStore(tmp_path)
    keys = keys_with_prefix("cd", 32)
    await asyncio.gather(*(put(store, key, key.encode()) for key in keys))
    for key in keys:
        assert store.local_path(key).read_bytes() == key.encode()
    store.close()
