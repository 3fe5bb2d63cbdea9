from datetime import UTC, datetime, timedelta, timezone

import pytest

from gateway.s3.conditions import (
    Conditions,
    Precondition,
    check_copy_source,
    decide,
    evaluate,
    evaluate_write,
)
from gateway.s3.errors import PreconditionFailed

PROCEED = Precondition.PROCEED
NOT_MODIFIED = Precondition.NOT_MODIFIED
FAILED = Precondition.FAILED
MISSING = Precondition.MISSING

ETAG = '"d41d8cd98f00b204e9800998ecf8427e"'
OPAQUE = ETAG.strip('"')
OTHER = '"00000000000000000000000000000000"'
MULTIPART_ETAG = '"0123456789abcdef0123456789abcdef-3"'

# The object was modified at 08:49:37.250 UTC; the client saw "08:49:37" in Last-Modified.
LAST_MODIFIED = datetime(1994, 11, 6, 8, 49, 37, 250000, tzinfo=UTC)
SAME = "Sun, 06 Nov 1994 08:49:37 GMT"
BEFORE = "Sun, 06 Nov 1994 08:49:36 GMT"
AFTER = "Sun, 06 Nov 1994 08:49:38 GMT"
INVALID_DATE = "yesterday"


def cond(**headers: str) -> Conditions:
    return Conditions(**headers)


@pytest.mark.parametrize(
    ("conditions", "read", "write"),
    [
        # No conditions.
        (cond(), PROCEED, PROCEED),
        # If-Match alone: false -> 412 for every method (RFC 9110 §13.1.1).
        (cond(if_match=ETAG), PROCEED, PROCEED),
        (cond(if_match=OTHER), FAILED, FAILED),
        (cond(if_match="*"), PROCEED, PROCEED),
        # If-Unmodified-Since alone: false -> 412 (§13.1.4).
        (cond(if_unmodified_since=SAME), PROCEED, PROCEED),
        (cond(if_unmodified_since=AFTER), PROCEED, PROCEED),
        (cond(if_unmodified_since=BEFORE), FAILED, FAILED),
        (cond(if_unmodified_since=INVALID_DATE), PROCEED, PROCEED),
        # If-None-Match alone: false -> 304 for GET/HEAD, 412 otherwise (§13.1.2).
        (cond(if_none_match=OTHER), PROCEED, PROCEED),
        (cond(if_none_match=ETAG), NOT_MODIFIED, FAILED),
        (cond(if_none_match="*"), NOT_MODIFIED, FAILED),
        # If-Modified-Since alone: false -> 304, only for GET/HEAD (§13.1.3).
        (cond(if_modified_since=BEFORE), PROCEED, PROCEED),
        (cond(if_modified_since=SAME), NOT_MODIFIED, PROCEED),
        (cond(if_modified_since=AFTER), NOT_MODIFIED, PROCEED),
        (cond(if_modified_since=INVALID_DATE), PROCEED, PROCEED),
        # If-Match decides; If-Unmodified-Since is ignored when If-Match is present (§13.2.2
        # step 2). S3 documents If-Match true + If-Unmodified-Since false -> 200.
        (cond(if_match=ETAG, if_unmodified_since=BEFORE), PROCEED, PROCEED),
        (cond(if_match=ETAG, if_unmodified_since=AFTER), PROCEED, PROCEED),
        (cond(if_match=OTHER, if_unmodified_since=AFTER), FAILED, FAILED),
        (cond(if_match=OTHER, if_unmodified_since=BEFORE), FAILED, FAILED),
        # If-None-Match decides; If-Modified-Since is ignored when If-None-Match is present
        # (§13.2.2 step 4). S3 documents If-None-Match false + If-Modified-Since true -> 304.
        (cond(if_none_match=ETAG, if_modified_since=BEFORE), NOT_MODIFIED, FAILED),
        (cond(if_none_match=ETAG, if_modified_since=AFTER), NOT_MODIFIED, FAILED),
        (cond(if_none_match=OTHER, if_modified_since=AFTER), PROCEED, PROCEED),
        (cond(if_none_match=OTHER, if_modified_since=BEFORE), PROCEED, PROCEED),
        # A 412 from step 1/2 wins over a 304 from step 3/4.
        (cond(if_match=OTHER, if_none_match=ETAG), FAILED, FAILED),
        (cond(if_unmodified_since=BEFORE, if_modified_since=AFTER), FAILED, FAILED),
        (cond(if_unmodified_since=BEFORE, if_none_match=ETAG), FAILED, FAILED),
        # Both positive conditions hold, then the negative ones decide.
        (cond(if_match=ETAG, if_none_match=ETAG), NOT_MODIFIED, FAILED),
        (cond(if_match=ETAG, if_none_match=OTHER), PROCEED, PROCEED),
        (cond(if_match=ETAG, if_modified_since=AFTER), NOT_MODIFIED, PROCEED),
        (cond(if_match=ETAG, if_modified_since=BEFORE), PROCEED, PROCEED),
        (cond(if_unmodified_since=AFTER, if_modified_since=AFTER), NOT_MODIFIED, PROCEED),
        (cond(if_unmodified_since=AFTER, if_modified_since=BEFORE), PROCEED, PROCEED),
        (cond(if_unmodified_since=AFTER, if_none_match=ETAG), NOT_MODIFIED, FAILED),
        # All four.
        (
            cond(
                if_match=ETAG,
                if_unmodified_since=BEFORE,
                if_none_match=OTHER,
                if_modified_since=AFTER,
            ),
            PROCEED,
            PROCEED,
        ),
    ],
)
def test_precondition_table(
    conditions: Conditions, read: Precondition, write: Precondition
) -> None:
    assert evaluate(conditions, ETAG, LAST_MODIFIED) is read
    assert evaluate(conditions, ETAG, LAST_MODIFIED, is_read=True) is read
    assert evaluate(conditions, ETAG, LAST_MODIFIED, is_read=False) is write


