"""Lifecycle rules: when S3 counts a version as expired, what a filter covers, and the XML
forms of a rule."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from gateway.s3 import errors
from gateway.s3.lifecycle import LifecycleFilter, LifecycleRule, days_cutoff
from gateway.s3.xml import lifecycle_configuration
from gateway.s3.xmlbody import parse_lifecycle_configuration


def _expired(written: datetime, now: datetime, days: int) -> bool:
    return written < days_cutoff(now, days)


def test_days_count_from_the_next_midnight_utc() -> None:
    written = datetime(2027, 1, 1, 10, 30, tzinfo=UTC)
    # 1 January + 7 days, rounded up to midnight: 9 January 00:00.
    assert not _expired(written, datetime(2027, 1, 8, 23, 59, tzinfo=UTC), 7)
    assert _expired(written, datetime(2027, 1, 9, 0, 0, tzinfo=UTC), 7)
    # Written at midnight exactly: still expired from the midnight after the 7 days.
    assert _expired(datetime(2027, 1, 1, tzinfo=UTC), datetime(2027, 1, 9, tzinfo=UTC), 7)


def test_a_date_expires_everything_from_that_day() -> None:
    rule = LifecycleRule("r", True, expiration_date=datetime(2027, 3, 1, tzinfo=UTC))
    assert rule.expiry_cutoff(datetime(2027, 2, 28, 23, tzinfo=UTC)) is None
    cutoff = rule.expiry_cutoff(datetime(2027, 3, 1, tzinfo=UTC))
    assert cutoff is not None and datetime(2027, 3, 1, 12, tzinfo=UTC) < cutoff


def test_every_condition_of_a_filter_must_hold() -> None:
    covered = LifecycleFilter("logs/", (("class", "tmp"),), size_greater_than=10, form="and")
    assert covered.matches("logs/a", [("x", "y"), ("class", "tmp")], 11)
    assert not covered.matches("logs/a", [("class", "tmp")], 10)
    assert not covered.matches("logs/a", [("class", "keep")], 11)
    assert not covered.matches("data/a", [("class", "tmp")], 11)


@pytest.mark.parametrize(
    "rule",
    [
        "<Prefix>old/</Prefix><Status>Enabled</Status><Expiration><Days>3</Days></Expiration>",
        "<Filter/><Status>Disabled</Status>"
        "<Expiration><ExpiredObjectDeleteMarker>true</ExpiredObjectDeleteMarker></Expiration>",
        "<Filter><And><Prefix>a/</Prefix><Tag><Key>k</Key><Value>v</Value></Tag>"
        "<ObjectSizeLessThan>100</ObjectSizeLessThan></And></Filter><Status>Enabled</Status>"
        "<NoncurrentVersionExpiration><NoncurrentDays>5</NoncurrentDays>"
        "<NewerNoncurrentVersions>2</NewerNoncurrentVersions></NoncurrentVersionExpiration>",
        "<Filter><Prefix>up/</Prefix></Filter><Status>Enabled</Status>"
        "<Expiration><Date>2030-01-01T00:00:00.000Z</Date></Expiration>"
        "<AbortIncompleteMultipartUpload><DaysAfterInitiation>1</DaysAfterInitiation>"
        "</AbortIncompleteMultipartUpload>",
    ],
)
def test_a_rule_is_answered_in_the_form_it_was_put(rule: str) -> None:
    body = f"<LifecycleConfiguration><Rule><ID>r</ID>{rule}</Rule></LifecycleConfiguration>"
    answered = lifecycle_configuration(parse_lifecycle_configuration(body.encode()))
    assert f"<Rule><ID>r</ID>{rule}</Rule>".encode() in answered


@pytest.mark.parametrize(
    "rule",
    [
        # Both a rule prefix and a filter; a filter of two conditions without And.
        "<Prefix>a</Prefix><Filter/><Status>Enabled</Status><Expiration><Days>1</Days></Expiration>",
        "<Filter><Prefix>a</Prefix><Tag><Key>k</Key><Value>v</Value></Tag></Filter>"
        "<Status>Enabled</Status><Expiration><Days>1</Days></Expiration>",
        "<Filter/><Status>Enabled</Status><Expiration><Days>1</Days><Date>2030-01-01</Date>"
        "</Expiration>",
        "<Filter/><Status>Enabled</Status><Expiration><Days>x</Days></Expiration>",
        "<Filter/><Status>Enabled</Status><Expiration/>",
    ],
)
def test_rules_outside_the_schema_are_malformed(rule: str) -> None:
    body = f"<LifecycleConfiguration><Rule><ID>r</ID>{rule}</Rule></LifecycleConfiguration>"
    with pytest.raises(errors.MalformedXML):
        parse_lifecycle_configuration(body.encode())
