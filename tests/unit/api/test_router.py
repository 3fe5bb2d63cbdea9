"""Which host is a website host, and of which bucket."""

from __future__ import annotations

import pytest

from gateway.api.router import website_bucket

DOMAINS = ["web.example", "sites.example.org"]


@pytest.mark.parametrize(
    ("host", "bucket"),
    [
        ("www.web.example", "www"),
        ("WWW.Web.Example:8080", "www"),
        ("my.site.web.example", "my.site"),
        ("blog.sites.example.org", "blog"),
        # The domain itself, a look-alike or another host: not a website host.
        ("web.example", None),
        ("www.evilweb.example", None),
        ("www.web.example.evil", None),
        ("[::1]:9000", None),
        ("", None),
    ],
)
def test_website_bucket(host: str, bucket: str | None) -> None:
    assert website_bucket(host, DOMAINS) == bucket
