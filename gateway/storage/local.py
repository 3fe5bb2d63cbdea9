"""Blobs as plain files under a directory, named by generated storage keys."""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import threading
import uuid
from collections import deque
from collections.abc import AsyncIterator, Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import BinaryIO

from gateway.storage import INLINE_HASH_MAX

# Writes are gathered into batches this large before a thread writes (and hashes) them: one
# executor hop per MiB instead of one per network read.
WRITE_BATCH = 1024 * 1024
READ_CHUNK = 1024 * 1024
# Reads this small are served straight from the page cache on the loop: a thread hop costs
# more than the work.
INLINE_READ_MAX = 64 * 1024
# Batches of one blob that may be hashed and written while more arrive: neither the hash nor a
# periodic sync stalls the network read at every batch, and memory stays bounded.
BATCHES_IN_FLIGHT = 8
# A large blob is synced every this many bytes while it arrives, so the fsync at commit has
# little left to write (otherwise a 1 GiB upload ends with a second of writeback).
SYNC_EVERY = 64 * 1024 * 1024
# Generated names only: an object key can never reach the filesystem through here.
_STORAGE_KEY = re.compile(r"[0-9a-f]{32}")


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class LocalBlobWriter:
    """Writes to ``<key>.tmp`` beside the final path; commit fsyncs, renames and fsyncs the dir.

    The temporary name derives from the storage key, so a crash leaves only files that the
    garbage log already lists (the janitor removes ``<key>`` and ``<key>.tmp`` alike).
    """

    def __init__(
        self,
        path: Path,
        storage_key: str,
        on_data: Callable[[bytes], None] | None,
        sync_directory: Callable[[str, bool], None],
    ):
        self.storage_key = storage_key
        self.size = 0
        self._path = path
        self._sync_directory = sync_directory
        self._tmp = path.with_name(path.name + ".tmp")
        self._on_data = on_data
        self._pending: list[bytes] = []
        self._pending_size = 0
        self._file: BinaryIO | None = None
        # Hashed already, written by commit (small bodies: one thread hop for the whole write).
        self._hashed = b""
        self._new_directories: list[Path] = []
        self._unsynced = 0
        # Batches being hashed and written, oldest first. Each has a thread for hashing and one
        # for writing, so batches stay in order while the two run side by side.
        self._inflight: deque[asyncio.Future[tuple[None, None]]] = deque()
        self._threads: tuple[ThreadPoolExecutor, ThreadPoolExecutor] | None = None

    async def write(self, data: bytes) -> None:
        if not data:
            return
        self.size += len(data)
        self._pending.append(data)
        self._pending_size += len(data)
        if self._pending_size >= WRITE_BATCH:
            batch = self._take_pending()
            # A bounded number of batches in flight: the disk keeps pace or the read waits.
            if len(self._inflight) >= BATCHES_IN_FLIGHT:
                await self._inflight.popleft()
            if self._threads is None:
                self._threads = (ThreadPoolExecutor(1), ThreadPoolExecutor(1))
            hashing, writing = self._threads
            loop = asyncio.get_running_loop()
            # Hashing and writing release the GIL: they run side by side.
            self._inflight.append(
                asyncio.gather(
                    loop.run_in_executor(hashing, self._hash, batch),
                    loop.run_in_executor(writing, self._write, batch),
                )
            )

    async def _wait_inflight(self) -> None:
        try:
            while self._inflight:
                await self._inflight.popleft()
        finally:
            if self._threads is not None:
                for thread in self._threads:
                    thread.shutdown(wait=False)
                self._threads = None

    def _take_pending(self) -> list[bytes]:
        # The pieces as received: joining them would copy every byte once more on the loop.
        batch, self._pending = self._pending, []
        self._pending_size = 0
        return batch

    def _make_directory(self) -> None:
        directory = self._path.parent
        directory.mkdir(parents=True, exist_ok=True)
        # A directory made here is durable only once its parents' entries are synced.
        self._new_directories = [directory.parent, directory.parent.parent]

    def _open(self) -> BinaryIO:
        if self._file is None:
            try:
                self._file = open(self._tmp, "wb")  # noqa: SIM115 - closed in commit/abort
            except FileNotFoundError:
                self._make_directory()
                self._file = open(self._tmp, "wb")  # noqa: SIM115 - closed in commit/abort
        return self._file

    def _create_bare(self) -> int:
        flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC
        try:
            return os.open(self._tmp, flags, 0o666)
        except FileNotFoundError:
            self._make_directory()
            return os.open(self._tmp, flags, 0o666)

    def _hash(self, batch: list[bytes]) -> None:
        if self._on_data is not None:
            for piece in batch:
                self._on_data(piece)

    def _write_batch(self, batch: list[bytes]) -> None:
        self._hash(batch)
        self._write(batch)

    def _write(self, batch: list[bytes]) -> None:
        handle = self._open()
        if self._hashed:
            handle.write(self._hashed)
            self._hashed = b""
        handle.writelines(batch)
        self._unsynced += sum(map(len, batch))
        if self._unsynced >= SYNC_EVERY:
            # In the writing thread, beside the hashing one: the disk works while bytes arrive.
            handle.flush()
            os.fdatasync(handle.fileno())
            self._unsynced = 0

    async def flush(self) -> None:
        await self._wait_inflight()
        batch = self._take_pending()
        if not batch:
            return
        size = sum(map(len, batch))
        if self._file is None and not self._hashed and size <= INLINE_HASH_MAX:
            data = b"".join(batch)
            if self._on_data is not None:
                self._on_data(data)
            self._hashed = data
            return
        await asyncio.get_running_loop().run_in_executor(None, self._write_batch, batch)

    def _finish(self) -> None:
        if self._file is None:
            # A small body, hashed on the loop: a bare descriptor takes half the syscalls of a
            # buffered file object, and this runs for every small PUT.
            fd = self._create_bare()
            try:
                data = memoryview(self._hashed)
                while data:
                    data = data[os.write(fd, data) :]
                os.fsync(fd)
            finally:
                os.close(fd)
        else:
            handle = self._file
            handle.write(self._hashed)
            handle.flush()
            os.fsync(handle.fileno())
            handle.close()
        os.replace(self._tmp, self._path)
        self._sync_directory(self._path.parent.name, bool(self._new_directories))
        for directory in self._new_directories:
            _fsync_dir(directory)

    async def commit(self) -> None:
        await self.flush()
        await asyncio.get_running_loop().run_in_executor(None, self._finish)

    def _discard(self) -> None:
        if self._file is not None:
            self._file.close()
        self._tmp.unlink(missing_ok=True)

    async def abort(self) -> None:
        self._pending.clear()
        while self._inflight:
            with contextlib.suppress(OSError):
                await self._wait_inflight()
        await asyncio.get_running_loop().run_in_executor(None, self._discard)


