"""Validation of bucket names and object keys.

Bucket rules are the general purpose bucket naming rules of the S3 User Guide ("Bucket naming
rules"); key rules are from "Creating object key names".
"""

from __future__ import annotations

import re

from gateway.s3.errors import InvalidArgument, InvalidBucketName, KeyTooLongError

# Bucket names can never start with "_" (the naming rules already forbid it): the gateway serves
# its own endpoints under /_gateway/, which therefore can never be a bucket.
RESERVED_PREFIX = "_"

MAX_KEY_BYTES = 1024

# 3-63 of [a-z0-9.-], beginning and ending with a letter or digit. ASCII classes on purpose:
# str.islower()/isalnum() accept non-ASCII letters.
_BUCKET = re.compile(r"[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]")
_IP_ADDRESS = re.compile(r"[0-9]+\.[0-9]+\.[0-9]+\.[0-9]+")
_RESERVED_PREFIXES = ("xn--", "sthree-", "amzn-s3-demo-")
# Suffixes S3 reserves for access point aliases, Object Lambda, Multi-Region Access Points,
# directory buckets and table buckets.
_RESERVED_SUFFIXES = ("-s3alias", "--ol-s3", ".mrap", "--x-s3", "--table-s3")


def validate_bucket_name(name: str) -> None:
    """Raise InvalidBucketName unless `name` is a valid general purpose bucket name."""
    if (
        name.startswith(RESERVED_PREFIX)
        or _BUCKET.fullmatch(name) is None
        or ".." in name
        or _IP_ADDRESS.fullmatch(name) is not None
        or name.startswith(_RESERVED_PREFIXES)
        or name.endswith(_RESERVED_SUFFIXES)
    ):
        raise InvalidBucketName(BucketName=name)


def validate_key(key: str) -> None:
    """Raise unless `key` is a valid object key: 1 to 1024 bytes of UTF-8."""
    if not key:
        raise InvalidArgument("Object key must not be empty", ArgumentName="key", ArgumentValue="")
    try:
        size = len(key.encode("utf-8"))
    except UnicodeEncodeError:
        # Lone surrogates (e.g. from a percent-decoded invalid UTF-8 path) cannot be stored.
        raise InvalidArgument("Object key must be valid UTF-8", ArgumentName="key") from None
    if size > MAX_KEY_BYTES:
        raise KeyTooLongError(Size=str(size), MaxSizeAllowed=str(MAX_KEY_BYTES))
    check_text("key", key)


def check_text(name: str, value: str) -> None:
    """Reject NUL in a key, prefix, marker or token: no S3 client sends it on purpose, and the
    metadata store cannot hold it."""
    if "\x00" in value:
        raise InvalidArgument(f"The {name} must not contain the NUL character", ArgumentName=name)