@pytest.mark.parametrize(
    ("value", "if_match", "if_none_match"),
    [
        # (If-Match outcome, If-None-Match outcome) for the stored ETAG.
        (ETAG, PROCEED, NOT_MODIFIED),
        (OPAQUE, PROCEED, NOT_MODIFIED),  # unquoted, as some clients send it
        (f"W/{ETAG}", FAILED, NOT_MODIFIED),  # weak: never matches strongly
        (f"W/{OPAQUE}", FAILED, NOT_MODIFIED),
        (OTHER, FAILED, PROCEED),
        (f"W/{OTHER}", FAILED, PROCEED),
        ("*", PROCEED, NOT_MODIFIED),
        (f" {ETAG} ", PROCEED, NOT_MODIFIED),
        (f"{OTHER}, {ETAG}", PROCEED, NOT_MODIFIED),
        (f"{OTHER},{ETAG}", PROCEED, NOT_MODIFIED),
        (f"{ETAG}, {OTHER}", PROCEED, NOT_MODIFIED),
        (f'{OTHER}, W/{ETAG}, "x"', FAILED, NOT_MODIFIED),
        (f'"a", "b", {OTHER}', FAILED, PROCEED),
        (f", ,{ETAG},,", PROCEED, NOT_MODIFIED),  # empty list members are skipped
        (f'"a,{OPAQUE}"', FAILED, PROCEED),  # a comma inside a quoted tag is part of it
        (f"garbage{ETAG}, {ETAG}", PROCEED, NOT_MODIFIED),  # a malformed member is skipped
        (f'"{OPAQUE}', FAILED, PROCEED),  # unbalanced quote
        (ETAG.upper(), FAILED, PROCEED),  # ETags compare case-sensitively
        ('""', FAILED, PROCEED),
    ],
)
def test_etag_comparison(value: str, if_match: Precondition, if_none_match: Precondition) -> None:
    assert evaluate(cond(if_match=value), ETAG, LAST_MODIFIED) is if_match
    assert evaluate(cond(if_none_match=value), ETAG, LAST_MODIFIED) is if_none_match


@pytest.mark.parametrize("value", [MULTIPART_ETAG, MULTIPART_ETAG.strip('"')])
def test_multipart_etag(value: str) -> None:
    assert evaluate(cond(if_match=value), MULTIPART_ETAG, LAST_MODIFIED) is PROCEED
    assert evaluate(cond(if_none_match=value), MULTIPART_ETAG, LAST_MODIFIED) is NOT_MODIFIED
    assert evaluate(cond(if_match=ETAG), MULTIPART_ETAG, LAST_MODIFIED) is FAILED


