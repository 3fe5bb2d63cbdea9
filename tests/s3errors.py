"""What a refused boto3 call says: its S3 error code and HTTP status.

Each takes the ClientError, or the ``pytest.raises`` ExceptionInfo holding one.
"""

from __future__ import annotations

from typing import Any

import pytest
from botocore.exceptions import ClientError

Refusal = ClientError | pytest.ExceptionInfo[ClientError]


def _response(refusal: Refusal) -> dict[str, Any]:
    error = refusal.value if isinstance(refusal, pytest.ExceptionInfo) else refusal
    return error.response  # type: ignore[return-value]


def code_of(refusal: Refusal) -> str:
    return _response(refusal)["Error"]["Code"]


def status_of(refusal: Refusal) -> int:
    return _response(refusal)["ResponseMetadata"]["HTTPStatusCode"]


def error_of(refusal: Refusal) -> tuple[int, str]:
    """(HTTP status, error code)."""
    return status_of(refusal), code_of(refusal)
