"""`gateway variants purge | render`: act now on stored variants, rather than wait for the
janitor or for the first requests.

``purge`` deletes the derivatives of one preset (every key it ever had), or, without
``--preset``, those no preset of the configuration file makes any more; their blobs go to the
intent log as the janitor's would. ``render`` backfills a preset's variants of every object
under a prefix through the same claimed, single-flight renders as requests: a GET of a variant
being backfilled waits for that render (on any gateway sharing the database) rather than
render it again, and what is stored already is skipped, so a run cut short just runs again.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections import Counter

from tqdm import tqdm

from gateway.config import GatewayConfig
from gateway.errors import GatewayError
from gateway.maintenance import variant_cleanup
from gateway.meta import buckets, derivatives, lifecycle_rows, object_rows
from gateway.meta.db import GatewayPool, migrate
from gateway.meta.derivatives import Removed
from gateway.meta.object_rows import ObjectRecord, prefix_upper_bound
from gateway.objects.backend import ObjectBackend
from gateway.objects.profiles import opened_backends
from gateway.objects.sources import variant_source
from gateway.s3.errors import S3Error
from gateway.variants.pool import RenderPool
from gateway.variants.presets import FormatClass, Preset, PresetCatalog
from gateway.variants.service import VariantPolicy, VariantService

PAGE = 500
# Content types worth handing the renderer: images, videos (posters), and the types clients
# give bytes they did not label. Anything else (text, JSON, archives) is skipped.
_RENDERABLE_PREFIXES = ("image/", "video/")
_UNLABELLED = frozenset({"application/octet-stream", "binary/octet-stream", ""})


def add_commands(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    variants_cmd = commands.add_parser("variants", help="purge or backfill stored variants")
    variants_cmd.add_argument("--config")
    actions = variants_cmd.add_subparsers(dest="variants_command", required=True)
    purge_cmd = actions.add_parser(
        "purge",
        help="delete a preset's stored variants, or (no --preset) those no preset makes any more",
    )
    purge_cmd.add_argument("--config", default=argparse.SUPPRESS)
    purge_cmd.add_argument("--preset", help="every stored variant of this preset")
    purge_cmd.add_argument("--bucket", help="only variants of this bucket's objects")
    purge_cmd.add_argument(
        "--dry-run", action="store_true", help="print what would be deleted; delete nothing"
    )
    render_cmd = actions.add_parser(
        "render", help="render a preset's variants of every object under s3://BUCKET/PREFIX"
    )
    render_cmd.add_argument("--config", default=argparse.SUPPRESS)
    render_cmd.add_argument("--preset", required=True)
    render_cmd.add_argument("target", help="s3://BUCKET or s3://BUCKET/PREFIX")


async def run(config: GatewayConfig, args: argparse.Namespace, pool: GatewayPool) -> int:
    async with pool.acquire() as conn:
        await migrate(conn)
    if args.variants_command == "purge":
        return await _purge(config, args, pool)
    return await _render(config, args, pool)


def preset_of(variant_key: str) -> str:
    """The preset a variant key belongs to (``thumb`` of ``thumb@2x:webp:<hash>``)."""
    return variant_key.split(":", 1)[0].split("@", 1)[0]


async def _purge(config: GatewayConfig, args: argparse.Namespace, pool: GatewayPool) -> int:
    if args.bucket is not None and await buckets.get_bucket(pool, args.bucket) is None:
        print(f"no bucket {args.bucket!r}", file=sys.stderr)
        return 1
    stored = await derivatives.stored_variant_keys(pool)
    if args.preset is not None:
        keys = [key for key in stored if preset_of(key) == args.preset]
        what = f"of preset {args.preset}"
    else:
        live = PresetCatalog.from_config(config).variant_keys()
        keys = [key for key in stored if key not in live]
        what = "that no preset makes any more"
    total = Removed(0, 0)
    if keys and args.bucket is not None:
        async for version_ids in variant_cleanup.bucket_version_ids(pool, args.bucket):
            found = await (
                derivatives.count(pool, keys, version_ids)
                if args.dry_run
                else variant_cleanup.remove_all(pool, keys, version_ids)
            )
            total = Removed(total.derivatives + found.derivatives, total.bytes + found.bytes)
    elif keys:
        if args.dry_run:
            total = await derivatives.count(pool, keys, None)
        else:
            total = await variant_cleanup.remove_all(pool, keys, None)
            for key in keys:
                await derivatives.forget_stale_key(pool, key)
    where = f" in bucket {args.bucket}" if args.bucket else ""
    done = "would delete" if args.dry_run else "deleted"
    print(
        f"{done} {total.derivatives:,} stored variants ({total.bytes:,} bytes) {what}{where}"
        f" ({len(keys)} variant keys)"
    )
    return 0


def _target(text: str) -> tuple[str, str] | None:
    """(bucket, prefix) of ``s3://bucket/prefix``; None if it is not one."""
    if not text.startswith("s3://"):
        return None
    bucket, _, prefix = text.removeprefix("s3://").partition("/")
    return (bucket, prefix) if bucket else None


