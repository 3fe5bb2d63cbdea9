"""Logging set-up: JSON lines (the default) or readable text, and the access log's record."""

from __future__ import annotations

import json
import logging
import sys
from datetime import UTC, datetime
from typing import Any

ACCESS_LOGGER = "gateway.access"
# The access line's fields, in this order, in every JSON access record.
ACCESS_FIELDS = (
    "request_id",
    "remote",
    "access_key",
    "operation",
    "bucket",
    "key",
    "status",
    "error",
    "bytes_in",
    "bytes_out",
    "duration_ms",
    "variant",
    "variant_result",
    "render_ms",
    "user_agent",
)
# The attribute of a LogRecord that carries an access line's fields (logging's `extra`).
ACCESS = "access"


def _time(record: logging.LogRecord) -> str:
    stamp = datetime.fromtimestamp(record.created, UTC)
    return stamp.isoformat(timespec="milliseconds").replace("+00:00", "Z")


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message; an access record's fields at
    the top level; an error's traceback in ``traceback``, never across lines."""

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {"time": _time(record), "level": record.levelname}
        access = getattr(record, ACCESS, None)
        if access is not None:
            line.update(access)
        else:
            line["logger"] = record.name
            line["message"] = record.getMessage()
        if record.exc_info:
            line["traceback"] = self.formatException(record.exc_info)
        elif record.stack_info:
            line["traceback"] = self.formatStack(record.stack_info)
        return json.dumps(line, ensure_ascii=False, default=str)


class TextFormatter(logging.Formatter):
    """Today's format; an access record reads as one line of its fields."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s: %(message)s")

    def formatMessage(self, record: logging.LogRecord) -> str:
        access = getattr(record, ACCESS, None)
        if access is not None:
            record.message = access_text(access)
        return super().formatMessage(record)


def access_text(fields: dict[str, Any]) -> str:
    """``remote "OPERATION bucket/key" status error in/out ms ...``: the readable line."""
    target = fields["bucket"] or ""
    if fields["key"] is not None:
        target = f"{target}/{fields['key']}"
    parts = [
        fields["remote"] or "-",
        fields["access_key"] or "-",
        f'"{fields["operation"]} {json.dumps(target, ensure_ascii=False)[1:-1]}"',
        str(fields["status"]),
        fields["error"] or "-",
        f"{fields['bytes_in']}/{fields['bytes_out']}B",
        f"{fields['duration_ms']}ms",
        f"id={fields['request_id']}",
    ]
    if fields["variant"]:
        parts.append(f"variant={fields['variant']}:{fields['variant_result']}")
        if fields["render_ms"] is not None:
            parts.append(f"render={fields['render_ms']}ms")
    parts.append(json.dumps(fields["user_agent"] or "", ensure_ascii=False))
    return " ".join(parts)


def configure_logging(level: str, format: str) -> None:
    """Replace the root logger's handlers with one on stderr in ``format`` (json | text)."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if format == "json" else TextFormatter())
    root = logging.getLogger()
    for existing in list(root.handlers):
        root.removeHandler(existing)
    root.addHandler(handler)
    root.setLevel(level.upper())
    # The embedded Postgres narrates every start at INFO.
    logging.getLogger("pgserver").setLevel(logging.WARNING)
