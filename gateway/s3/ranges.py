"""Byte ranges: the Range header of GetObject/HeadObject and x-amz-copy-source-range.

GET follows RFC 9110 §14 as S3 applies it: one range is honoured, anything S3 cannot use
(bad syntax, several ranges) is ignored and the whole object is sent with 200.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from gateway.s3.errors import InvalidArgument, InvalidRange

# One range-spec without the unit: int-range ("a-b", "a-") or suffix-range ("-n").
# ASCII digits only: str.isdigit() and \d would also accept other scripts' digits.
_SPEC = re.compile(r"([0-9]*)-([0-9]*)")
_COPY_SOURCE = re.compile(r"bytes=([0-9]+)-([0-9]+)")

# Any offset with more digits than this is beyond every object (and int() refuses very long
# digit strings, see sys.set_int_max_str_digits), so it is treated as "infinitely large".
_MAX_DIGITS = 20
_HUGE = 10**_MAX_DIGITS

_COPY_SOURCE_SYNTAX = (
    "The x-amz-copy-source-range value must be of the form bytes=first-last where first and "
    "last are the zero-based offsets of the first and last bytes to copy"
)


@dataclass(frozen=True)
class ByteRange:
    """An inclusive byte range [start, end] that lies inside the object."""

    start: int
    end: int

    @property
    def length(self) -> int:
        return self.end - self.start + 1

    def content_range(self, size: int) -> str:
        """The Content-Range value of a 206 response (RFC 9110 §14.4)."""
        return f"bytes {self.start}-{self.end}/{size}"


def _offset(digits: str) -> int:
    digits = digits.lstrip("0") or "0"
    return _HUGE if len(digits) > _MAX_DIGITS else int(digits)


def parse_range(header: str | None, size: int) -> ByteRange | None:
    """The range a GET/HEAD should serve from an object of `size` bytes, or None for all of it.

    Raises InvalidRange (416) when the single range is syntactically valid but unsatisfiable.
    """
    if header is None:
        return None
    unit, sep, range_set = header.strip().partition("=")
    # Range units are case-insensitive (RFC 9110 §14.1); "bytes" is the only one S3 knows.
    if not sep or unit.strip().lower() != "bytes":
        return None
    # range-set is a list: empty elements are ignored (RFC 9110 §5.6.1); S3 serves the
    # whole object rather than multipart/byteranges when several ranges are asked for.
    specs = [spec.strip() for spec in range_set.split(",") if spec.strip()]
    if len(specs) != 1:
        return None
    match = _SPEC.fullmatch(specs[0])
    if match is None:
        return None
    first, last = match.groups()
    if first:
        start = _offset(first)
        end = _offset(last) if last else _HUGE
        if end < start:
            # last-pos < first-pos makes the range invalid, not unsatisfiable (RFC 9110 §14.1.1).
            return None
    elif last:
        # suffix-range: the final n bytes; n larger than the object means all of it, and a
        # zero n or an empty object can never be satisfied (RFC 9110 §14.1.1, §14.1.2).
        suffix = _offset(last)
        start = size - min(suffix, size) if suffix else size
        end = size - 1
    else:
        return None  # a bare "-"
    if start >= size:
        raise InvalidRange(RangeRequested=header, ActualObjectSize=str(size))
    return ByteRange(start, min(end, size - 1))


def parse_copy_source_range(header: str, size: int) -> ByteRange:
    """The range of an UploadPartCopy x-amz-copy-source-range over a source of `size` bytes.

    Unlike GET, S3 accepts exactly "bytes=first-last" (UploadPartCopy API reference) and never
    clamps. AWS answers 400 InvalidArgument both for a malformed value and for a range outside
    the source, with the messages used here.
    """
    match = _COPY_SOURCE.fullmatch(header.strip())
    if match is None:
        raise InvalidArgument(
            _COPY_SOURCE_SYNTAX, ArgumentName="x-amz-copy-source-range", ArgumentValue=header
        )
    start, end = _offset(match[1]), _offset(match[2])
    if start > end or end >= size:
        raise InvalidArgument(
            f"Range specified is not valid for source object of size: {size}",
            ArgumentName="x-amz-copy-source-range",
            ArgumentValue=header,
        )
    return ByteRange(start, end)
