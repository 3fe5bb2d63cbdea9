"""Additional checksums must match what botocore computes and sends."""

from __future__ import annotations

import random

import pytest
from botocore.httpchecksum import (
    BaseChecksum,
    Crc32Checksum,
    CrtCrc32cChecksum,
    CrtCrc64NvmeChecksum,
    Sha1Checksum,
    Sha256Checksum,
)

from gateway.s3 import errors
from gateway.s3.checksums import ALGORITHMS, algorithm_from_header, header_name, new_checksum

BOTOCORE: dict[str, type[BaseChecksum]] = {
    "CRC32": Crc32Checksum,
    "CRC32C": CrtCrc32cChecksum,
    "CRC64NVME": CrtCrc64NvmeChecksum,
    "SHA1": Sha1Checksum,
    "SHA256": Sha256Checksum,
}

PAYLOADS = [b"", b"a", b"hello world", random.Random(7).randbytes(300_000)]


@pytest.mark.parametrize("algorithm", ALGORITHMS)
@pytest.mark.parametrize("payload", PAYLOADS, ids=lambda p: f"{len(p)}B")
def test_matches_botocore(algorithm: str, payload: bytes) -> None:
    reference = BOTOCORE[algorithm]()
    reference.update(payload)
    ours = new_checksum(algorithm)
    # Incremental updates in uneven pieces give the same digest as one update.
    for start in range(0, len(payload), 65_537):
        ours.update(payload[start : start + 65_537])
    assert ours.digest_b64() == reference.b64digest()


@pytest.mark.parametrize(
    ("algorithm", "payload", "expected"),
    [
        # Published values: S3 docs / RFC 3720 check values in base64.
        ("CRC32", b"123456789", "y/Q5Jg=="),  # 0xCBF43926
        ("CRC32C", b"123456789", "4waSgw=="),  # 0xE3069283
        ("CRC64NVME", b"123456789", "rosUhgp5mIg="),  # 0xAE8B14860A799888
        ("SHA256", b"", "47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU="),
    ],
)
def test_known_values(algorithm: str, payload: bytes, expected: str) -> None:
    checksum = new_checksum(algorithm)
    checksum.update(payload)
    assert checksum.digest_b64() == expected


def test_unknown_algorithm() -> None:
    with pytest.raises(errors.InvalidRequest):
        new_checksum("MD5")
    assert new_checksum("crc32c").digest_b64() == new_checksum("CRC32C").digest_b64()


@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_header_names_round_trip(algorithm: str) -> None:
    name = header_name(algorithm)
    assert name == f"x-amz-checksum-{algorithm.lower()}"
    assert algorithm_from_header(name) == algorithm
    assert algorithm_from_header(name.upper()) == algorithm


@pytest.mark.parametrize(
    "name", ["x-amz-checksum-type", "x-amz-checksum-mode", "x-amz-checksum-md5", "content-md5"]
)
def test_other_headers_are_not_checksums(name: str) -> None:
    assert algorithm_from_header(name) is None
