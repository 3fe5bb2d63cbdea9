"""Sending an object's segments as a response body, with sendfile where a blob is a file."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

from aiohttp import web

from gateway.api.context import RECORD, SENDFILE_THREADS, STORES, S3Request
from gateway.api.sendfile import sendfile
from gateway.objects.reading import Segment, read_stored


async def send_segments(
    req: S3Request, response: web.StreamResponse, segments: Sequence[Segment]
) -> None:
    """Prepare ``response`` and send the segments as its body, with sendfile where possible.

    The first blob is opened before the headers go out, so a missing blob is still a clean
    error response; a later one can only cut the connection short.
    """
    loop = asyncio.get_running_loop()
    transport = req.http.transport
    record = req.http[RECORD]
    stores = req.app[STORES]
    for segment in segments:
        store = stores[segment.profile]
        path = None if segment.data is not None else store.local_path(segment.storage_key)
        if path is None or transport is None:
            stream = read_stored(stores, [segment])
            # The first bytes arrive before the headers go out: an upstream that fails or
            # changed is still a clean error response (or a re-read).
            first = await anext(stream, b"")
            if not response.prepared:
                await response.prepare(req.http)
            await response.write(first)
            record.bytes_out += len(first)
            async for data in stream:
                await response.write(data)
                record.bytes_out += len(data)
            continue
        with await loop.run_in_executor(None, open, path, "rb") as handle:
            if not response.prepared:
                await response.prepare(req.http)
            sent = await sendfile(
                transport, handle, segment.offset, segment.length, req.app[SENDFILE_THREADS]
            )
            if sent is None:
                async for data in read_stored(stores, [segment]):
                    await response.write(data)
                    record.bytes_out += len(data)
                continue
            record.bytes_out += sent
            if sent != segment.length:
                # A blob shorter than its row says: the promised length can no longer be met.
                raise OSError(f"blob {segment.storage_key} ended after {sent} bytes")
    if not response.prepared:
        await response.prepare(req.http)
    await response.write_eof()
