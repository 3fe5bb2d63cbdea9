"""Queries on the buckets table."""

from __future__ import annotations

import functools
import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import asyncpg

from gateway.meta.quotas import Quota, parse_quota
from gateway.s3.acl import PRIVATE
from gateway.s3.cors import CorsConfiguration, CorsRule
from gateway.s3.lifecycle import LifecycleRule, parse_rules
from gateway.s3.policy import BucketPolicy, parse_policy
from gateway.s3.website import WebsiteConfiguration


@dataclass(frozen=True)
class Bucket:
    name: str
    created_at: datetime
    profile: str
    public_read: bool
    owner: str
    # Rules set by PutBucketCors, as the database's text of their JSON: compiled only when a
    # request with an Origin asks, once per distinct text (every lookup of the bucket carries
    # them, the hot GET path included).
    cors_document: str | None = field(default=None, repr=False, compare=False)
    # Set by CreateBucket's or PutBucketAcl's ACL: public-read lets anyone list the bucket.
    acl: str = PRIVATE
    # The document PutBucketPolicy stored, as sent.
    policy_document: str | None = field(default=None, repr=False, compare=False)
    # What PutBucketWebsite stored, as the database's text of its JSON.
    website_document: str | None = field(default=None, repr=False, compare=False)
    # The quota (gateway.meta.quotas), as the database's text of its JSON.
    quota_document: str | None = field(default=None, repr=False, compare=False)
    # Enabled or Suspended (gateway.s3.versions); None: versioning never enabled.
    versioning: str | None = None
    # The rules PutBucketLifecycleConfiguration stored, as the database's text of their JSON.
    lifecycle_document: str | None = field(default=None, repr=False, compare=False)

    @classmethod
    def from_columns(cls, values: dict[str, Any], prefix: str = "") -> Bucket:
        """The bucket ``columns(alias, prefix)`` selected into ``values`` (popped)."""
        fields = {name: values.pop(prefix + name) for name in (*_FIELDS, *_SETTINGS)}
        return cls(**{**fields, "acl": fields["acl"] or PRIVATE})

    @property
    def policy(self) -> BucketPolicy | None:
        """What the stored bucket policy allows anonymous requesters; None: no policy."""
        if self.policy_document is None:
            return None
        return _parsed_policy(self.policy_document, self.name)

    @property
    def website(self) -> WebsiteConfiguration | None:
        """The index and error documents PutBucketWebsite set; None: none."""
        if self.website_document is None:
            return None
        return _parsed_website(self.website_document)

    @property
    def quota(self) -> Quota | None:
        """The limits a write into the bucket is checked against; None: none."""
        if self.quota_document is None:
            return None
        return parse_quota(self.quota_document)

    @property
    def lifecycle(self) -> tuple[LifecycleRule, ...] | None:
        """The rules PutBucketLifecycleConfiguration set; None: none."""
        if self.lifecycle_document is None:
            return None
        return _parsed_lifecycle(self.lifecycle_document)

    @property
    def cors(self) -> CorsConfiguration | None:
        """The rules set by PutBucketCors; None: none."""
        if self.cors_document is None:
            return None
        return _parsed_cors(self.cors_document)


@functools.lru_cache(maxsize=256)
def _parsed_cors(document: str) -> CorsConfiguration:
    return CorsConfiguration([CorsRule.from_json(rule) for rule in json.loads(document)])


@functools.lru_cache(maxsize=256)
def _parsed_website(document: str) -> WebsiteConfiguration:
    return WebsiteConfiguration.from_json(json.loads(document))


@functools.lru_cache(maxsize=256)
def _parsed_lifecycle(document: str) -> tuple[LifecycleRule, ...]:
    return parse_rules(document)


@functools.lru_cache(maxsize=256)
def _parsed_policy(document: str, bucket: str) -> BucketPolicy:
    return parse_policy(document, bucket)


_FIELDS = ("name", "created_at", "profile", "public_read", "owner")
# The settings the API sets, each its own column: a lookup decodes none of them.
_SETTINGS = {
    "cors_document": "({table}settings->'cors')::text",
    "acl": "{table}settings->>'acl'",
    "policy_document": "{table}settings->>'policy'",
    "website_document": "({table}settings->'website')::text",
    "quota_document": "({table}settings->'quota')::text",
    "versioning": "{table}settings->>'versioning'",
    "lifecycle_document": "({table}settings->'lifecycle')::text",
}


def columns(alias: str = "", prefix: str = "") -> str:
    """The select list of a Bucket; ``alias`` qualifies the table, ``prefix`` renames the
    columns (to read one from a join whose other tables share column names)."""
    table = f"{alias}." if alias else ""
    names = [f"{table}{name} AS {prefix}{name}" for name in _FIELDS]
    names += [f"{sql.format(table=table)} AS {prefix}{name}" for name, sql in _SETTINGS.items()]
    return ", ".join(names)


_COLUMNS = columns()


def _bucket(row: asyncpg.Record) -> Bucket:
    return Bucket.from_columns(dict(row))


async def set_setting(
    conn: asyncpg.Connection | asyncpg.Pool, name: str, setting: str, value: Any
) -> bool:
    """Set one of the settings the API changes (None: remove it); False if there is no
    bucket."""
    if value is None:
        result = await conn.execute(
            "UPDATE buckets SET settings = settings - $2 WHERE name = $1", name, setting
        )
    else:
        result = await conn.execute(
            "UPDATE buckets SET settings = jsonb_set(settings, ARRAY[$2], $3::jsonb)"
            " WHERE name = $1",
            name,
            setting,
            value,
        )
    return bool(result == "UPDATE 1")


