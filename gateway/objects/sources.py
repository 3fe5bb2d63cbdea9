"""An object version as the source of a variant render: its bytes are read only if a render
runs, from a file where the storage has one."""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping

from gateway.meta.object_rows import ObjectRecord
from gateway.objects.backend import ObjectBackend
from gateway.objects.reading import Segment, read_stored
from gateway.variants.gravity import focal_point
from gateway.variants.pool import FilePart
from gateway.variants.service import VariantSource


def variant_source(backends: Mapping[str, ObjectBackend], record: ObjectRecord) -> VariantSource:
    """The object version a variant is made of."""
    backend = backends[record.profile]
    stores = backend.resources.stores

    async def segments() -> list[Segment]:
        return await backend.segments(record, 0, record.size)

    async def read() -> AsyncIterator[bytes]:
        async for data in read_stored(stores, await segments()):
            yield data

    async def locate() -> tuple[FilePart, ...] | None:
        parts = []
        for segment in await segments():
            if segment.data is not None:
                return None  # kept in its row: read() hands the bytes over
            path = stores[segment.profile].local_path(segment.storage_key)
            if path is None:
                return None
            parts.append(FilePart(str(path), segment.offset, segment.length))
        return tuple(parts)

    return VariantSource(
        record.bucket,
        record.key,
        record.version_id,
        record.size,
        record.profile,
        read,
        locate,
        focus=focal_point(record.user_metadata),
    )
