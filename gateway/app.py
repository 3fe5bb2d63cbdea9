"""create_app(config): wires configuration, database, storage and routes."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import secrets
from collections.abc import AsyncIterator, Mapping
from pathlib import Path

import asyncpg
from aiohttp import web

from gateway import metrics
from gateway.api.context import (
    BACKENDS,
    CONFIG,
    EAGER,
    KEY_DIRECTORY,
    LIVE,
    LOOKUPS,
    POOL,
    RECENT_BUCKETS,
    RENDER_POOL,
    RESOURCES,
    SENDFILE_THREADS,
    STORES,
    VARIANTS,
)
from gateway.api.cors import add_cors_headers
from gateway.api.encryption import add_encryption_header
from gateway.api.metrics import USAGE, UsageCache
from gateway.api.middleware import add_request_id, s3_errors
from gateway.api.router import dispatch, no_expectation
from gateway.api.sendfile import sendfile_threads
from gateway.config import ConfigError, CredentialConfig, GatewayConfig, LocalProfile
from gateway.live import LiveConfig
from gateway.maintenance.janitor import run_janitor
from gateway.meta import buckets, nodes
from gateway.meta.buckets import Bucket, RecentBuckets
from gateway.meta.db import DATABASE_ERRORS, create_pool, migrate
from gateway.meta.garbage import KeyReserve
from gateway.meta.key_directory import KeyDirectory
from gateway.meta.nodes import NODE_ID_FILE, node_id
from gateway.meta.object_rows import BatchedLookups, ObjectRecord
from gateway.meta.quotas import Quota
from gateway.objects.backend import Resources
from gateway.objects.profiles import open_backends
from gateway.objects.sources import variant_source
from gateway.storage.profiles import open_stores
from gateway.storage.transforms import check_transforms_kept, with_transforms
from gateway.variants import video
from gateway.variants.eager import EagerRenderer
from gateway.variants.pool import RenderPool
from gateway.variants.service import VariantPolicy, VariantService, VariantSource

log = logging.getLogger(__name__)

ROOT_CREDENTIALS_FILE = "root-credentials.json"
# Request bodies are streamed by the handlers; this only bounds what aiohttp buffers itself.
CLIENT_MAX_SIZE = 1024**2
# How much of a request body aiohttp buffers before it stops reading the socket. Its default
# (64 KiB) is less than one socket read, so a large upload paused and resumed reading at
# every read.
READ_BUFFER = 1024**2
# How often each process writes its pool and render-queue gauges.
SAMPLE_SECONDS = 1.0
# How long a PutObject may trust this process's last lookup of its bucket (see RecentBuckets).
RECENT_BUCKET_SECONDS = 1.0
# Set to have the configuration reloaded (request_reload).
RELOAD_WANTED = web.AppKey("reload_wanted", asyncio.Event)


def root_credential(data_dir: Path, environ: Mapping[str, str]) -> CredentialConfig:
    """GATEWAY_ROOT_ACCESS_KEY / _SECRET_KEY, else a pair generated once and kept (mode 0600)."""
    access_key = environ.get("GATEWAY_ROOT_ACCESS_KEY")
    secret_key = environ.get("GATEWAY_ROOT_SECRET_KEY")
    if access_key and secret_key:
        return CredentialConfig(access_key=access_key, secret_key=secret_key, root=True)
    path = data_dir / ROOT_CREDENTIALS_FILE
    if path.exists():
        stored = json.loads(path.read_text())
        return CredentialConfig(
            access_key=stored["access_key"], secret_key=stored["secret_key"], root=True
        )
    data_dir.mkdir(parents=True, exist_ok=True)
    access_key = "GW" + secrets.token_hex(9).upper()
    secret_key = secrets.token_urlsafe(30)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as handle:
        json.dump({"access_key": access_key, "secret_key": secret_key}, handle)
    # Printed once, on the console of the first start, like MinIO's root user.
    print(
        f"Generated root credentials (kept in {path}):\n"
        f"  access key: {access_key}\n  secret key: {secret_key}",
        flush=True,
    )
    return CredentialConfig(access_key=access_key, secret_key=secret_key, root=True)


async def _storage(app: web.Application) -> AsyncIterator[None]:
    async with open_stores(app[CONFIG]) as stores:
        app[STORES] = stores
        yield


async def _sendfile_threads(app: web.Application) -> AsyncIterator[None]:
    threads = sendfile_threads()
    app[SENDFILE_THREADS] = threads
    yield
    # Not waited for here: a thread may be waiting on a client that stopped reading, until
    # its idle timeout; the interpreter joins them on exit.
    threads.shutdown(wait=False)


async def _database(app: web.Application) -> AsyncIterator[None]:
    config = app[CONFIG]
    database = config.database
    # The command running the app (gateway serve) fills in the embedded Postgres's URL.
    dsn = database.url
    assert dsn, "no database URL"
    pool = await create_pool(
        dsn,
        database.pool_min_size,
        database.pool_max_size,
        connect_timeout=database.connect_timeout_seconds,
        acquire_timeout=database.acquire_timeout_seconds,
        query_timeout=database.query_timeout_seconds,
    )
    async with pool.acquire() as conn:
        await migrate(conn)
        await declare_buckets(conn, config)
    app[POOL] = pool
    app[LOOKUPS] = BatchedLookups(pool)
    directory = KeyDirectory(
        pool, dsn, config.access_keys, database, on_reload=lambda: request_reload(app)
    )
    await directory.reload()
    app[KEY_DIRECTORY] = directory
    keys_task = asyncio.create_task(directory.run())
    yield
    keys_task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await keys_task
    # A request stuck on a hung database must not hold up the exit.
    await pool.close_within(database.acquire_timeout_seconds)


async def declare_buckets(conn: asyncpg.Connection, config: GatewayConfig) -> None:
    """Record the buckets the configuration declares, as it declares them (the file wins)."""
    for name, bucket in config.buckets.items():
        quota = None
        if bucket.quota is not None:
            quota = Quota(bucket.quota.max_bytes, bucket.quota.max_objects)
        versioning = bucket.versioning.capitalize() if bucket.versioning else None
        await buckets.declare_bucket(
            conn, name, bucket.profile, bucket.public_listing, "config", quota, versioning
        )


async def _backends(app: web.Application) -> AsyncIterator[None]:
    """The storage keys reserved ahead of writes, and the backend of each profile."""
    config = app[CONFIG]
    await check_transforms_kept(config, app[POOL])
    await _claim_local_profiles(config, app[POOL])
    stores = app[STORES] = with_transforms(config, app[STORES], app[POOL])
    new_keys = {name: store.new_key for name, store in stores.items()}
    reserve = KeyReserve(app[POOL], new_keys, config.limits.garbage_grace_seconds)
    resources = Resources(
        pool=app[POOL],
        stores=stores,
        reserve=reserve,
        garbage_grace_seconds=config.limits.garbage_grace_seconds,
        inline_max_size=config.limits.inline_max_size,
    )
    backends = open_backends(config, resources)
    app[RESOURCES] = resources
    app[BACKENDS] = backends

    def cacheable(bucket: Bucket) -> bool:
        backend = backends.get(bucket.profile)
        return backend is not None and backend.trusts_recent_buckets

    app[RECENT_BUCKETS] = RecentBuckets(RECENT_BUCKET_SECONDS, cacheable)
    yield
    try:
        await reserve.release()
    except DATABASE_ERRORS:
        log.warning("could not unlist the unused reserved storage keys; the janitor will")


async def _claim_local_profiles(config: GatewayConfig, pool: asyncpg.Pool) -> None:
    """ConfigError if another node sharing the database serves a local profile of this one."""
    profiles = config.storage_profiles
    local = [name for name, profile in profiles.items() if isinstance(profile, LocalProfile)]
    held = await nodes.claim_local_profiles(pool, node_id(config.data_dir), local)
    if held:
        name, holder = min(held.items())
        raise ConfigError(
            f"storage_profiles.{name}: this local profile is served by another gateway node"
            f" ({holder}) sharing the database; a local directory is one node's alone, so"
            " nodes share only upstream profiles. (If this is that node with its data"
            f" directory restored, put {holder} back in {config.data_dir / NODE_ID_FILE}.)"
        )


def _check_video_programs(config: GatewayConfig, render_pool: RenderPool) -> None:
    """Say at startup that posters cannot be made, rather than only on their first GET."""
    posters = sorted(name for name, preset in config.variants.items() if preset.frame)
    missing = video.missing_programs(render_pool.limits.video) if posters else []
    if missing:
        log.warning(
            "%s not found: the presets %s cannot make posters of videos (their image sources"
            " still render); install ffmpeg, or set video.ffmpeg and video.ffprobe",
            " and ".join(missing),
            ", ".join(posters),
        )


async def _variants(app: web.Application) -> AsyncIterator[None]:
    """The render pool, the variant service, and the eager renderer when some preset is
    eager."""
    config, live = app[CONFIG], app[LIVE]
    render_pool = RenderPool.from_limits(config.limits, config.video)
    _check_video_programs(config, render_pool)
    if live.current.presets.configured:
        # Workers start now, so no request waits for a process to spawn; a gateway without
        # presets starts one only if a bucket asks for the built-in info.
        await render_pool.start()
    policy = VariantPolicy.from_limits(config.limits)
    backends = app[BACKENDS]
    service = VariantService(app[RESOURCES], render_pool, policy)
    app[RENDER_POOL] = render_pool
    app[VARIANTS] = service

    def source_for(record: ObjectRecord) -> VariantSource:
        return variant_source(backends, record)

    # Started whatever the presets: it idles until some preset is eager, which a reload may
    # make so.
    eager = EagerRenderer(
        app[POOL],
        service,
        lambda: live.current.presets,
        source_for,
        concurrency=render_pool.workers,
        # An auto preset renders up to three formats in one job.
        lease_seconds=3 * policy.render_seconds,
    )
    app[EAGER] = eager
    task = asyncio.create_task(eager.run())
    yield
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
    await service.close()
    await render_pool.close()


async def _janitor(app: web.Application) -> AsyncIterator[None]:
    live = app[LIVE]
    task = asyncio.create_task(
        run_janitor(app[POOL], app[STORES], app[BACKENDS], lambda: live.current)
    )
    yield
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


async def reload_config(app: web.Application) -> bool:
    """Read the configuration file again and apply what can change live; False when it was
    refused (invalid, or its buckets could not be recorded), the running one kept."""
    live = app[LIVE]
    try:
        snapshot, pending = await asyncio.to_thread(live.load)
    except ConfigError as exc:
        log.warning("configuration not reloaded, the running one is kept: %s", exc)
        return False
    try:
        async with app[POOL].acquire() as conn:
            # Before any request can name a bucket the file now declares.
            await declare_buckets(conn, snapshot.config)
    except DATABASE_ERRORS:
        log.warning(
            "configuration not reloaded, the running one is kept: its buckets could not be"
            " recorded (database unavailable); reload again later"
        )
        return False
    live.swap(snapshot)
    # A declared bucket's quota may have changed: the next write looks it up afresh.
    for name in snapshot.config.buckets:
        app[RECENT_BUCKETS].forget(name)
    app[EAGER].wake()
    source = live.path or "the environment"
    if pending:
        log.warning(
            "configuration reloaded from %s, except what needs a restart to change: %s",
            source,
            ", ".join(pending),
        )
    else:
        log.info("configuration reloaded from %s", source)
    return True


def request_reload(app: web.Application) -> None:
    """Have the configuration reloaded (SIGHUP): one reload runs at a time, and requests
    made during one are served by one more."""
    app[RELOAD_WANTED].set()


async def _reloader(app: web.Application) -> AsyncIterator[None]:
    wanted = app[RELOAD_WANTED]

    async def run() -> None:
        while True:
            await wanted.wait()
            wanted.clear()
            try:
                await reload_config(app)
            except Exception:
                # The running configuration stays; the next SIGHUP tries again.
                log.exception("configuration reload failed")

    task = asyncio.create_task(run())
    yield
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


async def _sample_gauges(app: web.Application) -> AsyncIterator[None]:
    """This process's request counts, and gauges of its requests in flight, Postgres pool and
    render queue, written every second: a scrape is answered by one process, which cannot ask
    the others."""
    found = metrics.current()

    async def sample(found: metrics.GatewayMetrics) -> None:
        pool, render_pool = app[POOL], app[RENDER_POOL]
        while True:
            found.flush()
            found.in_flight.set(found.requests_in_flight)
            size = pool.get_size()
            found.db_connections("size").set(size)
            found.db_connections("in_use").set(size - pool.get_idle_size())
            found.db_waiters.set(getattr(pool, "acquiring", 0))
            found.render_queue.set(render_pool.waiting)
            found.render_busy.set(render_pool.busy)
            await asyncio.sleep(SAMPLE_SECONDS)

    task = asyncio.create_task(sample(found)) if found is not None else None
    yield
    if task is not None:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
    if found is not None:
        found.flush()


def create_app(
    config: GatewayConfig,
    root: CredentialConfig | None = None,
    config_path: Path | None = None,
    loaded: GatewayConfig | None = None,
) -> web.Application:
    """The gateway serving ``config``; ``config_path`` is the file a reload reads again,
    ``loaded`` what it said at start when ``config`` differs (see LiveConfig)."""
    app = web.Application(
        middlewares=[s3_errors],
        client_max_size=CLIENT_MAX_SIZE,
        handler_args={"read_bufsize": READ_BUFFER},
    )
    app[CONFIG] = config
    app[LIVE] = LiveConfig(config, root, config_path, loaded)
    app[RELOAD_WANTED] = asyncio.Event()
    app.cleanup_ctx.append(_sendfile_threads)
    app.cleanup_ctx.append(_storage)
    app.cleanup_ctx.append(_database)
    app.cleanup_ctx.append(_backends)
    app.cleanup_ctx.append(_variants)
    app.cleanup_ctx.append(_janitor)
    app.cleanup_ctx.append(_reloader)
    app.cleanup_ctx.append(_sample_gauges)
    app[USAGE] = UsageCache()
    app.on_response_prepare.append(add_request_id)
    app.on_response_prepare.append(add_cors_headers)
    app.on_response_prepare.append(add_encryption_header)
    # [\s\S]: keys may contain newlines, which "." would not match.
    app.router.add_route("*", r"/{path:[\s\S]*}", dispatch, expect_handler=no_expectation)
    return app