class LocalBlobStore:
    def __init__(self, root: Path) -> None:
        self.root = root
        self._root = str(root)
        # Fan-out directory -> a descriptor kept open to fsync it: opening and closing one at
        # every commit cost two syscalls more than the sync. Writer threads share them.
        self._directories: dict[str, int] = {}
        # Descriptors of directories made again since: another thread may still be syncing
        # one, so they are closed only with the store.
        self._replaced: list[int] = []
        self._directories_lock = threading.Lock()

    def _sync_directory(self, name: str, made_now: bool) -> None:
        """fsync a fan-out directory (called from writer threads)."""
        with self._directories_lock:
            fd = self._directories.get(name)
            # Made again after it went missing: a descriptor of the old one syncs nothing.
            if fd is None or made_now:
                if fd is not None:
                    self._replaced.append(fd)
                fd = os.open(os.path.join(self._root, name), os.O_RDONLY | os.O_DIRECTORY)
                self._directories[name] = fd
        os.fsync(fd)

    def close(self) -> None:
        with self._directories_lock:
            for fd in [*self._directories.values(), *self._replaced]:
                os.close(fd)
            self._directories.clear()
            self._replaced.clear()

    def new_key(self) -> str:
        return uuid.uuid4().hex

    def local_path(self, storage_key: str) -> Path:
        return Path(self._file(storage_key))

    def _file(self, storage_key: str) -> str:
        # Fan out over 256 directories so no directory grows huge.
        if not _STORAGE_KEY.fullmatch(storage_key):
            raise ValueError(f"not a storage key: {storage_key!r}")
        # A string: a Path per request costs more than the small read it locates.
        return os.path.join(self._root, storage_key[:2], storage_key)

    async def create(
        self, storage_key: str, on_data: Callable[[bytes], None] | None = None
    ) -> LocalBlobWriter:
        return LocalBlobWriter(
            self.local_path(storage_key), storage_key, on_data, self._sync_directory
        )

    def read_now(self, storage_key: str, start: int, length: int) -> bytes | None:
        if length > INLINE_READ_MAX:
            return None
        # A bare descriptor: a buffered file object costs more than the read itself.
        fd = os.open(self._file(storage_key), os.O_RDONLY)
        try:
            data = os.pread(fd, length, start)
        finally:
            os.close(fd)
        if len(data) != length:
            raise OSError(f"blob {storage_key} is shorter than its metadata says")
        return data

    async def read(
        self, storage_key: str, start: int, length: int, etag: str | None = None
    ) -> AsyncIterator[bytes]:
        data = self.read_now(storage_key, start, length)
        if data is not None:
            yield data
            return
        loop = asyncio.get_running_loop()
        handle = await loop.run_in_executor(None, open, self._file(storage_key), "rb")
        try:
            handle.seek(start)
            remaining = length
            while remaining > 0:
                chunk = await loop.run_in_executor(None, handle.read, min(READ_CHUNK, remaining))
                if not chunk:
                    raise OSError(f"blob {storage_key} is shorter than its metadata says")
                remaining -= len(chunk)
                yield chunk
        finally:
            handle.close()

    def _delete(self, storage_key: str) -> None:
        path = self.local_path(storage_key)
        path.unlink(missing_ok=True)
        path.with_name(path.name + ".tmp").unlink(missing_ok=True)

    async def delete(self, storage_key: str) -> None:
        await asyncio.get_running_loop().run_in_executor(None, self._delete, storage_key)
