"""`gateway keys create | list | revoke`: access keys kept in the database, in effect on every
gateway sharing it within moments, without a restart (gateway.meta.key_directory)."""

from __future__ import annotations

import argparse
import json
import re
import sys
from datetime import UTC, datetime, timedelta

import asyncpg

from gateway.config import GatewayConfig, Grant, parse_grant
from gateway.meta import access_keys
from gateway.meta.access_keys import AccessKey
from gateway.meta.db import GatewayPool, migrate

_DURATION = re.compile(r"^\s*(\d+)\s*([smhdw]?)\s*$")
_UNIT_SECONDS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


def parse_duration(text: str) -> timedelta:
    """``30d``, ``12h``, ``90m``, ``3600s`` or ``3600`` (seconds)."""
    match = _DURATION.match(text.lower())
    if match is None or int(match.group(1)) == 0:
        raise ValueError(f"{text!r}: expected a duration such as 30d, 12h, 90m or 3600s")
    return timedelta(seconds=int(match.group(1)) * _UNIT_SECONDS[match.group(2)])


def add_commands(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    keys_cmd = commands.add_parser(
        "keys", help="create, list and revoke access keys kept in the database"
    )
    # Before or after the action; SUPPRESS: an action without it keeps the one given before.
    keys_cmd.add_argument("--config")
    actions = keys_cmd.add_subparsers(dest="keys_command", required=True)
    create_cmd = actions.add_parser("create", help="make a key; its secret is printed once")
    create_cmd.add_argument("--config", default=argparse.SUPPRESS)
    create_cmd.add_argument("--name", help="what the key is for (shown by list)")
    create_cmd.add_argument(
        "--grant",
        action="append",
        required=True,
        metavar="BUCKET=GRANT",
        help="read, write or read-write on BUCKET ('*': every bucket); repeatable",
    )
    create_cmd.add_argument("--expires", help="refused after this long: 30d, 12h, 90m, 3600s")
    create_cmd.add_argument("--json", action="store_true", help="print one JSON object")
    list_cmd = actions.add_parser("list", help="every key, without secrets")
    list_cmd.add_argument("--config", default=argparse.SUPPRESS)
    list_cmd.add_argument("--json", action="store_true", help="print a JSON array")
    revoke_cmd = actions.add_parser("revoke", help="refuse a key from now on")
    revoke_cmd.add_argument("--config", default=argparse.SUPPRESS)
    revoke_cmd.add_argument("access_key")


async def run(config: GatewayConfig, args: argparse.Namespace, pool: GatewayPool) -> int:
    async with pool.acquire() as conn:
        await migrate(conn)
        if args.keys_command == "create":
            return await _create(config, args, conn)
        if args.keys_command == "list":
            return _print_list(await access_keys.list_keys(conn), args.json)
        if not await access_keys.revoke(conn, args.access_key):
            print(f"no access key {args.access_key!r}", file=sys.stderr)
            return 1
        print(f"revoked {args.access_key}")
        return 0


async def _create(config: GatewayConfig, args: argparse.Namespace, conn: asyncpg.Connection) -> int:
    grants: dict[str, Grant] = {}
    try:
        for text in args.grant:
            bucket, grant = parse_grant(text)
            grants[bucket] = grant
        lifetime = parse_duration(args.expires) if args.expires else None
    except ValueError as exc:
        print(f"gateway keys create: {exc}", file=sys.stderr)
        return 2
    if config.access_keys.encryption_key is None:
        print(
            "warning: access_keys.encryption_key is not set: the secret is sealed with a key"
            " kept in the same database",
            file=sys.stderr,
        )
    expires_at = datetime.now(UTC) + lifetime if lifetime else None
    keys = await access_keys.sealing_keys(conn, config.access_keys.encryption_key)
    # The YAML's credentials would shadow a key of the same name.
    taken = {credential.access_key for credential in config.credentials}
    key, secret = await access_keys.create(conn, keys, args.name, grants, expires_at, taken)
    if args.json:
        print(json.dumps({**_as_json(key), "secret_key": secret}))
    else:
        print(f"access key: {key.access_key}\nsecret key: {secret}")
        print("The secret is shown this once; keep it now.", file=sys.stderr)
    return 0


def _as_json(key: AccessKey) -> dict[str, object]:
    now = datetime.now(UTC)
    return {
        "access_key": key.access_key,
        "name": key.name,
        "grants": key.grants,
        "created_at": key.created_at.isoformat(),
        "expires_at": key.expires_at.isoformat() if key.expires_at else None,
        "revoked_at": key.revoked_at.isoformat() if key.revoked_at else None,
        "status": key.status(now),
    }


def _print_list(keys: list[AccessKey], as_json: bool) -> int:
    if as_json:
        print(json.dumps([_as_json(key) for key in keys]))
        return 0
    now = datetime.now(UTC)
    header = ["access key", "name", "grants", "created", "expires", "status"]
    rows = [
        [
            key.access_key,
            key.name or "-",
            ",".join(f"{bucket}={grant}" for bucket, grant in sorted(key.grants.items())),
            f"{key.created_at:%Y-%m-%d %H:%M}",
            f"{key.expires_at:%Y-%m-%d %H:%M}" if key.expires_at else "-",
            key.status(now),
        ]
        for key in keys
    ]
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]
    for row in [header, *rows]:
        print(
            "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
        )
    return 0
