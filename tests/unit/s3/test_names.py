import pytest

from gateway.s3.errors import InvalidArgument, InvalidBucketName, KeyTooLongError
from gateway.s3.names import RESERVED_PREFIX, validate_bucket_name, validate_key


@pytest.mark.parametrize(
    "name",
    [
        "abc",
        "a" * 63,
        "my-bucket",
        "my.bucket",
        "a.b-c.d",
        "a-.b",  # hyphen next to a period is allowed by the current rules
        "a.-b",
        "a--b",
        "0bucket",
        "bucket9",
        "123",
        "1.2.3",  # three groups is not an IP address
        "1.2.3.4.5",
        "192.168.5.4a",
        "xn-bucket",
        "my-xn--bucket",  # reserved prefixes only matter at the start
        "my-sthree-bucket",
        "sthree",
        "amzn-s3-demo",
        "bucket-s3alias-x",  # reserved suffixes only matter at the end
        "bucket.mrap.x",
        "s3alias",
        "mrap",
    ],
)
def test_valid_bucket_names(name: str) -> None:
    validate_bucket_name(name)


@pytest.mark.parametrize(
    "name",
    [
        # 3 to 63 characters.
        "",
        "a",
        "ab",
        "a" * 64,
        # Lowercase letters, digits, periods and hyphens only.
        "MyBucket",
        "my_bucket",
        "my bucket",
        "my/bucket",
        "bücket",
        "buck\u0435t",  # Cyrillic e
        "bucket\n",
        "b\u0660c",  # Arabic-Indic zero
        # Begin and end with a letter or digit.
        "-bucket",
        "bucket-",
        ".bucket",
        "bucket.",
        # No two adjacent periods.
        "my..bucket",
        # Not formatted as an IP address.
        "192.168.5.4",
        "0.0.0.0",
        "999.999.999.999",
        # Reserved prefixes.
        "xn--bucket",
        "sthree-bucket",
        "sthree-configurator-x",
        "amzn-s3-demo-bucket",
        # Reserved suffixes.
        "bucket-s3alias",
        "bucket--ol-s3",
        "bucket.mrap",
        "bucket--x-s3",
        "bucket--table-s3",
        # The gateway's own namespace.
        RESERVED_PREFIX + "gateway",
        "_abc",
    ],
)
def test_invalid_bucket_names(name: str) -> None:
    with pytest.raises(InvalidBucketName) as info:
        validate_bucket_name(name)
    assert info.value.status == 400
    assert info.value.extra == {"BucketName": name}


@pytest.mark.parametrize(
    "key",
    [
        "a",
        " ",
        " leading and trailing ",
        "dir/sub/file.txt",
        "/",
        "//double//",
        "../..",
        "ключ/日本語/🎉",
        "tab\tnewline\ncontrol\x01",
        "a" * 1024,
        "é" * 512,  # 1024 bytes of UTF-8
        "🎉" * 256,  # 1024 bytes of UTF-8
    ],
)
def test_valid_keys(key: str) -> None:
    validate_key(key)


@pytest.mark.parametrize(
    ("key", "size"),
    [
        ("a" * 1025, 1025),
        ("é" * 513, 1026),  # 513 characters but 1026 bytes
        ("🎉" * 257, 1028),
        ("a" * 2000, 2000),
    ],
)
def test_key_too_long(key: str, size: int) -> None:
    with pytest.raises(KeyTooLongError) as info:
        validate_key(key)
    assert info.value.status == 400
    assert info.value.extra == {"Size": str(size), "MaxSizeAllowed": "1024"}


@pytest.mark.parametrize("key", ["", "\udcff", "abc\ud800def", "\udc80" * 2000])
def test_invalid_keys(key: str) -> None:
    with pytest.raises(InvalidArgument) as info:
        validate_key(key)
    assert info.value.status == 400
