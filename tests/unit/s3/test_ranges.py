import pytest

from gateway.s3.errors import InvalidArgument, InvalidRange
from gateway.s3.ranges import ByteRange, parse_copy_source_range, parse_range


@pytest.mark.parametrize(
    ("header", "size", "expected"),
    [
        # first-last
        ("bytes=0-9", 100, (0, 9)),
        ("bytes=0-0", 100, (0, 0)),
        ("bytes=10-19", 100, (10, 19)),
        ("bytes=99-99", 100, (99, 99)),  # last byte
        ("bytes=0-99", 100, (0, 99)),
        ("bytes=50-1000", 100, (50, 99)),  # last clamped to size - 1
        ("bytes=0-" + "9" * 40, 100, (0, 99)),  # absurdly large last is clamped too
        ("bytes=007-009", 100, (7, 9)),  # leading zeros are digits
        # first-
        ("bytes=0-", 100, (0, 99)),
        ("bytes=99-", 100, (99, 99)),
        ("bytes=42-", 100, (42, 99)),
        # -suffix
        ("bytes=-1", 100, (99, 99)),
        ("bytes=-10", 100, (90, 99)),
        ("bytes=-100", 100, (0, 99)),
        ("bytes=-101", 100, (0, 99)),  # longer than the object: the whole object
        ("bytes=-" + "9" * 40, 100, (0, 99)),
        ("bytes=-5", 1, (0, 0)),
        # tolerated spelling
        ("Bytes=0-9", 100, (0, 9)),  # range units are case-insensitive
        ("  bytes=0-9  ", 100, (0, 9)),
        ("bytes= 0-9 ", 100, (0, 9)),
        ("bytes=0-9,", 100, (0, 9)),  # empty list elements are ignored
        ("bytes=,0-9", 100, (0, 9)),
    ],
)
def test_satisfiable(header: str, size: int, expected: tuple[int, int]) -> None:
    assert parse_range(header, size) == ByteRange(*expected)


@pytest.mark.parametrize(
    "header",
    [
        None,
        "",
        "bytes",
        "bytes=",
        "bytes=-",
        "bytes=a-b",
        "bytes=1-a",
        "bytes=1.5-2",
        "bytes=+1-2",
        "bytes=-+5",
        "bytes=0x10-0x20",
        "bytes=1 - 2",
        "bytes=9-0",  # last < first is invalid, not unsatisfiable
        "bytes=1-2-3",
        "bytes=\u0661-\u0662",  # Arabic-Indic digits are not DIGIT
        "items=0-9",
        "0-9",
        "bytes:0-9",
        "bytes=0-9,20-29",  # several ranges: S3 sends the whole object
        "bytes=0-0,-1",
        "bytes=0-9, garbage",
        ",",
    ],
)
def test_ignored(header: str | None) -> None:
    assert parse_range(header, 100) is None


@pytest.mark.parametrize(
    ("header", "size"),
    [
        ("bytes=100-", 100),  # first beyond the last byte
        ("bytes=100-200", 100),
        ("bytes=1000-2000", 100),
        ("bytes=" + "9" * 40 + "-", 100),
        ("bytes=-0", 100),  # an empty suffix
        ("bytes=-0", 0),
        ("bytes=0-0", 0),  # any range of an empty object
        ("bytes=0-", 0),
        ("bytes=-1", 0),
        ("bytes=-100", 0),
    ],
)
def test_unsatisfiable(header: str, size: int) -> None:
    with pytest.raises(InvalidRange) as info:
        parse_range(header, size)
    assert info.value.status == 416
    assert info.value.extra == {"RangeRequested": header, "ActualObjectSize": str(size)}


def test_multiple_ranges_are_ignored_even_if_unsatisfiable() -> None:
    assert parse_range("bytes=200-300,400-500", 100) is None


@pytest.mark.parametrize(
    ("byte_range", "size", "length", "content_range"),
    [
        (ByteRange(0, 9), 100, 10, "bytes 0-9/100"),
        (ByteRange(99, 99), 100, 1, "bytes 99-99/100"),
        (ByteRange(0, 0), 1, 1, "bytes 0-0/1"),
    ],
)
def test_byte_range(byte_range: ByteRange, size: int, length: int, content_range: str) -> None:
    assert byte_range.length == length
    assert byte_range.content_range(size) == content_range


@pytest.mark.parametrize(
    ("header", "size", "expected"),
    [
        ("bytes=0-9", 100, (0, 9)),
        ("bytes=0-99", 100, (0, 99)),
        ("bytes=99-99", 100, (99, 99)),
        ("bytes=5-5", 6, (5, 5)),
        (" bytes=1-2 ", 100, (1, 2)),
    ],
)
def test_copy_source_range(header: str, size: int, expected: tuple[int, int]) -> None:
    assert parse_copy_source_range(header, size) == ByteRange(*expected)


@pytest.mark.parametrize(
    "header",
    [
        "",
        "0-2",
        "bytes=0",
        "bytes=0-",
        "bytes=-5",
        "bytes=hello-world",
        "bytes=0-bar",
        "bytes=hello-",
        "bytes=0-2,3-5",
        "Bytes=0-2",
        "bytes = 0-2",
    ],
)
def test_copy_source_range_syntax(header: str) -> None:
    with pytest.raises(InvalidArgument) as info:
        parse_copy_source_range(header, 100)
    assert info.value.message.startswith("The x-amz-copy-source-range value must be of the form")
    assert info.value.extra == {
        "ArgumentName": "x-amz-copy-source-range",
        "ArgumentValue": header,
    }


@pytest.mark.parametrize(
    ("header", "size"),
    [
        ("bytes=0-100", 100),  # never clamped, unlike GET
        ("bytes=100-100", 100),
        ("bytes=0-0", 0),
        ("bytes=5-4", 100),  # first after last
        ("bytes=0-" + "9" * 40, 100),
    ],
)
def test_copy_source_range_out_of_bounds(header: str, size: int) -> None:
    with pytest.raises(InvalidArgument) as info:
        parse_copy_source_range(header, size)
    assert info.value.message == f"Range specified is not valid for source object of size: {size}"
    assert info.value.extra["ArgumentValue"] == header
