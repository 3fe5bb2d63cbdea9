"""gateway.meta.quotas.excess: which limit a write would pass, table-driven."""

from __future__ import annotations

import json

import pytest

from gateway.meta.bucket_usage import Usage
from gateway.meta.quotas import Quota, excess, parse_quota

BOTH = Quota(max_bytes=1000, max_objects=10)


@pytest.mark.parametrize(
    ("quota", "usage", "objects", "size", "expected"),
    [
        # Room left: fits.
        (BOTH, Usage(9, 900, 0), 1, 100, None),
        # One object too many, or one byte.
        (BOTH, Usage(10, 0, 0), 1, 0, ("max_objects", 10)),
        (BOTH, Usage(0, 900, 0), 1, 101, ("max_bytes", 1000)),
        # Parts in progress count toward bytes.
        (BOTH, Usage(0, 500, 400), 1, 101, ("max_bytes", 1000)),
        # A replace that does not grow usage fits at a full quota, and over a lowered one.
        (BOTH, Usage(10, 1000, 0), 0, 0, None),
        (BOTH, Usage(20, 5000, 0), 0, -10, None),
        # A replace that grows bytes is checked on bytes only.
        (BOTH, Usage(10, 1000, 0), 0, 1, ("max_bytes", 1000)),
        # A limit left out is no limit.
        (Quota(max_objects=1), Usage(0, 10**15, 0), 1, 10**9, None),
        (Quota(max_bytes=10), Usage(10**9, 0, 0), 1, 10, None),
        # Zero: nothing may be added.
        (Quota(max_objects=0), Usage(0, 0, 0), 1, 0, ("max_objects", 0)),
    ],
)
def test_excess(
    quota: Quota, usage: Usage, objects: int, size: int, expected: tuple[str, int] | None
) -> None:
    assert excess(quota, usage, objects, size) == expected


def test_quota_round_trips_through_its_json() -> None:
    for quota in (BOTH, Quota(max_bytes=5), Quota(max_objects=0, from_config=True)):
        assert parse_quota(json.dumps(quota.to_json())) == quota