async def _render(config: GatewayConfig, args: argparse.Namespace, pool: GatewayPool) -> int:
    target = _target(args.target)
    if target is None:
        print("gateway variants render: give the objects as s3://BUCKET/PREFIX", file=sys.stderr)
        return 2
    bucket, prefix = target
    if await buckets.get_bucket(pool, bucket) is None:
        print(f"no bucket {bucket!r}", file=sys.stderr)
        return 1
    catalog = PresetCatalog.from_config(config)
    try:
        preset = catalog.resolve(bucket, args.preset)
    except S3Error as exc:
        print(exc.message, file=sys.stderr)
        return 2
    outputs = [
        (at_density, format_class)
        for at_density in preset.with_densities()
        for format_class in at_density.format_classes(catalog.avif)
    ]
    objects = await pool.fetchval(
        "SELECT count(*) FROM objects WHERE bucket = $1 AND key >= $2"
        " AND ($3::text IS NULL OR key < $3)",
        bucket,
        prefix,
        prefix_upper_bound(prefix),
    )
    async with opened_backends(config, pool) as backends:
        backfill = _Backfill(config, backends, outputs)
        await backfill.start()
        try:
            with tqdm(total=objects, unit="objects", desc="rendering", disable=None) as bar:
                await backfill.run(pool, bucket, prefix, bar)
        finally:
            await backfill.close()
    tally = backfill.tally
    print(
        f"{tally['rendered']:,} variants rendered, {tally['stored']:,} already stored,"
        f" {tally['failed']:,} failed; {tally['skipped']:,} objects skipped (not images)"
    )
    return 1 if tally["failed"] else 0


class _Backfill:
    def __init__(
        self,
        config: GatewayConfig,
        backends: dict[str, ObjectBackend],
        outputs: list[tuple[Preset, FormatClass]],
    ) -> None:
        self._backends = backends
        self._outputs = outputs
        resources = next(iter(backends.values())).resources
        self._render_pool = RenderPool.from_limits(config.limits, config.video)
        self._service = VariantService(
            resources, self._render_pool, VariantPolicy.from_limits(config.limits)
        )
        self.tally: Counter[str] = Counter()

    async def start(self) -> None:
        await self._render_pool.start()

    async def close(self) -> None:
        await self._service.close()
        await self._render_pool.close()

    async def run(self, pool: GatewayPool, bucket: str, prefix: str, bar: tqdm) -> None:
        # As many renders at once as there are workers: none waits in the pool's queue.
        slots = asyncio.Semaphore(self._render_pool.workers)
        after = None
        while True:
            page = await lifecycle_rows.current_versions(pool, bucket, prefix, after, PAGE)
            await asyncio.gather(*(self._object(pool, bucket, row.key, slots, bar) for row in page))
            if len(page) < PAGE:
                return
            after = page[-1].key

    async def _object(
        self, pool: GatewayPool, bucket: str, key: str, slots: asyncio.Semaphore, bar: tqdm
    ) -> None:
        async with slots:
            record = await object_rows.get_object(pool, bucket, key)
            if record is None:
                pass  # deleted since the page was read
            elif not _renderable(record):
                self.tally["skipped"] += 1
            else:
                for preset, format_class in self._outputs:
                    self.tally[await self._variant(pool, record, preset, format_class)] += 1
        bar.update(1)

    async def _variant(
        self, pool: GatewayPool, record: ObjectRecord, preset: Preset, format_class: FormatClass
    ) -> str:
        stored = await derivatives.get(pool, record.version_id, preset.variant_key(format_class))
        if stored is not None and stored.status == "ready":
            return "stored"
        source = variant_source(self._backends, record)
        try:
            await self._service.get(source, preset, format_class)
        except (S3Error, GatewayError) as exc:
            # Recorded on the derivative row as a request's failure is (S3Error).
            tqdm.write(f"{record.key} ({preset.name}, {format_class}): {exc}", file=sys.stderr)
            return "failed"
        return "rendered"


def _renderable(record: ObjectRecord) -> bool:
    """Worth a render: an image or a video (or unlabelled bytes), not sealed with a client's
    own key (only its owner's requests can open it)."""
    if record.metadata.customer_key is not None:
        return False
    content_type = record.content_type.split(";", 1)[0].strip().lower()
    return content_type.startswith(_RENDERABLE_PREFIXES) or content_type in _UNLABELLED
