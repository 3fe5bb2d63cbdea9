"""Bucket policies, the subset that makes content public: Allow statements for every principal
(``*``) of s3:GetObject on the bucket's keys (all, a prefix, or one key) and of s3:ListBucket
(and s3:GetBucketLocation) on the bucket.

That is what ``mc anonymous set download``, static-site Terraform modules and the S3 docs'
public-read example write. Any other policy is refused, MalformedPolicy when S3 would refuse it
too, NotImplemented when it is valid but says what this gateway cannot enforce (a Deny, a
Condition, another principal or action): never stored and then ignored.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from gateway.s3 import errors

# S3's limit on a bucket policy document.
MAX_POLICY_SIZE = 20 * 1024
_VERSIONS = ("2012-10-17", "2008-10-17")
_STATEMENT_FIELDS = frozenset({"Sid", "Effect", "Principal", "Action", "Resource"})
_UNSUPPORTED_FIELDS = frozenset({"NotPrincipal", "NotAction", "NotResource", "Condition"})
_ARN_PREFIX = "arn:aws:s3:::"
_OBJECT_ACTIONS = frozenset({"s3:getobject"})
_BUCKET_ACTIONS = frozenset({"s3:listbucket", "s3:getbucketlocation"})


@dataclass(frozen=True)
class BucketPolicy:
    """What a stored policy lets anonymous requesters do."""

    list_bucket: bool = False
    get_location: bool = False
    # Keys readable by everyone: those starting with one of the prefixes, and these exactly.
    read_prefixes: tuple[str, ...] = ()
    read_keys: frozenset[str] = frozenset()

    def allows_read(self, key: str) -> bool:
        return key in self.read_keys or key.startswith(self.read_prefixes)


def parse_policy(document: bytes | str, bucket: str) -> BucketPolicy:
    """The policy of a PutBucketPolicy body for ``bucket``; raises MalformedPolicy or
    NotImplemented."""
    if len(document) > MAX_POLICY_SIZE:
        raise errors.MalformedPolicy("Policy exceeds the maximum allowed document size.")
    try:
        policy = json.loads(document)
    except (ValueError, UnicodeDecodeError):
        raise errors.MalformedPolicy("This policy contains invalid Json") from None
    if not isinstance(policy, dict):
        raise errors.MalformedPolicy("Policies must be valid JSON and the first byte must be '{'")
    unknown = set(policy) - {"Version", "Id", "Statement"}
    if unknown:
        raise errors.MalformedPolicy(f"Unknown field {sorted(unknown)[0]}")
    if policy.get("Version", _VERSIONS[1]) not in _VERSIONS:
        raise errors.MalformedPolicy("The policy must contain a valid version string")
    statements = policy.get("Statement")
    if isinstance(statements, dict):
        statements = [statements]
    if not isinstance(statements, list) or not statements:
        raise errors.MalformedPolicy("Missing required field Statement")
    list_bucket = get_location = False
    prefixes: list[str] = []
    keys: set[str] = set()
    for statement in statements:
        actions, resources = _statement(statement)
        bucket_resources = [resource for resource in resources if "/" not in resource]
        object_resources = [resource for resource in resources if "/" in resource]
        for resource in bucket_resources:
            if resource != bucket:
                raise errors.MalformedPolicy("Policy has invalid resource")
        for action in actions:
            if action in _BUCKET_ACTIONS and not bucket_resources:
                raise errors.MalformedPolicy(
                    "Action does not apply to any resource(s) in statement"
                )
            if action in _OBJECT_ACTIONS and not object_resources:
                raise errors.MalformedPolicy(
                    "Action does not apply to any resource(s) in statement"
                )
        list_bucket |= "s3:listbucket" in actions
        get_location |= "s3:getbucketlocation" in actions
        if "s3:getobject" in actions:
            for resource in object_resources:
                name, _, key = resource.partition("/")
                if name != bucket:
                    raise errors.MalformedPolicy("Policy has invalid resource")
                if key.endswith("*") and not _has_wildcard(key[:-1]):
                    prefixes.append(key[:-1])
                elif not _has_wildcard(key):
                    keys.add(key)
                else:
                    raise errors.NotImplemented(
                        f"The resource {_ARN_PREFIX}{resource} is not implemented by this"
                        " gateway: a wildcard may only end a key prefix."
                    )
    return BucketPolicy(list_bucket, get_location, tuple(prefixes), frozenset(keys))


def _has_wildcard(text: str) -> bool:
    return "*" in text or "?" in text


def _statement(statement: Any) -> tuple[set[str], list[str]]:
    """The actions (lower case) and resources (without the ARN prefix) of one statement."""
    if not isinstance(statement, dict):
        raise errors.MalformedPolicy("Statement is not an object")
    unsupported = _UNSUPPORTED_FIELDS.intersection(statement)
    if unsupported:
        raise errors.NotImplemented(
            f"Policy statements with {sorted(unsupported)[0]} are not implemented by this gateway."
        )
    unknown = set(statement) - _STATEMENT_FIELDS
    if unknown:
        raise errors.MalformedPolicy(f"Unknown field {sorted(unknown)[0]}")
    for required in ("Effect", "Principal", "Action", "Resource"):
        if required not in statement:
            raise errors.MalformedPolicy(f"Missing required field {required}")
    effect = statement["Effect"]
    if effect == "Deny":
        raise errors.NotImplemented("Deny statements are not implemented by this gateway.")
    if effect != "Allow":
        raise errors.MalformedPolicy(f"Invalid effect: {effect}")
    if not _everyone(statement["Principal"]):
        raise errors.NotImplemented(
            "Only the principal * (everyone) is implemented by this gateway; the grants of"
            " its credentials are set in its configuration."
        )
    actions = {action.lower() for action in _strings(statement["Action"], "Action")}
    for action in actions:
        if not action.startswith("s3:"):
            raise errors.MalformedPolicy("Policy has invalid action")
        if action not in _OBJECT_ACTIONS | _BUCKET_ACTIONS:
            raise errors.NotImplemented(
                f"The action {action} is not implemented in bucket policies by this gateway:"
                " it implements s3:GetObject, s3:ListBucket and s3:GetBucketLocation."
            )
    resources = []
    for resource in _strings(statement["Resource"], "Resource"):
        if not resource.startswith(_ARN_PREFIX) or len(resource) == len(_ARN_PREFIX):
            raise errors.MalformedPolicy("Policy has invalid resource")
        resources.append(resource[len(_ARN_PREFIX) :])
    return actions, resources


def _everyone(principal: Any) -> bool:
    if principal == "*":
        return True
    if isinstance(principal, dict) and set(principal) == {"AWS"}:
        value = principal["AWS"]
        return value == "*" or value == ["*"]
    return False


def _strings(value: Any, name: str) -> list[str]:
    values = [value] if isinstance(value, str) else value
    if not isinstance(values, list) or not values or not all(isinstance(v, str) for v in values):
        raise errors.MalformedPolicy(f"Missing required field {name}")
    return values
