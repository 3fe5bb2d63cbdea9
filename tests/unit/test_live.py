"""What a reload applies, and what waits for a restart (gateway.live)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from gateway.config import ConfigError, CredentialConfig, GatewayConfig
from gateway.live import LiveConfig

ROOT = CredentialConfig(access_key="ROOTKEY", secret_key="root-secret", root=True)


def config(**settings: Any) -> GatewayConfig:
    return GatewayConfig.model_validate(settings)


def test_live_settings_apply_and_root_stays() -> None:
    live = LiveConfig(config(), ROOT)
    new = config(
        credentials=[
            {"access_key": "NEWKEY", "secret_key": "new-secret", "buckets": {"*": "read"}}
        ],
        buckets={"photos": {"public_read": True, "variants": ["thumb"]}},
        variants={"thumb": {"width": 100}},
        limits={"max_object_size": 1024},
        region="eu-west-1",
    )
    snapshot, pending = live.prepare(new)
    assert pending == []
    assert set(snapshot.credentials) == {"NEWKEY", "ROOTKEY"}
    assert snapshot.config.buckets["photos"].public_read is True
    assert snapshot.presets.resolve("photos", "thumb").name == "thumb"
    assert snapshot.config.limits.max_object_size == 1024
    assert snapshot.config.region == "eu-west-1"
    # Nothing is applied until swapped in.
    assert live.current.credentials.keys() == {"ROOTKEY"}
    live.swap(snapshot)
    assert live.current is snapshot


def test_restart_settings_keep_their_running_values() -> None:
    running = config(listen="127.0.0.1:9000", data_dir="data")
    live = LiveConfig(running, ROOT)
    new = config(
        listen="127.0.0.1:9001",
        data_dir="elsewhere",
        database={"url": "postgresql://db/other"},
        storage_profiles={"default": {"path": "other-blobs"}},
        limits={"max_connections": 10, "clock_skew_seconds": 60},
        credentials=[{"access_key": "NEWKEY", "secret_key": "new-secret"}],
    )
    snapshot, pending = live.prepare(new)
    assert pending == [
        "listen",
        "data_dir",
        "database",
        "storage_profiles",
        "limits.max_connections",
    ]
    applied = snapshot.config
    assert applied.listen == running.listen
    assert applied.data_dir == running.data_dir
    assert applied.database == running.database
    assert applied.storage_profiles == running.storage_profiles
    assert applied.limits.max_connections == running.limits.max_connections
    # The rest of the same file is applied.
    assert applied.limits.clock_skew_seconds == 60
    assert "NEWKEY" in snapshot.credentials


def test_compared_with_the_file_as_loaded_not_the_database_given_to_workers() -> None:
    loaded = config()
    running = loaded.model_copy(
        update={"database": loaded.database.model_copy(update={"url": "postgresql://embedded"})}
    )
    live = LiveConfig(running, ROOT, loaded=loaded)
    snapshot, pending = live.prepare(config())
    assert pending == []
    assert snapshot.config.database.url == "postgresql://embedded"


def test_a_bucket_on_a_profile_not_started_is_refused() -> None:
    live = LiveConfig(config(), ROOT)
    new = config(
        storage_profiles={"default": {}, "archive": {"path": "archive"}},
        buckets={"old-logs": {"profile": "archive"}},
    )
    with pytest.raises(ConfigError, match=r"old-logs.*archive"):
        live.prepare(new)


def test_load_refuses_an_invalid_file(tmp_path: Path) -> None:
    path = tmp_path / "gateway.yaml"
    path.write_text("credentials:\n  - access_key: K\n    secret_key: short\n")
    live = LiveConfig(config(), ROOT, path)
    with pytest.raises(ConfigError, match=r"credentials\.0"):
        live.load()
