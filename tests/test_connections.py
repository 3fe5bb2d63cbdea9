"""What one client can hold: a deadline for request headers, an idle keep-alive timeout, a
connection limit per process, and malformed requests answered without a traceback in the log.

Each test drives raw sockets (no client library sends headers a byte at a time) against a
gateway of its own limits, while boto3 checks that ordinary requests are still served.
"""

from __future__ import annotations

import contextlib
import os
import re
import socket
import ssl
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from tests.conftest import (
    GATEWAY_ENV,
    PUBLIC_BUCKET,
    GatewayProcess,
    _spawn,
    _terminate,
    _wait_until,
    client,
    free_port,
    wait_for,
    write_config,
)
from tests.rawhttp import request_head, send_raw, sign

# The limits of every test gateway (write_config's), which a sibling's `limits` replaces.
TEST_LIMITS = {"garbage_grace_seconds": 3600, "body_idle_timeout_seconds": 2}
GUARDED_LIMITS = {
    **TEST_LIMITS,
    "header_timeout_seconds": 4,
    "keepalive_timeout_seconds": 3,
    "send_idle_timeout_seconds": 3,
}
HEALTH = b"GET /_gateway/health HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"


@pytest.fixture(scope="module")
def guarded(
    local_gateway: GatewayProcess, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[GatewayProcess]:
    """A gateway whose header deadline and keep-alive timeout are short."""
    process = local_gateway.sibling(
        tmp_path_factory.mktemp("guarded") / "gateway.yaml",
        limits=GUARDED_LIMITS,
    )
    with process.running():
        yield process


@pytest.fixture(scope="module")
def guarded_tls(
    local_gateway: GatewayProcess,
    certificate: tuple[Path, Path],
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[GatewayProcess]:
    """The same limits over HTTPS, where responses are copied through the event loop."""
    cert, key = certificate
    process = local_gateway.sibling(
        tmp_path_factory.mktemp("guarded-tls") / "gateway.yaml",
        tls={"certificate": str(cert), "private_key": str(key)},
        limits=GUARDED_LIMITS,
    )
    with process.running():
        yield process


@pytest.fixture(scope="module")
def limited(
    local_gateway: GatewayProcess, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[GatewayProcess]:
    """A gateway holding at most 40 connections, with deadlines long enough that the test
    alone decides when its connections end."""
    process = local_gateway.sibling(
        tmp_path_factory.mktemp("limited") / "gateway.yaml",
        limits={
            **TEST_LIMITS,
            "body_idle_timeout_seconds": 60,
            "header_timeout_seconds": 60,
            "keepalive_timeout_seconds": 60,
            "max_connections": 40,
        },
    )
    with process.running():
        yield process


def connect(port: int) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port), timeout=10)
    sock.setblocking(False)
    return sock


def closed_by_server(sock: socket.socket) -> bool:
    """Whether the gateway closed ``sock`` (a response it sent first is read and dropped)."""
    try:
        while True:
            data = sock.recv(65536)
            if not data:
                return True
    except BlockingIOError:
        return False
    except OSError:
        return True


def open_files(gateway: GatewayProcess) -> int:
    assert gateway.process is not None
    return len(os.listdir(f"/proc/{gateway.process.pid}/fd"))


def read_response(sock: socket.socket, timeout: float = 10) -> bytes:
    """One response (by its Content-Length), or what came before the gateway closed ``sock``
    or went quiet."""
    sock.setblocking(True)
    sock.settimeout(timeout)
    data = b""
    with contextlib.suppress(TimeoutError, ConnectionError):
        while piece := sock.recv(65536):
            data += piece
            head, found, body = data.partition(b"\r\n\r\n")
            match = re.search(rb"(?im)^content-length:\s*(\d+)", head)
            if found and match and len(body) >= int(match.group(1)):
                break
    return data


def served(port: int) -> bool:
    with contextlib.suppress(OSError, IndexError):
        return send_raw("127.0.0.1", port, HEALTH, b"").status == 200
    return False


def log_since(gateway: GatewayProcess, offset: int) -> str:
    assert gateway.log_path is not None
    with open(gateway.log_path, "rb") as log:
        log.seek(offset)
        return log.read().decode(errors="replace")


def log_size(gateway: GatewayProcess) -> int:
    assert gateway.log_path is not None
    return gateway.log_path.stat().st_size


# --- the header deadline and the keep-alive timeout -----------------------------------------


def test_slow_header_connections_are_closed_while_others_are_served(guarded) -> None:
    s3 = client(guarded.endpoint)
    bucket = f"test-{uuid.uuid4().hex[:16]}"
    s3.create_bucket(Bucket=bucket)
    baseline = open_files(guarded)
    slow = []
    for _ in range(300):
        sock = connect(guarded.port)
        sock.send(b"GET /_gateway/health HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: ")
        slow.append(sock)
    # Kept-alive connections whose first request was served, trickling their second one.
    for _ in range(5):
        sock = connect(guarded.port)
        sock.send(HEALTH)
        assert read_response(sock).startswith(b"HTTP/1.1 200")
        sock.setblocking(False)
        sock.send(b"GET /_gateway/health HTTP/1.1\r\nX-Slow: ")
        slow.append(sock)
    started = time.monotonic()
    still_open = list(slow)
    # The most slow connections open while a normal request was served.
    busiest = 0
    # The deadline is 4 s; aiohttp alone would keep them for its keep-alive timeout (75 s).
    while still_open and time.monotonic() - started < 30:
        for sock in still_open:
            with contextlib.suppress(OSError):
                sock.send(b"a")
        still_open = [sock for sock in still_open if not closed_by_server(sock)]
        body = os.urandom(100)
        s3.put_object(Bucket=bucket, Key="during", Body=body)
        assert s3.get_object(Bucket=bucket, Key="during")["Body"].read() == body
        busiest = max(busiest, len(still_open))
        time.sleep(0.3)
    elapsed = time.monotonic() - started
    assert not still_open, f"{len(still_open)} of {len(slow)} still open after {elapsed:.0f}s"
    assert busiest >= 200
    for sock in slow:
        sock.close()
    # Nothing of them is left in the gateway: its descriptors are back to what they were.
    assert wait_for(lambda: open_files(guarded) <= baseline + 5, 10), open_files(guarded)


def test_headers_sent_slowly_within_the_deadline_are_served(guarded) -> None:
    sock = connect(guarded.port)
    sock.setblocking(True)
    for piece in (HEALTH[:10], HEALTH[10:25], HEALTH[25:40], HEALTH[40:]):
        sock.sendall(piece)
        time.sleep(0.3)
    assert read_response(sock).startswith(b"HTTP/1.1 200")
    sock.close()


def test_a_connection_that_sends_nothing_is_closed(guarded) -> None:
    sock = connect(guarded.port)
    assert wait_for(lambda: closed_by_server(sock), 20)
    sock.close()


def test_an_idle_kept_alive_connection_is_closed(guarded) -> None:
    sock = connect(guarded.port)
    sock.send(HEALTH)
    assert read_response(sock).startswith(b"HTTP/1.1 200")
    sock.setblocking(False)
    # Kept alive for a while (a second request on it is served)...
    time.sleep(0.5)
    assert not closed_by_server(sock)
    sock.send(HEALTH)
    assert read_response(sock).startswith(b"HTTP/1.1 200")
    sock.setblocking(False)
    # ...and closed once idle for longer than the keep-alive timeout (3 s).
    assert wait_for(lambda: closed_by_server(sock), 20)
    sock.close()


# --- a response the client stops reading -----------------------------------------------------


@pytest.mark.parametrize("scheme", ["http", "https"])
def test_a_client_that_stops_reading_loses_its_connection(
    request: pytest.FixtureRequest, scheme: str
) -> None:
    """Plain HTTP sends blobs with sendfile(2) in a thread, HTTPS through the event loop's
    buffer: either way a response nobody reads is cut off after the send deadline (3 s)."""
    gateway = request.getfixturevalue("guarded" if scheme == "http" else "guarded_tls")
    s3 = client(gateway.endpoint, verify=False)
    offset = log_size(gateway)
    key = f"stalled-{uuid.uuid4().hex[:8]}"
    size = 32 * 1024**2
    s3.put_object(Bucket=PUBLIC_BUCKET, Key=key, Body=os.urandom(size))
    sock = socket.socket()
    # A small window, so the gateway's buffers fill long before the object is sent.
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.settimeout(10)
    sock.connect(("127.0.0.1", gateway.port))
    if scheme == "https":
        context = ssl.create_default_context()
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
        sock = context.wrap_socket(sock)
    # Anonymous: the bucket is public.
    sock.sendall(f"GET /{PUBLIC_BUCKET}/{key} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n".encode())
    # Not reading, long past the deadline; others are still served meanwhile.
    stalled_until = time.monotonic() + 12
    while time.monotonic() < stalled_until:
        health = requests.get(f"{gateway.endpoint}/_gateway/health", verify=False, timeout=10)
        assert health.status_code == 200
        time.sleep(1)
    received = 0
    with contextlib.suppress(OSError):
        while piece := sock.recv(1024**2):
            received += len(piece)
    sock.close()
    assert received < size
    log = log_since(gateway, offset)
    assert "Traceback" not in log, log[-3000:]


# --- the connection limit ---------------------------------------------------------------------


def test_connection_limit_sheds_idle_connections_then_refuses(limited) -> None:
    s3 = client(limited.endpoint)
    bucket = f"test-{uuid.uuid4().hex[:16]}"
    s3.create_bucket(Bucket=bucket)
    offset = log_size(limited)
    baseline = open_files(limited)

    # 40 connections that send nothing: the limit is reached (boto3's own is shed for them).
    idle = [connect(limited.port) for _ in range(40)]
    assert wait_for(lambda: open_files(limited) >= baseline + 39, 10)
    # A new client is still served: the oldest idle connection makes room for it.
    s3.put_object(Bucket=bucket, Key="k", Body=b"while full of idle connections")
    assert s3.get_object(Bucket=bucket, Key="k")["Body"].read().startswith(b"while full")
    assert wait_for(lambda: closed_by_server(idle[0]), 10)
    shed = [sock for sock in idle if closed_by_server(sock)]
    assert 1 <= len(shed) <= 5
    for sock in idle:
        sock.close()

    # 40 uploads in progress, each stalled in its body: nothing is idle any more.
    busy = []
    for index in range(40):
        path = f"/{bucket}/busy-{index}"
        headers = sign("PUT", f"{limited.endpoint}{path}", "UNSIGNED-PAYLOAD")
        headers["Content-Length"] = "100000"
        sock = socket.create_connection(("127.0.0.1", limited.port), timeout=10)
        sock.sendall(request_head("PUT", path, headers) + b"x" * 100)
        sock.setblocking(False)
        busy.append(sock)
    time.sleep(1)
    assert not [sock for sock in busy if closed_by_server(sock)]
    # A further connection is refused with S3's 503 SlowDown, read before it sends anything.
    probe = socket.create_connection(("127.0.0.1", limited.port), timeout=10)
    answer = read_response(probe)
    probe.close()
    assert answer.startswith(b"HTTP/1.1 503"), answer[:200]
    assert b"<Code>SlowDown</Code>" in answer
    assert b"x-amz-request-id" in answer.lower()

    # The uploads end (their clients go away): connections are accepted and served again.
    for sock in busy:
        sock.close()

    assert wait_for(lambda: served(limited.port), 15)
    assert s3.get_object(Bucket=bucket, Key="k")["Body"].read().startswith(b"while full")
    assert limited.process is not None and limited.process.poll() is None
    log = log_since(limited, offset)
    # One line when refusing starts, one when it ends: not one per refused connection.
    assert log.count("refusing new ones") == 1
    assert log.count("accepting connections again") == 1
    assert "Traceback" not in log


def test_connection_limit_follows_the_open_files_limit(local_gateway, tmp_path: Path) -> None:
    """Under `ulimit -n 512` the default limit (4096) cannot be held: the gateway lowers it
    and keeps serving, where accepting past the descriptors it has would fail."""
    port = free_port()
    config = tmp_path / "gateway.yaml"
    limits = {**TEST_LIMITS, "header_timeout_seconds": 60, "keepalive_timeout_seconds": 60}
    write_config(config, local_gateway.data_dir, port, local_gateway.dsn, limits=limits)
    log_path = tmp_path / "gateway.log"
    capped = (
        "import resource, sys; resource.setrlimit(resource.RLIMIT_NOFILE, (512, 512));"
        " from gateway.cli import main; sys.exit(main(sys.argv[1:]))"
    )
    command = [sys.executable, "-c", capped, "serve", "--config", str(config)]
    process = _spawn(command, log_path, GATEWAY_ENV)
    endpoint = f"http://127.0.0.1:{port}"
    idle: list[socket.socket] = []
    try:
        _wait_until(process, log_path, lambda: served(port), 60)
        idle = [connect(port) for _ in range(600)]
        time.sleep(1)
        s3 = client(endpoint, connect_timeout=5, read_timeout=5, retries={"max_attempts": 1})
        bucket = f"test-{uuid.uuid4().hex[:16]}"
        s3.create_bucket(Bucket=bucket)
        s3.put_object(Bucket=bucket, Key="k", Body=b"served past the descriptors")
        assert s3.get_object(Bucket=bucket, Key="k")["Body"].read().startswith(b"served")
        assert process.poll() is None
    finally:
        for sock in idle:
            sock.close()
        _terminate(process)
    log = log_path.read_text()
    assert "limits.max_connections lowered from 4096 to 256" in log
    assert "Traceback" not in log


# --- malformed requests -----------------------------------------------------------------------


MALFORMED = [
    b"GET / HTTP/1.1\r\nHost: x\r\nNo colon here\r\n\r\n",
    b"GET / HTTP/1.1\r\nHost: x\r\nX-Control: a\x01b\r\n\r\n",
    b"GET / HTTP/1.1\r\nHost: x\r\nX-Long: " + b"a" * 10000 + b"\r\n\r\n",
    b"GET / HTTP/1.1\r\nHost: x\r\nContent-Length: abc\r\n\r\n",
    b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n",
    b"GET / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
    b"GET /a\x00b HTTP/1.1\r\nHost: x\r\n\r\n",
    b"GET / HTTP/9.9\r\nHost: x\r\n\r\n",
    b"GET / HTTP/1.1\r\nHost: x\r\n" + b"X-Many: 1\r\n" * 200 + b"\r\n",
]


def test_malformed_requests_get_s3_errors_and_no_traceback(guarded, tmp_path: Path) -> None:
    offset = log_size(guarded)
    for raw in MALFORMED:
        with socket.create_connection(("127.0.0.1", guarded.port), timeout=10) as sock:
            with contextlib.suppress(ConnectionError):
                sock.sendall(raw)
            answer = read_response(sock)
        # Answered with S3's error document (or, at worst, closed): never a 500.
        if answer:
            status = int(answer.split(b" ", 2)[1])
            assert 400 <= status < 500, answer[:300]
            assert b"<Error><Code>" in answer, answer[:300]
            assert b"x-amz-request-id" in answer.lower()
    # Still serving.
    assert send_raw("127.0.0.1", guarded.port, HEALTH, b"").status == 200
    log = log_since(guarded, offset)
    assert "Traceback" not in log, log[-3000:]
    assert " ERROR " not in log, log[-3000:]
