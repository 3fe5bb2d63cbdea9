"""The check of gateway logs after each live test (tests/conftest.py) finds what it should."""

from __future__ import annotations

import json
import re

from tests.conftest import unexpected_log_entries

LOG = """\
2026-01-02 03:04:05,678 INFO gateway.access: GET /b/k 200
2026-01-02 03:04:05,679 WARNING gateway.storage: upstream slow, retrying
2026-01-02 03:04:05,680 ERROR gateway.janitor: collection failed
Traceback (most recent call last):
  File "janitor.py", line 1, in collect
OSError: [Errno 5] Input/output error
2026-01-02 03:04:05,681 WARNING gateway.variants: eager render failed
Traceback (most recent call last):
ValueError: broken
2026-01-02 03:04:05,682 ERROR gateway.access: GET /b/damaged failed mid-body
2026-01-02 03:04:05,683 INFO gateway.access: PUT /b/k 200
"""


def test_errors_and_tracebacks_are_found_with_their_traceback() -> None:
    found = unexpected_log_entries(LOG, [])
    assert [entry.splitlines()[0][24:] for entry in found] == [
        "ERROR gateway.janitor: collection failed",
        "WARNING gateway.variants: eager render failed",
        "ERROR gateway.access: GET /b/damaged failed mid-body",
    ]
    assert found[0].endswith("OSError: [Errno 5] Input/output error")


def test_expected_entries_are_let_through() -> None:
    expected = [re.compile("failed mid-body"), re.compile("ValueError: broken")]
    found = unexpected_log_entries(LOG, expected)
    assert [entry.splitlines()[0][24:] for entry in found] == [
        "ERROR gateway.janitor: collection failed"
    ]


def test_a_traceback_without_a_record_is_found() -> None:
    text = "Traceback (most recent call last):\n  File 'x'\nRuntimeError\n"
    assert unexpected_log_entries(text, []) == [text.rstrip("\n")]


JSON_LOG = "\n".join(
    json.dumps(record)
    for record in [
        {"time": "2026-01-02T03:04:05.678Z", "level": "INFO", "request_id": "A", "status": 200},
        {
            "time": "2026-01-02T03:04:05.680Z",
            "level": "ERROR",
            "logger": "gateway.janitor",
            "message": "collection failed",
            "traceback": 'Traceback (most recent call last):\n  File "janitor.py"\nOSError: x',
        },
        {
            "time": "2026-01-02T03:04:05.681Z",
            "level": "WARNING",
            "logger": "gateway.storage",
            "message": "upstream slow",
        },
    ]
)


def test_json_lines_are_checked_as_the_text_format_is() -> None:
    found = unexpected_log_entries(JSON_LOG, [])
    assert len(found) == 1
    assert found[0].startswith(
        "2026-01-02T03:04:05.680Z ERROR gateway.janitor: collection failed\n"
    )
    assert found[0].endswith("OSError: x")
    assert unexpected_log_entries(JSON_LOG, [re.compile(r"failed\nTraceback")]) == []
