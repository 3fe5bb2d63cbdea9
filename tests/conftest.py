"""Session fixtures: one Postgres, live gateways (HTTP and HTTPS) as real processes, clients.

Postgres is GATEWAY_TEST_DSN when set, else an embedded server (pgserver) for the session.
The `gateway` fixture runs each test using it once per storage profile: "local" (blobs on
disk), "upstream" (bytes in a bucket of a moto server, run as a real HTTP upstream) and
"sealed" (blobs on disk through every storage transform).
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import asyncpg
import boto3
import botocore.config
import pytest
import requests
import yaml

from gateway.meta.db import create_pool, migrate

# The browser and the second origin of the browser tests (tests/browser.py).
pytest_plugins = ["tests.browser"]

ROOT_ACCESS_KEY = "GWTESTROOTKEY"
ROOT_SECRET_KEY = "gateway-test-root-secret"
READER_ACCESS_KEY = "GWTESTREADER"
READER_SECRET_KEY = "gateway-test-reader-secret"
PUBLIC_BUCKET = "public-photos"
# A public bucket whose CORS rules are set in the YAML.
CORS_BUCKET = "cors-photos"
# Anyone may read its objects and variants, but not list it (public_read: objects).
OBJECTS_BUCKET = "site-objects"
# Website hosts are <bucket>.<WEBSITE_DOMAIN>; SITE_BUCKET is a static site set in the YAML.
WEBSITE_DOMAIN = "web.localtest"
SITE_BUCKET = "www-site"
CORS_SITE = "https://site.example"
# Declared in the configuration with an eager preset; no other bucket renders on upload.
EAGER_BUCKET = "eager-photos"
# Versioned by the configuration file (buckets.<name>.versioning).
VERSIONED_BUCKET = "versioned-by-config"
# Image variant presets of every test gateway (tests/test_variants.py).
VARIANT_PRESETS: dict[str, dict[str, object]] = {
    "thumb": {
        "width": 64,
        "height": 64,
        "fit": "cover",
        "format": "webp",
        "cache_control": "public, max-age=31536000, immutable",
    },
    "small": {"width": 100, "fit": "inside", "format": "png"},
    "boxed": {"width": 120, "height": 80, "fit": "contain", "format": "jpeg"},
    "auto": {"width": 96, "fit": "inside", "format": "auto"},
    "first-original": {"width": 50, "fit": "inside", "format": "webp", "on_miss": "original"},
    "eager": {"width": 40, "height": 40, "fit": "cover", "format": "webp", "eager": True},
    # Video posters (tests/test_video_posters.py).
    "poster": {
        "width": 160,
        "fit": "inside",
        "format": "jpeg",
        "frame": {"at": "1.5s"},
        "cache_control": "public, max-age=600",
    },
    "poster-late": {
        "width": 80,
        "height": 80,
        "fit": "cover",
        "format": "png",
        "frame": {"at": "80%"},
    },
    "poster-first": {"width": 160, "fit": "inside", "format": "webp", "frame": {}},
}
REGION = "us-east-1"
REPO = Path(__file__).resolve().parent.parent

# Storage profiles of the gateways under test.
LOCAL = "local"
UPSTREAM = "upstream"
# A local profile with every storage transform: blobs encrypted and chunked, with dedup.
SEALED = "sealed"
PROFILES = [LOCAL, UPSTREAM, SEALED]
UPSTREAM_BUCKET = "gateway-upstream"
UPSTREAM_VARIANTS_PREFIX = "_gateway/variants/"
# moto takes any pair.
UPSTREAM_ACCESS_KEY = "UPSTREAMTESTKEY"
UPSTREAM_SECRET_KEY = "upstream-test-secret"

# boto3 builds its clients at runtime; the test extra has no type stubs for them.
S3Client = Any


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="session")
def tmp_root() -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix="gateway-tests-"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture(scope="session")
def pg_server_dsn(tmp_root: Path) -> Iterator[str]:
    dsn = os.environ.get("GATEWAY_TEST_DSN")
    if dsn:
        yield dsn
        return
    import pgserver

    server = pgserver.get_server(tmp_root / "postgres", cleanup_mode="stop")
    yield server.get_uri()
    server.cleanup()


def _with_database(dsn: str, database: str) -> str:
    """The same server DSN pointing at another database."""
    from urllib.parse import urlsplit, urlunsplit

    parts = urlsplit(dsn)
    return urlunsplit(parts._replace(path="/" + database))


def create_database(server_dsn: str) -> str:
    """A fresh database on the test server, so every gateway starts from an empty schema."""
    import asyncio

    name = "gw_" + uuid.uuid4().hex[:12]

    async def create() -> None:
        conn = await asyncpg.connect(server_dsn)
        try:
            await conn.execute(f'CREATE DATABASE "{name}"')
        finally:
            await conn.close()

    asyncio.run(create())
    return _with_database(server_dsn, name)


@contextlib.asynccontextmanager
async def migrated_pool(
    dsn: str, bucket: str, profile: str, max_size: int
) -> AsyncIterator[asyncpg.Pool]:
    """A pool on a migrated database holding ``bucket``: for tests of the metadata layer and
    the services on it, without a gateway."""
    pool = await create_pool(dsn, 1, max_size)
    try:
        async with pool.acquire() as conn:
            await migrate(conn)
            await conn.execute(
                "INSERT INTO buckets (name, profile, owner) VALUES ($1, $2, 'test')"
                " ON CONFLICT DO NOTHING",
                bucket,
                profile,
            )
        yield pool
    finally:
        await pool.close()


def db_fetch(dsn: str, sql: str, *args: object) -> list[asyncpg.Record]:
    """Run one query against a gateway's database from a synchronous test."""
    import asyncio

    async def run() -> list[asyncpg.Record]:
        conn = await asyncpg.connect(dsn)
        try:
            return await conn.fetch(sql, *args)
        finally:
            await conn.close()

    return asyncio.run(run())


