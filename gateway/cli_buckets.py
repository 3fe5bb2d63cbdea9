"""`gateway buckets list | set-quota`: every bucket's usage and quota; a bucket's quota set
in the database, in effect on every gateway sharing it without a restart (each write's row
commit reads it from the bucket's row; the check before a body, within seconds)."""

from __future__ import annotations

import argparse
import json
import sys

from gateway.config import GatewayConfig, parse_size
from gateway.meta import bucket_usage, buckets, quotas
from gateway.meta.db import GatewayPool, migrate
from gateway.meta.quotas import Quota


def add_commands(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    buckets_cmd = commands.add_parser("buckets", help="list buckets; set their quotas")
    buckets_cmd.add_argument("--config")
    actions = buckets_cmd.add_subparsers(dest="buckets_command", required=True)
    list_cmd = actions.add_parser("list", help="every bucket: profile, objects, bytes, quota")
    list_cmd.add_argument("--config", default=argparse.SUPPRESS)
    list_cmd.add_argument("--json", action="store_true", help="print a JSON array")
    quota_cmd = actions.add_parser(
        "set-quota",
        help="limit a bucket's bytes and objects (the limits given replace the bucket's quota)",
    )
    quota_cmd.add_argument("--config", default=argparse.SUPPRESS)
    quota_cmd.add_argument("bucket")
    quota_cmd.add_argument(
        "--max-bytes", type=parse_size, help="bytes of objects and parts in progress: 50GiB"
    )
    quota_cmd.add_argument("--max-objects", type=int, help="objects")
    quota_cmd.add_argument("--clear", action="store_true", help="remove the bucket's quota")


async def run(config: GatewayConfig, args: argparse.Namespace, pool: GatewayPool) -> int:
    async with pool.acquire() as conn:
        await migrate(conn)
    if args.buckets_command == "list":
        return await _list(pool, args.json)
    return await _set_quota(config, args, pool)


async def _set_quota(config: GatewayConfig, args: argparse.Namespace, pool: GatewayPool) -> int:
    given = args.max_bytes is not None or args.max_objects is not None
    if args.clear == given or (args.max_objects is not None and args.max_objects < 0):
        print(
            "gateway buckets set-quota: give --max-bytes and/or --max-objects (>= 0), or --clear",
            file=sys.stderr,
        )
        return 2
    declared = config.buckets.get(args.bucket)
    if declared is not None and declared.quota is not None:
        print(
            f"the quota of bucket {args.bucket} is set in the configuration file: change it"
            " there and reload",
            file=sys.stderr,
        )
        return 1
    quota = None if args.clear else Quota(args.max_bytes, args.max_objects)
    if not await quotas.set_quota(pool, args.bucket, quota):
        print(f"no bucket {args.bucket!r}", file=sys.stderr)
        return 1
    print(f"{args.bucket}: {_describe(quota)}")
    return 0


def _describe(quota: Quota | None) -> str:
    if quota is None:
        return "no quota"
    limits = []
    if quota.max_bytes is not None:
        limits.append(f"max_bytes {quota.max_bytes:,}")
    if quota.max_objects is not None:
        limits.append(f"max_objects {quota.max_objects:,}")
    return ", ".join(limits) + (" (configuration file)" if quota.from_config else "")


async def _list(pool: GatewayPool, as_json: bool) -> int:
    found = await buckets.list_buckets(pool)
    usage = await bucket_usage.usage_by_bucket(pool)
    empty = bucket_usage.Usage(0, 0, 0)
    if as_json:
        print(
            json.dumps(
                [
                    {
                        "bucket": bucket.name,
                        "profile": bucket.profile,
                        "objects": usage.get(bucket.name, empty).objects,
                        "bytes": usage.get(bucket.name, empty).bytes,
                        "upload_bytes": usage.get(bucket.name, empty).upload_bytes,
                        "quota": bucket.quota.to_json() if bucket.quota else None,
                    }
                    for bucket in found
                ]
            )
        )
        return 0
    header = ["bucket", "profile", "objects", "bytes", "parts in progress", "quota"]
    rows = [header]
    for bucket in found:
        used = usage.get(bucket.name, empty)
        rows.append(
            [
                bucket.name,
                bucket.profile,
                f"{used.objects:,}",
                f"{used.bytes:,}",
                f"{used.upload_bytes:,}",
                _describe(bucket.quota),
            ]
        )
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    for row in rows:
        print(
            "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
        )
    return 0
