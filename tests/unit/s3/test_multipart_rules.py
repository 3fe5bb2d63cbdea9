"""Multipart rules: part numbers, completion part lists, the ETag rule, object checksums."""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import zlib

import pytest

from gateway.s3 import checksums
from gateway.s3.errors import (
    BadDigest,
    EntityTooSmall,
    InvalidArgument,
    InvalidPart,
    InvalidPartOrder,
    InvalidRequest,
    S3Error,
)
from gateway.s3.multipart_rules import (
    COMPOSITE,
    FULL_OBJECT,
    MIN_PART_SIZE,
    PART_NUMBER_MESSAGE,
    UploadedPart,
    assemble,
    checksum_type,
    multipart_etag,
    object_checksum,
    parse_list_argument,
    parse_part_number,
    select_parts,
)
from gateway.s3.xmlbody import CompletedPart


@pytest.mark.parametrize(
    ("value", "expected"),
    [("1", 1), ("10000", 10000), ("42", 42), ("007", 7)],
)
def test_part_number(value: str, expected: int) -> None:
    assert parse_part_number(value) == expected


@pytest.mark.parametrize(
    "value", ["0", "10001", "", "-1", "+1", "1.0", " 1", "x", "99999999999", "\u0661"]
)
def test_bad_part_number(value: str) -> None:
    with pytest.raises(InvalidArgument) as excinfo:
        parse_part_number(value)
    assert excinfo.value.message == PART_NUMBER_MESSAGE
    assert excinfo.value.extra == {"ArgumentName": "partNumber", "ArgumentValue": value}


@pytest.mark.parametrize(
    ("value", "expected"), [(None, 1000), ("0", 0), ("5", 5), ("2147483647", 2147483647)]
)
def test_list_argument(value: str | None, expected: int) -> None:
    assert parse_list_argument(value, "max-parts", 1000) == expected


@pytest.mark.parametrize("value", ["-1", "", "a", "2147483648", "1e3"])
def test_bad_list_argument(value: str) -> None:
    with pytest.raises(InvalidArgument, match="max-parts not an integer"):
        parse_list_argument(value, "max-parts", 1000)


@pytest.mark.parametrize(
    ("algorithm", "requested", "expected"),
    [
        (None, None, None),
        ("CRC32", None, COMPOSITE),
        ("crc32c", None, COMPOSITE),
        ("SHA256", None, COMPOSITE),
        ("CRC64NVME", None, FULL_OBJECT),  # S3 offers CRC64NVME only as a full-object CRC
        ("CRC32", "FULL_OBJECT", FULL_OBJECT),
        ("CRC32C", "full_object", FULL_OBJECT),
        ("CRC64NVME", "FULL_OBJECT", FULL_OBJECT),
        ("SHA1", "COMPOSITE", COMPOSITE),
    ],
)
def test_checksum_type(algorithm: str | None, requested: str | None, expected: str) -> None:
    assert checksum_type(algorithm, requested) == expected


@pytest.mark.parametrize(
    ("algorithm", "requested"),
    [
        (None, "COMPOSITE"),  # a type needs an algorithm
        ("MD5", None),
        ("CRC32", "PARTIAL"),
        ("SHA256", "FULL_OBJECT"),  # hashes cannot be combined
        ("SHA1", "FULL_OBJECT"),
        ("CRC64NVME", "COMPOSITE"),
    ],
)
def test_bad_checksum_type(algorithm: str | None, requested: str | None) -> None:
    with pytest.raises(InvalidRequest):
        checksum_type(algorithm, requested)


BIG = MIN_PART_SIZE
UPLOADED = {
    1: UploadedPart(1, '"' + "1" * 32 + '"', BIG, {"CRC32": "AAAAAQ=="}),
    2: UploadedPart(2, '"' + "2" * 32 + '"', BIG),
    3: UploadedPart(3, '"' + "3" * 32 + '"', BIG - 1),
    5: UploadedPart(5, '"' + "5" * 32 + '"', 1),
}


def completed(*numbers: int) -> list[CompletedPart]:
    """A completion list naming these parts with their uploaded ETags."""
    return [CompletedPart(n, UPLOADED[n].etag if n in UPLOADED else '"x"') for n in numbers]