def unaccounted_blobs(gateway: GatewayProcess, dsn: str) -> list[str]:
    """Blob files that no row references and the garbage log does not list."""
    rows = db_fetch(
        dsn,
        "SELECT storage_key FROM objects WHERE storage_key IS NOT NULL"
        " UNION SELECT storage_key FROM object_versions WHERE storage_key IS NOT NULL"
        " UNION SELECT storage_key FROM object_chunks"
        " UNION SELECT storage_key FROM upload_parts"
        " UNION SELECT storage_key FROM derivatives WHERE storage_key IS NOT NULL"
        " UNION SELECT storage_key FROM garbage"
        # The chunks of a chunked profile's blobs: a blob's own key names no file there.
        " UNION SELECT chunk_key FROM blob_chunks"
        " UNION SELECT storage_key FROM chunk_blobs",
    )
    known = {row["storage_key"] for row in rows}
    files = [path for path in (gateway.data_dir / "blobs").rglob("*") if path.is_file()]
    return [path.name for path in files if path.name.removesuffix(".tmp") not in known]


def blob_files(gateway: GatewayProcess, storage_key: str) -> list[Path]:
    """The files holding a blob of a local profile: its own, or on a chunked profile (whose
    blob keys name no file) its chunks'."""
    rows = db_fetch(
        gateway.dsn, "SELECT chunk_key FROM blob_chunks WHERE blob_key = $1", storage_key
    )
    names = [row["chunk_key"] for row in rows] or [storage_key]
    return [gateway.data_dir / "blobs" / name[:2] / name for name in names]


def make_certificate(directory: Path) -> tuple[Path, Path]:
    cert, key = directory / "cert.pem", directory / "key.pem"
    subprocess.run(
        [
            "openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
            "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost",
            "-keyout", str(key), "-out", str(cert),
        ],
        check=True,
        capture_output=True,
    )  # fmt: skip
    return cert, key


