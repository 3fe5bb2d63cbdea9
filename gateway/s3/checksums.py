"""S3 additional checksums (x-amz-checksum-*): incremental digests as S3 and botocore encode them.

Values are base64 of the big-endian digest: 4 bytes for CRC32 / CRC32C, 8 for CRC64NVME, the
plain hash for SHA1 / SHA256. CRC32C and CRC64NVME come from awscrt, which botocore uses too.
"""

from __future__ import annotations

import base64
import hashlib
import zlib
from collections.abc import Callable, Iterable, Mapping
from typing import Protocol

from awscrt import checksums as crt

from gateway.s3.errors import InvalidRequest

ALGORITHMS: tuple[str, ...] = ("CRC32", "CRC32C", "CRC64NVME", "SHA1", "SHA256")
HEADER_PREFIX = "x-amz-checksum-"


class Checksum(Protocol):
    def update(self, data: bytes) -> None: ...

    def digest_b64(self) -> str: ...


class _Crc:
    def __init__(self, function: Callable[[bytes, int], int], size: int) -> None:
        self._function = function
        self._size = size
        self._value = 0

    def update(self, data: bytes) -> None:
        self._value = self._function(data, self._value)

    def digest_b64(self) -> str:
        return base64.b64encode(self._value.to_bytes(self._size, "big")).decode("ascii")


class _Hash:
    def __init__(self, name: str) -> None:
        self._hash = hashlib.new(name)

    def update(self, data: bytes) -> None:
        self._hash.update(data)

    def digest_b64(self) -> str:
        return base64.b64encode(self._hash.digest()).decode("ascii")


_FACTORIES: dict[str, Callable[[], Checksum]] = {
    "CRC32": lambda: _Crc(zlib.crc32, 4),
    "CRC32C": lambda: _Crc(crt.crc32c, 4),
    "CRC64NVME": lambda: _Crc(crt.crc64nvme, 8),
    "SHA1": lambda: _Hash("sha1"),
    "SHA256": lambda: _Hash("sha256"),
}


def new_checksum(algorithm: str) -> Checksum:
    """A fresh checksum for ``algorithm`` (any case, e.g. "CRC32C"); unknown -> InvalidRequest."""
    factory = _FACTORIES.get(algorithm.upper())
    if factory is None:
        raise InvalidRequest(
            "Checksum algorithm provided is unsupported. Please try again with any of the valid "
            f"types: [{', '.join(ALGORITHMS)}]"
        )
    return factory()


# The CRCs of two pieces of data give the CRC of their concatenation (FULL_OBJECT checksums of
# multipart objects); hashes cannot be combined.
_COMBINE: dict[str, tuple[Callable[[int, int, int], int], int]] = {
    "CRC32": (crt.combine_crc32, 4),
    "CRC32C": (crt.combine_crc32c, 4),
    "CRC64NVME": (crt.combine_crc64nvme, 8),
}
COMBINABLE = frozenset(_COMBINE)


def combine(algorithm: str, pieces: Iterable[tuple[str, int]]) -> str:
    """The CRC of concatenated data from each piece's (base64 CRC, length in bytes)."""
    function, size = _COMBINE[algorithm.upper()]
    # The CRC of no data is 0 for all three, and combining with it is the identity.
    value = 0
    for encoded, length in pieces:
        piece = int.from_bytes(base64.b64decode(encoded), "big")
        value = function(value, piece, length)
    return base64.b64encode(value.to_bytes(size, "big")).decode("ascii")


def header_name(algorithm: str) -> str:
    """The header carrying the checksum: "CRC32" -> "x-amz-checksum-crc32"."""
    return HEADER_PREFIX + algorithm.lower()


def response_headers(values: Mapping[str, str], checksum_type: str | None = None) -> dict[str, str]:
    """The headers returning stored checksums (algorithm -> base64 value); with
    x-amz-checksum-type, when ``checksum_type`` is given and there is a checksum to qualify."""
    headers = {header_name(algorithm): value for algorithm, value in values.items()}
    if headers and checksum_type is not None:
        headers["x-amz-checksum-type"] = checksum_type
    return headers


def algorithm_from_header(name: str) -> str | None:
    """The algorithm a checksum header carries ("x-amz-checksum-crc32" -> "CRC32"), else None.

    Other x-amz-checksum-* headers (x-amz-checksum-type, -mode, -algorithm) give None.
    """
    name = name.lower()
    if not name.startswith(HEADER_PREFIX):
        return None
    algorithm = name[len(HEADER_PREFIX) :].upper()
    return algorithm if algorithm in _FACTORIES else None


class BodyDigests:
    """Digests of the decoded payload. ``update`` runs in the blob writer's thread."""

    def __init__(self, sha256: bool, checksum_algorithm: str | None) -> None:
        self.md5 = hashlib.md5()
        self.sha256 = hashlib.sha256() if sha256 else None
        self.checksum_algorithm = checksum_algorithm
        self.checksum = new_checksum(checksum_algorithm) if checksum_algorithm else None

    def update(self, data: bytes) -> None:
        self.md5.update(data)
        if self.sha256 is not None:
            self.sha256.update(data)
        if self.checksum is not None:
            self.checksum.update(data)

    @property
    def etag(self) -> str:
        return f'"{self.md5.hexdigest()}"'
