"""The backend of each configured storage profile."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

import asyncpg

from gateway.config import GatewayConfig
from gateway.meta.garbage import KeyReserve
from gateway.objects.backend import ObjectBackend, Resources
from gateway.objects.local import LocalBackend
from gateway.objects.upstream import UpstreamBackend
from gateway.objects.upstream_blobs import UpstreamBlobBackend
from gateway.storage.profiles import open_stores
from gateway.storage.transforms import (
    check_transforms_kept,
    is_encrypted,
    location_of,
    with_transforms,
)
from gateway.storage.upstream import UpstreamStore


def open_backends(config: GatewayConfig, resources: Resources) -> dict[str, ObjectBackend]:
    """A backend per profile, over the blob stores already opened for them."""
    # At most half the pool's connections may wait on an upstream call with a key locked, so
    # a slow upstream leaves the rest to every other request.
    locks = asyncio.Semaphore(max(1, config.database.pool_max_size // 2))
    backends: dict[str, ObjectBackend] = {}
    for name, store in resources.stores.items():
        backend: ObjectBackend
        location = location_of(store)
        if not isinstance(location, UpstreamStore):
            backend = LocalBackend(name, resources)
        elif store is location:
            backend = UpstreamBackend(name, resources, location, locks)
        else:
            backend = UpstreamBlobBackend(name, resources, location, locks)
        if is_encrypted(config, name):
            # Kept out of rows, where they would sit in plaintext.
            backend.inline_max_size = 0
        backends[name] = backend
    return backends


@contextlib.asynccontextmanager
async def opened_backends(
    config: GatewayConfig, pool: asyncpg.Pool
) -> AsyncIterator[dict[str, ObjectBackend]]:
    """The backends with their stores opened, outside a server (``gateway gc``)."""
    await check_transforms_kept(config, pool)
    async with open_stores(config) as locations:
        stores = with_transforms(config, locations, pool)
        grace = config.limits.garbage_grace_seconds
        new_keys = {name: store.new_key for name, store in stores.items()}
        resources = Resources(
            pool=pool,
            stores=stores,
            reserve=KeyReserve(pool, new_keys, grace),
            garbage_grace_seconds=grace,
            inline_max_size=config.limits.inline_max_size,
        )
        yield open_backends(config, resources)
