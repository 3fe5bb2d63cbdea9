"""Lifecycle rules, the subset of S3's this gateway applies: a filter (prefix, tags, object
size), Expiration (Days, Date, ExpiredObjectDeleteMarker), NoncurrentVersionExpiration
(NoncurrentDays, NewerNoncurrentVersions) and AbortIncompleteMultipartUpload. Transitions
name storage classes this gateway does not have: they are refused as not implemented.

Ages count in whole days as S3 counts them: an object written at any time of day D with
``Days: n`` expires at midnight UTC starting day D + n + 1, so every rule acts on the same
objects all day long whenever a pass runs.
"""

from __future__ import annotations

import json
import secrets
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

from gateway.s3 import errors, tagging
from gateway.s3.tagging import Tags

MAX_RULES = 1000
MAX_ID_LENGTH = 255
# S3 keeps at most 100 newer noncurrent versions per rule.
MAX_NEWER_NONCURRENT_VERSIONS = 100

# How a rule named what it applies to, kept so that GetBucketLifecycleConfiguration answers
# the form that was put: a rule's own <Prefix> (the old form), a <Filter> with at most one
# condition, or a <Filter><And>.
FilterForm = Literal["rule-prefix", "filter", "and"]


@dataclass(frozen=True)
class LifecycleFilter:
    prefix: str = ""
    tags: Tags = ()
    size_greater_than: int | None = None
    size_less_than: int | None = None
    form: FilterForm = "filter"

    def matches(self, key: str, tags: Sequence[Sequence[str]], size: int) -> bool:
        """Whether an object (a version) with that key, tag set and size is subject to the
        rule; every condition must hold."""
        if not key.startswith(self.prefix):
            return False
        if self.size_greater_than is not None and not size > self.size_greater_than:
            return False
        if self.size_less_than is not None and not size < self.size_less_than:
            return False
        held = {(key, value) for key, value in tags}
        return all(tag in held for tag in self.tags)


@dataclass(frozen=True)
class LifecycleRule:
    id: str
    enabled: bool
    filter: LifecycleFilter = field(default_factory=LifecycleFilter)
    expiration_days: int | None = None
    # Midnight UTC of the day from which every object the rule covers has expired.
    expiration_date: datetime | None = None
    expired_object_delete_marker: bool | None = None
    noncurrent_days: int | None = None
    newer_noncurrent_versions: int | None = None
    abort_incomplete_upload_days: int | None = None

    def to_json(self) -> dict[str, Any]:
        value: dict[str, Any] = {
            "id": self.id,
            "enabled": self.enabled,
            "prefix": self.filter.prefix,
            "tags": [list(tag) for tag in self.filter.tags],
            "size_greater_than": self.filter.size_greater_than,
            "size_less_than": self.filter.size_less_than,
            "form": self.filter.form,
            "expiration_days": self.expiration_days,
            "expiration_date": self.expiration_date and self.expiration_date.isoformat(),
            "expired_object_delete_marker": self.expired_object_delete_marker,
            "noncurrent_days": self.noncurrent_days,
            "newer_noncurrent_versions": self.newer_noncurrent_versions,
            "abort_incomplete_upload_days": self.abort_incomplete_upload_days,
        }
        return {name: item for name, item in value.items() if item is not None}

    @classmethod
    def from_json(cls, value: Mapping[str, Any]) -> LifecycleRule:
        date = value.get("expiration_date")
        return cls(
            id=value["id"],
            enabled=value["enabled"],
            filter=LifecycleFilter(
                prefix=value.get("prefix", ""),
                tags=tuple((key, tag_value) for key, tag_value in value.get("tags", ())),
                size_greater_than=value.get("size_greater_than"),
                size_less_than=value.get("size_less_than"),
                form=value.get("form", "filter"),
            ),
            expiration_days=value.get("expiration_days"),
            expiration_date=datetime.fromisoformat(date) if date else None,
            expired_object_delete_marker=value.get("expired_object_delete_marker"),
            noncurrent_days=value.get("noncurrent_days"),
            newer_noncurrent_versions=value.get("newer_noncurrent_versions"),
            abort_incomplete_upload_days=value.get("abort_incomplete_upload_days"),
        )

    @property
    def expires_objects(self) -> bool:
        return self.expiration_days is not None or self.expiration_date is not None

    def expiry_cutoff(self, now: datetime) -> datetime | None:
        """Current versions written before this moment have expired at ``now``; None when
        the rule expires no current version (yet)."""
        if self.expiration_days is not None:
            return days_cutoff(now, self.expiration_days)
        if self.expiration_date is not None and now >= self.expiration_date:
            # Everything the rule covers has expired, whenever it was written.
            return datetime.max.replace(tzinfo=UTC)
        return None