@pytest.mark.parametrize(
    ("requested", "chosen"),
    [
        (completed(1), [1]),
        (completed(1, 2, 5), [1, 2, 5]),
        (completed(2, 3), [2, 3]),  # a small part may be last
        (completed(5), [5]),
        # ETags quoted or not
        ([CompletedPart(1, "1" * 32), CompletedPart(2, ' "' + "2" * 32 + '" ')], [1, 2]),
        ([CompletedPart(1, UPLOADED[1].etag, {"CRC32": "AAAAAQ=="})], [1]),
    ],
)
def test_select_parts(requested: list[CompletedPart], chosen: list[int]) -> None:
    assert [part.part_number for part in select_parts(requested, UPLOADED)] == chosen


@pytest.mark.parametrize(
    ("requested", "error"),
    [
        (completed(2, 1), InvalidPartOrder),
        (completed(1, 1), InvalidPartOrder),  # repeats are out of order too
        (completed(2, 1, 4), InvalidPartOrder),  # order is checked before existence
        (completed(1, 4), InvalidPart),  # never uploaded
        ([CompletedPart(1, '"' + "9" * 32 + '"')], InvalidPart),  # wrong ETag
        ([CompletedPart(1, UPLOADED[1].etag, {"CRC32": "AAAAAg=="})], InvalidPart),
        ([CompletedPart(2, UPLOADED[2].etag, {"SHA256": "x"})], InvalidPart),
        (completed(3, 5), EntityTooSmall),  # 5 MiB - 1 and not last
        ([CompletedPart(0, '"x"')], InvalidArgument),
        ([CompletedPart(10001, '"x"')], InvalidArgument),
    ],
)
def test_select_parts_refuses(requested: list[CompletedPart], error: type[S3Error]) -> None:
    with pytest.raises(error):
        select_parts(requested, UPLOADED)


def test_entity_too_small_names_the_part() -> None:
    with pytest.raises(EntityTooSmall) as excinfo:
        select_parts(completed(1, 3, 5), UPLOADED)
    assert excinfo.value.extra["PartNumber"] == "3"
    assert excinfo.value.extra["ProposedSize"] == str(BIG - 1)
    assert excinfo.value.extra["MinSizeAllowed"] == str(MIN_PART_SIZE)


PARTS = [b"first part", b"second", b""]


def test_multipart_etag() -> None:
    etags = [f'"{hashlib.md5(part).hexdigest()}"' for part in PARTS]
    expected = hashlib.md5(b"".join(hashlib.md5(part).digest() for part in PARTS)).hexdigest()
    assert multipart_etag(etags) == f'"{expected}-3"'
    # Unquoted ETags give the same answer.
    assert multipart_etag([etag.strip('"') for etag in etags]) == f'"{expected}-3"'
    # A well-known value: one part of no bytes.
    assert multipart_etag(['"d41d8cd98f00b204e9800998ecf8427e"']) == (
        '"59adb24ef3cdbe0297f05b395827453f-1"'
    )


def uploaded(algorithm: str) -> list[UploadedPart]:
    result = []
    for number, data in enumerate(PARTS, 1):
        digest = checksums.new_checksum(algorithm)
        digest.update(data)
        result.append(UploadedPart(number, '"x"', len(data), {algorithm: digest.digest_b64()}))
    return result


@pytest.mark.parametrize("algorithm", ["CRC32", "CRC32C", "SHA1", "SHA256"])
def test_composite_checksum(algorithm: str) -> None:
    raw = b"".join(base64.b64decode(part.checksums[algorithm]) for part in uploaded(algorithm))
    reference = checksums.new_checksum(algorithm)
    reference.update(raw)
    value = object_checksum(algorithm, COMPOSITE, uploaded(algorithm))
    assert value == f"{reference.digest_b64()}-3"


def test_composite_sha256_by_hand() -> None:
    raw = b"".join(hashlib.sha256(part).digest() for part in PARTS)
    expected = base64.b64encode(hashlib.sha256(raw).digest()).decode() + "-3"
    assert object_checksum("SHA256", COMPOSITE, uploaded("SHA256")) == expected


