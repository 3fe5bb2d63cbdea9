"""User metadata values beyond US-ASCII (RFC 2047), without a server."""

from __future__ import annotations

import pytest

from gateway.s3.mime import header_value, stored_value


def _as_read(raw: bytes) -> str:
    """A header value as the server's HTTP parser hands it over."""
    return raw.decode("utf-8", "surrogateescape")


@pytest.mark.parametrize(
    ("raw", "stored"),
    [
        (b"plain", "plain"),
        (b"caf\xc3\xa9", "café"),
        # Not UTF-8: ISO-8859-1, HTTP's historical charset.
        (b"caf\xe9", "café"),
        (b"=?UTF-8?B?Y2Fmw6kg5Lit?=", "café 中"),
        (b"=?iso-8859-1?q?caf=E9?=", "café"),
        (b"a =?UTF-8?B?w6k=?= b", "a é b"),
        # Not encoded-words: kept as written.
        (b"=?x-unknown?B?w6k=?=", "=?x-unknown?B?w6k=?="),
        (b"1 + 1 =? 2", "1 + 1 =? 2"),
    ],
)
def test_stored_value(raw: bytes, stored: str) -> None:
    assert stored_value(_as_read(raw)) == stored


@pytest.mark.parametrize(
    ("stored", "sent"),
    [
        ("plain text", "plain text"),
        ("café", "=?UTF-8?B?Y2Fmw6k=?="),
        ("中", "=?UTF-8?B?5Lit?="),
        ("bell\x07", "=?UTF-8?B?YmVsbAc=?="),
    ],
)
def test_header_value(stored: str, sent: str) -> None:
    assert header_value(stored) == sent
    assert stored_value(sent) == stored
