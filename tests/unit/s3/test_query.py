"""The query string, decoded once for routing and both signature versions."""

from __future__ import annotations

import pytest

from gateway.s3 import errors
from gateway.s3.query import has_control_characters, parse_query


@pytest.mark.parametrize(
    ("raw", "pairs"),
    [
        ("", ()),
        ("uploads", (("uploads", None),)),
        ("uploads=", (("uploads", ""),)),
        ("%72esponse-content-type=text%2Fhtml", (("response-content-type", "text/html"),)),
        ("a+b=c+d", (("a+b", "c+d"),)),  # '+' is literal, as S3 clients encode spaces as %20
        ("prefix=x&&prefix=y", (("prefix", "x"), ("prefix", "y"))),
        ("k=%E2%9C%93", (("k", "\u2713"),)),
    ],
)
def test_pairs_are_decoded(raw: str, pairs: tuple[tuple[str, str | None], ...]) -> None:
    assert parse_query(raw).pairs == pairs


def test_first_value_wins_for_names_that_may_repeat() -> None:
    query = parse_query("prefix=x&prefix=y&uploads")
    assert query["prefix"] == "x"
    assert query["uploads"] == ""
    assert "uploads" in query and "delimiter" not in query
    assert sorted(query) == ["prefix", "uploads"]


@pytest.mark.parametrize(
    "raw",
    [
        "response-content-type=a&response-content-type=b",
        # The encoded spelling is the same name: an unsigned duplicate must not hide behind it.
        "%72esponse-content-disposition=inline&response-content-disposition=attachment",
        "versionId=null&versionI%64=x",
        "variant=a&variant=b",
        "X-Amz-Signature=a&X-Amz-Signature=b",
        "Signature=a&%53ignature=b",
    ],
)
def test_repeated_single_names_are_refused(raw: str) -> None:
    with pytest.raises(errors.InvalidArgument):
        parse_query(raw)


def test_invalid_utf8_is_refused() -> None:
    with pytest.raises(errors.InvalidURI):
        parse_query("prefix=%FF")


@pytest.mark.parametrize(
    ("value", "bad"),
    [("text/plain", False), ("a\tb", False), ("caf\u00e9", False), ("a\r\nb", True),
     ("a\x01", True), ("a\x7f", True), ("\x00", True)],
)  # fmt: skip
def test_control_characters(value: str, bad: bool) -> None:
    assert has_control_characters(value) is bad
