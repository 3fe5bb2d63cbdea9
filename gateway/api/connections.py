"""Client connections: a deadline for each request's line and headers, a bound on how long a
response may stall, a bound on the connections one process holds, and one quiet line for each
request that cannot be parsed.

aiohttp closes a kept-alive connection that stays idle (its keepalive_timeout), but gives a
client as long as it likes to send a request's headers once it has started, and takes every
connection the kernel hands it: a few thousand clients trickling header bytes would hold every
file descriptor of the process, before any of them is authenticated; and a client that stops
reading a response holds its connection and its handler for as long as it likes. Only the
protocol sees bytes arrive before a request exists, and sees its transport's buffer fill, so
its RequestHandler and Server are extended here.
"""

from __future__ import annotations

import asyncio
import logging
import resource
import signal
import ssl
from collections.abc import Callable
from typing import Any, cast

from aiohttp import web

from gateway.api.middleware import new_request_id
from gateway.config import LimitsConfig
from gateway.s3 import errors
from gateway.s3.xml import error_document

log = logging.getLogger(__name__)

# File descriptors kept for everything but client connections: the Postgres pool, upstream
# connections, blob files being written or read, render worker pipes, the listening socket.
FD_RESERVE = 256


class GuardedRequestHandler(web.RequestHandler):
    """aiohttp's HTTP/1.1 protocol, with a deadline for each request's line and headers, and
    one for a response the client stops accepting.

    The header deadline runs from the connection's start for its first request, and from the
    first byte of each later one (the idle time between requests is aiohttp's
    keepalive_timeout). The send deadline runs while the transport's buffer is full.
    """

    __slots__ = ("_header_timeout", "_header_timer", "_send_timer", "send_idle_timeout")

    def __init__(
        self,
        manager: ConnectionGuard,
        *,
        header_timeout: float,
        send_idle_timeout: float,
        **kwargs: Any,
    ) -> None:
        super().__init__(manager, **kwargs)
        self._header_timeout = header_timeout
        self._header_timer: asyncio.TimerHandle | None = None
        # Read by gateway.api.sendfile too, whose thread bypasses the transport's buffer.
        self.send_idle_timeout = send_idle_timeout
        self._send_timer: asyncio.TimerHandle | None = None

    @property
    def awaiting_request(self) -> bool:
        """Between requests: idle, or still receiving a request's line and headers."""
        return self._waiter is not None and not self._waiter.done()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        guard = self._manager
        assert isinstance(guard, ConnectionGuard)
        if not guard.admit(self):
            self._refuse(transport)
            return
        self._arm_header_timer()

    def connection_lost(self, exc: BaseException | None) -> None:
        self._cancel_header_timer()
        self._cancel_send_timer()
        if isinstance(self._manager, ConnectionGuard):
            self._manager.release(self)
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        parsed = self._request_count
        # Decided before parsing: bytes arriving while the protocol waits for a request are
        # the start of one, never body bytes of the request before.
        starts_request = self._header_timer is None and self.awaiting_request
        super().data_received(data)
        if self._request_count != parsed:
            self._cancel_header_timer()
        elif starts_request and data:
            self._arm_header_timer()

    def pause_writing(self) -> None:
        super().pause_writing()
        self._send_timer = self._loop.call_later(self.send_idle_timeout, self._send_stalled)

    def resume_writing(self) -> None:
        self._cancel_send_timer()
        super().resume_writing()

    def handle_error(
        self,
        request: web.BaseRequest,
        status: int = 500,
        exc: BaseException | None = None,
        message: str | None = None,
    ) -> web.StreamResponse:
        if status >= 500:
            # A fault of the gateway's own: aiohttp logs it with its traceback.
            return super().handle_error(request, status, exc, message)
        # aiohttp could not parse the request (its line, a header, its framing): a client's
        # mistake that anyone can repeat at will, so one line at DEBUG, never a traceback.
        # The parser's first line says what is wrong; the lines after it echo the client's
        # bytes, which neither the log nor the answer needs.
        reason = (message or str(exc) or "malformed request").strip().splitlines()[0]
        reason = reason.rstrip(":")[:200]
        log.debug("malformed request from %s: %s", request.remote, reason)
        if request.writer.output_size > 0:
            raise ConnectionError("a response was already sent on this connection")
        request_id = new_request_id()
        error = errors.InvalidRequest(f"The request could not be parsed: {reason}")
        body = error_document(error.code, error.message, "/", request_id, error.extra)
        response = web.Response(
            status=status,
            body=body,
            content_type="application/xml",
            headers={"x-amz-request-id": request_id, "x-amz-id-2": request_id},
        )
        # Where the next request would start is unknown: the connection cannot carry one.
        response.force_close()
        return response

    def _arm_header_timer(self) -> None:
        self._header_timer = self._loop.call_later(self._header_timeout, self._header_deadline)

    def _cancel_header_timer(self) -> None:
        if self._header_timer is not None:
            self._header_timer.cancel()
            self._header_timer = None

    def _header_deadline(self) -> None:
        self._header_timer = None
        if self.transport is not None:
            log.debug(
                "closing a connection from %s: no complete request line and headers within %gs",
                self.peername,
                self._header_timeout,
            )
            self.force_close()

    def _cancel_send_timer(self) -> None:
        if self._send_timer is not None:
            self._send_timer.cancel()
            self._send_timer = None

    def _send_stalled(self) -> None:
        self._send_timer = None
        log.debug(
            "closing a connection from %s: it accepted no response byte for %gs",
            self.peername,
            self.send_idle_timeout,
        )
        if self.transport is not None:
            # close() would first wait for the buffer the client is not draining.
            self.transport.abort()
        self.force_close()

    def _refuse(self, transport: asyncio.BaseTransport) -> None:
        """Answer 503 SlowDown without reading a request, and close: SDKs retry it."""
        request_id = new_request_id()
        error = errors.SlowDown()
        body = error_document(error.code, error.message, "/", request_id, error.extra)
        head = (
            f"HTTP/1.1 {error.status} Service Unavailable\r\n"
            "Content-Type: application/xml\r\n"
            f"Content-Length: {len(body)}\r\n"
            "Connection: close\r\n"
            "Retry-After: 1\r\n"
            f"x-amz-request-id: {request_id}\r\n"
            f"x-amz-id-2: {request_id}\r\n\r\n"
        )
        # uvloop's transports do not subclass asyncio's, hence a cast, not an isinstance.
        cast(asyncio.Transport, transport).write(head.encode() + body)
        self.force_close()


