"""sendfile(2) from a blob file to a client socket, on any event loop.

uvloop (the gateway's loop: its transports cost a fraction of asyncio's per request) has no
loop.sendfile. There, a plain-TCP response's bytes go from the page cache to the socket in a
thread of their own, which waits for room in the socket with poll(2); a TLS one (sendfile would
bypass the encryption) or a loop-less transport is copied through the loop instead.
"""

from __future__ import annotations

import asyncio
import os
import select
from concurrent.futures import Executor, ThreadPoolExecutor
from typing import BinaryIO

# Large downloads at once before the next waits for a thread.
THREADS = 32
# A client that accepts no byte for this long loses the connection, unless the connection's
# protocol names its own limit (limits.send_idle_timeout_seconds, in gateway.api.connections).
IDLE_TIMEOUT_SECONDS = 60.0


def _send_blocking(sock_fd: int, file_fd: int, offset: int, count: int, idle_timeout: float) -> int:
    """Runs on duplicates of the descriptors, and closes them: should the loop close the
    connection meanwhile, its number may be reused by the next client, which must never
    receive these bytes."""
    try:
        poller = select.poll()
        poller.register(sock_fd, select.POLLOUT)
        sent = 0
        while sent < count:
            try:
                done = os.sendfile(sock_fd, file_fd, offset + sent, count - sent)
            except BlockingIOError:
                if not poller.poll(idle_timeout * 1000):
                    # A ConnectionError, like a client that went away: the response is cut
                    # off quietly, since anyone can stop reading at will.
                    raise ConnectionAbortedError("the client stopped reading") from None
                continue
            if done == 0:
                break
            sent += done
        return sent
    finally:
        os.close(sock_fd)
        os.close(file_fd)


def sendfile_threads() -> ThreadPoolExecutor:
    """The threads that wait on slow readers; one pool per app (gateway.app owns it)."""
    return ThreadPoolExecutor(max_workers=THREADS, thread_name_prefix="sendfile")


async def sendfile(
    transport: asyncio.WriteTransport,
    file: BinaryIO,
    offset: int,
    count: int,
    threads: Executor,
) -> int | None:
    """Send ``count`` bytes of ``file`` from ``offset``, waiting for the socket in one of
    ``threads``; None when this transport cannot (the caller then copies the bytes itself)."""
    loop = asyncio.get_running_loop()
    try:
        return await loop.sendfile(transport, file, offset, count)
    except NotImplementedError:
        pass
    sock = transport.get_extra_info("socket")
    if sock is None or transport.get_extra_info("sslcontext") is not None:
        return None
    # What the loop still holds (the headers, at most) must reach the socket first.
    while transport.get_write_buffer_size():
        if transport.is_closing():
            raise ConnectionResetError("the client went away")
        await asyncio.sleep(0.001)
    idle_timeout = getattr(transport.get_protocol(), "send_idle_timeout", IDLE_TIMEOUT_SECONDS)
    sock_fd = os.dup(sock.fileno())
    file_fd = os.dup(file.fileno())
    try:
        work = loop.run_in_executor(
            threads, _send_blocking, sock_fd, file_fd, offset, count, idle_timeout
        )
    except BaseException:
        os.close(sock_fd)
        os.close(file_fd)
        raise
    return await work
