"""The transforms a profile applies to its blobs (encryption, chunking), wrapped around its
location's store once the database is open: handlers and backends see plain blobs either way."""

from __future__ import annotations

from collections.abc import Mapping

import asyncpg

from gateway.config import GatewayConfig, LocalProfile
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


def is_encrypted(config: GatewayConfig, profile: str) -> bool:
    return config.storage_profiles[profile].encryption is not None
