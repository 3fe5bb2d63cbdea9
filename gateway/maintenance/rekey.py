"""`gateway rekey PROFILE`: key rotation and encryption of what an encrypted profile still holds
in plaintext.

Rotation rewraps every data key still wrapped by another master key under the active one, a
batch at a time, rewriting no data; it can stop at any moment and run again (only keys not yet
rewrapped are found). ``--encrypt-existing`` then writes a sealed copy of every blob written
before the profile was encrypted (and of every object kept in its row), and swaps it into the
row that still names the plaintext, whose blob then goes to the intent log like any replaced
blob. Stored variants in plaintext are dropped instead: they render again, sealed, when next
asked for.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass

import asyncpg

from gateway.meta import blob_keys, garbage, plaintext
from gateway.meta.blob_keys import BlobKey
from gateway.meta.plaintext import PlainBlob
from gateway.objects.backend import Resources
from gateway.objects.staging import StagedBlob
from gateway.storage.sealed import SealedStore
from gateway.storage.sealing import SealBroken, WrappedKey

BATCH = 500


@dataclass
class RekeyReport:
    rewrapped: int = 0
    # Keys wrapped by master keys that are not configured: they cannot be rewrapped.
    unreadable: int = 0
    encrypted: int = 0
    # Blobs whose row changed while their copy was written: left for the next run.
    skipped: int = 0
    variants_dropped: int = 0


async def rewrap_all(
    pool: asyncpg.Pool, store: SealedStore, progress: Callable[[int], object], report: RekeyReport
) -> None:
    """Rewrap every data key of ``store``'s profile not wrapped by the active master key."""
    keyring, after = store.keyring, ""
    assert keyring is not None
    while True:
        found = await blob_keys.wrapped_by_others(pool, store.profile, keyring.active, after, BATCH)
        if not found:
            return
        pairs = []
        for key in found:
            try:
                new = keyring.rewrap(WrappedKey(key.key_id, key.wrapped_key))
            except SealBroken:
                report.unreadable += 1
                continue
            pairs.append((key, BlobKey(key.storage_key, new.key_id, new.wrapped, key.size)))
        report.rewrapped += await blob_keys.rewrap(pool, store.profile, pairs)
        after = found[-1].storage_key
        progress(len(found))


async def encrypt_existing(
    resources: Resources,
    profile: str,
    progress: Callable[[int], object],
    report: RekeyReport,
) -> None:
    """Seal every blob and inline object of ``profile`` still stored in plaintext."""
    pool = resources.pool
    report.variants_dropped = await plaintext.drop_plain_variants(pool, profile)
    async for blob in _plain_blobs(pool, profile):
        async with StagedBlob(resources, profile) as staged:
            await staged.write_all(_bytes_of(resources, blob))
            await staged.commit()
            staged.row_commit_started = True
            async with pool.acquire() as conn, conn.transaction():
                if not await garbage.claim(conn, profile, staged.storage_key):
                    raise garbage.BlobLostError(staged.storage_key)
                swapped = await plaintext.swap_blob(conn, blob, staged.storage_key)
                if not swapped:
                    # The row changed meanwhile: the copy is nobody's.
                    await garbage.add(conn, profile, staged.storage_key)
        if swapped:
            report.encrypted += 1
        else:
            report.skipped += 1
        progress(blob.size)


async def _plain_blobs(pool: asyncpg.Pool, profile: str) -> AsyncIterator[PlainBlob]:
    after_object = ("", "")
    while found := await plaintext.plain_objects(pool, profile, after_object, BATCH):
        for blob in found:
            yield blob
        after_object = (found[-1].bucket, found[-1].key)
    after_chunk = (uuid.UUID(int=0), 0)
    while chunks := await plaintext.plain_chunks(pool, profile, after_chunk, BATCH):
        for blob in chunks:
            yield blob
        last = chunks[-1]
        assert last.part_number is not None
        after_chunk = (last.version_id, last.part_number)


async def _bytes_of(resources: Resources, blob: PlainBlob) -> AsyncIterator[bytes]:
    if blob.inline_data is not None:
        yield blob.inline_data
        return
    assert blob.storage_key is not None
    store = resources.stores[blob.profile]
    async for data in store.read(blob.storage_key, 0, blob.size, blob.storage_etag):
        yield data
