"""YAML configuration -> typed, validated settings.

The YAML may reference secrets as ``${ENV_VAR}`` (or ``${ENV_VAR:-default}``); a handful of
settings can also come from the environment alone so a container needs no file at all.
Validation errors name the YAML path of the offending value.
"""

from __future__ import annotations

import base64
import binascii
import functools
import ipaddress
import logging
import os
import re
from collections.abc import Mapping
from datetime import UTC, date, datetime, time
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Discriminator,
    Field,
    Tag,
    TypeAdapter,
    ValidationError,
    field_validator,
    model_validator,
)

from gateway.s3 import cors, lifecycle, names, website
from gateway.s3.cors import CorsConfiguration, CorsRule
from gateway.s3.errors import S3Error
from gateway.s3.lifecycle import LifecycleFilter, LifecycleRule
from gateway.s3.website import WebsiteConfiguration
from gateway.variants.gravity import Gravity

DEFAULT_LISTEN = "127.0.0.1:9000"
DEFAULT_PROFILE = "default"


class ConfigError(Exception):
    """The configuration cannot be used; the message names where and why."""


_SIZE_UNITS = {"": 1, "B": 1, "KIB": 1024, "MIB": 1024**2, "GIB": 1024**3, "TIB": 1024**4}
_SIZE_RE = re.compile(r"^\s*(\d+)\s*([KMGT]?i?B?)\s*$", re.IGNORECASE)


def parse_size(value: object) -> int:
    """Parse ``5GiB``, ``64 MiB``, ``1024`` into bytes (binary units only, to avoid ambiguity)."""
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    match = _SIZE_RE.match(str(value))
    unit = match.group(2).upper() if match else ""
    if not match or unit not in _SIZE_UNITS:
        raise ValueError(f"not a size: {value!r} (use e.g. 1024, 64KiB, 5GiB)")
    return int(match.group(1)) * _SIZE_UNITS[unit]


