"""Multipart upload rules: part numbers, the parts a completion may use, and the ETag and
checksum of the object it makes (S3 API reference: UploadPart, CompleteMultipartUpload,
ListParts; S3 User Guide: "Checking object integrity")."""

from __future__ import annotations

import base64
import binascii
import hashlib
import itertools
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from gateway.s3 import checksums
from gateway.s3.errors import (
    BadDigest,
    EntityTooSmall,
    InvalidArgument,
    InvalidPart,
    InvalidPartOrder,
    InvalidRequest,
)
from gateway.s3.xmlbody import CompletedPart

MIN_PART_NUMBER = 1
MAX_PART_NUMBER = 10_000
# Every part but the last must be at least this large.
MIN_PART_SIZE = 5 * 1024**2
# The most parts (ListParts) or uploads (ListMultipartUploads) one response lists.
MAX_LISTED = 1000

COMPOSITE = "COMPOSITE"
FULL_OBJECT = "FULL_OBJECT"

PART_NUMBER_MESSAGE = "Part number must be an integer between 1 and 10000, inclusive"

_DIGITS = re.compile(r"[0-9]{1,10}")


def parse_part_number(value: str) -> int:
    """The partNumber query parameter of UploadPart, UploadPartCopy, GetObject, HeadObject."""
    if _DIGITS.fullmatch(value) is None or not MIN_PART_NUMBER <= int(value) <= MAX_PART_NUMBER:
        raise InvalidArgument(PART_NUMBER_MESSAGE, ArgumentName="partNumber", ArgumentValue=value)
    return int(value)


def parse_list_argument(value: str | None, name: str, default: int) -> int:
    """max-parts, part-number-marker, max-uploads: non-negative integers (the limits are capped
    at MAX_LISTED by the caller, as S3 silently does)."""
    if value is None:
        return default
    if _DIGITS.fullmatch(value.strip()) is None or int(value) > 2**31 - 1:
        raise InvalidArgument(
            f"Provided {name} not an integer or within integer range",
            ArgumentName=name,
            ArgumentValue=value,
        )
    return int(value)


def checksum_type(algorithm: str | None, requested: str | None) -> str | None:
    """The checksum type of an upload created with x-amz-checksum-algorithm and -type.

    COMPOSITE (a checksum of the part checksums) is the default except for CRC64NVME, which
    S3 only offers as FULL_OBJECT; FULL_OBJECT needs a CRC, whose values combine.
    """
    if algorithm is None:
        if requested is not None:
            raise InvalidRequest(
                "The x-amz-checksum-type header can only be used with the "
                "x-amz-checksum-algorithm header."
            )
        return None
    algorithm = algorithm.upper()
    checksums.new_checksum(algorithm)  # InvalidRequest for an unknown algorithm
    if requested is None:
        return FULL_OBJECT if algorithm == "CRC64NVME" else COMPOSITE
    requested = requested.upper()
    if requested not in (COMPOSITE, FULL_OBJECT):
        raise InvalidRequest("Value for x-amz-checksum-type header is invalid.")
    if requested == FULL_OBJECT and algorithm not in checksums.COMBINABLE:
        raise InvalidRequest(
            f"The FULL_OBJECT checksum type cannot be used with the {algorithm.lower()} "
            "checksum algorithm."
        )
    if requested == COMPOSITE and algorithm == "CRC64NVME":
        raise InvalidRequest(
            "The COMPOSITE checksum type cannot be used with the crc64nvme checksum algorithm."
        )
    return requested


@dataclass(frozen=True)
class UploadedPart:
    """A part as stored: what a completion request is checked against."""

    part_number: int
    etag: str  # quoted, as returned by UploadPart
    size: int
    # Keyed by upper-case algorithm name.
    checksums: Mapping[str, str] = field(default_factory=dict, hash=False)


def _bare(etag: str) -> str:
    # Clients send part ETags quoted or not.
    return etag.strip().strip('"')


