"""Object tag sets: S3's limits and the x-amz-tagging header, without a server."""

from __future__ import annotations

import pytest

from gateway.s3 import errors, tagging


@pytest.mark.parametrize(
    ("header", "tags"),
    [
        ("", ()),
        ("a=1&b=two%20words", (("a", "1"), ("b", "two words"))),
        ("a+b=c%2Bd", (("a b", "c+d"),)),
        ("empty=&bare", (("empty", ""), ("bare", ""))),
        ("%C3%A9=%E4%B8%AD", (("é", "中"),)),
        ("k=v=w", (("k", "v=w"),)),
    ],
)
def test_from_header(header: str, tags: tagging.Tags) -> None:
    assert tagging.from_header(header) == tags


@pytest.mark.parametrize(
    ("tags", "code"),
    [
        ([(f"k{n}", "") for n in range(11)], "BadRequest"),
        ([("", "v")], "InvalidTag"),
        ([("k" * 129, "v")], "InvalidTag"),
        ([("k", "v" * 257)], "InvalidTag"),
        ([("k", "1"), ("k", "2")], "InvalidTag"),
        ([("a*b", "v")], "InvalidTag"),
        ([("k", "tab\tv")], "InvalidTag"),
        ([("AWS:k", "v")], "InvalidTag"),
    ],
)
def test_refused(tags: list[tuple[str, str]], code: str) -> None:
    with pytest.raises(errors.S3Error) as excinfo:
        tagging.validate(tags)
    assert excinfo.value.code == code


def test_limits_count_unicode_characters() -> None:
    widest = [(f"{n}" + "é" * 127, "中" * 256) for n in range(10)]
    assert tagging.validate(widest) == tuple(widest)
    assert tagging.validate([("K", "k"), ("k", "K")]) == (("K", "k"), ("k", "K"))
    allowed = "aZ09 _.:/=+-@"
    assert tagging.validate([(allowed, allowed)]) == ((allowed, allowed),)


def test_header_must_be_utf8() -> None:
    with pytest.raises(errors.InvalidArgument):
        tagging.from_header("k=%E9")
