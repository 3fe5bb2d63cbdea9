"""`gateway serve | reload | migrate | check-config | gc | import | rekey | stats | presign |
keys | buckets`."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import multiprocessing
import multiprocessing.connection
import os
import signal
import socket
import ssl
import sys
import threading
import time
from collections.abc import Iterator
from importlib.metadata import version
from pathlib import Path
from types import ModuleType
from urllib.parse import quote, urlencode

import uvloop
from aiohttp import web
from botocore.auth import S3SigV4QueryAuth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials
from tqdm import tqdm

from gateway import cli_buckets, cli_keys, cli_lifecycle, cli_variants, metrics
from gateway.api import connections
from gateway.app import (
    ROOT_CREDENTIALS_FILE,
    create_app,
    declare_buckets,
    request_reload,
    root_credential,
)
from gateway.config import (
    ConfigError,
    CredentialConfig,
    GatewayConfig,
    literal_secrets,
    load_config,
)
from gateway.errors import GatewayError
from gateway.logs import configure_logging
from gateway.maintenance import folder_import, rekey
from gateway.maintenance.importer import import_bucket
from gateway.maintenance.janitor import abort_abandoned_uploads, collect_garbage
from gateway.meta import blob_keys, buckets, imports, plaintext, usage
from gateway.meta.db import DatabaseUnavailableError, GatewayPool, create_pool, migrate
from gateway.meta.embedded import EmbeddedPostgres
from gateway.meta.key_directory import request_reload_everywhere
from gateway.objects.profiles import opened_backends
from gateway.storage.chunked import ChunkedStore
from gateway.storage.profiles import open_stores
from gateway.storage.sealed import SealedStore
from gateway.storage.upstream import UpstreamStore


def _config_path(args: argparse.Namespace) -> Path | None:
    value = args.config or os.environ.get("GATEWAY_CONFIG")
    return Path(value) if value else None


def _load(args: argparse.Namespace) -> GatewayConfig:
    path = _config_path(args)
    try:
        config = load_config(path)
    except ConfigError as exc:
        print(f"configuration error: {exc}", file=sys.stderr)
        raise SystemExit(2) from None
    for where in literal_secrets(path) if path else ():
        print(f"warning: {where}: {LITERAL_KEY_WARNING}", file=sys.stderr)
    return config


def _ssl_context(config: GatewayConfig) -> ssl.SSLContext | None:
    if config.tls is None:
        return None
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(config.tls.certificate, config.tls.private_key)
    return context


# How often a worker looks for its parent.
PARENT_CHECK_SECONDS = 1.0


def _run_worker(
    config: GatewayConfig,
    root: CredentialConfig,
    reuse_port: bool,
    config_path: Path | None,
    dsn: str | None = None,
    log_level: str | None = None,
) -> None:
    """Serve ``config``, on the database ``dsn`` when given (that the parent started);
    ``log_level``: in a spawned worker, which does not inherit the parent's logging."""
    if log_level is not None:
        configure_logging(log_level, config.log.format)
    if multiprocessing.parent_process() is not None:
        _stop_with_parent()
    if config.metrics.enabled:
        metrics.enable()
    # Until its loop handles SIGHUP (a reload), a worker must not die of one.
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    host, port = config.host_port
    running = _with_database_url(config, dsn) if dsn is not None else config
    app = create_app(running, root, config_path, loaded=config)
    try:
        _serve_app(app, config, host, port, reuse_port)
    except ConfigError as exc:
        # Found against the database at startup (a transform removed from a profile).
        print(f"configuration error: {exc}", file=sys.stderr)
        raise SystemExit(2) from None


def _stop_with_parent() -> None:
    """A --workers worker stops (as on SIGTERM) when the parent that started it is gone: one
    killed with SIGKILL cannot stop it, and an orphan would go on serving the port with the old
    configuration, and keep a restarted gateway from listening."""
    parent = os.getppid()

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(PARENT_CHECK_SECONDS)
        os.kill(os.getpid(), signal.SIGTERM)

    threading.Thread(target=watch, name="parent-watch", daemon=True).start()