def wait_for(condition: Callable[[], bool], timeout: float) -> bool:
    """Whether ``condition`` came to hold within ``timeout`` seconds (polled)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.2)
    return condition()


def wait_for_stored_variants(dsn: str, timeout: float = 30) -> None:
    """Waits until no derivative is pending: a render is answered before its blob is stored
    and its row marked ready."""
    assert wait_for(
        lambda: not db_fetch(dsn, "SELECT 1 FROM derivatives WHERE status = 'pending' LIMIT 1"),
        timeout,
    ), "a derivative stayed pending"


def _spawn(command: list[str], log_path: Path, env: dict[str, str]) -> subprocess.Popen[bytes]:
    with open(log_path, "ab") as log:
        return subprocess.Popen(
            command, cwd=REPO, env={**os.environ, **env}, stdout=log, stderr=subprocess.STDOUT
        )


def _wait_until(
    process: subprocess.Popen[bytes], log_path: Path, ready: Callable[[], bool], timeout: float
) -> None:
    """Poll ``ready`` until it holds; fail with the log's tail if the process dies first."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{process.args} exited: {log_path.read_text()[-3000:]}")
        try:
            if ready():
                return
        except requests.RequestException:
            pass
        time.sleep(0.1)
    raise RuntimeError(f"{process.args} did not come up: {log_path.read_text()[-3000:]}")


def _terminate(process: subprocess.Popen[bytes] | None) -> None:
    if process is not None and process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


# The log of every gateway process started in this session: after each test, the part written
# during it is checked for errors the test did not declare (check_gateway_logs).
GATEWAY_LOGS: dict[Path, None] = {}
# A logging line of the gateway in log.format text (gateway.logs) and the levels that fail a
# test; in log.format json (the default) each line is a JSON object.
LOG_RECORD = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d+ ([A-Z]+) ")
FAILING_LEVELS = {"ERROR", "CRITICAL"}
LEVELS = {"DEBUG", "INFO", "WARNING", *FAILING_LEVELS}
TRACEBACK = "Traceback (most recent call last)"


def json_record(line: str) -> dict[str, Any] | None:
    """The record a JSON log line holds; None for any other line."""
    if not line.startswith("{"):
        return None
    try:
        record = json.loads(line)
    except ValueError:
        return None
    return record if isinstance(record, dict) and "level" in record else None


def _as_text(record: dict[str, Any]) -> str:
    """A JSON record as the text format writes it, so patterns work on either format."""
    message = record.get("message") or json.dumps(
        {key: value for key, value in record.items() if key not in ("time", "level")}
    )
    text = f"{record.get('time')} {record['level']} {record.get('logger', 'gateway.access')}:"
    text += f" {message}"
    if record.get("traceback"):
        text += "\n" + record["traceback"]
    return text


def log_entries(text: str) -> list[str]:
    """``text`` split into log records, each with its continuation lines (a traceback); a
    JSON record is rendered as its text line, its traceback below it."""
    entries: list[str] = []
    for line in text.splitlines():
        record = json_record(line)
        if record is not None:
            entries.append(_as_text(record))
        elif LOG_RECORD.match(line) or not entries:
            entries.append(line)
        else:
            entries[-1] += "\n" + line
    return entries


def _level(entry: str) -> str | None:
    record = LOG_RECORD.match(entry)
    if record is not None:
        return record.group(1)
    first = entry.split("\n", 1)[0].split(" ")
    return first[1] if len(first) > 1 and first[1] in LEVELS else None


def unexpected_log_entries(text: str, expected: list[re.Pattern[str]]) -> list[str]:
    """Records at ERROR or above, and tracebacks, that no ``expected`` pattern matches."""
    found = []
    for entry in log_entries(text):
        failing = _level(entry) in FAILING_LEVELS or TRACEBACK in entry
        if failing and not any(pattern.search(entry) for pattern in expected):
            found.append(entry)
    return found


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "gateway_log(*patterns): ERROR records or tracebacks the test expects in a gateway's"
        " log (regular expressions searched in each record, traceback included)",
    )


@pytest.hookimpl(tryfirst=True)
def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """A test module that sets ``GATEWAY_PROFILES`` runs its tests on those profiles only
    (tests marked for a profile of their own keep it): the protocol is the same over every
    profile, and the sealed one is local disk underneath, so protocol tests need not pay for
    each."""
    profiles = getattr(metafunc.module, "GATEWAY_PROFILES", None)
    if profiles is None or "gateway" not in metafunc.fixturenames:
        return
    for mark in metafunc.definition.iter_markers("parametrize"):
        names = mark.args[0]
        if "gateway" in (names.split(",") if isinstance(names, str) else names):
            return
    # As a mark, which pytest's own hooks (run after this one) apply in the fixture's place.
    metafunc.definition.add_marker(pytest.mark.parametrize("gateway", profiles, indirect=True))