class ConnectionGuard(web.Server):
    """aiohttp's Server, making GuardedRequestHandler protocols and holding at most
    ``max_connections`` of them.

    At the limit a new connection closes the oldest connection waiting for a request (idle,
    or still sending its headers: no work is lost, and a client reconnects as after any
    keep-alive close); when every connection carries a request in progress, the new one is
    refused with 503 SlowDown. Nothing queues in the process beyond the kernel's backlog.
    """

    def __init__(
        self,
        server: web.Server,
        max_connections: int,
        header_timeout: float,
        send_idle_timeout: float,
    ) -> None:
        # The handler arguments aiohttp gathered for its own Server (the application's
        # handler_args, keepalive_timeout, access log...), passed on unchanged.
        super().__init__(
            server.request_handler,
            request_factory=server.request_factory,
            handler_cancellation=server.handler_cancellation,
            loop=asyncio.get_running_loop(),
            **server._kwargs,
        )
        self.max_connections = max_connections
        self._header_timeout = header_timeout
        self._send_idle_timeout = send_idle_timeout
        # Admitted connections, oldest first (dicts keep insertion order).
        self._admitted: dict[GuardedRequestHandler, None] = {}
        self._refusing = False

    def __call__(self) -> GuardedRequestHandler:
        return GuardedRequestHandler(
            self,
            loop=self._loop,
            header_timeout=self._header_timeout,
            send_idle_timeout=self._send_idle_timeout,
            **self._kwargs,
        )

    @property
    def admitted(self) -> int:
        return len(self._admitted)

    def admit(self, handler: GuardedRequestHandler) -> bool:
        if len(self._admitted) >= self.max_connections and not self._shed_oldest_waiting():
            if not self._refusing:
                self._refusing = True
                log.warning(
                    "%d connections, each with a request in progress: refusing new ones"
                    " (limits.max_connections)",
                    len(self._admitted),
                )
            return False
        if self._refusing:
            self._refusing = False
            log.warning("accepting connections again")
        self._admitted[handler] = None
        return True

    def release(self, handler: GuardedRequestHandler) -> None:
        self._admitted.pop(handler, None)

    def _shed_oldest_waiting(self) -> bool:
        for handler in self._admitted:
            if handler.awaiting_request:
                del self._admitted[handler]
                log.debug("connection limit reached: closing the oldest idle connection")
                handler.force_close()
                return True
        return False


class GatewayRunner(web.AppRunner):
    """AppRunner serving through a ConnectionGuard."""

    def __init__(self, app: web.Application, limits: LimitsConfig, max_connections: int) -> None:
        super().__init__(app, access_log=None, keepalive_timeout=limits.keepalive_timeout_seconds)
        self._max_connections = max_connections
        self._limits = limits

    async def _make_server(self) -> web.Server:
        server = await super()._make_server()
        return ConnectionGuard(
            server,
            self._max_connections,
            self._limits.header_timeout_seconds,
            self._limits.send_idle_timeout_seconds,
        )


def connection_limit(wanted: int) -> int:
    """``wanted``, or as many connections as the open-files limit holds besides FD_RESERVE.

    The soft limit is raised toward the hard one first, as far as ``wanted`` needs: many
    systems start processes with a soft limit of 1024 and a far higher hard one.
    """
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    needed = wanted + FD_RESERVE
    if soft != resource.RLIM_INFINITY and soft < needed:
        target = needed if hard == resource.RLIM_INFINITY else min(needed, hard)
        if target > soft:
            try:
                resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
                soft = target
            except (ValueError, OSError):
                pass
    if soft == resource.RLIM_INFINITY or soft >= needed:
        return wanted
    allowed = max(soft - FD_RESERVE, soft // 4, 1)
    log.warning(
        "limits.max_connections lowered from %d to %d: the open-files limit is %d"
        " (raise it with ulimit -n)",
        wanted,
        allowed,
        soft,
    )
    return allowed


async def serve(
    app: web.Application,
    host: str,
    port: int,
    *,
    limits: LimitsConfig,
    ssl_context: ssl.SSLContext | None = None,
    reuse_port: bool = False,
    on_hangup: Callable[[], None] | None = None,
) -> None:
    """Serve ``app`` until SIGTERM or SIGINT, then shut down as aiohttp's run_app does;
    ``on_hangup`` is called on each SIGHUP."""
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    if on_hangup is not None:
        loop.add_signal_handler(signal.SIGHUP, on_hangup)
    runner = GatewayRunner(app, limits, connection_limit(limits.max_connections))
    await runner.setup()
    try:
        site = web.TCPSite(runner, host, port, ssl_context=ssl_context, reuse_port=reuse_port)
        await site.start()
        await stop.wait()
    finally:
        await runner.cleanup()
