"""What a listing with a delimiter costs: a bounded number of database round trips per page,
however many common prefixes the page holds; and the entries it lists, for odd delimiters.

The cost is counted, not timed: a gateway of its own talks to Postgres through a TCP proxy
that counts the round trips its clients start (each simple Query and each Sync of the extended
protocol), so a page that asks once per common prefix shows as hundreds of them.
"""

from __future__ import annotations

import os
import socket
import struct
import threading
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest

from tests.conftest import (
    GATEWAY_ENV,
    S3Client,
    client,
    create_database,
    run_gateway,
)

FOLDERS = 300
# The bucket lookup, the page, and room for background work (janitor, eager renders) that
# happens to run at the same moment; a query per common prefix would be FOLDERS of them.
MAX_ROUND_TRIPS = 20

# Startup-phase requests that precede the StartupMessage (no type byte).
_SSL_REQUEST, _GSSENC_REQUEST = 80877103, 80877104


class CountingProxy:
    """A TCP proxy on 127.0.0.1 in front of a Postgres server, counting round trips."""

    def __init__(self, dsn: str) -> None:
        parts = urlsplit(dsn)
        query = parse_qs(parts.query)
        host = parts.hostname or query.get("host", ["localhost"])[0]
        port = parts.port or int(query.get("port", ["5432"])[0])
        self._target: tuple[int, Any] = (
            (socket.AF_UNIX, os.path.join(host, f".s.PGSQL.{port}"))
            if host.startswith("/")
            else (socket.AF_INET, (host, port))
        )
        self._user = parts.username or "postgres"
        self._password = parts.password or ""
        self._listener = socket.create_server(("127.0.0.1", 0))
        self._lock = threading.Lock()
        self._count = 0
        threading.Thread(target=self._accept, daemon=True).start()

    def dsn(self, database: str) -> str:
        port = self._listener.getsockname()[1]
        return (
            f"postgresql://{self._user}:{self._password}@127.0.0.1:{port}/{database}"
            "?sslmode=disable"
        )

    @property
    def count(self) -> int:
        with self._lock:
            return self._count

    def close(self) -> None:
        self._listener.close()

    def _accept(self) -> None:
        while True:
            try:
                downstream, _ = self._listener.accept()
            except OSError:
                return
            family, address = self._target
            upstream = socket.socket(family, socket.SOCK_STREAM)
            upstream.connect(address)
            for target, args in (
                (self._copy, (upstream, downstream)),
                (self._count_and_copy, (downstream, upstream)),
            ):
                threading.Thread(target=target, args=args, daemon=True).start()

    @staticmethod
    def _copy(source: socket.socket, target: socket.socket) -> None:
        try:
            while data := source.recv(65536):
                target.sendall(data)
        except OSError:
            pass
        finally:
            for sock in (source, target):
                sock.close()

    def _count_and_copy(self, source: socket.socket, target: socket.socket) -> None:
        buffer = b""
        startup = True
        try:
            while data := source.recv(65536):
                target.sendall(data)
                buffer += data
                while True:
                    if startup:
                        if len(buffer) < 8:
                            break
                        length, code = struct.unpack("!ii", buffer[:8])
                        if len(buffer) < length:
                            break
                        buffer = buffer[length:]
                        startup = code in (_SSL_REQUEST, _GSSENC_REQUEST)
                        continue
                    if len(buffer) < 5:
                        break
                    kind, length = buffer[:1], struct.unpack("!i", buffer[1:5])[0]
                    if len(buffer) < 1 + length:
                        break
                    buffer = buffer[1 + length :]
                    if kind in (b"Q", b"S"):
                        with self._lock:
                            self._count += 1
        except OSError:
            pass
        finally:
            for sock in (source, target):
                sock.close()


@pytest.fixture(scope="module")
def proxy(pg_server_dsn: str) -> Iterator[CountingProxy]:
    counting = CountingProxy(pg_server_dsn)
    yield counting
    counting.close()


