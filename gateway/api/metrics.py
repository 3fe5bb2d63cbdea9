"""GET /_gateway/metrics: Prometheus's text exposition of every gateway process's metrics."""

from __future__ import annotations

import hmac
import ipaddress
import time

import asyncpg
from aiohttp import web

from gateway import metrics
from gateway.api.context import LIVE, POOL
from gateway.config import MetricsConfig, in_networks
from gateway.meta.bucket_usage import bucket_usage
from gateway.s3 import errors

# Per-bucket counts are read at scrape time, at most this often per process: a scrape every
# few seconds from several Prometheus servers still costs one query.
USAGE_CACHE_SECONDS = 5.0
_LOOPBACK = [ipaddress.ip_network("127.0.0.0/8"), ipaddress.ip_network("::1/128")]


class UsageCache:
    """The last reading of the per-bucket counts, and when it was made."""

    def __init__(self) -> None:
        self._usage: list[tuple[str, int, int]] = []
        self._read_at: float | None = None

    async def read(self, pool: asyncpg.Pool) -> list[tuple[str, int, int]]:
        now = time.monotonic()
        if self._read_at is None or now - self._read_at > USAGE_CACHE_SECONDS:
            self._usage = await bucket_usage(pool)
            self._read_at = now
        return self._usage


USAGE = web.AppKey("bucket_usage", UsageCache)


def admitted(config: MetricsConfig, remote: str | None, authorization: str | None) -> bool:
    """Whether a scrape may read the metrics: with neither a token nor networks configured,
    loopback only; else the token, or an address in the networks. The peer's own address is
    what counts, never X-Forwarded-For (anyone can write one)."""
    if config.token is None and not config.allow_networks:
        return in_networks(remote, _LOOPBACK)
    if config.allow_networks and in_networks(remote, config.allow_networks):
        return True
    if config.token is None or authorization is None:
        return False
    scheme, _, token = authorization.partition(" ")
    return scheme.lower() == "bearer" and hmac.compare_digest(
        token.strip().encode(), config.token.encode()
    )


async def get_metrics(request: web.Request) -> web.Response:
    # The token and networks follow a reload; turning metrics on needs a restart.
    config = request.app[LIVE].current.config.metrics
    found = metrics.current()
    if not config.enabled or found is None:
        raise errors.NoSuchKey()
    if not admitted(config, request.remote, request.headers.get("Authorization")):
        raise errors.AccessDenied()
    usage = await request.app[USAGE].read(request.app[POOL])
    # This process's own counts are current; the others' at most a second old.
    found.flush()
    body = metrics.exposition(metrics.bucket_families(usage))
    return web.Response(body=body, headers={"Content-Type": metrics.CONTENT_TYPE})
