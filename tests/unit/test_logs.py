"""The log formats: JSON lines with an access record's fields, and the readable text line."""

from __future__ import annotations

import json
import logging
import sys

import pytest

from gateway.cli import _log_level
from gateway.config import GatewayConfig
from gateway.logs import ACCESS, ACCESS_FIELDS, JsonFormatter, TextFormatter

FIELDS = dict.fromkeys(ACCESS_FIELDS) | {
    "request_id": "ABC",
    "remote": "203.0.113.9",
    "operation": "GetObject",
    "bucket": "photos",
    "key": 'a "quoted"\nkey',
    "status": 200,
    "bytes_in": 0,
    "bytes_out": 4096,
    "duration_ms": 1.5,
    "variant": "thumb",
    "variant_result": "render",
    "render_ms": 12.0,
    "user_agent": "Boto3/1.0",
}


def _record(level: int, message: str, **extra: object) -> logging.LogRecord:
    record = logging.LogRecord("gateway.x", level, __file__, 1, message, (), None)
    record.__dict__.update(extra)
    return record


def test_an_access_record_is_one_json_line_of_its_fields() -> None:
    line = JsonFormatter().format(_record(logging.INFO, "GET /photos/k 200", **{ACCESS: FIELDS}))
    assert "\n" not in line
    parsed = json.loads(line)
    assert list(parsed) == ["time", "level", *ACCESS_FIELDS]
    assert parsed["key"] == 'a "quoted"\nkey' and parsed["time"].endswith("Z")


def test_an_error_carries_its_traceback_in_one_line() -> None:
    try:
        raise ValueError("broken")
    except ValueError:
        record = _record(logging.ERROR, "it failed")
        record.exc_info = sys.exc_info()
    line = JsonFormatter().format(record)
    assert "\n" not in line
    parsed = json.loads(line)
    assert (parsed["level"], parsed["logger"], parsed["message"]) == (
        "ERROR",
        "gateway.x",
        "it failed",
    )
    assert parsed["traceback"].startswith("Traceback (most recent call last)")
    assert parsed["traceback"].endswith("ValueError: broken")


def test_the_text_access_line_is_readable_and_one_line() -> None:
    line = TextFormatter().format(_record(logging.INFO, "GET", **{ACCESS: FIELDS}))
    assert "\n" not in line
    assert (
        'INFO gateway.x: 203.0.113.9 - "GetObject photos/a \\"quoted\\"\\nkey" 200 - 0/4096B'
        in line
    )
    assert "variant=thumb:render render=12.0ms" in line


def test_the_flag_and_the_environment_win_over_the_file(monkeypatch: pytest.MonkeyPatch) -> None:
    config = GatewayConfig.model_validate({"log": {"level": "warning"}})
    monkeypatch.delenv("GATEWAY_LOG_LEVEL", raising=False)
    assert _log_level(config, None) == "WARNING"
    monkeypatch.setenv("GATEWAY_LOG_LEVEL", "DEBUG")
    assert _log_level(config, None) == "DEBUG"
    assert _log_level(config, "ERROR") == "ERROR"