@pytest.fixture
def expect_gateway_log() -> list[re.Pattern[str]]:
    """Append (with ``.append(re.compile(...))``) what a test expects its gateways to log at
    ERROR or with a traceback; the gateway_log marker does the same for a whole test."""
    return []


@pytest.fixture(autouse=True)
def check_gateway_logs(
    request: pytest.FixtureRequest, expect_gateway_log: list[re.Pattern[str]]
) -> Iterator[None]:
    """Fail a test after which a gateway's log holds an error or a traceback the test did not
    expect, so that failures of background work (janitor, eager renders) are seen too. Only
    the part of each log written during the test is read: session gateways are shared."""
    offsets = {path: path.stat().st_size for path in GATEWAY_LOGS if path.exists()}
    yield
    for marker in request.node.iter_markers("gateway_log"):
        expect_gateway_log.extend(re.compile(pattern) for pattern in marker.args)
    report = []
    for path in list(GATEWAY_LOGS):
        if not path.exists():
            continue
        with open(path, "rb") as log:
            log.seek(offsets.get(path, 0))
            text = log.read().decode("utf-8", "replace")
        for entry in unexpected_log_entries(text, expect_gateway_log):
            report.append(f"{path.name}:\n{entry}")
    if report:
        pytest.fail("unexpected errors in a gateway's log:\n" + "\n".join(report), False)


@dataclass
class GatewayProcess:
    """A gateway started as `python -m gateway serve`, exactly as an operator runs it."""

    config_path: Path
    data_dir: Path
    port: int
    tls: bool = False
    env: dict[str, str] = field(default_factory=dict)
    process: subprocess.Popen[bytes] | None = None
    log_path: Path | None = None
    dsn: str = ""
    # The configuration keys that choose where object bytes go (storage_profiles,
    # default_profile); empty for the built-in local profile.
    storage: dict[str, object] = field(default_factory=dict)

    @property
    def endpoint(self) -> str:
        return f"{'https' if self.tls else 'http'}://127.0.0.1:{self.port}"

    @property
    def profile(self) -> str:
        """The storage profile of buckets made by CreateBucket: LOCAL, UPSTREAM or SEALED."""
        return str(self.storage.get("default_profile", LOCAL))

    def start(self, timeout: float = 60) -> None:
        self.log_path = self.data_dir.parent / f"gateway-{self.port}.log"
        GATEWAY_LOGS.setdefault(self.log_path, None)
        command = [sys.executable, "-m", "gateway", "serve", "--config", str(self.config_path)]
        self.process = _spawn(command, self.log_path, self.env)
        health = f"{self.endpoint}/_gateway/health"
        _wait_until(
            self.process,
            self.log_path,
            lambda: requests.get(health, verify=False, timeout=2).status_code == 200,
            timeout,
        )

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait()

    def stop(self) -> None:
        _terminate(self.process)

    def command(
        self, name: str, *arguments: str, timeout: float = 120
    ) -> subprocess.CompletedProcess[str]:
        """`python -m gateway NAME --config ... ARGUMENTS` on this process's configuration and
        environment, as an operator runs the maintenance commands beside a serving gateway."""
        return subprocess.run(
            [sys.executable, "-m", "gateway", name, "--config", str(self.config_path), *arguments],
            cwd=REPO,
            env={**os.environ, **self.env},
            capture_output=True,
            text=True,
            timeout=timeout,
        )

    @contextlib.contextmanager
    def running(self) -> Iterator[GatewayProcess]:
        """Started, and stopped on leaving, also when it never became healthy."""
        try:
            self.start()
            yield self
        finally:
            self.stop()

    def sibling(
        self, config_path: Path, env: dict[str, str] | None = None, **changes: object
    ) -> GatewayProcess:
        """Another process (not started) over this one's database and storage, with its
        configuration changed by ``changes`` (write_config keywords)."""
        port = free_port()
        write_config(config_path, self.data_dir, port, self.dsn, **{**self.storage, **changes})
        return GatewayProcess(
            config_path,
            self.data_dir,
            port,
            tls="tls" in changes,
            env=self.env if env is None else env,
            dsn=self.dsn,
            storage=self.storage,
        )


