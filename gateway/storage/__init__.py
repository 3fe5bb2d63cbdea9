"""Blob backends behind one small interface.

A blob is written once under a generated storage key and never modified; object keys never
reach a local backend's namespace. An upstream profile also keeps objects in place under
their own keys (gateway.storage.upstream).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Protocol, TypeVar

T = TypeVar("T")

# Bodies this small are hashed on the loop: a thread hop costs more than the work.
INLINE_HASH_MAX = 64 * 1024


async def hash_off_loop(hash_: Callable[[bytes], T], data: bytes) -> T:
    """``hash_(data)``, in a thread unless ``data`` is small enough for the loop."""
    if len(data) <= INLINE_HASH_MAX:
        return hash_(data)
    return await asyncio.get_running_loop().run_in_executor(None, hash_, data)


class BlobWriter(Protocol):
    """A blob being written. Nothing is visible under its key until ``commit`` returns."""

    storage_key: str
    size: int

    async def write(self, data: bytes) -> None: ...

    async def flush(self) -> None:
        """Pass every byte written so far through ``on_data`` (so digests can be checked)."""

    async def commit(self) -> None:
        """Make the blob durable (fsync or upstream acknowledgement) under its storage key."""

    async def abort(self) -> None: ...


class BlobStore(Protocol):
    def new_key(self) -> str: ...

    async def create(self, storage_key: str, on_data: Callable[[bytes], None] | None) -> BlobWriter:
        """Start a blob; ``on_data`` sees every byte written (hashing happens off the loop)."""

    def read(
        self, storage_key: str, start: int, length: int, etag: str | None = None
    ) -> AsyncIterator[bytes]:
        """Bytes [start, start + length); ``etag``: of the version the caller expects (only
        an upstream object kept in place can change under its key)."""

    def read_now(self, storage_key: str, start: int, length: int) -> bytes | None:
        """The bytes at once, when that costs less than a thread hop (a small read of a local
        file, from the page cache); None when they must be read with ``read``."""

    def local_path(self, storage_key: str) -> Path | None:
        """The blob's plain file, when it has one (so it can be sent with sendfile)."""

    async def delete(self, storage_key: str) -> None:
        """Delete the blob; deleting a missing blob is not an error."""
