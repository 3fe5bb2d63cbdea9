"""The database's health as the log reports it, and the asyncpg internals the pool relies on."""

from __future__ import annotations

import inspect
import logging
import time

import asyncpg
import pytest

from gateway.meta import db
from gateway.meta.db import DatabaseHealth, DatabaseUnavailableError


def transitions(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [
        record.getMessage().split(":")[0] for record in caplog.records if record.name == db.log.name
    ]


def test_an_outage_is_logged_once_as_it_starts_and_once_as_it_ends(caplog) -> None:
    caplog.set_level(logging.INFO, logger=db.log.name)
    health = DatabaseHealth()
    before = time.monotonic()
    for _ in range(100):
        error = health.failed(ConnectionRefusedError("refused"))
        assert isinstance(error, DatabaseUnavailableError)
    # A statement that was under way on an old connection as the server went down.
    health.succeeded(connection_opened=before)
    assert not health.available
    # A connection opened since the last failure worked: the database is back.
    health.succeeded(connection_opened=time.monotonic())
    assert health.available
    health.succeeded(connection_opened=time.monotonic())
    assert transitions(caplog) == ["database unavailable", "database available again"]


def test_an_old_connection_proves_recovery_after_a_while(caplog, monkeypatch) -> None:
    caplog.set_level(logging.INFO, logger=db.log.name)
    health = DatabaseHealth()
    health.failed(TimeoutError())
    later = time.monotonic() + DatabaseHealth.RECOVERY_SECONDS + 1
    monkeypatch.setattr(db.time, "monotonic", lambda: later)
    health.succeeded(connection_opened=0.0)
    assert health.available


def test_the_asyncpg_internals_the_pool_overrides_are_still_there() -> None:
    """GatewayPool overrides two private methods of asyncpg's pool: an upgrade that renames or
    reshapes them must fail here, not leave outages untranslated in production."""
    for name, parameters in (("_acquire", ["self", "timeout"]), ("_get_new_connection", ["self"])):
        method = getattr(asyncpg.Pool, name)
        assert inspect.iscoroutinefunction(method), name
        assert list(inspect.signature(method).parameters) == parameters, name
    transaction = asyncpg.Connection.transaction
    assert list(inspect.signature(transaction).parameters) == [
        "self",
        "isolation",
        "readonly",
        "deferrable",
    ]
