"""Sealing of access keys' secrets, and the grants and lifetimes `gateway keys create` takes."""

from __future__ import annotations

from datetime import timedelta

import pytest

from gateway.cli_keys import parse_duration
from gateway.config import parse_grant
from gateway.meta.access_keys import (
    SEALED_BY_CONFIG,
    SEALED_BY_DATABASE,
    SealingKeys,
    SecretUnsealable,
)

CONFIGURED = bytes(range(32))
STORED = bytes(range(32, 64))


def test_a_secret_opens_only_for_its_access_key_and_under_its_key() -> None:
    keys = SealingKeys(CONFIGURED, STORED)
    sealed, sealed_with = keys.seal("GKONE", "the-secret")
    assert sealed_with == SEALED_BY_CONFIG
    assert b"the-secret" not in sealed
    assert keys.open("GKONE", sealed, sealed_with) == "the-secret"
    # Sealed twice, never the same bytes (a fresh nonce each time).
    assert keys.seal("GKONE", "the-secret")[0] != sealed
    with pytest.raises(SecretUnsealable):
        keys.open("GKTWO", sealed, sealed_with)
    with pytest.raises(SecretUnsealable):
        SealingKeys(STORED, STORED).open("GKONE", sealed, sealed_with)
    with pytest.raises(SecretUnsealable, match="not set"):
        SealingKeys(None, STORED).open("GKONE", sealed, sealed_with)
    tampered = sealed[:-1] + bytes([sealed[-1] ^ 1])
    with pytest.raises(SecretUnsealable):
        keys.open("GKONE", tampered, sealed_with)


def test_without_a_configured_key_the_databases_own_seals_and_stays_readable() -> None:
    sealed, sealed_with = SealingKeys(None, STORED).seal("GKONE", "the-secret")
    assert sealed_with == SEALED_BY_DATABASE
    # A key configured later seals new secrets; the older ones still open.
    assert SealingKeys(CONFIGURED, STORED).open("GKONE", sealed, sealed_with) == "the-secret"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("photos=read", ("photos", "read")),
        ("photos=write", ("photos", "write")),
        (" photos = read-write ", ("photos", "read-write")),
        ("*=read", ("*", "read")),
    ],
)
def test_grants(text: str, expected: tuple[str, str]) -> None:
    assert parse_grant(text) == expected


@pytest.mark.parametrize(
    "text", ["photos", "photos=", "=read", "photos=admin", "photos=READ", "Bad_Name=read"]
)
def test_bad_grants(text: str) -> None:
    with pytest.raises(ValueError):
        parse_grant(text)


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("3600", 3600), ("45s", 45), ("90m", 5400), ("12h", 43200), ("30d", 2592000), ("2w", 1209600)],
)
def test_durations(text: str, seconds: int) -> None:
    assert parse_duration(text) == timedelta(seconds=seconds)


@pytest.mark.parametrize("text", ["", "0", "soon", "-5d", "1.5h", "3y"])
def test_bad_durations(text: str) -> None:
    with pytest.raises(ValueError):
        parse_duration(text)
