"""`gateway lifecycle run [--dry-run] [--bucket B]`: a pass of the buckets' lifecycle rules
now, as the janitor runs one, printing what it did (or, dry, would do) by bucket, rule and
action. Refused while another pass runs anywhere; the janitor's schedule is unchanged."""

from __future__ import annotations

import argparse
import sys
from datetime import UTC, datetime

from gateway.config import GatewayConfig
from gateway.maintenance import lifecycle
from gateway.meta.db import GatewayPool, migrate
from gateway.objects.profiles import opened_backends


def _moment(value: str) -> datetime:
    moment = datetime.fromisoformat(value)
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


def add_commands(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    lifecycle_cmd = commands.add_parser("lifecycle", help="apply buckets' lifecycle rules now")
    lifecycle_cmd.add_argument("--config")
    actions = lifecycle_cmd.add_subparsers(dest="lifecycle_command", required=True)
    run_cmd = actions.add_parser("run", help="a pass of every bucket's rules, now")
    run_cmd.add_argument("--config", default=argparse.SUPPRESS)
    run_cmd.add_argument("--bucket", help="only this bucket's rules")
    run_cmd.add_argument(
        "--dry-run", action="store_true", help="print what the pass would do; change nothing"
    )
    run_cmd.add_argument(
        "--at",
        type=_moment,
        help="with --dry-run: as if it were this moment (ISO 8601, e.g. 2027-01-31), to see"
        " what the rules will do by then",
    )


async def run(config: GatewayConfig, args: argparse.Namespace, pool: GatewayPool) -> int:
    if args.at is not None and not args.dry_run:
        print("gateway lifecycle run: --at needs --dry-run", file=sys.stderr)
        return 2
    async with pool.acquire() as conn:
        await migrate(conn)
    now = args.at or datetime.now(UTC)
    async with lifecycle.exclusive(pool) as mine:
        if not mine:
            print("another lifecycle pass is running; try again later", file=sys.stderr)
            return 1
        async with opened_backends(config, pool) as backends:
            report = await lifecycle.apply_rules(
                pool, backends, config, now, dry_run=args.dry_run, only_bucket=args.bucket
            )
    _print(report)
    return 0


def _print(report: lifecycle.LifecycleReport) -> None:
    header = ["bucket", "rule", "action", "count", "bytes"]
    rows = [header]
    for (bucket, rule, action), tally in sorted(report.tallies.items()):
        rows.append([bucket, rule, action, f"{tally.count:,}", f"{tally.bytes:,}"])
    if len(rows) > 1:
        widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
        for row in rows:
            cells = zip(row, widths, strict=True)
            print("  ".join(cell.ljust(width) for cell, width in cells).rstrip())
    print(_summary(report))


def _summary(report: lifecycle.LifecycleReport) -> str:
    totals = ", ".join(
        f"{report.total(action):,} {action}"
        for action in (
            lifecycle.EXPIRED,
            lifecycle.NONCURRENT,
            lifecycle.MARKERS,
            lifecycle.ABORTED,
        )
    )
    return f"dry run, nothing changed: {totals}" if report.dry_run else totals