# Bytes, or a string with a binary unit ("64MiB").
Size = Annotated[int, BeforeValidator(parse_size), Field(ge=0)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class TLSConfig(_Strict):
    certificate: Path
    private_key: Path


class DatabaseConfig(_Strict):
    # Absent: an embedded Postgres is started under the data directory.
    url: str | None = None
    pool_min_size: int = Field(default=2, ge=1)
    pool_max_size: int = Field(default=20, ge=1)
    # Bounds on every wait for Postgres, so a database that is down or hung makes requests
    # fail fast with 503 ServiceUnavailable instead of piling up: opening one connection,
    # getting a connection from the pool (opening included), and one statement.
    connect_timeout_seconds: float = Field(default=5, gt=0)
    acquire_timeout_seconds: float = Field(default=10, gt=0)
    query_timeout_seconds: float = Field(default=60, gt=0)

    @model_validator(mode="after")
    def _check_pool(self) -> DatabaseConfig:
        # asyncpg would only refuse this at startup, after the config was declared fine.
        if self.pool_min_size > self.pool_max_size:
            raise ValueError(
                f"pool_min_size ({self.pool_min_size}) exceeds pool_max_size ({self.pool_max_size})"
            )
        return self


# A master key of an encrypted profile: 32 bytes.
MASTER_KEY_SIZE = 32
_KEY_ID = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")


def parse_master_key(value: object) -> bytes:
    """A 32-byte key given as 64 hex digits or as base64; the message never shows the value."""
    text = str(value).strip()
    if re.fullmatch(r"[0-9a-fA-F]{64}", text):
        return bytes.fromhex(text)
    try:
        key = base64.b64decode(text + "=" * (-len(text) % 4), altchars=b"-_", validate=True)
    except (binascii.Error, ValueError):
        key = b""
    if len(key) != MASTER_KEY_SIZE:
        raise ValueError(f"a key must be {MASTER_KEY_SIZE} bytes, as 64 hex digits or base64")
    return key


class EncryptionConfig(_Strict):
    """Encryption at rest: every blob gets its own data key, wrapped by ``active_key``."""

    active_key: str
    # Key id -> master key; the keys that wrapped older data keys stay until `gateway rekey`.
    keys: dict[str, Annotated[bytes, BeforeValidator(parse_master_key)]] = Field(
        min_length=1, repr=False
    )

    @model_validator(mode="after")
    def _check_active(self) -> EncryptionConfig:
        for key_id in self.keys:
            if not _KEY_ID.match(key_id):
                raise ValueError(f"keys: {key_id!r} is not a key id (1-64 letters, digits, _.-)")
        if self.active_key not in self.keys:
            raise ValueError(f"active_key: {self.active_key!r} is not among the keys")
        return self


class ChunkingConfig(_Strict):
    """Blobs of a profile kept as fixed-size chunks, each a blob of its own, optionally shared
    between blobs with the same bytes (gateway.storage.chunked)."""

    # Memory holds a few chunks per write in progress.
    chunk_size: Size = Field(default=8 * 1024**2, ge=64 * 1024, le=512 * 1024**2)
    # An identical chunk is stored once, found by a keyed hash of its bytes.
    dedup: bool = False


class LocalProfile(_Strict):
    type: Literal["local"] = "local"
    # Relative paths are resolved against the data directory.
    path: Path = Path("blobs")
    encryption: EncryptionConfig | None = None
    chunking: ChunkingConfig | None = None


# An upstream key prefix names its gateway bucket with this placeholder.
BUCKET_PLACEHOLDER = "{bucket}"


class UpstreamProfile(_Strict):
    """Object bytes in a bucket of an S3 service (AWS, MinIO, Ceph, Garage, ...).

    Keys map 1:1: object KEY of gateway bucket B is ``prefix`` (with ``{bucket}`` replaced by
    B) followed by KEY, so other tools can still use the upstream bucket directly.
    """

    type: Literal["upstream"]
    # Unset: AWS's own endpoint for the region.
    endpoint_url: str | None = None
    region: str = "us-east-1"
    bucket: str = Field(min_length=3, max_length=63)
    prefix: str = BUCKET_PLACEHOLDER + "/"
    # Where rendered variants are kept (generated names). A client key that would map under
    # it is refused, so the two can never collide.
    variants_prefix: str = Field(default="_gateway/variants/", min_length=1)
    addressing_style: Literal["auto", "path", "virtual"] = "auto"
    # Unset: the usual AWS chain (AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY, AWS_PROFILE,
    # instance roles). Set them as ${VAR} references to keep them out of the file.
    access_key: str | None = Field(default=None, repr=False)
    secret_key: str | None = Field(default=None, repr=False)
    connect_timeout_seconds: float = Field(default=5, gt=0)
    # The longest the upstream may stay silent within one call.
    read_timeout_seconds: float = Field(default=30, gt=0)
    # Attempts of an idempotent call (the first one included) when the upstream cannot be
    # reached, times out or answers 5xx/SlowDown; waits grow from retry_base_seconds.
    max_attempts: int = Field(default=4, ge=1, le=20)
    retry_base_seconds: float = Field(default=0.2, gt=0)
    # The one attempt a call made with an object's key locked in Postgres gets (the HEAD that
    # confirms a write, adoption, DeleteObject): a slow upstream holds a database connection
    # no longer than this.
    locked_call_timeout_seconds: float = Field(default=5, gt=0)
    # Bodies up to this size are sent in one PutObject once verified; larger ones as an
    # upstream multipart upload in parts of this size (S3's minimum is 5MiB).
    part_size: Size = Field(default=8 * 1024**2, ge=5 * 1024**2, le=5 * 1024**3)
    # Parts of one upload sent at once; memory holds one part more per upload.
    parts_in_flight: int = Field(default=3, ge=1, le=16)
    # Connections to the upstream this gateway process may keep open.
    max_connections: int = Field(default=64, ge=1)
    # Set: objects are stored encrypted under generated keys (under variants_prefix), no
    # longer 1:1; objects already there in plaintext stay readable and adoptable.
    encryption: EncryptionConfig | None = None
    chunking: ChunkingConfig | None = None

    @field_validator("access_key", "secret_key", "endpoint_url")
    @classmethod
    def _empty_is_unset(cls, value: str | None) -> str | None:
        # "${VAR:-}" yields "": the same as leaving the setting out.
        return value or None

    @model_validator(mode="after")
    def _check_keys(self) -> UpstreamProfile:
        if (self.access_key is None) != (self.secret_key is None):
            raise ValueError("set both access_key and secret_key, or neither")
        if self.prefix.count(BUCKET_PLACEHOLDER) > 1 or (
            "{" in self.prefix.replace(BUCKET_PLACEHOLDER, "")
        ):
            raise ValueError(f"prefix: only one {BUCKET_PLACEHOLDER} placeholder is allowed")
        if BUCKET_PLACEHOLDER in self.prefix and f"{BUCKET_PLACEHOLDER}/" not in self.prefix:
            # Else bucket "logs" key "-old/x" and bucket "logs-old" key "/x" would meet.
            raise ValueError(f"prefix: {BUCKET_PLACEHOLDER} must be followed by '/'")
        if self.prefix.startswith("/") or self.variants_prefix.startswith("/"):
            raise ValueError("prefix and variants_prefix are keys: they cannot start with '/'")
        return self

    @property
    def shared_prefix(self) -> bool:
        """Whether every bucket of this profile would map to the same keys."""
        return BUCKET_PLACEHOLDER not in self.prefix

    def key_prefix(self, bucket: str) -> str:
        return self.prefix.replace(BUCKET_PLACEHOLDER, bucket)


def _profile_type(value: Any) -> str:
    if isinstance(value, dict):
        return str(value.get("type", "local"))
    return str(getattr(value, "type", "local"))


# A profile without a type is a local one.
StorageProfile = Annotated[
    Annotated[LocalProfile, Tag("local")] | Annotated[UpstreamProfile, Tag("upstream")],
    Discriminator(_profile_type),
]


def _default_profiles() -> dict[str, StorageProfile]:
    return {DEFAULT_PROFILE: LocalProfile()}


# Every variant preset, in a bucket's ``variants`` list.
ALL_VARIANTS = "*"
# The built-in preset describing a source (gateway.variants.info): a bucket allows it by name
# or with ALL_VARIANTS, and no preset of the configuration may take its name.
INFO_VARIANT = "info"


class CorsRuleConfig(_Strict):
    """One CORS rule, as PutBucketCors's CORSRule: ``*`` may stand once in an origin or a
    header name, for any run of characters."""

    allowed_origins: list[str] = Field(min_length=1)
    allowed_methods: list[str] = Field(min_length=1)
    allowed_headers: list[str] = Field(default_factory=list)
    expose_headers: list[str] = Field(default_factory=list)
    max_age_seconds: int | None = Field(default=None, ge=0)

    def rule(self) -> CorsRule:
        return CorsRule(
            allowed_origins=tuple(self.allowed_origins),
            allowed_methods=tuple(method.upper() for method in self.allowed_methods),
            allowed_headers=tuple(self.allowed_headers),
            expose_headers=tuple(self.expose_headers),
            max_age_seconds=self.max_age_seconds,
        )


class WebsiteConfig(_Strict):
    index_document: str = "index.html"
    error_document: str | None = None

    @model_validator(mode="after")
    def _valid(self) -> WebsiteConfig:
        try:
            website.validate(self.configuration())
        except S3Error as exc:
            raise ValueError(exc.message) from None
        return self

    def configuration(self) -> WebsiteConfiguration:
        return WebsiteConfiguration(self.index_document, self.error_document)


class LifecycleRuleConfig(_Strict):
    """One lifecycle rule, as PutBucketLifecycleConfiguration's Rule: what it covers (every
    condition must hold) and what it does, in whole days (see gateway.s3.lifecycle)."""

    id: str | None = None
    enabled: bool = True
    prefix: str = ""
    tags: dict[str, str] = Field(default_factory=dict)
    object_size_greater_than: Size | None = None
    object_size_less_than: Size | None = None
    # Current versions: deleted (on a versioned bucket, hidden by a delete marker) this many
    # days after they were written, or from this day on (midnight UTC).
    expiration_days: int | None = None
    expiration_date: date | None = None
    # A delete marker left with no version behind it is removed.
    expired_object_delete_marker: bool | None = None
    # Non-current versions: deleted this many days after they became non-current, keeping
    # the newer_noncurrent_versions newest of each key.
    noncurrent_days: int | None = None
    newer_noncurrent_versions: int | None = None
    # Multipart uploads still in progress this many days after they were started: aborted.
    abort_incomplete_upload_days: int | None = None

    def rule(self, index: int) -> LifecycleRule:
        """The rule; ``index`` (its place in the list) names one the file gives no id."""
        conditions = bool(self.prefix) + len(self.tags)
        conditions += (self.object_size_greater_than is not None) + (
            self.object_size_less_than is not None
        )
        return LifecycleRule(
            id=self.id if self.id is not None else f"rule-{index + 1}",
            enabled=self.enabled,
            filter=LifecycleFilter(
                prefix=self.prefix,
                tags=tuple(self.tags.items()),
                size_greater_than=self.object_size_greater_than,
                size_less_than=self.object_size_less_than,
                form="and" if conditions > 1 else "filter",
            ),
            expiration_days=self.expiration_days,
            expiration_date=None
            if self.expiration_date is None
            else datetime.combine(self.expiration_date, time(), UTC),
            expired_object_delete_marker=self.expired_object_delete_marker,
            noncurrent_days=self.noncurrent_days,
            newer_noncurrent_versions=self.newer_noncurrent_versions,
            abort_incomplete_upload_days=self.abort_incomplete_upload_days,
        )


class QuotaConfig(_Strict):
    # Bytes of objects and of multipart parts in progress, e.g. 50GiB.
    max_bytes: Size | None = None
    max_objects: int | None = Field(default=None, ge=0)


class BucketConfig(_Strict):
    profile: str = DEFAULT_PROFILE
    # true: anyone may list the bucket and read its objects and variants; "objects": anyone may
    # read objects and variants, but not list them (what most static sites want).
    public_read: bool | Literal["objects"] = False
    # Names of the presets GET ?variant= may use on this bucket ("*": all); none by default,
    # so a bucket of backups never spends CPU on renders.
    variants: list[str] = Field(default_factory=list)
    # CORS rules; set here, they are the bucket's only ones (PutBucketCors is refused).
    cors: list[CorsRuleConfig] | None = None
    # Index and error documents on website hosts; set here, PutBucketWebsite is refused.
    website: WebsiteConfig | None = None
    # Writes that would pass a limit are refused (403 QuotaExceeded); set here, the file owns
    # the bucket's quota (`gateway buckets set-quota` is refused).
    quota: QuotaConfig | None = None
    # enabled: every write keeps the version it replaces; suspended: writes replace the "null"
    # version. Set here, the file owns the state (PutBucketVersioning is refused); unset, the
    # bucket keeps whatever state it has.
    versioning: Literal["enabled", "suspended"] | None = None
    # Lifecycle rules; set here, they are the bucket's only ones (PutBucketLifecycle-
    # Configuration is refused). The janitor applies them.
    lifecycle: list[LifecycleRuleConfig] | None = None

    @field_validator("lifecycle")
    @classmethod
    def _valid_lifecycle(
        cls, value: list[LifecycleRuleConfig] | None
    ) -> list[LifecycleRuleConfig] | None:
        if value is not None:
            try:
                lifecycle.validate([rule.rule(index) for index, rule in enumerate(value)])
            except S3Error as exc:
                raise ValueError(exc.message) from None
        return value

    @functools.cached_property
    def lifecycle_rules(self) -> tuple[LifecycleRule, ...] | None:
        """The YAML's rules; None: the file sets none."""
        if self.lifecycle is None:
            return None
        return tuple(rule.rule(index) for index, rule in enumerate(self.lifecycle))

    @field_validator("versioning", mode="before")
    @classmethod
    def _versioning(cls, value: object) -> object:
        return value.strip().lower() if isinstance(value, str) else value

    @field_validator("public_read", mode="before")
    @classmethod
    def _public_read(cls, value: object) -> bool | str:
        # One clear message instead of one per member of the union.
        if isinstance(value, str) and value.strip().lower() == "objects":
            return "objects"
        try:
            return TypeAdapter(bool).validate_python(value)
        except ValidationError:
            raise ValueError("must be true, false or objects") from None

    @field_validator("cors")
    @classmethod
    def _valid_cors(cls, value: list[CorsRuleConfig] | None) -> list[CorsRuleConfig] | None:
        if value is not None:
            try:
                cors.validate([rule.rule() for rule in value])
            except S3Error as exc:
                raise ValueError(exc.message) from None
        return value

    @property
    def public_listing(self) -> bool:
        """Whether anyone may list the bucket (and so read all of it)."""
        return self.public_read is True

    @functools.cached_property
    def cors_configuration(self) -> CorsConfiguration | None:
        """The YAML's rules, compiled once."""
        return None if self.cors is None else CorsConfiguration([rule.rule() for rule in self.cors])


Grant = Literal["read", "write", "read-write"]


class CredentialConfig(_Strict):
    access_key: str = Field(min_length=3, max_length=128)
    secret_key: str = Field(min_length=8, repr=False)
    # Bucket name (or "*") -> grant. Root credentials may do anything, including CreateBucket.
    buckets: dict[str, Grant] = Field(default_factory=dict)
    root: bool = False

    def can_read(self, bucket: str) -> bool:
        return self.root or self._grant(bucket) in ("read", "read-write")

    def can_write(self, bucket: str) -> bool:
        return self.root or self._grant(bucket) in ("write", "read-write")

    def _grant(self, bucket: str) -> str | None:
        return self.buckets.get(bucket, self.buckets.get("*"))


def parse_grant(text: str) -> tuple[str, Grant]:
    """``BUCKET=read|write|read-write`` (``*=...``: every bucket), as a credential's
    ``buckets`` entry in the YAML; ValueError says what is wrong."""
    bucket, sep, grant = text.partition("=")
    bucket, grant = bucket.strip(), grant.strip()
    if not sep or not bucket:
        raise ValueError(f"{text!r}: expected BUCKET=read|write|read-write")
    if bucket != "*":
        try:
            names.validate_bucket_name(bucket)
        except S3Error:
            raise ValueError(f"{bucket!r} is not a valid bucket name (or *)") from None
    try:
        return bucket, TypeAdapter(Grant).validate_python(grant)
    except ValidationError:
        raise ValueError(f"{text!r}: the grant must be read, write or read-write") from None


class AccessKeysConfig(_Strict):
    """Access keys made with `gateway keys create`, kept in the database beside the YAML's
    credentials (gateway.meta.access_keys)."""

    # Seals the keys' secrets in the database (AES-256-GCM); 32 bytes as 64 hex digits or
    # base64. Unset: a key generated once and kept in the database itself.
    encryption_key: Annotated[bytes, BeforeValidator(parse_master_key)] | None = Field(
        default=None, repr=False
    )
    # How stale a gateway's copy of the keys may be when it cannot hear the database's
    # notifications of changes: it reloads them this often, and refuses to use a copy more
    # than three times older (503) rather than honour a key revoked meanwhile.
    cache_seconds: float = Field(default=5, gt=0, le=300)

    @field_validator("encryption_key", mode="before")
    @classmethod
    def _empty_is_unset(cls, value: object) -> object:
        # "${VAR:-}" yields "": the same as leaving the setting out.
        return value or None


class LimitsConfig(_Strict):
    max_object_size: Size = 5 * 1024**3
    max_xml_body: Size = 1024**2
    max_metadata_size: Size = 2048
    # Objects of a local profile this small keep their bytes in their metadata row: the write
    # is one transaction, durable by Postgres's fsync, with no blob file to write and sync.
    # Bounded so such a body is always small enough to hold in memory; 0 turns it off.
    inline_max_size: Annotated[Size, Field(le=256 * 1024)] = 8 * 1024
    clock_skew_seconds: int = Field(default=900, ge=1)
    # An upload whose client sends nothing for this long fails with RequestTimeout.
    body_idle_timeout_seconds: float = Field(default=60, gt=0)
    # A request's line and headers must arrive within this (from the connection's start, or
    # from a kept-alive request's first byte): a client trickling header bytes cannot hold a
    # connection, and it has not yet been authenticated.
    header_timeout_seconds: float = Field(default=15, gt=0)
    # A kept-alive connection with no request is closed after this. Longer than the idle
    # timeout of the usual load balancers (60 s), so they close first and never reuse a
    # connection the gateway is closing.
    keepalive_timeout_seconds: float = Field(default=75, gt=0)
    # A client that accepts no byte of a response for this long loses the connection (and
    # the request's handler ends), so it cannot hold either by not reading.
    send_idle_timeout_seconds: float = Field(default=60, gt=0)
    # Open client connections per gateway process (each --workers process has its own).
    # At the limit a new connection closes the oldest one that is waiting for a request, or,
    # when every one carries a request in progress, is answered 503 SlowDown and closed.
    # Lowered at start to what the open-files limit (ulimit -n) allows.
    max_connections: int = Field(default=4096, ge=1)
    # Blobs listed in the garbage log are deleted only after this, so a reader still
    # streaming an overwritten object keeps its bytes.
    garbage_grace_seconds: int = Field(default=3600, ge=0)
    janitor_interval_seconds: int = Field(default=300, ge=1)
    # Lifecycle rules are applied by one janitor among all processes and nodes at most this
    # often (rules count whole days: an hour is soon enough).
    lifecycle_interval_seconds: int = Field(default=3600, ge=1)
    # The janitor aborts multipart uploads left unfinished this long after they were started.
    abandoned_upload_seconds: int = Field(default=7 * 86400, ge=1)
    # Image variants. A source larger than either limit is refused before it is decoded
    # (decompression bombs declare huge dimensions in a few bytes).
    max_source_bytes: Size = 64 * 1024**2
    max_source_pixels: int = Field(default=100_000_000, ge=1)
    # Render worker processes of each gateway process; unset: one per core.
    render_workers: int | None = Field(default=None, ge=1)
    # Renders that may wait for a worker; beyond that a variant GET is answered 503 SlowDown.
    render_queue: int = Field(default=32, ge=0)
    # The longest one render may run, and may wait for a worker.
    render_timeout_seconds: float = Field(default=30, gt=0)
    # A worker process is replaced after this many renders (bounds leaks and fragmentation).
    render_tasks_per_worker: int = Field(default=200, ge=1)
    # The most memory (data) one render worker may use; a render that needs more fails with
    # ImageTooLarge. Unset: 256 MiB plus 6 bytes per pixel of max_source_pixels. At least
    # 384 MiB (the interpreter, codecs and a source take some 256 MiB).
    render_memory_bytes: Annotated[Size, Field(ge=384 * 1024**2)] | None = None
    # A render's claim on its variant is a lease of this long, renewed while the render runs:
    # a gateway that dies mid-render holds the variant up for at most this long.
    render_lease_seconds: float = Field(default=10, ge=1)
    # A failed render is retried only after a back-off: this, doubled on each failure, capped.
    # The janitor deletes a failure's record once its back-off ended this long ago.
    render_retry_seconds: float = Field(default=60, gt=0)
    render_retry_max_seconds: float = Field(default=86400, gt=0)
    # Derivatives of presets since edited or removed are deleted once no running gateway has
    # made their variant key for this long. Longer than janitor_interval_seconds: a gateway
    # still on the old presets (a rolling reload) keeps its keys by saying so at every pass.
    stale_variant_seconds: int = Field(default=86400, ge=1)
    # Video posters (presets with ``frame``). A video is not read into memory: ffmpeg reads
    # a local blob in place, or a temporary file the source is streamed into, up to this.
    video_source_max_bytes: Size = 1024**3
    # A frame position past this (``at: 90%`` of a file claiming hours) is taken here.
    video_max_seek_seconds: float = Field(default=300, gt=0)
    # What ffmpeg may read to find a video's streams (its -probesize and -analyzeduration):
    # a hostile container cannot make it read the whole file before the first frame.
    video_probe_bytes: Annotated[Size, Field(ge=32 * 1024)] = 5 * 1024**2
    video_probe_seconds: float = Field(default=5, gt=0)
    # The most memory (data) one ffmpeg process may use; a video that needs more fails with
    # ImageTooLarge.
    video_memory_bytes: Annotated[Size, Field(ge=64 * 1024**2)] = 1024**3

    @model_validator(mode="after")
    def _stale_after_a_pass(self) -> LimitsConfig:
        if self.stale_variant_seconds <= self.janitor_interval_seconds:
            raise ValueError(
                "stale_variant_seconds must be longer than janitor_interval_seconds: every"
                " gateway's janitor renews the keys its presets make once per interval"
            )
        return self


def _parse_networks(value: object) -> object:
    if not isinstance(value, list):
        return value
    try:
        return [ipaddress.ip_network(str(item), strict=False) for item in value]
    except ValueError as exc:
        raise ValueError(f"not a network: {exc}") from None


# CIDRs ("10.0.0.0/8", "::1"); a bare address is a network of one.
Networks = Annotated[
    list[ipaddress.IPv4Network | ipaddress.IPv6Network], BeforeValidator(_parse_networks)
]


def in_networks(
    address: str | None, networks: list[ipaddress.IPv4Network | ipaddress.IPv6Network]
) -> bool:
    if not address:
        return False
    try:
        ip = ipaddress.ip_address(address.split("%", 1)[0])
    except ValueError:
        return False
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return any(ip in network for network in networks)


class LogConfig(_Strict):
    # GATEWAY_LOG_LEVEL and --log-level win over this.
    level: str = "INFO"
    # json: one JSON object per line (access lines and every other record); text: readable.
    format: Literal["json", "text"] = "json"

    @field_validator("level")
    @classmethod
    def _check_level(cls, value: str) -> str:
        if not isinstance(logging.getLevelName(value.upper()), int):
            raise ValueError(f"unknown log level {value!r} (DEBUG, INFO, WARNING, ERROR)")
        return value.upper()


class MetricsConfig(_Strict):
    # GET /_gateway/metrics (Prometheus). Open to loopback only unless a token or networks are
    # configured; with both, either admits a scrape.
    enabled: bool = True
    token: str | None = None
    allow_networks: Networks = Field(default_factory=list)

    @field_validator("token")
    @classmethod
    def _empty_is_unset(cls, value: str | None) -> str | None:
        return value or None


Fit = Literal["cover", "contain", "inside", "fill"]
VariantFormat = Literal["jpeg", "png", "webp", "avif", "auto"]
# Output sides are capped: WebP cannot hold more than 16383 pixels, and a preset is a thumbnail
# or a preview, not a way to enlarge images without bound.
MAX_VARIANT_SIDE = 8192
_PRESET_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
_COLOR = re.compile(r"^#[0-9A-Fa-f]{6}$")
# Pixel densities a preset may offer (?variant=NAME@2x): a phone's screen is at most 4x.
MAX_DENSITY = 4


class QualityConfig(_Strict):
    """Encoder quality by format: one number means different things to each encoder (JPEG 82,
    WebP 75 and AVIF 50 look alike). PNG is lossless: it has none."""

    jpeg: int = Field(default=80, ge=1, le=100)
    webp: int = Field(default=80, ge=1, le=100)
    avif: int = Field(default=80, ge=1, le=100)


def _parse_quality(value: object) -> object:
    """A number is the quality of every format; a mapping names formats."""
    if isinstance(value, bool) or not isinstance(value, int | dict | QualityConfig):
        raise ValueError("expected a number 1-100 or a map of jpeg/webp/avif to numbers")
    if isinstance(value, int):
        if not 1 <= value <= 100:
            raise ValueError(f"expected 1-100, got {value}")
        return {"jpeg": value, "webp": value, "avif": value}
    return value


Quality = Annotated[QualityConfig, BeforeValidator(_parse_quality)]


# A frame position: seconds ("1s", "2.5s", or a bare number) or a share of the duration ("10%").
_FRAME_AT = re.compile(r"(\d+(?:\.\d+)?)(s|%)")


class FrameConfig(_Strict):
    """Which still of a video a preset renders; see gateway.variants.video."""

    # Unset: the first frame that is not black, within the first seconds.
    at: str | None = None

    @field_validator("at", mode="before")
    @classmethod
    def _check_at(cls, value: object) -> object:
        if isinstance(value, bool) or value is None:
            return value
        if isinstance(value, int | float):
            value = f"{value}s"
        if not isinstance(value, str):
            return value
        match = _FRAME_AT.fullmatch(value.strip())
        if match is None:
            raise ValueError(f"expected seconds (1s, 2.5s) or a percentage (10%), got {value!r}")
        if match.group(2) == "%" and float(match.group(1)) > 100:
            raise ValueError(f"a percentage is at most 100%, got {value!r}")
        return value.strip()

    @property
    def seconds(self) -> float | None:
        return float(self.at[:-1]) if self.at and self.at.endswith("s") else None

    @property
    def percent(self) -> float | None:
        return float(self.at[:-1]) if self.at and self.at.endswith("%") else None


class VideoConfig(_Strict):
    """The programs posters are made with (Debian's ``ffmpeg`` package has both)."""

    ffmpeg: str = "ffmpeg"
    ffprobe: str = "ffprobe"


class VariantPresetConfig(_Strict):
    """A named image variant (``?variant=NAME``); see gateway.variants.presets."""

    width: int | None = Field(default=None, ge=1, le=MAX_VARIANT_SIDE)
    height: int | None = Field(default=None, ge=1, le=MAX_VARIANT_SIDE)
    # cover: fill the box, cropping the overflow; contain: fit in the box, padded to it;
    # inside: fit in the box, never enlarged; fill: stretched to the box.
    fit: Fit = "inside"
    # fit cover only: which part of the image the crop keeps. centre; a side or corner
    # (north, south_east, ...); entropy: the most detailed region; attention: the most salient
    # (edges, skin tones, saturated colour). An object's x-amz-meta-focus: x,y (fractions of
    # its width and height) wins over any of them.
    gravity: Gravity = "centre"
    # auto: AVIF, WebP or JPEG (PNG for transparent images) by the request's Accept header.
    format: VariantFormat = "auto"
    quality: Quality = QualityConfig()
    # False: the source's EXIF (less its orientation, which is applied) and XMP are written
    # into the variant. The ICC profile is always kept.
    strip_metadata: bool = True
    # JPEG output as progressive scans (shown coarse first while it loads).
    progressive: bool = True
    # libavif's encoder speed, 0 (slowest, smallest files) to 10.
    avif_speed: int = Field(default=8, ge=0, le=10)
    # An animated source (GIF, WebP, APNG): its first frame, or every frame (animated WebP,
    # or GIF for clients that take neither WebP nor AVIF).
    animation: Literal["first_frame", "keep"] = "first_frame"
    # An animation with more frames than this is rendered from its first frame.
    max_frames: int = Field(default=200, ge=2, le=10_000)
    # ?variant=NAME@2x multiplies the box by 2; 1 is always offered (NAME, or NAME@1x).
    densities: list[Annotated[int, Field(ge=1, le=MAX_DENSITY)]] = Field(
        default_factory=lambda: [1]
    )
    # Whether a density above 1 may enlarge the source beyond its own pixels.
    upscale: bool = False
    # "#rrggbb" behind transparent pixels in a JPEG, and around a contained image.
    background: str | None = None
    # Cache-Control of the variant; unset: the source object's own.
    cache_control: str | None = None
    # A GET finding no variant yet waits for the render, or gets the original meanwhile.
    on_miss: Literal["wait", "original"] = "wait"
    # Rendered when an object is written, not on its first GET.
    eager: bool = False
    # A poster: a still of a video source (an image source is rendered as usual).
    frame: FrameConfig | None = None

    @field_validator("gravity", mode="before")
    @classmethod
    def _american_centre(cls, value: object) -> object:
        return "centre" if value == "center" else value

    @field_validator("background")
    @classmethod
    def _check_background(cls, value: str | None) -> str | None:
        if value is not None and not _COLOR.match(value):
            raise ValueError(f"expected a colour as #rrggbb, got {value!r}")
        return value

    @model_validator(mode="after")
    def _check_geometry(self) -> VariantPresetConfig:
        if self.fit == "inside":
            if self.width is None and self.height is None:
                raise ValueError("fit inside needs a width, a height or both")
        elif self.width is None or self.height is None:
            raise ValueError(f"fit {self.fit} needs both a width and a height")
        if self.gravity != "centre" and self.fit != "cover":
            raise ValueError(f"gravity {self.gravity} applies to fit cover only, not {self.fit}")
        if len(set(self.densities)) != len(self.densities):
            raise ValueError(f"densities: {self.densities} lists a density twice")
        for density in self.densities:
            for side, value in (("width", self.width), ("height", self.height)):
                if value is not None and value * density > MAX_VARIANT_SIDE:
                    raise ValueError(
                        f"densities: {side} {value} x {density} is more than"
                        f" {MAX_VARIANT_SIDE} pixels"
                    )
        if self.format == "avif":
            from PIL import features  # only when a preset asks for AVIF

            if not features.check("avif"):
                raise ValueError("format avif: this Pillow was built without AVIF support")
        return self


class GatewayConfig(_Strict):
    listen: str = DEFAULT_LISTEN
    # A client's own encryption key (SSE-C) travels in request headers: refused over plain HTTP
    # unless this is set (e.g. behind a proxy that terminates TLS on the same host).
    allow_sse_c_over_http: bool = False
    region: str = "us-east-1"
    base_domains: list[str] = Field(default_factory=list)
    # Website hosts: <bucket>.<website domain> serves the bucket as a static site (index and
    # error documents, HTML errors, anonymous reads of public content), like S3's website
    # endpoints; the S3 API keeps its own semantics on the other hosts.
    website_domains: list[str] = Field(default_factory=list)
    data_dir: Path = Path("data")
    database: DatabaseConfig = DatabaseConfig()
    tls: TLSConfig | None = None
    storage_profiles: dict[str, StorageProfile] = Field(default_factory=_default_profiles)
    default_profile: str = DEFAULT_PROFILE
    buckets: dict[str, BucketConfig] = Field(default_factory=dict)
    credentials: list[CredentialConfig] = Field(default_factory=list)
    access_keys: AccessKeysConfig = AccessKeysConfig()
    limits: LimitsConfig = LimitsConfig()
    # Image variant presets by name: GET /bucket/key?variant=NAME.
    variants: dict[str, VariantPresetConfig] = Field(default_factory=dict)
    # The presets of buckets the configuration does not declare (made by CreateBucket); a
    # declared bucket has its own ``variants`` list. None by default, as for declared buckets.
    default_bucket_variants: list[str] = Field(default_factory=list)
    video: VideoConfig = VideoConfig()
    log: LogConfig = LogConfig()
    metrics: MetricsConfig = MetricsConfig()
    # Proxies whose X-Forwarded-For names the client (its address in the access log); from any
    # other peer the header is ignored, since anyone can send it.
    trusted_proxies: Networks = Field(default_factory=list)

    @field_validator("listen")
    @classmethod
    def _check_listen(cls, value: str) -> str:
        split_listen(value)
        return value

    @field_validator("base_domains", "website_domains")
    @classmethod
    def _lower_domains(cls, value: list[str]) -> list[str]:
        return [domain.lower().strip(".") for domain in value]

    @field_validator("variants")
    @classmethod
    def _check_preset_names(
        cls, value: dict[str, VariantPresetConfig]
    ) -> dict[str, VariantPresetConfig]:
        for name in value:
            if not _PRESET_NAME.match(name):
                raise ValueError(
                    f"{name!r}: a preset name is 1-64 letters, digits, '_', '.' or '-'"
                )
            if name == INFO_VARIANT:
                raise ValueError(f"{name!r} is the built-in source info; name the preset otherwise")
        return value

    @model_validator(mode="after")
    def _check_references(self) -> GatewayConfig:
        self._resolve_references()
        return self

    def _resolve_references(self) -> None:
        """Fill in each bucket's default profile, and check what names what. Raises
        ValueError."""
        for name, bucket in self.buckets.items():
            # A bucket that names no profile follows default_profile, not the literal "default".
            if "profile" not in bucket.model_fields_set:
                self.buckets[name] = bucket.model_copy(update={"profile": self.default_profile})
        if self.default_profile not in self.storage_profiles:
            raise ValueError(f"default_profile: unknown storage profile {self.default_profile!r}")
        for name, bucket in self.buckets.items():
            if bucket.profile not in self.storage_profiles:
                raise ValueError(
                    f"buckets.{name}.profile: unknown storage profile {bucket.profile!r}"
                )
            self._check_preset_list(f"buckets.{name}.variants", bucket.variants)
        self._check_preset_list("default_bucket_variants", self.default_bucket_variants)
        for name in self.buckets:
            try:
                names.validate_bucket_name(name)
            except S3Error:
                raise ValueError(
                    f"buckets.{name}: not a valid bucket name (3-63 lowercase letters, digits,"
                    " '.' and '-', starting and ending with a letter or digit)"
                ) from None
        self._check_shared_prefixes()
        seen: set[str] = set()
        for index, credential in enumerate(self.credentials):
            if credential.access_key in seen:
                raise ValueError(
                    f"credentials.{index}.access_key: duplicate {credential.access_key!r}"
                )
            seen.add(credential.access_key)

    def _check_shared_prefixes(self) -> None:
        """A prefix without {bucket} can hold one bucket: two would see each other's keys."""
        for name, profile in self.storage_profiles.items():
            if not isinstance(profile, UpstreamProfile) or not profile.shared_prefix:
                continue
            if name == self.default_profile:
                raise ValueError(
                    f"default_profile: profile {name!r} maps every bucket to prefix"
                    f" {profile.prefix!r}, so buckets made by CreateBucket would share it;"
                    f" add {BUCKET_PLACEHOLDER} to its prefix or choose another default"
                )
            users = [bucket for bucket, config in self.buckets.items() if config.profile == name]
            if len(users) > 1:
                raise ValueError(
                    f"storage_profiles.{name}.prefix: {profile.prefix!r} has no"
                    f" {BUCKET_PLACEHOLDER}, yet buckets {', '.join(users)} use it"
                )

    def _check_preset_list(self, path: str, names: list[str]) -> None:
        for index, preset in enumerate(names):
            if preset not in (ALL_VARIANTS, INFO_VARIANT) and preset not in self.variants:
                raise ValueError(f"{path}.{index}: unknown variant preset {preset!r}")

    def with_settings(self, settings: Mapping[str, object]) -> GatewayConfig:
        """This configuration with ``settings`` replaced, its cross-references checked again.
        Raises ConfigError."""
        config = self.model_copy(update=dict(settings))
        try:
            config._resolve_references()
        except ValueError as exc:
            raise ConfigError(str(exc)) from None
        return config

    @property
    def host_port(self) -> tuple[str, int]:
        return split_listen(self.listen)

    def blob_root(self, profile: str) -> Path:
        location = self.storage_profiles[profile]
        assert isinstance(location, LocalProfile)
        return self.data_dir / location.path


def split_listen(value: str) -> tuple[str, int]:
    host, sep, port = value.rpartition(":")
    if not sep or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"expected host:port, got {value!r}")
    return host.strip("[]") or "127.0.0.1", int(port)


