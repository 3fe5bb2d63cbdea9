"""A request's query string, decoded once: routing and both signature versions read that parse.

Decoding in one place is what keeps them agreeing. When the signer matched raw names and the
router decoded them, ``%72esponse-content-type`` was unsigned yet applied as an override.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from urllib.parse import unquote_to_bytes

from gateway.s3.errors import InvalidArgument, InvalidURI

# The sub-resources and response overrides a SigV2 signature covers (botocore's
# HmacV1Auth.QSAOfInterest), whatever spelling the URL gives their names.
SIGNED_SUBRESOURCES = frozenset(
    {
        "accelerate", "acl", "cors", "defaultObjectAcl", "location", "logging", "partNumber",
        "policy", "requestPayment", "torrent", "versioning", "versionId", "versions", "website",
        "uploads", "uploadId", "response-content-type", "response-content-language",
        "response-expires", "response-cache-control", "response-content-disposition",
        "response-content-encoding", "delete", "lifecycle", "tagging", "restore", "storageClass",
        "notification", "replication", "analytics", "metrics", "inventory", "select",
        "select-type", "object-lock",
    }
)  # fmt: skip

# Names that may appear once: a second copy would let the one the signer saw differ from the
# one the gateway applies.
_SINGLE_VALUED = SIGNED_SUBRESOURCES | {
    "variant",
    "list-type",
    "AWSAccessKeyId",
    "Signature",
    "Expires",
    "X-Amz-Algorithm",
    "X-Amz-Credential",
    "X-Amz-Date",
    "X-Amz-Expires",
    "X-Amz-SignedHeaders",
    "X-Amz-Signature",
    "X-Amz-Security-Token",
}


@dataclass(frozen=True)
class Query(Mapping[str, str]):
    """The decoded query: each name's (first) value, and every pair in order."""

    # value None: the name came without '=' (``?uploads``), which SigV2 signs differently.
    pairs: tuple[tuple[str, str | None], ...]
    params: dict[str, str]

    def __getitem__(self, name: str) -> str:
        return self.params[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self.params)

    def __len__(self) -> int:
        return len(self.params)

    def __contains__(self, name: object) -> bool:
        return name in self.params


EMPTY = Query((), {})


def parse_query(raw_query: str) -> Query:
    """Decode ``raw_query`` (without '?'); '+' stays a literal plus, as in S3 paths.

    Raises InvalidURI for bytes that are not UTF-8 and InvalidArgument for a repeated name that
    must be single.
    """
    if not raw_query:
        return EMPTY
    pairs: list[tuple[str, str | None]] = []
    params: dict[str, str] = {}
    for piece in raw_query.split("&"):
        if not piece:
            continue
        raw_name, sep, raw_value = piece.partition("=")
        name = decode_component(raw_name)
        value = decode_component(raw_value) if sep else None
        if name in params and name in _SINGLE_VALUED:
            raise InvalidArgument(
                f"The query parameter {name} may be given only once.",
                ArgumentName=name,
            )
        pairs.append((name, value))
        params.setdefault(name, value or "")
    return Query(tuple(pairs), params)


def decode_component(raw: str) -> str:
    """Percent-decode a path or query component as strict UTF-8.

    unquote() would turn every invalid byte into U+FFFD, silently merging distinct keys
    (/b/bad%FF and /b/bad%FE would name one object).
    """
    if "%" not in raw:
        return raw
    try:
        return unquote_to_bytes(raw).decode("utf-8")
    except UnicodeDecodeError:
        raise InvalidURI(URI=raw) from None


def has_control_characters(value: str) -> bool:
    """Whether ``value`` holds a character no HTTP header value may carry (CR, LF, NUL...)."""
    return any((ord(char) < 0x20 and char != "\t") or char == "\x7f" for char in value)