@dataclass
class MotoServer:
    """moto's S3 in server mode on 127.0.0.1, the upstream of the upstream profile.

    Restartable on the same port for outage tests. moto keeps everything in memory, so every
    start comes back empty but for ``bucket``, created anew.
    """

    port: int
    log_path: Path
    bucket: str = UPSTREAM_BUCKET
    process: subprocess.Popen[bytes] | None = None

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def client(self, **config: object) -> S3Client:
        """boto3 talking to moto directly, around the gateway."""
        return client(
            self.endpoint,
            UPSTREAM_ACCESS_KEY,
            UPSTREAM_SECRET_KEY,
            s3={"addressing_style": "path"},
            **config,
        )

    def start(self, timeout: float = 30) -> None:
        command = [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(self.port)]
        self.process = _spawn(command, self.log_path, {})
        _wait_until(
            self.process,
            self.log_path,
            lambda: requests.get(self.endpoint, timeout=2).status_code < 500,
            timeout,
        )
        self.client().create_bucket(Bucket=self.bucket)

    def stop(self) -> None:
        _terminate(self.process)


def write_config(path: Path, data_dir: Path, port: int, dsn: str, **extra: object) -> None:
    config = {
        "listen": f"127.0.0.1:{port}",
        "region": REGION,
        "base_domains": ["s3.localtest"],
        "website_domains": [WEBSITE_DOMAIN],
        "data_dir": str(data_dir),
        "database": {"url": dsn},
        "buckets": {
            PUBLIC_BUCKET: {"public_read": True, "variants": ["*"]},
            EAGER_BUCKET: {"variants": ["eager", "thumb"]},
            VERSIONED_BUCKET: {"versioning": "enabled"},
            OBJECTS_BUCKET: {"public_read": "objects", "variants": ["*"]},
            SITE_BUCKET: {
                "public_read": "objects",
                "variants": ["*"],
                "website": {"index_document": "index.html", "error_document": "404.html"},
            },
            CORS_BUCKET: {
                "public_read": True,
                "variants": ["*"],
                "cors": [
                    {
                        "allowed_origins": [CORS_SITE],
                        "allowed_methods": ["GET", "HEAD"],
                        "allowed_headers": ["*"],
                        "expose_headers": ["ETag", "Content-Length"],
                        "max_age_seconds": 600,
                    },
                    {"allowed_origins": ["*"], "allowed_methods": ["GET"]},
                ],
            },
        },
        "variants": VARIANT_PRESETS,
        # Buckets the tests create: every preset but the eager one, so uploads elsewhere in
        # the suite never start a render.
        "default_bucket_variants": [name for name in VARIANT_PRESETS if name != "eager"],
        "credentials": [
            {
                "access_key": READER_ACCESS_KEY,
                "secret_key": "${GATEWAY_TEST_READER_SECRET}",
                "buckets": {PUBLIC_BUCKET: "read"},
            }
        ],
        "limits": {"garbage_grace_seconds": 3600, "body_idle_timeout_seconds": 2},
        **extra,
    }
    path.write_text(yaml.safe_dump(config))


def upstream_storage(moto: MotoServer) -> dict[str, object]:
    """write_config keywords that keep every bucket (the declared ones follow default_profile,
    as do those made by CreateBucket) in moto's bucket, object KEY of bucket B at "B/KEY"."""
    return {
        "storage_profiles": {
            "default": {"type": "local", "path": "blobs"},
            UPSTREAM: {
                "type": "upstream",
                "endpoint_url": moto.endpoint,
                "region": REGION,
                "bucket": moto.bucket,
                "prefix": "{bucket}/",
                "variants_prefix": UPSTREAM_VARIANTS_PREFIX,
                "addressing_style": "path",
                "access_key": "${UPSTREAM_ACCESS_KEY}",
                "secret_key": "${UPSTREAM_SECRET_KEY}",
                # Few, short retries: an outage becomes a 503 within about two seconds.
                "max_attempts": 4,
                "retry_base_seconds": 0.2,
                "connect_timeout_seconds": 5,
                "read_timeout_seconds": 30,
            },
        },
        "default_profile": UPSTREAM,
    }


