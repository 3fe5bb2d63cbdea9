"""ListObjects (v1) and ListObjectsV2: prefix, delimiter, pagination, encoding-type."""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass, field

import asyncpg
from aiohttp import web

from gateway.api import auth
from gateway.api.common import get_bucket
from gateway.api.context import S3Request
from gateway.meta import object_rows
from gateway.meta.object_rows import ListedObject, prefix_upper_bound
from gateway.s3 import errors, names
from gateway.s3.xml import (
    Listing,
    ListingEntry,
    encoding_url,
    list_objects_v1,
    list_objects_v2,
)

MAX_KEYS = 1000


@dataclass
class Page:
    contents: list[ListedObject] = field(default_factory=list)
    common_prefixes: list[str] = field(default_factory=list)
    is_truncated: bool = False
    # The last key or common prefix returned: where the next page resumes.
    last: str | None = None

    @property
    def count(self) -> int:
        return len(self.contents) + len(self.common_prefixes)


def common_prefix(key: str, prefix: str, delimiter: str | None) -> str | None:
    """The CommonPrefix that ``key`` rolls up into, if any."""
    if not delimiter or not key.startswith(prefix):
        return None
    index = key.find(delimiter, len(prefix))
    return key[: index + len(delimiter)] if index >= 0 else None


async def collect_page(
    pool: asyncpg.Pool,
    bucket: str,
    prefix: str,
    delimiter: str | None,
    cursor: str | None,
    max_keys: int,
) -> Page:
    """One page of a listing, resuming after ``cursor`` (a key or a common prefix)."""
    page = Page()
    start, inclusive = "", True
    if cursor is not None:
        start, inclusive = cursor, False
        rolled_up = common_prefix(cursor, prefix, delimiter)
        if rolled_up is not None:
            # Everything under that prefix was returned as one CommonPrefix already.
            upper = prefix_upper_bound(rolled_up)
            if upper is None:
                return page
            start, inclusive = upper, True
    if max_keys == 0:
        return page
    if delimiter is None:
        wanted = max_keys + 1
        rows = await object_rows.list_objects(pool, bucket, prefix, start, inclusive, wanted)
        page.contents = rows[:max_keys]
        page.is_truncated = len(rows) == wanted
        page.last = page.contents[-1].key if page.contents else None
        return page
    while True:
        wanted = max_keys - page.count + 1
        rows, stopped = await object_rows.list_rolled_up(
            pool, bucket, prefix, delimiter, start, inclusive, wanted
        )
        for row in rows:
            if page.count == max_keys:
                page.is_truncated = True
                return page
            rolled_up = common_prefix(row.key, prefix, delimiter)
            if rolled_up is None:
                page.contents.append(row)
                page.last = row.key
            else:
                page.common_prefixes.append(rolled_up)
                page.last = rolled_up
        if not stopped or page.last is None:
            return page
        # Only past a delimiter of U+10FFFF characters: the walk cannot skip such a prefix.
        upper = prefix_upper_bound(page.last)
        if upper is None:
            return page
        start, inclusive = upper, True


def _max_keys(req: S3Request) -> int:
    raw = req.query.get("max-keys")
    if raw is None:
        return MAX_KEYS
    try:
        value = int(raw)
    except ValueError:
        value = -1
    if value < 0:
        raise errors.InvalidArgument(
            "Provided max-keys not an integer or within integer range",
            ArgumentName="max-keys",
            ArgumentValue=raw,
        )
    return min(value, MAX_KEYS)


def encode_token(cursor: str) -> str:
    return base64.urlsafe_b64encode(cursor.encode("utf-8", "surrogatepass")).decode("ascii")


def decode_token(token: str) -> str:
    try:
        cursor = base64.urlsafe_b64decode(token.encode("ascii")).decode("utf-8")
        names.check_text("continuation-token", cursor)
        return cursor
    except (binascii.Error, UnicodeError, ValueError, errors.InvalidArgument):
        raise errors.InvalidArgument(
            "The continuation token provided is incorrect",
            ArgumentName="continuation-token",
            ArgumentValue=token,
        ) from None


def _listing(
    req: S3Request, page: Page, prefix: str, delimiter: str | None, max_keys: int
) -> Listing:
    assert req.bucket is not None
    return Listing(
        bucket=req.bucket,
        prefix=prefix,
        delimiter=delimiter,
        max_keys=max_keys,
        contents=[
            ListingEntry(row.key, row.last_modified, row.etag, row.size) for row in page.contents
        ],
        common_prefixes=page.common_prefixes,
        is_truncated=page.is_truncated,
        encoding_url=encoding_url(req.query.get("encoding-type")),
        owner_id=req.owner_id,
    )


async def _start(req: S3Request) -> tuple[str, str | None, int]:
    assert req.bucket is not None
    bucket = await get_bucket(req, req.bucket)
    auth.require_read(req, bucket)
    prefix = req.query.get("prefix", "")
    delimiter = req.query.get("delimiter") or None
    for name in ("prefix", "delimiter", "start-after", "marker"):
        names.check_text(name, req.query.get(name, ""))
    return prefix, delimiter, _max_keys(req)


async def list_objects_v2_handler(req: S3Request) -> web.StreamResponse:
    prefix, delimiter, max_keys = await _start(req)
    token = req.query.get("continuation-token")
    start_after = req.query.get("start-after")
    if token is not None:
        cursor: str | None = decode_token(token)
    else:
        cursor = start_after or None
    assert req.bucket is not None
    page = await collect_page(req.pool, req.bucket, prefix, delimiter, cursor, max_keys)
    next_token = encode_token(page.last) if page.is_truncated and page.last else None
    body = list_objects_v2(
        _listing(req, page, prefix, delimiter, max_keys),
        continuation_token=token,
        next_continuation_token=next_token,
        start_after=start_after,
        fetch_owner=req.query.get("fetch-owner", "").lower() == "true",
    )
    return web.Response(body=body, content_type="application/xml")


async def list_objects_handler(req: S3Request) -> web.StreamResponse:
    prefix, delimiter, max_keys = await _start(req)
    marker = req.query.get("marker", "")
    assert req.bucket is not None
    page = await collect_page(req.pool, req.bucket, prefix, delimiter, marker or None, max_keys)
    # S3 returns NextMarker only with a delimiter; without one clients resume from the last key.
    next_marker = page.last if page.is_truncated and delimiter else None
    body = list_objects_v1(_listing(req, page, prefix, delimiter, max_keys), marker, next_marker)
    return web.Response(body=body, content_type="application/xml")
