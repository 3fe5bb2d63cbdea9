"""The configuration a running gateway applies now, replaced whole when the file is reloaded.

A request takes the current snapshot once, when it is resolved, and keeps it to its end: an
upload in flight finishes under the configuration it started with, and no request ever sees
half of one configuration and half of another.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType

from gateway.config import CredentialConfig, GatewayConfig, LimitsConfig, load_config
from gateway.variants.presets import PresetCatalog

# Settings the process is built on (its socket, its database, its storage): a change waits
# for a restart.
RESTART_SETTINGS = (
    "listen",
    "data_dir",
    "database",
    "tls",
    "storage_profiles",
    "default_profile",
    "access_keys",
    "log",
)
# The limits read by each request; the others size what the process set up at start
# (connections, render pool, janitor, storage).
LIVE_LIMITS = frozenset(
    {
        "max_object_size",
        "max_xml_body",
        "max_metadata_size",
        "clock_skew_seconds",
        "body_idle_timeout_seconds",
    }
)


@dataclass(frozen=True)
class Snapshot:
    """One configuration with what requests derive from it."""

    config: GatewayConfig
    presets: PresetCatalog
    # Access key -> credential, the root one included.
    credentials: Mapping[str, CredentialConfig]

    @classmethod
    def of(cls, config: GatewayConfig, root: CredentialConfig | None) -> Snapshot:
        credentials = {credential.access_key: credential for credential in config.credentials}
        if root is not None:
            credentials[root.access_key] = root
        return cls(config, PresetCatalog.from_config(config), MappingProxyType(credentials))


class LiveConfig:
    """The current snapshot, and how a new one is made from the configuration file."""

    def __init__(
        self,
        config: GatewayConfig,
        root: CredentialConfig | None = None,
        path: Path | None = None,
        loaded: GatewayConfig | None = None,
    ) -> None:
        self.path = path
        self._root = root
        self._running = config
        # What the file said at start. Restart-only settings are compared with it rather than
        # with ``config``, to which the parent of --workers gives the database it started.
        self._loaded = config if loaded is None else loaded
        self.current = Snapshot.of(config, root)

    def load(self) -> tuple[Snapshot, list[str]]:
        """Read and validate the file (blocking); see ``prepare``. Raises ConfigError."""
        return self.prepare(load_config(self.path))

    def prepare(self, new: GatewayConfig) -> tuple[Snapshot, list[str]]:
        """The snapshot applying ``new`` as far as it can change live, and the settings it
        changes that wait for a restart (those keep their running values). Raises ConfigError
        when the rest does not fit what keeps running (a bucket on a profile not started)."""
        pending = [
            name for name in RESTART_SETTINGS if getattr(new, name) != getattr(self._loaded, name)
        ]
        started_limits = [name for name in LimitsConfig.model_fields if name not in LIVE_LIMITS]
        pending += [
            f"limits.{name}"
            for name in started_limits
            if getattr(new.limits, name) != getattr(self._loaded.limits, name)
        ]
        kept: dict[str, object] = {name: getattr(self._running, name) for name in RESTART_SETTINGS}
        kept["limits"] = new.limits.model_copy(
            update={name: getattr(self._running.limits, name) for name in started_limits}
        )
        config = new.with_settings(kept)
        return Snapshot.of(config, self._root), pending

    def swap(self, snapshot: Snapshot) -> None:
        self.current = snapshot
