from datetime import UTC, datetime, timedelta, timezone
from email.utils import format_datetime

import pytest

from gateway.api.common import http_date


@pytest.mark.parametrize(
    "moment",
    [
        datetime(2026, 11, 22, 0, 0, 0, tzinfo=UTC),
        datetime(1999, 12, 31, 23, 59, 59, 999999, tzinfo=UTC),
        datetime(2024, 2, 29, 9, 5, 3, tzinfo=UTC),
        datetime(2030, 7, 1, 1, 30, tzinfo=timezone(timedelta(hours=5, minutes=30))),
        datetime(2030, 1, 1, 0, 0, tzinfo=timezone(timedelta(hours=-8))),
    ],
)
def test_http_date_is_imf_fixdate_in_gmt(moment: datetime) -> None:
    assert http_date(moment) == format_datetime(moment.astimezone(UTC), usegmt=True)