async def get_bucket(conn: asyncpg.Connection | asyncpg.Pool, name: str) -> Bucket | None:
    row = await conn.fetchrow(f"SELECT {_COLUMNS} FROM buckets WHERE name = $1", name)
    return _bucket(row) if row else None


class RecentBuckets:
    """Buckets this process looked up within the last ``ttl`` seconds.

    For writes whose row commit checks the bucket again (its foreign key), so a stale entry
    costs a refused write, never a row in a deleted bucket. ``cacheable`` keeps out buckets
    whose writes land before that check (objects written in place upstream).
    """

    # Past this many entries the cache starts over: bucket names are few, but not bounded.
    MAX_ENTRIES = 1024

    def __init__(self, ttl: float, cacheable: Callable[[Bucket], bool]) -> None:
        self._ttl = ttl
        self._cacheable = cacheable
        self._entries: dict[str, tuple[float, Bucket]] = {}

    async def get(self, conn: asyncpg.Connection | asyncpg.Pool, name: str) -> Bucket | None:
        now = time.monotonic()
        entry = self._entries.get(name)
        if entry is not None and now - entry[0] < self._ttl:
            return entry[1]
        bucket = await get_bucket(conn, name)
        if bucket is None or not self._cacheable(bucket):
            self._entries.pop(name, None)
            return bucket
        if len(self._entries) >= self.MAX_ENTRIES:
            self._entries.clear()
        self._entries[name] = (now, bucket)
        return bucket

    def forget(self, name: str) -> None:
        self._entries.pop(name, None)


async def list_buckets(conn: asyncpg.Connection | asyncpg.Pool) -> list[Bucket]:
    rows = await conn.fetch(f"SELECT {_COLUMNS} FROM buckets ORDER BY name")
    return [_bucket(row) for row in rows]


async def create_bucket(
    conn: asyncpg.Connection | asyncpg.Pool,
    name: str,
    profile: str,
    public_read: bool,
    owner: str,
    acl: str = PRIVATE,
) -> Bucket | None:
    """Insert the bucket; None if it already exists."""
    row = await conn.fetchrow(
        "INSERT INTO buckets (name, profile, public_read, owner, settings)"
        " VALUES ($1, $2, $3, $4, $5)"
        f" ON CONFLICT (name) DO NOTHING RETURNING {_COLUMNS}",
        name,
        profile,
        public_read,
        owner,
        {} if acl == PRIVATE else {"acl": acl},
    )
    return _bucket(row) if row else None


async def declare_bucket(
    conn: asyncpg.Connection | asyncpg.Pool,
    name: str,
    profile: str,
    public_read: bool,
    owner: str,
    quota: Quota | None = None,
    versioning: str | None = None,
) -> None:
    """Create or update a bucket declared in the configuration (the config wins). A quota the
    file sets replaces the bucket's; one it set before and sets no more is removed; one set
    by `gateway buckets set-quota` stays while the file sets none. A versioning state the
    file sets replaces the bucket's; none leaves it as it is (a bucket once versioned never
    becomes unversioned again, as in S3)."""
    settings: dict[str, Any] = {}
    if quota is not None:
        settings["quota"] = {**quota.to_json(), "config": True}
    if versioning is not None:
        settings["versioning"] = versioning
    await conn.execute(
        "INSERT INTO buckets (name, profile, public_read, owner, settings)"
        " VALUES ($1, $2, $3, $4, $5)"
        " ON CONFLICT (name) DO UPDATE SET profile = EXCLUDED.profile,"
        " public_read = EXCLUDED.public_read, settings = CASE"
        "  WHEN EXCLUDED.settings ? 'quota'"
        "   THEN jsonb_set(buckets.settings, '{quota}', EXCLUDED.settings->'quota')"
        "  WHEN buckets.settings->'quota' ? 'config' THEN buckets.settings - 'quota'"
        "  ELSE buckets.settings END"
        "  || CASE WHEN EXCLUDED.settings ? 'versioning'"
        "   THEN jsonb_build_object('versioning', EXCLUDED.settings->'versioning')"
        "   ELSE '{}'::jsonb END",
        name,
        profile,
        public_read,
        owner,
        settings,
    )


class BucketNotEmptyError(Exception):
    pass


async def delete_bucket(conn: asyncpg.Connection, name: str) -> bool:
    """Delete an empty bucket; False if it does not exist. Raises BucketNotEmptyError."""
    async with conn.transaction():
        # Lock the row first so a concurrent PutObject (which references it) cannot slip in.
        exists = await conn.fetchval("SELECT 1 FROM buckets WHERE name = $1 FOR UPDATE", name)
        if not exists:
            return False
        has_content = await conn.fetchval(
            "SELECT EXISTS (SELECT 1 FROM objects WHERE bucket = $1)"
            " OR EXISTS (SELECT 1 FROM object_versions WHERE bucket = $1)"
            " OR EXISTS (SELECT 1 FROM uploads WHERE bucket = $1)",
            name,
        )
        if has_content:
            raise BucketNotEmptyError(name)
        await conn.execute("DELETE FROM buckets WHERE name = $1", name)
        return True