@pytest.mark.parametrize(
    ("value", "modified_since", "unmodified_since"),
    [
        # IMF-fixdate, rfc850-date and asctime-date (RFC 9110 §5.6.7).
        (SAME, NOT_MODIFIED, PROCEED),
        ("Sunday, 06-Nov-94 08:49:37 GMT", NOT_MODIFIED, PROCEED),
        ("Sun Nov  6 08:49:37 1994", NOT_MODIFIED, PROCEED),
        ("Sunday, 06-Nov-94 08:49:36 GMT", PROCEED, FAILED),
        ("Sun Nov  6 08:49:36 1994", PROCEED, FAILED),
        # A numeric zone is converted, not ignored.
        ("Sun, 06 Nov 1994 09:49:37 +0100", NOT_MODIFIED, PROCEED),
        ("Sun, 06 Nov 1994 09:49:36 +0100", PROCEED, FAILED),
        # Far past and far future.
        ("Thu, 01 Jan 1970 00:00:00 GMT", PROCEED, FAILED),
        ("Fri, 31 Dec 9999 23:59:59 GMT", NOT_MODIFIED, PROCEED),
        # Invalid dates are ignored: the condition is treated as absent (§13.1.3, §13.1.4).
        (INVALID_DATE, PROCEED, PROCEED),
        ("1994-11-06T08:49:37Z", PROCEED, PROCEED),
        ("Sun, 31 Feb 1994 08:49:37 GMT", PROCEED, PROCEED),
        ("Sun, 06 Nov 1994 25:49:37 GMT", PROCEED, PROCEED),
        ("Sun, 06 Nov 10000 08:49:37 GMT", PROCEED, PROCEED),
        (f"{AFTER}, {AFTER}", PROCEED, PROCEED),  # a list of dates
        (f"{BEFORE}, {BEFORE}", PROCEED, PROCEED),
        ("0", PROCEED, PROCEED),
    ],
)
def test_dates(value: str, modified_since: Precondition, unmodified_since: Precondition) -> None:
    assert evaluate(cond(if_modified_since=value), ETAG, LAST_MODIFIED) is modified_since
    assert evaluate(cond(if_unmodified_since=value), ETAG, LAST_MODIFIED) is unmodified_since


@pytest.mark.parametrize(
    "last_modified",
    [
        LAST_MODIFIED,
        LAST_MODIFIED.replace(microsecond=0),
        LAST_MODIFIED.replace(microsecond=999999),
        LAST_MODIFIED.replace(tzinfo=None),  # naive means UTC
        LAST_MODIFIED.astimezone(timezone(timedelta(hours=-5))),
    ],
)
def test_last_modified_compares_at_second_resolution(last_modified: datetime) -> None:
    # The client echoes the Last-Modified it saw, which lost the sub-second part.
    assert evaluate(cond(if_modified_since=SAME), ETAG, last_modified) is NOT_MODIFIED
    assert evaluate(cond(if_unmodified_since=SAME), ETAG, last_modified) is PROCEED
    assert evaluate(cond(if_modified_since=BEFORE), ETAG, last_modified) is PROCEED
    assert evaluate(cond(if_unmodified_since=BEFORE), ETAG, last_modified) is FAILED


@pytest.mark.parametrize(
    ("conditions", "expected"),
    [
        (cond(), (PROCEED, None)),
        (cond(if_match=OTHER), (FAILED, "If-Match")),
        (cond(if_unmodified_since=BEFORE), (FAILED, "If-Unmodified-Since")),
        (cond(if_none_match=ETAG), (NOT_MODIFIED, "If-None-Match")),
        (cond(if_modified_since=AFTER), (NOT_MODIFIED, "If-Modified-Since")),
        (cond(if_match=OTHER, if_none_match=ETAG), (FAILED, "If-Match")),
    ],
)
def test_decide_names_the_deciding_header(
    conditions: Conditions, expected: tuple[Precondition, str | None]
) -> None:
    assert decide(conditions, ETAG, LAST_MODIFIED) == expected