_ENV_REF = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")


def interpolate(node: Any, path: str = "", environ: Mapping[str, str] | None = None) -> Any:
    """Replace ``${VAR}`` / ``${VAR:-default}`` in every string of a parsed YAML tree."""
    environ = os.environ if environ is None else environ
    if isinstance(node, dict):
        return {
            key: interpolate(value, f"{path}.{key}" if path else str(key), environ)
            for key, value in node.items()
        }
    if isinstance(node, list):
        return [interpolate(value, f"{path}.{index}", environ) for index, value in enumerate(node)]
    if not isinstance(node, str):
        return node

    def substitute(match: re.Match[str]) -> str:
        name, default = match.group(1), match.group(2)
        value = environ.get(name)
        if value is None:
            if default is None:
                raise ConfigError(f"{path}: environment variable {name} is not set")
            return default
        return value

    substituted = _ENV_REF.sub(substitute, node)
    if "${" in _ENV_REF.sub("", node):
        raise ConfigError(f"{path}: '${{' begins no ${{VAR}} or ${{VAR:-default}} reference")
    return substituted


def _apply_environment(raw: dict[str, Any], environ: dict[str, str]) -> None:
    if listen := environ.get("GATEWAY_LISTEN"):
        raw["listen"] = listen
    if data_dir := environ.get("GATEWAY_DATA_DIR"):
        raw["data_dir"] = data_dir
    if url := environ.get("GATEWAY_DATABASE_URL"):
        raw.setdefault("database", {})
        if not isinstance(raw["database"], dict):
            raise ConfigError("database: expected a mapping")
        raw["database"]["url"] = url


