"""Conditional requests (RFC 9110 §13) as S3 applies them, as a pure decision.

The handler asks `evaluate` (reads, and writes over an existing object), `evaluate_write`
(PutObject / CompleteMultipartUpload with If-Match / If-None-Match) or `check_copy_source`
(CopyObject / UploadPartCopy x-amz-copy-source-if-*), then answers accordingly.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from enum import Enum

from gateway.s3.errors import NoSuchKey, PreconditionFailed


class Precondition(Enum):
    PROCEED = "proceed"
    NOT_MODIFIED = "not_modified"  # 304, only for GET/HEAD
    FAILED = "failed"  # 412 PreconditionFailed
    MISSING = "missing"  # conditional write on a missing key: S3 answers 404 NoSuchKey


@dataclass(frozen=True)
class Conditions:
    """The four conditional header values as received (None when absent)."""

    if_match: str | None = None
    if_none_match: str | None = None
    if_modified_since: str | None = None
    if_unmodified_since: str | None = None

    @classmethod
    def from_headers(cls, headers: Mapping[str, str], prefix: str = "") -> Conditions:
        """Read the headers; prefix "x-amz-copy-source-" reads the CopyObject variants.

        `headers` is looked up by lower-case name (aiohttp's CIMultiDict is case-insensitive).
        Empty values count as absent: S3 clients never send them on purpose.
        """

        def get(name: str) -> str | None:
            value = headers.get(prefix + name)
            return value if value is not None and value.strip() else None

        return cls(
            if_match=get("if-match"),
            if_none_match=get("if-none-match"),
            if_modified_since=get("if-modified-since"),
            if_unmodified_since=get("if-unmodified-since"),
        )


# One list member of If-Match / If-None-Match: "*", W/"tag", "tag", or a bare tag, which some
# clients send unquoted. Quoted tags may contain commas (etagc, RFC 9110 §8.8.3), so the list
# is tokenised rather than split.
_ETAG_MEMBER = re.compile(
    r'\s*(?:(?P<star>\*)|(?P<weak>W/)?(?:"(?P<quoted>[^"]*)"|(?P<bare>[^\s,"]+)))\s*(?:,|$)'
)


@dataclass(frozen=True)
class _ETagList:
    star: bool
    tags: tuple[tuple[bool, str], ...]  # (weak, opaque tag without quotes)


def _skip_gap(value: str, pos: int) -> int:
    # Empty list members and whitespace between members are allowed (RFC 9110 §5.6.1).
    while pos < len(value) and (value[pos] == "," or value[pos].isspace()):
        pos += 1
    return pos


def _parse_etags(value: str) -> _ETagList:
    star = False
    tags: list[tuple[bool, str]] = []
    pos = _skip_gap(value, 0)
    while pos < len(value):
        match = _ETAG_MEMBER.match(value, pos)
        if match is None:
            # Skip a malformed member rather than failing the whole header.
            comma = value.find(",", pos)
            pos = len(value) if comma < 0 else comma
        elif match["star"]:
            star = True
            pos = match.end()
        else:
            tag = match["quoted"] if match["quoted"] is not None else match["bare"]
            tags.append((match["weak"] is not None, tag))
            pos = match.end()
        pos = _skip_gap(value, pos)
    return _ETagList(star, tuple(tags))


def _opaque(etag: str) -> str:
    """The stored ETag without its quotes ("abc" -> abc)."""
    if len(etag) >= 2 and etag[0] == etag[-1] == '"':
        return etag[1:-1]
    return etag


def _if_match(value: str, etag: str) -> bool:
    # Strong comparison (RFC 9110 §8.8.3.2, §13.1.1): a weak tag never matches. Stored ETags
    # are always strong.
    tags = _parse_etags(value)
    current = _opaque(etag)
    return tags.star or any(not weak and tag == current for weak, tag in tags.tags)


def _if_none_match(value: str, etag: str) -> bool:
    # Weak comparison (RFC 9110 §13.1.2): W/ is ignored. True means "no member matched".
    tags = _parse_etags(value)
    current = _opaque(etag)
    return not (tags.star or any(tag == current for _, tag in tags.tags))


def _http_date(value: str) -> datetime | None:
    """An HTTP-date (RFC 9110 §5.6.7) in any of its three forms, or None when invalid.

    A list of dates is invalid too (§13.1.3, §13.1.4). IMF-fixdate has one comma, after the
    weekday; rfc850-date one too; asctime-date none.
    """
    if value.count(",") > 1:
        return None
    try:
        parsed = parsedate_to_datetime(value)
    except (TypeError, ValueError, OverflowError, IndexError):
        return None
    return _whole_seconds(parsed)


def _whole_seconds(moment: datetime) -> datetime:
    # HTTP dates have second resolution and are always GMT; asctime-date and "-0000" parse as
    # naive datetimes.
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.replace(microsecond=0)


def evaluate(
    cond: Conditions, etag: str, last_modified: datetime, *, is_read: bool = True
) -> Precondition:
    """Evaluate the conditions against an existing object.

    `etag` is the stored quoted ETag; `last_modified` is compared at second resolution, as
    the client saw it in Last-Modified. `is_read` is True for GET/HEAD: only those answer 304
    and honour If-Modified-Since.
    """
    return decide(cond, etag, last_modified, is_read=is_read)[0]


def decide(
    cond: Conditions, etag: str, last_modified: datetime, *, is_read: bool = True
) -> tuple[Precondition, str | None]:
    """Like `evaluate`, plus the header that decided a non-PROCEED outcome (else None).

    The name is what S3 puts in the <Condition> element of its 412 error document.
    """
    modified = _whole_seconds(last_modified)
    # RFC 9110 §13.2.2, steps 1-4. S3 documents the same outcome for its two combinations:
    # If-Match true + If-Unmodified-Since false -> 200, and If-None-Match false +
    # If-Modified-Since true -> 304 (GetObject API reference).
    if cond.if_match is not None:
        if not _if_match(cond.if_match, etag):
            return Precondition.FAILED, "If-Match"
    elif cond.if_unmodified_since is not None:
        since = _http_date(cond.if_unmodified_since)
        # An invalid date is ignored (RFC 9110 §13.1.4).
        if since is not None and modified > since:
            return Precondition.FAILED, "If-Unmodified-Since"
    if cond.if_none_match is not None:
        if not _if_none_match(cond.if_none_match, etag):
            outcome = Precondition.NOT_MODIFIED if is_read else Precondition.FAILED
            return outcome, "If-None-Match"
    elif cond.if_modified_since is not None and is_read:
        # Only GET/HEAD, and ignored when invalid (RFC 9110 §13.1.3).
        since = _http_date(cond.if_modified_since)
        if since is not None and modified <= since:
            return Precondition.NOT_MODIFIED, "If-Modified-Since"
    return Precondition.PROCEED, None


def check_copy_source(cond: Conditions, etag: str, last_modified: datetime) -> None:
    """Raise PreconditionFailed unless the copy source satisfies x-amz-copy-source-if-*.

    Copying reads the source, so the read rules apply, but a copy never answers 304: every
    failure is 412 (CopyObject API reference).
    """
    outcome, header = decide(cond, etag, last_modified, is_read=True)
    if outcome is not Precondition.PROCEED:
        raise PreconditionFailed(Condition=f"x-amz-copy-source-{header}")


def evaluate_write(cond: Conditions, etag: str | None) -> Precondition:
    """Evaluate If-Match / If-None-Match of a conditional write; `etag` None: no object yet.

    S3 conditional writes are ETag-only (date conditions are not part of PutObject /
    CompleteMultipartUpload, so they are ignored here). If-None-Match: * on an existing key is
    412; If-Match on a missing key is 404 NoSuchKey (S3 User Guide, "conditional writes").
    """
    if cond.if_match is not None:
        if etag is None:
            return Precondition.MISSING
        if not _if_match(cond.if_match, etag):
            return Precondition.FAILED
    if (
        cond.if_none_match is not None
        and etag is not None
        and not _if_none_match(cond.if_none_match, etag)
    ):
        return Precondition.FAILED
    return Precondition.PROCEED


# Sees the ETag of the object a write replaces (None: none), raises to refuse the write.
WriteCheck = Callable[[str | None], None]


def write_conditions(headers: Mapping[str, str]) -> Conditions | None:
    """The If-Match / If-None-Match of a write; None for a plain write."""
    cond = Conditions.from_headers(headers)
    if cond.if_match is None and cond.if_none_match is None:
        return None
    return cond


def write_check(cond: Conditions | None, key: str) -> WriteCheck | None:
    """What a conditional write checks against the ETag it replaces; None for a plain write
    (which then commits without a round trip to look)."""
    if cond is None:
        return None

    def check(current_etag: str | None) -> None:
        outcome = evaluate_write(cond, current_etag)
        if outcome is Precondition.MISSING:
            raise NoSuchKey(Key=key)
        if outcome is Precondition.FAILED:
            raise PreconditionFailed(
                Condition="If-Match" if cond.if_match is not None else "If-None-Match"
            )

    return check
