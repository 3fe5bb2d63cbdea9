"""Hand-built requests for edge cases no SDK will produce (signed independently of the gateway)."""

from __future__ import annotations

import hashlib
import hmac
import socket
from dataclasses import dataclass
from datetime import UTC, datetime
from urllib.parse import urlsplit

from botocore.auth import S3SigV4Auth, SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials

from tests.conftest import REGION, ROOT_ACCESS_KEY, ROOT_SECRET_KEY

EMPTY_SHA256 = hashlib.sha256(b"").hexdigest()


def sign(
    method: str,
    url: str,
    payload_hash: str,
    headers: dict[str, str] | None = None,
    secret_key: str = ROOT_SECRET_KEY,
    access_key: str = ROOT_ACCESS_KEY,
) -> dict[str, str]:
    """SigV4 headers from botocore's own signer, with the payload hash we choose."""
    request = AWSRequest(method=method, url=url, headers=dict(headers or {}))
    request.headers["X-Amz-Content-SHA256"] = payload_hash
    SigV4Auth(Credentials(access_key, secret_key), "s3", REGION).add_auth(request)
    return {**dict(request.headers), "Host": urlsplit(url).netloc}


def sign_s3(method: str, url: str) -> dict[str, str]:
    """Headers for an empty-bodied request signed by botocore's S3 signer, which (unlike the
    generic one) signs the path exactly as given: for keys with characters to escape."""
    request = AWSRequest(method=method, url=url)
    S3SigV4Auth(Credentials(ROOT_ACCESS_KEY, ROOT_SECRET_KEY), "s3", REGION).add_auth(request)
    return dict(request.headers)


def signing_key(secret_key: str, date: str) -> bytes:
    key = f"AWS4{secret_key}".encode()
    for part in (date, REGION, "s3", "aws4_request"):
        key = hmac.new(key, part.encode(), hashlib.sha256).digest()
    return key


def signed_chunks(headers: dict[str, str], chunks: list[bytes], secret_key: str) -> bytes:
    """An aws-chunked body signed chunk by chunk (STREAMING-AWS4-HMAC-SHA256-PAYLOAD)."""
    amz_date = headers["X-Amz-Date"]
    seed = headers["Authorization"].rsplit("Signature=", 1)[1]
    scope = f"{amz_date[:8]}/{REGION}/s3/aws4_request"
    key = signing_key(secret_key, amz_date[:8])
    previous = seed
    body = b""
    for data in [*chunks, b""]:
        to_sign = "\n".join(
            [
                "AWS4-HMAC-SHA256-PAYLOAD",
                amz_date,
                scope,
                previous,
                EMPTY_SHA256,
                hashlib.sha256(data).hexdigest(),
            ]
        )
        signature = hmac.new(key, to_sign.encode(), hashlib.sha256).hexdigest()
        body += f"{len(data):x};chunk-signature={signature}\r\n".encode() + data + b"\r\n"
        previous = signature
    return body


@dataclass
class RawResponse:
    status: int
    headers: dict[str, str]
    body: bytes


def send_raw(
    host: str, port: int, head: bytes, body: bytes, *, close_write: bool = False
) -> RawResponse:
    """Send bytes exactly as given; ``close_write`` ends the stream early (a short body)."""
    with socket.create_connection((host, port), timeout=10) as sock:
        sock.sendall(head + body)
        if close_write:
            sock.shutdown(socket.SHUT_WR)
        return receive(sock)


def receive(sock: socket.socket) -> RawResponse:
    """Read one response: until its Content-Length is in, the connection ends, or a read
    times out."""
    data = b""
    while True:
        try:
            piece = sock.recv(65536)
        except TimeoutError:
            break
        if not piece:
            break
        data += piece
        if b"\r\n\r\n" in data:
            header_part, _, rest = data.partition(b"\r\n\r\n")
            length = _content_length(header_part)
            if length is not None and len(rest) >= length:
                break
    header_part, _, rest = data.partition(b"\r\n\r\n")
    lines = header_part.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    return RawResponse(status, headers, rest)


def _content_length(header_part: bytes) -> int | None:
    for line in header_part.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            return int(value.strip())
    return None


def request_head(method: str, path: str, headers: dict[str, str]) -> bytes:
    lines = [f"{method} {path} HTTP/1.1", *(f"{k}: {v}" for k, v in headers.items()), "", ""]
    return "\r\n".join(lines).encode()


def now_amz() -> str:
    return datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
