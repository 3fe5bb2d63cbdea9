"""The transforms a profile applies to its blobs (encryption, chunking), wrapped around its
location's store once the database is open: handlers and backends see plain blobs either way."""

from __future__ import annotations

from collections.abc import Mapping

import asyncpg

from gateway.config import ConfigError, GatewayConfig, LocalProfile
from gateway.meta import blob_keys, chunks
from gateway.storage import BlobStore
from gateway.storage.chunked import ChunkedStore, chunked
from gateway.storage.sealed import SealedStore
from gateway.storage.sealing import KeyRing


def with_transforms(
    config: GatewayConfig, stores: Mapping[str, BlobStore], pool: asyncpg.Pool
) -> dict[str, BlobStore]:
    """Each profile's store with its configured transforms around it."""
    wrapped: dict[str, BlobStore] = {}
    for name, store in stores.items():
        profile = config.storage_profiles[name]
        encryption = profile.encryption
        if encryption is not None:
            keyring = KeyRing(encryption.keys, encryption.active_key)
            store = SealedStore(pool, name, keyring, store)
        elif isinstance(profile, LocalProfile) or profile.chunking is not None:
            # Plain, but objects written with a client's own key (SSE-C) are sealed with it.
            store = SealedStore(pool, name, None, store)
        if profile.chunking is not None:
            # Outermost: each chunk is sealed on its own, so a range read opens only the
            # chunks (and within them the segments) it touches.
            store = chunked(pool, name, store, profile.chunking)
        wrapped[name] = store
    return wrapped


def location_of(store: BlobStore) -> BlobStore:
    """The store of the profile's location under its transforms."""
    while isinstance(store, SealedStore | ChunkedStore):
        store = store.inner
    return store


async def check_transforms_kept(config: GatewayConfig, pool: asyncpg.Pool) -> None:
    """ConfigError if a profile lost a transform its stored blobs need: chunked blobs cannot
    be read without their chunk map, sealed ones without the profile's keys."""
    for name, profile in config.storage_profiles.items():
        if profile.chunking is None and await chunks.has_chunked_blobs(pool, name):
            raise ConfigError(
                f"storage_profiles.{name}: its blobs are stored in chunks; chunking cannot be"
                " removed from a profile that holds any"
            )
        if profile.encryption is None and await blob_keys.has_master_keyed(pool, name):
            raise ConfigError(
                f"storage_profiles.{name}: its blobs are encrypted; encryption cannot be"
                " removed from a profile that holds any"
            )


def is_encrypted(config: GatewayConfig, profile: str) -> bool:
    return config.storage_profiles[profile].encryption is not None