def _serve_app(
    app: web.Application, config: GatewayConfig, host: str, port: int, reuse_port: bool
) -> None:
    """Serve until SIGTERM or SIGINT; SIGHUP reloads the configuration."""
    # uvloop: a fraction of asyncio's cost per request (gateway.api.sendfile keeps large
    # downloads on sendfile).
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        runner.run(
            connections.serve(
                app,
                host,
                port,
                limits=config.limits,
                ssl_context=_ssl_context(config),
                reuse_port=reuse_port,
                on_hangup=lambda: request_reload(app),
            )
        )


def _log_level(config: GatewayConfig, flag: str | None) -> str:
    """--log-level, else GATEWAY_LOG_LEVEL, else log.level."""
    return flag or os.environ.get("GATEWAY_LOG_LEVEL") or config.log.level


def serve(args: argparse.Namespace) -> int:
    config = _load(args)
    log_level = _log_level(config, args.log_level)
    configure_logging(log_level, config.log.format)
    root = root_credential(config.data_dir, os.environ)
    host, port = config.host_port
    scheme = "https" if config.tls else "http"
    workers = args.workers or int(os.environ.get("GATEWAY_WORKERS", "1"))
    # Workers share the port with SO_REUSEPORT, which would also let them share it with
    # another gateway already there (the kernel splitting traffic between two configurations):
    # only --reuse-port asks for that.
    taken = None if args.reuse_port else _address_taken(host, port)
    if taken is not None:
        print(f"gateway: cannot listen on {host}:{port}: {taken}", file=sys.stderr)
        return 1
    # A SIGHUP (`gateway reload`) arriving before the server handles it is not fatal.
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    # Until the server handles it, SIGTERM unwinds (SIGINT does already), so an embedded
    # Postgres being started is stopped again.
    signal.signal(signal.SIGTERM, _exit_on_signal)
    pid_file = _write_pid_file(config.data_dir)
    try:
        with _embedded_database(config) as dsn:
            count = f"{workers} worker{'s' if workers != 1 else ''}"
            print(f"gateway listening on {scheme}://{host}:{port} ({count})", flush=True)
            if config.metrics.enabled:
                metrics.prepare_directory(config.data_dir)
            if workers <= 1:
                _run_worker(config, root, args.reuse_port, _config_path(args), dsn)
                return 0
            return _serve_workers(config, root, workers, _config_path(args), dsn, log_level)
    finally:
        _remove_pid_file(pid_file)


def _exit_on_signal(signum: int, frame: object) -> None:
    raise SystemExit(128 + signum)


@contextlib.contextmanager
def _embedded_database(config: GatewayConfig) -> Iterator[str | None]:
    """The URL of the embedded Postgres, when the configuration names no database (else
    None): started or joined for the block, and stopped after it unless another gateway
    process (a second `gateway serve`, a `gateway gc`) still uses it."""
    if config.database.url:
        yield None
        return
    with EmbeddedPostgres(config.data_dir / "postgres") as server:
        yield server.url


def _with_database_url(config: GatewayConfig, dsn: str) -> GatewayConfig:
    return config.model_copy(update={"database": config.database.model_copy(update={"url": dsn})})


PID_FILE = "gateway.pid"


def _write_pid_file(data_dir: Path) -> Path:
    """data_dir/gateway.pid, for `gateway reload`. One left by a gateway that did not exit
    cleanly is replaced: it names no running gateway."""
    data_dir.mkdir(parents=True, exist_ok=True)
    path = data_dir / PID_FILE
    path.write_text(f"{os.getpid()}\n")
    return path


def _remove_pid_file(path: Path) -> None:
    # Only our own: another gateway may have started on the same data directory since.
    try:
        if path.read_text().strip() == str(os.getpid()):
            path.unlink()
    except OSError:
        pass


