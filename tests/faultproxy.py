"""An HTTP proxy on 127.0.0.1 in front of the test upstream that can be told to misbehave.

It serves one request per connection (answering with ``Connection: close``) so that each request
can be judged on its own: passed through, answered 500, left without an answer (a read
timeout), or passed through with the upstream's answer held back until the test releases it
(the upstream has done the work; the caller has not heard of it yet).
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass

PASS = "pass"
FAIL = "fail"  # 500 InternalError, as a failing S3 service answers
STALL = "stall"  # no answer at all until released: the caller's read timeout
HOLD = "hold"  # the upstream does the work; its answer waits until released
JITTER = "jitter"  # the upstream's answer delayed by up to a few tenths of a second


@dataclass
class Seen:
    method: str
    target: str  # path and query, as sent
    action: str


class FaultyProxy:
    """``rule(method, target)`` picks the action of each request (PASS unless set)."""

    def __init__(self, upstream_port: int) -> None:
        self.upstream_port = upstream_port
        self.port = 0
        self.rule: Callable[[str, str], str] = lambda method, target: PASS
        self.seen: list[Seen] = []
        # Set (from the proxy's thread) when a STALL or HOLD request is waiting for release.
        self.waiting = threading.Event()
        self._loop = asyncio.new_event_loop()
        self._release = asyncio.Event()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._server: asyncio.Server | None = None

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        self._thread.start()
        future = asyncio.run_coroutine_threadsafe(self._listen(), self._loop)
        self.port = future.result(timeout=10)

    def stop(self) -> None:
        self.release()
        if self._server is not None:
            self._loop.call_soon_threadsafe(self._server.close)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=10)

    def release(self) -> None:
        """Let every held or stalled request go on; later ones are held again. Returns once
        done, so ``waiting`` is clear for the next request to set."""
        if self._loop.is_running():
            asyncio.run_coroutine_threadsafe(self._release_all(), self._loop).result(timeout=10)

    @contextlib.contextmanager
    def rule_of(self, rule: Callable[[str, str], str]) -> Iterator[None]:
        self.rule = rule
        try:
            yield
        finally:
            self.rule = lambda method, target: PASS
            self.release()

    async def _release_all(self) -> None:
        self._release.set()
        self._release = asyncio.Event()
        self.waiting.clear()

    async def _listen(self) -> int:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        return self._server.sockets[0].getsockname()[1]

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head, body = await _read_request(reader, writer)
            if head is None:
                return
            method, target, _ = head.split(b"\r\n", 1)[0].decode("latin-1").split(" ", 2)
            action = self.rule(method, target)
            self.seen.append(Seen(method, target, action))
            if action == FAIL:
                writer.write(_internal_error())
            elif action == STALL:
                await self._wait_for_release()
            else:
                response = await self._forward(head, body)
                if action == HOLD:
                    await self._wait_for_release()
                elif action == JITTER:
                    await asyncio.sleep(random.uniform(0, 0.3))
                writer.write(response)
            await writer.drain()
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()

    async def _wait_for_release(self) -> None:
        release = self._release
        self.waiting.set()
        await release.wait()

    async def _forward(self, head: bytes, body: bytes) -> bytes:
        reader, writer = await asyncio.open_connection("127.0.0.1", self.upstream_port)
        try:
            writer.write(_connection_close(head) + body)
            await writer.drain()
            return _connection_close(await reader.read(-1))
        finally:
            writer.close()


async def _read_request(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter
) -> tuple[bytes | None, bytes]:
    try:
        head = await reader.readuntil(b"\r\n\r\n")
    except asyncio.IncompleteReadError:
        return None, b""
    length = 0
    chunked = False
    kept = []
    for line in head.split(b"\r\n"):
        name, _, value = line.partition(b":")
        name = name.strip().lower()
        if name == b"content-length":
            length = int(value.strip())
        elif name == b"transfer-encoding" and b"chunked" in value.lower():
            chunked = True
        elif name == b"expect" and b"100-continue" in value.lower():
            # Answered here: the upstream is asked only once the whole body has arrived.
            writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
            await writer.drain()
            continue
        kept.append(line)
    head = b"\r\n".join(kept)
    if not chunked:
        return head, await reader.readexactly(length)
    body = b""
    while True:
        size_line = await reader.readuntil(b"\r\n")
        body += size_line
        size = int(size_line.split(b";")[0].strip(), 16)
        if size == 0:
            body += await _trailers(reader)
            return head, body
        body += await reader.readexactly(size + 2)


async def _trailers(reader: asyncio.StreamReader) -> bytes:
    data = b""
    while True:
        line = await reader.readuntil(b"\r\n")
        data += line
        if line == b"\r\n":
            return data


def _connection_close(message: bytes) -> bytes:
    """``message`` (a request or response) with its Connection header set to close."""
    head, sep, rest = message.partition(b"\r\n\r\n")
    lines = [
        line
        for line in head.split(b"\r\n")
        if line.partition(b":")[0].strip().lower() not in (b"connection", b"keep-alive")
    ]
    return b"\r\n".join([*lines, b"Connection: close"]) + sep + rest


def _internal_error() -> bytes:
    body = (
        b'<?xml version="1.0" encoding="UTF-8"?>\n'
        b"<Error><Code>InternalError</Code><Message>injected</Message></Error>"
    )
    return (
        b"HTTP/1.1 500 Internal Server Error\r\nContent-Type: application/xml\r\n"
        + f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n".encode()
        + body
    )