def _format_error(error: ValidationError) -> str:
    lines = []
    for item in error.errors():
        parts = [str(part) for part in item["loc"]]
        if len(parts) > 2 and parts[0] == "storage_profiles":
            # pydantic names the profile type it tried; the YAML has no such level.
            del parts[2]
        message = item["msg"].removeprefix("Value error, ")
        if item["type"] == "union_tag_invalid":
            parts.append("type")
            message = f"unknown profile type {item['input'].get('type')!r} (local or upstream)"
        location = ".".join(parts)
        lines.append(f"{location}: {message}" if location else message)
    return "; ".join(lines)


class _StrictLoader(yaml.SafeLoader):
    """safe_load, but a key given twice in one mapping is an error (not: the last one wins)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    None, None, f"duplicate key {key!r}", key_node.start_mark
                )
            seen.add(key)
        return super().construct_mapping(node, deep)


def _yaml_error(path: Path, exc: yaml.YAMLError) -> str:
    """One line: file, line and column (1-based), and what is wrong there."""
    mark = getattr(exc, "problem_mark", None)
    problem = getattr(exc, "problem", None) or str(exc)
    where = f"{path}:{mark.line + 1}:{mark.column + 1}" if mark is not None else str(path)
    return f"{where}: invalid YAML: {problem}"


def literal_secrets(path: Path) -> list[str]:
    """Where the file gives a secret (an encryption key, the metrics token) literally instead
    of as a ``${VAR}`` reference (a secret in a file travels with every copy and backup of
    it)."""
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except (OSError, yaml.YAMLError):
        return []
    profiles = raw.get("storage_profiles") if isinstance(raw, dict) else None
    found = []
    for section, name in (("access_keys", "encryption_key"), ("metrics", "token")):
        parent = raw.get(section) if isinstance(raw, dict) else None
        value = parent.get(name) if isinstance(parent, dict) else None
        if value is not None and not (isinstance(value, str) and _ENV_REF.search(value)):
            found.append(f"{section}.{name}")
    for name, profile in (profiles or {}).items() if isinstance(profiles, dict) else ():
        encryption = profile.get("encryption") if isinstance(profile, dict) else None
        keys = encryption.get("keys") if isinstance(encryption, dict) else None
        for key_id, value in (keys or {}).items() if isinstance(keys, dict) else ():
            if not (isinstance(value, str) and _ENV_REF.search(value)):
                found.append(f"storage_profiles.{name}.encryption.keys.{key_id}")
    return found


def load_config(path: Path | None = None, environ: dict[str, str] | None = None) -> GatewayConfig:
    """Load the YAML file (if any), interpolate ``${VARS}``, apply GATEWAY_* overrides, validate."""
    environ = dict(os.environ) if environ is None else environ
    raw: Any = {}
    if path is not None:
        try:
            raw = yaml.load(path.read_text(encoding="utf-8"), _StrictLoader) or {}
        except OSError as exc:
            raise ConfigError(f"{path}: {exc.strerror}") from None
        except yaml.YAMLError as exc:
            raise ConfigError(_yaml_error(path, exc)) from None
        if not isinstance(raw, dict):
            raise ConfigError(f"{path}: the top level must be a mapping")
        # The same environment as the GATEWAY_* overrides, so callers can pass their own.
        raw = interpolate(raw, environ=environ)
    _apply_environment(raw, environ)
    try:
        return GatewayConfig.model_validate(raw)
    except ValidationError as exc:
        raise ConfigError(_format_error(exc)) from None