@pytest.mark.parametrize(
    ("conditions", "failed"),
    [
        (cond(), None),
        (cond(if_match=ETAG), None),
        (cond(if_match=OTHER), "If-Match"),
        (cond(if_unmodified_since=BEFORE), "If-Unmodified-Since"),
        (cond(if_unmodified_since=AFTER), None),
        (cond(if_none_match=OTHER), None),
        # Never 304: what would be Not Modified for a GET is 412 for the copy source.
        (cond(if_none_match=ETAG), "If-None-Match"),
        (cond(if_modified_since=AFTER), "If-Modified-Since"),
        (cond(if_modified_since=BEFORE), None),
        # CopyObject API reference: if-match true + if-unmodified-since false -> copied;
        # if-none-match false + if-modified-since true -> 412.
        (cond(if_match=ETAG, if_unmodified_since=BEFORE), None),
        (cond(if_none_match=ETAG, if_modified_since=BEFORE), "If-None-Match"),
    ],
)
def test_check_copy_source(conditions: Conditions, failed: str | None) -> None:
    if failed is None:
        check_copy_source(conditions, ETAG, LAST_MODIFIED)
    else:
        with pytest.raises(PreconditionFailed) as info:
            check_copy_source(conditions, ETAG, LAST_MODIFIED)
        assert info.value.status == 412
        assert info.value.extra == {"Condition": f"x-amz-copy-source-{failed}"}


@pytest.mark.parametrize(
    ("conditions", "existing", "missing"),
    [
        (cond(), PROCEED, PROCEED),
        # If-None-Match: * creates only (S3 conditional writes: 412 on an existing key).
        (cond(if_none_match="*"), FAILED, PROCEED),
        (cond(if_none_match=ETAG), FAILED, PROCEED),
        (cond(if_none_match=OTHER), PROCEED, PROCEED),
        # If-Match overwrites only that version; on a missing key S3 answers 404 NoSuchKey.
        (cond(if_match=ETAG), PROCEED, MISSING),
        (cond(if_match=OPAQUE), PROCEED, MISSING),
        (cond(if_match="*"), PROCEED, MISSING),
        (cond(if_match=OTHER), FAILED, MISSING),
        (cond(if_match=f"W/{ETAG}"), FAILED, MISSING),
        (cond(if_match=ETAG, if_none_match="*"), FAILED, MISSING),
        (cond(if_match=ETAG, if_none_match=OTHER), PROCEED, MISSING),
        # Date conditions are not part of S3 conditional writes.
        (cond(if_unmodified_since=BEFORE), PROCEED, PROCEED),
        (cond(if_modified_since=AFTER), PROCEED, PROCEED),
    ],
)
def test_evaluate_write(
    conditions: Conditions, existing: Precondition, missing: Precondition
) -> None:
    assert evaluate_write(conditions, ETAG) is existing
    assert evaluate_write(conditions, None) is missing


@pytest.mark.parametrize(
    ("headers", "prefix", "expected"),
    [
        ({}, "", Conditions()),
        (
            {
                "if-match": ETAG,
                "if-none-match": OTHER,
                "if-modified-since": AFTER,
                "if-unmodified-since": BEFORE,
            },
            "",
            Conditions(ETAG, OTHER, AFTER, BEFORE),
        ),
        # Empty values count as absent.
        ({"if-match": "", "if-none-match": "  "}, "", Conditions()),
        # The copy-source variants, and the plain ones are not mixed in.
        (
            {
                "if-match": OTHER,
                "x-amz-copy-source-if-match": ETAG,
                "x-amz-copy-source-if-none-match": OTHER,
                "x-amz-copy-source-if-modified-since": AFTER,
                "x-amz-copy-source-if-unmodified-since": BEFORE,
            },
            "x-amz-copy-source-",
            Conditions(ETAG, OTHER, AFTER, BEFORE),
        ),
        ({"if-match": ETAG}, "x-amz-copy-source-", Conditions()),
    ],
)
def test_from_headers(headers: dict[str, str], prefix: str, expected: Conditions) -> None:
    assert Conditions.from_headers(headers, prefix) == expected
