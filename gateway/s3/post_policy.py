"""POST Object (browser uploads): the policy document a form carries, its signature, and
whether a form's fields meet its conditions (S3 API reference, "POST Object"; S3 User Guide,
"Creating a POST policy").

The policy is base64 JSON: an expiration and a list of conditions, each an exact match
(``{"field": "value"}`` or ``["eq", "$field", "value"]``), a prefix (``["starts-with",
"$field", "prefix"]``, where "" allows anything) or the file's size (``["content-length-range",
min, max]``). Every form field but the signature, the policy, the file and ``x-ignore-*`` ones
must be allowed by a condition. Field names compare case-insensitively, values exactly.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from gateway.s3 import errors, sigv4

# The form fields a policy never needs to allow.
_UNCHECKED = frozenset({"policy", "x-amz-signature", "signature", "awsaccesskeyid", "file"})
V4_ALGORITHM = "AWS4-HMAC-SHA256"


@dataclass(frozen=True)
class Condition:
    # "eq", "starts-with" or "content-length-range".
    operator: str
    # The field's name in lower case, without its "$"; "" for content-length-range.
    field: str = ""
    value: str = ""
    low: int = 0
    high: int = 0

    def describe(self) -> str:
        """The condition as S3 quotes it in an AccessDenied message."""
        if self.operator == "content-length-range":
            return f'["content-length-range", {self.low}, {self.high}]'
        return f'["{self.operator}", "${self.field}", "{self.value}"]'


@dataclass(frozen=True)
class PostPolicy:
    expiration: datetime
    conditions: tuple[Condition, ...]

    def size_range(self) -> tuple[int, int] | None:
        """The file's allowed size, from the last content-length-range; None: any."""
        ranges = [c for c in self.conditions if c.operator == "content-length-range"]
        return (ranges[-1].low, ranges[-1].high) if ranges else None


def _invalid(message: str) -> errors.S3Error:
    return errors.InvalidPolicyDocument(f"Invalid Policy: {message}")


def parse_policy(encoded: str) -> PostPolicy:
    """The policy of a form's ``policy`` field; InvalidPolicyDocument when it is not one."""
    try:
        document = json.loads(base64.b64decode(encoded, validate=True))
    except (binascii.Error, ValueError):
        raise _invalid("Invalid JSON.") from None
    if not isinstance(document, dict):
        raise _invalid("Invalid JSON.")
    expiration = document.get("expiration")
    if not isinstance(expiration, str):
        raise _invalid("Policy missing expiration.")
    try:
        expires = datetime.fromisoformat(expiration.replace("Z", "+00:00"))
    except ValueError:
        raise _invalid(f"Invalid 'expiration' value: '{expiration}'") from None
    if expires.tzinfo is None:
        expires = expires.replace(tzinfo=UTC)
    raw_conditions = document.get("conditions")
    if not isinstance(raw_conditions, list):
        raise _invalid("Policy missing conditions.")
    return PostPolicy(expires, tuple(_condition(item) for item in raw_conditions))


def _condition(item: Any) -> Condition:
    if isinstance(item, dict):
        if len(item) != 1:
            raise _invalid(
                "Invalid Simple-Condition: Simple-Conditions must have exactly one property"
                " specified."
            )
        ((name, value),) = item.items()
        if not isinstance(value, str):
            raise _invalid(f"Invalid Simple-Condition: value of {name} must be a string.")
        return Condition("eq", name.lower().lstrip("$"), value)
    if not isinstance(item, list) or not item or not isinstance(item[0], str):
        raise _invalid("Invalid Condition.")
    operator = item[0].lower()
    if operator == "content-length-range":
        if len(item) != 3 or not all(_is_int(bound) for bound in item[1:]):
            raise _invalid("Invalid content-length-range: the bounds must be integers.")
        low, high = int(item[1]), int(item[2])
        if low < 0 or high < low:
            raise _invalid("Invalid content-length-range.")
        return Condition(operator, low=low, high=high)
    if operator not in ("eq", "starts-with"):
        raise _invalid(f"Invalid condition operator: {item[0]}")
    if len(item) != 3 or not all(isinstance(part, str) for part in item[1:]):
        raise _invalid(f"Invalid {operator} condition.")
    if not item[1].startswith("$"):
        raise _invalid(f"Invalid {operator} condition: the field name must start with $.")
    return Condition(operator, item[1][1:].lower(), item[2])


def _is_int(value: Any) -> bool:
    if isinstance(value, bool):
        return False
    if isinstance(value, int):
        return True
    return isinstance(value, str) and value.isascii() and value.isdigit()


def check_fields(policy: PostPolicy, fields: Mapping[str, str], bucket: str, now: datetime) -> None:
    """Raise AccessDenied, as S3 words it, unless the form's ``fields`` (lower-case names,
    the file excluded) meet ``policy`` for ``bucket`` at ``now``."""
    if now >= policy.expiration:
        raise errors.AccessDenied("Invalid according to Policy: Policy expired.")
    values = {**fields, "bucket": bucket}
    allowed = {"bucket"}
    for condition in policy.conditions:
        if condition.operator == "content-length-range":
            continue
        allowed.add(condition.field)
        value = values.get(condition.field, "")
        if condition.operator == "eq":
            met = value == condition.value
        else:
            met = value.startswith(condition.value)
        if not met:
            raise errors.AccessDenied(
                f"Invalid according to Policy: Policy Condition failed: {condition.describe()}"
            )
    extra = [
        name
        for name in fields
        if name not in allowed and name not in _UNCHECKED and not name.startswith("x-ignore-")
    ]
    if extra:
        raise errors.AccessDenied(
            f"Invalid according to Policy: Extra input fields: {', '.join(sorted(extra))}"
        )


def signature_v4(encoded_policy: str, secret_key: str, date: str, region: str) -> str:
    """What ``x-amz-signature`` must be: the policy signed with the credential's key for
    ``date`` (YYYYMMDD) and ``region``."""
    key = sigv4.signing_key(secret_key, date, region, "s3")
    return hmac.new(key, encoded_policy.encode(), hashlib.sha256).hexdigest()


def signature_v2(encoded_policy: str, secret_key: str) -> str:
    """What ``signature`` must be in a SigV2 form (boto3's default for custom endpoints)."""
    digest = hmac.new(secret_key.encode(), encoded_policy.encode(), hashlib.sha1).digest()
    return base64.b64encode(digest).decode()