@pytest.mark.parametrize("algorithm", ["CRC32", "CRC32C", "CRC64NVME"])
def test_full_object_checksum(algorithm: str) -> None:
    whole = checksums.new_checksum(algorithm)
    whole.update(b"".join(PARTS))
    assert object_checksum(algorithm, FULL_OBJECT, uploaded(algorithm)) == whole.digest_b64()


def test_full_object_crc32_by_hand() -> None:
    expected = base64.b64encode(zlib.crc32(b"".join(PARTS)).to_bytes(4, "big")).decode()
    assert object_checksum("CRC32", FULL_OBJECT, uploaded("CRC32")) == expected


def test_no_checksum_when_a_part_lacks_one() -> None:
    parts = [*uploaded("CRC32")[:2], UploadedPart(3, '"x"', 0)]
    assert object_checksum("CRC32", COMPOSITE, parts) is None


def assembled_parts() -> dict[int, UploadedPart]:
    """Three parts with real MD5 ETags and CRC32 checksums; all but the last full-sized."""
    datas = [b"a" * MIN_PART_SIZE, b"b" * MIN_PART_SIZE, b"tail"]
    parts = {}
    for number, data in enumerate(datas, 1):
        digest = checksums.new_checksum("CRC32")
        digest.update(data)
        etag = f'"{hashlib.md5(data).hexdigest()}"'
        parts[number] = UploadedPart(number, etag, len(data), {"CRC32": digest.digest_b64()})
    return parts


def request_all(parts: dict[int, UploadedPart], *numbers: int) -> list[CompletedPart]:
    return [CompletedPart(n, parts[n].etag) for n in numbers]


def test_assemble_makes_the_object_of_the_chosen_parts() -> None:
    parts = assembled_parts()
    assembly = assemble(request_all(parts, 1, 3), parts, None, None, {})
    assert [part.part_number for part in assembly.parts] == [1, 3]
    assert assembly.size == MIN_PART_SIZE + 4
    assert assembly.etag == multipart_etag([parts[1].etag, parts[3].etag])
    assert assembly.etag.endswith('-2"')
    # An upload without a checksum algorithm gives the object none.
    assert assembly.checksums == {}
    assert assembly.checksum_type is None


@pytest.mark.parametrize("kind", [COMPOSITE, FULL_OBJECT])
def test_assemble_computes_the_uploads_checksum(kind: str) -> None:
    parts = assembled_parts()
    chosen = [parts[1], parts[2], parts[3]]
    assembly = assemble(request_all(parts, 1, 2, 3), parts, "CRC32", kind, {})
    assert assembly.checksums == {"CRC32": object_checksum("CRC32", kind, chosen)}
    assert assembly.checksum_type == kind


def test_assemble_accepts_a_declared_checksum_that_matches() -> None:
    parts = assembled_parts()
    whole = checksums.new_checksum("CRC32")
    whole.update(b"a" * MIN_PART_SIZE + b"b" * MIN_PART_SIZE + b"tail")
    declared = {"CRC32": whole.digest_b64()}
    assembly = assemble(request_all(parts, 1, 2, 3), parts, "CRC32", FULL_OBJECT, declared)
    assert assembly.checksums == declared


def test_assemble_refuses_a_declared_checksum_that_differs() -> None:
    parts = assembled_parts()
    with pytest.raises(BadDigest):
        assemble(request_all(parts, 1, 2, 3), parts, "CRC32", FULL_OBJECT, {"CRC32": "AAAAAA=="})
    # A declared checksum of another algorithm than the upload's cannot be checked: ignored,
    # as S3 does.
    assembly = assemble(request_all(parts, 1, 3), parts, "CRC32", COMPOSITE, {"SHA256": "x"})
    assert "SHA256" not in assembly.checksums


@pytest.mark.parametrize(
    ("numbers", "error"),
    [((2, 1), InvalidPartOrder), ((1, 4), InvalidPart), ((3, 1), InvalidPartOrder)],
)
def test_assemble_refuses_what_select_parts_refuses(
    numbers: tuple[int, ...], error: type[S3Error]
) -> None:
    parts = assembled_parts()
    requested = [CompletedPart(n, parts[n].etag if n in parts else '"x"') for n in numbers]
    with pytest.raises(error):
        assemble(requested, parts, None, None, {})