def sealed_storage() -> dict[str, object]:
    """write_config keywords that keep every bucket in an encrypted, chunked (dedup) local
    profile, its blobs under "blobs" as the built-in profile's are."""
    return {
        "storage_profiles": {
            "default": {"type": "local", "path": "default-blobs"},
            SEALED: {
                "type": "local",
                "path": "blobs",
                "encryption": {"active_key": "k1", "keys": {"k1": "${SEALED_TEST_KEY}"}},
                # Small chunks, so that most objects of the suite span several.
                "chunking": {"chunk_size": "256KiB", "dedup": True},
            },
        },
        "default_profile": SEALED,
    }


def upstream_key(bucket: str, key: str) -> str:
    """Where object ``key`` of gateway bucket ``bucket`` lives in the upstream bucket."""
    return f"{bucket}/{key}"


def longest_key(gateway: GatewayProcess, bucket: str) -> int:
    """The longest key in bytes ``bucket`` takes: S3's 1024, less the prefix an upstream
    profile stores it under (the upstream has the same limit)."""
    if gateway.profile == UPSTREAM:
        return 1024 - len(upstream_key(bucket, "").encode())
    return 1024


GATEWAY_ENV = {
    "GATEWAY_ROOT_ACCESS_KEY": ROOT_ACCESS_KEY,
    "GATEWAY_ROOT_SECRET_KEY": ROOT_SECRET_KEY,
    "GATEWAY_TEST_READER_SECRET": READER_SECRET_KEY,
    "GATEWAY_LOG_LEVEL": "INFO",
}
SEALED_ENV = {**GATEWAY_ENV, "SEALED_TEST_KEY": "6" * 64}
# The upstream gateway reads moto's credentials from its environment, as an operator would.
UPSTREAM_ENV = {
    **GATEWAY_ENV,
    "UPSTREAM_ACCESS_KEY": UPSTREAM_ACCESS_KEY,
    "UPSTREAM_SECRET_KEY": UPSTREAM_SECRET_KEY,
}


@contextlib.contextmanager
def run_gateway(
    directory: Path,
    dsn: str,
    storage: dict[str, object],
    env: dict[str, str],
    **config: object,
) -> Iterator[GatewayProcess]:
    """A running gateway with its own configuration and data directory under ``directory``
    (made here), stopped on leaving; ``config``: more write_config keywords."""
    directory.mkdir()
    port = free_port()
    config_path = directory / "gateway.yaml"
    write_config(config_path, directory / "data", port, dsn, **storage, **config)
    process = GatewayProcess(
        config_path, directory / "data", port, env=env, dsn=dsn, storage=storage
    )
    with process.running():
        yield process


@dataclass
class OwnUpstream:
    """A moto server and a gateway over it that no other test uses."""

    moto: MotoServer
    gateway: GatewayProcess


@contextlib.contextmanager
def own_upstream_gateway(directory: Path, pg_server_dsn: str) -> Iterator[OwnUpstream]:
    """A moto of its own under ``directory`` and a gateway (upstream profile, a new database)
    over it, both stopped on leaving: for tests that stop the upstream (moto keeps everything in
    memory, so it comes back empty) or that list all of it."""
    moto = MotoServer(free_port(), directory / "moto.log")
    try:
        moto.start()
        dsn = create_database(pg_server_dsn)
        with run_gateway(
            directory / "gateway", dsn, upstream_storage(moto), UPSTREAM_ENV
        ) as gateway:
            yield OwnUpstream(moto, gateway)
    finally:
        moto.stop()


@pytest.fixture(scope="session")
def local_dsn(pg_server_dsn: str) -> str:
    return create_database(pg_server_dsn)


@pytest.fixture(scope="session")
def local_gateway(tmp_root: Path, local_dsn: str) -> Iterator[GatewayProcess]:
    """The gateway with the built-in local profile: blobs under its data directory."""
    with run_gateway(tmp_root / LOCAL, local_dsn, {}, GATEWAY_ENV) as process:
        yield process


@pytest.fixture(scope="session")
def sealed_gateway(tmp_root: Path, pg_server_dsn: str) -> Iterator[GatewayProcess]:
    """The gateway whose buckets are on an encrypted local profile (see sealed_storage)."""
    dsn = create_database(pg_server_dsn)
    with run_gateway(tmp_root / SEALED, dsn, sealed_storage(), SEALED_ENV) as process:
        yield process


