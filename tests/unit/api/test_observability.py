"""Who may scrape the metrics, which address a request came from, and operation names."""

from __future__ import annotations

import pytest
from aiohttp import web
from aiohttp.test_utils import make_mocked_request

from gateway.api import listing, multipart, objects, variants
from gateway.api.context import LIVE
from gateway.api.metrics import admitted
from gateway.api.middleware import client_address
from gateway.api.router import operation_name
from gateway.config import GatewayConfig, MetricsConfig
from gateway.live import LiveConfig

TOKEN = "a-long-scrape-token"


@pytest.mark.parametrize(
    ("config", "remote", "authorization", "allowed"),
    [
        # The default: loopback only, whatever is sent.
        ({}, "127.0.0.1", None, True),
        ({}, "::1", None, True),
        ({}, "::ffff:127.0.0.1", None, True),
        ({}, "10.1.2.3", None, False),
        ({}, "10.1.2.3", f"Bearer {TOKEN}", False),
        ({}, None, None, False),
        # A token: only with it, from anywhere (loopback too).
        ({"token": TOKEN}, "10.1.2.3", f"Bearer {TOKEN}", True),
        ({"token": TOKEN}, "10.1.2.3", f"bearer  {TOKEN}", True),
        ({"token": TOKEN}, "127.0.0.1", None, False),
        ({"token": TOKEN}, "10.1.2.3", "Bearer wrong", False),
        ({"token": TOKEN}, "10.1.2.3", f"Basic {TOKEN}", False),
        ({"token": TOKEN}, "10.1.2.3", f"Bearer {TOKEN[:-1]}", False),
        # Networks: from them; with a token as well, either admits.
        ({"allow_networks": ["10.0.0.0/8"]}, "10.1.2.3", None, True),
        ({"allow_networks": ["10.0.0.0/8"]}, "127.0.0.1", None, False),
        ({"allow_networks": ["10.0.0.0/8"], "token": TOKEN}, "192.0.2.1", f"Bearer {TOKEN}", True),
        ({"allow_networks": ["10.0.0.0/8"], "token": TOKEN}, "192.0.2.1", None, False),
    ],
)
def test_who_may_scrape(
    config: dict[str, object], remote: str | None, authorization: str | None, allowed: bool
) -> None:
    assert admitted(MetricsConfig.model_validate(config), remote, authorization) is allowed


def _request(forwarded: str | None, peer: str, trusted: list[str]) -> web.Request:
    app = web.Application()
    app[LIVE] = LiveConfig(GatewayConfig.model_validate({"trusted_proxies": trusted}), None, None)
    headers = {"X-Forwarded-For": forwarded} if forwarded is not None else {}
    request = make_mocked_request("GET", "/", headers=headers, app=app)
    return request.clone(remote=peer)


@pytest.mark.parametrize(
    ("forwarded", "peer", "trusted", "client"),
    [
        # No trusted proxy: the header is anyone's to write.
        ("203.0.113.9", "198.51.100.1", [], "198.51.100.1"),
        # From a peer that is not trusted: ignored.
        ("203.0.113.9", "198.51.100.1", ["10.0.0.0/8"], "198.51.100.1"),
        # Through a trusted proxy: the nearest hop that is not one.
        ("203.0.113.9", "10.0.0.5", ["10.0.0.0/8"], "203.0.113.9"),
        ("1.1.1.1, 203.0.113.9, 10.0.0.7", "10.0.0.5", ["10.0.0.0/8"], "203.0.113.9"),
        # Every hop trusted: the first one named.
        ("10.0.0.9, 10.0.0.7", "10.0.0.5", ["10.0.0.0/8"], "10.0.0.9"),
        (None, "10.0.0.5", ["10.0.0.0/8"], "10.0.0.5"),
    ],
)
def test_client_address(forwarded: str | None, peer: str, trusted: list[str], client: str) -> None:
    assert client_address(_request(forwarded, peer, trusted)) == client


def test_operation_names_are_s3_names() -> None:
    assert operation_name(objects.put_object) == "PutObject"
    assert operation_name(objects.delete_objects) == "DeleteObjects"
    assert operation_name(listing.list_objects_v2_handler) == "ListObjectsV2"
    assert operation_name(multipart.complete_multipart_upload) == "CompleteMultipartUpload"
    assert operation_name(variants.get_object_variant) == "GetObject"
