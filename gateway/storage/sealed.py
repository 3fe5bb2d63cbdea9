"""Encryption at rest as a blob store wrapping another (local directory or upstream bucket).

Each blob is sealed with its own data key (gateway.storage.sealing), whose wrapped form is
recorded in Postgres once the blob is durable and before any row claims it; deleting the blob
deletes its key. Callers see plaintext offsets and sizes only. A blob with no recorded key was
written before the profile was encrypted and is passed through as it is.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections import OrderedDict, deque
from collections.abc import AsyncIterator, Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import NoReturn

import asyncpg
from cryptography.hazmat.primitives.keywrap import InvalidUnwrap, aes_key_unwrap, aes_key_wrap

from gateway.errors import StoredDataCorruptError
from gateway.meta import blob_keys
from gateway.meta.blob_keys import BlobKey
from gateway.storage import INLINE_HASH_MAX, BlobStore, BlobWriter, customer_keys
from gateway.storage.customer_keys import CUSTOMER_KEY_ID
from gateway.storage.sealing import (
    KEY_SIZE,
    SEALED_SEGMENT_SIZE,
    KeyRing,
    SealBroken,
    Sealer,
    SegmentWriter,
    WrappedKey,
    sealed_span,
    segment_count,
)

log = logging.getLogger(__name__)

# Plaintext is hashed and sealed in batches this large, in threads (one hop per MiB).
SEAL_BATCH = 1024 * 1024
# Batches of one blob being hashed and sealed while more arrive (memory stays bounded).
BATCHES_IN_FLIGHT = 4
# Stored bytes a read opens at a time (in a thread).
OPEN_BATCH = 1024 * 1024
# Opened batches a read keeps ready ahead of the one being sent.
READ_AHEAD = 4
# Stored bytes opened on the loop up to this much; more go to a thread.
INLINE_OPEN_MAX = 256 * 1024
# Unwrapped data keys kept per process: a blob's key never changes (rotation rewraps it), so
# a hot object costs no key lookup per read.
KEY_CACHE_SIZE = 4096


def _identity(storage_key: str) -> bytes:
    return storage_key.encode()


class SealedStore:
    """An encrypted profile's blobs: ``inner`` holds only ciphertext."""

    def __init__(
        self, pool: asyncpg.Pool, profile: str, keyring: KeyRing | None, inner: BlobStore
    ) -> None:
        """``keyring`` None: a plain profile, where only objects written with a client's own
        key (SSE-C) are sealed and everything else passes through untouched."""
        self.pool = pool
        self.profile = profile
        self.keyring = keyring
        self.inner = inner
        self._keys: OrderedDict[str, tuple[Sealer, int]] = OrderedDict()

    def new_key(self) -> str:
        return self.inner.new_key()

    async def create(
        self, storage_key: str, on_data: Callable[[bytes], None] | None = None
    ) -> BlobWriter:
        customer = customer_keys.current().write
        if customer is not None:
            data_key = os.urandom(KEY_SIZE)
            wrapped = WrappedKey(CUSTOMER_KEY_ID, aes_key_wrap(customer, data_key))
        elif self.keyring is not None:
            data_key, wrapped = self.keyring.new_data_key()
        else:
            return await self.inner.create(storage_key, on_data)
        inner = await self.inner.create(storage_key, None)
        return SealedWriter(self, inner, Sealer(data_key, _identity(storage_key)), wrapped, on_data)

    def _passes_through(self) -> bool:
        """Whether this request's reads need no key lookup: a plain profile, no client key."""
        return self.keyring is None and customer_keys.current().read is None

    def read_now(self, storage_key: str, start: int, length: int) -> bytes | None:
        if self._passes_through():
            return self.inner.read_now(storage_key, start, length)
        return None

    def local_path(self, storage_key: str) -> Path | None:
        if self._passes_through():
            return self.inner.local_path(storage_key)
        # Never a plain file to send as it is: every byte is opened on its way out.
        return None

    async def sealer(self, storage_key: str) -> tuple[Sealer, int] | None:
        """The blob's sealer and plaintext size; None for a blob stored in plaintext."""
        cached = self._keys.get(storage_key)
        if cached is not None:
            self._keys.move_to_end(storage_key)
            return cached
        found = await blob_keys.get(self.pool, self.profile, storage_key)
        if found is None:
            return None
        wrapped = WrappedKey(found.key_id, found.wrapped_key)
        try:
            if found.key_id == CUSTOMER_KEY_ID:
                # Never cached: the client's key opens it for this request only.
                return Sealer(self._customer_unwrap(wrapped), _identity(storage_key)), found.size
            if self.keyring is None:
                raise SealBroken("the profile has no master keys")
            data_key = self.keyring.unwrap(wrapped)
        except SealBroken as exc:
            log.error("blob %s of profile %s: %s", storage_key, self.profile, exc)
            raise StoredDataCorruptError(storage_key) from None
        entry = Sealer(data_key, _identity(storage_key)), found.size
        self._keys[storage_key] = entry
        if len(self._keys) > KEY_CACHE_SIZE:
            self._keys.popitem(last=False)
        return entry

    def _customer_unwrap(self, wrapped: WrappedKey) -> bytes:
        customer = customer_keys.current().read
        if customer is None:
            raise SealBroken("sealed with a client's key, and the request has none")
        try:
            return aes_key_unwrap(customer, wrapped.wrapped)
        except InvalidUnwrap:
            raise SealBroken("the client's key does not unwrap the data key") from None

    async def read(
        self, storage_key: str, start: int, length: int, etag: str | None = None
    ) -> AsyncIterator[bytes]:
        entry = None if self._passes_through() else await self.sealer(storage_key)
        if entry is None:
            async for data in self.inner.read(storage_key, start, length, etag):
                yield data
            return
        if length == 0:
            return
        # Stored bytes are read and opened a few batches ahead while earlier plaintext is
        # being sent, so reading, opening and sending overlap.
        ahead: asyncio.Queue[bytes | BaseException | None] = asyncio.Queue(READ_AHEAD)
        producer = asyncio.create_task(
            self._open_ahead(ahead, storage_key, start, length, etag, *entry)
        )
        try:
            while (item := await ahead.get()) is not None:
                if isinstance(item, BaseException):
                    raise item
                yield item
        finally:
            if not producer.done():
                producer.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await producer

    async def _open_ahead(
        self,
        ahead: asyncio.Queue[bytes | BaseException | None],
        storage_key: str,
        start: int,
        length: int,
        etag: str | None,
        sealer: Sealer,
        size: int,
    ) -> None:
        try:
            async for piece in self._opened(storage_key, start, length, etag, sealer, size):
                await ahead.put(piece)
        except Exception as exc:  # handed to the reader, which raises it
            await ahead.put(exc)
            return
        await ahead.put(None)

    async def _opened(
        self,
        storage_key: str,
        start: int,
        length: int,
        etag: str | None,
        sealer: Sealer,
        size: int,
    ) -> AsyncIterator[bytes]:
        """Plaintext bytes [start, start + length), opened a batch of segments at a time."""
        span = sealed_span(start, length, size)
        last = segment_count(size) - 1
        index, skip, remaining = span.first_segment, span.skip, length
        buffered = bytearray()
        async for data in self.inner.read(storage_key, span.offset, span.length, etag):
            buffered += data
            whole = len(buffered) - len(buffered) % SEALED_SEGMENT_SIZE
            if whole < min(OPEN_BATCH, span.length):
                continue
            # A new buffer for the rest: the batch is opened in place, without a copy.
            sealed, buffered = buffered, bytearray(buffered[whole:])
            plaintext = await self._open(
                sealer, index, memoryview(sealed)[:whole], last, storage_key
            )
            index += whole // SEALED_SEGMENT_SIZE
            piece = plaintext[skip : skip + remaining]
            skip = 0
            remaining -= len(piece)
            if piece:
                yield piece
        if buffered or remaining:
            # Only the last segment may be short; anything else was cut or altered.
            plaintext = await self._open(sealer, index, memoryview(buffered), last, storage_key)
            piece = plaintext[skip : skip + remaining]
            remaining -= len(piece)
            if remaining:
                self._broken(storage_key, "it ends before its recorded size")
            yield piece

    async def _open(
        self, sealer: Sealer, first: int, sealed: memoryview, last: int, storage_key: str
    ) -> bytes:
        def open_all() -> bytes:
            pieces = []
            for position in range(0, len(sealed), SEALED_SEGMENT_SIZE):
                index = first + position // SEALED_SEGMENT_SIZE
                segment = sealed[position : position + SEALED_SEGMENT_SIZE]
                pieces.append(sealer.open(index, segment, index == last))
            return b"".join(pieces)

        try:
            if len(sealed) <= INLINE_OPEN_MAX:
                return open_all()
            return await asyncio.get_running_loop().run_in_executor(None, open_all)
        except SealBroken as exc:
            self._broken(storage_key, str(exc))

    def _broken(self, storage_key: str, reason: str) -> NoReturn:
        log.error(
            "blob %s of profile %s failed its integrity check: %s",
            storage_key,
            self.profile,
            reason,
        )
        raise StoredDataCorruptError(storage_key)

    async def delete(self, storage_key: str) -> None:
        # The data key goes with the blob's log entry (garbage.forget, garbage.remove), after
        # the blob: a crash in between leaves a key whose blob is gone, never the reverse.
        await self.inner.delete(storage_key)
        self._keys.pop(storage_key, None)