def _address_taken(host: str, port: int) -> str | None:
    """Why ``host:port`` cannot be listened on by this gateway alone; None if it can."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as exc:
        return str(exc.strerror)
    for family, kind, proto, _, address in infos:
        with socket.socket(family, kind, proto) as probe:
            # As the server binds: a port left in TIME_WAIT is free, a listening one is not,
            # whether or not its owner set SO_REUSEPORT.
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                probe.bind(address)
            except OSError as exc:
                return str(exc.strerror)
    return None


def _serve_workers(
    config: GatewayConfig,
    root: CredentialConfig,
    workers: int,
    config_path: Path | None,
    dsn: str | None,
    log_level: str,
) -> int:
    """Run ``workers`` processes sharing the port (SO_REUSEPORT) and one database.

    Gateway processes are stateless, so the kernel may hand any connection to any of them. The
    embedded Postgres (``dsn``), when used, is the parent's, shared by all, and stopped by the
    parent after them. A SIGHUP is passed on to every worker, and each reloads the
    configuration file itself.
    """
    context = multiprocessing.get_context("spawn")
    processes = [
        # Not daemonic: a daemonic process may not start children, and each worker starts its
        # own render processes. They are stopped and joined below in any case.
        context.Process(
            target=_run_worker,
            args=(config, root, True, config_path, dsn, log_level),
            daemon=False,
        )
        for _ in range(workers)
    ]
    for process in processes:
        process.start()

    stopping = False

    def stop(signum: int, frame: object) -> None:
        nonlocal stopping
        stopping = True
        for process in processes:
            process.terminate()

    def hangup(signum: int, frame: object) -> None:
        for process in processes:
            if process.pid is not None and process.exitcode is None:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(process.pid, signal.SIGHUP)

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    signal.signal(signal.SIGHUP, hangup)
    multiprocessing.connection.wait([process.sentinel for process in processes])
    # One worker ending on its own degrades the service: stop all and exit non-zero, so a
    # supervisor restarts the whole gateway.
    failed = not stopping
    for process in processes:
        process.terminate()
        process.join(timeout=30)
        if process.pid is not None and config.metrics.enabled:
            metrics.process_exited(process.pid)
    return 1 if failed else 0


async def _pool(config: GatewayConfig, max_size: int) -> GatewayPool:
    database = config.database
    # main() fills in the embedded Postgres's URL when none is configured.
    assert database.url, "no database URL"
    return await create_pool(
        database.url,
        1,
        max_size,
        connect_timeout=database.connect_timeout_seconds,
        acquire_timeout=database.acquire_timeout_seconds,
        query_timeout=database.query_timeout_seconds,
    )


async def _migrate(config: GatewayConfig) -> int:
    pool = await _pool(config, 1)
    try:
        async with pool.acquire() as conn:
            version = await migrate(conn)
    finally:
        await pool.close()
    print(f"schema version {version}")
    return 0


async def _gc(config: GatewayConfig, grace: int) -> int:
    pool = await _pool(config, 2)
    try:
        async with opened_backends(config, pool) as backends:
            aborted = await abort_abandoned_uploads(
                pool, backends, config.limits.abandoned_upload_seconds
            )
            stores = {name: backend.store for name, backend in backends.items()}
            removed = await collect_garbage(pool, stores, grace)
    finally:
        await pool.close()
    print(f"aborted {aborted} abandoned uploads")
    print(f"removed {removed} blobs")
    return 0


async def _rekey(config: GatewayConfig, args: argparse.Namespace) -> int:
    profile = config.storage_profiles.get(args.profile)
    if profile is None or profile.encryption is None:
        print(f"{args.profile!r} is not an encrypted storage profile", file=sys.stderr)
        return 2
    pool = await _pool(config, 2)
    report = rekey.RekeyReport()
    try:
        async with pool.acquire() as conn:
            await migrate(conn)
        async with opened_backends(config, pool) as backends:
            backend = backends[args.profile]
            store = backend.store
            while isinstance(store, ChunkedStore):
                store = store.inner
            assert isinstance(store, SealedStore) and store.keyring is not None
            active = store.keyring.active
            total = await blob_keys.count_wrapped_by_others(pool, args.profile, active)
            # disable=None: no bar when the output is not a terminal (logs, CI).
            with tqdm(
                total=total, desc=f"rewrapping under {active}", unit=" keys", disable=None
            ) as bar:
                await rekey.rewrap_all(pool, store, bar.update, report)
            if args.encrypt_existing:
                size = await plaintext.plain_bytes(pool, args.profile)
                with tqdm(
                    total=size, desc="encrypting", unit="B", unit_scale=True, disable=None
                ) as bar:
                    await rekey.encrypt_existing(
                        backend.resources, args.profile, bar.update, report
                    )
    finally:
        await pool.close()
    print(f"rewrapped {report.rewrapped} data keys under {active}")
    if args.encrypt_existing:
        print(
            f"encrypted {report.encrypted} blobs; {report.skipped} changed meanwhile;"
            f" {report.variants_dropped} stored variants dropped (they render again)"
        )
    if report.unreadable:
        print(
            f"{report.unreadable} data keys are wrapped by master keys that are not configured;"
            " add those keys and run again",
            file=sys.stderr,
        )
        return 1
    return 0


async def _stats(config: GatewayConfig) -> int:
    pool = await _pool(config, 1)
    rows = []
    try:
        async with pool.acquire() as conn:
            await migrate(conn)
        for name, profile in config.storage_profiles.items():
            found = await usage.profile_usage(pool, name, profile.chunking is not None)
            transforms = [
                *(["encrypted"] if profile.encryption else []),
                *(
                    [f"chunked{' (dedup)' if profile.chunking.dedup else ''}"]
                    if profile.chunking
                    else []
                ),
            ]
            ratio = found.stored_bytes / found.logical_bytes if found.logical_bytes else 1.0
            rows.append(
                [
                    name,
                    profile.type,
                    ", ".join(transforms) or "-",
                    f"{found.objects:,}",
                    f"{found.object_bytes:,}",
                    f"{found.logical_bytes:,}",
                    f"{found.stored_bytes:,}",
                    f"{ratio:.3f}",
                ]
            )
    finally:
        await pool.close()
    header = ["profile", "type", "transforms", "objects", "object bytes", "blob bytes"]
    header += ["stored bytes", "stored / blob"]
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]
    for row in [header, *rows]:
        line = "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True))
        print(line.rstrip())
    return 0


# The commands kept in modules of their own, and the database connections each may use.
_MODULE_COMMANDS: dict[str, tuple[ModuleType, int]] = {
    "keys": (cli_keys, 1),
    "buckets": (cli_buckets, 1),
    "lifecycle": (cli_lifecycle, 4),
    "variants": (cli_variants, 8),
}


async def _module_command(config: GatewayConfig, args: argparse.Namespace) -> int:
    module, connections = _MODULE_COMMANDS[args.command]
    pool = await _pool(config, connections)
    try:
        return int(await module.run(config, args, pool))
    finally:
        await pool.close()


class FolderProgress:
    """An import's progress bars: the whole (bytes, files, rate, ETA) and one per file being
    imported. Shown only on a terminal (tqdm's disable=None)."""

    def __init__(self, files: int, size: int, concurrency: int) -> None:
        self._files = files
        self._done = 0
        self._whole = tqdm(
            total=size, unit="B", unit_scale=True, desc="importing", disable=None, position=0
        )
        self._whole.set_postfix(files=f"0/{files}")
        self._free = list(range(concurrency, 0, -1))
        self._bars: dict[str, tuple[tqdm, int]] = {}

    def started(self, file: folder_import.LocalFile) -> None:
        position = self._free.pop()
        bar = tqdm(
            total=file.size,
            unit="B",
            unit_scale=True,
            desc=file.key,
            leave=False,
            disable=None,
            position=position,
        )
        self._bars[file.key] = (bar, position)

    def read(self, file: folder_import.LocalFile, size: int) -> None:
        self._bars[file.key][0].update(size)
        self._whole.update(size)

    def finished(self, file: folder_import.LocalFile, failure: str | None) -> None:
        bar, position = self._bars.pop(file.key)
        bar.close()
        self._free.append(position)
        self._done += 1
        self._whole.set_postfix(files=f"{self._done}/{self._files}")
        if failure is not None:
            self._whole.write(f"failed: {file.path}: {failure}", file=sys.stderr)

    def close(self) -> None:
        self._whole.close()


async def _import_folder(
    config: GatewayConfig, args: argparse.Namespace, pool: GatewayPool, bucket: buckets.Bucket
) -> int:
    root = Path(args.from_dir)
    if not await asyncio.to_thread(root.is_dir):
        print(f"{root}: not a directory", file=sys.stderr)
        return 2
    listed: list[folder_import.LocalFile] = []
    unusable = 0
    for found in await asyncio.to_thread(lambda: list(folder_import.walk(root, args.prefix))):
        if isinstance(found, folder_import.LocalFile):
            listed.append(found)
        else:
            unusable += 1
            print(f"skipped: {found[0]}: {found[1]}", file=sys.stderr)
    waiting = await folder_import.pending(pool, bucket.name, listed)
    current = len(listed) - len(waiting)
    size = sum(file.size for file in waiting)
    if args.dry_run:
        for file in waiting:
            print(f"would import {file.path} as s3://{bucket.name}/{file.key} ({file.size} bytes)")
        print(f"{len(waiting)} files ({size} bytes) to import, {current} already imported")
        return 0
    concurrency = args.concurrency or 4
    async with opened_backends(config, pool) as backends:
        backend = backends.get(bucket.profile)
        if backend is None:
            print(f"the profile {bucket.profile!r} is not configured", file=sys.stderr)
            return 1
        progress = FolderProgress(len(waiting), size, concurrency)
        try:
            report = await folder_import.import_folder(
                backend, bucket, waiting, concurrency, progress
            )
        finally:
            progress.close()
    failed = len(report.failed)
    print(
        f"imported {report.imported} files ({report.imported_bytes} bytes) into"
        f" s3://{bucket.name}/{args.prefix}; {current} already imported,"
        f" {failed} failed, {unusable} skipped"
    )
    return 1 if failed else 0


async def _import(config: GatewayConfig, args: argparse.Namespace) -> int:
    pool = await _pool(config, 2)
    try:
        async with pool.acquire() as conn:
            await migrate(conn)
            await declare_buckets(conn, config)
        bucket = await buckets.get_bucket(pool, args.bucket)
        if bucket is None:
            print(f"no bucket {args.bucket!r}: create it first", file=sys.stderr)
            return 1
        if args.from_dir is not None:
            return await _import_folder(config, args, pool, bucket)
        async with open_stores(config) as stores:
            store = stores.get(bucket.profile)
            if not isinstance(store, UpstreamStore):
                print(
                    f"bucket {bucket.name!r} keeps its objects in profile {bucket.profile!r},"
                    " which is not an upstream profile: there is nothing to import",
                    file=sys.stderr,
                )
                return 1
            if args.restart:
                await imports.restart(pool, bucket.name)
            prefix = store.bucket_prefix(bucket.name)
            source = f"s3://{store.bucket}/{prefix}"
            recorded = 0
            # disable=None: no bar when the output is not a terminal (logs, CI).
            with tqdm(desc=f"importing {source}", unit=" objects", disable=None) as bar:

                def progress(listed: int, added: int) -> None:
                    nonlocal recorded
                    recorded += added
                    bar.set_postfix(recorded=recorded, refresh=False)
                    bar.update(listed)

                listed, added = await import_bucket(
                    pool, store, bucket, args.concurrency or 16, progress
                )
    except GatewayError as exc:
        print(f"import failed: {exc}", file=sys.stderr)
        return 1
    finally:
        await pool.close()
    print(f"listed {listed} objects under {source}, recorded {added} new")
    return 0


async def _reload_all_nodes(config: GatewayConfig) -> int:
    pool = await _pool(config, 1)
    try:
        async with pool.acquire() as conn:
            await request_reload_everywhere(conn)
    finally:
        await pool.close()
    print(
        "asked every gateway sharing the database to reload its configuration file; each logs"
        " the outcome"
    )
    return 0


def reload(config: GatewayConfig) -> int:
    """Signal the gateway serving ``config`` (found by its pid file) to reload the file."""
    path = config.data_dir / PID_FILE
    try:
        pid = int(path.read_text().strip())
    except FileNotFoundError:
        print(f"no gateway is running: there is no {path}", file=sys.stderr)
        return 1
    except (OSError, ValueError) as exc:
        print(f"cannot read {path}: {exc}", file=sys.stderr)
        return 1
    if not _is_gateway(pid):
        print(
            f"no gateway is running: {path} names process {pid}, which is not a running gateway"
            " (a stale pid file)",
            file=sys.stderr,
        )
        return 1
    try:
        os.kill(pid, signal.SIGHUP)
    except OSError as exc:
        print(f"cannot signal the gateway (pid {pid}): {exc.strerror}", file=sys.stderr)
        return 1
    print(
        f"sent SIGHUP to the gateway (pid {pid}): it reloads the configuration and logs the outcome"
    )
    return 0


def _is_gateway(pid: int) -> bool:
    """Whether ``pid`` runs: where /proc tells, a gateway (a pid file outlives its process,
    and its number may be another program's by now, which SIGHUP could end)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        command = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return True
    return b"gateway" in command


LITERAL_KEY_WARNING = "the secret is written in the file; give it as ${VARIABLE} instead"


def check_config(args: argparse.Namespace) -> int:
    path = Path(args.file) if args.file else _config_path(args)
    if path is None:
        print("check-config needs a file (or --config, or $GATEWAY_CONFIG)", file=sys.stderr)
        return 2
    try:
        load_config(path)
    except ConfigError as exc:
        print(f"{path}: {exc}", file=sys.stderr)
        return 1
    for where in literal_secrets(path):
        print(f"{path}: warning: {where}: {LITERAL_KEY_WARNING}", file=sys.stderr)
    print(f"{path}: ok")
    return 0


# S3's longest presigned URL lifetime (SigV4): seven days.
MAX_PRESIGN_SECONDS = 7 * 86400


def presign(config: GatewayConfig, args: argparse.Namespace) -> int:
    """Print a SigV4 presigned URL; a variant's name is part of what is signed."""
    bucket, _, key = args.target.removeprefix("s3://").partition("/")
    if not bucket or not key:
        print("presign needs s3://bucket/key", file=sys.stderr)
        return 2
    if not 1 <= args.expires <= MAX_PRESIGN_SECONDS:
        print(f"--expires must be 1 to {MAX_PRESIGN_SECONDS} seconds", file=sys.stderr)
        return 2
    if args.access_key:
        credential = next((c for c in config.credentials if c.access_key == args.access_key), None)
        if credential is None:
            print(f"no credential {args.access_key!r} in the configuration", file=sys.stderr)
            return 2
    elif (
        "GATEWAY_ROOT_SECRET_KEY" in os.environ
        or (config.data_dir / ROOT_CREDENTIALS_FILE).exists()
    ):
        credential = root_credential(config.data_dir, os.environ)
    else:
        print(
            "no root credential yet: start the gateway once, set GATEWAY_ROOT_ACCESS_KEY and"
            " GATEWAY_ROOT_SECRET_KEY, or pass --access-key",
            file=sys.stderr,
        )
        return 2
    if args.endpoint:
        endpoint = args.endpoint.rstrip("/")
    else:
        host, port = config.host_port
        if host in ("0.0.0.0", "::", ""):
            host = "127.0.0.1"
        scheme = "https" if config.tls else "http"
        endpoint = f"{scheme}://{'[' + host + ']' if ':' in host else host}:{port}"
    url = f"{endpoint}/{quote(bucket)}/{quote(key, safe='/~')}"
    if args.variant:
        url += "?" + urlencode({"variant": args.variant})
    request = AWSRequest(method=args.method, url=url)
    signer = S3SigV4QueryAuth(
        Credentials(credential.access_key, credential.secret_key), "s3", config.region, args.expires
    )
    signer.add_auth(request)
    print(request.url)
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="gateway", description="S3-compatible gateway")
    parser.add_argument("--version", action="version", version=f"gateway {version('gateway')}")
    parser.add_argument(
        "--log-level", help="DEBUG, INFO, ... (default: $GATEWAY_LOG_LEVEL, else log.level)"
    )
    commands = parser.add_subparsers(dest="command", required=True)

    serve_cmd = commands.add_parser("serve", help="run the gateway")
    serve_cmd.add_argument("--config", help="YAML file (default: $GATEWAY_CONFIG, else none)")
    serve_cmd.add_argument(
        "--workers",
        type=int,
        default=0,
        help="processes sharing the port, e.g. one per core (default: $GATEWAY_WORKERS or 1)",
    )
    serve_cmd.add_argument(
        "--reuse-port",
        action="store_true",
        help="bind with SO_REUSEPORT so several gateway processes share the port",
    )
    migrate_cmd = commands.add_parser("migrate", help="apply schema.sql to the database")
    migrate_cmd.add_argument("--config")
    check_cmd = commands.add_parser("check-config", help="validate a configuration file")
    # The file as every other command takes it (--config, $GATEWAY_CONFIG) or positionally.
    check_cmd.add_argument("file", nargs="?")
    check_cmd.add_argument("--config")
    gc_cmd = commands.add_parser("gc", help="delete blobs listed in the garbage log")
    gc_cmd.add_argument("--config")
    gc_cmd.add_argument(
        "--grace", type=int, default=None, help="seconds (default: limits.garbage_grace_seconds)"
    )

    import_cmd = commands.add_parser(
        "import",
        help="record the objects already in a bucket's upstream prefix, or (--from-dir) copy"
        " a local folder into a bucket",
    )
    import_cmd.add_argument("--config")
    import_cmd.add_argument(
        "bucket", help="a gateway bucket (on an upstream profile, without --from-dir)"
    )
    import_cmd.add_argument(
        "--concurrency",
        type=int,
        default=None,
        help="HeadObject calls in flight (default 16); with --from-dir, files (default 4)",
    )
    import_cmd.add_argument(
        "--from-dir",
        help="copy this folder's files into the bucket, skipping those already imported",
    )
    import_cmd.add_argument(
        "--prefix", default="", help="with --from-dir: put this before every key"
    )
    import_cmd.add_argument(
        "--dry-run", action="store_true", help="with --from-dir: list what would be imported"
    )
    import_cmd.add_argument(
        "--restart",
        action="store_true",
        help="start from the first key, not from where an interrupted import stopped",
    )

    rekey_cmd = commands.add_parser(
        "rekey",
        help="rewrap an encrypted profile's data keys under its active key (then older keys"
        " can leave the configuration)",
    )
    rekey_cmd.add_argument("--config")
    rekey_cmd.add_argument("profile", help="an encrypted storage profile")
    rekey_cmd.add_argument(
        "--encrypt-existing",
        action="store_true",
        help="also encrypt what the profile stored before it was encrypted",
    )

    reload_cmd = commands.add_parser(
        "reload",
        help="have the running gateway read its configuration file again (as SIGHUP does)",
    )
    reload_cmd.add_argument("--config")
    reload_cmd.add_argument(
        "--all-nodes",
        action="store_true",
        help="through the database: every gateway sharing it reads its own file again",
    )

    stats_cmd = commands.add_parser(
        "stats",
        help="objects and bytes per storage profile: what clients stored, and what storage"
        " holds for it (less with dedup); per bucket, with quotas: `gateway buckets list`",
    )
    stats_cmd.add_argument("--config")

    presign_cmd = commands.add_parser(
        "presign", help="print a presigned URL for an object or one of its variants"
    )
    presign_cmd.add_argument("--config")
    presign_cmd.add_argument("target", help="s3://bucket/key")
    presign_cmd.add_argument("--variant", help="a preset name: the URL serves that variant")
    presign_cmd.add_argument(
        "--expires", type=int, default=3600, help="seconds the URL stays valid (default 3600)"
    )
    presign_cmd.add_argument("--method", choices=("GET", "HEAD", "PUT"), default="GET")
    presign_cmd.add_argument(
        "--endpoint",
        help="the URL clients reach the gateway at (default: its listen address)",
    )
    presign_cmd.add_argument(
        "--access-key", help="sign with this configured credential (default: the root one)"
    )

    cli_keys.add_commands(commands)
    cli_buckets.add_commands(commands)
    cli_lifecycle.add_commands(commands)
    cli_variants.add_commands(commands)

    args = parser.parse_args(argv)
    # Commands other than serve log as text; serve follows its configuration's log section.
    configure_logging(args.log_level or os.environ.get("GATEWAY_LOG_LEVEL") or "INFO", "text")
    if args.command == "serve":
        return serve(args)
    if args.command == "check-config":
        return check_config(args)
    config = _load(args)
    if args.command == "presign":
        return presign(config, args)
    if args.command == "reload" and not args.all_nodes:
        return reload(config)
    try:
        with _embedded_database(config) as dsn:
            if dsn is not None:
                config = _with_database_url(config, dsn)
            return _run_command(config, args)
    except DatabaseUnavailableError as exc:
        # Nothing was done that a later run would not do again; a traceback would add nothing.
        print(f"database unavailable: {exc}", file=sys.stderr)
        return 1
    except ConfigError as exc:
        print(f"configuration error: {exc}", file=sys.stderr)
        return 2


def _run_command(config: GatewayConfig, args: argparse.Namespace) -> int:
    """One of the commands that work on the database and exit."""
    if args.command == "reload":
        return asyncio.run(_reload_all_nodes(config))
    if args.command == "migrate":
        return asyncio.run(_migrate(config))
    if args.command == "import":
        return asyncio.run(_import(config, args))
    if args.command == "rekey":
        return asyncio.run(_rekey(config, args))
    if args.command == "stats":
        return asyncio.run(_stats(config))
    if args.command in _MODULE_COMMANDS:
        return asyncio.run(_module_command(config, args))
    grace = config.limits.garbage_grace_seconds if args.grace is None else args.grace
    return asyncio.run(_gc(config, grace))
