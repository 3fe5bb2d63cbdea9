"""Session fixtures: one Postgres, live gateways (HTTP and HTTPS) as real processes, clients.

Postgres is GATEWAY_TEST_DSN when set, else an embedded server (pgserver) for the session.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import asyncpg
import boto3
import botocore.config
import pytest
import requests
import yaml

ROOT_ACCESS_KEY = "GWTESTROOTKEY"
ROOT_SECRET_KEY = "gateway-test-root-secret"
READER_ACCESS_KEY = "GWTESTREADER"
READER_SECRET_KEY = "gateway-test-reader-secret"
PUBLIC_BUCKET = "public-photos"
# Declared in the configuration with an eager preset; no other bucket renders on upload.
EAGER_BUCKET = "eager-photos"
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
}
REGION = "us-east-1"
REPO = Path(__file__).resolve().parent.parent


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

    @property
    def endpoint(self) -> str:
        return f"{'https' if self.tls else 'http'}://127.0.0.1:{self.port}"

    def start(self, timeout: float = 60) -> None:
        self.log_path = self.data_dir.parent / f"gateway-{self.port}.log"
        env = {**os.environ, **self.env}
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "gateway", "serve", "--config", str(self.config_path)],
                cwd=REPO,
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"gateway exited: {self.log_path.read_text()[-3000:]}")
            try:
                response = requests.get(f"{self.endpoint}/_gateway/health", verify=False, timeout=2)
                if response.status_code == 200:
                    return
            except requests.RequestException:
                pass
            time.sleep(0.2)
        raise RuntimeError(f"gateway did not become healthy: {self.log_path.read_text()[-3000:]}")

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait()

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def write_config(path: Path, data_dir: Path, port: int, dsn: str, **extra: object) -> None:
    config = {
        "listen": f"127.0.0.1:{port}",
        "region": REGION,
        "base_domains": ["s3.localtest"],
        "data_dir": str(data_dir),
        "database": {"url": dsn},
        "buckets": {
            PUBLIC_BUCKET: {"public_read": True, "variants": ["*"]},
            EAGER_BUCKET: {"variants": ["eager", "thumb"]},
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


GATEWAY_ENV = {
    "GATEWAY_ROOT_ACCESS_KEY": ROOT_ACCESS_KEY,
    "GATEWAY_ROOT_SECRET_KEY": ROOT_SECRET_KEY,
    "GATEWAY_TEST_READER_SECRET": READER_SECRET_KEY,
    "GATEWAY_LOG_LEVEL": "INFO",
}


@pytest.fixture(scope="session")
def gateway_dsn(pg_server_dsn: str) -> str:
    return create_database(pg_server_dsn)


@pytest.fixture(scope="session")
def gateway(tmp_root: Path, gateway_dsn: str) -> Iterator[GatewayProcess]:
    data_dir = tmp_root / "data"
    port = free_port()
    config_path = tmp_root / "gateway.yaml"
    write_config(config_path, data_dir, port, gateway_dsn)
    process = GatewayProcess(config_path, data_dir, port, env=GATEWAY_ENV)
    process.start()
    yield process
    process.stop()


@pytest.fixture(scope="session")
def tls_gateway(
    tmp_root: Path, gateway_dsn: str, gateway: GatewayProcess
) -> Iterator[GatewayProcess]:
    """A second process over the same database and data directory, serving HTTPS."""
    cert, key = make_certificate(tmp_root)
    port = free_port()
    config_path = tmp_root / "gateway-tls.yaml"
    write_config(
        config_path,
        gateway.data_dir,
        port,
        gateway_dsn,
        tls={"certificate": str(cert), "private_key": str(key)},
    )
    process = GatewayProcess(config_path, gateway.data_dir, port, tls=True, env=GATEWAY_ENV)
    process.env = {**GATEWAY_ENV, "GATEWAY_TEST_CA": str(cert)}
    process.start()
    yield process
    process.stop()


@pytest.fixture(scope="session")
def ca_bundle(tls_gateway: GatewayProcess) -> str:
    return tls_gateway.env["GATEWAY_TEST_CA"]


def client(
    endpoint: str,
    access_key: str = ROOT_ACCESS_KEY,
    secret_key: str = ROOT_SECRET_KEY,
    verify: str | bool | None = None,
    **config: object,
):
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
def s3(gateway: GatewayProcess):
    """boto3 with its default configuration, over HTTP."""
    return client(gateway.endpoint)


@pytest.fixture(scope="session")
def s3_tls(tls_gateway: GatewayProcess, ca_bundle: str):
    """boto3 over HTTPS, where it sends aws-chunked bodies with checksum trailers."""
    return client(tls_gateway.endpoint, verify=ca_bundle)


@pytest.fixture
def bucket(s3) -> Iterator[str]:
    name = f"test-{uuid.uuid4().hex[:16]}"
    s3.create_bucket(Bucket=name)
    yield name


@pytest.fixture
def gateway_db(gateway_dsn: str) -> str:
    return gateway_dsn
