"""Object tags: S3's limits on a tag set, and the x-amz-tagging header's form.

A tag set has at most 10 tags with unique keys; a key is 1 to 128 Unicode characters, a value
0 to 256, both of letters, digits, spaces and ``_ . : / = + - @``; keys beginning ``aws:`` are
S3's own. A tag set over 10 is BadRequest; any other fault, InvalidTag.
"""

from __future__ import annotations

import unicodedata
from collections.abc import Sequence
from urllib.parse import parse_qsl

from gateway.s3 import errors

Tags = tuple[tuple[str, str], ...]

MAX_TAGS = 10
MAX_KEY_LENGTH = 128
MAX_VALUE_LENGTH = 256
_PUNCTUATION = frozenset("_.:/=+-@")


def _allowed(text: str) -> bool:
    """S3's pattern ``[\\p{L}\\p{Z}\\p{N}_.:/=+\\-@]*``."""
    return all(char in _PUNCTUATION or unicodedata.category(char)[0] in "LZN" for char in text)


def validate(tags: Sequence[tuple[str, str]]) -> Tags:
    """The tag set as given, once it keeps S3's limits; else the error S3 answers."""
    if len(tags) > MAX_TAGS:
        raise errors.BadRequest(f"Object tags cannot be greater than {MAX_TAGS}")
    seen = set()
    for key, value in tags:
        if not key or len(key) > MAX_KEY_LENGTH:
            raise errors.InvalidTag(
                f"The TagKey you have provided is too long, max {MAX_KEY_LENGTH}"
                if key
                else "The TagKey you have provided is invalid",
                TagKey=key,
            )
        if len(value) > MAX_VALUE_LENGTH:
            raise errors.InvalidTag(
                f"The TagValue you have provided is too long, max {MAX_VALUE_LENGTH}",
                TagKey=key,
                TagValue=value,
            )
        if not _allowed(key):
            raise errors.InvalidTag("The TagKey you have provided is invalid", TagKey=key)
        if not _allowed(value):
            raise errors.InvalidTag(
                "The TagValue you have provided is invalid", TagKey=key, TagValue=value
            )
        if key.lower().startswith("aws:"):
            raise errors.InvalidTag("Your TagKey cannot be prefixed with aws:", TagKey=key)
        if key in seen:
            raise errors.InvalidTag("Cannot provide multiple Tags with the same key", TagKey=key)
        seen.add(key)
    return tuple(tags)


def from_header(value: str) -> Tags:
    """The tag set of an x-amz-tagging header: URL query form, ``k1=v1&k2=v2``."""
    try:
        pairs = parse_qsl(value, keep_blank_values=True, errors="strict")
    except UnicodeDecodeError:
        raise errors.InvalidArgument(
            "The header 'x-amz-tagging' shall be encoded as UTF-8 then URLEncoded URL query"
            " parameters without tag name duplicates.",
            ArgumentName="x-amz-tagging",
            ArgumentValue=value,
        ) from None
    return validate(pairs)