def select_parts(
    requested: Sequence[CompletedPart], uploaded: Mapping[int, UploadedPart]
) -> list[UploadedPart]:
    """The uploaded parts a CompleteMultipartUpload body names, in object order.

    Checks in S3's order: part numbers in range, ascending without repeats (InvalidPartOrder),
    each part uploaded with that ETag and any checksum given (InvalidPart), then every part
    but the last at least MIN_PART_SIZE (EntityTooSmall).
    """
    for part in requested:
        if not MIN_PART_NUMBER <= part.part_number <= MAX_PART_NUMBER:
            raise InvalidArgument(
                PART_NUMBER_MESSAGE, ArgumentName="PartNumber", ArgumentValue=str(part.part_number)
            )
    for previous, part in itertools.pairwise(requested):
        if part.part_number <= previous.part_number:
            raise InvalidPartOrder()
    chosen = []
    for part in requested:
        stored = uploaded.get(part.part_number)
        if stored is None or _bare(part.etag) != _bare(stored.etag):
            raise InvalidPart(PartNumber=str(part.part_number), ETag=part.etag)
        for algorithm, value in part.checksums.items():
            if stored.checksums.get(algorithm) != value:
                raise InvalidPart(PartNumber=str(part.part_number), ETag=part.etag)
        chosen.append(stored)
    for stored in chosen[:-1]:
        if stored.size < MIN_PART_SIZE:
            raise EntityTooSmall(
                ProposedSize=str(stored.size),
                MinSizeAllowed=str(MIN_PART_SIZE),
                PartNumber=str(stored.part_number),
                ETag=stored.etag,
            )
    return chosen


def multipart_etag(part_etags: Sequence[str]) -> str:
    """S3's ETag of a multipart object: the MD5 of the concatenated binary part MD5s, "-N"."""
    digest = hashlib.md5(b"".join(bytes.fromhex(_bare(etag)) for etag in part_etags))
    return f'"{digest.hexdigest()}-{len(part_etags)}"'


def object_checksum(algorithm: str, kind: str, parts: Sequence[UploadedPart]) -> str | None:
    """The checksum of the object made of ``parts``; None if a part has no such checksum.

    COMPOSITE: the checksum of the concatenated binary part checksums, then "-N".
    FULL_OBJECT: the CRC of the whole object, combined from the part CRCs and sizes.
    """
    values = [part.checksums[algorithm] for part in parts if algorithm in part.checksums]
    if len(values) != len(parts):
        return None
    if kind == FULL_OBJECT:
        return checksums.combine(
            algorithm, [(value, part.size) for value, part in zip(values, parts, strict=True)]
        )
    combined = checksums.new_checksum(algorithm)
    for value in values:
        assert value is not None
        try:
            combined.update(base64.b64decode(value, validate=True))
        except (binascii.Error, ValueError):
            return None
    return f"{combined.digest_b64()}-{len(values)}"


@dataclass(frozen=True)
class Assembly:
    """The object a CompleteMultipartUpload makes of the uploaded parts."""

    # The parts chosen, in object order.
    parts: list[UploadedPart]
    etag: str
    size: int
    # The object's checksum by algorithm, when the upload computes one.
    checksums: dict[str, str]
    # COMPOSITE or FULL_OBJECT, with ``checksums``; else None.
    checksum_type: str | None


def assemble(
    requested: Sequence[CompletedPart],
    uploaded: Mapping[int, UploadedPart],
    checksum_algorithm: str | None,
    checksum_type: str | None,
    declared: Mapping[str, str],
) -> Assembly:
    """The object ``requested`` makes of the ``uploaded`` parts (select_parts' errors), with
    the upload's checksum of it; BadDigest when a checksum the client declared for the whole
    object (x-amz-checksum-* of the completion) is not the one computed."""
    chosen = select_parts(requested, uploaded)
    object_checksums: dict[str, str] = {}
    kind = None
    if checksum_algorithm is not None and checksum_type is not None:
        value = object_checksum(checksum_algorithm, checksum_type, chosen)
        if value is not None:
            object_checksums[checksum_algorithm] = value
            kind = checksum_type
    for name, expected in declared.items():
        if name in object_checksums and object_checksums[name] != expected:
            raise BadDigest(f"The {name} you specified did not match the calculated checksum.")
    return Assembly(
        parts=chosen,
        etag=multipart_etag([part.etag for part in chosen]),
        size=sum(part.size for part in chosen),
        checksums=object_checksums,
        checksum_type=kind,
    )
