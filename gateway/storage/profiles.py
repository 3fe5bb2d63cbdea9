"""The configured storage profiles, opened as blob stores."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

from gateway.config import GatewayConfig, LocalProfile
from gateway.storage import BlobStore
from gateway.storage.local import LocalBlobStore
from gateway.storage.upstream import UpstreamStore


@contextlib.asynccontextmanager
async def open_stores(config: GatewayConfig) -> AsyncIterator[dict[str, BlobStore]]:
    """A store per profile; upstream clients are opened here and closed on exit."""
    stores: dict[str, BlobStore] = {}
    async with contextlib.AsyncExitStack() as stack:
        for name, profile in config.storage_profiles.items():
            if isinstance(profile, LocalProfile):
                local = LocalBlobStore(config.blob_root(name))
                stack.callback(local.close)
                stores[name] = local
                continue
            store = UpstreamStore(name, profile)
            await store.open()
            stack.push_async_callback(store.close)
            stores[name] = store
        yield stores
