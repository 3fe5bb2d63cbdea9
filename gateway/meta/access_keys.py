"""Access keys kept in Postgres (`gateway keys create | list | revoke`), and their secrets
sealed at rest.

SigV4 and SigV2 signatures are computed with the secret itself, so it cannot be kept as a
hash: it is sealed with AES-256-GCM under ``access_keys.encryption_key`` when one is
configured, else under a key generated once and kept in the database (which keeps secrets
out of query logs and of dumps of this table alone, not out of a dump of the whole
database). The associated data is the access key, so a sealed secret moved to another row
does not open.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from datetime import datetime

import asyncpg
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from gateway.config import MASTER_KEY_SIZE, CredentialConfig, Grant

# Every gateway LISTENs on it; create and revoke NOTIFY it (the payload: the access key).
CHANNEL = "gateway_keys"
SEALED_BY_CONFIG = "config"
SEALED_BY_DATABASE = "database"
_SECRET_PURPOSE = "access-keys"
_NONCE_SIZE = 12
# Unlike the root credential ("GW..."), so the two are told apart in logs and listings.
ACCESS_KEY_PREFIX = "GK"


class SecretUnsealable(Exception):
    """A sealed secret does not open: the wrong or a missing key, or a tampered row."""


@dataclass(frozen=True)
class SealingKeys:
    """The keys that seal secrets: the configured one (if any), and the database's own."""

    configured: bytes | None
    stored: bytes

    def seal(self, access_key: str, secret: str) -> tuple[bytes, str]:
        """The sealed secret and which key sealed it (the configured one when there is one)."""
        sealed_with = SEALED_BY_CONFIG if self.configured else SEALED_BY_DATABASE
        key = self.configured or self.stored
        nonce = os.urandom(_NONCE_SIZE)
        return nonce + AESGCM(key).encrypt(nonce, secret.encode(), access_key.encode()), sealed_with

    def open(self, access_key: str, sealed: bytes, sealed_with: str) -> str:
        key = self.configured if sealed_with == SEALED_BY_CONFIG else self.stored
        if key is None:
            raise SecretUnsealable("sealed with access_keys.encryption_key, which is not set")
        nonce, ciphertext = sealed[:_NONCE_SIZE], sealed[_NONCE_SIZE:]
        try:
            return AESGCM(key).decrypt(nonce, ciphertext, access_key.encode()).decode()
        except InvalidTag:
            raise SecretUnsealable(f"does not open with the {sealed_with} key") from None


async def sealing_keys(conn: asyncpg.Connection, configured: bytes | None) -> SealingKeys:
    """The configured key and the database's own, generated here on first use."""
    await conn.execute(
        "INSERT INTO gateway_secrets (purpose, secret) VALUES ($1, $2) ON CONFLICT DO NOTHING",
        _SECRET_PURPOSE,
        os.urandom(MASTER_KEY_SIZE),
    )
    stored: bytes = await conn.fetchval(
        "SELECT secret FROM gateway_secrets WHERE purpose = $1", _SECRET_PURPOSE
    )
    return SealingKeys(configured, stored)


def new_access_key() -> str:
    return ACCESS_KEY_PREFIX + secrets.token_hex(9).upper()


def new_secret_key() -> str:
    return secrets.token_urlsafe(30)


@dataclass(frozen=True)
class AccessKey:
    """A row of access_keys, without its secret."""

    access_key: str
    name: str | None
    grants: dict[str, Grant]
    created_at: datetime
    expires_at: datetime | None
    revoked_at: datetime | None

    def status(self, now: datetime) -> str:
        if self.revoked_at is not None:
            return "revoked"
        if self.expires_at is not None and self.expires_at <= now:
            return "expired"
        return "active"


@dataclass(frozen=True)
class UsableKey:
    """A key that signs requests: its credential (never root) and when it stops doing so."""

    credential: CredentialConfig
    expires_at: datetime | None


async def create(
    conn: asyncpg.Connection,
    keys: SealingKeys,
    name: str | None,
    grants: Mapping[str, Grant],
    expires_at: datetime | None,
    taken: Collection[str] = (),
) -> tuple[AccessKey, str]:
    """A new key, named unlike any of ``taken``, and its secret (the only time the secret is
    returned)."""
    access_key, secret = new_access_key(), new_secret_key()
    while access_key in taken:
        access_key = new_access_key()
    # Validated as the YAML's credentials are.
    CredentialConfig(access_key=access_key, secret_key=secret, buckets=dict(grants))
    sealed, sealed_with = keys.seal(access_key, secret)
    async with conn.transaction():
        row = await conn.fetchrow(
            "INSERT INTO access_keys (access_key, name, secret, sealed_with, grants, expires_at)"
            " VALUES ($1, $2, $3, $4, $5, $6) RETURNING *",
            access_key,
            name,
            sealed,
            sealed_with,
            dict(grants),
            expires_at,
        )
        # Delivered when the transaction commits.
        await conn.execute("SELECT pg_notify($1, $2)", CHANNEL, access_key)
    return _access_key(row), secret


async def revoke(conn: asyncpg.Connection, access_key: str) -> bool:
    """Whether the key existed (revoking a revoked key again changes nothing)."""
    async with conn.transaction():
        found = await conn.fetchval(
            "UPDATE access_keys SET revoked_at = coalesce(revoked_at, now())"
            " WHERE access_key = $1 RETURNING true",
            access_key,
        )
        if found:
            await conn.execute("SELECT pg_notify($1, $2)", CHANNEL, access_key)
    return bool(found)


async def list_keys(conn: asyncpg.Connection) -> list[AccessKey]:
    rows = await conn.fetch(
        "SELECT access_key, name, grants, created_at, expires_at, revoked_at FROM access_keys"
        " ORDER BY created_at, access_key"
    )
    return [_access_key(row) for row in rows]


async def usable_keys(
    conn: asyncpg.Connection, keys: SealingKeys
) -> tuple[dict[str, UsableKey], dict[str, str]]:
    """Every key that is neither revoked nor expired, with its secret opened; and those whose
    secret does not open, with why (their secret is never part of why)."""
    rows = await conn.fetch(
        "SELECT access_key, secret, sealed_with, grants, expires_at FROM access_keys"
        " WHERE revoked_at IS NULL AND (expires_at IS NULL OR expires_at > now())"
    )
    usable: dict[str, UsableKey] = {}
    unsealable: dict[str, str] = {}
    for row in rows:
        access_key = row["access_key"]
        try:
            secret = keys.open(access_key, row["secret"], row["sealed_with"])
        except SecretUnsealable as exc:
            unsealable[access_key] = str(exc)
            continue
        credential = CredentialConfig(
            access_key=access_key, secret_key=secret, buckets=row["grants"]
        )
        usable[access_key] = UsableKey(credential, row["expires_at"])
    return usable, unsealable


def _access_key(row: asyncpg.Record) -> AccessKey:
    return AccessKey(
        access_key=row["access_key"],
        name=row["name"],
        grants=row["grants"],
        created_at=row["created_at"],
        expires_at=row["expires_at"],
        revoked_at=row["revoked_at"],
    )