@pytest.fixture(scope="session")
def moto_server(tmp_root: Path) -> Iterator[MotoServer]:
    server = MotoServer(free_port(), tmp_root / "moto.log")
    try:
        server.start()
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def upstream_s3(moto_server: MotoServer) -> S3Client:
    return moto_server.client()


@pytest.fixture(scope="session")
def upstream_bucket(moto_server: MotoServer) -> str:
    return moto_server.bucket


@pytest.fixture(scope="session")
def upstream_gateway(
    tmp_root: Path, pg_server_dsn: str, moto_server: MotoServer
) -> Iterator[GatewayProcess]:
    """The gateway whose default profile is moto's bucket (see upstream_storage)."""
    dsn = create_database(pg_server_dsn)
    with run_gateway(
        tmp_root / UPSTREAM, dsn, upstream_storage(moto_server), UPSTREAM_ENV
    ) as process:
        yield process


@pytest.fixture(scope="session", params=PROFILES)
def gateway(request: pytest.FixtureRequest) -> GatewayProcess:
    """The gateway under test, once per storage profile: every test using it, or s3, bucket,
    gateway_dsn, tls_gateway..., runs against each. Being session-scoped, pytest groups the
    tests by profile; the processes behind are session fixtures of their own, started on
    first use (so `-k "not upstream"` never starts moto) and only once."""
    return request.getfixturevalue(f"{request.param}_gateway")


def on_profile(profile: str) -> pytest.MarkDecorator:
    """Runs the marked test (or module, as its pytestmark) against one profile's gateway."""
    return pytest.mark.parametrize("gateway", [profile], indirect=True)


# For tests of what only a local profile has: blob files, and the garbage log of them.
LOCAL_ONLY = on_profile(LOCAL)
UPSTREAM_ONLY = on_profile(UPSTREAM)


@pytest.fixture(scope="session")
def gateway_dsn(gateway: GatewayProcess) -> str:
    """The database of `gateway`: each profile's gateway has its own."""
    return gateway.dsn


@pytest.fixture(scope="session")
def certificate(tmp_root: Path) -> tuple[Path, Path]:
    return make_certificate(tmp_root)


@pytest.fixture(scope="session")
def tls_gateway(
    gateway: GatewayProcess, certificate: tuple[Path, Path]
) -> Iterator[GatewayProcess]:
    """A second process over the database and storage of `gateway`, serving HTTPS."""
    cert, key = certificate
    process = gateway.sibling(
        gateway.config_path.with_name("gateway-tls.yaml"),
        env={**gateway.env, "GATEWAY_TEST_CA": str(cert)},
        tls={"certificate": str(cert), "private_key": str(key)},
    )
    with process.running():
        yield process


@pytest.fixture(scope="session")
def ca_bundle(tls_gateway: GatewayProcess) -> str:
    return tls_gateway.env["GATEWAY_TEST_CA"]


def client(
    endpoint: str,
    access_key: str = ROOT_ACCESS_KEY,
    secret_key: str = ROOT_SECRET_KEY,
    verify: str | bool | None = None,
    **config: object,
) -> S3Client:
    return boto3.client(
        "s3",
        endpoint_url=endpoint,
        aws_access_key_id=access_key,
        aws_secret_access_key=secret_key,
        region_name=REGION,
        verify=verify,
        config=botocore.config.Config(**config) if config else None,
    )


@pytest.fixture(scope="session")
def s3(gateway: GatewayProcess) -> S3Client:
    """boto3 with its default configuration, over HTTP."""
    return client(gateway.endpoint)


@pytest.fixture(scope="session")
def s3_tls(tls_gateway: GatewayProcess, ca_bundle: str) -> S3Client:
    """boto3 over HTTPS, where it sends aws-chunked bodies with checksum trailers."""
    return client(tls_gateway.endpoint, verify=ca_bundle)


@pytest.fixture
def bucket(s3: S3Client) -> Iterator[str]:
    name = f"test-{uuid.uuid4().hex[:16]}"
    s3.create_bucket(Bucket=name)
    yield name