@pytest.fixture(scope="module")
def counted_s3(
    proxy: CountingProxy, pg_server_dsn: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[S3Client]:
    """boto3 on a gateway (local profile: listings never touch storage) whose every database
    round trip goes through ``proxy``."""
    database = urlsplit(create_database(pg_server_dsn)).path.lstrip("/")
    directory: Path = tmp_path_factory.mktemp("counted") / "gateway"
    with run_gateway(directory, proxy.dsn(database), {}, GATEWAY_ENV) as process:
        yield client(process.endpoint)


def round_trips(proxy: CountingProxy, request: Any) -> tuple[int, Any]:
    before = proxy.count
    answer = request()
    return proxy.count - before, answer


@pytest.fixture(scope="module")
def folders(counted_s3: S3Client) -> str:
    """A bucket of FOLDERS one-key folders and one upload in each folder."""
    name = f"folders-{uuid.uuid4().hex[:12]}"
    counted_s3.create_bucket(Bucket=name)
    keys = [f"dir-{i:04d}/object" for i in range(FOLDERS)]
    with ThreadPoolExecutor(8) as pool:
        list(pool.map(lambda key: counted_s3.put_object(Bucket=name, Key=key, Body=b"x"), keys))
        list(pool.map(lambda key: counted_s3.create_multipart_upload(Bucket=name, Key=key), keys))
    return name


@pytest.mark.parametrize("operation", ["list_objects_v2", "list_objects"])
def test_a_page_of_common_prefixes_costs_a_few_round_trips(
    proxy: CountingProxy, counted_s3: S3Client, folders: str, operation: str
) -> None:
    listing = getattr(counted_s3, operation)
    cost, page = round_trips(proxy, lambda: listing(Bucket=folders, Delimiter="/"))
    assert [p["Prefix"] for p in page["CommonPrefixes"]] == [
        f"dir-{i:04d}/" for i in range(FOLDERS)
    ]
    assert "Contents" not in page and not page["IsTruncated"]
    assert cost <= MAX_ROUND_TRIPS, cost

    # A page cut short by max-keys, and the next one, cost as little.
    cost, first = round_trips(proxy, lambda: listing(Bucket=folders, Delimiter="/", MaxKeys=100))
    assert len(first["CommonPrefixes"]) == 100 and first["IsTruncated"]
    assert cost <= MAX_ROUND_TRIPS, cost


def test_a_page_of_upload_prefixes_costs_a_few_round_trips(
    proxy: CountingProxy, counted_s3: S3Client, folders: str
) -> None:
    def listing() -> Any:
        return counted_s3.list_multipart_uploads(Bucket=folders, Delimiter="/")

    cost, page = round_trips(proxy, listing)
    assert [p["Prefix"] for p in page["CommonPrefixes"]] == [
        f"dir-{i:04d}/" for i in range(FOLDERS)
    ]
    assert "Uploads" not in page and not page["IsTruncated"]
    assert cost <= MAX_ROUND_TRIPS, cost


# --- what a page lists, whatever the delimiter (both profiles) ------------------------------

MAX = "\U0010ffff"
KEYS = [
    "a", "a/b", "a/b/c", "a//d", "a::b", "a::", "a:b", "é/x", "é\U0001f600y",
    "\U0001f600\U0001f600z", "x" + MAX + "1", "x" + MAX + MAX + "2", "y" + MAX, "z/" + MAX,
]  # fmt: skip


def model(keys: list[str], prefix: str, delimiter: str) -> tuple[list[str], list[str]]:
    """(contents, common prefixes) as S3 defines them, in UTF-8 byte order."""
    contents, prefixes = [], []
    for key in sorted(keys, key=lambda k: k.encode()):
        if not key.startswith(prefix):
            continue
        index = key.find(delimiter, len(prefix))
        if index < 0:
            contents.append(key)
        elif (rolled := key[: index + len(delimiter)]) not in prefixes:
            prefixes.append(rolled)
    return contents, prefixes


def pages(s3: S3Client, bucket: str, **params: Any) -> tuple[list[str], list[str]]:
    contents: list[str] = []
    prefixes: list[str] = []
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, **params):
        contents += [entry["Key"] for entry in page.get("Contents", [])]
        prefixes += [entry["Prefix"] for entry in page.get("CommonPrefixes", [])]
    return contents, prefixes


@pytest.mark.parametrize(
    ("prefix", "delimiter"),
    [("", "/"), ("a", "/"), ("", "::"), ("a", ":"), ("", "\U0001f600"), ("", MAX),
     ("x", MAX), ("", "b/"), ("a/", "/")],
)  # fmt: skip
def test_odd_delimiters_list_what_s3_would(
    s3: S3Client, bucket: str, prefix: str, delimiter: str
) -> None:
    for key in KEYS:
        s3.put_object(Bucket=bucket, Key=key, Body=b"")
    expected = model(KEYS, prefix, delimiter)
    assert pages(s3, bucket, Prefix=prefix, Delimiter=delimiter) == expected
    # One entry a page: every page resumes after a key or a common prefix.
    paged = pages(s3, bucket, Prefix=prefix, Delimiter=delimiter, PaginationConfig={"PageSize": 1})
    assert paged == expected