def test_assemble_refuses_a_small_part_before_the_last() -> None:
    parts = assembled_parts()
    small_first = {1: UploadedPart(1, parts[3].etag, 4), 2: parts[2]}
    requested = [CompletedPart(1, parts[3].etag), CompletedPart(2, parts[2].etag)]
    with pytest.raises(EntityTooSmall):
        assemble(requested, small_first, None, None, {})


# The same rules again, with every value worked out here from the part data rather than by
# the functions assemble calls: three parts numbered 1, 2, 4 (gaps are allowed), all but the
# last of the minimum size.
OBJECT_PARTS = {
    1: bytes(range(256)) * (MIN_PART_SIZE // 256),
    2: bytes(range(255, -1, -1)) * (MIN_PART_SIZE // 256),
    4: b"the last part may be short",
}
WHOLE = b"".join(OBJECT_PARTS.values())


def digest(algorithm: str, data: bytes) -> str:
    checksum = checksums.new_checksum(algorithm)
    checksum.update(data)
    return checksum.digest_b64()


def composite(algorithm: str, *numbers: int) -> str:
    """The COMPOSITE checksum of these parts (all by default): of their binary checksums, -N."""
    datas = [OBJECT_PARTS[n] for n in numbers or OBJECT_PARTS]
    raw = b"".join(base64.b64decode(digest(algorithm, data)) for data in datas)
    return f"{digest(algorithm, raw)}-{len(datas)}"


def stored_parts(*algorithms: str) -> dict[int, UploadedPart]:
    return {
        number: UploadedPart(
            number,
            f'"{hashlib.md5(data).hexdigest()}"',
            len(data),
            {algorithm: digest(algorithm, data) for algorithm in algorithms},
        )
        for number, data in OBJECT_PARTS.items()
    }


def completion(parts: dict[int, UploadedPart], *numbers: int) -> list[CompletedPart]:
    return [CompletedPart(number, parts[number].etag) for number in numbers or parts]


def test_assemble_etag_and_size_by_hand() -> None:
    parts = stored_parts()
    assembly = assemble(completion(parts), parts, None, None, {})
    assert assembly.parts == [parts[1], parts[2], parts[4]]
    assert assembly.size == len(WHOLE)
    md5s = b"".join(hashlib.md5(data).digest() for data in OBJECT_PARTS.values())
    assert assembly.etag == f'"{hashlib.md5(md5s).hexdigest()}-3"'


def test_assemble_one_empty_part() -> None:
    parts = {1: UploadedPart(1, '"d41d8cd98f00b204e9800998ecf8427e"', 0)}
    requested = [CompletedPart(1, "d41d8cd98f00b204e9800998ecf8427e")]
    assembly = assemble(requested, parts, None, None, {})
    assert assembly.etag == '"59adb24ef3cdbe0297f05b395827453f-1"'
    assert assembly.size == 0


@pytest.mark.parametrize(
    ("requested", "error"),
    [
        (completed(1, 1), InvalidPartOrder),  # a repeat
        ([CompletedPart(1, '"' + "9" * 32 + '"')], InvalidPart),  # wrong ETag
        ([CompletedPart(1, UPLOADED[1].etag, {"CRC32": "AAAAAg=="})], InvalidPart),
        (completed(3, 5), EntityTooSmall),
        ([CompletedPart(0, '"x"')], InvalidArgument),
        ([CompletedPart(10001, '"x"')], InvalidArgument),
    ],
)
def test_assemble_refuses_a_bad_part_list(
    requested: list[CompletedPart], error: type[S3Error]
) -> None:
    with pytest.raises(error):
        assemble(requested, UPLOADED, "CRC32", COMPOSITE, {})


def test_assemble_checks_the_part_list_before_declared_checksums() -> None:
    with pytest.raises(InvalidPartOrder):
        assemble(completed(2, 1), UPLOADED, "CRC32", COMPOSITE, {"CRC32": "AAAAAA=="})


@pytest.mark.parametrize("algorithm", ["CRC32", "CRC32C", "SHA1", "SHA256"])
def test_assemble_composite_checksum_by_hand(algorithm: str) -> None:
    parts = stored_parts(algorithm)
    assembly = assemble(completion(parts), parts, algorithm, COMPOSITE, {})
    assert assembly.checksums == {algorithm: composite(algorithm)}
    assert assembly.checksum_type == COMPOSITE
    assembly = assemble(completion(parts, 2, 4), parts, algorithm, COMPOSITE, {})
    assert assembly.checksums == {algorithm: composite(algorithm, 2, 4)}


@pytest.mark.parametrize("algorithm", ["CRC32", "CRC32C", "CRC64NVME"])
def test_assemble_full_object_checksum_by_hand(algorithm: str) -> None:
    parts = stored_parts(algorithm)
    assembly = assemble(completion(parts), parts, algorithm, FULL_OBJECT, {})
    # The CRC of the whole object's bytes, with no "-N".
    assert assembly.checksums == {algorithm: digest(algorithm, WHOLE)}
    assert assembly.checksum_type == FULL_OBJECT
    assembly = assemble(completion(parts, 1, 4), parts, algorithm, FULL_OBJECT, {})
    assert assembly.checksums == {algorithm: digest(algorithm, OBJECT_PARTS[1] + OBJECT_PARTS[4])}


def test_assemble_full_object_crc32_with_zlib() -> None:
    parts = stored_parts("CRC32")
    expected = base64.b64encode(zlib.crc32(WHOLE).to_bytes(4, "big")).decode()
    assembly = assemble(completion(parts), parts, "CRC32", FULL_OBJECT, {})
    assert assembly.checksums == {"CRC32": expected}


def test_assemble_has_no_checksum_when_a_part_lacks_it() -> None:
    parts = stored_parts("CRC32")
    parts[2] = dataclasses.replace(parts[2], checksums={})
    assembly = assemble(completion(parts), parts, "CRC32", COMPOSITE, {})
    assert assembly.checksums == {}
    assert assembly.checksum_type is None
    # Nor is a declared one checked then: there is nothing to compare it with.
    assert assemble(completion(parts), parts, "CRC32", COMPOSITE, {"CRC32": "x"}).checksums == {}


def test_assemble_needs_both_algorithm_and_type() -> None:
    parts = stored_parts("CRC32")
    assert assemble(completion(parts), parts, "CRC32", None, {}).checksums == {}
    assert assemble(completion(parts), parts, None, COMPOSITE, {}).checksum_type is None


def test_assemble_ignores_declared_checksums_without_an_upload_checksum() -> None:
    parts = stored_parts()
    assert assemble(completion(parts), parts, None, None, {"CRC32": "AAAAAA=="}).checksums == {}


def test_assemble_accepts_a_declared_composite_checksum() -> None:
    parts = stored_parts("SHA256")
    declared = {"SHA256": composite("SHA256")}
    assert assemble(completion(parts), parts, "SHA256", COMPOSITE, declared).checksums == declared


@pytest.mark.parametrize(
    ("kind", "value"),
    [
        # The full-object CRC where the upload's checksum is composite, and the reverse.
        (COMPOSITE, digest("CRC32", WHOLE)),
        (FULL_OBJECT, composite("CRC32")),
        # The composite value without its "-N".
        (COMPOSITE, composite("CRC32").rsplit("-", 1)[0]),
    ],
)
def test_assemble_refuses_the_other_kind_of_checksum(kind: str, value: str) -> None:
    parts = stored_parts("CRC32")
    with pytest.raises(BadDigest) as excinfo:
        assemble(completion(parts), parts, "CRC32", kind, {"CRC32": value})
    assert excinfo.value.status == 400
    assert excinfo.value.message == "The CRC32 you specified did not match the calculated checksum."


def test_assembly_is_frozen() -> None:
    parts = stored_parts()
    assembly = assemble(completion(parts), parts, None, None, {})
    with pytest.raises(dataclasses.FrozenInstanceError):
        assembly.etag = '"x"'  # type: ignore[misc]