class SealedWriter:
    """Plaintext in, sealed segments out to the inner writer; the key is recorded at commit."""

    def __init__(
        self,
        store: SealedStore,
        inner: BlobWriter,
        sealer: Sealer,
        wrapped: WrappedKey,
        on_data: Callable[[bytes], None] | None,
    ) -> None:
        self.storage_key = inner.storage_key
        self.size = 0
        self._store = store
        self._inner = inner
        self._wrapped = wrapped
        self._on_data = on_data
        self._segments = SegmentWriter(sealer)
        self._pending: list[bytes] = []
        self._pending_size = 0
        # Batches being hashed and sealed, oldest first: a thread for each, so batches stay in
        # order while the two run side by side.
        self._inflight: deque[asyncio.Future[tuple[None, bytes]]] = deque()
        self._threads: tuple[ThreadPoolExecutor, ThreadPoolExecutor] | None = None

    async def write(self, data: bytes) -> None:
        if not data:
            return
        self.size += len(data)
        self._pending.append(data)
        self._pending_size += len(data)
        if self._pending_size < SEAL_BATCH:
            return
        batch = self._take_pending()
        if len(self._inflight) >= BATCHES_IN_FLIGHT:
            await self._send_oldest()
        if self._threads is None:
            self._threads = (ThreadPoolExecutor(1), ThreadPoolExecutor(1))
        hashing, sealing = self._threads
        loop = asyncio.get_running_loop()
        self._inflight.append(
            asyncio.gather(
                loop.run_in_executor(hashing, self._hash, batch),
                loop.run_in_executor(sealing, self._seal, batch),
            )
        )

    def _take_pending(self) -> list[bytes]:
        batch, self._pending = self._pending, []
        self._pending_size = 0
        return batch

    def _hash(self, batch: list[bytes]) -> None:
        if self._on_data is not None:
            for piece in batch:
                self._on_data(piece)

    def _seal(self, batch: list[bytes]) -> bytes:
        return b"".join(sealed for piece in batch for sealed in self._segments.feed(piece))

    def _hash_and_seal(self, batch: list[bytes]) -> bytes:
        self._hash(batch)
        return self._seal(batch)

    async def _send_oldest(self) -> None:
        _, sealed = await self._inflight.popleft()
        await self._inner.write(sealed)

    async def _drain(self) -> None:
        try:
            while self._inflight:
                await self._send_oldest()
        finally:
            if self._threads is not None and not self._inflight:
                for thread in self._threads:
                    thread.shutdown(wait=False)
                self._threads = None

    async def flush(self) -> None:
        await self._drain()
        batch = self._take_pending()
        if not batch:
            return
        if sum(map(len, batch)) <= INLINE_HASH_MAX:
            sealed = self._hash_and_seal(batch)
        else:
            loop = asyncio.get_running_loop()
            sealed = await loop.run_in_executor(None, self._hash_and_seal, batch)
        await self._inner.write(sealed)

    async def commit(self) -> None:
        await self.flush()
        await self._inner.write(self._segments.finish())
        await self._inner.commit()
        key = BlobKey(self.storage_key, self._wrapped.key_id, self._wrapped.wrapped, self.size)
        await blob_keys.record(self._store.pool, self._store.profile, key)

    async def abort(self) -> None:
        self._pending.clear()
        while self._inflight:
            with contextlib.suppress(Exception):
                await self._inflight.popleft()
        if self._threads is not None:
            for thread in self._threads:
                thread.shutdown(wait=False)
            self._threads = None
        await self._inner.abort()