def new_rule_id() -> str:
    """The ID S3 gives a rule put without one: unique and opaque."""
    return secrets.token_hex(24)


def days_cutoff(now: datetime, days: int) -> datetime:
    """What became subject to a ``days`` rule (written, noncurrent, initiated) before this
    moment is past it at ``now``: midnight UTC of today, ``days`` days back."""
    midnight = now.astimezone(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    return midnight - timedelta(days=days)


def parse_rules(value: str) -> tuple[LifecycleRule, ...]:
    """The rules a bucket row keeps (its settings' JSON text)."""
    return tuple(LifecycleRule.from_json(rule) for rule in json.loads(value))


def _positive(value: int | None, name: str, action: str) -> None:
    if value is not None and value <= 0:
        raise errors.InvalidArgument(
            f"'{name}' for {action} action must be a positive integer",
            ArgumentName=name,
            ArgumentValue=str(value),
        )


def validate(rules: Sequence[LifecycleRule]) -> None:
    """Raise what PutBucketLifecycleConfiguration answers for rules S3 refuses."""
    if not rules or len(rules) > MAX_RULES:
        raise errors.MalformedXML()
    seen: set[str] = set()
    for rule in rules:
        if len(rule.id) > MAX_ID_LENGTH:
            raise errors.InvalidArgument(
                f"ID length should not exceed allowed limit of {MAX_ID_LENGTH}",
                ArgumentName="ID",
                ArgumentValue=rule.id,
            )
        if rule.id in seen:
            raise errors.InvalidArgument(
                "Rule ID must be unique. Found same ID for more than one rule",
                ArgumentName="ID",
                ArgumentValue=rule.id,
            )
        seen.add(rule.id)
        _validate_rule(rule)


def _validate_rule(rule: LifecycleRule) -> None:
    tagging.validate(rule.filter.tags)
    for name, size in (
        ("ObjectSizeGreaterThan", rule.filter.size_greater_than),
        ("ObjectSizeLessThan", rule.filter.size_less_than),
    ):
        if size is not None and size < 0:
            raise errors.InvalidArgument(
                f"'{name}' must be a non-negative integer", ArgumentName=name
            )
    low, high = rule.filter.size_greater_than, rule.filter.size_less_than
    if low is not None and high is not None and low >= high:
        raise errors.InvalidArgument(
            "ObjectSizeGreaterThan must be less than ObjectSizeLessThan",
            ArgumentName="ObjectSizeGreaterThan",
        )
    if rule.expiration_days is not None and rule.expiration_date is not None:
        raise errors.MalformedXML()
    if rule.expired_object_delete_marker is not None and rule.expires_objects:
        # S3: ExpiredObjectDeleteMarker cannot be specified with Days or Date.
        raise errors.MalformedXML()
    _positive(rule.expiration_days, "Days", "Expiration")
    if rule.expiration_date is not None and rule.expiration_date != rule.expiration_date.replace(
        hour=0, minute=0, second=0, microsecond=0
    ):
        raise errors.InvalidArgument(
            "'Date' must be at midnight GMT",
            ArgumentName="Date",
            ArgumentValue=rule.expiration_date.isoformat(),
        )
    _positive(rule.noncurrent_days, "NoncurrentDays", "NoncurrentVersionExpiration")
    newer = rule.newer_noncurrent_versions
    if newer is not None and not 0 < newer <= MAX_NEWER_NONCURRENT_VERSIONS:
        raise errors.InvalidArgument(
            "'NewerNoncurrentVersions' for NoncurrentVersionExpiration action must be a"
            f" positive integer up to {MAX_NEWER_NONCURRENT_VERSIONS}",
            ArgumentName="NewerNoncurrentVersions",
            ArgumentValue=str(newer),
        )
    _positive(
        rule.abort_incomplete_upload_days, "DaysAfterInitiation", "AbortIncompleteMultipartUpload"
    )
    has_action = (
        rule.expires_objects
        or rule.expired_object_delete_marker
        or rule.noncurrent_days is not None
        or rule.abort_incomplete_upload_days is not None
    )
    if not has_action:
        raise errors.InvalidRequest("At least one action needs to be specified in a rule")
    if rule.filter.tags and rule.expired_object_delete_marker:
        raise errors.InvalidRequest(
            "ExpiredObjectDeleteMarker cannot be specified with a Tag filter"
        )
    if rule.filter.tags and rule.abort_incomplete_upload_days is not None:
        raise errors.InvalidRequest("AbortIncompleteMultipartUpload cannot be specified with Tags")
